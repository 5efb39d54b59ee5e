"""int8 quantization ops: quantize, dequantize, integer GEMM and fixed-point rescaling.

    quantize(x, scale, zp)       y = saturate(round_half_even(x / scale) + zp)       (ONNX)
    dequantize(x, scale, zp)     y = (x - zp) * scale
    matmul_integer(a, b, az, bz) y = (a - az) @ (b - bz), accumulated in int32
    fixed_point_multiply(x, m, s) y = round(x * m * 2^(s - 31))  in int32 arithmetic only
    conv2d_integer(x, w, xz)     y = conv2d(x - xz, w), accumulated in int32 (w: int32, centred)
    table_lookup(x, table)       y = table[x], x int8 / uint8 indexing by its bits, table [256]

``scale`` and ``zp`` broadcast against ``x`` (per-tensor: 0-d; per-axis: a [C] vector reshaped
to [1, C, 1, 1]), or, with ``block_size`` > 0 and the rank of ``x``, are ``x``'s shape with
``axis`` divided into blocks: element ``i`` along ``axis`` reads parameter ``i // block_size``.

``fixed_point_multiply`` is how quantized add / concat / GEMM outputs move from one scale to
another without floats (TFLite and gemmlowp's ``MultiplyByQuantizedMultiplier``): a real
ratio ``r`` is stored as a Q31 multiplier ``m`` in [2^30, 2^31) and a power-of-two exponent
``s`` with ``r = m * 2^(s - 31)`` (``quantize_multiplier`` computes them at import). The
product rounds half away from zero; a left shift (``s > 0``) saturates to int32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import ml_dtypes
import numpy as np

from kiln.errors import ModelError
from kiln.ir.dtype import DType, as_dtype, convert_array
from kiln.ir.ops.conv import Conv2dAttrs, _conv2d_ref, _infer_conv2d
from kiln.ir.ops.registry import NoAttrs, OpDef, Pattern, register
from kiln.ir.types import Dim, TensorType, broadcast_shapes, normalize_axis

QUANT_DTYPES = ("int8", "uint8", "int16", "uint16", "int4", "uint4", "int2", "uint2",
                "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz",
                "float4_e2m1fn")                      # what quantize may produce
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


@dataclass(frozen=True)
class QuantAttrs:
    """``dtype``: the output dtype (quantize: the integer type; dequantize: the float type).
    ``block_size`` > 0: blocked quantization along ``axis`` (see the module docstring).
    ``saturate``: a float8 output clamps to its largest finite value (ONNX opset 19)."""

    dtype: DType
    axis: int = 0
    block_size: int = 0
    saturate: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", as_dtype(self.dtype))
        object.__setattr__(self, "axis", int(self.axis))
        object.__setattr__(self, "block_size", int(self.block_size))
        if self.block_size < 0:
            raise ModelError(f"block_size={self.block_size} must be >= 0")


def quant_range(dtype: DType | str) -> tuple[int, int]:
    """The integer range an output of ``dtype`` saturates to."""
    info = ml_dtypes.iinfo(as_dtype(dtype).np)
    return int(info.min), int(info.max)


def calc_dtype(*dtypes: DType) -> str:
    """The float type the scale arithmetic runs in: float64 when an operand is float64 or
    int32 (float32 would round large integers), float32 otherwise (float16 included, as
    onnxruntime does)."""
    wide = any(d in (DType.float64, DType.int32) for d in dtypes)
    return "float64" if wide else "float32"


def _check_param(op: str, what: str, p: TensorType, x: TensorType, at: QuantAttrs) -> None:
    """``p`` (a scale or zero point) must broadcast to ``x``, or be ``x`` blocked on ``axis``
    (a 0-d ``p`` serves every block)."""
    if at.block_size == 0 or p.rank == 0:
        try:
            ok = broadcast_shapes(p.shape, x.shape) == x.shape
        except ModelError:
            ok = False
        if not ok:
            raise ModelError(f"{op}: {what} {p} does not broadcast to the input {x}")
        return
    axis = normalize_axis(at.axis, x.rank)
    want: list[Dim] = list(x.shape)
    d = x.shape[axis]
    want[axis] = -(-d // at.block_size) if isinstance(d, int) else p.shape[axis]
    if p.rank != x.rank or any(isinstance(a, int) and isinstance(b, int) and a != b
                               for a, b in zip(p.shape, want, strict=True)):
        raise ModelError(f"{op}: blocked {what} {p} must be the input {x} with axis {axis} "
                         f"in blocks of {at.block_size}")


def expand_param(p: np.ndarray, shape: tuple[int, ...], at: QuantAttrs) -> np.ndarray:
    """A scale or zero point as a full array of ``shape`` (blocks repeated)."""
    if at.block_size and p.ndim:
        axis = normalize_axis(at.axis, len(shape))
        p = np.repeat(p, at.block_size, axis=axis).take(range(shape[axis]), axis=axis)
    return np.broadcast_to(p, shape)


# -- quantize -----------------------------------------------------------------------------------
def _infer_quantize(at: QuantAttrs, x: TensorType, scale: TensorType,
                    zp: TensorType) -> TensorType:
    if at.dtype.value not in QUANT_DTYPES:
        raise ModelError(f"quantize to {at.dtype} is not supported "
                         f"(kiln quantizes to {', '.join(QUANT_DTYPES)})")
    if not (x.dtype.is_float or x.dtype is DType.int32) or not scale.dtype.is_float:
        raise ModelError(f"quantize needs a float or int32 input and a float scale, got "
                         f"{x.dtype} and {scale.dtype}")
    if zp.dtype != at.dtype:
        raise ModelError(f"quantize to {at.dtype} needs a zero point of that dtype, got "
                         f"{zp.dtype}")
    _check_param("quantize", "scale", scale, x, at)
    _check_param("quantize", "zero point", zp, x, at)
    return TensorType(x.shape, at.dtype)


def _quantize_ref(at: QuantAttrs, x: np.ndarray, scale: np.ndarray,
                  zp: np.ndarray) -> np.ndarray:
    calc = calc_dtype(as_dtype(x.dtype), as_dtype(scale.dtype))
    s = expand_param(scale, x.shape, at).astype(calc)
    z = expand_param(zp, x.shape, at).astype(calc)
    if at.dtype.is_float:     # float8: x / scale, cast (ONNX's reference); float4 adds zp
        with np.errstate(all="ignore"):
            q = x.astype(calc) / s + (z if at.dtype is DType.float4_e2m1fn else 0)
        return convert_array(q, at.dtype, at.saturate)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.rint(x.astype(calc) / s) + z          # np.rint rounds half to even
    lo, hi = quant_range(at.dtype)
    return np.clip(np.nan_to_num(q), lo, hi).astype(at.dtype.np)


register(OpDef("quantize", QuantAttrs, Pattern.BROADCAST, _infer_quantize, _quantize_ref,
               num_inputs=(3, 3)))


# -- dequantize ---------------------------------------------------------------------------------
def _infer_dequantize(at: QuantAttrs, x: TensorType, scale: TensorType,
                      zp: TensorType) -> TensorType:
    if not at.dtype.is_float or not scale.dtype.is_float:
        raise ModelError(f"dequantize needs a float scale and output, got {scale.dtype} and "
                         f"{at.dtype}")
    if (x.dtype.is_float and not x.dtype.is_bits) or x.dtype is DType.bool:
        raise ModelError(f"dequantize needs an integer or narrow float input, got {x.dtype}")
    if zp.dtype != x.dtype:
        raise ModelError(f"dequantize of {x.dtype} needs a zero point of that dtype, got "
                         f"{zp.dtype}")
    _check_param("dequantize", "scale", scale, x, at)
    _check_param("dequantize", "zero point", zp, x, at)
    return TensorType(x.shape, at.dtype)


def _dequantize_ref(at: QuantAttrs, x: np.ndarray, scale: np.ndarray,
                    zp: np.ndarray) -> np.ndarray:
    calc = calc_dtype(as_dtype(scale.dtype))
    z = expand_param(zp, x.shape, at).astype(calc)
    s = expand_param(scale, x.shape, at).astype(calc)
    return ((x.astype(calc) - z) * s).astype(at.dtype.np)


register(OpDef("dequantize", QuantAttrs, Pattern.BROADCAST, _infer_dequantize, _dequantize_ref,
               num_inputs=(3, 3)))


# -- matmul_integer -----------------------------------------------------------------------------
def _fits(p: TensorType, shape: tuple[Dim, ...]) -> bool:
    try:
        return broadcast_shapes(p.shape, shape) == tuple(shape)
    except ModelError:
        return False


def _infer_matmul_integer(_at, a: TensorType, b: TensorType, az: TensorType,
                          bz: TensorType) -> TensorType:
    if a.rank < 2 or b.rank < 2:
        raise ModelError(f"matmul_integer needs inputs of rank >= 2, got {a} and {b}")
    for t in (a, b):
        if t.dtype.value not in ("int8", "uint8"):
            raise ModelError(f"matmul_integer needs int8 or uint8 operands, got {t.dtype}")
    if az.dtype != a.dtype or bz.dtype != b.dtype:
        raise ModelError(f"matmul_integer zero points must have their operands' dtypes, got "
                         f"{az.dtype} for {a.dtype} and {bz.dtype} for {b.dtype}")
    ka, kb = a.shape[-1], b.shape[-2]
    if ka != kb and isinstance(ka, int) and isinstance(kb, int):
        raise ModelError(f"matmul_integer: contraction dims differ ({ka} vs {kb})")
    # a's zero point is per row (broadcast over K), b's per column (broadcast over K)
    if not _fits(az, (*a.shape[:-1], 1)):
        raise ModelError(f"matmul_integer: a's zero point {az} must be a scalar or one per "
                         f"row of {a} (shape [..., M, 1])")
    if not _fits(bz, (*b.shape[:-2], 1, b.shape[-1])):
        raise ModelError(f"matmul_integer: b's zero point {bz} must be a scalar or one per "
                         f"column of {b} (shape [..., 1, N])")
    batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
    return TensorType((*batch, a.shape[-2], b.shape[-1]), DType.int32)


def _matmul_integer_ref(_at, a: np.ndarray, b: np.ndarray, az: np.ndarray,
                        bz: np.ndarray) -> np.ndarray:
    a64 = a.astype(np.int64) - az.astype(np.int64)
    b64 = b.astype(np.int64) - bz.astype(np.int64)
    return np.matmul(a64, b64).astype(np.int32)      # wraps as an int32 accumulator would


register(OpDef("matmul_integer", NoAttrs, Pattern.OUT_FUSABLE, _infer_matmul_integer,
               _matmul_integer_ref, num_inputs=(4, 4)))


# -- fixed-point rescaling ----------------------------------------------------------------------
def quantize_multiplier(ratio: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Each positive real ``ratio`` as a Q31 multiplier and an exponent (int32 arrays of its
    shape): ``ratio ~= m * 2^(s - 31)`` with ``m`` in [2^30, 2^31) (TFLite's
    ``QuantizeMultiplier``). A ratio too small for the int32 range gives ``m = 0``."""
    r = np.asarray(ratio, dtype=np.float64)
    if not np.all(np.isfinite(r)) or np.any(r < 0):
        raise ModelError(f"requantization ratio {r.reshape(-1)[:4]} must be finite and >= 0")
    m = np.zeros(r.shape, np.int64)
    s = np.zeros(r.shape, np.int64)
    for idx, v in np.ndenumerate(r):
        if v == 0.0:
            continue
        frac, exp = math.frexp(float(v))          # v = frac * 2^exp, frac in [0.5, 1)
        q = round(frac * (1 << 31))
        if q == 1 << 31:                          # frac rounded up to 1.0
            q, exp = q // 2, exp + 1
        if exp < -31:                             # below what a right shift can reach
            q, exp = 0, 0
        if exp > 30:
            raise ModelError(f"requantization ratio {v} is too large for int32 arithmetic")
        m[idx], s[idx] = q, exp
    return m.astype(np.int32), s.astype(np.int32)


