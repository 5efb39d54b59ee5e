"""Elementwise ONNX ops: activations, math, arithmetic, comparisons, bitwise and logical ops,
Clip, the variadic Sum/Mean/Max/Min, Cast, CastLike and Where."""

from __future__ import annotations

import onnx

from kiln.errors import ModelError
from kiln.frontend.onnx.context import (
    Context,
    Converter,
    onnx_dtype,
    onnx_op,
    reshape,
)
from kiln.ir.graph import Value

_UNARY = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Exp": "exp", "Log": "log",
          "Sqrt": "sqrt", "Erf": "erf", "Neg": "neg", "Abs": "abs", "Reciprocal": "reciprocal",
          "Sign": "sign", "Floor": "floor", "Ceil": "ceil", "Round": "round",
          "Sin": "sin", "Cos": "cos", "Tan": "tan", "Asin": "asin", "Acos": "acos",
          "Atan": "atan", "Sinh": "sinh", "Cosh": "cosh", "Asinh": "asinh", "Acosh": "acosh",
          "Atanh": "atanh", "Softplus": "softplus", "Softsign": "softsign", "Mish": "mish",
          "HardSwish": "hard_swish", "IsNaN": "is_nan", "BitwiseNot": "bitwise_not",
          "Not": "logical_not"}
_BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "PRelu": "prelu",
           "Equal": "equal", "Less": "less", "LessOrEqual": "less_equal",
           "Greater": "greater", "GreaterOrEqual": "greater_equal",
           "BitwiseAnd": "bitwise_and", "BitwiseOr": "bitwise_or", "BitwiseXor": "bitwise_xor",
           "And": "logical_and", "Or": "logical_or", "Xor": "logical_xor"}
# ONNX op -> (kiln op, {attribute: default}); the attribute names are kiln's too.
_ACTIVATIONS = {
    "LeakyRelu": ("leaky_relu", {"alpha": 0.01}),
    "Elu": ("elu", {"alpha": 1.0}),
    "Celu": ("celu", {"alpha": 1.0}),
    "Selu": ("selu", {"alpha": 1.67326319217681884765625, "gamma": 1.05070102214813232421875}),
    "ThresholdedRelu": ("thresholded_relu", {"alpha": 1.0}),
    "HardSigmoid": ("hard_sigmoid", {"alpha": 0.2, "beta": 0.5}),
    "Shrink": ("shrink", {"bias": 0.0, "lambd": 0.5}),
    "Swish": ("swish", {"alpha": 1.0}),
}


def _unary(kiln_op: str) -> Converter:
    def convert(node: onnx.NodeProto, ctx: Context) -> list[Value]:
        return [ctx.emit(kiln_op, [ctx.required(0)])]
    return convert


def _binary(kiln_op: str) -> Converter:
    def convert(node: onnx.NodeProto, ctx: Context) -> list[Value]:
        if ctx.opset < 7 and ctx.attr("broadcast", 0):
            raise ModelError("legacy broadcasting (the broadcast/axis attributes before "
                             "opset 7) is not supported")
        return [ctx.emit(kiln_op, [ctx.required(0), ctx.required(1)])]
    return convert


def _activation(kiln_op: str, defaults: dict[str, float]) -> Converter:
    def convert(node: onnx.NodeProto, ctx: Context) -> list[Value]:
        attrs = {name: float(ctx.attr(name, d)) for name, d in defaults.items()}
        return [ctx.emit(kiln_op, [ctx.required(0)], **attrs)]
    return convert


for _onnx_name, _kiln_name in _UNARY.items():
    onnx_op(_onnx_name)(_unary(_kiln_name))
for _onnx_name, _kiln_name in _BINARY.items():
    onnx_op(_onnx_name)(_binary(_kiln_name))
for _onnx_name, (_kiln_name, _defaults) in _ACTIVATIONS.items():
    onnx_op(_onnx_name)(_activation(_kiln_name, _defaults))


