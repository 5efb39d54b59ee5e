"""Every op's TE and x86 schedule against the NumPy reference, on odd shapes."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln import ops
from kiln.target import get_target
from kiln.testing import assert_matches_reference

ODD = (3, 5, 37)     # 37: not a multiple of 8 or 16 lanes


def graph_of(build, *specs, name: str = "t") -> kiln.Graph:
    g = kiln.Graph(name)
    xs = [g.input(f"x{i}", shape, dtype) for i, (shape, dtype) in enumerate(specs)]
    out = build(*xs)
    g.output(*(out if isinstance(out, (list, tuple)) else [out]))
    return g


UNARY = ["relu", "neg", "abs", "exp", "tanh", "sigmoid", "erf"]
POSITIVE = ["log", "sqrt", "rsqrt", "reciprocal"]


@pytest.mark.parametrize("op", UNARY + POSITIVE)
@pytest.mark.parametrize("shape", [ODD, (17,), (2, 16, 64)])
def test_unary(op: str, shape: tuple[int, ...]) -> None:
    g = graph_of(getattr(ops, op), (shape, "float32"))
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(np.float32) * 3
    if op in POSITIVE:
        x = np.abs(x) + 0.1
    assert_matches_reference(g, {"x0": x}, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu(approximate: str) -> None:
    g = graph_of(lambda x: ops.gelu(x, approximate), (ODD, "float32"))
    assert_matches_reference(g, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "maximum", "minimum"])
@pytest.mark.parametrize("shapes", [(ODD, ODD), (ODD, (37,)), ((3, 1, 37), (5, 1)),
                                    ((1,), (4, 19))])
def test_binary_broadcast(op: str, shapes) -> None:
    g = graph_of(getattr(ops, op), (shapes[0], "float32"), (shapes[1], "float32"))
    feeds = {"x0": np.random.default_rng(2).standard_normal(shapes[0]).astype(np.float32),
             "x1": np.random.default_rng(3).uniform(0.5, 2, shapes[1]).astype(np.float32)}
    assert_matches_reference(g, feeds)


def test_pow_and_scalar_operands() -> None:
    g = graph_of(lambda a: ops.add(ops.pow(a, 3.0), ops.mul(a, 0.5)), (ODD, "float32"))
    x = np.random.default_rng(4).uniform(0.1, 2, ODD).astype(np.float32)
    assert_matches_reference(g, {"x0": x}, rtol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "int32", "int64"])
@pytest.mark.parametrize("op", ["equal", "less", "greater"])
def test_compare(op: str, dtype: str) -> None:
    g = graph_of(getattr(ops, op), ((4, 19), dtype), ((19,), dtype))
    feeds = {"x0": np.random.default_rng(5).integers(-2, 3, (4, 19)).astype(dtype),
             "x1": np.random.default_rng(6).integers(-2, 3, (19,)).astype(dtype)}
    out = assert_matches_reference(g, feeds)
    assert out[0].dtype == np.bool_


def test_integer_div_truncates() -> None:
    g = graph_of(ops.div, ((2, 9), "int32"), ((2, 9), "int32"))
    a = np.array([[-7, 7, -7, 7, 0, 9, -9, 1, 5]] * 2, np.int32)
    b = np.array([[2, 2, -2, -2, 3, 4, 4, -3, 0]] * 2, np.int32)      # 5 / 0: 0, no SIGFPE
    out = assert_matches_reference(g, {"x0": a, "x1": b})
    np.testing.assert_array_equal(out[0][0], [-3, 3, 3, -3, 0, 2, -2, 0, 0])


@pytest.mark.parametrize("src,dst", [("float32", "int32"), ("int64", "float32"),
                                     ("float32", "bool"), ("bool", "float32")])
def test_cast(src: str, dst: str) -> None:
    g = graph_of(lambda x: ops.cast(x, dst), (ODD, src))
    assert_matches_reference(g)


def test_where_broadcasts_three_ways() -> None:
    g = graph_of(ops.where, ((5, 1), "bool"), ((1, 37), "float32"), ((5, 37), "float32"))
    assert_matches_reference(g)


@pytest.mark.parametrize("a_shape,b_shape", [
    ((2, 3), (3, 4)),
    ((72, 73), (73, 74)),
    ((1, 37), (37, 45)),              # M = 1
    ((3, 5, 7), (3, 7, 33)),          # batched, N not a multiple of the vector width
    ((2, 3, 5, 7), (7, 9)),           # 2-D B broadcast over A's batch dims
    ((1, 7), (2, 3, 7, 5)),           # A broadcast over B's batch dims
])
def test_matmul_runtime_operands(a_shape, b_shape) -> None:
    g = graph_of(ops.matmul, (a_shape, "float32"), (b_shape, "float32"))
    assert_matches_reference(g, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("m,k,n", [(1, 19, 10), (5, 37, 45), (72, 73, 74), (128, 64, 96)])
def test_matmul_with_packed_weight_and_epilogue(m: int, k: int, n: int) -> None:
    rng = np.random.default_rng(7)
    w = rng.standard_normal((k, n)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    g = graph_of(lambda x: ops.gelu(ops.add(ops.matmul(x, w), b)), ((m, k), "float32"))
    assert_matches_reference(g, rtol=1e-4, atol=1e-4)
    c = kiln.compile_stages(g)
    assert len(c.kernels) == 1                                  # GEMM + bias + GELU: one kernel
    assert any("packed" in note for note in c.kernels[0].notes)


def test_dense_3d_input_with_residual() -> None:
    rng = np.random.default_rng(8)
    w = rng.standard_normal((23, 19)).astype(np.float32)
    g = graph_of(lambda x, r: ops.add(ops.dense(x, w), r), ((3, 17, 19), "float32"),
                 ((3, 17, 23), "float32"))
    assert_matches_reference(g, rtol=1e-4, atol=1e-4)


def test_reshape_transpose_chain() -> None:
    g = graph_of(lambda x: ops.transpose(ops.reshape(x, (5, 3, -1)), (2, 0, 1)), (ODD, "float32"))
    assert_matches_reference(g)


@pytest.mark.parametrize("perm", [(0, 2, 1), (2, 1, 0), (1, 0, 2)])
def test_transpose(perm) -> None:
    assert_matches_reference(graph_of(lambda x: ops.transpose(x, perm), (ODD, "float32")))


def test_concat_and_split() -> None:
    g = graph_of(lambda a, b, c: ops.split(ops.concat([a, b, c], axis=1), [2, 7, 3], axis=1),
                 ((3, 4, 5), "float32"), ((3, 1, 5), "float32"), ((3, 7, 5), "float32"))
    outs = assert_matches_reference(g)
    assert [o.shape for o in outs] == [(3, 2, 5), (3, 7, 5), (3, 3, 5)]


@pytest.mark.parametrize("starts,ends,axes,steps", [
    ((1,), (4,), (2,), None),
    ((-3, 0), (100, 5), (0, 2), (1, 2)),
    ((4, -1), (0, -38), (1, 2), (-2, -3)),
])
def test_slice(starts, ends, axes, steps) -> None:
    g = graph_of(lambda x: ops.slice(x, starts, ends, axes, steps), (ODD, "float32"))
    assert_matches_reference(g)


@pytest.mark.parametrize("axis", [0, 1])
def test_gather(axis: int) -> None:
    table = np.random.default_rng(9).standard_normal((11, 37)).astype(np.float32)
    g = graph_of(lambda i: ops.gather(table, i, axis=axis), ((2, 3), "int64"))
    idx = np.array([[0, 10, -1], [3, -11, 5]], np.int64)
    assert_matches_reference(g, {"x0": idx})


@pytest.mark.parametrize("op", ["sum", "mean", "max"])
@pytest.mark.parametrize("axes,keepdims", [(-1, False), (-1, True), (1, False), ((0, 2), True),
                                           (None, False), ((1, 2), False)])
def test_reduce(op: str, axes, keepdims: bool) -> None:
    g = graph_of(lambda x: getattr(ops, op)(x, axes, keepdims), (ODD, "float32"))
    assert_matches_reference(g, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape,axis", [((4, 37), -1), ((2, 3, 1000), -1), ((3, 64), -1),
                                        ((5, 7, 3), 1), ((13,), 0)])
def test_softmax(shape, axis: int) -> None:
    g = graph_of(lambda x: ops.softmax(x, axis), (shape, "float32"))
    x = np.random.default_rng(10).standard_normal(shape).astype(np.float32) * 20
    assert_matches_reference(g, {"x0": x}, rtol=1e-5, atol=1e-7)


def test_softmax_is_stable_for_large_inputs() -> None:
    g = graph_of(ops.softmax, ((2, 40), "float32"))
    x = np.full((2, 40), 1e4, np.float32)
    x[0, 3] = 1.001e4
    out = assert_matches_reference(g, {"x0": x})
    assert np.isfinite(out[0]).all()


def test_softmax_fuses_prologue_and_epilogue() -> None:
    mask = np.where(np.arange(37) < 30, 0, -1e9).astype(np.float32)
    g = graph_of(lambda x: ops.mul(ops.softmax(ops.add(ops.mul(x, 0.125), mask)), 2.0),
                 ((4, 37), "float32"))
    assert_matches_reference(g, rtol=1e-5, atol=1e-7)
    assert len(kiln.compile_stages(g).kernels) == 1


@pytest.mark.parametrize("shape,axis", [((5, 37), -1), ((2, 7, 256), -1), ((3, 5, 7), -2)])
def test_layer_norm(shape, axis: int) -> None:
    rng = np.random.default_rng(11)
    gamma = rng.standard_normal(shape[axis:]).astype(np.float32)
    beta = rng.standard_normal(shape[axis:]).astype(np.float32)
    g = graph_of(lambda x: ops.layer_norm(x, gamma, beta, axis=axis), (shape, "float32"))
    x = rng.standard_normal(shape).astype(np.float32) * 3 + 100   # a large mean
    assert_matches_reference(g, {"x0": x}, rtol=1e-4, atol=1e-4)


def test_multi_output_elementwise_group() -> None:
    g = graph_of(lambda x: [ops.exp(x), ops.mul(ops.exp(x), x)], (ODD, "float32"))
    assert_matches_reference(g, rtol=1e-6)


def test_graph_output_is_an_input_and_a_constant() -> None:
    g = kiln.Graph("passthrough")
    x = g.input("x", (3, 4), "float32")
    g.output(ops.relu(x), x, g.constant(np.arange(4, dtype=np.float32)))
    assert_matches_reference(g)


def test_int64_and_float64_constants_keep_their_dtype() -> None:
    idx = np.array([2, 0, 1], np.int64)
    g = graph_of(lambda x: ops.gather(x, idx), ((3, 5), "float32"))
    assert_matches_reference(g)
    g = graph_of(lambda x: ops.mul(ops.cast(x, "float64"), np.full(5, 1 / 3)), ((3, 5), "float32"))
    assert_matches_reference(g, rtol=1e-12)


def test_zero_dim_input_and_empty_result() -> None:
    g = graph_of(ops.add, ((3, 5), "float32"), ((), "float32"))
    feeds = {"x0": np.ones((3, 5), np.float32), "x1": np.array(0.5, np.float32)}
    assert_matches_reference(g, feeds)
    g = graph_of(lambda x: ops.slice(x, [7], [9], axes=[1]), ((3, 5), "float32"))
    assert assert_matches_reference(g)[0].shape == (3, 0)


@pytest.mark.parametrize("op", ["tanh", "sigmoid", "erf", "gelu"])
def test_saturating_functions_at_extreme_inputs(op: str) -> None:
    x = np.concatenate([np.linspace(-100, 100, 401), [0.0, -0.0, 1e-8, -1e-8, 1e-3]])
    x = x.astype(np.float32).reshape(1, -1)
    g = graph_of(getattr(ops, op), (x.shape, "float32"))
    out = assert_matches_reference(g, {"x0": x}, rtol=2e-6, atol=2e-7)
    assert np.isfinite(out[0]).all()


@pytest.mark.parametrize(("dtype", "last"), [("uint8", 96), ("float32", 24), ("float32", 40)])
def test_pointwise_vectors_divide_the_last_axis(dtype: str, last: int) -> None:
    """A last axis that is not whole vectors of the type's lanes (uint8: 64, float32: 16 on
    AVX-512) gets the widest power-of-two vector that divides it: no predicated lanes."""
    lanes = get_target("x86").isa.lanes(dtype)
    width = next(w for w in (lanes, lanes // 2, lanes // 4, lanes // 8) if last % w == 0)
    g = kiln.Graph("p")
    x = g.input("x", (3, 5, last), dtype)
    g.output(ops.add(x, ops.cast(g.constant(np.array(1)), dtype)))
    lib = kiln.compile(g, "x86")
    text = lib.compilation.kernels[0].func.script()
    assert f"T.vectorized({width})" in text and "T.where" not in text, text
    xv = (np.arange(3 * 5 * last) % 100).astype(dtype).reshape(3, 5, last)
    np.testing.assert_array_equal(lib(x=xv)[0], xv + 1)
