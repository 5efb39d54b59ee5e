"""The simplify pass: exporters' spellings of LayerNorm, RMSNorm and GELU become one op; no-op
nodes and transpose/reshape/cast chains go. Every test checks the rewritten structure and that
the optimized graph computes what the original one does (reference interpreter, odd shapes)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import kiln
from kiln import ops
from kiln.frontend.onnx import import_onnx
from kiln.ir.graph import Graph, Value
from kiln.ir.passes import optimize, simplify_graph
from kiln.testing import assert_outputs_close, random_inputs

SHAPE = (3, 5, 37)
EPS = 1e-5


def _rand(*shape: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _check(g: Graph, rtol: float = 1e-5, atol: float = 1e-5) -> Graph:
    """Optimize ``g`` and compare both graphs' reference outputs; returns the optimized one."""
    feeds = random_inputs(g)
    opt = optimize(g)
    assert_outputs_close(kiln.run_reference(opt, feeds), kiln.run_reference(g, feeds),
                         rtol=rtol, atol=atol)
    return opt


def _ops(g: Graph) -> list[str]:
    return [n.op.name for n in g.nodes]


def _graph(body: Callable[[Value], Value | tuple[Value, ...]], shape: tuple = SHAPE) -> Graph:
    g = kiln.Graph("t")
    out = body(g.input("x", shape))
    g.output(*(out if isinstance(out, tuple) else (out,)))
    return g


# -- LayerNorm ----------------------------------------------------------------------------------
GAMMA, BETA = _rand(37, seed=2), _rand(37, seed=3)


def _torch_ln(x: Value, sq: str = "pow", inv: str = "div", twin: bool = False,
              axes: tuple[int, ...] = (-1,), affine: str = "gamma*n+beta") -> Value:
    """PyTorch / HF spellings: ``(x - u) / sqrt(mean((x - u)^2) + eps) * gamma + beta``."""
    u = ops.mean(x, axes, keepdims=True)
    d = ops.sub(x, u)
    var = ops.mean(ops.pow(d, 2.0) if sq == "pow" else ops.mul(d, d), axes, keepdims=True)
    e = ops.add(var, EPS)
    num = ops.sub(x, u) if twin else d
    n = {"div": lambda: ops.div(num, ops.sqrt(e)),
         "rsqrt": lambda: ops.mul(ops.rsqrt(e), num),
         "reciprocal": lambda: ops.mul(num, ops.reciprocal(ops.sqrt(e))),
         "one_over": lambda: ops.mul(num, ops.div(1.0, ops.sqrt(e)))}[inv]()
    if affine == "gamma*n+beta":
        return ops.add(ops.mul(GAMMA, n), BETA)
    if affine == "beta+n*gamma":
        return ops.add(BETA, ops.mul(n, GAMMA))
    if affine == "beta":
        return ops.add(n, BETA)
    return n


@pytest.mark.parametrize("kw", [
    {}, {"sq": "mul"}, {"inv": "rsqrt"}, {"inv": "reciprocal"}, {"inv": "one_over"},
    {"twin": True}, {"affine": "beta+n*gamma"}, {"affine": "none"}, {"affine": "beta"},
], ids=str)
def test_layer_norm_spellings_become_one_op(kw: dict) -> None:
    opt = _check(_graph(lambda x: _torch_ln(x, **kw)))
    assert _ops(opt) == ["layer_norm"]
    (n,) = opt.nodes
    assert n.attrs.axis == 2 and n.attrs.epsilon == pytest.approx(EPS)
    gamma, beta = n.inputs[1].data, n.inputs[2].data
    want_gamma = GAMMA if "gamma" in kw.get("affine", "gamma") else np.ones(37)
    want_beta = np.zeros(37) if kw.get("affine") == "none" else BETA
    np.testing.assert_array_equal(gamma, want_gamma)
    np.testing.assert_array_equal(beta, want_beta)


