"""Index-driven ops: range, gather variants and scatters, tile, one_hot, trilu, cumulative
sums and products, top_k.

Range, gathers, tile, one_hot and trilu are injective (each output element reads one input element)
and fuse like reshapes. Scatters, cumulative ops and top_k carry a dependence from one element
to the next (a later update overwrites an earlier one; a running sum), so they are opaque:
one kernel each, with its loop nest written out in the TE compute.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from kiln.errors import ModelError
from kiln.ir.dtype import DType
from kiln.ir.ops.registry import OpDef, Pattern, register
from kiln.ir.types import Dim, TensorType, format_shape, normalize_axis

INDEX_DTYPES = (DType.int32, DType.int64)


def _index_type(op: str, idx: TensorType) -> None:
    if idx.dtype not in INDEX_DTYPES:
        raise ModelError(f"{op} indices must be int32 or int64, got {idx.dtype}")


def _wrap(idx: np.ndarray, dim: int, op: str) -> np.ndarray:
    """Negative indices count from the end; anything outside ``[-dim, dim)`` is an error."""
    if idx.size and (idx.min() < -dim or idx.max() >= dim):
        raise ModelError(f"{op} index out of range for dim {dim}")
    return np.where(idx < 0, idx + dim, idx).astype(np.int64)


# -- range --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RangeAttrs:
    """``out[i] = start + i * delta`` for ``i < shape[0]``; the length is known at import (an
    int, or a symbolic dim such as ``seq`` for ``Range(0, seq, 1)``)."""

    shape: tuple[Dim, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(d if isinstance(d, str) else int(d)
                                                for d in self.shape))
        if len(self.shape) != 1:
            raise ModelError(f"range shape must have one dim, got {format_shape(self.shape)}")


def _infer_range(at: RangeAttrs, start: TensorType, delta: TensorType) -> TensorType:
    if start.shape != () or delta.shape != () or start.dtype != delta.dtype:
        raise ModelError(f"range needs scalar start and delta of one dtype, got {start} and "
                         f"{delta}")
    return TensorType(at.shape, start.dtype)


def _range_ref(at: RangeAttrs, start: np.ndarray, delta: np.ndarray) -> np.ndarray:
    return (start + np.arange(at.shape[0]).astype(start.dtype) * delta).astype(start.dtype)


register(OpDef("range", RangeAttrs, Pattern.INJECTIVE, _infer_range, _range_ref,
               num_inputs=(2, 2)))


# -- gather_elements ----------------------------------------------------------------------------
@dataclass(frozen=True)
class GatherElementsAttrs:
    axis: int = 0


def _infer_gather_elements(at: GatherElementsAttrs, x: TensorType,
                           idx: TensorType) -> TensorType:
    _index_type("gather_elements", idx)
    normalize_axis(at.axis, x.rank)
    if idx.rank != x.rank:
        raise ModelError(f"gather_elements indices {idx} must have the rank of the data {x}")
    return TensorType(idx.shape, x.dtype)


def _gather_elements_ref(at: GatherElementsAttrs, x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    axis = normalize_axis(at.axis, x.ndim)
    # indices may be smaller than the data off the axis too, which take_along_axis rejects
    pos = list(np.indices(idx.shape, sparse=True))
    pos[axis] = _wrap(idx, x.shape[axis], "gather_elements")
    return x[tuple(pos)]


register(OpDef("gather_elements", GatherElementsAttrs, Pattern.INJECTIVE,
               _infer_gather_elements, _gather_elements_ref, num_inputs=(2, 2)))


# -- gather_nd ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class GatherNDAttrs:
    """``out[b, j] = x[b, idx[b, j, :]]``: the last dim of ``idx`` indexes that many leading
    dims of ``x`` after the first ``batch_dims`` (which ``x`` and ``idx`` share)."""

    batch_dims: int = 0


def _infer_gather_nd(at: GatherNDAttrs, x: TensorType, idx: TensorType) -> TensorType:
    _index_type("gather_nd", idx)
    b = at.batch_dims
    if idx.rank < 1 or not isinstance(idx.shape[-1], int):
        raise ModelError(f"gather_nd indices {idx} need a static last dim")
    m = idx.shape[-1]
    if b < 0 or b >= min(x.rank, idx.rank) or b + m > x.rank:
        raise ModelError(f"gather_nd: batch_dims={b} with index depth {m} does not fit data "
                         f"{x} and indices {idx}")
    if x.shape[:b] != idx.shape[:b]:
        raise ModelError(f"gather_nd: batch dims differ: {x} vs {idx}")
    return TensorType((*idx.shape[:-1], *x.shape[b + m:]), x.dtype)


def _gather_nd_ref(at: GatherNDAttrs, x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    b, m = at.batch_dims, idx.shape[-1]
    batch = int(np.prod(x.shape[:b], dtype=np.int64))
    xs = x.reshape((batch, *x.shape[b:]))
    ids = idx.reshape((batch, -1, m))
    out = np.empty((batch, ids.shape[1], *x.shape[b + m:]), x.dtype)
    for i in range(batch):
        for j in range(ids.shape[1]):
            pos = tuple(int(_wrap(ids[i, j, d], x.shape[b + d], "gather_nd"))
                        for d in range(m))
            out[i, j] = xs[i][pos]
    return out.reshape((*idx.shape[:-1], *x.shape[b + m:]))


register(OpDef("gather_nd", GatherNDAttrs, Pattern.INJECTIVE, _infer_gather_nd,
               _gather_nd_ref, num_inputs=(2, 2)))


# -- tile ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TileAttrs:
    repeats: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "repeats", tuple(int(r) for r in self.repeats))
        if any(r < 0 for r in self.repeats):
            raise ModelError(f"tile repeats {list(self.repeats)} must be >= 0")


def _infer_tile(at: TileAttrs, x: TensorType) -> TensorType:
    if len(at.repeats) != x.rank:
        raise ModelError(f"tile repeats {list(at.repeats)} must have one entry per dim of {x}")
    shape = []
    for d, r in zip(x.shape, at.repeats, strict=True):
        if isinstance(d, str) and r != 1:
            raise ModelError(f"tile of symbolic dim {d} needs static dims")
        shape.append(d * r if isinstance(d, int) else d)
    return TensorType(tuple(shape), x.dtype)


register(OpDef("tile", TileAttrs, Pattern.INJECTIVE, _infer_tile,
               lambda at, x: np.tile(x, at.repeats)))


# -- one_hot ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OneHotAttrs:
    """``out = values[1]`` where ``arange(depth) == idx`` along the new ``axis``, else
    ``values[0]``; a negative index counts from ``depth``, one out of range matches nothing."""

    depth: int
    axis: int = -1


def _infer_one_hot(at: OneHotAttrs, idx: TensorType, values: TensorType) -> TensorType:
    _index_type("one_hot", idx)
    if values.shape != (2,):
        raise ModelError(f"one_hot values must be [off, on], got {values}")
    if at.depth < 1:
        raise ModelError(f"one_hot depth must be >= 1, got {at.depth}")
    axis = normalize_axis(at.axis, idx.rank + 1)
    return TensorType((*idx.shape[:axis], at.depth, *idx.shape[axis:]), values.dtype)


def _one_hot_ref(at: OneHotAttrs, idx: np.ndarray, values: np.ndarray) -> np.ndarray:
    axis = normalize_axis(at.axis, idx.ndim + 1)
    idx = np.where(idx < 0, idx + at.depth, idx)
    shape = [1] * (idx.ndim + 1)
    shape[axis] = at.depth
    hit = np.arange(at.depth).reshape(shape) == np.expand_dims(idx, axis)
    return np.where(hit, values[1], values[0]).astype(values.dtype)


register(OpDef("one_hot", OneHotAttrs, Pattern.INJECTIVE, _infer_one_hot, _one_hot_ref,
               num_inputs=(2, 2)))


# -- trilu --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TriluAttrs:
    """Keep the upper (``j - i >= k``) or lower (``j - i <= k``) triangle of the last two dims;
    zero the rest. ``k`` comes from the optional second input (an int64 scalar, read at run
    time) when there is one, else from the attribute."""

    upper: bool = True
    k: int = 0


def _infer_trilu(at: TriluAttrs, x: TensorType, k: TensorType | None = None) -> TensorType:
    if x.rank < 2:
        raise ModelError(f"trilu needs rank >= 2, got {x}")
    if k is not None and (k.dtype is not DType.int64 or k.shape not in ((), (1,))):
        raise ModelError(f"trilu k must be an int64 scalar, got {k}")
    return x


def _trilu_ref(at: TriluAttrs, x: np.ndarray, k: np.ndarray | None = None) -> np.ndarray:
    kk = at.k if k is None else int(np.asarray(k).reshape(-1)[0])
    return np.triu(x, kk) if at.upper else np.tril(x, kk)


register(OpDef("trilu", TriluAttrs, Pattern.INJECTIVE, _infer_trilu, _trilu_ref,
               num_inputs=(1, 2)))


# -- scatter_nd, scatter_elements ---------------------------------------------------------------
class ScatterReduction(str, Enum):
    """How an update combines with the value already there (ONNX's ``reduction``)."""

    NONE = "none"
    ADD = "add"
    MUL = "mul"
    MAX = "max"
    MIN = "min"

    def __str__(self) -> str:
        return self.value


_COMBINE = {ScatterReduction.NONE: lambda old, new: new,
            ScatterReduction.ADD: np.add, ScatterReduction.MUL: np.multiply,
            ScatterReduction.MAX: np.maximum, ScatterReduction.MIN: np.minimum}


@dataclass(frozen=True)
class ScatterAttrs:
    """``axis`` is scatter_elements' only; scatter_nd indexes leading dims."""

    reduction: ScatterReduction = ScatterReduction.NONE
    axis: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "reduction", ScatterReduction(self.reduction))


