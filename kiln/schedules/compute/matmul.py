"""TE for GEMM-like ops, plain and with a weight packed at compile time.

Packed layout: ``Bp[n // nr, k, n % nr] = B[k, n]`` with N padded to a multiple of ``nr``. One
panel ``Bp[p]`` is a contiguous K x nr block, so the GEMM's inner loop streams it with unit
stride, one ``nr``-wide vector load per k.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tvm import te, tirx

from kiln.schedules.compute.registry import (
    NodeInfo,
    broadcast_index,
    ceil_div,
    compute,
    shape_of,
)


def pack_weight(b_kn: np.ndarray, nr: int) -> np.ndarray:
    """Pack a [K, N] weight into panels [ceil(N / nr), K, nr], zero-padding the last one."""
    k, n = b_kn.shape
    panels = -(-n // nr)
    padded = np.zeros((k, panels * nr), dtype=b_kn.dtype)
    padded[:, :n] = b_kn
    return np.ascontiguousarray(padded.reshape(k, panels, nr).transpose(1, 0, 2))


HALF_FLOATS = ("float16", "bfloat16")    # accumulated in float32


def _gemm(shape: tuple[int, ...], name: str, a: te.Tensor, b_at: Any, k_extent: int,
          rows: int | None = None, product: Any = None) -> te.Tensor:
    """``C[..., m, j] = sum_k A[..., m, k] * b_at(batch_index, k, j)``; A's batch dims
    broadcast. With ``rows`` (< shape[-2]), rows past it re-read A's last row: a clamped index,
    never a read out of bounds. ``product(lead, j, a_value, b_value)`` replaces the plain
    product (``lead``: the output index without ``j``, its row clamped): an integer GEMM
    widens the operands and subtracts zero points there. float16 and bfloat16 operands are
    summed in float32 and the sum rounded once, in a block named ``<name>_round``."""
    a_shape = shape_of(a)
    k = te.reduce_axis((0, k_extent), name="k")
    widen = product is None and a.dtype in HALF_FLOATS

    def f(*i: Any) -> Any:
        lead = i[:-1] if rows is None else (*i[:-2], tirx.min(i[-2], rows - 1))
        a_idx = broadcast_index(a, shape[:-1] + (a_shape[-1],), (*lead, k))
        av, bv = a(*a_idx), b_at(i[:-2], k, i[-1])
        if widen:
            av, bv = av.astype("float32"), bv.astype("float32")
        return te.sum(av * bv if product is None else product(lead, i[-1], av, bv), axis=k)

    c = te.compute(shape, f, name=name)
    if widen:       # rounded once, as tensor cores (and cuBLAS, and NumPy) do
        return te.compute(shape, lambda *i: c(*i).astype(a.dtype), name=f"{name}_round")
    return c


def reduction_of(t: te.Tensor) -> te.Tensor:
    """The GEMM's reduction under ``t``: ``t`` itself, or the sum a half-precision GEMM
    rounds (see ``_gemm``)."""
    while not t.op.reduce_axis:
        t = t.op.input_tensors[0]
    return t


def matmul_operand(shape: tuple[int, ...], b: te.Tensor) -> Any:
    """``B[batch..., k, j]`` of a matmul with output ``shape``, batch dims broadcast."""
    b_shape = shape_of(b)
    return lambda batch, k, j: b(*broadcast_index(b, shape[:-2] + b_shape[-2:], (*batch, k, j)))


def dense_operand(w: te.Tensor) -> Any:
    """``B[k, j] = W[j, k]`` of a dense layer (W is [N, K])."""
    return lambda _batch, k, j: w(j, k)


def packed_operand(bp: te.Tensor) -> Any:
    """``B[batch..., k, j]`` read from panels ``Bp[batch..., j // nr, k, j % nr]`` (a weight
    packed at compile time has no batch dims)."""
    nr = shape_of(bp)[-1]
    batched = len(shape_of(bp)) > 3
    return lambda batch, k, j: bp(*(batch if batched else ()), j // nr, k, j % nr)


def pack_at_runtime(b_at: Any, batch: tuple[int, ...], k_extent: int, n_extent: int, nr: int,
                    dtype: str, name: str) -> te.Tensor:
    """The packing BLAS does at run time for an operand that is not a constant:
    ``Bp[batch..., p, k, r] = B[batch..., k, p * nr + r]``, zero past N. The schedule packs
    each task's panels just before the task uses them, so the copy costs 1 / mc of the FLOPs
    and the inner loop gets whole, unit-stride panels whatever N is."""
    panels = ceil_div(n_extent, nr)

    def f(*i: Any) -> Any:
        *b, p, k, r = i
        j = p * nr + r
        return tirx.if_then_else(j < n_extent, b_at(tuple(b), k, j), tirx.const(0, dtype))

    return te.compute((*batch, panels, k_extent, nr), f, name=name)


@compute("matmul")
def matmul(n: NodeInfo, a: te.Tensor, b: te.Tensor) -> te.Tensor:
    return _gemm(n.shape, n.name, a, matmul_operand(n.shape, b), shape_of(a)[-1])


@compute("dense")
def dense(n: NodeInfo, x: te.Tensor, w: te.Tensor) -> te.Tensor:
    """``y[..., j] = sum_k x[..., k] * w[j, k]`` (w is [N, K])."""
    return _gemm(n.shape, n.name, x, dense_operand(w), shape_of(x)[-1])


def gemm_padded(n: NodeInfo, a: te.Tensor, b_at: Any, k_extent: int, m_pad: int,
                n_pad: int, product: Any = None) -> te.Tensor:
    """The node's GEMM on a grid padded to [..., m_pad, n_pad], so that every register and
    cache tile of the schedule is whole (no predicate in the inner loops). Rows past M re-read
    A's last row; columns past N multiply the zero padding of a packed weight. The padded
    result goes to an intermediate block named ``<node>_gemm``; the returned tensor is its
    [..., M, N] view, so the padding is computed in registers but never stored."""
    shape = n.shape if len(n.shape) > 1 else (1, *n.shape)     # x [K] @ W: one row
    m = shape[-2]
    padded = not isinstance(m, int) or m_pad > m     # a symbolic M: ceil(M / mc) * mc rows
    c = _gemm((*shape[:-2], m_pad, n_pad), f"{n.name}_gemm", a, b_at, k_extent,
              rows=m if padded else None, product=product)
    if len(n.shape) == 1:
        return te.compute(n.shape, lambda j: c(0, j), name=n.name)
    return te.compute(n.shape, lambda *i: c(*i), name=n.name)