FRACTION_BITS = 20   # at most as many fractional bits as TFLite's quantized add keeps


def requantize_steps(ratio: np.ndarray | float,
                     bound: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (multiplier, shift) pairs whose ``fixed_point_multiply``, applied in turn, give
    ``round(x * ratio)`` for int32 ``|x| <= bound``.

    One step rounds twice for a ratio below 1/2: the rounding doubling high multiply keeps
    only the integer part of ``x * m / 2^31``, then the right shift rounds again (x = 1 at a
    ratio of 0.3 gives 1, not 0). So where ``x * ratio`` has headroom in int32, the first step
    also scales by ``2^L`` (``L`` fractional bits, as TFLite's quantized add shifts its inputs
    left by 20) and a second step divides them off: the result is then off by one only within
    ``2^-L`` of a tie."""
    r = np.asarray(ratio, dtype=np.float64)
    peak = float(r.max()) * max(int(bound), 1)
    frac = min(FRACTION_BITS, int(np.floor(np.log2(2.0**30 / peak)))) if peak > 0 else 0
    if frac < 2:
        return [quantize_multiplier(r)]
    return [quantize_multiplier(r * 2.0**frac), quantize_multiplier(np.array(2.0**-frac))]


def fixed_point_multiply_ref(x: np.ndarray, m: np.ndarray, s: np.ndarray) -> np.ndarray:
    """gemmlowp's ``MultiplyByQuantizedMultiplier`` in NumPy int64, element by element:
    saturating left shift, rounding doubling high multiply, rounding right shift."""
    x64, m64, s64 = np.broadcast_arrays(x.astype(np.int64), m.astype(np.int64),
                                        s.astype(np.int64))
    left, right = np.maximum(s64, 0), np.maximum(-s64, 0)
    xs = np.clip(x64 << left, INT32_MIN, INT32_MAX)
    prod = xs * m64
    nudge = np.where(prod >= 0, 1 << 30, 1 - (1 << 30))
    total = prod + nudge
    high = np.where(total >= 0, total >> 31, -((-total) >> 31))   # C: truncate toward zero
    high = np.where((xs == INT32_MIN) & (m64 == INT32_MIN), INT32_MAX, high)
    mask = (np.int64(1) << right) - 1
    threshold = (mask >> 1) + (high < 0)
    out = (high >> right) + ((high & mask) > threshold)
    return out.astype(np.int32)


def _infer_fixed_point_multiply(_at, x: TensorType, m: TensorType,
                                s: TensorType) -> TensorType:
    for what, t in (("input", x), ("multiplier", m), ("shift", s)):
        if t.dtype is not DType.int32:
            raise ModelError(f"fixed_point_multiply needs an int32 {what}, got {t.dtype}")
    return TensorType(broadcast_shapes(x.shape, m.shape, s.shape), DType.int32)


register(OpDef("fixed_point_multiply", NoAttrs, Pattern.BROADCAST, _infer_fixed_point_multiply,
               lambda _at, x, m, s: fixed_point_multiply_ref(x, m, s), num_inputs=(3, 3)))

# -- conv2d_integer -----------------------------------------------------------------------------
# ONNX ConvInteger / QLinearConv: ``x`` (uint8 or int8) minus its zero point ``xz`` (0-d), so
# the zero padding of the convolution is padding with the zero point, as onnxruntime pads;
# ``w`` is the weight minus its zero point, int32 (a constant folds it at import). One op, not
# cast + sub + conv2d, so that the kernel reads the bytes (a quarter of the int32 traffic) and
# a constant weight that fits int8 can run on a dot-product instruction.
def _infer_conv2d_integer(at: Conv2dAttrs, x: TensorType, w: TensorType,
                          xz: TensorType) -> TensorType:
    if x.dtype.value not in ("int8", "uint8") or w.dtype is not DType.int32:
        raise ModelError(f"conv2d_integer needs an int8 or uint8 input and an int32 (centred) "
                         f"weight, got {x.dtype} and {w.dtype}")
    if xz.dtype != x.dtype or xz.rank != 0:
        raise ModelError(f"conv2d_integer: the input's zero point must be a 0-d {x.dtype}, "
                         f"got {xz}")
    out = _infer_conv2d(at, TensorType(x.shape, DType.int32), w)
    return TensorType(out.shape, DType.int32)


def _conv2d_integer_ref(at: Conv2dAttrs, x: np.ndarray, w: np.ndarray,
                        xz: np.ndarray) -> np.ndarray:
    centred = x.astype(np.int64) - xz.astype(np.int64)
    return _conv2d_ref(at, centred, w.astype(np.int64)).astype(np.int32)


register(OpDef("conv2d_integer", Conv2dAttrs, Pattern.OUT_FUSABLE, _infer_conv2d_integer,
               _conv2d_integer_ref, num_inputs=(3, 3)))

# -- table_lookup -------------------------------------------------------------------------------
# Any function of one byte is a table of 256 entries. A quantized model computes many: QDQ
# activations (HardSwish as dequantize, add 3, quantize, multiply, divide by 6, quantize, each
# through its own scale) map the bytes of a convolution's output to the bytes of the next
# one's input. ``kiln.ir.passes.tabulate`` evaluates such chains at compile time, with the
# reference of each op, into one ``table_lookup``: the same bytes, one load per element. The
# index is the byte's bit pattern (an int8 -1 reads entry 255).
TABLE_INDEX_DTYPES = ("int8", "uint8")


def _infer_table_lookup(_at, x: TensorType, table: TensorType) -> TensorType:
    if x.dtype.value not in TABLE_INDEX_DTYPES:
        raise ModelError(f"table_lookup needs an int8 or uint8 index, got {x.dtype}")
    if table.shape != (256,):
        raise ModelError(f"table_lookup needs a table of 256 entries, got {table}")
    return TensorType(x.shape, table.dtype)


def _table_lookup_ref(_at, x: np.ndarray, table: np.ndarray) -> np.ndarray:
    return table[np.asarray(x).astype(np.uint8)]         # int8 -> its bit pattern


register(OpDef("table_lookup", NoAttrs, Pattern.OPAQUE, _infer_table_lookup, _table_lookup_ref,
               num_inputs=(2, 2)))

__all__ = ["FRACTION_BITS", "INT32_MAX", "INT32_MIN", "QUANT_DTYPES", "QuantAttrs",
           "calc_dtype", "expand_param", "fixed_point_multiply_ref", "quant_range",
           "quantize_multiplier", "requantize_steps", "TABLE_INDEX_DTYPES"]
