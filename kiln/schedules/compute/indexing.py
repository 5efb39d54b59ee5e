"""TE compute of index-driven ops: range, gather_elements / gather_nd, tile, one_hot, trilu (one
``te.compute`` each, scheduled by the injective template), and scatter_nd / scatter_elements,
cumsum / cumprod and top_k.

The last group carries a dependence along one axis (a running sum, a later update landing on
an earlier one, an insertion into the sorted top k), which ``te.compute`` cannot express. They
are ``te.extern`` stages whose loop nest is written here with TVM's IR builder, and that nest is
their schedule: rows are independent, so the outer loop over rows runs in parallel, and where
the dependent axis is not the last one, the innermost loop (over the trailing dims, which move
together) is vectorised::

    parallel for row in rows:                  # the dims before the axis
      for k in axis:                           # the dependence runs along k
        vectorized for j in trailing dims:
          y[row, k, j] = y[row, k - 1, j] + x[row, k, j]
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from typing import Any

from tvm import te, tirx
from tvm.script.ir_builder import IRBuilder
from tvm.script.ir_builder import tirx as T

from kiln.ir.ops.indexing import ScatterReduction
from kiln.ir.types import normalize_axis
from kiln.schedules.compute.registry import NodeInfo, compute, const, shape_of, te_shape


def _in_range(v: Any, dim: int) -> Any:
    """An index as int64 with negatives counted from the end, clamped into ``[0, dim)`` so a bad
    index reads or writes a wrong element rather than outside the buffer (the reference
    interpreter raises instead)."""
    v = v.astype("int64")
    v = tirx.Select(v < 0, v + dim, v)
    return tirx.max(tirx.min(v, const(max(dim - 1, 0), "int64")), const(0, "int64"))


def _unravel(flat: Any, dims: Sequence[int]) -> list[Any]:
    idx = []
    for d in reversed(dims):
        idx.append(flat % d if d != 1 else 0)
        flat = flat // d
    return idx[::-1]


# -- injective ops ------------------------------------------------------------------------------
@compute("range")
def range_(n: NodeInfo, start: te.Tensor, delta: te.Tensor) -> te.Tensor:
    return te.compute(n.shape, lambda i: start() + i.astype(n.dtype) * delta(), name=n.name)


@compute("gather_elements")
def gather_elements(n: NodeInfo, x: te.Tensor, idx: te.Tensor) -> te.Tensor:
    """``out[i] = x[i with i[axis] replaced by idx[i]]``."""
    shape = shape_of(x)
    axis = normalize_axis(n.attrs.axis, len(shape))

    def f(*i: Any) -> Any:
        src = list(i)
        src[axis] = _in_range(idx(*i), shape[axis])
        return x(*src)

    return te.compute(n.shape, f, name=n.name)


@compute("gather_nd")
def gather_nd(n: NodeInfo, x: te.Tensor, idx: te.Tensor) -> te.Tensor:
    """``out[b, j, r] = x[b, idx[b, j, 0], ..., idx[b, j, m - 1], r]``."""
    shape, ishape = shape_of(x), shape_of(idx)
    b, m = n.attrs.batch_dims, ishape[-1]
    lead = len(ishape) - 1           # output dims that come from the indices' leading dims

    def f(*i: Any) -> Any:
        pos = [_in_range(idx(*i[:lead], d), shape[b + d]) for d in range(m)]
        return x(*i[:b], *pos, *i[lead:])

    return te.compute(n.shape, f, name=n.name)


@compute("tile")
def tile(n: NodeInfo, x: te.Tensor) -> te.Tensor:
    shape = shape_of(x)
    return te.compute(n.shape, lambda *i: x(*[j % d if r != 1 else j for j, d, r in
                                             zip(i, shape, n.attrs.repeats, strict=True)]),
                      name=n.name)


@compute("one_hot")
def one_hot(n: NodeInfo, idx: te.Tensor, values: te.Tensor) -> te.Tensor:
    """An out-of-range index matches no position (ONNX: the row is all ``off``)."""
    axis = normalize_axis(n.attrs.axis, len(n.shape))
    depth = n.attrs.depth

    def f(*i: Any) -> Any:
        v = idx(*i[:axis], *i[axis + 1:]).astype("int64")
        v = tirx.Select(v < 0, v + depth, v)
        return tirx.Select(v == i[axis].astype("int64"), values(1), values(0))

    return te.compute(n.shape, f, name=n.name)


@compute("trilu")
def trilu(n: NodeInfo, x: te.Tensor, k_in: te.Tensor | None = None) -> te.Tensor:
    def f(*i: Any) -> Any:
        diag = (i[-1] - i[-2]).astype("int64")    # j - i: 0 on the diagonal, > 0 above it
        k = const(n.attrs.k, "int64") if k_in is None else k_in(*[0] * len(k_in.shape))
        keep = diag >= k if n.attrs.upper else diag <= k
        return tirx.Select(keep, x(*i), const(0, n.dtype))

    return te.compute(n.shape, f, name=n.name)


# -- loop nests written out (te.extern) ---------------------------------------------------------
# Below this many elements a kernel runs on one thread (waking the pool costs more than the
# work it would split): the x86 templates' threshold.
PARALLEL_MIN_ELEMS = 16384


def _rows_loop(rows: int, elems: int):
    """The loop over independent rows: parallel when there is enough work to split (always
    where the rows are symbolic)."""
    if not isinstance(rows, int):
        return T.parallel
    return T.parallel if rows > 1 and elems >= PARALLEL_MIN_ELEMS else T.serial


def _loops(stack: contextlib.ExitStack, dims: Sequence[int]) -> list:
    """Nested loops over ``dims`` (innermost vectorised) entered on ``stack``: their vars."""
    out = []
    for t, d in enumerate(dims):
        kind = T.vectorized if t == len(dims) - 1 and d > 1 else T.serial
        out.append(stack.enter_context(kind(0, d)))
    return out


def copy_buffer(src: tirx.Buffer, dst: tirx.Buffer, shape: Sequence[int]) -> None:
    """``dst[:] = src[:]``: parallel over the first dim, vectorised over the last."""
    if math.prod(shape) == 0:
        T.evaluate(0)
        return
    if not shape:
        T.buffer_store(dst, src[()], [])
        return
    with _rows_loop(shape[0], math.prod(shape))(0, shape[0]) as i, \
            contextlib.ExitStack() as st:
        rest = _loops(st, shape[1:])
        T.buffer_store(dst, src[(i, *rest)], [i, *rest])


def _extern(n: NodeInfo, inputs: list[te.Tensor], *parts: Callable[..., None]) -> Any:
    """A ``te.extern`` stage whose statements, run in order, are written by ``part(*input
    buffers, *output buffers)`` with the IR builder (one builder each: a builder holds one
    statement)."""
    def fcompute(ins: list[tirx.Buffer], outs: list[tirx.Buffer]) -> tirx.Stmt:
        stmts = []
        for part in parts:
            with IRBuilder() as ib:
                part(*ins, *outs)
            stmts.append(ib.get())
        return stmts[0] if len(stmts) == 1 else tirx.SeqStmt(stmts)

    outs = te.extern([te_shape(o.shape, n.syms) for o in n.outs], inputs, fcompute, name=n.name,
                     dtype=[o.dtype.value for o in n.outs])
    return tuple(outs) if len(n.outs) > 1 else (outs[0] if isinstance(outs, list) else outs)


_COMBINE: dict[ScatterReduction, Callable[[Any, Any], Any]] = {
    ScatterReduction.NONE: lambda old, new: new,
    ScatterReduction.ADD: lambda old, new: old + new,
    ScatterReduction.MUL: lambda old, new: old * new,
    ScatterReduction.MAX: tirx.max,
    ScatterReduction.MIN: tirx.min,
}


def _cumulative(n: NodeInfo, x: te.Tensor, op: Callable[[Any, Any], Any],
                identity: int) -> te.Tensor:
    """``y[k] = op(y[k - 1], x[k])`` along the axis (from the end with ``reverse``; with
    ``exclusive``, ``y`` starts at the identity and takes ``x[k - 1]``)."""
    shape = shape_of(x)
    axis = normalize_axis(n.attrs.axis, len(shape))
    lead, dim, trail = shape[:axis], shape[axis], shape[axis + 1:]
    rev, excl = n.attrs.reverse, n.attrs.exclusive

    def body(xb: tirx.Buffer, yb: tirx.Buffer) -> None:
        if any(isinstance(d, int) and d == 0 for d in shape):
            T.evaluate(0)
            return
        rows = math.prod(lead)
        # a symbolic dim (a sequence length) counts as large enough to split
        elems = math.prod(d if isinstance(d, int) else PARALLEL_MIN_ELEMS for d in shape)
        with _rows_loop(rows, elems)(0, rows) as r:
            row = _unravel(r, lead)

            def at(k: Any, j: list) -> list:
                return [*row, (dim - 1 - k) if rev else k, *j]

            with contextlib.ExitStack() as st:       # the first element of the scan
                j = _loops(st, trail)
                first = const(identity, n.dtype) if excl else xb[tuple(at(0, j))]
                T.buffer_store(yb, first, at(0, j))
            with T.serial(1, dim) as k, contextlib.ExitStack() as st:
                j = _loops(st, trail)
                src = xb[tuple(at(k - 1, j))] if excl else xb[tuple(at(k, j))]
                T.buffer_store(yb, op(yb[tuple(at(k - 1, j))], src), at(k, j))

    return _extern(n, [x], body)


@compute("cumsum")
def cumsum(n: NodeInfo, x: te.Tensor) -> te.Tensor:
    return _cumulative(n, x, lambda a, b: a + b, 0)


@compute("cumprod")
def cumprod(n: NodeInfo, x: te.Tensor) -> te.Tensor:
    return _cumulative(n, x, lambda a, b: a * b, 1)


@compute("scatter_nd")
def scatter_nd(n: NodeInfo, x: te.Tensor, idx: te.Tensor, upd: te.Tensor) -> te.Tensor:
    """Copy ``x``, then apply the updates one index row after another (in order: with no
    reduction a later update to the same slice wins); each slice is a vectorised loop."""
    shape, ishape = shape_of(x), shape_of(idx)
    m, batch = ishape[-1], ishape[:-1]
    combine = _COMBINE[n.attrs.reduction]

    def copy(xb: tirx.Buffer, ib_: tirx.Buffer, ub: tirx.Buffer, yb: tirx.Buffer) -> None:
        copy_buffer(xb, yb, shape)

    def body(xb: tirx.Buffer, ib_: tirx.Buffer, ub: tirx.Buffer, yb: tirx.Buffer) -> None:
        if math.prod(batch) == 0 or math.prod(shape) == 0:
            T.evaluate(0)
            return
        with T.serial(0, math.prod(batch)) as u, contextlib.ExitStack() as st:
            b = _unravel(u, batch)
            pos = [_in_range(ib_[(*b, d)], shape[d]) for d in range(m)]
            s = _loops(st, shape[m:])
            T.buffer_store(yb, combine(yb[(*pos, *s)], ub[(*b, *s)]), [*pos, *s])

    return _extern(n, [x, idx, upd], copy, body)


@compute("scatter_elements")
def scatter_elements(n: NodeInfo, x: te.Tensor, idx: te.Tensor, upd: te.Tensor) -> te.Tensor:
    """Copy ``x``, then ``y[i with i[axis] = idx[i]] op= upd[i]`` for every ``i`` in order.
    Updates at different positions off the axis never meet, so the first dim runs in parallel
    when it is not the axis."""
    shape, ishape = shape_of(x), shape_of(idx)
    axis = normalize_axis(n.attrs.axis, len(shape))
    combine = _COMBINE[n.attrs.reduction]

    def copy(xb: tirx.Buffer, ib_: tirx.Buffer, ub: tirx.Buffer, yb: tirx.Buffer) -> None:
        copy_buffer(xb, yb, shape)

    def body(xb: tirx.Buffer, ib_: tirx.Buffer, ub: tirx.Buffer, yb: tirx.Buffer) -> None:
        if math.prod(ishape) == 0:
            T.evaluate(0)
            return
        with contextlib.ExitStack() as st:
            first = _rows_loop(ishape[0], math.prod(ishape)) if axis != 0 else T.serial
            i = [st.enter_context(first(0, ishape[0]))]
            i += [st.enter_context(T.serial(0, d)) for d in ishape[1:]]
            dst = list(i)
            dst[axis] = _in_range(ib_[tuple(i)], shape[axis])
            T.buffer_store(yb, combine(yb[tuple(dst)], ub[tuple(i)]), dst)

    return _extern(n, [x, idx, upd], copy, body)


@compute("top_k")
def top_k(n: NodeInfo, x: te.Tensor) -> tuple[te.Tensor, te.Tensor]:
    """Insertion into a sorted list of k per row, in parallel over rows::

        for t in axis:                        # in index order
          if t < k or better(x[t], vals[k-1]):
            slot = min(t, k - 1); vals[slot], idx[slot] = x[t], t
            for j = slot .. 1:                # sink x[t] past every worse value
              if better(x[t], vals[j-1]): move vals[j-1] down to j; put x[t] at j - 1

    ``better`` is a strict comparison, so an equal value never passes one that came earlier:
    ties keep the lower index first. One comparison per element that does not enter; O(k) per
    element that does."""
    shape = shape_of(x)
    axis = normalize_axis(n.attrs.axis, len(shape))
    lead, dim, trail = shape[:axis], shape[axis], shape[axis + 1:]
    k = n.attrs.k
    ntrail = math.prod(trail)

    def better(a: Any, b: Any) -> Any:
        return a > b if n.attrs.largest else a < b

    def body(xb: tirx.Buffer, vb: tirx.Buffer, ib_: tirx.Buffer) -> None:
        rows = math.prod(lead) * ntrail
        if k == 0 or rows == 0:
            T.evaluate(0)
            return
        with _rows_loop(rows, math.prod(shape))(0, rows) as r, T.serial(0, dim) as t:
            head, tail = _unravel(r // ntrail, lead), _unravel(r % ntrail, trail)

            def at(p: Any) -> tuple:
                return (*head, p, *tail)

            v = xb[at(t)]
            enters = tirx.Or(t < k, better(v, vb[at(k - 1)]))
            with T.If(enters), T.Then():
                slot = tirx.min(t, k - 1)
                T.buffer_store(vb, v, at(slot))
                T.buffer_store(ib_, t.astype("int64"), at(slot))
                with T.serial(0, k - 1) as s:
                    j = slot - s
                    with T.If(tirx.And(j >= 1, better(v, vb[at(j - 1)]))), T.Then():
                        T.buffer_store(vb, vb[at(j - 1)], at(j))
                        T.buffer_store(ib_, ib_[at(j - 1)], at(j))
                        T.buffer_store(vb, v, at(j - 1))
                        T.buffer_store(ib_, t.astype("int64"), at(j - 1))

    return _extern(n, [x], body)
