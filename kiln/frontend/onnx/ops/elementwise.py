"""Elementwise ONNX ops: activations, arithmetic, comparisons, Cast and Where."""

from __future__ import annotations

import onnx

from kiln.errors import ModelError
from kiln.frontend.onnx.context import (
    Context,
    Converter,
    onnx_dtype,
    onnx_op,
)
from kiln.ir.graph import Value

_UNARY = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Exp": "exp", "Log": "log",
          "Sqrt": "sqrt", "Erf": "erf", "Neg": "neg", "Abs": "abs", "Reciprocal": "reciprocal"}
_BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div",
           "Equal": "equal", "Less": "less", "Greater": "greater"}


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


for _onnx_name, _kiln_name in _UNARY.items():
    onnx_op(_onnx_name)(_unary(_kiln_name))
for _onnx_name, _kiln_name in _BINARY.items():
    onnx_op(_onnx_name)(_binary(_kiln_name))


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


@onnx_op("Gelu")
def _gelu(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    approximate = ctx.attr("approximate", "none")
    if approximate not in ("none", "tanh"):
        raise ModelError(f"approximate={approximate!r} is not supported (none or tanh)")
    return [ctx.emit("gelu", [ctx.required(0)], approximate=approximate)]


@onnx_op("Cast")
def _cast(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x = ctx.required(0)
    dtype = onnx_dtype(ctx.attr("to"), f"the Cast target of %{x.name}")
    return [x if dtype == x.dtype else ctx.emit("cast", [x], dtype=dtype)]


@onnx_op("Where")
def _where(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    return [ctx.emit("where", ctx.inputs())]
