"""Elementwise and broadcasting ops: unary math, activations, binary arithmetic, comparisons,
bitwise and logical ops, cast, where.

Each family is a table from op name to its NumPy reference and the dtypes it accepts, so adding
an op is one line here plus one line in ``schedules/compute/elementwise.py``. References follow
the ONNX reference implementation (``onnx.reference``): they are the oracle the compiled
kernels are tested against.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import numpy as np

from kiln.errors import ModelError
from kiln.ir.dtype import DType, as_dtype, convert_array
from kiln.ir.ops.registry import NoAttrs, OpDef, Pattern, register
from kiln.ir.types import TensorType, broadcast_shapes

_erf = np.vectorize(math.erf, otypes=[np.float64])


class Kinds(Enum):
    """The dtypes an op accepts."""

    FLOAT = "a floating-point"
    NUMERIC = "a numeric (not bool)"
    INT = "an integer"
    BOOL = "a bool"
    ANY = "any"

    def accepts(self, dt: DType) -> bool:
        if self is Kinds.FLOAT:
            return dt.is_float
        if self is Kinds.NUMERIC:
            return dt is not DType.bool
        if self is Kinds.INT:
            return dt.is_int
        if self is Kinds.BOOL:
            return dt is DType.bool
        return True


def _check(name: str, kinds: Kinds, t: TensorType) -> None:
    if not kinds.accepts(t.dtype):
        raise ModelError(f"{name} needs {kinds.value} input, got {t.dtype}")


def _float_only(name: str, t: TensorType) -> None:
    _check(name, Kinds.FLOAT, t)


def _f64(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """``fn`` computed in float64 and rounded back to the input's dtype."""
    return lambda x: np.asarray(fn(x.astype(np.float64))).astype(x.dtype)


def _gelu_erf(x: np.ndarray) -> np.ndarray:
    x64 = x.astype(np.float64)
    return (0.5 * x64 * (1.0 + _erf(x64 / math.sqrt(2.0)))).astype(x.dtype)


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    x64 = x.astype(np.float64)
    inner = math.sqrt(2.0 / math.pi) * (x64 + 0.044715 * x64**3)
    return (0.5 * x64 * (1.0 + np.tanh(inner))).astype(x.dtype)


def _mish(x: np.ndarray) -> np.ndarray:
    return x * np.tanh(np.logaddexp(0.0, x))


def _sign(x: np.ndarray) -> np.ndarray:
    return np.sign(x) if x.dtype.kind != "u" else (x > 0).astype(x.dtype)


def _abs(x: np.ndarray) -> np.ndarray:
    return x if x.dtype.kind == "u" else np.abs(x)


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, np.zeros((), x.dtype))


