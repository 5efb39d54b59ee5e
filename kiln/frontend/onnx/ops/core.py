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


@onnx_op("Dropout")
def _dropout(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    """Inference: the input unchanged (training_mode must be off); the mask is all true."""
    x = ctx.required(0)
    training = ctx.const_input(2) if ctx.opset >= 12 else None
    if training is not None and bool(np.asarray(training).reshape(())):
        raise ModelError("Dropout in training mode is random; kiln compiles inference only")
    if len(node.output) > 1 and node.output[1]:
        ones = ctx.constant(np.ones((), dtype=bool))
        return [x, ctx.emit("broadcast_to", [ones], shape=x.shape)]
    return [x]


@onnx_op("Shape")
def _shape(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    """A constant when the dims are static; otherwise a runtime ``shape`` whose elements the
    importer still knows (``[1, "seq"]``), so reshapes computed from it stay symbolic."""
    x = ctx.required(0)
    rank = x.type.rank
    # start/end arrived in opset 15; they clamp rather than fail
    start, end = ctx.attr("start", 0), ctx.attr("end", rank)
    start = min(max(start + rank if start < 0 else start, 0), rank)
    end = min(max(end + rank if end < 0 else end, 0), rank)
    dims = x.shape[start:end]
    if all(isinstance(d, int) for d in dims):
        return [ctx.constant(np.array(dims, dtype=np.int64))]
    v = ctx.emit("shape", [x], start=start, end=end)
    ctx.known[id(v)] = np.array(dims, dtype=object)
    return [v]


@onnx_op("ConstantOfShape")
def _constant_of_shape(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    shape = ctx.dims_input(0, required=True)
    fill = ctx.attr("value")
    fill = np.zeros(1, np.float32) if fill is None else np.asarray(fill).reshape(-1)
    if all(isinstance(d, int) for d in shape):
        return [ctx.constant(np.full(tuple(shape), fill[0], dtype=fill.dtype),
                             dtype=fill.dtype)]
    return [ctx.emit("broadcast_to", [ctx.constant(fill.reshape(()), dtype=fill.dtype)],
                     shape=tuple(shape))]


@onnx_op("Expand")
def _expand(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x, target = ctx.required(0), ctx.dims_input(1, required=True)
    if x.data is not None and all(isinstance(d, int) for d in target):
        out_shape = broadcast_shapes(x.shape, tuple(target))
        return [ctx.constant(np.broadcast_to(x.data, out_shape).copy(), dtype=x.dtype)]
    return [ctx.emit("broadcast_to", [x], shape=tuple(target))]
