"""Tensor types: a shape whose dims are ints or symbolic names, and a dtype."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kiln.errors import ModelError
from kiln.ir.dtype import DType, as_dtype

Dim = int | str
"""A dimension: a non-negative int, or a symbolic name such as ``"batch"``."""


@dataclass(frozen=True)
class TensorType:
    shape: tuple[Dim, ...]
    dtype: DType

    def __post_init__(self) -> None:
        for d in self.shape:
            bad_int = isinstance(d, int) and (isinstance(d, bool) or d < 0)
            if bad_int or not isinstance(d, int | str):
                raise ModelError(f"invalid dimension {d!r} in shape {self.shape}")

    @staticmethod
    def of(shape: Sequence[Dim], dtype: object) -> TensorType:
        return TensorType(tuple(int(d) if not isinstance(d, str) else d for d in shape),
                          as_dtype(dtype))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    @property
    def static_shape(self) -> tuple[int, ...]:
        if not self.is_static:
            raise ModelError(f"shape {format_shape(self.shape)} has symbolic dims")
        return self.shape  # type: ignore[return-value]

    @property
    def numel(self) -> int:
        n = 1
        for d in self.static_shape:
            n *= d
        return n

    def __str__(self) -> str:
        return f"{self.dtype.short}{format_shape(self.shape)}"


def format_shape(shape: Sequence[Dim]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def broadcast_shapes(*shapes: Sequence[Dim]) -> tuple[Dim, ...]:
    """NumPy broadcasting over possibly symbolic dims; a symbolic dim only matches itself or 1."""
    rank = max(len(s) for s in shapes)
    out: list[Dim] = []
    for i in range(rank):
        dims = {s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0}
        dims.discard(1)
        if len(dims) > 1:
            raise ModelError("shapes " + ", ".join(format_shape(s) for s in shapes)
                             + " do not broadcast")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def normalize_axis(axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise ModelError(f"axis {axis} is out of range for rank {rank}")
    return axis % max(rank, 1)