def test_layer_norm_over_two_axes_materialises_broadcast_params() -> None:
    gamma = _rand(7, seed=4)                 # varies along the last axis only
    beta = np.float32(0.25)                  # a scalar

    def body(x: Value) -> Value:
        u = ops.mean(x, (2, 3), keepdims=True)
        d = ops.sub(x, u)
        n = ops.div(d, ops.sqrt(ops.add(ops.mean(ops.mul(d, d), (-2, -1), keepdims=True),
                                        1e-3)))
        return ops.add(ops.mul(n, gamma), beta)

    opt = _check(_graph(body, (2, 3, 5, 7)))
    assert _ops(opt) == ["layer_norm"]
    n = opt.nodes[0]
    assert n.attrs.axis == 2
    np.testing.assert_array_equal(n.inputs[1].data, np.broadcast_to(gamma, (5, 7)))
    np.testing.assert_array_equal(n.inputs[2].data, np.full((5, 7), 0.25, np.float32))


def test_layer_norm_keras_spelling() -> None:
    """tf.nn.batch_normalization as keras' LayerNormalization exports it through tf2onnx."""
    def body(x: Value, beta: bool) -> Value:
        m = ops.mean(x, -1, keepdims=True)
        d = ops.sub(x, m)                    # SquaredDifference: Sub, then Mul(d, d)
        var = ops.mean(ops.mul(d, d), -1, keepdims=True)
        inv = ops.mul(ops.reciprocal(ops.sqrt(ops.add(var, EPS))), GAMMA)
        if beta:
            return ops.add(ops.mul(x, inv), ops.sub(BETA, ops.mul(m, inv)))
        return ops.sub(ops.mul(inv, x), ops.mul(inv, m))

    for beta in (True, False):
        opt = _check(_graph(lambda x, beta=beta: body(x, beta)))
        assert _ops(opt) == ["layer_norm"]
        np.testing.assert_array_equal(opt.nodes[0].inputs[1].data, GAMMA)
        np.testing.assert_array_equal(opt.nodes[0].inputs[2].data,
                                      BETA if beta else np.zeros(37))


def test_layer_norms_sharing_constants_both_fuse() -> None:
    """Exporters share one eps (and two, for the pow) between layers: constants are no
    intermediates, so both norms still fuse."""
    g = kiln.Graph()
    x = g.input("x", SHAPE)
    eps, two, gamma = g.constant(np.float32(EPS)), g.constant(np.float32(2.0)), g.constant(GAMMA)

    def ln(h: Value) -> Value:
        d = ops.sub(h, ops.mean(h, -1, keepdims=True))
        var = ops.mean(ops.pow(d, two), -1, keepdims=True)
        return ops.mul(ops.div(d, ops.sqrt(ops.add(var, eps))), gamma)

    g.output(ln(ops.exp(ln(x))))
    assert _ops(_check(g)) == ["layer_norm", "exp", "layer_norm"]


def test_layer_norm_with_symbolic_batch() -> None:
    g = kiln.Graph()
    x = g.input("x", ("batch", 37))
    g.output(_torch_ln(x))
    opt = optimize(g)
    assert _ops(opt) == ["layer_norm"]
    feeds = {"x": _rand(4, 37)}
    assert_outputs_close(kiln.run_reference(opt, feeds), kiln.run_reference(g, feeds),
                         rtol=1e-5, atol=1e-5)


def _ln_then(extra: Callable[[dict[str, Value]], tuple[Value, ...]],
             x_of: Callable[[Graph], Value] | None = None) -> Graph:
    """A PyTorch LayerNorm whose intermediates ``extra`` may reuse or change."""
    g = kiln.Graph()
    x = g.input("x", SHAPE)
    y = g.input("y", SHAPE)
    parts: dict[str, Value] = {"x": x, "y": y}
    parts["u"] = ops.mean(x, -1, keepdims=True)
    parts["d"] = ops.sub(x, parts["u"])
    parts["var"] = ops.mean(ops.pow(parts["d"], 2.0), -1, keepdims=True)
    parts["e"] = ops.add(parts["var"], EPS)
    parts["n"] = ops.div(parts["d"], ops.sqrt(parts["e"]))
    g.output(*extra(parts))
    return g


@pytest.mark.parametrize("case", ["d used elsewhere", "var+eps used elsewhere",
                                  "normalised used twice then gamma"])
