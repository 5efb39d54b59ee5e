"""GEMM-like ops: ``matmul`` (NumPy semantics, batch dims broadcast) and ``dense`` (x @ W^T)."""

from __future__ import annotations

import numpy as np

from kiln.errors import ModelError
from kiln.ir.ops.registry import NoAttrs, OpDef, Pattern, register
from kiln.ir.types import TensorType, broadcast_shapes


def _check_k(name: str, ka, kb) -> None:
    if ka != kb and not (isinstance(ka, str) or isinstance(kb, str)):
        raise ModelError(f"{name}: contraction dims differ ({ka} vs {kb})")


def _infer_matmul(_at, a: TensorType, b: TensorType) -> TensorType:
    if a.rank < 2 or b.rank < 2:
        raise ModelError(f"matmul needs inputs of rank >= 2, got {a} and {b} "
                         "(reshape 1-D operands first)")
    if a.dtype != b.dtype:
        raise ModelError(f"matmul needs inputs of one dtype, got {a.dtype} and {b.dtype}")
    _check_k("matmul", a.shape[-1], b.shape[-2])
    batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
    return TensorType((*batch, a.shape[-2], b.shape[-1]), a.dtype)


def _matmul_ref(_at, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    acc = np.float64 if a.dtype.kind == "f" else np.int64
    return np.matmul(a.astype(acc), b.astype(acc)).astype(a.dtype)


register(OpDef("matmul", NoAttrs, Pattern.OUT_FUSABLE, _infer_matmul, _matmul_ref,
               num_inputs=(2, 2)))


def _infer_dense(_at, x: TensorType, w: TensorType) -> TensorType:
    if x.rank < 1 or w.rank != 2:
        raise ModelError(f"dense needs x of rank >= 1 and a 2-D weight [N, K], got {x} and {w}")
    if x.dtype != w.dtype:
        raise ModelError(f"dense needs inputs of one dtype, got {x.dtype} and {w.dtype}")
    _check_k("dense", x.shape[-1], w.shape[1])
    return TensorType((*x.shape[:-1], w.shape[0]), x.dtype)


register(OpDef("dense", NoAttrs, Pattern.OUT_FUSABLE, _infer_dense,
               lambda at, x, w: _matmul_ref(at, x, w.T), num_inputs=(2, 2)))
