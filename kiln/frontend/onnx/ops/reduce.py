"""Reductions and softmax."""

from __future__ import annotations

import onnx

from kiln.frontend.onnx.context import (
    Context,
    Converter,
    axes_list,
    axes_operand,
    onnx_op,
    prod_dims,
    reshape,
)
from kiln.ir.graph import Value
from kiln.ir.types import normalize_axis


@onnx_op("Softmax")
def _softmax(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x = ctx.required(0)
    rank = x.type.rank
    if ctx.opset >= 13:
        return [ctx.emit("softmax", [x], axis=normalize_axis(ctx.attr("axis", -1), rank))]
    # before opset 13, Softmax flattens x to 2-D [prod(dims[:axis]), prod(dims[axis:])] and
    # normalises each row; it only matches a per-axis softmax when axis is the last one
    axis = normalize_axis(ctx.attr("axis", 1), rank)
    if axis == rank - 1:
        return [ctx.emit("softmax", [x], axis=-1)]
    rows = (prod_dims(x.shape[:axis], "Softmax"), prod_dims(x.shape[axis:], "Softmax"))
    y = ctx.emit("softmax", [reshape(ctx, x, rows)], axis=-1)
    return [reshape(ctx, y, x.shape)]

def _reduce(kiln_op: str, input_from: int) -> Converter:
    """ReduceX with axes as an attribute before opset ``input_from``, as an input after."""
    def convert(node: onnx.NodeProto, ctx: Context) -> list[Value]:
        x = ctx.required(0)
        raw = axes_operand(ctx, input_from)
        axes = None if raw is None else axes_list(raw, x.type.rank)
        if not axes:
            if ctx.attr("noop_with_empty_axes", 0):
                return [x]
            axes = None
        keepdims = bool(ctx.attr("keepdims", 1))
        return [ctx.emit(kiln_op, [x], axes=None if axes is None else tuple(axes),
                         keepdims=keepdims)]
    return convert


onnx_op("ReduceSum")(_reduce("reduce_sum", 13))
onnx_op("ReduceMean")(_reduce("reduce_mean", 18))
onnx_op("ReduceMax")(_reduce("reduce_max", 18))