# name -> (reference, accepted dtypes). References compute in float64 where it matters.
UNARY: dict[str, tuple[Callable[[np.ndarray], np.ndarray], Kinds]] = {
    "relu": (_relu, Kinds.NUMERIC),
    "neg": (np.negative, Kinds.NUMERIC),
    "abs": (_abs, Kinds.NUMERIC),
    "sign": (_sign, Kinds.NUMERIC),
    "exp": (np.exp, Kinds.FLOAT),
    "log": (np.log, Kinds.FLOAT),
    "sqrt": (np.sqrt, Kinds.FLOAT),
    "rsqrt": (_f64(lambda x: 1.0 / np.sqrt(x)), Kinds.FLOAT),
    "reciprocal": (_f64(lambda x: 1.0 / x), Kinds.FLOAT),
    "tanh": (np.tanh, Kinds.FLOAT),
    "sigmoid": (_f64(lambda x: 1.0 / (1.0 + np.exp(-x))), Kinds.FLOAT),
    "erf": (lambda x: _erf(x).astype(x.dtype), Kinds.FLOAT),
    "floor": (np.floor, Kinds.FLOAT),
    "ceil": (np.ceil, Kinds.FLOAT),
    "round": (np.round, Kinds.FLOAT),             # half to even, as ONNX Round
    "sin": (np.sin, Kinds.FLOAT),
    "cos": (np.cos, Kinds.FLOAT),
    "tan": (np.tan, Kinds.FLOAT),
    "asin": (np.arcsin, Kinds.FLOAT),
    "acos": (np.arccos, Kinds.FLOAT),
    "atan": (np.arctan, Kinds.FLOAT),
    "sinh": (np.sinh, Kinds.FLOAT),
    "cosh": (np.cosh, Kinds.FLOAT),
    "asinh": (np.arcsinh, Kinds.FLOAT),
    "acosh": (np.arccosh, Kinds.FLOAT),
    "atanh": (np.arctanh, Kinds.FLOAT),
    "softplus": (_f64(lambda x: np.logaddexp(0.0, x)), Kinds.FLOAT),
    "softsign": (_f64(lambda x: x / (1.0 + np.abs(x))), Kinds.FLOAT),
    "mish": (_f64(_mish), Kinds.FLOAT),
    "hard_swish": (_f64(lambda x: x * np.clip(x / 6 + 0.5, 0, 1)), Kinds.FLOAT),
    "bitwise_not": (np.invert, Kinds.INT),
    "logical_not": (np.logical_not, Kinds.BOOL),
}
# name -> (reference, accepted dtypes); the result is bool.
PREDICATES: dict[str, tuple[Callable[[np.ndarray], np.ndarray], Kinds]] = {
    "is_nan": (np.isnan, Kinds.FLOAT),
}


def _unary(name: str, ref: Callable[[np.ndarray], np.ndarray], kinds: Kinds,
           out_dtype: DType | None = None) -> OpDef:
    def infer(_at, x: TensorType) -> TensorType:
        _check(name, kinds, x)
        return TensorType(x.shape, out_dtype or x.dtype)

    def reference(_at, x: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):    # NaN and inf results are the ONNX semantics
            return np.asarray(ref(x)).astype(out_dtype.np if out_dtype else x.dtype)

    return register(OpDef(name, NoAttrs, Pattern.ELEMENTWISE, infer, reference))


for _name, (_ref, _kinds) in UNARY.items():
    _unary(_name, _ref, _kinds)
for _name, (_ref, _kinds) in PREDICATES.items():
    _unary(_name, _ref, _kinds, DType.bool)


# -- activations with parameters ------------------------------------------------------------
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


@dataclass(frozen=True)
class AlphaAttrs:
    """The one coefficient of leaky_relu (slope), elu, celu, thresholded_relu (threshold) and
    swish (``x sigmoid(alpha x)``)."""

    alpha: float = 1.0


@dataclass(frozen=True)
class SeluAttrs:
    alpha: float = 1.6732632423543772
    gamma: float = 1.0507009873554805


@dataclass(frozen=True)
class HardSigmoidAttrs:
    alpha: float = 0.2
    beta: float = 0.5


@dataclass(frozen=True)
class ShrinkAttrs:
    bias: float = 0.0
    lambd: float = 0.5


@dataclass(frozen=True)
class IsInfAttrs:
    detect_positive: bool = True
    detect_negative: bool = True


def _elu(at: AlphaAttrs, x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x, at.alpha * np.expm1(x))


def _celu(at: AlphaAttrs, x: np.ndarray) -> np.ndarray:
    return np.maximum(0, x) + np.minimum(0, at.alpha * np.expm1(x / at.alpha))


def _selu(at: SeluAttrs, x: np.ndarray) -> np.ndarray:
    return at.gamma * np.where(x > 0, x, at.alpha * np.expm1(x))


def _shrink(at: ShrinkAttrs, x: np.ndarray) -> np.ndarray:
    # integers too: computed in float64, then truncated back as onnx.reference does
    return np.where(x < -at.lambd, x + at.bias, np.where(x > at.lambd, x - at.bias, 0))


def _is_inf(at: IsInfAttrs, x: np.ndarray) -> np.ndarray:
    return ((x == np.inf) & at.detect_positive) | ((x == -np.inf) & at.detect_negative)


