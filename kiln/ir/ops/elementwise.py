"""Elementwise and broadcasting ops: unary math, binary arithmetic and comparisons, cast, where.

Each family is a table from op name to its NumPy reference, so adding a unary op is one line
here plus one line in ``schedules/compute/elementwise.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import numpy as np

from kiln.errors import ModelError
from kiln.ir.dtype import DType, as_dtype
from kiln.ir.ops.registry import NoAttrs, OpDef, Pattern, register
from kiln.ir.types import TensorType, broadcast_shapes

_erf = np.vectorize(math.erf, otypes=[np.float64])


def _float_only(name: str, t: TensorType) -> None:
    if not t.dtype.is_float:
        raise ModelError(f"{name} needs a floating-point input, got {t.dtype}")


def _gelu_erf(x: np.ndarray) -> np.ndarray:
    x64 = x.astype(np.float64)
    return (0.5 * x64 * (1.0 + _erf(x64 / math.sqrt(2.0)))).astype(x.dtype)


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    x64 = x.astype(np.float64)
    inner = math.sqrt(2.0 / math.pi) * (x64 + 0.044715 * x64**3)
    return (0.5 * x64 * (1.0 + np.tanh(inner))).astype(x.dtype)


# name -> (reference, needs a float input). References compute in float64 where it matters.
UNARY: dict[str, tuple] = {
    "relu": (lambda x: np.maximum(x, np.zeros((), x.dtype)), False),
    "neg": (np.negative, False),
    "abs": (np.abs, False),
    "exp": (np.exp, True),
    "log": (np.log, True),
    "sqrt": (np.sqrt, True),
    "rsqrt": (lambda x: (1.0 / np.sqrt(x.astype(np.float64))).astype(x.dtype), True),
    "reciprocal": (lambda x: (1.0 / x.astype(np.float64)).astype(x.dtype), True),
    "tanh": (np.tanh, True),
    "sigmoid": (lambda x: (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(x.dtype), True),
    "erf": (lambda x: _erf(x).astype(x.dtype), True),
}


def _unary(name: str, ref, needs_float: bool) -> OpDef:
    def infer(_at, x: TensorType) -> TensorType:
        if needs_float:
            _float_only(name, x)
        return x

    return register(OpDef(name, NoAttrs, Pattern.ELEMENTWISE, infer,
                          lambda _at, x: np.asarray(ref(x)).astype(x.dtype)))


for _name, (_ref, _needs_float) in UNARY.items():
    _unary(_name, _ref, _needs_float)


class GeluApprox(str, Enum):
    NONE = "none"   # exact: 0.5 x (1 + erf(x / sqrt 2))
    TANH = "tanh"   # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class GeluAttrs:
    approximate: GeluApprox = GeluApprox.NONE

    def __post_init__(self) -> None:
        object.__setattr__(self, "approximate", GeluApprox(self.approximate))


def _infer_gelu(_at: GeluAttrs, x: TensorType) -> TensorType:
    _float_only("gelu", x)
    return x


register(OpDef("gelu", GeluAttrs, Pattern.ELEMENTWISE, _infer_gelu,
               lambda at, x: _gelu_tanh(x) if at.approximate is GeluApprox.TANH
               else _gelu_erf(x)))


def _int_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """C semantics (truncate toward zero); x / 0 is 0, as in NumPy."""
    safe = np.where(b == 0, 1, b)
    q = np.abs(a) // np.abs(safe)
    return np.where(b == 0, 0, np.where((a < 0) ^ (safe < 0), -q, q))


# name -> reference on NumPy arrays of the common dtype.
BINARY: dict[str, object] = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "div": lambda a, b: np.divide(a, b) if a.dtype.kind == "f" else _int_div(a, b),
    "pow": lambda a, b: np.power(a.astype(np.float64), b).astype(a.dtype),
    "maximum": np.maximum,
    "minimum": np.minimum,
}
COMPARE: dict[str, object] = {
    "equal": np.equal,
    "less": np.less,
    "greater": np.greater,
}


def _same_dtype(name: str, a: TensorType, b: TensorType) -> DType:
    if a.dtype != b.dtype:
        raise ModelError(f"{name} needs inputs of one dtype, got {a.dtype} and {b.dtype}")
    return a.dtype


def _binary(name: str, ref, out_dtype: DType | None) -> None:
    def infer(_at, a: TensorType, b: TensorType) -> TensorType:
        dt = _same_dtype(name, a, b)
        return TensorType(broadcast_shapes(a.shape, b.shape), out_dtype or dt)

    def reference(_at, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        out = np.asarray(ref(a, b))
        return out.astype(out_dtype.np if out_dtype else a.dtype)

    register(OpDef(name, NoAttrs, Pattern.BROADCAST, infer, reference, num_inputs=(2, 2)))


for _name, _ref in BINARY.items():
    _binary(_name, _ref, None)
for _name, _ref in COMPARE.items():
    _binary(_name, _ref, DType.bool)


@dataclass(frozen=True)
class CastAttrs:
    dtype: DType

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", as_dtype(self.dtype))


register(OpDef("cast", CastAttrs, Pattern.ELEMENTWISE,
               lambda at, x: TensorType(x.shape, at.dtype),
               lambda at, x: x.astype(at.dtype.np)))


def _infer_where(_at, c: TensorType, a: TensorType, b: TensorType) -> TensorType:
    if c.dtype is not DType.bool:
        raise ModelError(f"where needs a bool condition, got {c.dtype}")
    dt = _same_dtype("where", a, b)
    return TensorType(broadcast_shapes(c.shape, a.shape, b.shape), dt)


register(OpDef("where", NoAttrs, Pattern.BROADCAST, _infer_where,
               lambda _at, c, a, b: np.where(c, a, b), num_inputs=(3, 3)))
