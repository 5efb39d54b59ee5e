"""Vectorisable transcendental functions as TE expressions.

LLVM has no vector ``exp``/``erf``/``tanh``/``log``/``sin``... for x86, so ``te.exp`` on a
vectorised loop becomes one scalar libm call per lane (about 5 ns per element here, 17 ns for
erf). These are polynomial forms made of multiplies, adds, selects and bit operations, which
vectorise (about 0.4 ns per element). The float32 forms are Cephes' single-precision ones (range
reduction, then a short minimax polynomial), accurate to a few float32 ulps on the ranges models
use; float16 is computed through them in float32, float64 keeps the scalar libm calls.

Branches are ``Select``s: both sides are computed for every lane and one is kept, so a side may
divide by zero or take the square root of a negative for lanes that will not keep it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from tvm import tirx

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453
PI = math.pi
FLT_MIN = 1.1754943508222875e-38     # the smallest normal float32


def dtype_of(e: tirx.PrimExpr) -> str:
    """An expression's dtype (TVM 0.27 spells it ``.dtype`` on loads, ``.ty`` on arithmetic;
    ``==`` / ``!=`` give a lazy EqualOp / NotEqualOp, whose expression is ``asobject()``)."""
    if hasattr(e, "asobject"):
        e = e.asobject()
    return str(e.dtype) if hasattr(e, "dtype") else str(e.ty)


def _const(v: float, like: tirx.PrimExpr) -> tirx.PrimExpr:
    return tirx.const(v, dtype_of(like))


def fmin(x: tirx.PrimExpr, hi: float) -> tirx.PrimExpr:
    """``min(x, hi)`` that keeps NaN (TVM's min turns NaN into ``hi``); one vminps all the
    same, as LLVM matches this select to it."""
    return tirx.Select(x > _const(hi, x), _const(hi, x), x)


def fmax(x: tirx.PrimExpr, lo: float) -> tirx.PrimExpr:
    """``max(x, lo)`` that keeps NaN."""
    return tirx.Select(x < _const(lo, x), _const(lo, x), x)


# e^r on [-ln(2)/2, ln(2)/2], lowest power first: the degree-6 polynomial of least maximum
# relative error (1.9e-9, below float32's rounding; Taylor's needs degree 7 for that)
_EXP_POLY = (1.000000000554171, 1.0000000363234687, 0.49999992079759426, 0.16666420168618937,
             0.041668225575983625, 0.008374815908336523, 0.0013836845983099075)


def _exp_reduced(x: tirx.PrimExpr, two_part_ln2: bool = True
                 ) -> tuple[tirx.PrimExpr, tirx.PrimExpr]:
    """``e^x = 2^n e^r`` with ``n = round(x log2 e)``, ``|r| <= ln(2) / 2``: (e^r, n as int32),
    for |x log2 e| < 2^22.

    The rounding adds ``M = 1.5 * 2^23 + 127``: the sum's float spacing is 1, so the addition
    itself rounds x log2 e to the nearest integer, which then sits in the low bits of the
    sum's mantissa. One FMA where ``floor`` took an FMA, a rounding and a conversion; and as
    M's bits end in 127 and then zeros, ``(n + 127) << 23`` (2^n's bits) is the sum's bits
    shifted, which LLVM finds: one shift for 2^n. ``r = x - n ln 2`` subtracts ln 2 in two
    parts (Cody-Waite: 0.693359375 has 9 bits, so ``n * 0.693359375`` is exact), which keeps
    r exact even for |x| near 88; in one part (``two_part_ln2=False``, one FMA fewer) r is off
    by n times float32's ln 2 error, 1.9e-9 n: a relative error of at most 2.4e-7 (2 ulps),
    reached only for results near 1e-38. ``e^r`` is ``_EXP_POLY``.
    """
    i32 = "int32"
    magic = _const(12583039.0, x)                       # 1.5 * 2^23 + 127
    # No let-bindings here: a value bound once and then read twice in one expression (a
    # Select of t and -t) is a double definition, which TIR rejects; LLVM removes the
    # repeated subexpressions (the cost is compile time: keep nesting shallow).
    t = tirx.reinterpret(i32, x * _const(LOG2E, x) + magic)
    # the float n is read back through the bits: TVM's simplifier would fold (a + c) - c to a
    n = tirx.reinterpret(dtype_of(x), t) - magic
    if two_part_ln2:
        r = (x - n * _const(0.693359375, x)) - n * _const(-2.12194440e-4, x)
    else:
        r = x - n * _const(LN2, x)
    return _poly_pairs(r, _EXP_POLY), t - tirx.const(0x4B40007F, i32)   # M's bits


def _pow2(n: tirx.PrimExpr) -> tirx.PrimExpr:
    """``2^n`` for int32 n in [-126, 127], written into a float's exponent bits."""
    return tirx.reinterpret("float32", (n + tirx.const(127, "int32")) << 23)


