"""x86 schedule templates (AVX2 / AVX-512), one module per op family."""

from kiln.schedules.x86.attention import (
    AttentionKnobs,
    default_attention_knobs,
    schedule_attention,
)
from kiln.schedules.x86.common import schedule_pointwise
from kiln.schedules.x86.conv import (
    CpuConvKnobs,
    CpuDepthwiseKnobs,
    default_conv_knobs,
    schedule_conv2d,
    schedule_depthwise_conv2d,
)
from kiln.schedules.x86.gemm import CpuGemmKnobs, default_gemm_knobs, round_up, schedule_gemm
from kiln.schedules.x86.injective import schedule_injective
from kiln.schedules.x86.pool import schedule_pool
from kiln.schedules.x86.reduce import (
    RowReductionKnobs,
    schedule_generic_reduction,
    schedule_row_reduction,
)

__all__ = ["AttentionKnobs", "CpuConvKnobs", "CpuDepthwiseKnobs", "CpuGemmKnobs",
           "RowReductionKnobs",
           "default_attention_knobs", "default_conv_knobs", "default_gemm_knobs", "round_up",
           "schedule_attention", "schedule_conv2d", "schedule_depthwise_conv2d",
           "schedule_gemm", "schedule_generic_reduction", "schedule_injective",
           "schedule_pointwise", "schedule_pool", "schedule_row_reduction"]
