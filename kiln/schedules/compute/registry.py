"""The table from op name to TE compute, and helpers shared by the compute families."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tvm import te, tirx

from kiln.ir.types import Dim, TensorType

# A TE extent: an int, or the kernel's tirx.Var for a symbolic dim (``seq``).
Extent = Any


@dataclass(frozen=True)
class NodeInfo:
    """What a compute needs to know about the node it lowers."""

    attrs: Any
    outs: tuple[TensorType, ...]
    name: str                      # block name prefix, unique within the kernel
    syms: Mapping[str, tirx.Var] = field(default_factory=dict)   # symbolic dims -> vars
    ins: tuple[TensorType, ...] = ()   # the input types (a TE tensor holds only the storage)

    @property
    def shape(self) -> tuple[Extent, ...]:
        return te_shape(self.outs[0].shape, self.syms)

    @property
    def dtype(self) -> str:
        """The TVM dtype of the (first) output's buffer."""
        return self.outs[0].dtype.tvm


ComputeFn = Callable[..., te.Tensor | tuple[te.Tensor, ...]]
COMPUTE: dict[str, ComputeFn] = {}


def compute(*names: str) -> Callable[[ComputeFn], ComputeFn]:
    """Register a TE compute for one or more op names."""
    def deco(fn: ComputeFn) -> ComputeFn:
        for n in names:
            COMPUTE[n] = fn
        return fn
    return deco


def te_shape(shape: Sequence[Dim], syms: Mapping[str, tirx.Var]) -> tuple[Extent, ...]:
    """A kiln shape as TE extents: symbolic dims become the kernel's variables."""
    return tuple(d if isinstance(d, int) else syms[d] for d in shape)


def shape_of(t: te.Tensor) -> tuple[Extent, ...]:
    """``t``'s extents: Python ints where static, the dim's variable where symbolic."""
    return tuple(int(d) if isinstance(d, tirx.IntImm) else d for d in t.shape)


def ceil_div(x: Extent, d: int) -> Extent:
    """``ceil(x / d)``; for a symbolic ``x`` in the ``(x + d - 1) // d`` form, the one TVM's
    region analysis proves bounds of (``x <= ceil_div(x, d) * d``)."""
    return -(-x // d) if isinstance(x, int) else (x + (d - 1)) // d


def is_one(d: Extent) -> bool:
    """A static extent of 1 (a symbolic dim is never taken for a broadcast one)."""
    return isinstance(d, int) and d == 1


def broadcast_index(t: te.Tensor, out_shape: Sequence[Extent],
                    idx: Sequence[Any]) -> list[Any]:
    """Index ``t`` (NumPy-broadcast to ``out_shape``) at the output position ``idx``."""
    shape = shape_of(t)
    lead = len(out_shape) - len(shape)
    return [0 if (is_one(d) and not is_one(out_shape[lead + i])) else idx[lead + i]
            for i, d in enumerate(shape)]


def const(value: float | int | bool, dtype: str) -> tirx.PrimExpr:
    return tirx.const(value, dtype)


def extent_as(v: Any, dtype: str) -> tirx.PrimExpr:
    """An extent (an int, or an expression of symbolic dims) as a value of ``dtype``."""
    return const(v, dtype) if isinstance(v, int) else v.astype(dtype)
