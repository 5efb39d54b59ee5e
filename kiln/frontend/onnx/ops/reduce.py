"""Reductions, arg-reductions and the softmax family (Softmax, LogSoftmax, Hardmax)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx

from kiln.errors import ModelError
from kiln.frontend.onnx.context import (
    Context,
    Converter,
    axes_list,
    axes_operand,
    onnx_op,
    prod_dims,
    reshape,
)
from kiln.ir.dtype import DType
from kiln.ir.graph import Value
from kiln.ir.types import normalize_axis


# -- Softmax, LogSoftmax, Hardmax ------------------------------------------------------------
def _per_axis(ctx: Context, x: Value, build: Callable[[Value, int], Value]) -> Value:
    """Apply ``build(x, axis)`` with ONNX's axis rules: from opset 13 along ``axis`` (default
    -1); before, on x flattened to 2-D ``[prod(dims[:axis]), prod(dims[axis:])]`` (default
    axis 1), which is a per-axis op only when axis is the last one."""
    rank = x.type.rank
    if ctx.opset >= 13:
        return build(x, normalize_axis(ctx.attr("axis", -1), rank))
    axis = normalize_axis(ctx.attr("axis", 1), rank) if rank else 0
    if axis >= rank - 1:
        return build(x, rank - 1)
    rows = (prod_dims(x.shape[:axis], "the 2-D view"), prod_dims(x.shape[axis:], "the 2-D view"))
    return reshape(ctx, build(reshape(ctx, x, rows), 1), x.shape)


@onnx_op("Softmax")
def _softmax(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    return [_per_axis(ctx, ctx.required(0),
                      lambda x, axis: ctx.emit("softmax", [x], axis=axis))]


@onnx_op("LogSoftmax")
def _log_softmax(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    return [_per_axis(ctx, ctx.required(0),
                      lambda x, axis: ctx.emit("log_softmax", [x], axis=axis))]


@onnx_op("Hardmax")
def _hardmax(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    """1 at the first maximum along the axis, 0 elsewhere: ``arange == arg_max``."""
    def build(x: Value, axis: int) -> Value:
        idx = ctx.emit("arg_max", [x], axis=axis, keepdims=True)
        dim = x.shape[axis]
        if not isinstance(dim, int):
            raise ModelError(f"Hardmax needs a static dim {axis}, got {x.type}")
        iota = np.arange(dim, dtype=np.int64).reshape((dim,) + (1,) * (x.type.rank - axis - 1))
        hit = ctx.emit("equal", [ctx.constant(iota), idx])
        return ctx.emit("cast", [hit], dtype=x.dtype)
    return [_per_axis(ctx, ctx.required(0), build)]


# -- ArgMax, ArgMin -----------------------------------------------------------------------------
def _arg(kiln_op: str) -> Converter:
    def convert(node: onnx.NodeProto, ctx: Context) -> list[Value]:
        x = ctx.required(0)
        if x.dtype is DType.bool:
            x = ctx.emit("cast", [x], dtype=DType.uint8)
        # select_last_index arrived in opset 12; before, ties went to the first index
        return [ctx.emit(kiln_op, [x], axis=normalize_axis(ctx.attr("axis", 0), x.type.rank),
                         keepdims=bool(ctx.attr("keepdims", 1)),
                         select_last_index=bool(ctx.attr("select_last_index", 0)))]
    return convert


onnx_op("ArgMax")(_arg("arg_max"))
onnx_op("ArgMin")(_arg("arg_min"))


# -- ReduceX ------------------------------------------------------------------------------------
# How each ONNX reduction is written in kiln ops: (prologue, kiln reduction, epilogue) where
# prologue and epilogue are elementwise op names (or None); fusion puts all three in one kernel.
_PLANS: dict[str, tuple[str | None, str, str | None]] = {
    "ReduceSum": (None, "reduce_sum", None),
    "ReduceMean": (None, "reduce_mean", None),
    "ReduceMax": (None, "reduce_max", None),
    "ReduceMin": (None, "reduce_min", None),
    "ReduceProd": (None, "reduce_prod", None),
    "ReduceL1": ("abs", "reduce_sum", None),
    "ReduceL2": ("square", "reduce_sum", "sqrt"),
    "ReduceSumSquare": ("square", "reduce_sum", None),
    "ReduceLogSum": (None, "reduce_sum", "log"),
    "ReduceLogSumExp": (None, "reduce_log_sum_exp", None),
}

# The value of each reduction over no elements (a reduced dim of size 0), as ONNX defines it.
_EMPTY: dict[str, float] = {
    "ReduceSum": 0.0, "ReduceMean": math.nan, "ReduceMax": -math.inf, "ReduceMin": math.inf,
    "ReduceProd": 1.0, "ReduceL1": 0.0, "ReduceL2": 0.0, "ReduceSumSquare": 0.0,
    "ReduceLogSum": -math.inf, "ReduceLogSumExp": -math.inf,
}


def _empty_value(op_type: str, dtype: DType) -> object:
    """The empty reduction's value in ``dtype``: infinities become the dtype's extremes."""
    v = _EMPTY[op_type]
    if dtype.is_float or not math.isinf(v):
        return v if dtype.is_float else int(0 if math.isnan(v) else v)
    if dtype is DType.bool:
        return v > 0          # max over nothing is False, min is True
    info = np.iinfo(dtype.np)
    return info.min if v < 0 else info.max


def _reduce(op_type: str, input_from: int) -> Converter:
    """ReduceX with axes as an attribute before opset ``input_from``, as an input after."""
    pre, kiln_op, post = _PLANS[op_type]

    def convert(node: onnx.NodeProto, ctx: Context) -> list[Value]:
        x = ctx.required(0)
        raw = axes_operand(ctx, input_from)
        axes = None if raw is None else axes_list(raw, x.type.rank)
        if not axes:
            # empty axes: reduce over all of them, or (opset 13/18+) pass x through
            if ctx.attr("noop_with_empty_axes", 0) and ctx.opset >= input_from:
                return [x]
            axes = list(range(x.type.rank))
        keepdims = bool(ctx.attr("keepdims", 1))
        out_shape = tuple((1 if keepdims else None) if i in axes else d
                          for i, d in enumerate(x.shape))
        out_shape = tuple(d for d in out_shape if d is not None)
        if 0 in x.shape:        # nothing to reduce (the identity), or an empty result
            if not all(isinstance(d, int) for d in out_shape):
                raise ModelError(f"{op_type} of an empty tensor needs static dims")
            fill = _empty_value(op_type, x.dtype)
            return [ctx.constant(np.full(out_shape, fill, dtype=x.dtype.np), dtype=x.dtype)]
        is_bool = x.dtype is DType.bool     # max/min over bool (opset 20) run on uint8
        if is_bool:
            x = ctx.emit("cast", [x], dtype=DType.uint8)
        if pre == "square":
            x = ctx.emit("mul", [x, x])
        elif pre is not None:
            x = ctx.emit(pre, [x])
        y = ctx.emit(kiln_op, [x], axes=tuple(axes), keepdims=keepdims)
        if post is not None:
            y = ctx.emit(post, [y])
        return [ctx.emit("cast", [y], dtype=DType.bool) if is_bool else y]
    return convert


for _op_type in _PLANS:
    # ReduceSum's axes became an input in opset 13, the others' in opset 18
    onnx_op(_op_type)(_reduce(_op_type, 13 if _op_type == "ReduceSum" else 18))
