"""Reductions: reduce_sum / reduce_mean / reduce_max, softmax and layer_norm."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kiln.errors import ModelError
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


REDUCERS = {"reduce_sum": np.sum, "reduce_mean": np.mean, "reduce_max": np.max}
for _name, _fn in REDUCERS.items():
    register(OpDef(_name, ReduceAttrs, Pattern.REDUCTION, _infer_reduce, _reducer(_fn)))


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


register(OpDef("softmax", SoftmaxAttrs, Pattern.REDUCTION, _infer_softmax, _softmax_ref))


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
