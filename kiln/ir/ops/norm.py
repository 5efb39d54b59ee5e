"""Normalisations without a mean: rms_norm (T5 and LLaMA's "layer norm").

``layer_norm`` lives with the reductions (``reduce.py``); ``rms_norm`` is its mean-free sibling,
made by ``passes/simplify.py`` from the written-out spelling exporters emit
(``x * rsqrt(mean(x^2) + eps) * w``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kiln.errors import ModelError
from kiln.ir.ops.registry import OpDef, Pattern, register
from kiln.ir.types import TensorType, normalize_axis


@dataclass(frozen=True)
class RmsNormAttrs:
    """Normalise over axes ``[axis, rank)``; gamma has shape ``x.shape[axis:]``."""

    axis: int = -1
    epsilon: float = 1e-6


def _infer_rms_norm(at: RmsNormAttrs, x: TensorType, gamma: TensorType) -> TensorType:
    if not x.dtype.is_float:
        raise ModelError(f"rms_norm needs a floating-point input, got {x.dtype}")
    axis = normalize_axis(at.axis, x.rank)
    if gamma.shape != x.shape[axis:] or gamma.dtype != x.dtype:
        raise ModelError(f"rms_norm gamma must be {x.dtype.short}{list(x.shape[axis:])}, "
                         f"got {gamma}")
    return x


def _rms_norm_ref(at: RmsNormAttrs, x: np.ndarray, gamma: np.ndarray) -> np.ndarray:
    axes = tuple(range(normalize_axis(at.axis, x.ndim), x.ndim))
    x64 = x.astype(np.float64)
    mean_sq = (x64 * x64).mean(axis=axes, keepdims=True)
    return (x64 / np.sqrt(mean_sq + at.epsilon) * gamma).astype(x.dtype)


register(OpDef("rms_norm", RmsNormAttrs, Pattern.REDUCTION, _infer_rms_norm, _rms_norm_ref,
               num_inputs=(2, 2)))
