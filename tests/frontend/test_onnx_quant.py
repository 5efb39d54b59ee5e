"""Quantized ONNX ops against onnxruntime, compiled for x86, on odd shapes (M 7, K 13, N 5),
per tensor and per channel, int8 and uint8, non-zero zero points: Quantize/Dequantize/
DynamicQuantizeLinear bit-exact, integer GEMM and convolution exact, requantized outputs
(QLinearMatMul, QLinearConv, com.microsoft QLinearAdd / QLinearConcat) within one step."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from test_onnx import F32, init, make_model, run_ort, tensor

import kiln
from kiln.frontend.onnx import import_onnx
from kiln.testing import assert_outputs_close

U8, I8 = TensorProto.UINT8, TensorProto.INT8
NP = {U8: np.uint8, I8: np.int8}
M, K, N = 7, 13, 5


def compiled_vs_ort(model, feeds: dict[str, np.ndarray], atol: float = 0) -> list[np.ndarray]:
    """Compile ``model``; its outputs equal onnxruntime's (integers to within ``atol``)."""
    got = kiln.compile(import_onnx(model))(**feeds)
    want = run_ort(model, feeds)
    assert_outputs_close(got, want, rtol=1e-6, atol=atol)
    return got


def ints(elem: int, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    lo, hi = (0, 256) if elem == U8 else (-128, 128)
    return np.random.default_rng(seed).integers(lo, hi, shape).astype(NP[elem])


def floats(shape: tuple[int, ...], scale: float = 4.0, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def ms_model(node, inputs, outputs, inits):
    """A model importing onnxruntime's com.microsoft domain."""
    graph = helper.make_graph([node], "test", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid("com.microsoft", 1)],
                             ir_version=10)


# -- QuantizeLinear / DequantizeLinear / DynamicQuantizeLinear ----------------------------------
@pytest.mark.parametrize("elem", [U8, I8])
@pytest.mark.parametrize("per_axis", [False, True])
def test_quantize_linear(elem: int, per_axis: bool) -> None:
    shape = (2, 5, 7)
    c = shape[1] if per_axis else 1
    scale = np.linspace(0.02, 0.3, c).astype(np.float32).reshape(-1 if per_axis else ())
    zp = ints(elem, (c,), seed=3).reshape(-1 if per_axis else ())
    x = floats(shape, 8.0)
    x.flat[:4] = [0.25, 0.75, -0.25, 1e6]                  # ties at scale 0.5, saturation
    scale.flat[0] = 0.5
    node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], axis=1)
    model = make_model([node], [tensor("x", shape)], [tensor("y", None, elem)],
                       [init("s", scale), init("z", zp)], opset=13)
    compiled_vs_ort(model, {"x": x})


def test_quantize_linear_default_uint8() -> None:
    node = helper.make_node("QuantizeLinear", ["x", "s"], ["y"])
    model = make_model([node], [tensor("x", (M, K))], [tensor("y", None, U8)],
                       [init("s", np.array(0.05, np.float32))], opset=13)
    compiled_vs_ort(model, {"x": floats((M, K))})


@pytest.mark.parametrize("elem", [U8, I8])
def test_dequantize_linear_per_axis(elem: int) -> None:
    node = helper.make_node("DequantizeLinear", ["x", "s", "z"], ["y"], axis=0)
    model = make_model([node], [tensor("x", (N, K), elem)], ["y"],
                       [init("s", np.linspace(0.01, 0.2, N).astype(np.float32)),
                        init("z", ints(elem, (N,), seed=5))], opset=13)
    compiled_vs_ort(model, {"x": ints(elem, (N, K))})


def test_dynamic_quantize_linear() -> None:
    node = helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])
    model = make_model([node], [tensor("x", (M, K))],
                       [tensor("y", None, U8), tensor("s", None), tensor("z", None, U8)],
                       opset=13)
    for seed, shift in ((0, 0.0), (1, 3.0), (2, -5.0)):   # mixed, all positive, all negative
        compiled_vs_ort(model, {"x": floats((M, K), seed=seed) + shift})


# -- integer GEMM and convolution ---------------------------------------------------------------
@pytest.mark.parametrize("ea,eb", [(U8, I8), (I8, I8), (U8, U8)])
@pytest.mark.parametrize("const_b", [True, False])
def test_matmul_integer(ea: int, eb: int, const_b: bool) -> None:
    """A [2, M, K] (batched) times B [K, N], scalar a zero point, per-column b zero point."""
    b, bz = ints(eb, (K, N), seed=1), ints(eb, (N,), seed=2)
    node = helper.make_node("MatMulInteger", ["a", "b", "az", "bz"], ["y"])
    inputs = [tensor("a", (2, M, K), ea)] + ([] if const_b else [tensor("b", (K, N), eb)])
    inits = [init("az", ints(ea, (), seed=3)), init("bz", bz)] + ([init("b", b)] if const_b
                                                                   else [])
    model = make_model([node], inputs, [tensor("y", None, TensorProto.INT32)], inits, opset=13)
    feeds = {"a": ints(ea, (2, M, K))} | ({} if const_b else {"b": b})
    compiled_vs_ort(model, feeds)