def test_layer_norm_with_an_intermediate_used_elsewhere_stays(case: str) -> None:
    def extra(p: dict[str, Value]) -> tuple[Value, ...]:
        if case == "d used elsewhere":
            return p["n"], p["d"]
        if case == "var+eps used elsewhere":
            return p["n"], ops.exp(p["e"])
        return ops.mul(p["n"], GAMMA), ops.relu(p["n"])

    opt = _check(_ln_then(extra))
    if case == "normalised used twice then gamma":   # the norm fuses, gamma stays a mul
        assert sorted(_ops(opt)) == ["layer_norm", "mul", "relu"]
    else:
        assert "layer_norm" not in _ops(opt) and "reduce_mean" in _ops(opt)


def _near_ln(case: str) -> Callable[[Value], Value]:
    """Graphs that look like a LayerNorm but compute something else."""
    def body(x: Value) -> Value:
        axes = (1,) if case == "wrong axes" else (-1,)
        u = ops.mean(x, axes, keepdims=True)
        d = ops.sub(x, u)
        var_axes = (-2, -1) if case == "var over other axes" else axes
        if case == "mean of another tensor":
            d = ops.sub(x, ops.mean(ops.exp(x), -1, keepdims=True))
        var = ops.mean(ops.mul(d, d), var_axes, keepdims=True)
        if case == "eps added twice":
            return ops.div(d, ops.sqrt(ops.add(ops.add(var, EPS), EPS)))
        if case == "eps after sqrt":
            return ops.div(d, ops.add(ops.sqrt(var), EPS))
        if case == "square of another tensor":
            var = ops.mean(ops.mul(x, x), -1, keepdims=True)
        if case == "no keepdims":
            var = ops.reshape(ops.mean(ops.mul(d, d), -1), (3, 5, 1))
        return ops.div(d, ops.sqrt(ops.add(var, EPS)))
    return body


@pytest.mark.parametrize("case", ["wrong axes", "var over other axes", "mean of another tensor",
                                  "eps added twice", "eps after sqrt",
                                  "square of another tensor", "no keepdims"])
def test_look_alike_layer_norms_stay(case: str) -> None:
    opt = _check(_graph(_near_ln(case)))
    # x - m over a mean of other axes (or of another tensor) is still a valid rms_norm input
    rms_ok = case in ("var over other axes", "mean of another tensor")
    assert _ops(opt).count("rms_norm") == rms_ok and "layer_norm" not in _ops(opt)


def test_gamma_that_varies_across_rows_is_not_fused() -> None:
    gamma = _rand(3, 1, 37, seed=5)
    opt = _check(_graph(lambda x: ops.mul(_torch_ln(x, affine="none"), gamma)))
    assert _ops(opt) == ["layer_norm", "mul"]
    np.testing.assert_array_equal(opt.nodes[0].inputs[1].data, np.ones(37))


# -- RMSNorm ------------------------------------------------------------------------------------
W = _rand(37, seed=6)


@pytest.mark.parametrize("spelling", ["t5", "llama", "div", "pow -0.5", "no weight"])
def test_rms_norm_spellings(spelling: str) -> None:
    def body(x: Value) -> Value:
        sq = ops.pow(x, 2.0) if spelling in ("t5", "div") else ops.mul(x, x)
        e = ops.add(1e-6, ops.mean(sq, -1, keepdims=True))
        if spelling == "t5":       # HF T5LayerNorm as torch.onnx writes it
            return ops.mul(W, ops.mul(x, ops.div(1.0, ops.sqrt(e))))
        if spelling == "llama":
            return ops.mul(ops.mul(x, ops.rsqrt(e)), W)
        if spelling == "div":
            return ops.mul(ops.div(x, ops.sqrt(e)), W)
        if spelling == "pow -0.5":
            return ops.mul(W, ops.mul(ops.pow(e, -0.5), x))
        return ops.mul(x, ops.rsqrt(e))

    opt = _check(_graph(body))
    assert _ops(opt) == ["rms_norm"]
    n = opt.nodes[0]
    assert n.attrs.axis == 2 and n.attrs.epsilon == pytest.approx(1e-6)
    np.testing.assert_array_equal(n.inputs[1].data, np.ones(37) if spelling == "no weight" else W)


