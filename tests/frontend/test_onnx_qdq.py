"""Quantized add / multiply / concat / convolution, as com.microsoft QLinearAdd / QLinearMul /
QLinearConcat and in QDQ form (DequantizeLinear -> op -> QuantizeLinear, which
``kiln.frontend.onnx.qdq`` rewrites into the quantized ops), on adversarial scales: one input's
range covering the output's, tiny scales (1e-6), zero points at the limits of uint8 and int8.
Each is compared with onnxruntime (within one quantisation step: the order of its float
operations, or its fixed-point add, may round a tie the other way) and with kiln's NumPy
reference interpreter (exactly), on odd shapes."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from test_onnx import init, make_model, run_ort, tensor

import kiln
from kiln.codegen.lower import Template
from kiln.frontend.onnx import import_onnx
from kiln.ir.passes.dce import eliminate_dead_code

U8, I8 = TensorProto.UINT8, TensorProto.INT8
NP = {U8: np.uint8, I8: np.int8}
LIMITS = {U8: (0, 255), I8: (-128, 127)}
SHAPE = (3, 5, 7)


def ints(elem: int, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    lo, hi = LIMITS[elem]
    return np.random.default_rng(seed).integers(lo, hi + 1, shape).astype(NP[elem])


def ms_model(nodes, inputs, outputs, inits, opset: int = 17):
    graph = helper.make_graph(nodes, "test", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                   helper.make_opsetid("com.microsoft", 1)],
                             ir_version=10)


def check_both(model, feeds: dict[str, np.ndarray]) -> tuple[list, kiln.Graph]:
    """kiln compiled == kiln's reference interpreter, and within one step of onnxruntime;
    returns the outputs and the imported graph (dead DequantizeLinear nodes removed)."""
    g = import_onnx(model)
    eliminate_dead_code(g)
    got = kiln.compile(g)(**feeds)
    ref = kiln.run_reference(g, feeds)
    want = run_ort(model, feeds)
    for a, r, w in zip(got, ref, want, strict=True):
        assert a.dtype == w.dtype and a.shape == w.shape
        np.testing.assert_array_equal(a, r)
        steps = np.abs(a.astype(np.int32) - w.astype(np.int32)).max()
        assert steps <= 1, f"{steps} steps from onnxruntime"
    return got, g


# (a_scale, b_scale, out_scale): a covering the output's range; everything tiny; b far finer
# than the output's step (its term rounds to 0 unless added before rounding); output coarser
SCALES = {"a covers out": (0.5, 1e-6, 0.5), "tiny": (1e-6, 3e-6, 2e-6),
          "b below a step": (0.02, 1e-4, 0.03), "coarse out": (0.01, 0.013, 0.9)}


def zero_points(elem: int, which: str) -> tuple[int, int, int]:
    lo, hi = LIMITS[elem]
    return {"low": (lo, lo, lo), "high": (hi, hi, hi), "mixed": (lo, hi, lo),
            "inner": (lo + 3, hi - 5, (lo + hi) // 2)}[which]


def _add_inits(elem: int, scales: tuple, zps: tuple) -> list:
    names = ("as", "bs", "cs")
    return ([init(n, np.array(s, np.float32)) for n, s in zip(names, scales, strict=True)]
            + [init(n, np.array(z, NP[elem])) for n, z in zip(("az", "bz", "cz"), zps,
                                                               strict=True)])


# QLinearMul's ratio is a_scale * b_scale / out_scale: products of 255 x 255 steps saturate at
# a ratio of 1, land inside the range at 1/300
MUL_SCALES = {**SCALES, "saturating": (0.05, 0.04, 0.002), "inside": (0.1, 0.01, 0.3)}


@pytest.mark.parametrize("elem", [U8, I8])
@pytest.mark.parametrize("op, scales", [("Add", s) for s in SCALES]
                         + [("Mul", s) for s in MUL_SCALES])
@pytest.mark.parametrize("zps", ["low", "high", "mixed", "inner"])
def test_qlinear_binary_adversarial(elem: int, op: str, scales: str, zps: str) -> None:
    names = ["a", "as", "az", "b", "bs", "bz", "cs", "cz"]
    node = helper.make_node(f"QLinear{op}", names, ["c"], domain="com.microsoft")
    model = ms_model([node], [tensor("a", SHAPE, elem), tensor("b", SHAPE[1:], elem)],
                     [tensor("c", SHAPE, elem)],
                     _add_inits(elem, {**SCALES, **MUL_SCALES}[scales], zero_points(elem, zps)))
    feeds = {"a": ints(elem, SHAPE), "b": ints(elem, SHAPE[1:], seed=1)}
    check_both(model, feeds)


@pytest.mark.parametrize("elem", [U8, I8])
@pytest.mark.parametrize("op, scales", [("Add", s) for s in SCALES] + [("Mul", "inside")])
@pytest.mark.parametrize("zps", ["low", "high", "mixed"])
def test_qdq_binary_becomes_quantized(elem: int, op: str, scales: str, zps: str) -> None:
    """DQ(a), DQ(b) -> Add / Mul -> Q: the scale ratios are folded into the operands, so the
    output is rounded at scale 1, with no division per element."""
    nodes = [helper.make_node("DequantizeLinear", ["a", "as", "az"], ["fa"]),
             helper.make_node("DequantizeLinear", ["b", "bs", "bz"], ["fb"]),
             helper.make_node(op, ["fa", "fb"], ["out"]),
             helper.make_node("QuantizeLinear", ["out", "cs", "cz"], ["c"])]
    model = make_model(nodes, [tensor("a", SHAPE, elem), tensor("b", SHAPE, elem)],
                       [tensor("c", SHAPE, elem)],
                       _add_inits(elem, MUL_SCALES[scales], zero_points(elem, zps)), opset=13)
    _, g = check_both(model, {"a": ints(elem, SHAPE, 2), "b": ints(elem, SHAPE, 3)})
    (q,) = [n for n in g.nodes if n.op.name == "quantize"]
    assert float(q.inputs[1].data) == 1.0


def _concat_inits(elem: int, zps: str) -> list:
    lo, hi = LIMITS[elem]
    y_zp, a_zp, b_zp, c_zp = {"low": (lo, lo, lo, lo), "high": (hi, hi, hi, hi),
                              "mixed": (lo, hi, lo, (lo + hi) // 2)}[zps]
    return [init("ys", np.array(2e-6, np.float32)), init("yz", np.array(y_zp, NP[elem])),
            init("as", np.array(2e-6, np.float32)), init("az", np.array(y_zp, NP[elem])),
            init("bs", np.array(0.7, np.float32)), init("bz", np.array(b_zp, NP[elem])),
            init("cs", np.array(1e-6, np.float32)), init("cz", np.array(c_zp, NP[elem]))]


CONCAT = (("a", 3), ("b", 4), ("c", 6))      # input a at the output's scale and zero point


@pytest.mark.parametrize("elem", [U8, I8])
@pytest.mark.parametrize("zps", ["low", "high", "mixed"])
def test_qlinear_concat_adversarial(elem: int, zps: str) -> None:
    """b's range (0.7 per step) covers the output's (2e-6) many times over: it saturates;
    c's scale is half the output's."""
    names = ["ys", "yz", "a", "as", "az", "b", "bs", "bz", "c", "cs", "cz"]
    node = helper.make_node("QLinearConcat", names, ["y"], domain="com.microsoft", axis=-1)
    model = ms_model([node], [tensor(n, (5, 3, s), elem) for n, s in CONCAT],
                     [tensor("y", (5, 3, 13), elem)], _concat_inits(elem, zps))
    feeds = {n: ints(elem, (5, 3, s), seed=i) for i, (n, s) in enumerate(CONCAT)}
    got, _ = check_both(model, feeds)
    np.testing.assert_array_equal(got[0][..., :3], feeds["a"])   # passed through as is


@pytest.mark.parametrize("elem", [U8, I8])
@pytest.mark.parametrize("zps", ["low", "mixed"])
def test_qdq_concat_becomes_integer(elem: int, zps: str) -> None:
    nodes = [helper.make_node("DequantizeLinear", [n, f"{n}s", f"{n}z"], [f"f{n}"])
             for n, _ in CONCAT]
    nodes += [helper.make_node("Concat", [f"f{n}" for n, _ in CONCAT], ["cat"], axis=2),
              helper.make_node("QuantizeLinear", ["cat", "ys", "yz"], ["y"])]
    model = make_model(nodes, [tensor(n, (5, 3, s), elem) for n, s in CONCAT],
                       [tensor("y", (5, 3, 13), elem)], _concat_inits(elem, zps), opset=13)
    feeds = {n: ints(elem, (5, 3, s), seed=i) for i, (n, s) in enumerate(CONCAT)}
    _, g = check_both(model, feeds)
    assert "dequantize" not in {n.op.name for n in g.nodes}


def _qdq_conv(x_elem: int, shape: tuple, oc: int, kernel: int, group: int,
              pads: list[int], strides: list[int], seed: int = 0):
    """DQ(x), DQ(w) per output channel, DQ(bias) at x_scale * w_scale -> Conv -> Q (what
    onnxruntime's quantize_static writes)."""
    rng = np.random.default_rng(seed)
    cin = shape[1]
    w = rng.integers(-127, 128, (oc, cin // group, kernel, kernel)).astype(np.int8)
    xs, ws = np.float32(0.02), rng.uniform(0.002, 0.01, oc).astype(np.float32)
    bias = rng.integers(-3000, 3000, oc).astype(np.int32)
    lo, hi = LIMITS[x_elem]
    inits = [init("xs", xs), init("xz", np.array(lo + 17, NP[x_elem])), init("w", w),
             init("ws", ws), init("wz", np.zeros(oc, np.int8)), init("b", bias),
             init("bs", (xs * ws).astype(np.float32)), init("bz", np.zeros(oc, np.int32)),
             init("ys", np.float32(0.05)), init("yz", np.array(hi - 40, NP[x_elem]))]
    nodes = [helper.make_node("DequantizeLinear", ["x", "xs", "xz"], ["fx"]),
             helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["fw"], axis=0),
             helper.make_node("DequantizeLinear", ["b", "bs", "bz"], ["fb"], axis=0),
             helper.make_node("Conv", ["fx", "fw", "fb"], ["conv"], pads=pads, strides=strides,
                              group=group),
             helper.make_node("QuantizeLinear", ["conv", "ys", "yz"], ["y"])]
    return make_model(nodes, [tensor("x", shape, x_elem)], [tensor("y", None, x_elem)], inits,
                      opset=13)


@pytest.mark.parametrize("case", [
    # (x dtype, input shape, out channels, kernel, group, pads, strides)
    (U8, (1, 12, 3, 32), 21, 1, 1, [0, 0, 0, 0], [1, 1]),   # 1x1: the vpdpbusd template
    (U8, (2, 8, 5, 48), 7, 1, 1, [0, 0, 0, 0], [1, 1]),     # batch 2, 7 channels
    (I8, (1, 12, 3, 32), 9, 1, 1, [0, 0, 0, 0], [1, 1]),    # int8: the direct template
    (U8, (1, 5, 9, 13), 6, 3, 1, [1, 1, 1, 1], [2, 1]),     # 3x3, stride (2, 1)
    (U8, (1, 6, 7, 11), 6, 5, 6, [2, 2, 2, 2], [1, 2]),     # depthwise 5x5
    (I8, (1, 4, 6, 9), 8, 3, 4, [1, 0, 1, 2], [1, 1]),      # depthwise, multiplier 2
])
def test_qdq_conv_becomes_integer(case: tuple) -> None:
    x_elem, shape, oc, kernel, group, pads, strides = case
    model = _qdq_conv(x_elem, shape, oc, kernel, group, pads, strides)
    _, g = check_both(model, {"x": ints(x_elem, shape, seed=5)})
    ops = {n.op.name for n in g.nodes}
    assert "conv2d_integer" in ops and "dequantize" not in ops and "conv2d" not in ops, ops


def test_qdq_conv_uses_vpdpbusd() -> None:
    """The 1x1 uint8 convolution runs on the dot-product template."""
    model = _qdq_conv(U8, (1, 12, 3, 32), 21, 1, 1, [0, 0, 0, 0], [1, 1])
    c = kiln.compile_stages(import_onnx(model), "x86")
    if not c.target.int8_dot:
        pytest.skip("this CPU has no AVX-512 VNNI")
    assert Template.DOT_CONV in {k.template for k in c.kernels}


def test_qdq_group_left_as_written_when_the_float_value_is_also_read() -> None:
    """The Conv's float output is a graph output too: no rewrite (the float value is needed),
    and the model still matches onnxruntime."""
    model = _qdq_conv(U8, (1, 4, 5, 7), 3, 3, 1, [1, 1, 1, 1], [1, 1])
    model.graph.output.append(helper.make_tensor_value_info("conv", TensorProto.FLOAT, None))
    g = import_onnx(model)
    eliminate_dead_code(g)
    assert "conv2d_integer" not in {n.op.name for n in g.nodes}
    feeds = {"x": ints(U8, (1, 4, 5, 7))}
    got, want = kiln.compile(g)(**feeds), run_ort(model, feeds)
    assert np.abs(got[0].astype(int) - want[0].astype(int)).max() <= 1
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-5)