def _infer_scatter_nd(at: ScatterAttrs, x: TensorType, idx: TensorType,
                      upd: TensorType) -> TensorType:
    _index_type("scatter_nd", idx)
    if idx.rank < 1 or not isinstance(idx.shape[-1], int) or idx.shape[-1] > x.rank:
        raise ModelError(f"scatter_nd indices {idx} need a static last dim <= rank of {x}")
    want = (*idx.shape[:-1], *x.shape[idx.shape[-1]:])
    if upd.shape != want or upd.dtype != x.dtype:
        raise ModelError(f"scatter_nd updates must be {x.dtype.short}{format_shape(want)}, "
                         f"got {upd}")
    return x


def _scatter_nd_ref(at: ScatterAttrs, x: np.ndarray, idx: np.ndarray,
                    upd: np.ndarray) -> np.ndarray:
    out = x.copy()
    m = idx.shape[-1]
    combine = _COMBINE[at.reduction]
    ids = idx.reshape(-1, m)
    ups = upd.reshape((ids.shape[0], *x.shape[m:]))
    for j in range(ids.shape[0]):
        pos = tuple(int(_wrap(ids[j, d], x.shape[d], "scatter_nd")) for d in range(m))
        out[pos] = combine(out[pos], ups[j])
    return out


register(OpDef("scatter_nd", ScatterAttrs, Pattern.OPAQUE, _infer_scatter_nd, _scatter_nd_ref,
               num_inputs=(3, 3)))