def test_rms_norm_of_another_tensor_stays() -> None:
    def body(x: Value) -> Value:
        e = ops.add(ops.mean(ops.mul(ops.exp(x), ops.exp(x)), -1, keepdims=True), 1e-6)
        return ops.mul(x, ops.rsqrt(e))

    assert "rms_norm" not in _ops(_check(_graph(body)))


def test_fused_norms_and_gelu_compile_and_match_the_original_graph() -> None:
    """The fused ops through kiln's compiled kernels (row-reduction schedules included)."""
    def body(x: Value) -> tuple[Value, ...]:
        h = _torch_ln(x)
        s = ops.mul(ops.mul(h, ops.rsqrt(ops.add(ops.mean(ops.mul(h, h), -1, keepdims=True),
                                                 1e-6))), W)
        gelu = ops.mul(ops.mul(s, 0.5), ops.add(ops.erf(ops.div(s, math.sqrt(2.0))), 1.0))
        return (gelu,)

    g = _graph(body)
    lib = kiln.compile(g, target="x86")
    assert _ops(lib.compilation.optimized) == ["layer_norm", "rms_norm", "gelu"]
    notes = {k.group.anchor.op.name: k.notes for k in lib.compilation.kernels}
    assert len(notes["rms_norm"]) == 1 and notes["rms_norm"][0].startswith(
        "row reduction: 2 row axes")
    feeds = random_inputs(g)
    assert_outputs_close(lib(**feeds), kiln.run_reference(g, feeds), rtol=1e-4, atol=1e-4)


# -- GELU ---------------------------------------------------------------------------------------
INV_SQRT2 = 1 / math.sqrt(2.0)
C = math.sqrt(2 / math.pi)


def _erf_gelu(x: Value, spelling: str) -> Value:
    bracket = {"div": lambda: ops.add(ops.erf(ops.div(x, 1.4142135)), 1.0),
               "mul": lambda: ops.add(1.0, ops.erf(ops.mul(INV_SQRT2, x)))}
    p = bracket["mul" if "mul" in spelling else "div"]()
    if spelling.startswith("half last"):      # BERT / MiniLM: (x * (1 + erf)) * 0.5
        return ops.mul(ops.mul(x, p), 0.5)
    if spelling.startswith("half first"):     # (0.5 * x) * (1 + erf)
        return ops.mul(ops.mul(0.5, x), p)
    if spelling.startswith("half on bracket"):
        return ops.mul(x, ops.mul(p, 0.5))
    return ops.div(ops.mul(p, x), 2.0)       # "over two"


def _tanh_gelu(x: Value, spelling: str) -> Value:
    cube = {"pow": lambda: ops.pow(x, 3.0),
            "xxx": lambda: ops.mul(ops.mul(x, x), x),
            "x pow2": lambda: ops.mul(x, ops.pow(x, 2.0))}[spelling]()
    inner = ops.add(x, ops.mul(cube, 0.044715))
    p = ops.add(ops.tanh(ops.mul(inner, 0.7978846)), 1.0)
    return ops.mul(ops.mul(x, 0.5), p)        # T5's gelu_new order


@pytest.mark.parametrize("spelling", ["half last div", "half last mul", "half first div",
                                      "half on bracket mul", "over two div"])
def test_erf_gelu_spellings(spelling: str) -> None:
    opt = _check(_graph(lambda x: _erf_gelu(x, spelling), (7, 13)))
    assert _ops(opt) == ["gelu"] and str(opt.nodes[0].attrs.approximate) == "none"


@pytest.mark.parametrize("spelling", ["pow", "xxx", "x pow2"])
def test_tanh_gelu_spellings(spelling: str) -> None:
    opt = _check(_graph(lambda x: _tanh_gelu(x, spelling), (7, 13)))
    assert _ops(opt) == ["gelu"] and str(opt.nodes[0].attrs.approximate) == "tanh"


@pytest.mark.parametrize("case", ["no half", "wrong half", "wrong sqrt2", "erf of another",
                                  "bracket used elsewhere", "wrong cubic"])
