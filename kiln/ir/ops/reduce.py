"""Reductions: reduce_{sum,mean,max,min,prod,log_sum_exp}, arg_max / arg_min, softmax,
log_softmax and layer_norm.

ONNX's ReduceL1, ReduceL2, ReduceSumSquare and ReduceLogSum are not ops of their own: the
frontend writes them as reduce_sum with an elementwise prologue (abs, x * x) or epilogue
(sqrt, log), which fusion puts in the same kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kiln.errors import ModelError
from kiln.ir.dtype import DType
from kiln.ir.ops.registry import OpDef, Pattern, register
from kiln.ir.types import TensorType, normalize_axis


@dataclass(frozen=True)
class ReduceAttrs:
    axes: tuple[int, ...] | None = None   # None: all axes
    keepdims: bool = False

    def __post_init__(self) -> None:
        if self.axes is not None:
            object.__setattr__(self, "axes", tuple(int(a) for a in self.axes))


def reduce_axes(at: ReduceAttrs, rank: int) -> tuple[int, ...]:
    if at.axes is None:
        return tuple(range(rank))
    axes = tuple(sorted({normalize_axis(a, rank) for a in at.axes}))
    if len(axes) != len(at.axes):
        raise ModelError(f"reduce axes {list(at.axes)} repeat an axis")
    return axes


def _infer_reduce(at: ReduceAttrs, x: TensorType) -> TensorType:
    axes = reduce_axes(at, x.rank)
    if at.keepdims:
        shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
    else:
        shape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
    return TensorType(shape, x.dtype)


def _reducer(fn):
    def ref(at: ReduceAttrs, x: np.ndarray) -> np.ndarray:
        acc = np.float64 if x.dtype.kind == "f" else x.dtype
        out = fn(x.astype(acc), axis=reduce_axes(at, x.ndim), keepdims=at.keepdims)
        return np.asarray(out).astype(x.dtype)
    return ref


def _log_sum_exp(x: np.ndarray, axis: tuple[int, ...], keepdims: bool) -> np.ndarray:
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)    # an all -inf row gives -inf, not nan
    out = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis)


REDUCERS = {"reduce_sum": np.sum, "reduce_mean": np.mean, "reduce_max": np.max,
            "reduce_min": np.min, "reduce_prod": np.prod, "reduce_log_sum_exp": _log_sum_exp}
for _name, _fn in REDUCERS.items():
    register(OpDef(_name, ReduceAttrs, Pattern.REDUCTION, _infer_reduce, _reducer(_fn)))


@dataclass(frozen=True)
class ArgReduceAttrs:
    """The index of the largest (arg_max) or smallest (arg_min) element along ``axis``; ties go
    to the first such index, or to the last with ``select_last_index``."""

    axis: int = 0
    keepdims: bool = True
    select_last_index: bool = False


def _infer_arg(at: ArgReduceAttrs, x: TensorType) -> TensorType:
    axis = normalize_axis(at.axis, x.rank)
    if at.keepdims:
        shape = tuple(1 if i == axis else d for i, d in enumerate(x.shape))
    else:
        shape = tuple(d for i, d in enumerate(x.shape) if i != axis)
    return TensorType(shape, DType.int64)


def _arg_ref(fn):
    def ref(at: ArgReduceAttrs, x: np.ndarray) -> np.ndarray:
        axis = normalize_axis(at.axis, x.ndim)
        if at.select_last_index:   # the first hit in the flipped axis is the last one
            out = x.shape[axis] - 1 - fn(np.flip(x, axis), axis=axis)
        else:
            out = fn(x, axis=axis)
        out = np.asarray(out, dtype=np.int64)
        return np.expand_dims(out, axis) if at.keepdims else out
    return ref


register(OpDef("arg_max", ArgReduceAttrs, Pattern.REDUCTION, _infer_arg, _arg_ref(np.argmax)))
register(OpDef("arg_min", ArgReduceAttrs, Pattern.REDUCTION, _infer_arg, _arg_ref(np.argmin)))


@dataclass(frozen=True)
class SoftmaxAttrs:
    axis: int = -1


def _infer_softmax(at: SoftmaxAttrs, x: TensorType) -> TensorType:
    if not x.dtype.is_float:
        raise ModelError(f"softmax needs a floating-point input, got {x.dtype}")
    normalize_axis(at.axis, x.rank)
    return x


def _softmax_ref(at: SoftmaxAttrs, x: np.ndarray) -> np.ndarray:
    x64 = x.astype(np.float64)
    e = np.exp(x64 - x64.max(axis=at.axis, keepdims=True))
    return (e / e.sum(axis=at.axis, keepdims=True)).astype(x.dtype)


def _log_softmax_ref(at: SoftmaxAttrs, x: np.ndarray) -> np.ndarray:
    x64 = x.astype(np.float64)
    shifted = x64 - x64.max(axis=at.axis, keepdims=True)
    return (shifted - np.log(np.exp(shifted).sum(axis=at.axis, keepdims=True))).astype(x.dtype)


register(OpDef("softmax", SoftmaxAttrs, Pattern.REDUCTION, _infer_softmax, _softmax_ref))
register(OpDef("log_softmax", SoftmaxAttrs, Pattern.REDUCTION, _infer_softmax,
               _log_softmax_ref))

# ops that reduce along one ``axis`` attribute (the others take ``ReduceAttrs.axes``)
AXIS_REDUCTIONS = ("softmax", "log_softmax", "arg_max", "arg_min")


@dataclass(frozen=True)
class LayerNormAttrs:
    """Normalise over axes ``[axis, rank)``; gamma and beta have shape ``x.shape[axis:]``."""

    axis: int = -1
    epsilon: float = 1e-5


def _infer_layer_norm(at: LayerNormAttrs, x: TensorType, gamma: TensorType,
                      beta: TensorType) -> TensorType:
    if not x.dtype.is_float:
        raise ModelError(f"layer_norm needs a floating-point input, got {x.dtype}")
    axis = normalize_axis(at.axis, x.rank)
    for name, t in (("gamma", gamma), ("beta", beta)):
        if t.shape != x.shape[axis:] or t.dtype != x.dtype:
            raise ModelError(f"layer_norm {name} must be {x.dtype.short}"
                             f"{list(x.shape[axis:])}, got {t}")
    return x


def _layer_norm_ref(at: LayerNormAttrs, x: np.ndarray, gamma: np.ndarray,
                    beta: np.ndarray) -> np.ndarray:
    axes = tuple(range(normalize_axis(at.axis, x.ndim), x.ndim))
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=axes, keepdims=True)
    var = ((x64 - mean) ** 2).mean(axis=axes, keepdims=True)
    return ((x64 - mean) / np.sqrt(var + at.epsilon) * gamma + beta).astype(x.dtype)


register(OpDef("layer_norm", LayerNormAttrs, Pattern.REDUCTION, _infer_layer_norm,
               _layer_norm_ref, num_inputs=(3, 3)))
