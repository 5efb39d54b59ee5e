"""Element types. kiln names match NumPy's and TVM's spellings, so conversion is by name."""

from __future__ import annotations

from enum import Enum

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

    @property
    def np(self) -> np.dtype:
        return np.dtype(self.value)

    @property
    def is_float(self) -> bool:
        return self.value.startswith("float")

    @property
    def is_int(self) -> bool:
        """A signed or unsigned integer (not bool)."""
        return self.value.startswith(("int", "uint"))

    @property
    def is_unsigned(self) -> bool:
        return self.value.startswith("uint")

    @property
    def bits(self) -> int:
        """Storage bits of one element (8 for bool, as NumPy and TVM store it)."""
        return self.np.itemsize * 8

    @property
    def short(self) -> str:
        """Compact spelling used by the printer: f32, i64, u8, bool."""
        if self is DType.bool:
            return "bool"
        kind = {"float": "f", "int": "i", "uint": "u"}[self.value.rstrip("0123456789")]
        return kind + self.value[len(self.value.rstrip("0123456789")):]

    def __str__(self) -> str:
        return self.value


def as_dtype(x: object) -> DType:
    """Accept a DType, a string ('float32'), a NumPy dtype or a NumPy scalar type."""
    if isinstance(x, DType):
        return x
    try:
        name = np.dtype(x).name  # type: ignore[call-overload]
    except TypeError as e:
        raise ModelError(f"unknown dtype {x!r}") from e
    try:
        return DType(name)
    except ValueError as e:
        raise ModelError(f"dtype {name!r} is not supported by kiln "
                         f"(supported: {', '.join(d.value for d in DType)})") from e