def test_look_alike_gelus_stay(case: str) -> None:
    def body(x: Value) -> Value | tuple[Value, ...]:
        if case == "wrong cubic":
            p = ops.add(ops.tanh(ops.mul(ops.add(x, ops.mul(ops.pow(x, 3.0), 0.05)), C)), 1.0)
            return ops.mul(ops.mul(x, 0.5), p)
        t = {"wrong sqrt2": lambda: ops.div(x, 1.7320508),
             "erf of another": lambda: ops.div(ops.exp(x), 1.4142135)}.get(
                 case, lambda: ops.div(x, 1.4142135))()
        p = ops.add(ops.erf(t), 1.0)
        if case == "no half":
            return ops.mul(x, p)
        y = ops.mul(ops.mul(x, p), 0.6 if case == "wrong half" else 0.5)
        return (y, p) if case == "bracket used elsewhere" else y

    assert "gelu" not in _ops(_check(_graph(body, (7, 13))))


# -- transposes, reshapes, no-ops, casts --------------------------------------------------------
def test_transpose_pairs_compose_or_vanish() -> None:
    g = _graph(lambda x: ops.transpose(ops.transpose(x, (1, 2, 0)), (0, 2, 1)))
    opt = _check(g)
    assert _ops(opt) == ["transpose"] and opt.nodes[0].attrs.perm == (1, 0, 2)
    assert opt.outputs[0].name == g.outputs[0].name

    opt = _check(_graph(lambda x: ops.exp(ops.transpose(ops.transpose(x, (1, 2, 0)), (2, 0, 1)))))
    assert _ops(opt) == ["exp"] and opt.nodes[0].inputs[0] is opt.inputs[0]
    assert _ops(_check(_graph(lambda x: ops.exp(ops.transpose(x, (0, 1, 2)))))) == ["exp"]


def test_transpose_pair_keeps_an_inner_transpose_used_elsewhere() -> None:
    def body(x: Value) -> tuple[Value, ...]:
        t = ops.transpose(ops.neg(x), (2, 0, 1))
        return ops.transpose(t, (1, 2, 0)), ops.exp(t)

    opt = _check(_graph(body))
    assert _ops(opt) == ["neg", "transpose", "exp"]
    assert opt.outputs[0] is opt.nodes[0].outputs[0]


def test_reshape_chains_and_no_op_reshapes() -> None:
    opt = _check(_graph(lambda x: ops.exp(ops.reshape(ops.reshape(x, (15, 37)), (-1, 37, 1)))))
    assert _ops(opt) == ["reshape", "exp"] and opt.nodes[0].attrs.shape == (15, 37, 1)
    assert opt.nodes[0].inputs[0] is opt.inputs[0]
    opt = _check(_graph(lambda x: ops.exp(ops.reshape(ops.reshape(x, (15, 37)), SHAPE))))
    assert _ops(opt) == ["exp"]


@pytest.mark.parametrize("case", ["cast", "slice", "mul 1", "1 mul", "add 0", "0 add", "sub 0",
                                  "div 1", "pow 1", "add zeros row", "where true", "where false",
                                  "broadcast to itself", "concat of one"])
def test_identity_like_nodes_go(case: str) -> None:
    other = np.full(SHAPE, 7.0, np.float32)
    body = {
        "cast": lambda x: ops.cast(x, "float32"),
        "slice": lambda x: ops.slice(x, [0, -100], [3, 1 << 30], axes=[0, 2]),
        "mul 1": lambda x: ops.mul(x, 1.0),
        "1 mul": lambda x: ops.mul(np.ones((1, 37), np.float32), x),
        "add 0": lambda x: ops.add(x, 0.0),
        "0 add": lambda x: ops.add(0.0, x),
        "sub 0": lambda x: ops.sub(x, 0.0),
        "div 1": lambda x: ops.div(x, 1.0),
        "pow 1": lambda x: ops.pow(x, 1.0),
        "add zeros row": lambda x: ops.add(x, np.zeros(37, np.float32)),
        "where true": lambda x: ops.where(np.ones(SHAPE, bool), x, other),
        "where false": lambda x: ops.where(np.zeros((1, 37), bool), other, x),
        "broadcast to itself": lambda x: x.graph.add("broadcast_to", [x], shape=(5, 1))[0],
        "concat of one": lambda x: ops.concat([x], axis=1),
    }[case]
    g = _graph(lambda x: ops.exp(body(ops.neg(x))))
    opt = _check(g)
    assert _ops(opt) == ["neg", "exp"]


