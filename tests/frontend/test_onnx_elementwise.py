"""ONNX elementwise ops against onnxruntime: activations (attribute defaults and values), math,
Clip in both opset forms, Mod, BitShift, bitwise and logical ops, comparisons, the variadic
Sum/Mean/Max/Min, Cast and CastLike; imported and run by the reference interpreter, and a few
compiled for x86 end to end."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from test_onnx import F32, I64, ODD, check, feeds_for, init, make_model, one_op, run_ort, tensor

import kiln
from kiln.errors import ModelError
from kiln.frontend.onnx import import_onnx
from kiln.testing import assert_outputs_close

U8, U16, U32, U64 = TensorProto.UINT8, TensorProto.UINT16, TensorProto.UINT32, TensorProto.UINT64
I8, I32, BOOL, F16, F64 = (TensorProto.INT8, TensorProto.INT32, TensorProto.BOOL,
                           TensorProto.FLOAT16, TensorProto.DOUBLE)
NP = {F32: np.float32, F16: np.float16, F64: np.float64, I8: np.int8, I32: np.int32,
      I64: np.int64, U8: np.uint8, U16: np.uint16, U32: np.uint32, U64: np.uint64, BOOL: np.bool_}


def check_compiled(model, feeds: dict[str, np.ndarray], rtol: float = 1e-5,
                   atol: float = 1e-6) -> kiln.Graph:
    """Compile ``model`` for x86 and compare with onnxruntime."""
    g = import_onnx(model)
    assert_outputs_close(kiln.compile(g)(**feeds), run_ort(model, feeds), rtol, atol)
    return g


def typed_model(op: str, elems: list[int], out_elem: int, opset: int = 18, **attrs):
    names = [f"x{i}" for i in range(len(elems))]
    node = helper.make_node(op, names, ["y"], **attrs)
    return make_model([node], [tensor(n, ODD if i == 0 else (5, 7), e)
                               for i, (n, e) in enumerate(zip(names, elems, strict=True))],
                      [tensor("y", None, out_elem)], opset=opset)


def int_feed(elem: int, shape, lo: int = -20, hi: int = 21, seed: int = 0) -> np.ndarray:
    dt = np.dtype(NP[elem])
    info = np.iinfo(dt)
    return np.random.default_rng(seed).integers(max(lo, info.min), min(hi, info.max), shape,
                                                dtype=dt)


# -- activations and math ---------------------------------------------------------------------
@pytest.mark.parametrize("op,opset", [
    ("Softplus", 17), ("Softsign", 17), ("Mish", 18), ("HardSwish", 17), ("Sign", 17),
    ("Floor", 17), ("Ceil", 17), ("Round", 17), ("Sin", 17), ("Cos", 17), ("Tan", 17),
    ("Atan", 17), ("Sinh", 17), ("Cosh", 17), ("Asinh", 17), ("LeakyRelu", 17), ("Elu", 17),
    ("Celu", 17), ("Selu", 17), ("ThresholdedRelu", 17), ("HardSigmoid", 17), ("Shrink", 17)])
def test_unary_defaults(op: str, opset: int) -> None:
    check(one_op(op, [ODD], opset=opset), {"x0": np.random.default_rng(0).uniform(
        -3, 3, ODD).astype(np.float32)}, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op,attrs", [
    ("LeakyRelu", {"alpha": 0.3}), ("Elu", {"alpha": 0.5}), ("Celu", {"alpha": 2.0}),
    ("Selu", {"alpha": 2.0, "gamma": 3.0}), ("ThresholdedRelu", {"alpha": 0.4}),
    ("HardSigmoid", {"alpha": 0.5, "beta": 0.6}), ("Shrink", {"bias": 1.5, "lambd": 1.0})])
def test_activation_attributes(op: str, attrs: dict) -> None:
    check(one_op(op, [ODD], **attrs), feeds_for([ODD]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op,lo,hi", [("Asin", -1, 1), ("Acos", -1, 1), ("Atanh", -0.99, 0.99),
                                      ("Acosh", 1, 30)])
def test_unary_bounded_domains(op: str, lo: float, hi: float) -> None:
    x = np.random.default_rng(1).uniform(lo, hi, ODD).astype(np.float32)
    check(one_op(op, [ODD]), {"x0": x}, rtol=1e-5, atol=1e-6)


def test_prelu_broadcast_slope() -> None:
    slope = init("s", np.random.default_rng(3).uniform(0, 1, (5, 1)).astype(np.float32))
    check_compiled(one_op("PRelu", [ODD], consts=[slope]), feeds_for([ODD]))


def test_swish_opset24() -> None:
    """Swish is opset 24 (onnxruntime 1.31 lacks it): against its definition."""
    g = import_onnx(one_op("Swish", [ODD], opset=24, alpha=1.5))
    x = feeds_for([ODD])["x0"]
    got = kiln.compile(g)(x0=x)[0]
    np.testing.assert_allclose(got, x / (1 + np.exp(-1.5 * x)), rtol=1e-6, atol=1e-6)


def test_is_nan_is_inf() -> None:
    x = np.array([[np.inf, -np.inf, np.nan, 0.0, 1.0, -3e38, 3e38]], np.float32)
    nodes = [helper.make_node("IsNaN", ["x"], ["a"]),
             helper.make_node("IsInf", ["x"], ["b"]),
             helper.make_node("IsInf", ["x"], ["c"], detect_negative=0),
             helper.make_node("IsInf", ["x"], ["d"], detect_positive=0)]
    model = make_model(nodes, [tensor("x", x.shape)],
                       [tensor(n, None, BOOL) for n in "abcd"])
    check_compiled(model, {"x": x})


# -- Clip ---------------------------------------------------------------------------------------
def test_clip_attributes_before_opset11() -> None:
    check(one_op("Clip", [ODD], opset=6, min=-0.5, max=0.7), feeds_for([ODD]))


@pytest.mark.parametrize("bounds", [("lo", "hi"), ("lo", ""), ("", "hi"), ("hi", "lo")])
def test_clip_optional_inputs(bounds: tuple[str, str]) -> None:
    consts = [init("lo", np.array(-0.4, np.float32)), init("hi", np.array(0.6, np.float32))]
    node = helper.make_node("Clip", ["x", *bounds], ["y"])
    model = make_model([node], [tensor("x", ODD)], ["y"], consts, opset=13)
    check_compiled(model, {"x": feeds_for([ODD])["x0"]})


def test_clip_runtime_bounds_and_int8() -> None:
    node = helper.make_node("Clip", ["x", "lo", "hi"], ["y"])
    model = make_model([node], [tensor("x", ODD, I8), tensor("lo", (), I8),
                                tensor("hi", (), I8)], [tensor("y", None, I8)], opset=13)
    check_compiled(model, {"x": int_feed(I8, ODD), "lo": np.array(-5, np.int8),
                           "hi": np.array(7, np.int8)})


# -- integer and bitwise ops ---------------------------------------------------------------------
@pytest.mark.parametrize("elem", [I32, I64, U8, U32])
@pytest.mark.parametrize("fmod", [0, 1])
def test_mod_integers(elem: int, fmod: int) -> None:
    model = typed_model("Mod", [elem, elem], elem, fmod=fmod)
    b = int_feed(elem, (5, 7), seed=1)
    b[b == 0] = 3       # onnxruntime divides by zero; kiln gives 0 (tested in tests/ir)
    check_compiled(model, {"x0": int_feed(elem, ODD), "x1": b})


@pytest.mark.parametrize("elem", [F32, F64])
def test_mod_float_fmod(elem: int) -> None:
    model = typed_model("Mod", [elem, elem], elem, fmod=1)
    rng = np.random.default_rng(4)
    feeds = {"x0": rng.uniform(-10, 10, ODD).astype(NP[elem]),
             "x1": rng.uniform(0.5, 3, (5, 7)).astype(NP[elem])}
    check_compiled(model, feeds)


@pytest.mark.parametrize("elem", [U8, U32, U64])      # onnxruntime has no uint16 BitShift
@pytest.mark.parametrize("direction", ["LEFT", "RIGHT"])
def test_bitshift(elem: int, direction: str) -> None:
    model = typed_model("BitShift", [elem, elem], elem, opset=11, direction=direction)
    bits = np.dtype(NP[elem]).itemsize * 8
    check_compiled(model, {"x0": int_feed(elem, ODD, 0, 200),
                           "x1": int_feed(elem, (5, 7), 0, bits, seed=1)})


@pytest.mark.parametrize("op", ["BitwiseAnd", "BitwiseOr", "BitwiseXor"])
@pytest.mark.parametrize("elem", [I32, U8, U64])
def test_bitwise_binary(op: str, elem: int) -> None:
    check_compiled(typed_model(op, [elem, elem], elem),
                   {"x0": int_feed(elem, ODD), "x1": int_feed(elem, (5, 7), seed=1)})


def test_bitwise_not() -> None:
    model = typed_model("BitwiseNot", [I32], I32)
    check_compiled(model, {"x0": int_feed(I32, ODD)})


@pytest.mark.parametrize("op", ["And", "Or", "Xor"])
def test_logical(op: str) -> None:
    rng = np.random.default_rng(5)
    nodes = [helper.make_node(op, ["a", "b"], ["c"]), helper.make_node("Not", ["c"], ["y"])]
    model = make_model(nodes, [tensor("a", ODD, BOOL), tensor("b", (5, 7), BOOL)],
                       [tensor("y", None, BOOL)])
    check_compiled(model, {"a": rng.random(ODD) < 0.5, "b": rng.random((5, 7)) < 0.5})


@pytest.mark.parametrize("op", ["Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual"])
@pytest.mark.parametrize("elem", [F32, I64, U16])
def test_comparisons(op: str, elem: int) -> None:
    model = typed_model(op, [elem, elem], BOOL)
    rng = np.random.default_rng(0)
    feeds = {"x0": rng.integers(0, 4, ODD).astype(NP[elem]),
             "x1": rng.integers(0, 4, (5, 7)).astype(NP[elem])}
    check_compiled(model, feeds)


def test_integer_division_truncates() -> None:
    model = typed_model("Div", [I32, I32], I32)
    b = int_feed(I32, (5, 7), seed=2)
    b[b == 0] = -3
    check_compiled(model, {"x0": int_feed(I32, ODD), "x1": b})


# -- variadic ---------------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["Sum", "Mean", "Max", "Min"])
@pytest.mark.parametrize("n", [1, 3])
def test_variadic(op: str, n: int) -> None:
    shapes = [ODD, (5, 7), (7,)][:n]
    check_compiled(one_op(op, shapes), feeds_for(shapes))


# -- Cast, CastLike -----------------------------------------------------------------------
@pytest.mark.parametrize("src", [F32, F64, F16, I8, U8, I32, I64, U16, U32, U64, BOOL])
def test_cast_from(src: str) -> None:
    """One model casting ``src`` to every supported dtype, compiled, against onnxruntime."""
    dsts = [F32, F64, F16, I8, U8, I32, I64, U16, U32, U64, BOOL]
    nodes = [helper.make_node("Cast", ["x"], [f"y{d}"], to=d) for d in dsts]
    model = make_model(nodes, [tensor("x", ODD, src)],
                       [tensor(f"y{d}", None, d) for d in dsts])
    rng = np.random.default_rng(6)
    x = rng.uniform(0, 100, ODD)
    x = (x > 50) if src == BOOL else x.astype(NP[src])
    check_compiled(model, {"x": x}, rtol=1e-3, atol=1e-3)


def test_cast_like_takes_the_dtype_of_its_second_input() -> None:
    node = helper.make_node("CastLike", ["x", "like"], ["y"])
    model = make_model([node], [tensor("x", ODD), tensor("like", (1,), I32)],
                       [tensor("y", None, I32)], opset=15)
    g = check_compiled(model, {"x": feeds_for([ODD])["x0"] * 5,
                               "like": np.zeros(1, np.int32)})
    assert g.outputs[0].dtype.value == "int32"


@pytest.mark.parametrize("elem", [TensorProto.FLOAT8E8M0, TensorProto.STRING,
                                  TensorProto.COMPLEX64])
def test_unsupported_cast_targets_are_model_errors(elem: int) -> None:
    model = make_model([helper.make_node("Cast", ["x"], ["y"], to=elem)], [tensor("x", ODD)],
                       [tensor("y", None, elem)], opset=21)
    with pytest.raises(ModelError, match="kiln does not support"):
        import_onnx(model)


def test_bitshift_bad_direction() -> None:
    model = typed_model("BitShift", [U8, U8], U8, direction="UP")
    with pytest.raises(ModelError, match="direction='UP'"):
        import_onnx(model)