# name -> (attributes, reference on float64 (or the input's ints), accepted dtypes, out dtype)
ACTIVATIONS: dict[str, tuple[type, Callable, Kinds, DType | None]] = {
    "leaky_relu": (AlphaAttrs, lambda at, x: np.where(x < 0, at.alpha * x, x), Kinds.FLOAT,
                   None),
    "elu": (AlphaAttrs, _elu, Kinds.FLOAT, None),
    "celu": (AlphaAttrs, _celu, Kinds.FLOAT, None),
    "selu": (SeluAttrs, _selu, Kinds.FLOAT, None),
    "thresholded_relu": (AlphaAttrs, lambda at, x: np.where(x > at.alpha, x, 0), Kinds.FLOAT,
                         None),
    "hard_sigmoid": (HardSigmoidAttrs,
                     lambda at, x: np.clip(at.alpha * x + at.beta, 0, 1), Kinds.FLOAT, None),
    "swish": (AlphaAttrs, lambda at, x: x / (1.0 + np.exp(-at.alpha * x)), Kinds.FLOAT, None),
    "shrink": (ShrinkAttrs, _shrink, Kinds.NUMERIC, None),
    "is_inf": (IsInfAttrs, _is_inf, Kinds.FLOAT, DType.bool),
}


def _activation(name: str, attrs: type, ref: Callable, kinds: Kinds,
                out_dtype: DType | None) -> None:
    def infer(_at, x: TensorType) -> TensorType:
        _check(name, kinds, x)
        return TensorType(x.shape, out_dtype or x.dtype)

    def reference(at, x: np.ndarray) -> np.ndarray:
        wide = x.astype(np.float64) if x.dtype.kind == "f" else x
        with np.errstate(all="ignore"):
            return np.asarray(ref(at, wide)).astype(out_dtype.np if out_dtype else x.dtype)

    register(OpDef(name, attrs, Pattern.ELEMENTWISE, infer, reference))


for _name, (_attrs, _ref, _kinds, _out) in ACTIVATIONS.items():
    _activation(_name, _attrs, _ref, _kinds, _out)


# -- binary ops (NumPy broadcasting) -----------------------------------------------------------
def _int_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """C semantics (truncate toward zero); x / 0 is 0, as in NumPy."""
    safe = np.where(b == 0, 1, b)
    q = np.abs(a) // np.abs(safe) if a.dtype.kind != "u" else a // safe
    return np.where(b == 0, 0, np.where((a < 0) ^ (safe < 0), -q, q))


def _shift(direction: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Shifts by a count outside [0, bits) give 0 (left) or the sign fill (right), as
    onnx.reference does; in range they are NumPy's (a left shift of a signed int wraps)."""
    def ref(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a, b = np.broadcast_arrays(a, b)
        bits = a.dtype.itemsize * 8
        valid = (b >= 0) & (b < bits)
        count = np.where(valid, b, 0).astype(a.dtype)
        if direction == "left":
            u = np.dtype(f"u{a.dtype.itemsize}")
            shifted = np.left_shift(a.view(u), count.view(u)).view(a.dtype)
            return np.where(valid, shifted, 0)
        fill = np.where(a < 0, -1, 0) if a.dtype.kind == "i" else np.zeros_like(a)
        return np.where(valid, np.right_shift(a, count), fill)
    return ref


# name -> (reference on NumPy arrays of the common dtype, accepted dtypes).
BINARY: dict[str, tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], Kinds]] = {
    "add": (np.add, Kinds.NUMERIC),
    "sub": (np.subtract, Kinds.NUMERIC),
    "mul": (np.multiply, Kinds.NUMERIC),
    "div": (lambda a, b: np.divide(a, b) if a.dtype.kind == "f" else _int_div(a, b),
            Kinds.NUMERIC),
    "pow": (lambda a, b: np.power(a.astype(np.float64), b).astype(a.dtype), Kinds.NUMERIC),
    "maximum": (np.maximum, Kinds.NUMERIC),
    "minimum": (np.minimum, Kinds.NUMERIC),
    "prelu": (lambda a, b: np.where(a < 0, a * b, a), Kinds.NUMERIC),
    "shift_left": (_shift("left"), Kinds.INT),
    "shift_right": (_shift("right"), Kinds.INT),
    "bitwise_and": (np.bitwise_and, Kinds.INT),
    "bitwise_or": (np.bitwise_or, Kinds.INT),
    "bitwise_xor": (np.bitwise_xor, Kinds.INT),
    "logical_and": (np.logical_and, Kinds.BOOL),
    "logical_or": (np.logical_or, Kinds.BOOL),
    "logical_xor": (np.logical_xor, Kinds.BOOL),
}
# name -> (reference, accepted dtypes); the result is bool.
COMPARE: dict[str, tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], Kinds]] = {
    "equal": (np.equal, Kinds.ANY),
    "less": (np.less, Kinds.NUMERIC),
    "less_equal": (np.less_equal, Kinds.NUMERIC),
    "greater": (np.greater, Kinds.NUMERIC),
    "greater_equal": (np.greater_equal, Kinds.NUMERIC),
}


