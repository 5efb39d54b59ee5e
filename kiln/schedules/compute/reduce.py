"""TE for reductions: reduce_*, arg_max / arg_min, softmax and log_softmax (max-subtracted) and
layer_norm (two passes)."""

from __future__ import annotations

from typing import Any

from tvm import te, tirx

from kiln.ir.ops.reduce import reduce_axes
from kiln.ir.types import normalize_axis
from kiln.schedules.compute import fastmath
from kiln.schedules.compute.registry import (
    NodeInfo,
    compute,
    const,
    extent_as,
    shape_of,
)


def _reduce(n: NodeInfo, x: te.Tensor, reducer: Any, name: str,
            body: Any = None) -> te.Tensor:
    """``reducer`` (``te.sum``, ``te.max``...) over the node's axes, keeping dims if asked.
    ``body(i, src)`` gives the reduced term for output index ``i`` at input index ``src``
    (default: ``x[src]``)."""
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

    def term(*i: Any) -> Any:
        src = source(*i)
        return x(*src) if body is None else body(i, src)

    return te.compute(n.shape, lambda *i: reducer(term(*i), axis=list(rs.values())),
                      name=name)


def _product_identity(dtype: str) -> tirx.PrimExpr:
    return const(1, dtype)


# te has sum/max/min built in; a product is the same commutative reducer with * and 1
_product = te.comm_reducer(lambda a, b: a * b, _product_identity, name="product")


@compute("reduce_sum")
def reduce_sum(n: NodeInfo, x: te.Tensor) -> te.Tensor:
    return _reduce(n, x, te.sum, n.name)


@compute("reduce_max")
def reduce_max(n: NodeInfo, x: te.Tensor) -> te.Tensor:
    return _reduce(n, x, te.max, n.name)


@compute("reduce_min")
def reduce_min(n: NodeInfo, x: te.Tensor) -> te.Tensor:
    return _reduce(n, x, te.min, n.name)


@compute("reduce_prod")
def reduce_prod(n: NodeInfo, x: te.Tensor) -> te.Tensor:
    return _reduce(n, x, _product, n.name)


@compute("reduce_mean")
def reduce_mean(n: NodeInfo, x: te.Tensor) -> te.Tensor:
    shape = shape_of(x)
    count = 1
    for a in reduce_axes(n.attrs, len(shape)):
        count *= shape[a]
    total = _reduce(n, x, te.sum, f"{n.name}_sum")
    return te.compute(n.shape, lambda *i: total(*i) / extent_as(count, n.dtype), name=n.name)


@compute("reduce_log_sum_exp")
def reduce_log_sum_exp(n: NodeInfo, x: te.Tensor) -> te.Tensor:
    """``m + log(sum exp(x - m))`` with ``m = max x``: no term of the sum exceeds 1, so it
    cannot overflow however large x is."""
    mx = _reduce(n, x, te.max, f"{n.name}_max")
    s = _reduce(n, x, te.sum, f"{n.name}_sum",
                body=lambda i, src: fastmath.exp(x(*src) - mx(*i)))
    return te.compute(n.shape, lambda *i: tirx.log(s(*i)) + mx(*i), name=n.name)


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
    e = te.compute(shape, lambda *i: fastmath.exp_nonpositive(x(*i) - mx(*_without(i, axis))),
                   name=f"{n.name}_exp")
    k2 = te.reduce_axis((0, shape[axis]), name="k")
    s = te.compute(rows, lambda *i: te.sum(e(*at(i, k2)), axis=k2), name=f"{n.name}_sum")
    # one division per row, then a multiply per element: vdivps has a fifth of vmulps'
    # throughput, and the reciprocal costs at most one more rounding (< 1.2e-7 relative)
    inv = te.compute(rows, lambda *i: const(1, n.dtype) / s(*i), name=f"{n.name}_inv")
    return te.compute(shape, lambda *i: e(*i) * inv(*_without(i, axis)), name=n.name)


