"""Data movement ops (injective): reshape, transpose, concat, split, slice, gather."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kiln.errors import ModelError
from kiln.ir.dtype import DType
from kiln.ir.ops.registry import NoAttrs, OpDef, Pattern, register
from kiln.ir.types import Dim, TensorType, broadcast_shapes, format_shape, normalize_axis


def _tuple_field(obj: object, name: str) -> None:
    value = getattr(obj, name)
    if value is not None:
        object.__setattr__(obj, name, tuple(int(v) if not isinstance(v, str) else v
                                            for v in value))


@dataclass(frozen=True)
class ReshapeAttrs:
    shape: tuple[Dim, ...]   # at most one -1, inferred from the element count

    def __post_init__(self) -> None:
        _tuple_field(self, "shape")


def _infer_reshape(at: ReshapeAttrs, x: TensorType) -> TensorType:
    shape = list(at.shape)
    if shape.count(-1) > 1:
        raise ModelError(f"reshape to {format_shape(shape)} has more than one -1")
    if -1 in shape:
        if not x.is_static or not all(isinstance(d, int) for d in shape):
            raise ModelError(f"reshape to {format_shape(shape)}: -1 needs static shapes")
        known = int(np.prod([d for d in shape if d != -1]))
        if known == 0 or x.numel % known:
            raise ModelError(f"cannot reshape {format_shape(x.shape)} to {format_shape(shape)}")
        shape[shape.index(-1)] = x.numel // known
    out = TensorType(tuple(shape), x.dtype)
    if x.is_static and out.is_static and x.numel != out.numel:
        raise ModelError(f"cannot reshape {format_shape(x.shape)} ({x.numel} elements) "
                         f"to {format_shape(shape)} ({out.numel} elements)")
    return out


register(OpDef("reshape", ReshapeAttrs, Pattern.INJECTIVE, _infer_reshape,
               lambda at, x: x.reshape(_infer_reshape(at, TensorType.of(x.shape, x.dtype)).shape)))


@dataclass(frozen=True)
class TransposeAttrs:
    perm: tuple[int, ...]

    def __post_init__(self) -> None:
        _tuple_field(self, "perm")


def _infer_transpose(at: TransposeAttrs, x: TensorType) -> TensorType:
    if sorted(at.perm) != list(range(x.rank)):
        raise ModelError(f"transpose perm {list(at.perm)} is not a permutation of rank {x.rank}")
    return TensorType(tuple(x.shape[p] for p in at.perm), x.dtype)


register(OpDef("transpose", TransposeAttrs, Pattern.INJECTIVE, _infer_transpose,
               lambda at, x: np.transpose(x, at.perm)))


@dataclass(frozen=True)
class AxisAttrs:
    axis: int


def _infer_concat(at: AxisAttrs, *xs: TensorType) -> TensorType:
    rank = xs[0].rank
    axis = normalize_axis(at.axis, rank)
    total: Dim = 0
    for x in xs:
        if x.rank != rank or x.dtype != xs[0].dtype:
            raise ModelError("concat inputs differ in rank or dtype: "
                             + ", ".join(str(t) for t in xs))
        for d in range(rank):
            if d != axis and x.shape[d] != xs[0].shape[d]:
                raise ModelError("concat inputs differ outside the concat axis: "
                                 + ", ".join(str(t) for t in xs))
        if isinstance(total, int) and isinstance(x.shape[axis], int):
            total += x.shape[axis]
        else:
            raise ModelError("concat along a symbolic dim is not supported")
    shape = list(xs[0].shape)
    shape[axis] = total
    return TensorType(tuple(shape), xs[0].dtype)


register(OpDef("concat", AxisAttrs, Pattern.INJECTIVE, _infer_concat,
               lambda at, *xs: np.concatenate(xs, axis=at.axis), num_inputs=(1, None)))


@dataclass(frozen=True)
class SplitAttrs:
    axis: int
    sizes: tuple[int, ...]

    def __post_init__(self) -> None:
        _tuple_field(self, "sizes")


def _infer_split(at: SplitAttrs, x: TensorType) -> tuple[TensorType, ...]:
    axis = normalize_axis(at.axis, x.rank)
    if x.shape[axis] != sum(at.sizes) or min(at.sizes, default=0) < 0:
        raise ModelError(f"split sizes {list(at.sizes)} do not add up to dim {x.shape[axis]}")
    outs = []
    for s in at.sizes:
        shape = list(x.shape)
        shape[axis] = s
        outs.append(TensorType(tuple(shape), x.dtype))
    return tuple(outs)


def _split_ref(at: SplitAttrs, x: np.ndarray) -> tuple[np.ndarray, ...]:
    return tuple(np.split(x, np.cumsum(at.sizes)[:-1], axis=at.axis))


register(OpDef("split", SplitAttrs, Pattern.INJECTIVE, _infer_split, _split_ref))


@dataclass(frozen=True)
class SliceAttrs:
    """Python slicing per axis: ``x[starts[i]:ends[i]:steps[i]]`` along ``axes[i]``."""

    axes: tuple[int, ...]
    starts: tuple[int, ...]
    ends: tuple[int, ...]
    steps: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("axes", "starts", "ends", "steps"):
            _tuple_field(self, name)
        if self.steps is None:
            object.__setattr__(self, "steps", (1,) * len(self.axes))
        if not len(self.axes) == len(self.starts) == len(self.ends) == len(self.steps):
            raise ModelError("slice axes, starts, ends and steps differ in length")
        if 0 in self.steps:
            raise ModelError("slice step 0 is not allowed")


def slice_ranges(at: SliceAttrs, shape: tuple[int, ...]) -> list[range]:
    """The indices each axis keeps (clamped as Python slicing clamps)."""
    ranges = [range(d) for d in shape]
    for a, b, e, s in zip(at.axes, at.starts, at.ends, at.steps, strict=True):
        ax = normalize_axis(a, len(shape))
        ranges[ax] = range(*slice(b, e, s).indices(shape[ax]))
    return ranges


def _infer_slice(at: SliceAttrs, x: TensorType) -> TensorType:
    shape = list(x.shape)
    for a, b, e, s in zip(at.axes, at.starts, at.ends, at.steps, strict=True):
        ax = normalize_axis(a, x.rank)
        dim = x.shape[ax]
        if isinstance(e, str):
            # a prefix ending at a symbolic size (position_ids[:seq]), or all of a symbolic dim
            if b != 0 or s != 1 or (isinstance(dim, str) and dim != e):
                raise ModelError(f"slice {b}:{e}:{s} of dim {dim}: a symbolic bound must be "
                                 "the end of a prefix")
            shape[ax] = e
        elif isinstance(dim, str):
            raise ModelError(f"slice {b}:{e}:{s} of the symbolic dim {dim!r} is not supported")
        else:
            shape[ax] = len(range(*slice(b, e, s).indices(dim)))
    return TensorType(tuple(shape), x.dtype)


def _slice_ref(at: SliceAttrs, x: np.ndarray) -> np.ndarray:
    index = [slice(None)] * x.ndim
    for a, b, e, s in zip(at.axes, at.starts, at.ends, at.steps, strict=True):
        index[normalize_axis(a, x.ndim)] = slice(b, e, s)
    return x[tuple(index)]


register(OpDef("slice", SliceAttrs, Pattern.INJECTIVE, _infer_slice, _slice_ref))


def _infer_gather(at: AxisAttrs, x: TensorType, idx: TensorType) -> TensorType:
    if idx.dtype not in (DType.int32, DType.int64):
        raise ModelError(f"gather indices must be int32 or int64, got {idx.dtype}")
    axis = normalize_axis(at.axis, x.rank)
    return TensorType((*x.shape[:axis], *idx.shape, *x.shape[axis + 1:]), x.dtype)


def _gather_ref(at: AxisAttrs, x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    axis = normalize_axis(at.axis, x.ndim)
    if idx.size and (idx.min() < -x.shape[axis] or idx.max() >= x.shape[axis]):
        raise ModelError(f"gather index out of range for dim {x.shape[axis]}")
    return np.take(x, idx, axis=axis)


@dataclass(frozen=True)
class ShapeAttrs:
    """The dims ``start:end`` of the input's shape (Python slicing)."""

    start: int = 0
    end: int | None = None


