"""Element types. kiln names match NumPy's (with ml_dtypes') and TVM's spellings.

The narrow types (bfloat16, the float8 family, float4_e2m1fn, int4/uint4, int2/uint2) are
NumPy dtypes through ml_dtypes, one element per byte. bfloat16 is a TVM type kernels compute
in; the others are *bit types*: a kernel stores them in the integer type of their byte
(``storage``) and only conversions (cast, quantize, dequantize) and data movement read them.
"""

from __future__ import annotations

from enum import Enum
from functools import cached_property

import ml_dtypes
import numpy as np

from kiln.errors import ModelError


class DType(str, Enum):
    float16 = "float16"
    float32 = "float32"
    float64 = "float64"
    int8 = "int8"
    uint8 = "uint8"
    int16 = "int16"
    uint16 = "uint16"
    int32 = "int32"
    uint32 = "uint32"
    int64 = "int64"
    uint64 = "uint64"
    bool = "bool"
    bfloat16 = "bfloat16"
    float8_e4m3fn = "float8_e4m3fn"
    float8_e4m3fnuz = "float8_e4m3fnuz"
    float8_e5m2 = "float8_e5m2"
    float8_e5m2fnuz = "float8_e5m2fnuz"
    float4_e2m1fn = "float4_e2m1fn"
    int4 = "int4"
    uint4 = "uint4"
    int2 = "int2"
    uint2 = "uint2"

    @cached_property
    def np(self) -> np.dtype:
        return np.dtype(getattr(ml_dtypes, self.value, self.value))

    @property
    def is_bits(self) -> bool:
        """A narrow type kernels keep as raw bits in ``storage`` (float8, float4, int4, int2)."""
        return self.value.startswith(("float8", "float4")) or self.bits < 8

    @property
    def storage(self) -> DType:
        """The type a kernel's buffers hold: itself, or the byte type of a bit type."""
        if not self.is_bits:
            return self
        return DType.int8 if self.value.startswith("int") else DType.uint8

    @property
    def tvm(self) -> str:
        """The TVM dtype of kernel buffers and Relax tensors (``storage``'s name)."""
        return self.storage.value

    @property
    def is_float(self) -> bool:
        return self.value.startswith(("float", "bfloat"))

    @property
    def is_int(self) -> bool:
        """A signed or unsigned integer (not bool)."""
        return self.value.startswith(("int", "uint"))

    @property
    def is_unsigned(self) -> bool:
        return self.value.startswith("uint")

    @property
    def bits(self) -> int:
        """Bits of one element's value (8 for bool, as NumPy and TVM store it; 4 for int4)."""
        digits = "".join(c for c in self.value.split("_")[0] if c.isdigit())   # float8_e4m3fn
        return int(digits) if digits else 8

    @property
    def short(self) -> str:
        """Compact spelling used by the printer: f32, i64, u8, bool."""
        if self is DType.bfloat16:
            return "bf16"
        if self is DType.bool or "_" in self.value:
            return self.value
        kind = {"float": "f", "int": "i", "uint": "u"}[self.value.rstrip("0123456789")]
        return kind + self.value[len(self.value.rstrip("0123456789")):]

    def __str__(self) -> str:
        return self.value


def as_dtype(x: object) -> DType:
    """Accept a DType, a string ('float32'), a NumPy dtype or a NumPy scalar type."""
    if isinstance(x, DType):
        return x
    try:
        name = x if isinstance(x, str) and x in DType.__members__ else np.dtype(x).name  # type: ignore[call-overload]
    except TypeError as e:
        raise ModelError(f"unknown dtype {x!r}") from e
    try:
        return DType(name)
    except ValueError as e:
        raise ModelError(f"dtype {name!r} is not supported by kiln "
                         f"(supported: {', '.join(d.value for d in DType)})") from e


def to_storage(arr: np.ndarray, dtype: DType) -> np.ndarray:
    """``arr`` (of ``dtype``) as kernels hold it: a narrow float's bytes, a narrow integer's
    value (ml_dtypes keeps int4 as a nibble, not sign-extended)."""
    if not dtype.is_bits:
        return arr
    return arr.view(np.uint8) if dtype.is_float else arr.astype(dtype.storage.np)


def from_storage(arr: np.ndarray, dtype: DType) -> np.ndarray:
    """A kernel's buffer back as ``dtype``."""
    if not dtype.is_bits:
        return arr
    return arr.view(dtype.np) if dtype.is_float else arr.astype(dtype.np)


def convert_array(x: np.ndarray, dtype: DType, saturate: bool = True) -> np.ndarray:
    """``x`` as ``dtype`` the way kiln's cast converts: NumPy's (and ml_dtypes') conversion
    (floats truncate toward zero, NaN is true as a bool, int4 and int2 wrap, narrow floats
    round half to even), with float8 targets clamped to their finite range when ``saturate``
    (ONNX's Cast)."""
    to = dtype.np
    with np.errstate(all="ignore"):
        if saturate and dtype.value.startswith("float8"):
            info = ml_dtypes.finfo(to)
            x = np.where(np.isnan(x), x, np.clip(x, info.min, info.max))
        return x.astype(to)
