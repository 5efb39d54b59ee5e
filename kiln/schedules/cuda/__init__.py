"""CUDA schedule templates, one module per op family."""

from kiln.schedules.cuda.attention import (
    FlashAttention,
    FlashKnobs,
    default_flash_knobs,
    flash_attention_func,
    flash_attention_of,
)
from kiln.schedules.cuda.gemm import CudaGemmKnobs, default_gemm_knobs, schedule_gemm
from kiln.schedules.cuda.injective import schedule_injective
from kiln.schedules.cuda.reduce import schedule_generic_reduction, schedule_row_reduction
from kiln.schedules.cuda.tensorcore import (
    TensorCoreKnobs,
    default_tensorcore_knobs,
    schedule_tensorcore_gemm,
)
from kiln.schedules.cuda.wgmma import WgmmaGemm, WgmmaKnobs, wgmma_fits, wgmma_gemm_func

__all__ = ["CudaGemmKnobs", "FlashAttention", "FlashKnobs", "TensorCoreKnobs", "WgmmaGemm",
           "WgmmaKnobs", "default_flash_knobs", "default_gemm_knobs", "default_tensorcore_knobs",
           "flash_attention_func", "flash_attention_of", "schedule_gemm",
           "schedule_generic_reduction", "schedule_injective", "schedule_row_reduction",
           "schedule_tensorcore_gemm", "wgmma_fits", "wgmma_gemm_func"]
