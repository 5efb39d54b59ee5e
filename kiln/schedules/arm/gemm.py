"""The fp32 GEMM's register tile for NEON; the loop nest is ``kiln.schedules.x86.gemm``'s.

    acc[8, 12] += A[m0:m0+8, k] (x) B[k, n0:n0+12]

8 x 12 is 24 q accumulators + 3 q of B + 1 of A (8 rows of A need two q, read by lane:
``fmla v.4s, b.4s, a.s[i]``) = 28 of 32 registers. 24 independent FMA chains cover the FMA
latency (4 cycles on Cortex-A72/A76) x 2 pipes three times over; per k step it loads 5 q for
24 fmla (x86's 8 x 32 zmm tile: 2 + 8 broadcasts for 16).
"""

from __future__ import annotations

from kiln.schedules.x86.gemm import CpuGemmKnobs, knobs_around
from kiln.target import Isa

LANES = Isa.NEON.lanes("float32")
MR, NR = 8, 3 * LANES


def default_gemm_knobs(m: int, n: int, k: int) -> CpuGemmKnobs:
    """Untuned defaults: the 8 x 12 register tile (8 x 4 or 8 x 8 for a narrow N), with x86's
    cache tile and unrolling around it."""
    nr = NR if n > 2 * LANES else (2 * LANES if n > LANES else LANES)
    return knobs_around(m, n, k, min(MR, m), nr)
