"""The op registry: every op's attribute schema, shape rule, fusion kind and NumPy oracle."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from enum import Enum
from typing import Any

import numpy as np

from kiln.errors import ModelError
from kiln.ir.types import TensorType


class Pattern(Enum):
    """How an op may fuse with its neighbours (the order matters: lower fuses more freely)."""

    ELEMENTWISE = "elementwise"   # out[i] = f(in[i]), all shapes equal
    BROADCAST = "broadcast"       # elementwise after NumPy broadcasting of the inputs
    INJECTIVE = "injective"       # each output element reads one computed input element
    REDUCTION = "reduction"       # reduces along axes; fuses an elementwise prologue/epilogue
    OUT_FUSABLE = "out-fusable"   # GEMM-like: takes an elementwise epilogue only
    OPAQUE = "opaque"             # never fused

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class NoAttrs:
    """Attributes of an op that has none."""


# The ops that take float8 / float4 / int4 / int2 values (``DType.is_bits``): conversions, and
# data movement that copies whole elements.
BIT_TYPE_OPS = frozenset({"cast", "quantize", "dequantize", "reshape", "transpose", "slice",
                          "concat", "split", "broadcast_to", "tile", "gather"})

InferFn = Callable[..., TensorType | tuple[TensorType, ...]]
ReferenceFn = Callable[..., np.ndarray | tuple[np.ndarray, ...]]


@dataclass(frozen=True)
class OpDef:
    """One op: ``infer(attrs, *input_types)`` and ``reference(attrs, *arrays)`` both take the
    attributes first; each returns one result or a tuple (one per output)."""

    name: str
    attrs: type
    pattern: Pattern
    infer: InferFn
    reference: ReferenceFn
    num_inputs: tuple[int, int | None] = (1, 1)   # (min, max); None = unbounded

    def make_attrs(self, **kwargs: Any) -> Any:
        names = {f.name for f in fields(self.attrs)}
        unknown = set(kwargs) - names
        if unknown:
            raise ModelError(f"op {self.name}: unknown attribute(s) {sorted(unknown)}; "
                             f"expected {sorted(names)}")
        try:
            return self.attrs(**kwargs)
        except TypeError as e:
            raise ModelError(f"op {self.name}: {e}") from e

    def infer_types(self, attrs: Any, types: list[TensorType]) -> list[TensorType]:
        lo, hi = self.num_inputs
        if len(types) < lo or (hi is not None and len(types) > hi):
            want = f"{lo}" if lo == hi else f"{lo} to {hi if hi is not None else 'any'}"
            raise ModelError(f"op {self.name} takes {want} inputs, got {len(types)}")
        out = self.infer(attrs, *types)
        out = list(out) if isinstance(out, tuple) else [out]
        if self.name not in BIT_TYPE_OPS:
            bits = sorted({t.dtype.value for t in [*types, *out] if t.dtype.is_bits})
            if bits:
                raise ModelError(f"op {self.name} does not take {', '.join(bits)}: kiln computes "
                                 "on these types only after a Cast to a wider type")
        return out

    def run_reference(self, attrs: Any, arrays: list[np.ndarray]) -> list[np.ndarray]:
        out = self.reference(attrs, *arrays)
        return [np.asarray(o) for o in out] if isinstance(out, tuple) else [np.asarray(out)]


OPS: dict[str, OpDef] = {}


def register(op: OpDef) -> OpDef:
    if op.name in OPS:
        raise ValueError(f"op {op.name} registered twice")
    OPS[op.name] = op
    return op


def get_op(name: str) -> OpDef:
    try:
        return OPS[name]
    except KeyError:
        raise ModelError(f"unknown op {name!r}") from None
