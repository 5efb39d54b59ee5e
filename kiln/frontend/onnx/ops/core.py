"""Constants, Identity and shape queries."""

from __future__ import annotations

import numpy as np
import onnx

from kiln.errors import ModelError
from kiln.frontend.onnx.context import (
    Context,
    onnx_op,
)
from kiln.ir.graph import Value
from kiln.ir.types import broadcast_shapes


@onnx_op("Constant")
def _constant(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    for name, dtype in (("value", None), ("value_float", np.float32),
                        ("value_floats", np.float32), ("value_int", np.int64),
                        ("value_ints", np.int64)):
        if ctx.has_attr(name):
            data = np.asarray(ctx.attr(name), dtype=dtype)
            return [ctx.constant(data, dtype=data.dtype)]
    kinds = ", ".join(a.name for a in node.attribute) or "none"
    raise ModelError(f"Constant with attribute {kinds} is not supported "
                     "(kiln takes value, value_float(s) and value_int(s))")


@onnx_op("Identity")
def _identity(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    return [ctx.required(0)]


@onnx_op("Shape")
def _shape(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x = ctx.required(0)
    rank = x.type.rank
    # start/end arrived in opset 15; they clamp rather than fail
    start, end = ctx.attr("start", 0), ctx.attr("end", rank)
    start = min(max(start + rank if start < 0 else start, 0), rank)
    end = min(max(end + rank if end < 0 else end, 0), rank)
    dims = x.shape[start:end]
    if not all(isinstance(d, int) for d in dims):
        raise ModelError(f"Shape of %{x.name} ({x.type}) has symbolic dims; kiln folds Shape "
                         "to a constant, so fix them with import_onnx(..., input_shapes=...)")
    return [ctx.constant(np.array(dims, dtype=np.int64))]


@onnx_op("ConstantOfShape")
def _constant_of_shape(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    shape = ctx.const_input(0, required=True)
    fill = ctx.attr("value")
    fill = np.zeros(1, np.float32) if fill is None else np.asarray(fill).reshape(-1)
    return [ctx.constant(np.full(tuple(int(d) for d in shape), fill[0], dtype=fill.dtype),
                         dtype=fill.dtype)]


@onnx_op("Expand")
def _expand(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x, shape = ctx.required(0), ctx.const_input(1, required=True)
    target = tuple(int(d) for d in np.asarray(shape).reshape(-1))
    if x.data is not None:
        out_shape = broadcast_shapes(x.shape, target)
        return [ctx.constant(np.broadcast_to(x.data, out_shape).copy(), dtype=x.dtype)]
    # kiln has no broadcast op; where() broadcasts all three operands and copies x exactly
    ones = ctx.constant(np.ones(target, dtype=bool))
    return [ctx.emit("where", [ones, x, x])]
