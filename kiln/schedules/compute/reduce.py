"""TE for reductions: reduce_*, softmax (max-subtracted) and layer_norm (two passes)."""

from __future__ import annotations

from typing import Any

from tvm import te, tirx

from kiln.ir.ops.reduce import reduce_axes
from kiln.ir.types import normalize_axis
from kiln.schedules.compute import fastmath
from kiln.schedules.compute.registry import NodeInfo, compute, const, shape_of


def _reduce(n: NodeInfo, x: te.Tensor, reducer: Any, name: str) -> te.Tensor:
    """``reducer`` (``te.sum`` or ``te.max``) over the node's axes, keeping dims if asked."""
    shape = shape_of(x)
    axes = reduce_axes(n.attrs, len(shape))
    rs = {a: te.reduce_axis((0, shape[a]), name=f"r{a}") for a in axes}

    def source(*i: Any) -> list[Any]:
        """The input index for output index ``i``: reduce axes where they were."""
        out = iter(i)
        src = []
        for d in range(len(shape)):
            if d in rs:
                src.append(rs[d])
                if n.attrs.keepdims:
                    next(out)             # the kept unit dim
            else:
                src.append(next(out))
        return src

    return te.compute(n.shape, lambda *i: reducer(x(*source(*i)), axis=list(rs.values())),
                      name=name)


@compute("reduce_sum")
def reduce_sum(n: NodeInfo, x: te.Tensor) -> te.Tensor:
    return _reduce(n, x, te.sum, n.name)


@compute("reduce_max")
def reduce_max(n: NodeInfo, x: te.Tensor) -> te.Tensor:
    return _reduce(n, x, te.max, n.name)


@compute("reduce_mean")
def reduce_mean(n: NodeInfo, x: te.Tensor) -> te.Tensor:
    shape = shape_of(x)
    count = 1
    for a in reduce_axes(n.attrs, len(shape)):
        count *= shape[a]
    total = _reduce(n, x, te.sum, f"{n.name}_sum")
    return te.compute(n.shape, lambda *i: total(*i) / const(count, n.dtype), name=n.name)


def _without(i: tuple[Any, ...], axis: int) -> tuple[Any, ...]:
    return i[:axis] + i[axis + 1:]


@compute("softmax")
def softmax(n: NodeInfo, x: te.Tensor) -> te.Tensor:
    """``e = exp(x - max x)``, ``y = e / sum e``: subtracting the row max keeps ``exp`` from
    overflowing, so any finite input gives a finite output."""
    shape = n.shape
    axis = normalize_axis(n.attrs.axis, len(shape))
    rows = _without(shape, axis)

    def at(i: tuple[Any, ...], j: Any) -> tuple[Any, ...]:
        return i[:axis] + (j,) + i[axis:]

    k1 = te.reduce_axis((0, shape[axis]), name="k")
    mx = te.compute(rows, lambda *i: te.max(x(*at(i, k1)), axis=k1), name=f"{n.name}_max")
    e = te.compute(shape, lambda *i: fastmath.exp(x(*i) - mx(*_without(i, axis))),
                   name=f"{n.name}_exp")
    k2 = te.reduce_axis((0, shape[axis]), name="k")
    s = te.compute(rows, lambda *i: te.sum(e(*at(i, k2)), axis=k2), name=f"{n.name}_sum")
    return te.compute(shape, lambda *i: e(*i) / s(*_without(i, axis)), name=n.name)


@compute("layer_norm")
def layer_norm(n: NodeInfo, x: te.Tensor, gamma: te.Tensor, beta: te.Tensor) -> te.Tensor:
    """Two passes over each row: the mean, then the variance of ``x - mean`` (never the
    ``E[x^2] - E[x]^2`` form, which loses precision when the mean is large)."""
    shape = n.shape
    axis = normalize_axis(n.attrs.axis, len(shape))
    rows, inner = shape[:axis], shape[axis:]
    count = 1
    for d in inner:
        count *= d
    dt = n.dtype

    def reduce_over_row(fn: Any, name: str) -> te.Tensor:
        ks = [te.reduce_axis((0, d), name=f"k{j}") for j, d in enumerate(inner)]
        return te.compute(rows, lambda *i: te.sum(fn(*i, *ks), axis=ks), name=name)

    total = reduce_over_row(x, f"{n.name}_sum")
    mean = te.compute(rows, lambda *i: total(*i) / const(count, dt), name=f"{n.name}_mean")
    sq = reduce_over_row(lambda *i: (x(*i) - mean(*i[:axis])) * (x(*i) - mean(*i[:axis])),
                         f"{n.name}_sqsum")
    rstd = te.compute(rows, lambda *i: const(1, dt) / tirx.sqrt(sq(*i) / const(count, dt)
                                                                 + const(n.attrs.epsilon, dt)),
                      name=f"{n.name}_rstd")
    return te.compute(shape, lambda *i: (x(*i) - mean(*i[:axis])) * rstd(*i[:axis])
                      * gamma(*i[axis:]) + beta(*i[axis:]), name=n.name)
