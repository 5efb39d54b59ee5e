"""Vectorisable transcendental functions as TE expressions.

LLVM has no vector ``exp``/``erf``/``tanh`` for x86, so ``te.exp`` on a vectorised loop becomes one
scalar libm call per lane (about 5 ns per element here, 17 ns for erf). These are polynomial
forms made of multiplies, adds and bit operations, which vectorise (about 0.4 ns per element).
"""

from __future__ import annotations

import math

from tvm import tirx

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453


def dtype_of(e: tirx.PrimExpr) -> str:
    """An expression's dtype (TVM 0.27 spells it ``.dtype`` on loads, ``.ty`` on arithmetic)."""
    return str(e.dtype) if hasattr(e, "dtype") else str(e.ty)


def _const(v: float, like: tirx.PrimExpr) -> tirx.PrimExpr:
    return tirx.const(v, dtype_of(like))


def exp(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """``e^x = 2^n * 2^f`` with ``x * log2(e) = n + f``, ``n = round(.)``, ``|f| <= 1/2``.

    ``2^f = e^(f ln 2)`` is a degree-7 Taylor polynomial in ``r = f ln 2`` (|r| <= 0.347, error
    below 2e-8 relative); ``2^n`` is built by writing ``n + 127`` into the float's exponent bits.
    """
    if dtype_of(x) != "float32":
        return tirx.exp(x)
    # No let-bindings here: an inlined consumer that reads this value twice would define the
    # same let variable twice, which TIR rejects; LLVM removes the repeated subexpressions.
    x = tirx.max(tirx.min(x, _const(88.3762626647949, x)), _const(-87.0, x))
    t = x * _const(LOG2E, x)
    n = tirx.floor(t + _const(0.5, x))
    r = (t - n) * _const(LN2, x)
    p = _const(1.0 / 5040.0, x)
    for c in (1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0):
        p = p * r + _const(c, x)
    scale = tirx.reinterpret("float32", (n.astype("int32") + 127) << 23)
    return p * scale


def sigmoid(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """``1 / (1 + e^-x)``, with x >= -80 so the result stays a normal float (it is below
    2e-35 there: an absolute error no float32 consumer can see)."""
    one = _const(1.0, x)
    return one / (one + exp(-tirx.max(x, _const(-80.0, x))))


def tanh(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """``tanh x = sign(x) (1 - 2 / (e^(2|x|) + 1))``, and ``x - x^3/3`` near 0 where that
    form cancels; absolute error below 1.2e-7."""
    if dtype_of(x) != "float32":
        return tirx.tanh(x)
    ax = tirx.abs(x)
    one = _const(1.0, x)
    # tanh(9) = 1 - 3e-8: clamping there keeps 2 / (e^(2|x|) + 1) out of the denormal range,
    # where every operation takes a slow microcode assist
    t = one - _const(2.0, x) / (exp(tirx.min(ax, _const(9.0, x)) * _const(2.0, x)) + one)
    t = tirx.Select(ax < _const(0.02, x), ax * (one - ax * ax * _const(1.0 / 3.0, x)), t)
    return tirx.Select(x < _const(0.0, x), -t, t)


def erf(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """Abramowitz & Stegun 7.1.26 refined: ``1 - (a1 t + ... + a5 t^5) e^(-x^2)``, with
    ``t = 1 / (1 + p|x|)``; absolute error below 1.5e-7."""
    if dtype_of(x) != "float32":
        return tirx.erf(x)
    ax = tirx.abs(x)
    t = _const(1.0, x) / (_const(1.0, x) + _const(0.3275911, x) * ax)
    poly = _const(1.061405429, x)
    for c in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
        poly = poly * t + _const(c, x)
    y = _const(1.0, x) - poly * t * exp(tirx.max(-ax * ax, _const(-80.0, x)))  # no denormals
    return tirx.Select(x < _const(0.0, x), -y, y)


def gelu_erf(x: tirx.PrimExpr) -> tirx.PrimExpr:
    return _const(0.5, x) * x * (_const(1.0, x) + erf(x * _const(1.0 / math.sqrt(2.0), x)))


def gelu_tanh(x: tirx.PrimExpr) -> tirx.PrimExpr:
    inner = _const(math.sqrt(2.0 / math.pi), x) * (x + _const(0.044715, x) * x * x * x)
    return _const(0.5, x) * x * (_const(1.0, x) + tanh(inner))