@compute("log_softmax")
def log_softmax(n: NodeInfo, x: te.Tensor) -> te.Tensor:
    """``x - m - log(sum exp(x - m))`` with ``m`` the row max: stable for any finite input, and
    exact in the tail where ``log(softmax(x))`` would take the log of an underflowed 0."""
    shape = n.shape
    axis = normalize_axis(n.attrs.axis, len(shape))
    rows = _without(shape, axis)

    def at(i: tuple[Any, ...], j: Any) -> tuple[Any, ...]:
        return i[:axis] + (j,) + i[axis:]

    k1 = te.reduce_axis((0, shape[axis]), name="k")
    mx = te.compute(rows, lambda *i: te.max(x(*at(i, k1)), axis=k1), name=f"{n.name}_max")
    k2 = te.reduce_axis((0, shape[axis]), name="k")
    s = te.compute(rows, lambda *i: te.sum(fastmath.exp(x(*at(i, k2)) - mx(*i)), axis=k2),
                   name=f"{n.name}_sum")
    lse = te.compute(rows, lambda *i: mx(*i) + tirx.log(s(*i)), name=f"{n.name}_lse")
    return te.compute(shape, lambda *i: x(*i) - lse(*_without(i, axis)), name=n.name)


def _arg_reduce(n: NodeInfo, x: te.Tensor, extreme: Any) -> te.Tensor:
    """Two plain reductions instead of one over (value, index) pairs, so both vectorise: the
    extreme value ``m`` of the row, then the smallest (or, with ``select_last_index``, the
    largest) index ``k`` where ``x[k] == m``."""
    shape = shape_of(x)
    axis = normalize_axis(n.attrs.axis, len(shape))
    dim = shape[axis]
    rows = _without(shape, axis)

    def at(i: tuple[Any, ...], j: Any) -> tuple[Any, ...]:
        i = _without(i, axis) if n.attrs.keepdims else i
        return i[:axis] + (j,) + i[axis:]

    def row(i: tuple[Any, ...]) -> tuple[Any, ...]:
        return _without(i, axis) if n.attrs.keepdims else i

    k1 = te.reduce_axis((0, dim), name="k")
    m = te.compute(rows, lambda *i: extreme(x(*(i[:axis] + (k1,) + i[axis:])), axis=k1),
                   name=f"{n.name}_extreme")
    k2 = te.reduce_axis((0, dim), name="k")
    last = n.attrs.select_last_index
    # the search runs on int32 indices (the loop's own type: no widening per element, and
    # twice the lanes of int64); only the result is widened
    miss = const(-1, "int32") if last else extent_as(dim, "int32")
    pick = te.max if last else te.min

    def first_hit(*i: Any) -> Any:
        hit = x(*at(i, k2)) == m(*row(i))
        return pick(tirx.Select(hit, k2.var.astype("int32"), miss), axis=k2)

    idx = te.compute(n.shape, first_hit, name=f"{n.name}_index")
    return te.compute(n.shape, lambda *i: idx(*i).astype("int64"), name=n.name)


@compute("arg_max")
def arg_max(n: NodeInfo, x: te.Tensor) -> te.Tensor:
    return _arg_reduce(n, x, te.max)


@compute("arg_min")
def arg_min(n: NodeInfo, x: te.Tensor) -> te.Tensor:
    return _arg_reduce(n, x, te.min)


@compute("layer_norm")
def layer_norm(n: NodeInfo, x: te.Tensor, gamma: te.Tensor, beta: te.Tensor) -> te.Tensor:
    """Two passes over each row: the mean, then the variance of ``x - mean`` (never the
    ``E[x^2] - E[x]^2`` form, which loses precision when the mean is large)."""
    shape = n.shape
    axis = normalize_axis(n.attrs.axis, len(shape))
    rows, inner = shape[:axis], shape[axis:]
    count: Any = 1                  # a PrimExpr when the row has a symbolic dim
    for d in inner:
        count *= d
    dt = n.dtype

    def reduce_over_row(fn: Any, name: str) -> te.Tensor:
        ks = [te.reduce_axis((0, d), name=f"k{j}") for j, d in enumerate(inner)]
        return te.compute(rows, lambda *i: te.sum(fn(*i, *ks), axis=ks), name=name)

    total = reduce_over_row(x, f"{n.name}_sum")
    mean = te.compute(rows, lambda *i: total(*i) / extent_as(count, dt), name=f"{n.name}_mean")
    sq = reduce_over_row(lambda *i: (x(*i) - mean(*i[:axis])) * (x(*i) - mean(*i[:axis])),
                         f"{n.name}_sqsum")
    rstd = te.compute(rows, lambda *i: const(1, dt) / tirx.sqrt(sq(*i) / extent_as(count, dt)
                                                                 + const(n.attrs.epsilon, dt)),
                      name=f"{n.name}_rstd")
    return te.compute(shape, lambda *i: (x(*i) - mean(*i[:axis])) * rstd(*i[:axis])
                      * gamma(*i[axis:]) + beta(*i[axis:]), name=n.name)
