"""TE for GEMM-like ops, plain and with a weight packed at compile time.

Packed layout: ``Bp[n // nr, k, n % nr] = B[k, n]`` with N padded to a multiple of ``nr``. One
panel ``Bp[p]`` is a contiguous K x nr block, so the GEMM's inner loop streams it with unit
stride, one ``nr``-wide vector load per k.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tvm import te

from kiln.schedules.compute.registry import NodeInfo, broadcast_index, compute, shape_of


def pack_weight(b_kn: np.ndarray, nr: int) -> np.ndarray:
    """Pack a [K, N] weight into panels [ceil(N / nr), K, nr], zero-padding the last one."""
    k, n = b_kn.shape
    panels = -(-n // nr)
    padded = np.zeros((k, panels * nr), dtype=b_kn.dtype)
    padded[:, :n] = b_kn
    return np.ascontiguousarray(padded.reshape(k, panels, nr).transpose(1, 0, 2))


def _gemm(shape: tuple[int, ...], name: str, a: te.Tensor, b_at: Any, k_extent: int) -> te.Tensor:
    """``C[..., m, j] = sum_k A[..., m, k] * b_at(batch_index, k, j)``; A's batch dims broadcast."""
    a_shape = shape_of(a)
    k = te.reduce_axis((0, k_extent), name="k")

    def f(*i: Any) -> Any:
        a_idx = broadcast_index(a, shape[:-1] + (a_shape[-1],), i[:-1] + (k,))
        return te.sum(a(*a_idx) * b_at(i[:-2], k, i[-1]), axis=k)

    return te.compute(shape, f, name=name)


@compute("matmul")
def matmul(n: NodeInfo, a: te.Tensor, b: te.Tensor) -> te.Tensor:
    shape = n.shape
    b_shape = shape_of(b)

    def b_at(batch: tuple[Any, ...], k: Any, j: Any) -> Any:
        return b(*broadcast_index(b, shape[:-2] + b_shape[-2:], (*batch, k, j)))

    return _gemm(shape, n.name, a, b_at, shape_of(a)[-1])


@compute("dense")
def dense(n: NodeInfo, x: te.Tensor, w: te.Tensor) -> te.Tensor:
    """``y[..., j] = sum_k x[..., k] * w[j, k]`` (w is [N, K])."""
    return _gemm(n.shape, n.name, x, lambda _batch, k, j: w(j, k), shape_of(x)[-1])


def gemm_packed(n: NodeInfo, a: te.Tensor, bp: te.Tensor) -> te.Tensor:
    """The GEMM of ``a`` with a packed weight ``bp`` [P, K, nr]. All P * nr columns go to an
    intermediate (the padding columns are discarded); the result is its [..., N] view."""
    panels, k_extent, nr = shape_of(bp)
    padded = n.shape[:-1] + (panels * nr,)
    c = _gemm(padded, f"{n.name}_gemm", a, lambda _batch, k, j: bp(j // nr, k, j % nr), k_extent)
    return te.compute(n.shape, lambda *i: c(*i), name=n.name)