@pytest.mark.parametrize("case", ["mul broadcasts", "one minus", "reverse slice",
                                  "slice part", "where mixed", "where broadcasts",
                                  "broadcast grows"])
def test_identity_look_alikes_stay(case: str) -> None:
    body = {
        "mul broadcasts": lambda x: ops.mul(x, np.ones((2, 3, 5, 37), np.float32)),
        "one minus": lambda x: ops.sub(0.0, x),
        "reverse slice": lambda x: ops.slice(x, [-1], [-100], axes=[2], steps=[-1]),
        "slice part": lambda x: ops.slice(x, [1], [3], axes=[0]),
        "where mixed": lambda x: ops.where(np.arange(37) % 2 == 0, x, 0.0),
        "where broadcasts": lambda x: ops.where(np.ones((2, 3, 5, 37), bool), x, 0.0),
        "broadcast grows": lambda x: x.graph.add("broadcast_to", [x], shape=(2, 1, 1, 1))[0],
    }[case]
    opt = _check(_graph(lambda x: ops.exp(body(ops.neg(x)))))
    assert len(opt.nodes) == 3


def test_no_op_on_a_graph_output_keeps_the_output_name() -> None:
    g = kiln.Graph()
    x = g.input("x", SHAPE)
    h = ops.exp(x)
    y = ops.reshape(h, SHAPE)
    g.output(y)
    opt = _check(g)
    assert _ops(opt) == ["exp"] and opt.outputs[0].name == y.name

    g = kiln.Graph()                          # the input itself: the node must stay
    g.output(ops.cast(g.input("x", SHAPE), "float32"))
    assert _ops(optimize(g)) == ["cast"]


def test_cast_chains() -> None:
    def chain(dtype: str, mid: str, out: str) -> Graph:
        g = kiln.Graph()
        x = ops.abs(g.input("x", (5, 7), dtype))
        g.output(ops.cast(ops.cast(x, mid), out))
        return g

    opt = _check(chain("int32", "int64", "float32"))
    assert _ops(opt) == ["abs", "cast"] and str(opt.nodes[1].attrs.dtype) == "float32"
    assert _ops(_check(chain("int8", "float16", "int32"))) == ["abs", "cast"]
    assert _ops(_check(chain("float32", "float64", "float32"))) == ["abs"]   # back to itself
    assert _ops(_check(chain("float32", "int32", "float32"))) == ["abs", "cast", "cast"]
    assert _ops(_check(chain("int64", "float32", "int64"))) == ["abs", "cast", "cast"]
    assert _ops(_check(chain("float32", "float16", "float32"))) == ["abs", "cast", "cast"]


def test_simplify_folds_casts_of_constants_and_counts_rewrites() -> None:
    g = kiln.Graph()
    x = g.input("x", (4, 6))
    c = ops.cast(g.constant(np.arange(6, dtype=np.int32)), "float32")
    y = ops.add(ops.reshape(ops.reshape(ops.mul(x, c), (24,)), (4, 6)), 0.0)
    g.output(ops.exp(y))
    counts = simplify_graph(g)
    assert counts == {"fold cast": 1, "reshape pair": 1, "no-op reshape": 1, "no-op add": 1}
    assert _ops(g) == ["mul", "exp"]


# -- ONNX exports -------------------------------------------------------------------------------
def _const(name: str, value: object) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], name=name,
                            value=numpy_helper.from_array(np.asarray(value), name))