def _infer_scatter_elements(at: ScatterAttrs, x: TensorType, idx: TensorType,
                            upd: TensorType) -> TensorType:
    _index_type("scatter_elements", idx)
    normalize_axis(at.axis, x.rank)
    if idx.rank != x.rank or upd.shape != idx.shape or upd.dtype != x.dtype:
        raise ModelError(f"scatter_elements needs indices and updates of one shape and the "
                         f"data's rank, got data {x}, indices {idx}, updates {upd}")
    return x


def _scatter_elements_ref(at: ScatterAttrs, x: np.ndarray, idx: np.ndarray,
                          upd: np.ndarray) -> np.ndarray:
    axis = normalize_axis(at.axis, x.ndim)
    out = x.copy()
    combine = _COMBINE[at.reduction]
    wrapped = _wrap(idx, x.shape[axis], "scatter_elements")
    for pos in np.ndindex(*idx.shape):    # in order: with no reduction the last update wins
        dst = list(pos)
        dst[axis] = int(wrapped[pos])
        out[tuple(dst)] = combine(out[tuple(dst)], upd[pos])
    return out


register(OpDef("scatter_elements", ScatterAttrs, Pattern.OPAQUE, _infer_scatter_elements,
               _scatter_elements_ref, num_inputs=(3, 3)))


