"""Transformer ops of opsets 23-24 (Attention, RotaryEmbedding, RMSNormalization, ...), lowered
onto kiln ops.

None of these has a kiln op of its own: each is written with matmul, softmax, rms_norm and
elementwise / movement ops, so that every piece is compiled by the existing fused, scheduled
kernels. Masks that depend only on shapes (causal, sliding window, padding of a short mask) are
built at import as NumPy constants; those that depend on run-time data (``nonpad_kv_seqlen``, a
mask input) are kiln ops. Semantics follow onnx's reference implementations
(``onnx/reference/ops/op_attention.py`` and its neighbours), fully-masked rows included.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper

from kiln.errors import ModelError
from kiln.frontend.onnx.context import (
    Context,
    onnx_dtype,
    onnx_op,
    reshape,
    static_dim,
)
from kiln.ir.dtype import DType
from kiln.ir.graph import Value
from kiln.ir.types import format_shape, normalize_axis


def _wants(node: onnx.NodeProto, k: int) -> bool:
    """Whether the node's optional output ``k`` is requested."""
    return len(node.output) > k and bool(node.output[k])


# -- RMSNormalization, SwiGLU -------------------------------------------------------------------
@onnx_op("RMSNormalization")
def _rms_normalization(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x, scale = ctx.required(0), ctx.required(1)
    axis = normalize_axis(ctx.attr("axis", -1), x.type.rank)
    if ctx.attr("stash_type", 1) != 1:
        raise ModelError(f"stash_type {ctx.attr('stash_type')} is not supported (only 1: "
                         "float32 statistics)")
    tail = x.shape[axis:]
    if scale.shape != tail:     # Scale broadcasts to the normalised dims; rms_norm wants them
        scale = ctx.emit("broadcast_to", [scale], shape=tail)
    if scale.shape != tail:
        raise ModelError(f"Scale {scale.type} does not broadcast to {format_shape(tail)}")
    if scale.dtype != x.dtype:
        scale = ctx.emit("cast", [scale], dtype=x.dtype)
    return [ctx.emit("rms_norm", [x, scale], axis=axis, epsilon=ctx.attr("epsilon", 1e-5))]


@onnx_op("SwiGLU")
def _swiglu(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    a, b = ctx.required(0), ctx.required(1)
    if a.shape != b.shape:
        raise ModelError(f"SwiGLU needs A and B of one shape, got {a.type} and {b.type}")
    gate = ctx.emit("swish", [a], alpha=float(ctx.attr("alpha", 1.0)))
    return [ctx.emit("mul", [gate, b])]


# -- RotaryEmbedding ----------------------------------------------------------------------------
def _take_last(ctx: Context, x: Value, start: int, end: int, step: int = 1) -> Value:
    axis = x.type.rank - 1
    return ctx.emit("slice", [x], axes=(axis,), starts=(start,), ends=(end,), steps=(step,))


def _interleave(ctx: Context, a: Value, b: Value) -> Value:
    """``[a0, b0, a1, b1, ...]`` along the last axis (a and b of one shape)."""
    pair_shape = (*a.shape, 1)
    pairs = ctx.emit("concat", [reshape(ctx, a, pair_shape), reshape(ctx, b, pair_shape)],
                     axis=a.type.rank)
    return reshape(ctx, pairs, (*a.shape[:-1], 2 * static_dim(a, a.type.rank - 1, "interleave")))


@onnx_op("RotaryEmbedding")
def _rotary_embedding(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x, cos, sin, pos = ctx.required(0), ctx.required(1), ctx.required(2), ctx.input(3)
    rank = x.type.rank
    # work in x's own layout: [B, H, S, D] (4-D) or [B, S, H, D] (3-D, split into heads)
    if rank == 4:
        head_size = static_dim(x, 3, "RotaryEmbedding")
        xs = x
    elif rank == 3:
        heads = int(ctx.attr("num_heads", 0))
        hidden = static_dim(x, 2, "RotaryEmbedding")
        if heads <= 0 or hidden % heads:
            raise ModelError(f"3-D RotaryEmbedding needs num_heads dividing {hidden}, got "
                             f"num_heads={heads}")
        head_size = hidden // heads
        xs = reshape(ctx, x, (x.shape[0], x.shape[1], heads, head_size))
    else:
        raise ModelError(f"RotaryEmbedding needs a 3-D or 4-D input, got {x.type}")
    rot = int(ctx.attr("rotary_embedding_dim", 0)) or head_size
    if rot % 2 or rot > head_size:
        raise ModelError(f"rotary_embedding_dim {rot} must be even and <= head size {head_size}")
    half = rot // 2
    if pos is not None:       # caches are [max_pos, rot/2]: pick the rows of each position
        cos = ctx.emit("gather", [cos, pos], axis=0)
        sin = ctx.emit("gather", [sin, pos], axis=0)
    if cos.type.rank != 3 or cos.shape[-1] != half or sin.shape != cos.shape:
        raise ModelError(f"cos/sin caches must be [batch, seq, {half}], got {cos.type} and "
                         f"{sin.type}")
    # [B, S, half] -> broadcastable against the head axis of x's layout
    cache_shape = ((cos.shape[0], 1, cos.shape[1], half) if rank == 4
                   else (cos.shape[0], cos.shape[1], 1, half))
    cos, sin = reshape(ctx, cos, cache_shape), reshape(ctx, sin, cache_shape)
    if cos.dtype != x.dtype:
        cos, sin = (ctx.emit("cast", [c], dtype=x.dtype) for c in (cos, sin))
    # out = x * [cos, cos] + swap(x) * [-sin, sin] with swap(x) = [x2, x1] (halves, or the
    # odd/even elements when interleaved): one sum of two products per element, which keeps
    # the fused groups free of the criss-cross dependencies of the real/imag form
    interleaved = bool(ctx.attr("interleaved", 0))
    minus_sin = ctx.emit("neg", [sin])
    if interleaved:
        x1, x2 = _take_last(ctx, xs, 0, rot, 2), _take_last(ctx, xs, 1, rot, 2)
        swapped = _interleave(ctx, x2, x1)
        cos_full, sin_full = _interleave(ctx, cos, cos), _interleave(ctx, minus_sin, sin)
    else:
        x1, x2 = _take_last(ctx, xs, 0, half), _take_last(ctx, xs, half, rot)
        swapped = ctx.emit("concat", [x2, x1], axis=3)
        cos_full = ctx.emit("concat", [cos, cos], axis=3)
        sin_full = ctx.emit("concat", [minus_sin, sin], axis=3)
    x_rot = xs if rot == head_size else _take_last(ctx, xs, 0, rot)
    rotated = ctx.emit("add", [ctx.emit("mul", [x_rot, cos_full]),
                               ctx.emit("mul", [swapped, sin_full])])
    if rot < head_size:
        rotated = ctx.emit("concat", [rotated, _take_last(ctx, xs, rot, head_size)], axis=3)
    return [reshape(ctx, rotated, x.shape)]


# -- Attention ----------------------------------------------------------------------------------
def _split_heads(ctx: Context, x: Value, heads: int, what: str) -> Value:
    """[B, S, H*D] -> [B, H, S, D]."""
    hidden = static_dim(x, 2, "Attention")
    if heads <= 0 or hidden % heads:
        raise ModelError(f"3-D Attention: {what} hidden size {hidden} is not divisible by "
                         f"the number of heads {heads}")
    x = reshape(ctx, x, (x.shape[0], x.shape[1], heads, hidden // heads))
    return ctx.emit("transpose", [x], perm=(0, 2, 1, 3))


def _repeat_heads(ctx: Context, x: Value, reps: int) -> Value:
    """Repeat each head ``reps`` times in place ([h0, h0, h1, h1, ...]) for grouped-query
    attention: [B, H, S, D] -> [B, H*reps, S, D]."""
    if reps == 1:
        return x
    b, h, s, d = x.shape
    x5 = reshape(ctx, x, (b, h, 1, s, d))
    x5 = ctx.emit("broadcast_to", [x5], shape=(b, h, reps, s, d))
    return reshape(ctx, x5, (b, h * reps if isinstance(h, int) else -1, s, d))


def _band_bias(ctx: Context, sq: int, skv: int, offset: int | Value, lo: int | None,
               hi: int | None, dtype: DType) -> Value:
    """Additive bias (0 where allowed, -inf elsewhere) of the band ``lo <= i + offset - j <=
    hi`` (None: unbounded) between query ``i`` and key ``j``. A scalar offset gives a [Sq, Skv]
    constant; a per-batch one (an int64 [B] value) a [B, 1, Sq, Skv] tensor computed at run
    time."""
    diff = np.arange(sq).reshape(sq, 1) - np.arange(skv).reshape(1, skv)
    neg_inf = np.array(-np.inf, dtype=dtype.np)
    if isinstance(offset, int):
        d = diff + offset
        ok = np.ones_like(d, dtype=bool)
        if lo is not None:
            ok &= d >= lo
        if hi is not None:
            ok &= d <= hi
        return ctx.constant(np.where(ok, np.zeros((), dtype.np), neg_inf))
    off = reshape(ctx, offset, (offset.shape[0], 1, 1, 1))
    d = ctx.emit("add", [ctx.constant(diff.astype(offset.dtype.np)), off])
    ok: Value | None = None
    for bound, op in ((lo, "greater_equal"), (hi, "less_equal")):
        if bound is None:
            continue
        cmp = ctx.emit(op, [d, ctx.scalar(bound, d)])
        ok = cmp if ok is None else ctx.emit("logical_and", [ok, cmp])
    assert ok is not None
    zero = ctx.constant(np.zeros((), dtype.np))
    return ctx.emit("where", [ok, zero, ctx.constant(neg_inf)])


def _add_bias(ctx: Context, bias: Value | None, term: Value) -> Value:
    return term if bias is None else ctx.emit("add", [bias, term])


def _mask_bias(ctx: Context, mask: Value, skv: int, dtype: DType) -> Value:
    """The attn_mask input as an additive bias over all ``skv`` keys: a bool mask becomes
    0 / -inf, and a mask shorter than the keys is padded with masked (-inf) columns."""
    last = mask.shape[-1]
    if not isinstance(last, int) or last > skv:
        raise ModelError(f"attn_mask {mask.type} must have at most {skv} (static) key columns")
    neg_inf = np.array(-np.inf, dtype=dtype.np)
    if mask.dtype == DType.bool:
        mask = ctx.emit("where", [mask, ctx.constant(np.zeros((), dtype.np)),
                                  ctx.constant(neg_inf)])
    elif mask.dtype != dtype:
        mask = ctx.emit("cast", [mask], dtype=dtype)
    if last < skv:
        lead = [d for d in mask.shape[:-1]]
        if not all(isinstance(d, int) for d in lead):
            raise ModelError(f"attn_mask {mask.type} shorter than the keys needs static dims")
        pad = ctx.constant(np.full((*lead, skv - last), -np.inf, dtype=dtype.np))
        mask = ctx.emit("concat", [mask, pad], axis=mask.type.rank - 1)
    return mask


def _float_dtype_attr(ctx: Context, name: str) -> DType | None:
    code = ctx.attr(name)
    if code is None:
        return None
    dtype = onnx_dtype(int(code), f"attribute {name}")
    if not dtype.is_float:
        raise ModelError(f"{name} must be a floating-point type, got "
                         f"{helper.tensor_dtype_to_string(int(code))}")
    return dtype


@onnx_op("Attention")
def _attention(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    q, k, v = ctx.required(0), ctx.required(1), ctx.required(2)
    mask, past_k, past_v = ctx.input(3), ctx.input(4), ctx.input(5)
    nonpad = ctx.input(6)
    if (past_k is None) != (past_v is None):
        raise ModelError("past_key and past_value must be given together")
    if nonpad is not None and past_k is not None:
        raise ModelError("nonpad_kv_seqlen cannot be combined with past_key/past_value")
    rank = q.type.rank
    if rank == 3:
        hq, hkv = ctx.attr("q_num_heads"), ctx.attr("kv_num_heads")
        if hq is None or hkv is None:
            raise ModelError("3-D Attention needs the q_num_heads and kv_num_heads attributes")
        q = _split_heads(ctx, q, int(hq), "Q")
        k = _split_heads(ctx, k, int(hkv), "K")
        v = _split_heads(ctx, v, int(hkv), "V")
    elif rank != 4:
        raise ModelError(f"Attention needs 3-D or 4-D Q, K, V, got {q.type}")
    if k.type.rank != 4 or v.type.rank != 4:
        raise ModelError(f"Q, K and V must have one rank, got {q.type}, {k.type}, {v.type}")
    dtype = q.dtype
    n_q = static_dim(q, 1, "Attention")
    n_kv = static_dim(k, 1, "Attention")
    if n_q % n_kv or v.shape[1] != n_kv:
        raise ModelError(f"{n_q} query heads cannot be grouped over {n_kv} key/value heads")
    head_size = static_dim(q, 3, "Attention")

    # the scale is applied as sqrt(scale) to both Q and K, cast to Q's dtype, as the reference
    scale = ctx.attr("scale")
    scale = 1.0 / math.sqrt(head_size) if scale is None else float(scale)
    root = ctx.constant(np.array(np.sqrt(scale), dtype=dtype.np))

    present_k, present_v = k, v
    past_len = 0
    if past_k is not None and past_v is not None:
        past_len = static_dim(past_k, 2, "Attention past_key")
        present_k = ctx.emit("concat", [past_k, k], axis=2)
        present_v = ctx.emit("concat", [past_v, v], axis=2)
    sq = static_dim(q, 2, "Attention")
    skv = static_dim(present_k, 2, "Attention")

    # additive bias: attn_mask, causal band, sliding window, key padding
    bias = None if mask is None else _mask_bias(ctx, mask, skv, dtype)
    offset: int | Value = past_len
    if nonpad is not None:
        if nonpad.type.rank != 1:
            raise ModelError(f"nonpad_kv_seqlen must be 1-D [batch], got {nonpad.type}")
        nonpad = ctx.emit("cast", [nonpad], dtype=DType.int64) \
            if nonpad.dtype != DType.int64 else nonpad
        offset = ctx.emit("sub", [nonpad, ctx.scalar(sq, nonpad)])
    if ctx.attr("is_causal", 0):
        bias = _add_bias(ctx, bias, _band_bias(ctx, sq, skv, offset, 0, None, dtype))
    left, right = int(ctx.attr("left_window_size", -1)), int(ctx.attr("right_window_size", -1))
    if left >= 0 or right >= 0:
        window = _band_bias(ctx, sq, skv, offset, -right if right >= 0 else None,
                            left if left >= 0 else None, dtype)
        bias = _add_bias(ctx, bias, window)
    if nonpad is not None:
        keys = ctx.constant(np.arange(skv, dtype=np.int64))
        valid = ctx.emit("less", [keys, reshape(ctx, nonpad, (nonpad.shape[0], 1))])
        pad_bias = ctx.emit("where", [valid, ctx.constant(np.zeros((), dtype.np)),
                                      ctx.constant(np.array(-np.inf, dtype.np))])
        bias = _add_bias(ctx, bias, reshape(ctx, pad_bias, (nonpad.shape[0], 1, 1, skv)))

    reps = n_q // n_kv
    k_t = ctx.emit("transpose", [_repeat_heads(ctx, present_k, reps)], perm=(0, 1, 3, 2))
    scores = ctx.emit("matmul", [ctx.emit("mul", [q, root]), ctx.emit("mul", [k_t, root])])
    softcap = float(ctx.attr("softcap", 0.0))
    if softcap > 0:
        cap = ctx.scalar(softcap, scores)
        scores = ctx.emit("mul", [ctx.emit("tanh", [ctx.emit("div", [scores, cap])]), cap])
    biased = scores if bias is None else ctx.emit("add", [scores, bias])

    precision = _float_dtype_attr(ctx, "softmax_precision") or dtype
    logits = biased if precision == dtype else ctx.emit("cast", [biased], dtype=precision)
    probs = ctx.emit("softmax", [logits], axis=-1)
    # a row whose bias is all -inf attends to nothing: its probabilities are 0 (not NaN)
    if bias is not None:
        # (tested as "every element is -inf" rather than "the max is -inf": a max reduction
        # may start from the lowest finite value)
        # (in float32: the float16 is_inf kernel does not lower)
        b32 = bias if dtype != DType.float16 else ctx.emit("cast", [bias], dtype=DType.float32)
        neg_inf = ctx.emit("is_inf", [b32], detect_positive=False, detect_negative=True)
        ones = ctx.emit("cast", [neg_inf], dtype=DType.float32)
        all_inf = ctx.emit("reduce_min", [ones], axes=(-1,), keepdims=True)
        masked_row = ctx.emit("greater", [all_inf, ctx.scalar(0.5, all_inf)])
        if not (masked_row.is_constant and not masked_row.data.any()):
            zero = ctx.constant(np.zeros((), precision.np))
            probs = ctx.emit("where", [masked_row, zero, probs])
    if precision != dtype:
        probs = ctx.emit("cast", [probs], dtype=dtype)

    y = ctx.emit("matmul", [probs, _repeat_heads(ctx, present_v, reps)])
    if rank == 3:
        y = ctx.emit("transpose", [y], perm=(0, 2, 1, 3))
        y = reshape(ctx, y, (y.shape[0], y.shape[1], n_q * static_dim(y, 3, "Attention")))
    outs = [y, present_k, present_v]
    if _wants(node, 3):
        mode = int(ctx.attr("qk_matmul_output_mode", 0))
        if mode not in (0, 1, 2, 3):
            raise ModelError(f"qk_matmul_output_mode {mode} is not one of 0, 1, 2, 3")
        # 0 and 1: the (soft-capped) Q K^T; 2: with the bias added; 3: the probabilities
        outs.append({0: scores, 1: scores, 2: biased, 3: probs}[mode])
    return outs


# -- TensorScatter ------------------------------------------------------------------------------
@onnx_op("TensorScatter")
def _tensor_scatter(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    """Write ``update`` into the cache at per-batch offsets along ``axis``: cache position ``m``
    of batch ``b`` takes ``update[s]`` for ``s = m - write_indices[b]`` (modulo the cache
    length in circular mode) when ``0 <= s < update length``, else keeps the past value. Written
    as a gather from ``update`` and a select, so it runs as one injective kernel."""
    past, update, write = ctx.required(0), ctx.required(1), ctx.input(2)
    rank = past.type.rank
    axis = normalize_axis(ctx.attr("axis", -2), rank)
    mode = ctx.attr("mode", "linear")
    if mode not in ("linear", "circular"):
        raise ModelError(f"TensorScatter mode {mode!r} is not 'linear' or 'circular'")
    if axis == 0:
        raise ModelError("TensorScatter axis 0 would scatter along the batch axis")
    cache_len = static_dim(past, axis, "TensorScatter")
    seq = static_dim(update, axis, "TensorScatter")
    if seq > cache_len or update.type.rank != rank:
        raise ModelError(f"update {update.type} does not fit the cache {past.type}")
    at_axis = [1] * rank
    at_axis[axis] = cache_len
    m = ctx.constant(np.arange(cache_len, dtype=np.int64).reshape(at_axis))
    if write is None:
        s = m
    else:
        if write.dtype != DType.int64:
            write = ctx.emit("cast", [write], dtype=DType.int64)
        w = reshape(ctx, write, (write.shape[0], *([1] * (rank - 1))))
        s = ctx.emit("sub", [m, w])
    if mode == "circular":
        s = ctx.emit("mod", [s, ctx.scalar(cache_len, s)])
    valid = ctx.emit("logical_and", [ctx.emit("greater_equal", [s, ctx.scalar(0, s)]),
                                     ctx.emit("less", [s, ctx.scalar(seq, s)])])
    s = ctx.emit("where", [valid, s, ctx.scalar(0, s)])
    idx = ctx.emit("broadcast_to", [s], shape=past.shape)
    taken = ctx.emit("gather_elements", [update, idx], axis=axis)
    return [ctx.emit("where", [ctx.emit("broadcast_to", [valid], shape=past.shape), taken,
                               past])]


# -- CausalConvWithState ------------------------------------------------------------------------
@onnx_op("CausalConvWithState")
def _causal_conv_with_state(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    """Depthwise causal 1-D convolution over ``[past_state, input]`` (zeros when no state):
    ``y[:, c, l] = sum_t padded[:, c, l + t] * w[c, 0, t]`` (+ bias), a sum of ``k`` shifted
    slices that fuses into one elementwise kernel; the new state is the last ``k - 1``
    columns of the padded input."""
    x, w, bias, past = ctx.required(0), ctx.required(1), ctx.input(2), ctx.input(3)
    activation = ctx.attr("activation", "none")
    if activation not in ("none", "silu", "swish"):
        raise ModelError(f"CausalConvWithState activation {activation!r} is not 'none', "
                         "'silu' or 'swish'")
    if x.type.rank != 3 or w.type.rank != 3 or w.shape[1] != 1:
        raise ModelError(f"CausalConvWithState needs input [B, C, L] and weight [C, 1, k], got "
                         f"{x.type} and {w.type}")
    channels = static_dim(x, 1, "CausalConvWithState")
    length = static_dim(x, 2, "CausalConvWithState")
    k = static_dim(w, 2, "CausalConvWithState")
    if k == 1:        # no history: the state is empty
        padded = x
    else:
        if past is None:
            zeros = ctx.constant(np.zeros((1, channels, k - 1), x.dtype.np))
            past = ctx.emit("broadcast_to", [zeros], shape=(x.shape[0], channels, k - 1))
        padded = ctx.emit("concat", [past, x], axis=2)
    y: Value | None = None
    for t in range(k):
        tap = ctx.emit("slice", [w], axes=(2,), starts=(t,), ends=(t + 1,))
        shifted = ctx.emit("slice", [padded], axes=(2,), starts=(t,), ends=(t + length,))
        term = ctx.emit("mul", [shifted, reshape(ctx, tap, (channels, 1))])
        y = term if y is None else ctx.emit("add", [y, term])
    assert y is not None
    if bias is not None:
        y = ctx.emit("add", [y, reshape(ctx, bias, (channels, 1))])
    if activation != "none":   # SiLU, evaluated in float32 as the reference does
        y32 = y if y.dtype == DType.float32 else ctx.emit("cast", [y], dtype=DType.float32)
        y32 = ctx.emit("swish", [y32], alpha=1.0)
        y = y32 if y.dtype == DType.float32 else ctx.emit("cast", [y32], dtype=y.dtype)
    state = ctx.emit("slice", [padded], axes=(2,), starts=(length,), ends=(length + k - 1,))
    return [y, state]


# -- LinearAttention ----------------------------------------------------------------------------
def _heads_f32(ctx: Context, x: Value, heads: int, what: str) -> Value:
    """[B, T, H*D] -> [B, H, T, D] in float32 (the recurrence accumulates in float32)."""
    x = _split_heads(ctx, x, heads, what)
    return x if x.dtype == DType.float32 else ctx.emit("cast", [x], dtype=DType.float32)


def _step(ctx: Context, x: Value, i: int) -> Value:
    """Time step ``i`` of a [B, H, T, D] tensor: [B, H, 1, D]."""
    return ctx.emit("slice", [x], axes=(2,), starts=(i,), ends=(i + 1,))


@onnx_op("LinearAttention")
def _linear_attention(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    """The recurrent form, unrolled over the (static) sequence: per step the [B, H, dk, dv]
    state decays (gated rules), its read-out of the key corrects the value (delta rules), the
    key-value outer product is added, and the query reads the state (grouped over kv heads)."""
    q, k, v = ctx.required(0), ctx.required(1), ctx.required(2)
    past, decay, beta = ctx.input(3), ctx.input(4), ctx.input(5)
    rule = ctx.attr("update_rule", "gated_delta")
    if rule not in ("linear", "gated", "delta", "gated_delta"):
        raise ModelError(f"LinearAttention update_rule {rule!r} is not one of linear, gated, "
                         "delta, gated_delta")
    gating, delta = rule in ("gated", "gated_delta"), rule in ("delta", "gated_delta")
    if gating != (decay is not None) or delta != (beta is not None):
        raise ModelError(f"update_rule {rule!r} needs decay {'given' if gating else 'absent'} "
                         f"and beta {'given' if delta else 'absent'}")
    hq, hkv = ctx.attr("q_num_heads"), ctx.attr("kv_num_heads")
    if hq is None or hkv is None or hq <= 0 or hkv <= 0 or hq % hkv:
        raise ModelError(f"q_num_heads ({hq}) must be a positive multiple of kv_num_heads "
                         f"({hkv})")
    if q.type.rank != 3 or k.type.rank != 3 or v.type.rank != 3:
        raise ModelError(f"LinearAttention needs 3-D query, key, value; got {q.type}")
    hq, hkv = int(hq), int(hkv)
    group = hq // hkv
    q4, k4 = _heads_f32(ctx, q, hq, "query"), _heads_f32(ctx, k, hkv, "key")
    v4 = _heads_f32(ctx, v, hkv, "value")
    b, t, dk, dv = q4.shape[0], static_dim(q, 1, "LinearAttention"), q4.shape[3], v4.shape[3]
    if not isinstance(dk, int) or not isinstance(dv, int):
        raise ModelError("LinearAttention needs static head sizes")
    scale = float(ctx.attr("scale", 0.0)) or 1.0 / math.sqrt(dk)
    f32 = DType.float32

    def per_head(x: Value, what: str, widths: tuple[int, ...]) -> Value:
        """decay/beta [B, T, H*w or w] -> float32 [B, H', T, w]."""
        if x.type.rank != 3 or x.shape[-1] not in widths:
            raise ModelError(f"{what} {x.type} must be [B, T, n] with n in {list(widths)}")
        heads = hkv if x.shape[-1] != 1 else 1
        width = static_dim(x, 2, what) // heads
        x = reshape(ctx, x, (x.shape[0], x.shape[1], heads, width))
        x = ctx.emit("transpose", [x], perm=(0, 2, 1, 3))
        return x if x.dtype == f32 else ctx.emit("cast", [x], dtype=f32)

    decay4 = per_head(decay, "decay", (hkv, hkv * dk)) if decay is not None else None
    beta4 = per_head(beta, "beta", (hkv, 1)) if beta is not None else None
    if past is None:
        state = ctx.emit("broadcast_to", [ctx.constant(np.zeros((1, hkv, dk, dv), np.float32))],
                         shape=(b, hkv, dk, dv))
        state_dtype = q.dtype
    else:
        if past.shape[1:] != (hkv, dk, dv):
            raise ModelError(f"past_state {past.type} must be [B, {hkv}, {dk}, {dv}]")
        state_dtype = past.dtype
        state = past if past.dtype == f32 else ctx.emit("cast", [past], dtype=f32)
    scale_c = ctx.constant(np.array(scale, np.float32))
    outs = []
    for i in range(t):
        k_t, v_t = _step(ctx, k4, i), _step(ctx, v4, i)          # [B, Hkv, 1, d]
        if decay4 is not None:
            g_t = _step(ctx, decay4, i)                          # [B, Hkv, 1, dk or 1]
            g_t = reshape(ctx, g_t, (g_t.shape[0], g_t.shape[1], g_t.shape[3], 1))
            state = ctx.emit("mul", [state, ctx.emit("exp", [g_t])])
        if beta4 is not None:
            retrieved = ctx.emit("matmul", [k_t, state])        # [B, Hkv, 1, dv]
            v_t = ctx.emit("mul", [_step(ctx, beta4, i),
                                   ctx.emit("sub", [v_t, retrieved])])
        k_col = reshape(ctx, k_t, (k_t.shape[0], hkv, dk, 1))
        state = ctx.emit("add", [state, ctx.emit("mul", [k_col, v_t])])
        # the query heads of one kv head read its state together: [B, Hkv, G, dk] @ state
        q_t = reshape(ctx, _step(ctx, q4, i), (q4.shape[0], hkv, group, dk))
        o_t = ctx.emit("mul", [ctx.emit("matmul", [q_t, state]), scale_c])
        outs.append(reshape(ctx, o_t, (q4.shape[0], 1, hq * dv)))
    y = outs[0] if len(outs) == 1 else ctx.emit("concat", outs, axis=1)   # [B, T, Hq*dv]
    if y.dtype != q.dtype:
        y = ctx.emit("cast", [y], dtype=q.dtype)
    if state.dtype != state_dtype:
        state = ctx.emit("cast", [state], dtype=state_dtype)
    return [y, state]
