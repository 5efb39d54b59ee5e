"""aarch64 NEON schedule templates: what is ARM's own.

The loop structures are the CPU ones of ``kiln.schedules.x86`` (GEMM, conv, depthwise conv,
pooling, row reductions such as softmax and LayerNorm, fused elementwise): each reads the
target's ``Isa`` (NEON: 4 float32 lanes, 32 vector registers) for its vector width and
register budget, so on ``arm-neon`` they emit ``fmla .4s`` and 128-bit loads. This package
holds what differs: the GEMM register tile sized for 32 q registers, and the int8 GEMM on
``sdot`` for targets with dotprod.

Softmax and LayerNorm take one reciprocal (square root) per row and multiply every element by
it, so ``frecpe`` / ``frsqrte`` with a Newton step would save a division per row, not per
element: they keep the exact division.
"""

from kiln.schedules.arm.gemm import default_gemm_knobs
from kiln.schedules.arm.int_gemm import SDOT, default_sdot_knobs

__all__ = ["SDOT", "default_gemm_knobs", "default_sdot_knobs"]
