"""Index-driven ONNX ops against onnxruntime, compiled for x86: gathers, scatters, Tile,
Range, TopK, CumSum/CumProd, OneHot, Trilu, Size, Compress, NonZero, Einsum, and integer
MatMul; run-time inputs kiln must know at import give a ModelError that names them."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from test_onnx import F32, I64, init, make_model, randn, run_ort, tensor

import kiln
from kiln.errors import ConstantInputError, ModelError
from kiln.frontend.onnx import import_onnx
from kiln.testing import assert_outputs_close

I32 = TensorProto.INT32


def check_compiled(model, feeds: dict[str, np.ndarray], rtol: float = 1e-5,
                   atol: float = 1e-5) -> kiln.Graph:
    g = import_onnx(model)
    assert_outputs_close(kiln.compile(g)(**feeds), run_ort(model, feeds), rtol, atol)
    return g


def node_model(op: str, inputs: list, outputs: list, inits=(), opset: int = 18, **attrs):
    node = helper.make_node(op, [i.name for i in inputs] + [t.name for t in inits],
                            [o.name for o in outputs], **attrs)
    return make_model([node], inputs, outputs, list(inits), opset)


def ints(lo: int, hi: int, shape: tuple[int, ...], seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(lo, hi, size=shape).astype(np.int64)


@pytest.mark.parametrize("axis, idx_shape", [(0, ()), (1, (2, 3)), (-1, (4,))])
def test_gather_scalar_and_negative_indices(axis: int, idx_shape) -> None:
    x_shape = (5, 7, 3)
    dim = x_shape[axis]
    model = node_model("Gather", [tensor("x", x_shape), tensor("i", idx_shape, I64)],
                       [tensor("y", None)], axis=axis, opset=13)
    check_compiled(model, {"x": randn(*x_shape), "i": ints(-dim, dim, idx_shape)})


def test_gather_elements_and_gather_nd() -> None:
    model = node_model("GatherElements", [tensor("x", (4, 5)), tensor("i", (3, 5), I64)],
                       [tensor("y", None)], axis=0, opset=13)
    check_compiled(model, {"x": randn(4, 5), "i": ints(-4, 4, (3, 5))})
    model = node_model("GatherND", [tensor("x", (2, 3, 5)), tensor("i", (2, 4, 1), I64)],
                       [tensor("y", None)], batch_dims=1, opset=13)
    check_compiled(model, {"x": randn(2, 3, 5), "i": ints(0, 3, (2, 4, 1))})


@pytest.mark.parametrize("reduction", ["none", "add", "max"])
def test_scatter_nd(reduction: str) -> None:
    idx = np.array([[1], [-2]] if reduction == "none" else [[1], [3], [1]], np.int64)
    u_shape = (len(idx), 5)
    model = node_model("ScatterND", [tensor("x", (4, 5)), tensor("u", u_shape)],
                       [tensor("y", None)], [init("i", idx)], reduction=reduction)
    model.graph.node[0].input[:] = ["x", "i", "u"]
    feeds = {"x": randn(4, 5), "u": randn(*u_shape, seed=3)}
    if reduction == "none":     # a negative index, written out by hand
        g = import_onnx(model)
        want = feeds["x"].copy()
        want[1], want[-2] = feeds["u"][0], feeds["u"][1]
        assert_outputs_close(kiln.compile(g)(**feeds), [want], 0, 0)
        return
    check_compiled(model, feeds)


@pytest.mark.parametrize("op, opset, attrs", [("ScatterElements", 18, {"reduction": "mul"}),
                                              ("ScatterElements", 11, {}),
                                              ("Scatter", 10, {})])
def test_scatter_elements_and_the_deprecated_scatter(op: str, opset: int, attrs) -> None:
    idx = np.array([[0, 2], [1, -1], [3, 0]], np.int64)
    model = node_model(op, [tensor("x", (3, 4)), tensor("i", (3, 2), I64),
                            tensor("u", (3, 2))], [tensor("y", None)], opset=opset, axis=1,
                       **attrs)
    check_compiled(model, {"x": randn(3, 4), "i": idx, "u": randn(3, 2, seed=2)})


def test_tile_range_size() -> None:
    model = node_model("Tile", [tensor("x", (2, 3, 1))], [tensor("y", None)],
                       [init("r", np.array([3, 1, 5], np.int64))], opset=13)
    check_compiled(model, {"x": randn(2, 3, 1)})
    for start, limit, delta, dt in ((1, 10, 3, np.int32), (5.0, -2.5, -1.5, np.float32)):
        model = node_model("Range", [], [tensor("y", None, I32 if dt is np.int32 else F32)],
                           [init("s", np.array(start, dt)), init("l", np.array(limit, dt)),
                            init("d", np.array(delta, dt))], opset=13)
        g = import_onnx(model)
        assert_outputs_close(kiln.run_reference(g, {}), run_ort(model, {}), 0, 0)
    model = node_model("Size", [tensor("x", (2, 3, 5))], [tensor("y", None, I64)], opset=13)
    assert kiln.run_reference(import_onnx(model), {"x": randn(2, 3, 5)})[0] == 30


@pytest.mark.parametrize("axis, largest", [(1, 1), (0, 0), (-1, 1)])
def test_top_k(axis: int, largest: int) -> None:
    x = np.random.default_rng(0).integers(0, 6, (5, 9, 7)).astype(np.float32)   # ties
    model = node_model("TopK", [tensor("x", (5, 9, 7))],
                       [tensor("v", None), tensor("i", None, I64)],
                       [init("k", np.array([4], np.int64))], axis=axis, largest=largest,
                       opset=11)
    check_compiled(model, {"x": x}, 0, 0)


@pytest.mark.parametrize("op", ["CumSum", "CumProd"])
@pytest.mark.parametrize("axis, exclusive, reverse", [(0, 0, 1), (1, 1, 0), (-1, 1, 1)])
def test_cumulative(op: str, axis: int, exclusive: int, reverse: int) -> None:
    x = np.random.default_rng(0).uniform(0.5, 1.5, (3, 5, 6)).astype(np.float32)
    model = node_model(op, [tensor("x", (3, 5, 6))], [tensor("y", None)],
                       [init("a", np.array(axis, np.int32))], exclusive=exclusive,
                       reverse=reverse, opset=26 if op == "CumProd" else 14)
    if op == "CumProd":     # onnxruntime 1.31 has no CumProd kernel: the reference decides
        g = import_onnx(model)
        assert_outputs_close(kiln.compile(g)(x=x), kiln.run_reference(g, {"x": x}), 1e-5,
                             1e-6)
        return
    check_compiled(model, {"x": x})


def test_cumsum_runtime_axis_of_a_vector() -> None:
    model = node_model("CumSum", [tensor("x", (7,)), tensor("a", (), I32)],
                       [tensor("y", None)], opset=14)
    check_compiled(model, {"x": randn(7), "a": np.array(-1, np.int32)})


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_one_hot(axis: int) -> None:
    model = node_model("OneHot", [tensor("i", (3, 4), I64), tensor("v", (2,))],
                       [tensor("y", None)], [init("d", np.array(5, np.int64))], axis=axis,
                       opset=11)
    node = model.graph.node[0]
    node.input[:] = ["i", "d", "v"]
    check_compiled(model, {"i": ints(-5, 5, (3, 4)), "v": np.array([0.5, 3.0], np.float32)})


@pytest.mark.parametrize("upper, k", [(1, None), (0, 2), (1, -1)])
def test_trilu(upper: int, k: int | None) -> None:
    inits = [] if k is None else [init("k", np.array(k, np.int64))]
    model = node_model("Trilu", [tensor("x", (2, 5, 6))], [tensor("y", None)], inits,
                       upper=upper, opset=14)
    check_compiled(model, {"x": randn(2, 5, 6)})


def test_trilu_runtime_k() -> None:
    model = node_model("Trilu", [tensor("x", (4, 6)), tensor("k", (), I64)],
                       [tensor("y", None)], upper=0, opset=14)
    feeds = {"x": randn(4, 6), "k": np.array(-1, np.int64)}
    check_compiled(model, feeds)


def test_compress_and_nonzero_of_constants() -> None:
    model = node_model("Compress", [tensor("x", (3, 4))], [tensor("y", None)],
                       [init("c", np.array([True, False, True]))], axis=0, opset=11)
    check_compiled(model, {"x": randn(3, 4)})
    model = node_model("NonZero", [], [tensor("y", None, I64)],
                       [init("c", np.array([[1, 0, 2], [0, 3, 0]], np.float32))], opset=13)
    g = import_onnx(model)
    assert_outputs_close(kiln.run_reference(g, {}), run_ort(model, {}), 0, 0)


def test_data_dependent_shapes_are_model_errors() -> None:
    model = node_model("NonZero", [tensor("x", (3, 4))], [tensor("y", None, I64)], opset=13)
    with pytest.raises(ConstantInputError, match="NonZero.*constants="):
        import_onnx(model)
    model = node_model("TopK", [tensor("x", (3, 4)), tensor("k", (1,), I64)],
                       [tensor("v", None), tensor("i", None, I64)], opset=11)
    with pytest.raises(ConstantInputError, match="TopK.*constants="):
        import_onnx(model)


@pytest.mark.parametrize("eq, shapes", [
    ("bij,bjk->bik", [(3, 4, 5), (3, 5, 6)]),
    ("...ij,...jk->...ik", [(2, 3, 4, 5), (2, 3, 5, 2)]),
    ("ij,kj->ik", [(4, 5), (6, 5)]),
    ("bhid,bhjd->bhij", [(2, 3, 5, 4), (2, 3, 7, 4)]),
    ("i,j->ij", [(5,), (3,)]),
    ("i,i", [(5,), (5,)]),
    ("bij,jk->bki", [(2, 3, 4), (4, 5)]),
    ("ij->ji", [(3, 4)]),
    ("ij->i", [(3, 4)]),
    ("ijk", [(2, 3, 4)]),
    ("...ii->...i", [(3, 5, 5)]),
    ("ii", [(4, 4)]),
])
def test_einsum(eq: str, shapes) -> None:
    names = [f"x{i}" for i in range(len(shapes))]
    model = node_model("Einsum", [tensor(n, s) for n, s in zip(names, shapes, strict=True)],
                       [tensor("y", None)], equation=eq, opset=12)
    feeds = {n: randn(*s, seed=i) for i, (n, s) in enumerate(zip(names, shapes, strict=True))}
    check_compiled(model, feeds, rtol=1e-5, atol=1e-5)


def test_einsum_unsupported_forms_name_the_equation() -> None:
    eq = "ij,jk,kl->il"
    model = node_model("Einsum", [tensor(f"x{i}", (4, 4)) for i in range(3)],
                       [tensor("y", None)], equation=eq, opset=12)
    with pytest.raises(ModelError, match=f"Einsum '{eq}'.*3 operands"):
        import_onnx(model)


def test_integer_matmul() -> None:
    model = node_model("MatMul", [tensor("a", (3, 5), I32), tensor("b", (5, 7), I32)],
                       [tensor("y", None, I32)], opset=13)
    rng = np.random.default_rng(0)
    feeds = {"a": rng.integers(-9, 9, (3, 5)).astype(np.int32),
             "b": rng.integers(-9, 9, (5, 7)).astype(np.int32)}
    check_compiled(model, feeds, 0, 0)


def test_range_over_a_symbolic_dim() -> None:
    """``Range(0, seq, 1)`` with ``seq`` from the input's shape: a range op of length seq,
    one library for every length."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Range", ["zero", "n", "one"], ["r"]),
             helper.make_node("Cast", ["r"], ["rf"], to=F32),
             helper.make_node("Add", ["x", "rf"], ["y"])]
    model = make_model(nodes, [tensor("x", ("seq",))], [tensor("y", ("seq",))],
                       [init("zero", np.array(0, np.int64)), init("one", np.array(1, np.int64))],
                       opset=13)
    lib = kiln.compile(import_onnx(model))
    for n in (5, 17):
        x = randn(n)
        assert_outputs_close(lib(x=x), run_ort(model, {"x": x}), 1e-6, 1e-6)