def _model(nodes: list[onnx.NodeProto], inits: list[TensorProto], shape: list[int]
           ) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def test_onnx_t5_rms_norm_and_minilm_gelu() -> None:
    """The node sequences of t5_span_encoder's T5LayerNorm and paraphrase-MiniLM's GELU."""
    s = "/enc/block.0/layer.0/layer_norm/"
    a = "/layer.0/intermediate/act/"
    f32 = np.float32
    nodes = [
        helper.make_node("Cast", ["x"], [s + "Cast"], name=s + "Cast", to=TensorProto.FLOAT),
        _const(s + "c2", f32(2.0)), _const(s + "axes", np.array([-1])),
        _const(s + "eps", f32(1e-6)), _const(s + "one", f32(1.0)),
        helper.make_node("Pow", [s + "Cast", s + "c2"], [s + "Pow"], name=s + "Pow"),
        helper.make_node("ReduceMean", [s + "Pow", s + "axes"], [s + "Mean"], name=s + "Mean"),
        helper.make_node("Add", [s + "Mean", s + "eps"], [s + "Add"], name=s + "Add"),
        helper.make_node("Sqrt", [s + "Add"], [s + "Sqrt"], name=s + "Sqrt"),
        helper.make_node("Div", [s + "one", s + "Sqrt"], [s + "Div"], name=s + "Div"),
        helper.make_node("Mul", [s + "Cast", s + "Div"], [s + "Mul"], name=s + "Mul"),
        helper.make_node("Mul", ["w", s + "Mul"], [s + "Mul_1"], name=s + "Mul_1"),
        _const(a + "sqrt2", f32(1.4142135)), _const(a + "one", f32(1.0)),
        _const(a + "half", f32(0.5)),
        helper.make_node("Div", [s + "Mul_1", a + "sqrt2"], [a + "Div"], name=a + "Div"),
        helper.make_node("Erf", [a + "Div"], [a + "Erf"], name=a + "Erf"),
        helper.make_node("Add", [a + "Erf", a + "one"], [a + "Add"], name=a + "Add"),
        helper.make_node("Mul", [s + "Mul_1", a + "Add"], [a + "Mul"], name=a + "Mul"),
        helper.make_node("Mul", [a + "Mul", a + "half"], ["y"], name=a + "Mul_1"),
    ]
    model = _model(nodes, [numpy_helper.from_array(_rand(37, seed=7), "w")], [3, 5, 37])
    g = import_onnx(model)
    opt = _check(g, rtol=1e-4, atol=1e-5)
    assert _ops(opt) == ["rms_norm", "gelu"]
    assert [n.name for n in opt.nodes] == [s + "rms_norm", a + "gelu"]
    assert opt.outputs[0].name == g.outputs[0].name


def test_onnx_layer_norm_opset_11_export() -> None:
    """torch.onnx before LayerNormalization existed (opset < 17): the op written out."""
    p = "/embeddings/LayerNorm/"
    f32 = np.float32
    nodes = [
        helper.make_node("ReduceMean", ["x"], [p + "m"], name=p + "ReduceMean", axes=[-1]),
        helper.make_node("Sub", ["x", p + "m"], [p + "d"], name=p + "Sub"),
        _const(p + "two", f32(2.0)), _const(p + "eps", f32(1e-12)),
        helper.make_node("Pow", [p + "d", p + "two"], [p + "sq"], name=p + "Pow"),
        helper.make_node("ReduceMean", [p + "sq"], [p + "var"], name=p + "ReduceMean_1",
                         axes=[-1]),
        helper.make_node("Add", [p + "var", p + "eps"], [p + "e"], name=p + "Add"),
        helper.make_node("Sqrt", [p + "e"], [p + "s"], name=p + "Sqrt"),
        helper.make_node("Div", [p + "d", p + "s"], [p + "n"], name=p + "Div"),
        helper.make_node("Mul", [p + "n", "gamma"], [p + "g"], name=p + "Mul"),
        helper.make_node("Add", [p + "g", "beta"], ["y"], name=p + "Add_1"),
    ]
    inits = [numpy_helper.from_array(GAMMA, "gamma"), numpy_helper.from_array(BETA, "beta")]
    model = _model(nodes, inits, [2, 7, 37])
    model.opset_import[0].version = 11
    opt = _check(import_onnx(model))
    assert _ops(opt) == ["layer_norm"] and opt.nodes[0].name == p + "layer_norm"
    assert opt.nodes[0].attrs.epsilon == pytest.approx(1e-12)