def _same_dtype(name: str, a: TensorType, b: TensorType) -> DType:
    if a.dtype != b.dtype:
        raise ModelError(f"{name} needs inputs of one dtype, got {a.dtype} and {b.dtype}")
    return a.dtype


def _binary(name: str, ref: Callable, kinds: Kinds, out_dtype: DType | None,
            attrs: type = NoAttrs) -> None:
    def infer(_at, a: TensorType, b: TensorType) -> TensorType:
        dt = _same_dtype(name, a, b)
        _check(name, kinds, a)
        return TensorType(broadcast_shapes(a.shape, b.shape), out_dtype or dt)

    def reference(at, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            out = np.asarray(ref(a, b) if attrs is NoAttrs else ref(at, a, b))
        return out.astype(out_dtype.np if out_dtype else a.dtype)

    register(OpDef(name, attrs, Pattern.BROADCAST, infer, reference, num_inputs=(2, 2)))


for _name, (_ref, _kinds) in BINARY.items():
    _binary(_name, _ref, _kinds, None)
for _name, (_ref, _kinds) in COMPARE.items():
    _binary(_name, _ref, _kinds, DType.bool)


@dataclass(frozen=True)
class ModAttrs:
    """``fmod=False``: the remainder takes the divisor's sign (Python's ``%``, ``np.mod``);
    ``fmod=True``: the dividend's (C's ``fmod`` and ``%``). Integer x mod 0 is 0, as NumPy."""

    fmod: bool = False


def _mod(at: ModAttrs, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind == "f":
        return np.fmod(a, b) if at.fmod else np.mod(a, b)
    safe = np.where(b == 0, 1, b)
    r = np.fmod(a, safe) if at.fmod else np.mod(a, safe)
    return np.where(b == 0, 0, r)


_binary("mod", _mod, Kinds.NUMERIC, None, ModAttrs)


# -- cast, where --------------------------------------------------------------------------------
@dataclass(frozen=True)
class CastAttrs:
    """``saturate`` (ONNX opset 19): a float8 target clamps out-of-range values to its largest
    finite value instead of giving infinity or NaN."""

    dtype: DType
    saturate: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", as_dtype(self.dtype))
        object.__setattr__(self, "saturate", bool(self.saturate))


def _cast(at: CastAttrs, x: np.ndarray) -> np.ndarray:
    return convert_array(x, at.dtype, at.saturate)


register(OpDef("cast", CastAttrs, Pattern.ELEMENTWISE,
               lambda at, x: TensorType(x.shape, at.dtype), _cast))


def _infer_where(_at, c: TensorType, a: TensorType, b: TensorType) -> TensorType:
    if c.dtype is not DType.bool:
        raise ModelError(f"where needs a bool condition, got {c.dtype}")
    dt = _same_dtype("where", a, b)
    return TensorType(broadcast_shapes(c.shape, a.shape, b.shape), dt)


register(OpDef("where", NoAttrs, Pattern.BROADCAST, _infer_where,
               lambda _at, c, a, b: np.where(c, a, b), num_inputs=(3, 3)))
