"""GEMMs and attention: ``linear``, ``mm``, ``bmm``, ``addmm``, ``matmul``,
``scaled_dot_product_attention``.

``linear`` and ``matmul`` reach here whole (``importer.PRESERVED``): ``linear`` is kiln's
``dense`` (W as [N, K], as torch stores it) on any leading dims, where torch's decomposition
would flatten them into an ``addmm``. Attention is written as the chain kiln's fusion pass
recognises: ``matmul -> scale -> mask -> softmax -> matmul``.
"""

from __future__ import annotations

import math

import numpy as np

from kiln.errors import ModelError
from kiln.frontend.torch.context import Context, Scalar, aten
from kiln.ir.dtype import DType
from kiln.ir.graph import Value


@aten("linear.default")
def _linear(cx: Context, x: Value, weight: Value, bias: Value | None = None) -> Value:
    y = cx.emit("dense", [x, cx.cast(weight, x.dtype)])
    return y if bias is None else cx.emit("add", [y, cx.cast(bias, y.dtype)])


@aten("mm.default", "bmm.default")
def _mm(cx: Context, a: Value, b: Value) -> Value:
    return cx.emit("matmul", [a, cx.cast(b, a.dtype)])


@aten("addmm.default", "baddbmm.default")
def _addmm(cx: Context, bias: Value, a: Value, b: Value, *, beta: Scalar = 1,
           alpha: Scalar = 1) -> Value:
    y = cx.emit("matmul", [a, cx.cast(b, a.dtype)])
    if alpha != 1:
        y = cx.emit("mul", [y, cx.scalar(alpha, y.dtype)])
    if beta == 0:                 # torch ignores the bias then, NaNs included
        return y
    c = cx.cast(bias, y.dtype)
    if beta != 1:
        c = cx.emit("mul", [c, cx.scalar(beta, y.dtype)])
    return cx.emit("add", [y, c])


@aten("matmul.default")
def _matmul(cx: Context, a: Value, b: Value) -> Value:
    """NumPy's matmul: a 1-D ``a`` is a row [1, K], a 1-D ``b`` a column [K, 1], and the
    dims added for them are dropped from the result."""
    a2 = cx.reshape(a, (1, *a.shape)) if a.type.rank == 1 else a
    b2 = cx.reshape(b, (*b.shape, 1)) if b.type.rank == 1 else b
    return cx.reshape(cx.emit("matmul", [a2, cx.cast(b2, a.dtype)]), cx.out_shape())


@aten("scaled_dot_product_attention.default")
def _attention(cx: Context, q: Value, k: Value, v: Value, attn_mask: Value | None = None,
               dropout_p: float = 0.0, is_causal: bool = False, *, scale: float | None = None,
               enable_gqa: bool = False) -> Value:
    """``softmax(q k^T * scale + mask) v``. A row that the mask hides entirely gives zeros,
    as torch's does (its ``_safe_softmax``), not the NaN of a softmax over ``-inf``s."""
    if dropout_p:
        raise ModelError(f"attention with dropout_p={dropout_p} is random; export the model "
                         "in eval mode with dropout_p=0")
    if enable_gqa:
        k, v = _repeat_heads(cx, k, q), _repeat_heads(cx, v, q)
    rank = q.type.rank
    if scale is None:
        depth = q.shape[-1]
        if not isinstance(depth, int):
            raise ModelError(f"attention's default scale needs a static head dim, got {depth}")
        scale = 1.0 / math.sqrt(depth)
    kt = cx.emit("transpose", [k], perm=(*range(k.type.rank - 2), k.type.rank - 1,
                                         k.type.rank - 2))
    s = cx.emit("mul", [cx.emit("matmul", [q, kt]), cx.scalar(scale, q.dtype)])
    alive = None                          # [..., L, 1]: the rows the mask leaves something of
    if is_causal:
        s = cx.emit("where", [_causal(cx, q.shape[-2], k.shape[-2]), s,
                              cx.scalar(-np.inf, s.dtype)])
    if attn_mask is not None and attn_mask.dtype is DType.bool:
        s = cx.emit("where", [attn_mask, s, cx.scalar(-np.inf, s.dtype)])
        alive = _any_row(cx, cx.cast(attn_mask, s.dtype), 0.0)
    elif attn_mask is not None:
        mask = cx.cast(attn_mask, s.dtype)
        s = cx.emit("add", [s, mask])
        alive = _any_row(cx, mask, -np.inf)
    out = cx.emit("matmul", [cx.emit("softmax", [s], axis=rank - 1), v])
    if alive is None or (alive.is_constant and bool(np.all(alive.data))):
        return out
    return cx.emit("where", [alive, out, cx.scalar(0, out.dtype)])


def _any_row(cx: Context, mask: Value, hidden: float) -> Value:
    """Whether each row of ``mask`` holds an entry above ``hidden`` (bool, [..., L, 1])."""
    top = cx.emit("reduce_max", [mask], axes=(mask.type.rank - 1,), keepdims=True)
    return cx.emit("greater", [top, cx.scalar(hidden, mask.dtype)])


def _causal(cx: Context, rows: int | str, cols: int | str) -> Value:
    """[L, S] bool, true on and below the diagonal (torch's top-left aligned causal mask)."""
    if isinstance(rows, int) and isinstance(cols, int):
        return cx.constant(np.tril(np.ones((rows, cols), dtype=bool)))
    one, zero = cx.scalar(1, DType.int64), cx.scalar(0, DType.int64)
    i = cx.reshape(cx.emit("range", [zero, one], shape=(rows,)), (rows, 1))
    j = cx.reshape(cx.emit("range", [zero, one], shape=(cols,)), (1, cols))
    return cx.emit("less_equal", [j, i])


def _repeat_heads(cx: Context, kv: Value, q: Value) -> Value:
    """Grouped-query attention: each of the H_kv heads serves H_q / H_kv query heads in a row
    (``repeat_interleave`` on the head dim)."""
    hq, hkv = q.shape[-3], kv.shape[-3]
    if hq == hkv:
        return kv
    if not (isinstance(hq, int) and isinstance(hkv, int)) or hq % hkv:
        raise ModelError(f"grouped-query attention needs static head counts, {hq} a multiple "
                         f"of {hkv}")
    lead, (s, e) = kv.shape[:-3], kv.shape[-2:]
    grouped = cx.reshape(kv, (*lead, hkv, 1, s, e))
    wide = cx.broadcast(grouped, (*lead, hkv, hq // hkv, s, e))
    return cx.reshape(wide, (*lead, hq, s, e))
