"""Index-driven ONNX ops: Gather / GatherElements / GatherND, ScatterND / ScatterElements /
Scatter, Tile, Range, TopK, CumSum / CumProd, OneHot, Trilu, Size, Compress, NonZero and
Einsum (lowered to transpose, reshape, matmul and reduce_sum)."""

from __future__ import annotations

import math

import numpy as np
import onnx

from kiln.errors import ModelError
from kiln.frontend.onnx.context import (
    Context,
    Converter,
    onnx_op,
    reshape,
)
from kiln.ir.dtype import DType
from kiln.ir.graph import Value
from kiln.ir.types import Dim, normalize_axis


def _int_scalar(ctx: Context, i: int, what: str) -> int:
    data = ctx.const_input(i, required=True)
    if np.asarray(data).size != 1:
        raise ModelError(f"{what} must hold one value, got shape {np.asarray(data).shape}")
    return int(np.asarray(data).reshape(-1)[0])


def _indices(ctx: Context, idx: Value) -> Value:
    """kiln indexes with int32/int64: other integer index dtypes are widened."""
    return idx if idx.dtype in (DType.int32, DType.int64) else ctx.emit("cast", [idx],
                                                                         dtype=DType.int64)


# -- gathers ------------------------------------------------------------------------------------
@onnx_op("Gather")
def _gather(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x, idx = ctx.required(0), _indices(ctx, ctx.required(1))
    return [ctx.emit("gather", [x, idx], axis=normalize_axis(ctx.attr("axis", 0), x.type.rank))]


@onnx_op("GatherElements")
def _gather_elements(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x, idx = ctx.required(0), _indices(ctx, ctx.required(1))
    return [ctx.emit("gather_elements", [x, idx],
                     axis=normalize_axis(ctx.attr("axis", 0), x.type.rank))]


@onnx_op("GatherND")
def _gather_nd(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x, idx = ctx.required(0), _indices(ctx, ctx.required(1))
    # batch_dims arrived in opset 12 (0 before)
    return [ctx.emit("gather_nd", [x, idx], batch_dims=int(ctx.attr("batch_dims", 0)))]


# -- scatters -----------------------------------------------------------------------------------
def _reduction(ctx: Context) -> str:
    # reduction arrived in opset 16 (add, mul) and grew max/min in 18
    r = ctx.attr("reduction", "none")
    if r not in ("none", "add", "mul", "max", "min"):
        raise ModelError(f"reduction={r!r} is not supported (none, add, mul, max, min)")
    return r


@onnx_op("ScatterND")
def _scatter_nd(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x, idx, upd = ctx.required(0), _indices(ctx, ctx.required(1)), ctx.required(2)
    return [ctx.emit("scatter_nd", [x, idx, upd], reduction=_reduction(ctx))]


@onnx_op("ScatterElements", "Scatter")
def _scatter_elements(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    """Scatter (deprecated in opset 11) is ScatterElements without a reduction."""
    x, idx, upd = ctx.required(0), _indices(ctx, ctx.required(1)), ctx.required(2)
    return [ctx.emit("scatter_elements", [x, idx, upd], reduction=_reduction(ctx),
                     axis=normalize_axis(ctx.attr("axis", 0), x.type.rank))]


# -- shape-driven -------------------------------------------------------------------------------
@onnx_op("Tile")
def _tile(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x = ctx.required(0)
    repeats = tuple(int(r) for r in np.asarray(ctx.const_input(1, required=True)).reshape(-1))
    if all(r == 1 for r in repeats) and len(repeats) == x.type.rank:
        return [x]
    return [ctx.emit("tile", [x], repeats=repeats)]


@onnx_op("Range")
def _range(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    """The output's length, ``ceil((limit - start) / delta)``, must be known at import: with
    constant operands Range folds; ``Range(0, n, 1)`` with ``n`` a symbolic dim (a shape
    computation on a ``seq`` input) is a range op of length ``n``."""
    start = ctx.required(0)
    operands = [ctx.required(i) for i in range(3)]
    known = [v.data if v.data is not None else ctx.known_values(v) for v in operands]
    for i, k in enumerate(known):
        if k is None:
            ctx.const_input(i, required=True)     # raises the "must be a constant" error
    s, lim, d = (np.asarray(k, dtype=object).reshape(-1)[0] for k in known)
    if isinstance(lim, str) or isinstance(s, str) or isinstance(d, str):
        if s != 0 or d != 1 or not isinstance(lim, str):
            raise ModelError(f"Range({s}, {lim}, {d}) over a symbolic dim: kiln takes "
                             "Range(0, dim, 1) only (the length must be a dim)")
        return [ctx.emit("range", [ctx.scalar(0, start), ctx.scalar(1, start)], shape=(lim,))]
    if d == 0:
        raise ModelError("Range delta must not be 0")
    count = max(math.ceil((lim - s) / d), 0)
    out = (s + np.arange(count) * d).astype(start.dtype.np)
    return [ctx.constant(out, dtype=start.dtype)]


@onnx_op("Size")
def _size(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x = ctx.required(0)
    if not x.type.is_static:
        raise ModelError(f"Size of %{x.name} ({x.type}) has symbolic dims; kiln folds Size to a "
                         "constant, so fix them with import_onnx(..., input_shapes=...)")
    return [ctx.constant(np.array(x.type.numel, dtype=np.int64))]


@onnx_op("TopK")
def _top_k(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x = ctx.required(0)
    # k was an attribute before opset 10; largest/sorted arrived in opset 11
    k = int(ctx.attr("k")) if ctx.opset < 10 else _int_scalar(ctx, 1, "TopK's k")
    # sorted=0 leaves the order unspecified; the sorted order is one valid answer
    return ctx.add("top_k", [x], k=k, axis=normalize_axis(ctx.attr("axis", -1), x.type.rank),
                   largest=bool(ctx.attr("largest", 1)))


def _cumulative(kiln_op: str) -> Converter:
    def convert(node: onnx.NodeProto, ctx: Context) -> list[Value]:
        x = ctx.required(0)
        if x.type.rank == 1 and ctx.input(1) is not None and ctx.input(1).data is None:
            axis = 0       # the only axis there is: a run-time axis input cannot change it
        else:
            axis = normalize_axis(_int_scalar(ctx, 1, f"{node.op_type}'s axis"), x.type.rank)
        return [ctx.emit(kiln_op, [x], axis=axis, exclusive=bool(ctx.attr("exclusive", 0)),
                         reverse=bool(ctx.attr("reverse", 0)))]
    return convert


onnx_op("CumSum")(_cumulative("cumsum"))
onnx_op("CumProd")(_cumulative("cumprod"))


@onnx_op("OneHot")
def _one_hot(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    idx, values = ctx.required(0), ctx.required(2)
    depth = np.asarray(ctx.const_input(1, required=True)).reshape(-1)
    if depth.size != 1:
        raise ModelError(f"OneHot depth must hold one value, got shape {depth.shape}")
    if idx.dtype not in (DType.int32, DType.int64):
        # ONNX casts non-integer indices to integers (toward zero)
        idx = ctx.emit("cast", [idx], dtype=DType.int64)
    return [ctx.emit("one_hot", [idx, reshape(ctx, values, (2,))], depth=int(depth[0]),
                     axis=normalize_axis(ctx.attr("axis", -1), idx.type.rank + 1))]


@onnx_op("Trilu")
def _trilu(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x, k = ctx.required(0), ctx.input(1)
    upper = bool(ctx.attr("upper", 1))
    if k is None or k.data is not None:     # a constant k becomes the attribute
        kk = 0 if k is None else _int_scalar(ctx, 1, "Trilu's k")
        return [ctx.emit("trilu", [x], upper=upper, k=kk)]
    return [ctx.emit("trilu", [x, k], upper=upper)]    # read at run time


# -- data-dependent shapes: only when the data is known at import -------------------------------
@onnx_op("Compress")
def _compress(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x = ctx.required(0)
    # the output's length is the condition's count of true values, so it must be known now
    keep = np.flatnonzero(np.asarray(ctx.const_input(1, required=True)).reshape(-1))
    axis = ctx.attr("axis")
    if axis is None:       # no axis: x is flattened first
        flat = reshape(ctx, x, (x.type.numel,))
        keep = keep[keep < x.type.numel]
        return [ctx.emit("gather", [flat, ctx.constant(keep.astype(np.int64))], axis=0)]
    axis = normalize_axis(axis, x.type.rank)
    keep = keep[keep < x.shape[axis]] if isinstance(x.shape[axis], int) else keep
    return [ctx.emit("gather", [x, ctx.constant(keep.astype(np.int64))], axis=axis)]


@onnx_op("NonZero")
def _nonzero(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    # the output's shape is the count of nonzeros: only a constant input has one known now
    data = ctx.const_input(0, required=True)
    return [ctx.constant(np.array(np.nonzero(data), dtype=np.int64))]


# -- Einsum -------------------------------------------------------------------------------------
def _parse_einsum(equation: str, ranks: list[int]) -> tuple[list[str], str]:
    """Operand label strings and the output's, with ``...`` spelled out as upper-case letters
    (ONNX labels are lower-case or upper-case; the ellipsis letters are picked unused)."""
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        raise ModelError(f"Einsum {equation!r} names {len(terms)} operands, got {len(ranks)}")
    used = set(c for c in eq if c.isalpha())
    spare = [c for c in "ZYXWVUTSRQPONMLKJIHGFEDCBA" if c not in used]
    ell_rank = max((r - len(t.replace("...", "")) for t, r in zip(terms, ranks, strict=True)
                    if "..." in t), default=0)
    ell = "".join(spare[:ell_rank][::-1])
    out_terms = []
    for t, r in zip(terms, ranks, strict=True):
        if "..." in t:
            n = r - len(t.replace("...", ""))
            t = t.replace("...", ell[ell_rank - n:])
        if len(t) != r or (t and not t.isalpha()):
            raise ModelError(f"Einsum {equation!r}: term {t!r} does not match rank {r}")
        out_terms.append(t)
    if arrow:
        out = rhs.replace("...", ell)
    else:            # implicit output: the ellipsis, then labels used once, alphabetically
        counts = {c: sum(t.count(c) for t in out_terms) for c in used}
        out = ell + "".join(sorted(c for c, k in counts.items() if k == 1))
    return out_terms, out


def _einsum_error(equation: str, why: str) -> ModelError:
    return ModelError(f"Einsum {equation!r} is not supported: {why} (kiln takes one or two "
                      "operands: matmul, batched and transposed matmul, outer products, sums, "
                      "diagonals and transposes)")


def _sum_out(ctx: Context, x: Value, labels: str, keep: str) -> tuple[Value, str]:
    """Sum ``x`` over its labels missing from ``keep``."""
    drop = tuple(i for i, c in enumerate(labels) if c not in keep)
    if not drop:
        return x, labels
    x = ctx.emit("reduce_sum", [x], axes=drop, keepdims=False)
    return x, "".join(c for c in labels if c in keep)


def _sum_and_permute(ctx: Context, x: Value, labels: str, keep: str) -> tuple[Value, str]:
    """Sum ``x`` over its labels missing from ``keep``, then order the rest as in ``keep``."""
    x, labels = _sum_out(ctx, x, labels, keep)
    order = "".join(c for c in keep if c in labels)
    if order != labels:
        x = ctx.emit("transpose", [x], perm=tuple(labels.index(c) for c in order))
    return x, order


def _diagonal(ctx: Context, x: Value, labels: str, equation: str) -> tuple[Value, str]:
    """Take the diagonal for each label repeated within one operand (``ii->i``): zero the
    off-diagonal with an identity mask, then sum the second occurrence's axis away."""
    while len(set(labels)) != len(labels):
        c = next(c for c in labels if labels.count(c) > 1)
        p, q = labels.index(c), labels.index(c, labels.index(c) + 1)
        n = x.shape[p]
        if n != x.shape[q] or not isinstance(n, int):
            raise _einsum_error(equation, f"label {c!r} repeats over dims {x.shape[p]} and "
                                f"{x.shape[q]}")
        shape = [1] * x.type.rank
        shape[p] = shape[q] = n
        eye = ctx.constant(np.eye(n, dtype=x.dtype.np).reshape(shape), dtype=x.dtype)
        x = ctx.emit("reduce_sum", [ctx.emit("mul", [x, eye])], axes=(q,), keepdims=False)
        labels = labels[:q] + labels[q + 1:]
    return x, labels


def _dims(x: Value, labels: str, which: str) -> list[Dim]:
    return [x.shape[labels.index(c)] for c in which]


def _prod(dims: list[Dim], equation: str) -> int:
    if not all(isinstance(d, int) for d in dims):
        raise _einsum_error(equation, "symbolic dims")
    return math.prod(dims)  # type: ignore[arg-type]


@onnx_op("Einsum")
def _einsum(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    eq = ctx.attr("equation")
    xs = ctx.inputs()
    terms, out = _parse_einsum(eq, [x.type.rank for x in xs])
    for k, t in enumerate(terms):
        xs[k], terms[k] = _diagonal(ctx, xs[k], t, eq)
    if len(set(out)) != len(out) or any(c not in "".join(terms) for c in out):
        raise _einsum_error(eq, f"output {out!r} repeats a label or names an unknown one")
    if len(xs) == 1:
        y, order = _sum_and_permute(ctx, xs[0], terms[0], out)
        return [y]
    if len(xs) != 2:
        raise _einsum_error(eq, f"{len(xs)} operands")
    (a, b), (ta, tb) = xs, terms
    # each label is a batch dim (in both and the output), contracted (in both, not the output),
    # free (in one and the output) or summed away first (in one only)
    a, ta = _sum_out(ctx, a, ta, out + tb)
    b, tb = _sum_out(ctx, b, tb, out + ta)
    batch = "".join(c for c in out if c in ta and c in tb)
    contract = "".join(c for c in ta if c in tb and c not in out)
    free_a = "".join(c for c in ta if c not in tb)
    free_b = "".join(c for c in tb if c not in ta)
    for c in batch + contract:
        if a.shape[ta.index(c)] != b.shape[tb.index(c)]:
            raise _einsum_error(eq, f"label {c!r} has sizes {a.shape[ta.index(c)]} and "
                                f"{b.shape[tb.index(c)]} (broadcasting)")
    a, ta = _sum_and_permute(ctx, a, ta, batch + free_a + contract)
    b, tb = _sum_and_permute(ctx, b, tb, batch + contract + free_b)
    nb, m = _dims(a, ta, batch), _prod(_dims(a, ta, free_a), eq)
    k, n = _prod(_dims(a, ta, contract), eq), _prod(_dims(b, tb, free_b), eq)
    if a.dtype != b.dtype:
        raise _einsum_error(eq, f"operands of dtypes {a.dtype} and {b.dtype}")
    y = ctx.emit("matmul", [reshape(ctx, a, (*nb, m, k)), reshape(ctx, b, (*nb, k, n))])
    labels = batch + free_a + free_b
    y = reshape(ctx, y, (*nb, *_dims(a, ta, free_a), *_dims(b, tb, free_b)))
    y, _ = _sum_and_permute(ctx, y, labels, out)
    return [y]
