"""Conversions to and from the bit types (float8, float4, int4, int2) in integer arithmetic.

A kernel holds a bit type in the byte type of ``DType.storage``: int4 / int2 as their value
sign-extended in an int8 (uint4 / uint2 in a uint8), a narrow float as its encoding in a
uint8. TVM's own float8 casts are wrong on LLVM CPUs, so the codecs below are written out:

- encode (float32 -> narrow float): split the float32 bits into sign, exponent and the 24-bit
  significand; shift the significand right so that ``M`` fraction bits stay (more for values
  below the normal range: that is the subnormal encoding), round half to even on the bits
  shifted out, and add the exponent field. A carry out of the significand moves into the
  exponent field by itself. Overflow becomes the type's NaN or infinity as ml_dtypes does
  (saturation clamps in float before encoding, as ONNX's reference does).
- decode: the exponent and fraction fields placed into float32 bits (normals) or the fraction
  times the smallest subnormal (subnormals); then the type's NaN / infinity codes.

The NumPy oracle is ml_dtypes (``x.astype(ml_dtypes.float8_e4m3fn)``); encodings match it bit
for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ml_dtypes
from tvm import tirx

from kiln.ir.dtype import DType
from kiln.schedules.compute.registry import const


@dataclass(frozen=True)
class FloatFormat:
    """A narrow float: ``exp`` exponent bits, ``man`` fraction bits, exponent ``bias``, and
    how it spells the values float32 has and it lacks."""

    exp: int
    man: int
    bias: int
    overflow: int       # the magnitude code after the largest finite one (inf or NaN; float4
                        # has neither: its largest finite code, so overflow saturates)
    nan: int            # code of NaN (ORed with the sign unless unsigned_nan)
    unsigned_nan: bool  # fnuz: one NaN code (0x80) and no negative zero
    nan_sign_flip: bool = False   # float4_e2m1fn: ml_dtypes maps NaN to a zero of flipped sign

    @property
    def sign_bit(self) -> int:
        return 1 << (self.exp + self.man)


FORMATS: dict[DType, FloatFormat] = {
    DType.float8_e4m3fn: FloatFormat(4, 3, 7, 0x7F, 0x7F, False),
    DType.float8_e4m3fnuz: FloatFormat(4, 3, 8, 0x80, 0x80, True),
    DType.float8_e5m2: FloatFormat(5, 2, 15, 0x7C, 0x7E, False),
    DType.float8_e5m2fnuz: FloatFormat(5, 2, 16, 0x80, 0x80, True),
    DType.float4_e2m1fn: FloatFormat(2, 1, 1, 0x7, 0x0, False, nan_sign_flip=True),
}


def _i32(v: int) -> Any:
    return const(v, "int32")


def _f32_bits(bits: Any) -> Any:
    return tirx.reinterpret("float32", bits)


def encode(f: Any, dtype: DType) -> Any:
    """A float32 expression as the uint8 code of the narrow float ``dtype`` (round half to
    even; out-of-range values give the type's infinity or NaN). Each intermediate is read
    once or twice: a TE expression is a tree, so every extra read copies a subtree."""
    fmt = FORMATS[dtype]
    emin = 1 - fmt.bias
    top = _i32(fmt.exp + fmt.man)                       # the sign bit's position
    u = tirx.reinterpret("int32", f)
    sign = tirx.bitwise_and(tirx.shift_right(u, _i32(31)), _i32(1))
    a = tirx.bitwise_and(u, _i32(0x7FFFFFFF))
    e = tirx.shift_right(a, _i32(23)) - 127
    sig = tirx.bitwise_or(tirx.bitwise_and(a, _i32(0x7FFFFF)), _i32(0x800000))
    # keep `man` fraction bits; below the normal range fewer (the subnormal encoding)
    shift = tirx.min(_i32(23 - fmt.man) + tirx.max(_i32(emin) - e, _i32(0)), _i32(31))
    # round half to even: add half an ulp less one, plus the kept lowest bit, then truncate
    lsb = tirx.bitwise_and(tirx.shift_right(sig, shift), _i32(1))
    q = tirx.shift_right(sig + tirx.shift_left(_i32(1), shift - 1) - 1 + lsb, shift)
    # a carry out of the significand moves into the exponent field by itself; past the
    # largest finite value comes the type's infinity / NaN code (``overflow``)
    mag = tirx.min(tirx.shift_left(tirx.max(e - emin, _i32(0)), _i32(fmt.man)) + q,
                   _i32(fmt.overflow))
    is_nan = a > 0x7F800000
    if fmt.unsigned_nan:          # one zero and one NaN: no sign on either
        signed = tirx.Select(tirx.Or(mag == 0, mag == fmt.overflow), _i32(0), sign)
        code = tirx.Select(is_nan, _i32(fmt.nan),
                           tirx.bitwise_or(mag, tirx.shift_left(signed, top)))
    elif fmt.nan_sign_flip:
        code = tirx.Select(is_nan, tirx.shift_left(1 - sign, top),
                           tirx.bitwise_or(mag, tirx.shift_left(sign, top)))
    else:
        code = tirx.bitwise_or(tirx.Select(is_nan, _i32(fmt.nan), mag),
                               tirx.shift_left(sign, top))
    return code.astype("uint8")


def decode(code: Any, dtype: DType) -> Any:
    """The uint8 code of the narrow float ``dtype`` as a float32 expression (exact)."""
    fmt = FORMATS[dtype]
    c = code.astype("int32")
    sign_bit = fmt.sign_bit
    mag = tirx.bitwise_and(c, _i32(sign_bit - 1))
    ef = tirx.shift_right(mag, _i32(fmt.man))
    mf = tirx.bitwise_and(mag, _i32((1 << fmt.man) - 1))
    normal = _f32_bits(tirx.bitwise_or(tirx.shift_left(ef + (127 - fmt.bias), _i32(23)),
                                       tirx.shift_left(mf, _i32(23 - fmt.man))))
    sub = mf.astype("float32") * const(2.0 ** (1 - fmt.bias - fmt.man), "float32")
    v = tirx.Select(ef == 0, sub, normal)
    v = tirx.Select(tirx.bitwise_and(c, _i32(sign_bit)) != 0, -v, v)
    nan, inf = _f32_bits(_i32(0x7FC00000)), _f32_bits(_i32(0x7F800000))
    if fmt.unsigned_nan:
        return tirx.Select(c == fmt.nan, nan, v)
    if dtype is DType.float8_e4m3fn:
        return tirx.Select(mag == fmt.nan, nan, v)
    if dtype is DType.float8_e5m2:
        top = ef == (1 << fmt.exp) - 1
        special = tirx.Select(mf == 0, tirx.Select(v < 0, -inf, inf), nan)
        return tirx.Select(top, special, v)
    return v                       # float4_e2m1fn: every code is finite


def _wrap(i: Any, dtype: DType) -> Any:
    """An int64 ``i`` reduced modulo 2^bits into ``dtype``'s range (two's complement)."""
    mask = const((1 << dtype.bits) - 1, "int64")
    if dtype.is_unsigned:
        return tirx.bitwise_and(i, mask)
    half = const(1 << (dtype.bits - 1), "int64")
    return tirx.bitwise_and(i + half, mask) - half


def convert(v: Any, src: DType, dst: DType, saturate: bool = True) -> Any:
    """``v`` (an expression of ``src.storage``) converted to ``dst``, as an expression of
    ``dst.storage``: NumPy / ml_dtypes semantics (floats truncate toward zero into integers,
    narrow integers wrap), with ONNX's ``saturate`` for float8 targets."""
    if src in FORMATS:
        v, src = decode(v, src), DType.float32
    if dst in FORMATS:
        f = v if src is DType.float32 else v.astype("float32")
        if saturate and dst is not DType.float4_e2m1fn:
            hi = float(ml_dtypes.finfo(dst.np).max)
            clamped = tirx.max(tirx.min(f, const(hi, "float32")), const(-hi, "float32"))
            f = tirx.Select(tirx.isnan(f), f, clamped)
        return encode(f, dst)
    if dst.is_bits:                # int4 / uint4 / int2 / uint2
        return _wrap(v.astype("int64"), dst).astype(dst.tvm)
    return v.astype(dst.tvm)