# -- cumsum, cumprod ----------------------------------------------------------------------------
@dataclass(frozen=True)
class CumulativeAttrs:
    """Running sums / products along ``axis``; ``exclusive`` leaves the current element out,
    ``reverse`` runs from the end."""

    axis: int
    exclusive: bool = False
    reverse: bool = False


def _cumulative_ref(fn, identity: int):
    def ref(at: CumulativeAttrs, x: np.ndarray) -> np.ndarray:
        axis = normalize_axis(at.axis, x.ndim)
        y = np.flip(x, axis) if at.reverse else x
        if at.exclusive:
            pad = [(0, 0)] * x.ndim
            pad[axis] = (1, 0)
            y = np.pad(y, pad, constant_values=identity)
            y = np.take(y, range(x.shape[axis]), axis=axis)
        y = fn(y, axis=axis, dtype=x.dtype)
        return np.flip(y, axis) if at.reverse else y
    return ref


def _infer_cumulative(at: CumulativeAttrs, x: TensorType) -> TensorType:
    normalize_axis(at.axis, x.rank)
    return x


register(OpDef("cumsum", CumulativeAttrs, Pattern.OPAQUE, _infer_cumulative,
               _cumulative_ref(np.cumsum, 0)))
register(OpDef("cumprod", CumulativeAttrs, Pattern.OPAQUE, _infer_cumulative,
               _cumulative_ref(np.cumprod, 1)))


# -- top_k --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TopKAttrs:
    """The ``k`` largest (or smallest) elements along ``axis``, in order, and their indices;
    equal values keep their input order (the lower index first), as ONNX requires."""

    k: int
    axis: int = -1
    largest: bool = True


def _infer_top_k(at: TopKAttrs, x: TensorType) -> tuple[TensorType, TensorType]:
    axis = normalize_axis(at.axis, x.rank)
    dim = x.shape[axis]
    if not isinstance(dim, int) or not 0 <= at.k <= dim:
        raise ModelError(f"top_k: k={at.k} must be within dim {axis} of {x}")
    shape = (*x.shape[:axis], at.k, *x.shape[axis + 1:])
    return TensorType(shape, x.dtype), TensorType(shape, DType.int64)


def _top_k_ref(at: TopKAttrs, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    axis = normalize_axis(at.axis, x.ndim)
    # a stable sort keeps equal values in index order; for largest, sort the negated keys
    # (through float64 for unsigned ints, where negation would wrap)
    key = x.astype(np.float64) if x.dtype.kind in "ub" else x
    order = np.argsort(-key if at.largest else key, axis=axis, kind="stable")
    idx = np.take(order, range(at.k), axis=axis).astype(np.int64)
    return np.take_along_axis(x, idx, axis=axis), idx


register(OpDef("top_k", TopKAttrs, Pattern.OPAQUE, _infer_top_k, _top_k_ref))

# ops whose TE compute writes its own scheduled loop nest (te.extern): no template applies
LOOP_NEST_OPS = ("scatter_nd", "scatter_elements", "cumsum", "cumprod", "top_k")