@onnx_op("IsInf")
def _is_inf(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    return [ctx.emit("is_inf", [ctx.required(0)],
                     detect_positive=bool(ctx.attr("detect_positive", 1)),
                     detect_negative=bool(ctx.attr("detect_negative", 1)))]


@onnx_op("Mod")
def _mod(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    return [ctx.emit("mod", [ctx.required(0), ctx.required(1)],
                     fmod=bool(ctx.attr("fmod", 0)))]


@onnx_op("BitShift")
def _bit_shift(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    direction = ctx.attr("direction")
    if direction not in ("LEFT", "RIGHT"):
        raise ModelError(f"direction={direction!r} is not supported (LEFT or RIGHT)")
    op = "shift_left" if direction == "LEFT" else "shift_right"
    return [ctx.emit(op, [ctx.required(0), ctx.required(1)])]


@onnx_op("Pow")
def _pow(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x, y = ctx.required(0), ctx.required(1)
    if y.dtype == x.dtype:
        return [ctx.emit("pow", [x, y])]
    # ONNX lets the exponent's dtype differ (opset 12+), kiln does not: an integer exponent
    # is cast to the base's dtype; an integer base with a float exponent is raised in floats
    # and truncated back, as onnxruntime does
    if x.dtype.is_float or not y.dtype.is_float:
        return [ctx.emit("pow", [x, ctx.emit("cast", [y], dtype=x.dtype)])]
    p = ctx.emit("pow", [ctx.emit("cast", [x], dtype=y.dtype), y])
    return [ctx.emit("cast", [p], dtype=x.dtype)]


@onnx_op("Clip")
def _clip(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    """``min(max(x, lo), hi)``, so lo > hi gives hi everywhere, as ONNX specifies. The bounds
    are attributes before opset 11 and optional scalar inputs (any runtime value) after."""
    x = ctx.required(0)
    if ctx.opset < 11:
        lo = ctx.scalar(ctx.attr("min"), x) if ctx.has_attr("min") else None
        hi = ctx.scalar(ctx.attr("max"), x) if ctx.has_attr("max") else None
    else:
        lo, hi = ctx.input(1), ctx.input(2)
    for bound, op in ((lo, "maximum"), (hi, "minimum")):
        if bound is None:
            continue
        if bound.type.rank and all(d == 1 for d in bound.shape):
            bound = reshape(ctx, bound, ())     # a [1] bound must not add an axis to x
        x = ctx.emit(op, [x, bound])
    return [x]


def _variadic(kiln_op: str) -> Converter:
    def convert(node: onnx.NodeProto, ctx: Context) -> list[Value]:
        xs = ctx.inputs()
        out = xs[0]
        for x in xs[1:]:
            out = ctx.emit(kiln_op, [out, x])
        return [out]
    return convert


onnx_op("Max")(_variadic("maximum"))
onnx_op("Min")(_variadic("minimum"))
onnx_op("Sum")(_variadic("add"))


@onnx_op("Mean")
def _mean(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    total = _variadic("add")(node, ctx)[0]
    n = len(ctx.inputs())
    return [total if n == 1 else ctx.emit("div", [total, ctx.scalar(n, total)])]


@onnx_op("Gelu")
def _gelu(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    approximate = ctx.attr("approximate", "none")
    if approximate not in ("none", "tanh"):
        raise ModelError(f"approximate={approximate!r} is not supported (none or tanh)")
    return [ctx.emit("gelu", [ctx.required(0)], approximate=approximate)]


def _cast_to(ctx: Context, x: Value, dtype: object) -> Value:
    # saturate (opset 19) only concerns float8 targets; round_mode (opset 24) only float8e8m0,
    # which kiln does not support
    saturate = bool(ctx.attr("saturate", 1))
    return x if dtype == x.dtype else ctx.emit("cast", [x], dtype=dtype, saturate=saturate)


@onnx_op("Cast")
def _cast(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x = ctx.required(0)
    return [_cast_to(ctx, x, onnx_dtype(ctx.attr("to"), f"the Cast target of %{x.name}"))]


@onnx_op("CastLike")
def _cast_like(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    return [_cast_to(ctx, ctx.required(0), ctx.required(1).dtype)]


@onnx_op("Where")
def _where(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    return [ctx.emit("where", ctx.inputs())]