def test_conv_integer_with_padding() -> None:
    node = helper.make_node("ConvInteger", ["x", "w", "xz", "wz"], ["y"], pads=[1, 2, 1, 0],
                            strides=[1, 2])
    model = make_model([node], [tensor("x", (1, 3, 7, 9), U8)],
                       [tensor("y", None, TensorProto.INT32)],
                       [init("w", ints(U8, (5, 3, 3, 3), seed=1)),
                        init("xz", np.array(17, np.uint8)), init("wz", np.array(128, np.uint8))],
                       opset=13)
    compiled_vs_ort(model, {"x": ints(U8, (1, 3, 7, 9))})


# -- requantized outputs ------------------------------------------------------------------------
@pytest.mark.parametrize("elem", [U8, I8])
@pytest.mark.parametrize("const_scales", [True, False])
def test_qlinear_matmul(elem: int, const_scales: bool) -> None:
    """Constant scales take the fixed-point path, run-time ones onnxruntime's float path."""
    names = ["a", "as", "az", "b", "bs", "bz", "ys", "yz"]
    node = helper.make_node("QLinearMatMul", names, ["y"])
    values = {"as": np.array(0.02, np.float32), "az": ints(elem, (), seed=3),
              "b": ints(elem, (K, N), seed=1), "bs": np.array(0.03, np.float32),
              "bz": ints(elem, (), seed=4), "ys": np.array(0.25, np.float32),
              "yz": ints(elem, (), seed=5)}
    runtime = ["as", "bs", "ys"] if not const_scales else []
    inputs = [tensor("a", (M, K), elem)] + [tensor(n, (), F32) for n in runtime]
    model = make_model([node], inputs, [tensor("y", None, elem)],
                       [init(n, v) for n, v in values.items() if n not in runtime], opset=13)
    compiled_vs_ort(model, {"a": ints(elem, (M, K))} | {n: values[n] for n in runtime},
                    atol=1)


@pytest.mark.parametrize("elem", [U8, I8])
def test_qlinear_conv_per_channel(elem: int) -> None:
    names = ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "bias"]
    node = helper.make_node("QLinearConv", names, ["y"], pads=[1, 1, 1, 1])
    rng = np.random.default_rng(7)
    inits = [init("xs", np.array(0.05, np.float32)), init("xz", ints(elem, (), seed=3)),
             init("w", ints(I8, (5, 3, 3, 3), seed=1)),
             init("ws", rng.uniform(0.001, 0.01, 5).astype(np.float32)),
             init("wz", np.zeros(5, np.int8)), init("ys", np.array(0.4, np.float32)),
             init("yz", ints(elem, (), seed=4)),
             init("bias", rng.integers(-2000, 2000, 5).astype(np.int32))]
    model = make_model([node], [tensor("x", (1, 3, 7, 9), elem)], [tensor("y", None, elem)],
                       inits, opset=13)
    compiled_vs_ort(model, {"x": ints(elem, (1, 3, 7, 9))}, atol=1)


@pytest.mark.parametrize("elem", [U8, I8])
def test_qlinear_add_broadcast(elem: int) -> None:
    names = ["a", "as", "az", "b", "bs", "bz", "cs", "cz"]
    node = helper.make_node("QLinearAdd", names, ["c"], domain="com.microsoft")
    inits = [init("as", np.array(0.07, np.float32)), init("az", ints(elem, (), seed=3)),
             init("bs", np.array(0.013, np.float32)), init("bz", ints(elem, (), seed=4)),
             init("cs", np.array(0.11, np.float32)), init("cz", ints(elem, (), seed=5))]
    model = ms_model(node, [tensor("a", (M, N), elem), tensor("b", (N,), elem)],
                     [tensor("c", (M, N), elem)], inits)
    got = compiled_vs_ort(model, {"a": ints(elem, (M, N)), "b": ints(elem, (N,), seed=1)},
                          atol=1)
    assert got[0].dtype == NP[elem]


def test_qlinear_concat_rescales_each_input() -> None:
    """Three inputs: one already at the output's scale and zero point, two rescaled."""
    names = ["ys", "yz", "a", "as", "az", "b", "bs", "bz", "c", "cs", "cz"]
    node = helper.make_node("QLinearConcat", names, ["y"], domain="com.microsoft", axis=1)
    inits = [init("ys", np.array(0.1, np.float32)), init("yz", np.array(120, np.uint8)),
             init("as", np.array(0.1, np.float32)), init("az", np.array(120, np.uint8)),
             init("bs", np.array(0.037, np.float32)), init("bz", np.array(3, np.uint8)),
             init("cs", np.array(0.9, np.float32)), init("cz", np.array(200, np.uint8))]
    model = ms_model(node, [tensor(n, (M, s), U8) for n, s in (("a", 3), ("b", K), ("c", N))],
                     [tensor("y", (M, 3 + K + N), U8)], inits)
    feeds = {n: ints(U8, (M, s), seed=i) for i, (n, s) in enumerate((("a", 3), ("b", K),
                                                                     ("c", N)))}
    compiled_vs_ort(model, feeds, atol=1)
