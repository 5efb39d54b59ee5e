"""A decoder's key/value cache: ``kv_cache_write`` stores one layer's new keys and values at a
runtime position, ``kv_attention`` attends over what the cache holds up to each query.

The cache is one tensor for the whole model, a fixed capacity ``C`` of positions::

    cache [L, 2, B, H, C, D]    layer, keys (0) / values (1), batch, head, position, head dim

``pos`` is a 0-d int64 tensor, the position of the first new token: the same compiled step
serves every position. ``kv_cache_write(cache, k, v, pos, layer)`` returns the cache with
``cache[layer, 0, :, :, pos:pos + T] = k`` and ``cache[layer, 1, ...] = v`` (``k``, ``v``:
``[B, H, T, D]``); compiled, it writes those T rows in place and copies nothing else (the
cache it reads must have no later reader: ``kiln.codegen.assemble`` checks). A position past
the capacity is an error, never a clamp. ``kv_attention(q, cache, pos, layer, scale)`` is causal
attention of ``q [B, H, T, D]``, the queries at positions ``pos .. pos + T - 1``, over the
layer's cached keys and values: query t sees the keys at positions ``0 .. pos + t``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kiln.errors import InputError, ModelError
from kiln.ir.dtype import DType
from kiln.ir.ops.registry import OpDef, Pattern, register
from kiln.ir.types import TensorType, format_shape

KV_CACHE_OPS = ("kv_cache_write", "kv_attention")


@dataclass(frozen=True)
class KVWriteAttrs:
    layer: int


@dataclass(frozen=True)
class KVAttentionAttrs:
    layer: int
    scale: float


def _check_cache(op: str, layer: int, cache: TensorType, x: TensorType, what: str,
                 pos: TensorType) -> None:
    if cache.rank != 6 or cache.shape[1] != 2:
        raise ModelError(f"{op}: the cache must be [layers, 2, batch, heads, capacity, head_dim]"
                         f", got {format_shape(cache.shape)}")
    if not isinstance(layer, int) or not 0 <= layer < cache.shape[0]:
        raise ModelError(f"{op}: layer {layer!r} is not in the cache's {cache.shape[0]} layers")
    if x.rank != 4 or (x.shape[0], x.shape[1], x.shape[3]) != (
            cache.shape[2], cache.shape[3], cache.shape[5]):
        raise ModelError(f"{op}: {what} must be [batch, heads, T, head_dim] = "
                         f"{format_shape((cache.shape[2], cache.shape[3], 'T', cache.shape[5]))}"
                         f" to match the cache, got {format_shape(x.shape)}")
    if x.dtype != cache.dtype or x.dtype != DType.float32:
        raise ModelError(f"{op}: the cache and {what} must be float32, got {cache.dtype} and "
                         f"{x.dtype}")
    if pos.rank != 0 or pos.dtype != DType.int64:
        raise ModelError(f"{op}: pos must be a 0-d int64 tensor, got {pos}")


def check_position(op: str, pos: np.ndarray, steps: int, capacity: int) -> int:
    """``pos`` as an int, or an InputError where ``pos .. pos + steps`` leaves the cache."""
    p = int(pos)
    if p < 0 or p + steps > capacity:
        raise InputError(f"{op}: positions {p}..{p + steps - 1} are outside the cache's "
                         f"capacity of {capacity}")
    return p


def _infer_write(at: KVWriteAttrs, cache: TensorType, k: TensorType, v: TensorType,
                 pos: TensorType) -> TensorType:
    _check_cache("kv_cache_write", at.layer, cache, k, "k", pos)
    if v.shape != k.shape or v.dtype != k.dtype:
        raise ModelError(f"kv_cache_write: v {v} must have k's type {k}")
    return cache


def _write_ref(at: KVWriteAttrs, cache: np.ndarray, k: np.ndarray, v: np.ndarray,
               pos: np.ndarray) -> np.ndarray:
    p = check_position("kv_cache_write", pos, k.shape[2], cache.shape[4])
    out = cache.copy()
    out[at.layer, 0, :, :, p:p + k.shape[2]] = k
    out[at.layer, 1, :, :, p:p + k.shape[2]] = v
    return out


def _infer_attention(at: KVAttentionAttrs, q: TensorType, cache: TensorType,
                     pos: TensorType) -> TensorType:
    _check_cache("kv_attention", at.layer, cache, q, "q", pos)
    return q


def _attention_ref(at: KVAttentionAttrs, q: np.ndarray, cache: np.ndarray,
                   pos: np.ndarray) -> np.ndarray:
    t = q.shape[2]
    p = check_position("kv_attention", pos, t, cache.shape[4])
    k = cache[at.layer, 0, :, :, :p + t].astype(np.float64)   # [B, H, S, D]
    v = cache[at.layer, 1, :, :, :p + t].astype(np.float64)
    s = np.einsum("bhtd,bhsd->bhts", q.astype(np.float64), k) * at.scale
    visible = np.arange(p + t)[None, :] <= (p + np.arange(t))[:, None]     # [T, S]: causal
    s = np.where(visible, s, -np.inf)
    e = np.exp(s - s.max(-1, keepdims=True))
    return (np.einsum("bhts,bhsd->bhtd", e / e.sum(-1, keepdims=True), v)).astype(q.dtype)


register(OpDef("kv_cache_write", KVWriteAttrs, Pattern.OPAQUE, _infer_write, _write_ref,
               num_inputs=(4, 4)))
register(OpDef("kv_attention", KVAttentionAttrs, Pattern.OPAQUE, _infer_attention,
               _attention_ref, num_inputs=(3, 3)))