def _exp_core(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """``e^x`` with x clamped to [-87, 88.37], so the result is always a normal float: what
    the functions built on it want (no denormal slow paths, no inf); ``exp`` has exact ends."""
    if dtype_of(x) != "float32":
        return tirx.exp(x)
    # max/min read x once (a NaN-keeping select reads it twice, doubling every tree built
    # on this one): NaN comes out as a finite value here, as from the clamp it always had
    p, n = _exp_reduced(tirx.max(tirx.min(x, _const(88.3762626647949, x)), _const(-87.0, x)))
    return p * _pow2(n)


def exp_nonpositive(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """``e^x`` for ``x <= 0`` (softmax's ``x - max``): ``exp``'s reduction (ln 2 in one part:
    2 ulps off only near 1e-38) and polynomial, but no clamp. Below -87 the result is 0 (the
    true value is under 1.7e-38, a denormal), whatever the reduction made of such an x (2^n
    wraps below -126; -inf makes r NaN); a NaN fails the compare and comes out NaN. 12 vector
    instructions where ``exp`` takes 20: softmax's time is mostly this function."""
    if dtype_of(x) != "float32":
        return exp(x)
    p, n = _exp_reduced(x, two_part_ln2=False)
    return tirx.Select(x < _const(-87.0, x), _const(0.0, x), p * _pow2(n))


def sigmoid(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """``1 / (1 + e^-x)``, with x >= -80 so the result stays a normal float (it is below
    2e-35 there: an absolute error no float32 consumer can see)."""
    one = _const(1.0, x)
    return one / (one + _exp_core(-tirx.max(x, _const(-80.0, x))))


def tanh(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """``tanh x = sign(x) (1 - 2 / (e^(2|x|) + 1))``, and below |x| = 0.625, where that form
    cancels, Cephes' odd polynomial; relative error below 3e-7."""
    if dtype_of(x) != "float32":
        return tirx.tanh(x)
    return _tanh32(x)


def _tanh32(x: tirx.PrimExpr) -> tirx.PrimExpr:
    ax = tirx.abs(x)
    one = _const(1.0, x)
    # tanh(9) = 1 - 3e-8: clamping there keeps 2 / (e^(2|x|) + 1) out of the denormal range,
    # where every operation takes a slow microcode assist
    t = one - _const(2.0, x) / (_exp_core(tirx.min(ax, _const(9.0, x)) * _const(2.0, x)) + one)
    z = ax * ax
    small = _poly(z, (-5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2, 1.33314422036e-1,
                      -3.33332819422e-1)) * z * ax + ax
    t = tirx.Select(ax < _const(0.625, x), small, t)
    return tirx.Select(x < _const(0.0, x), -t, t)


def erf(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """Abramowitz & Stegun 7.1.26 refined: ``1 - (a1 t + ... + a5 t^5) e^(-x^2)``, with
    ``t = 1 / (1 + p|x|)``; absolute error below 1.5e-7."""
    if dtype_of(x) != "float32":
        return tirx.erf(x)
    return _erf32(x)


def _erf32(x: tirx.PrimExpr) -> tirx.PrimExpr:
    ax = tirx.abs(x)
    t = _const(1.0, x) / (_const(1.0, x) + _const(0.3275911, x) * ax)
    poly = _const(1.061405429, x)
    for c in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
        poly = poly * t + _const(c, x)
    y = _const(1.0, x) - poly * t * _exp_core(tirx.max(-ax * ax, _const(-80.0, x)))
    return tirx.Select(x < _const(0.0, x), -y, y)


def gelu_erf(x: tirx.PrimExpr) -> tirx.PrimExpr:
    return _const(0.5, x) * x * (_const(1.0, x) + erf(x * _const(1.0 / math.sqrt(2.0), x)))


def gelu_tanh(x: tirx.PrimExpr) -> tirx.PrimExpr:
    inner = _const(math.sqrt(2.0 / math.pi), x) * (x + _const(0.044715, x) * x * x * x)
    return _const(0.5, x) * x * (_const(1.0, x) + tanh(inner))


# -- helpers --------------------------------------------------------------------------------------
def _poly(z: tirx.PrimExpr, coeffs: tuple[float, ...]) -> tirx.PrimExpr:
    """Horner's rule: ``coeffs[0] z^(k-1) + ... + coeffs[-1]``."""
    def horner(z: tirx.PrimExpr) -> tirx.PrimExpr:
        p = _const(coeffs[0], z)
        for c in coeffs[1:]:
            p = p * z + _const(c, z)
        return p
    return horner(z)


def _poly_pairs(z: tirx.PrimExpr, coeffs: tuple[float, ...]) -> tirx.PrimExpr:
    """``coeffs[0] + coeffs[1] z + ... + coeffs[k-1] z^(k-1)`` (lowest power first) as Horner's
    rule in z^2 over the pairs ``c0 + c1 z``: the pairs are independent, so the chain of
    dependent operations is half as long as plain Horner's (a vectorised loop of these keeps
    more lanes in flight), for one more multiply."""
    pairs = [_const(c, z) + _const(c1, z) * z
             for c, c1 in zip(coeffs[::2], coeffs[1::2], strict=False)]
    if len(coeffs) % 2:
        pairs.append(_const(coeffs[-1], z))
    z2 = z * z
    p = pairs[-1]
    for lo in reversed(pairs[:-1]):
        p = lo + p * z2
    return p


def _copysign(mag: tirx.PrimExpr, x: tirx.PrimExpr) -> tirx.PrimExpr:
    """``mag`` (>= 0) with the sign of ``x``: odd functions are computed on |x|."""
    return tirx.Select(x < _const(0.0, x), -mag, mag)


def float32_form(fn: Callable[[tirx.PrimExpr], tirx.PrimExpr],
                 fallback: Callable[[tirx.PrimExpr], tirx.PrimExpr]
                 ) -> Callable[[tirx.PrimExpr], tirx.PrimExpr]:
    """``fn`` (written for float32) for float32 and, computed in float32, float16; ``fallback``
    (TVM's libm intrinsic, which keeps full precision) for float64."""
    def apply(x: tirx.PrimExpr) -> tirx.PrimExpr:
        dt = dtype_of(x)
        if dt == "float32":
            return fn(x)
        if dt == "float16":
            return fn(x.astype("float32")).astype("float16")
        return fallback(x)
    apply.__doc__ = fn.__doc__
    return apply


# -- exponentials and logarithms -----------------------------------------------------------------
def _exp32(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """``e^x`` over the whole float range: 2^n is applied as ``2^(n//2) 2^(n - n//2)``, two
    normal factors, so the product overflows to inf past 88.72 and goes through the denormals
    to 0 below -87.3 as IEEE arithmetic does. The clamp to [-104, 89] keeps n in range."""
    p, n = _exp_reduced(tirx.max(tirx.min(x, _const(89.0, x)), _const(-104.0, x)))
    half = n >> 1
    return tirx.Select(tirx.isnan(x), x, p * _pow2(half) * _pow2(n - half))


exp = float32_form(_exp32, tirx.exp)


def _expm1_32(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """``e^x - 1`` without the cancellation near 0: a degree-8 Taylor polynomial for
    |x| < 1/2 (error below 1e-8 relative), ``e^x - 1`` beyond."""
    small = x * _poly(x, (1 / 40320, 1 / 5040, 1 / 720, 1 / 120, 1 / 24, 1 / 6, 0.5, 1.0))
    return tirx.Select(tirx.abs(x) < _const(0.5, x), small, _exp_core(x) - _const(1.0, x))


expm1 = float32_form(_expm1_32, lambda x: tirx.exp(x) - tirx.const(1, dtype_of(x)))


def _log1p_poly(f: tirx.PrimExpr, lo: tirx.PrimExpr) -> tirx.PrimExpr:
    """Cephes' ``log(1 + f)`` for f in [sqrt(1/2) - 1, sqrt(2) - 1): ``f - f^2/2 + f^3 P(f)``
    with P of degree 8; ``lo`` (a small correction term) is added before the large ones."""
    z = f * f
    y = f * z * _poly(f, (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1,
                          1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1,
                          3.3333331174e-1))
    return f + (y + lo - _const(0.5, f) * z)


def _log32(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """Cephes ``logf``: ``x = m 2^e`` with m in [sqrt(1/2), sqrt(2)) read from the float's bits;
    ``log(m)`` is a degree-9 polynomial in ``m - 1``, and ``e ln 2`` is added in two parts
    (0.693359375 + -2.12e-4) so that its rounding error stays below the polynomial's. Denormal
    inputs are scaled by 2^25 first; log(0) = -inf, log(x < 0) = NaN, log(inf) = inf."""
    f32, i32 = "float32", "int32"
    tiny = x < _const(FLT_MIN, x)
    xs = tirx.Select(tiny, x * _const(2.0 ** 25, x), x)
    bits = tirx.reinterpret(i32, xs)
    # m in [0.5, 1): keep the mantissa and sign, set the exponent to 2^-1
    m = tirx.reinterpret(f32, (bits & tirx.const(-2139095041, i32))    # 0x807fffff
                         | tirx.const(0x3F000000, i32))
    e = ((bits >> 23) & tirx.const(0xFF, i32)) - tirx.const(126, i32)
    e = e.astype(f32) - tirx.Select(tiny, _const(25.0, x), _const(0.0, x))
    below = m < _const(math.sqrt(0.5), x)
    e = tirx.Select(below, e - _const(1.0, x), e)
    f = tirx.Select(below, m + m, m) - _const(1.0, x)
    y = _log1p_poly(f, e * _const(-2.12194440e-4, x)) + e * _const(0.693359375, x)
    y = tirx.Select(x == _const(math.inf, x), x, y)
    y = tirx.Select(x == _const(0.0, x), _const(-math.inf, x), y)
    return tirx.Select(x >= _const(0.0, x), y, _const(math.nan, x))   # NaN fails >= too


log = float32_form(_log32, tirx.log)


def _log1p32(y: tirx.PrimExpr) -> tirx.PrimExpr:
    """``log(1 + y)`` for y > -1 without losing small y: where 1 + y lies in
    [sqrt(1/2), sqrt(2)) the log polynomial takes y itself (1 + y would round it), else log.

    (Goldberg's ``log(u) * y / (u - 1)`` does not survive here: TVM's simplifier folds
    ``(y + 1) - 1`` to y.)"""
    near = tirx.And(y > _const(math.sqrt(0.5) - 1.0, y), y < _const(math.sqrt(2.0) - 1.0, y))
    return tirx.Select(near, _log1p_poly(y, _const(0.0, y)), _log32(y + _const(1.0, y)))


log1p = float32_form(_log1p32, tirx.log1p)


def _softplus32(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """``log(1 + e^x) = max(x, 0) + log1p(e)`` with ``e = e^-|x|`` in (0, 1]: no overflow,
    full precision both ways. log1p(e) is the log polynomial at e, or for e > sqrt(2) - 1
    at ``(e - 1) / 2`` (exact) plus ln 2: one polynomial, a shallow tree to compile."""
    e = _exp_core(-tirx.abs(x))
    near = e < _const(math.sqrt(2.0) - 1.0, x)
    f = tirx.Select(near, e, (e - _const(1.0, x)) * _const(0.5, x))
    tail = _log1p_poly(f, _const(0.0, x)) + tirx.Select(near, _const(0.0, x), _const(LN2, x))
    return tirx.Select(tirx.isnan(x), x, tirx.max(x, _const(0.0, x)) + tail)


softplus = float32_form(
    _softplus32, lambda x: tirx.max(x, tirx.const(0, dtype_of(x)))
    + tirx.log1p(tirx.exp(-tirx.abs(x))))


def _mish32(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """``x tanh(softplus(x)) = x n / (n + 2)`` with ``n = e^x (e^x + 2)``: one exp, no tanh.
    For x > 20, n / (n + 2) is 1 in float32, so x is clamped there to keep n finite; below
    -100 the result is -0 (x e^x), which the formula would make NaN at -inf."""
    e = _exp_core(tirx.min(x, _const(20.0, x)))
    n = e * (e + _const(2.0, x))
    return tirx.Select(x < _const(-100.0, x), _const(-0.0, x), x * (n / (n + _const(2.0, x))))


def _mish64(x: tirx.PrimExpr) -> tirx.PrimExpr:
    e = tirx.exp(tirx.min(x, tirx.const(40.0, dtype_of(x))))
    n = e * (e + tirx.const(2.0, dtype_of(x)))
    return x * (n / (n + tirx.const(2.0, dtype_of(x))))


mish = float32_form(_mish32, _mish64)


# -- trigonometric functions ---------------------------------------------------------------------
# pi/2 in three parts (Cody-Waite): j * _PIO2_1 is exact for |j| < 2^16, so x - j pi/2 loses
# no bits for |x| up to about 1e5; beyond that the reduction degrades gracefully.
_PIO2_1, _PIO2_2, _PIO2_3 = 1.5703125, 4.837512969970703125e-4, 7.54978995489188216e-8
_SIN = (-1.9515295891e-4, 8.3321608736e-3, -1.6666654611e-1)
_COS = (2.443315711809948e-5, -1.388731625493765e-3, 4.166664568298827e-2)


def _reduce_pio2(x: tirx.PrimExpr) -> tuple[tirx.PrimExpr, tirx.PrimExpr, tirx.PrimExpr]:
    """``x = j pi/2 + r`` with |r| <= pi/4: (sin r, cos r, j mod 4 as int32).

    j mod 4 is taken in floats (exact for any float j), since j itself overflows an int32
    past 1e9; r is clamped to [-pi/4, pi/4], which only acts past the reduction's accurate
    range (|x| > 1e5), so the result stays bounded there; inf and NaN give NaN."""
    j = tirx.nearbyint(x * _const(2.0 / PI, x))
    r = ((x - j * _const(_PIO2_1, x)) - j * _const(_PIO2_2, x)) - j * _const(_PIO2_3, x)
    r = fmax(fmin(r, PI / 4), -PI / 4)
    q = j - _const(4.0, x) * tirx.floor(j * _const(0.25, x))
    z = r * r
    s = r + r * z * _poly(z, _SIN)
    c = _const(1.0, x) - _const(0.5, x) * z + z * z * _poly(z, _COS)
    return s, c, q.astype("int32")


def _quadrant(s: tirx.PrimExpr, c: tirx.PrimExpr, q: tirx.PrimExpr) -> tirx.PrimExpr:
    """``sin(q pi/2 + r)`` from sin r, cos r: s, c, -s, -c for q = 0, 1, 2, 3."""
    v = tirx.Select((q & tirx.const(1, "int32")) != tirx.const(0, "int32"), c, s)
    return tirx.Select((q & tirx.const(2, "int32")) != tirx.const(0, "int32"), -v, v)


def _sin32(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """Cephes ``sinf``: reduction by pi/2, then sin or cos of the rest by quadrant."""
    s, c, q = _reduce_pio2(x)
    return _quadrant(s, c, q)


def _cos32(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """``cos x = sin(x + pi/2)``: the quadrant moves by one."""
    s, c, q = _reduce_pio2(x)
    return _quadrant(s, c, q + tirx.const(1, "int32"))


def _tan32(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """``sin r / cos r``, or ``-cos r / sin r`` in odd quadrants."""
    s, c, q = _reduce_pio2(x)
    return tirx.Select((q & tirx.const(1, "int32")) != tirx.const(0, "int32"), -c / s, s / c)


sin = float32_form(_sin32, tirx.sin)
cos = float32_form(_cos32, tirx.cos)
tan = float32_form(_tan32, tirx.tan)


def _atan32(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """Cephes ``atanf``: |x| is moved into [0, tan(pi/8)] by ``atan a = pi/2 + atan(-1/a)``
    (a > tan 3pi/8) or ``pi/4 + atan((a-1)/(a+1))`` (a > tan pi/8), then a degree-4
    polynomial in a^2."""
    a = tirx.abs(x)
    big, mid = a > _const(2.414213562373095, x), a > _const(0.4142135623730950, x)
    one = _const(1.0, x)
    t = tirx.Select(big, -one / a, tirx.Select(mid, (a - one) / (a + one), a))
    base = tirx.Select(big, _const(PI / 2, x), tirx.Select(mid, _const(PI / 4, x),
                                                              _const(0.0, x)))
    z = t * t
    p = _poly(z, (8.05374449538e-2, -1.38776856032e-1, 1.99777106478e-1, -3.33329491539e-1))
    return _copysign(base + (p * z * t + t), x)


atan = float32_form(_atan32, tirx.atan)


def _asin_poly(z: tirx.PrimExpr, w: tirx.PrimExpr) -> tirx.PrimExpr:
    """Cephes' ``asin w`` for |w| <= 1/2, given ``z = w^2``."""
    p = _poly(z, (4.2163199048e-2, 2.4181311049e-2, 4.5470025998e-2, 7.4953002686e-2,
                  1.6666752422e-1))
    return p * z * w + w


def _asin32(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """Cephes ``asinf``: the polynomial for |x| <= 1/2, and beyond it
    ``asin a = pi/2 - 2 asin(sqrt((1 - a) / 2))``; |x| > 1 gives NaN (a negative sqrt)."""
    a = tirx.abs(x)
    big = a > _const(0.5, x)
    z = tirx.Select(big, _const(0.5, x) * (_const(1.0, x) - a), a * a)
    p = _asin_poly(z, tirx.Select(big, tirx.sqrt(z), a))
    return _copysign(tirx.Select(big, _const(PI / 2, x) - p - p, p), x)


def _acos32(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """Cephes ``acosf``: ``pi/2 - asin x`` for |x| <= 1/2; ``2 asin(sqrt((1 - |x|) / 2))``
    (subtracted from pi for negative x) beyond, which keeps acos near 1 accurate."""
    a = tirx.abs(x)
    big = a > _const(0.5, x)
    z = tirx.Select(big, _const(0.5, x) * (_const(1.0, x) - a), x * x)
    p = _asin_poly(z, tirx.Select(big, tirx.sqrt(z), x))
    outer = tirx.Select(x < _const(0.0, x), _const(PI, x) - p - p, p + p)
    return tirx.Select(big, outer, _const(PI / 2, x) - p)


asin = float32_form(_asin32, tirx.asin)
acos = float32_form(_acos32, tirx.acos)


# -- hyperbolic functions ------------------------------------------------------------------------
def _sinh32(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """Cephes ``sinhf``: a degree-7 odd polynomial for |x| <= 1, where ``(e^x - e^-x) / 2``
    cancels; that form beyond."""
    a = tirx.abs(x)
    z = a * a
    small = _poly(z, (2.03721912945e-4, 8.33028376239e-3, 1.66667160211e-1)) * z * a + a
    h = _exp32(a * _const(0.5, x))
    return _copysign(tirx.Select(a > _const(1.0, x), _half_exp_pair(h, -1.0), small), x)


def _half_exp_pair(h: tirx.PrimExpr, sign: float) -> tirx.PrimExpr:
    """``e^a / 2 + sign e^-a / 2`` from ``h = e^(a/2)``: as ``(h/2) h``, which stays finite up
    to a = 89.4 where ``e^a`` alone overflows at 88.7."""
    half = _const(0.5, h)
    return (half * h) * h + _const(sign, h) * ((half / h) / h)


def _cosh32(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """``(e^|x| + e^-|x|) / 2``; no cancellation, so no special form near 0."""
    return _half_exp_pair(_exp32(tirx.abs(x) * _const(0.5, x)), 1.0)


def _asinh32(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """``asinh a = log1p(a + a^2 / (1 + sqrt(1 + a^2)))`` (exact near 0), and
    ``log a + ln 2`` for a > 1e4, where a^2 + 1 = a^2 (and a^2 would overflow past 1.8e19)."""
    a = tirx.abs(x)
    one = _const(1.0, x)
    near = _log1p32(a + a * a / (one + tirx.sqrt(one + a * a)))
    far = _log32(a) + _const(LN2, x)
    return _copysign(tirx.Select(a > _const(1e4, x), far, near), x)


def _acosh32(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """``acosh x = log1p(t + sqrt(t (x + 1)))`` with ``t = x - 1`` (exact near 1), and
    ``log x + ln 2`` for x > 1e4; x < 1 gives NaN (a negative sqrt)."""
    t = x - _const(1.0, x)
    near = _log1p32(t + tirx.sqrt(t * (x + _const(1.0, x))))
    y = tirx.Select(x > _const(1e4, x), _log32(x) + _const(LN2, x), near)
    return tirx.Select(x < _const(1.0, x), _const(math.nan, x), y)


def _atanh32(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """``atanh a = log1p(2a / (1 - a)) / 2``: exact near 0, inf at 1, NaN past it."""
    a = tirx.abs(x)
    return _copysign(_const(0.5, x) * _log1p32((a + a) / (_const(1.0, x) - a)), x)


sinh = float32_form(_sinh32, tirx.sinh)
cosh = float32_form(_cosh32, tirx.cosh)
asinh = float32_form(_asinh32, tirx.asinh)
acosh = float32_form(_acosh32, tirx.acosh)
atanh = float32_form(_atanh32, tirx.atanh)
