"""Reductions: ``sum``, ``mean``, ``amax``/``amin``, ``max.dim``, ``argmax``, ``var``, ``any``,
``softmax``, ``log_softmax``, ``cumsum``, ``topk``.

torch sums bools and ints into int64 and takes a ``dtype=`` to accumulate in; the converters
cast the input to the result's dtype first, so kiln accumulates in the same type.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from kiln.errors import ModelError
from kiln.frontend.torch.context import Context, aten, axes_of, prod
from kiln.ir.dtype import DType
from kiln.ir.graph import Value
from kiln.ir.types import normalize_axis

Dims = int | Sequence[int] | None


def _reduce(cx: Context, op: str, x: Value, dim: Dims, keepdim: bool) -> Value:
    y = cx.cast(x, cx.out_dtype())
    return cx.emit(op, [y], axes=axes_of(dim, x.type.rank), keepdims=bool(keepdim))


@aten("sum.dim_IntList")
def _sum(cx: Context, x: Value, dim: Dims, keepdim: bool = False) -> Value:
    return _reduce(cx, "reduce_sum", x, dim, keepdim)


def _whole(op: str):  # noqa: ANN202 - a converter
    def convert(cx: Context, x: Value) -> Value:
        return _reduce(cx, op, x, None, False)
    return convert


aten("sum.default")(_whole("reduce_sum"))
aten("mean.default")(_whole("reduce_mean"))
aten("max.default")(_whole("reduce_max"))
aten("min.default")(_whole("reduce_min"))


@aten("mean.dim")
def _mean(cx: Context, x: Value, dim: Dims, keepdim: bool = False) -> Value:
    return _reduce(cx, "reduce_mean", x, dim, keepdim)


@aten("prod.dim_int")
def _prod(cx: Context, x: Value, dim: int, keepdim: bool = False) -> Value:
    return _reduce(cx, "reduce_prod", x, dim, keepdim)


@aten("amax.default")
def _amax(cx: Context, x: Value, dim: Dims = (), keepdim: bool = False) -> Value:
    return _reduce(cx, "reduce_max", x, dim, keepdim)


@aten("amin.default")
def _amin(cx: Context, x: Value, dim: Dims = (), keepdim: bool = False) -> Value:
    return _reduce(cx, "reduce_min", x, dim, keepdim)


@aten("logsumexp.default")
def _logsumexp(cx: Context, x: Value, dim: Dims, keepdim: bool = False) -> Value:
    return _reduce(cx, "reduce_log_sum_exp", x, dim, keepdim)


def _with_index(reduce_op: str, index_op: str):  # noqa: ANN202 - a converter
    def convert(cx: Context, x: Value, dim: int, keepdim: bool = False) -> list[Value]:
        axis = normalize_axis(int(dim), x.type.rank)
        values = cx.emit(reduce_op, [x], axes=(axis,), keepdims=bool(keepdim))
        return [values, cx.emit(index_op, [x], axis=axis, keepdims=bool(keepdim))]
    return convert


aten("max.dim")(_with_index("reduce_max", "arg_max"))
aten("min.dim")(_with_index("reduce_min", "arg_min"))


def _arg(op: str):  # noqa: ANN202 - a converter
    def convert(cx: Context, x: Value, dim: int | None = None, keepdim: bool = False) -> Value:
        if dim is None:                             # over all elements, flattened
            flat = cx.reshape(x, (prod(x.shape),))
            return cx.reshape(cx.emit(op, [flat], axis=0, keepdims=False), cx.out_shape())
        return cx.emit(op, [x], axis=normalize_axis(int(dim), x.type.rank),
                       keepdims=bool(keepdim))
    return convert


aten("argmax.default")(_arg("arg_max"))
aten("argmin.default")(_arg("arg_min"))


@aten("var.correction")
def _var(cx: Context, x: Value, dim: Dims = None, *, correction: float | None = None,
         keepdim: bool = False) -> Value:
    """``sum((x - mean)^2) / (n - correction)``, two passes (never E[x^2] - E[x]^2)."""
    axes = axes_of(dim, x.type.rank)
    n = prod([x.shape[a] for a in axes])
    if not isinstance(n, int):
        raise ModelError(f"var over the symbolic dim {n} is not supported")
    c = 1.0 if correction is None else float(correction)
    centered = cx.emit("sub", [x, cx.emit("reduce_mean", [x], axes=axes, keepdims=True)])
    sq = cx.emit("reduce_mean", [cx.emit("mul", [centered, centered])], axes=axes,
                 keepdims=bool(keepdim))
    factor = n / (n - c) if n > c else math.inf     # torch's n <= correction: inf (or NaN)
    return sq if factor == 1 else cx.emit("mul", [sq, cx.scalar(factor, sq.dtype)])


def _any_all(op: str):  # noqa: ANN202 - a converter
    def convert(cx: Context, x: Value, dim: Dims = None, keepdim: bool = False) -> Value:
        # as 0/1 floats: the max (any) or min (all) of them
        ones = cx.cast(cx.cast(x, DType.bool), DType.float32)
        r = cx.emit(op, [ones], axes=axes_of(dim, x.type.rank), keepdims=bool(keepdim))
        return cx.emit("greater", [r, cx.scalar(0.5, DType.float32)])
    return convert


aten("any.dim", "any.dims", "any.default")(_any_all("reduce_max"))
aten("all.dim", "all.dims", "all.default")(_any_all("reduce_min"))


@aten("_softmax.default")
def _softmax(cx: Context, x: Value, dim: int, half_to_float: bool) -> Value:
    return cx.emit("softmax", [cx.cast(x, cx.out_dtype())],
                   axis=normalize_axis(dim, x.type.rank))


@aten("_log_softmax.default")
def _log_softmax(cx: Context, x: Value, dim: int, half_to_float: bool) -> Value:
    return cx.emit("log_softmax", [cx.cast(x, cx.out_dtype())],
                   axis=normalize_axis(dim, x.type.rank))


def _scan(op: str):  # noqa: ANN202 - a converter
    def convert(cx: Context, x: Value, dim: int) -> Value:
        return cx.emit(op, [cx.cast(x, cx.out_dtype())], axis=normalize_axis(int(dim),
                                                                             x.type.rank))
    return convert


aten("cumsum.default")(_scan("cumsum"))
aten("cumprod.default")(_scan("cumprod"))


@aten("linalg_vector_norm.default")
def _vector_norm(cx: Context, x: Value, ord: float = 2, dim: Dims = None,  # noqa: A002
                 keepdim: bool = False) -> Value:
    """The 1-, 2- and max-norms (``F.normalize``'s is the 2-norm)."""
    y = cx.emit("abs", [cx.cast(x, cx.out_dtype())])
    axes, keep = axes_of(dim, x.type.rank), bool(keepdim)
    if ord == 2:
        total = cx.emit("reduce_sum", [cx.emit("mul", [y, y])], axes=axes, keepdims=keep)
        return cx.emit("sqrt", [total])
    if ord == 1:
        return cx.emit("reduce_sum", [y], axes=axes, keepdims=keep)
    if ord == math.inf:
        return cx.emit("reduce_max", [y], axes=axes, keepdims=keep)
    raise ModelError(f"vector norm of order {ord} is not supported (1, 2 and inf are)")


@aten("topk.default")
def _topk(cx: Context, x: Value, k: int, dim: int = -1, largest: bool = True,
          sorted: bool = True) -> list[Value]:  # noqa: A002 - the schema's name
    if not isinstance(k, int):
        raise ModelError(f"topk needs a static k, got {k}")
    return cx.add("top_k", [x], k=k, axis=normalize_axis(int(dim), x.type.rank),
                  largest=bool(largest))