def _infer_shape(at: ShapeAttrs, x: TensorType) -> TensorType:
    return TensorType((len(range(x.rank)[at.start:at.end]),), DType.int64)


register(OpDef("shape", ShapeAttrs, Pattern.OPAQUE, _infer_shape,
               lambda at, x: np.array(x.shape[at.start:at.end], dtype=np.int64)))


@dataclass(frozen=True)
class BroadcastAttrs:
    """Broadcast the input NumPy-style against ``shape`` (ONNX Expand: either side may be 1)."""

    shape: tuple[Dim, ...]

    def __post_init__(self) -> None:
        _tuple_field(self, "shape")


def _infer_broadcast_to(at: BroadcastAttrs, x: TensorType) -> TensorType:
    return TensorType(broadcast_shapes(x.shape, at.shape), x.dtype)


register(OpDef("broadcast_to", BroadcastAttrs, Pattern.INJECTIVE, _infer_broadcast_to,
               lambda at, x: np.broadcast_to(x, np.broadcast_shapes(x.shape, at.shape)).copy()))


register(OpDef("gather", AxisAttrs, Pattern.INJECTIVE, _infer_gather, _gather_ref,
               num_inputs=(2, 2)))

__all__ = ["AxisAttrs", "BroadcastAttrs", "NoAttrs", "ReshapeAttrs", "ShapeAttrs", "SliceAttrs",
           "SplitAttrs", "TransposeAttrs", "slice_ranges"]
