"""The table from op name to TE compute, and helpers shared by the compute families."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tvm import te, tirx

from kiln.ir.types import TensorType


@dataclass(frozen=True)
class NodeInfo:
    """What a compute needs to know about the node it lowers."""

    attrs: Any
    outs: tuple[TensorType, ...]
    name: str                      # block name prefix, unique within the kernel

    @property
    def shape(self) -> tuple[int, ...]:
        return self.outs[0].static_shape

    @property
    def dtype(self) -> str:
        return self.outs[0].dtype.value


ComputeFn = Callable[..., te.Tensor | tuple[te.Tensor, ...]]
COMPUTE: dict[str, ComputeFn] = {}


def compute(*names: str) -> Callable[[ComputeFn], ComputeFn]:
    """Register a TE compute for one or more op names."""
    def deco(fn: ComputeFn) -> ComputeFn:
        for n in names:
            COMPUTE[n] = fn
        return fn
    return deco


def shape_of(t: te.Tensor) -> tuple[int, ...]:
    return tuple(int(d) for d in t.shape)


def broadcast_index(t: te.Tensor, out_shape: Sequence[int], idx: Sequence[Any]) -> list[Any]:
    """Index ``t`` (NumPy-broadcast to ``out_shape``) at the output position ``idx``."""
    shape = shape_of(t)
    lead = len(out_shape) - len(shape)
    return [0 if (d == 1 and out_shape[lead + i] != 1) else idx[lead + i]
            for i, d in enumerate(shape)]


def const(value: float | int | bool, dtype: str) -> tirx.PrimExpr:
    return tirx.const(value, dtype)
