"""TE for data movement: each output element reads one input element (injective)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tvm import te, tirx

from kiln.ir.types import normalize_axis
from kiln.schedules.compute.registry import (
    NodeInfo,
    broadcast_index,
    compute,
    is_one,
    shape_of,
    te_shape,
)


def _unravel(flat: Any, shape: Sequence[Any]) -> list[Any]:
    idx = []
    for d in reversed(shape):
        idx.append(0 if is_one(d) else flat % d)
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
        outs.append(te.compute(te_shape(t.shape, n.syms), part(lo), name=f"{n.name}_{k}"))
        lo += size
    return tuple(outs)


@compute("slice")
def slice_(n: NodeInfo, x: te.Tensor) -> te.Tensor:
    """``out[i] = x[start + step * i]`` per axis; a symbolic end (a prefix) starts at 0."""
    x_shape = shape_of(x)
    starts, steps = [0] * len(x_shape), [1] * len(x_shape)
    for a, b, e, s in zip(*(getattr(n.attrs, f) for f in ("axes", "starts", "ends", "steps")),
                          strict=True):
        ax = normalize_axis(a, len(x_shape))
        if not isinstance(e, str):
            r = range(*slice(b, e, s).indices(x_shape[ax]))
            starts[ax], steps[ax] = r.start, r.step
    return te.compute(n.shape, lambda *i: x(*[b + s * j for b, s, j in zip(starts, steps, i,
                                                                           strict=True)]),
                      name=n.name)


@compute("shape")
def shape(n: NodeInfo, x: te.Tensor) -> te.Tensor:
    """The input's dims as an int64 vector (symbolic ones read from its buffer shape)."""
    dims = list(shape_of(x))[n.attrs.start:n.attrs.end]

    def f(i: Any) -> Any:
        expr = tirx.const(0, "int64")
        for k, d in enumerate(dims):
            expr = tirx.Select(i == k, tirx.Cast("int64", d) if not isinstance(d, int)
                               else tirx.const(d, "int64"), expr)
        return expr

    return te.compute(n.shape, f, name=n.name)


@compute("broadcast_to")
def broadcast_to(n: NodeInfo, x: te.Tensor) -> te.Tensor:
    return te.compute(n.shape, lambda *i: x(*broadcast_index(x, n.shape, i)), name=n.name)


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
