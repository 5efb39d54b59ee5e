"""TE for data movement: each output element reads one input element (injective)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tvm import te, tirx

from kiln.ir.ops.movement import slice_ranges
from kiln.ir.types import normalize_axis
from kiln.schedules.compute.registry import NodeInfo, compute, shape_of


def _unravel(flat: Any, shape: Sequence[int]) -> list[Any]:
    idx = []
    for d in reversed(shape):
        idx.append(flat % d if d != 1 else 0)
        flat = flat // d
    return idx[::-1]


def _ravel(idx: Sequence[Any], shape: Sequence[int]) -> Any:
    flat: Any = 0
    for i, d in zip(idx, shape, strict=True):
        flat = flat * d + i
    return flat


@compute("reshape")
def reshape(n: NodeInfo, x: te.Tensor) -> te.Tensor:
    in_shape = shape_of(x)
    return te.compute(n.shape, lambda *i: x(*_unravel(_ravel(i, n.shape), in_shape)),
                      name=n.name)


@compute("transpose")
def transpose(n: NodeInfo, x: te.Tensor) -> te.Tensor:
    perm = n.attrs.perm

    def f(*i: Any) -> Any:
        src = [None] * len(perm)
        for out_axis, in_axis in enumerate(perm):
            src[in_axis] = i[out_axis]
        return x(*src)

    return te.compute(n.shape, f, name=n.name)


@compute("concat")
def concat(n: NodeInfo, *xs: te.Tensor) -> te.Tensor:
    axis = normalize_axis(n.attrs.axis, len(n.shape))
    offsets = [0]
    for x in xs:
        offsets.append(offsets[-1] + shape_of(x)[axis])

    def f(*i: Any) -> Any:
        def read(x: te.Tensor, lo: int) -> Any:
            src = list(i)
            src[axis] = i[axis] - lo
            return x(*src)

        expr = read(xs[0], 0)          # the last input's range is tested first (outermost)
        for x, lo in zip(xs[1:], offsets[1:-1], strict=True):
            expr = tirx.if_then_else(i[axis] >= lo, read(x, lo), expr)
        return expr

    return te.compute(n.shape, f, name=n.name)


@compute("split")
def split(n: NodeInfo, x: te.Tensor) -> tuple[te.Tensor, ...]:
    axis = normalize_axis(n.attrs.axis, len(shape_of(x)))

    def part(lo: int) -> Any:
        def f(*i: Any) -> Any:
            src = list(i)
            src[axis] = i[axis] + lo
            return x(*src)
        return f

    outs, lo = [], 0
    for k, (t, size) in enumerate(zip(n.outs, n.attrs.sizes, strict=True)):
        outs.append(te.compute(t.static_shape, part(lo), name=f"{n.name}_{k}"))
        lo += size
    return tuple(outs)


@compute("slice")
def slice_(n: NodeInfo, x: te.Tensor) -> te.Tensor:
    ranges = slice_ranges(n.attrs, shape_of(x))
    return te.compute(n.shape, lambda *i: x(*[r.start + r.step * j for r, j in zip(ranges, i,
                                                                                strict=True)]),
                      name=n.name)


@compute("gather")
def gather(n: NodeInfo, x: te.Tensor, idx: te.Tensor) -> te.Tensor:
    """Negative indices count from the end; out-of-range indices are clamped, so a bad index
    reads a wrong row rather than outside the buffer (the reference interpreter raises)."""
    x_shape = shape_of(x)
    axis = normalize_axis(n.attrs.axis, len(x_shape))
    rank_i = len(shape_of(idx))
    dim = x_shape[axis]

    def f(*i: Any) -> Any:
        v = idx(*i[axis:axis + rank_i]).astype("int64")
        v = tirx.Select(v < 0, v + dim, v)
        v = tirx.max(tirx.min(v, dim - 1), 0)
        return x(*i[:axis], v, *i[axis + rank_i:])

    return te.compute(n.shape, f, name=n.name)
