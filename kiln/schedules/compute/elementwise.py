"""TE for elementwise and broadcasting ops; each op is one expression on scalars.

Transcendental functions come from ``fastmath`` (polynomials that vectorise), never from a libm
call per lane. float16 math is computed in float32 and rounded once at the end, as NumPy does.
"""

from __future__ import annotations

from collections.abc import Callable

from tvm import te, tirx
from tvm.ir.expr import Expr  # TVM 0.27's PrimExpr

from kiln.ir.ops.elementwise import GeluApprox
from kiln.schedules.compute import fastmath
from kiln.schedules.compute.narrow import convert
from kiln.schedules.compute.registry import NodeInfo, broadcast_index, compute, const


def _c(value: float | int | bool, like: Expr) -> Expr:
    """A constant of ``like``'s dtype."""
    return const(value, fastmath.dtype_of(like))


def _zero(x: Expr) -> Expr:
    return _c(0, x)


def _one(x: Expr) -> Expr:
    return _c(1, x)


def _is_float(x: Expr) -> bool:
    return fastmath.dtype_of(x).startswith("float")


def _is_unsigned(x: Expr) -> bool:
    return fastmath.dtype_of(x).startswith("uint")


def _clamp(x: Expr, lo: float, hi: float) -> Expr:
    return fastmath.fmax(fastmath.fmin(x, hi), lo)


def _abs(x: Expr) -> Expr:
    return x if _is_unsigned(x) else tirx.abs(x)


def _sign(x: Expr) -> Expr:
    """1, -1 or 0 (and NaN for NaN, which fails both tests and is returned as is)."""
    if _is_unsigned(x):
        return tirx.Select(x > _zero(x), _one(x), _zero(x))
    inner = tirx.Select(x < _zero(x), _c(-1, x), x if _is_float(x) else _zero(x))
    return tirx.Select(x > _zero(x), _one(x), inner)


UNARY: dict[str, Callable[[Expr], Expr]] = {
    "relu": lambda x: fastmath.fmax(x, 0),          # NaN stays NaN, as in NumPy
    "neg": lambda x: -x,
    "abs": _abs,
    "sign": _sign,
    "exp": fastmath.exp,
    "log": fastmath.log,
    "sqrt": tirx.sqrt,
    "rsqrt": lambda x: _one(x) / tirx.sqrt(x),
    "reciprocal": lambda x: _one(x) / x,
    "tanh": fastmath.tanh,
    "sigmoid": fastmath.sigmoid,
    "erf": fastmath.erf,
    "floor": tirx.floor,
    "ceil": tirx.ceil,
    "round": tirx.nearbyint,                      # half to even (vrndscaleps)
    "sin": fastmath.sin,
    "cos": fastmath.cos,
    "tan": fastmath.tan,
    "asin": fastmath.asin,
    "acos": fastmath.acos,
    "atan": fastmath.atan,
    "sinh": fastmath.sinh,
    "cosh": fastmath.cosh,
    "asinh": fastmath.asinh,
    "acosh": fastmath.acosh,
    "atanh": fastmath.atanh,
    "softplus": fastmath.softplus,
    "softsign": lambda x: x / (_one(x) + tirx.abs(x)),
    "mish": fastmath.mish,
    "hard_swish": lambda x: x * _clamp(x * _c(1.0 / 6.0, x) + _c(0.5, x), 0.0, 1.0),
    "bitwise_not": tirx.bitwise_not,
    "logical_not": tirx.Not,
    "is_nan": tirx.isnan,
}


def _in_float32(fn: Callable[[Expr], Expr]) -> Callable[[Expr], Expr]:
    """``fn`` on float16 computed in float32, rounded back once (bool results stay bool)."""
    def apply(x: Expr) -> Expr:
        if fastmath.dtype_of(x) != "float16":
            return fn(x)
        y = fn(x.astype("float32"))
        return y.astype("float16") if fastmath.dtype_of(y) == "float32" else y
    return apply


def _unary(fn: Callable[[Expr], Expr]):
    fn = _in_float32(fn)

    def lower(n: NodeInfo, x: te.Tensor) -> te.Tensor:
        return te.compute(n.shape, lambda *i: fn(x(*i)), name=n.name)
    return lower


for _name, _fn in UNARY.items():
    compute(_name)(_unary(_fn))


# -- activations with attributes: fn(attrs, x) ----------------------------------------------------
def _elu(at, x: Expr) -> Expr:
    return tirx.Select(x > _zero(x), x, _c(at.alpha, x) * fastmath.expm1(x))


def _celu(at, x: Expr) -> Expr:
    neg = _c(at.alpha, x) * fastmath.expm1(x * _c(1.0 / at.alpha, x))
    return tirx.max(x, _zero(x)) + tirx.min(neg, _zero(x))


def _selu(at, x: Expr) -> Expr:
    return _c(at.gamma, x) * tirx.Select(x > _zero(x), x, _c(at.alpha, x) * fastmath.expm1(x))


def _shrink(at, x: Expr) -> Expr:
    """Floats directly; integers through float64 and truncated back, as the reference does."""
    dt = fastmath.dtype_of(x)
    v = x if _is_float(x) else x.astype("float64")
    lam = _c(at.lambd, v)
    y = tirx.Select(v < -lam, v + _c(at.bias, v),
                    tirx.Select(v > lam, v - _c(at.bias, v), _zero(v)))
    return y if _is_float(x) else y.astype(dt)


def _is_inf(at, x: Expr) -> Expr:
    pos, neg = x == _c(float("inf"), x), x == _c(float("-inf"), x)
    if at.detect_positive and at.detect_negative:
        return tirx.Or(pos, neg)
    if at.detect_positive:
        return pos
    return neg if at.detect_negative else const(False, "bool")


ACTIVATIONS: dict[str, Callable] = {
    "leaky_relu": lambda at, x: tirx.Select(x < _zero(x), x * _c(at.alpha, x), x),
    "elu": _elu,
    "celu": _celu,
    "selu": _selu,
    "thresholded_relu": lambda at, x: tirx.Select(x > _c(at.alpha, x), x, _zero(x)),
    "hard_sigmoid": lambda at, x: _clamp(x * _c(at.alpha, x) + _c(at.beta, x), 0.0, 1.0),
    "swish": lambda at, x: x * fastmath.sigmoid(x * _c(at.alpha, x)),
    "shrink": _shrink,
    "is_inf": _is_inf,
}


def _activation(fn: Callable):
    def lower(n: NodeInfo, x: te.Tensor) -> te.Tensor:
        f = _in_float32(lambda v: fn(n.attrs, v))
        return te.compute(n.shape, lambda *i: f(x(*i)), name=n.name)
    return lower


for _name, _fn in ACTIVATIONS.items():
    compute(_name)(_activation(_fn))


@compute("gelu")
def gelu(n: NodeInfo, x: te.Tensor) -> te.Tensor:
    fn = fastmath.gelu_tanh if n.attrs.approximate is GeluApprox.TANH else fastmath.gelu_erf
    fn = _in_float32(fn)
    return te.compute(n.shape, lambda *i: fn(x(*i)), name=n.name)


# -- binary ops ---------------------------------------------------------------------------------
def _int_div(a: Expr, b: Expr) -> Expr:
    """C division (toward zero); x / 0 is 0, as NumPy gives, instead of a SIGFPE crash."""
    zero = b == _zero(b)
    return tirx.Select(zero, _zero(a), tirx.truncdiv(a, tirx.Select(zero, _one(b), b)))


def _shift_count_ok(b: Expr) -> Expr:
    """A shift count in [0, bits): outside it LLVM's shifts are undefined (poison)."""
    bits = int("".join(c for c in fastmath.dtype_of(b) if c.isdigit()))
    # compared as int64: TVM's simplifier fails on ``uint32 < const`` (it forms 0U - c), and
    # a uint64 count past 2^63 turns negative there, which is out of range as it should be
    wide = b.astype("int64")
    return tirx.And(wide >= tirx.const(0, "int64"), wide < tirx.const(bits, "int64"))


def _shift_left(a: Expr, b: Expr) -> Expr:
    ok = _shift_count_ok(b)
    return tirx.Select(ok, a << tirx.Select(ok, b, _zero(b)), _zero(a))


def _shift_right(a: Expr, b: Expr) -> Expr:
    """Past the width, the sign fill (0 or -1), which a shift by bits - 1 gives."""
    ok = _shift_count_ok(b)
    bits = int("".join(c for c in fastmath.dtype_of(a) if c.isdigit()))
    fill = _zero(a) if _is_unsigned(a) else a >> _c(bits - 1, a)
    return tirx.Select(ok, a >> tirx.Select(ok, b, _zero(b)), fill)


def _equal(a: Expr, b: Expr) -> Expr:
    # LLVM rejects TVM's == on i1 (it emits a float compare), so bools compare by xor
    if fastmath.dtype_of(a) == "bool":
        return tirx.Not(a ^ b)
    return a == b


BINARY: dict[str, Callable[[Expr, Expr], Expr]] = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b if _is_float(a) else _int_div(a, b),
    "pow": lambda a, b: tirx.power(a, b) if _is_float(a)
    else tirx.power(a.astype("float64"), b.astype("float64")).astype(fastmath.dtype_of(a)),
    "maximum": tirx.max,
    "minimum": tirx.min,
    "prelu": lambda a, b: tirx.Select(a < _zero(a), a * b, a),
    "shift_left": _shift_left,
    "shift_right": _shift_right,
    "bitwise_and": lambda a, b: a & b,
    "bitwise_or": lambda a, b: a | b,
    "bitwise_xor": lambda a, b: a ^ b,
    "logical_and": lambda a, b: a & b,
    "logical_or": lambda a, b: a | b,
    "logical_xor": lambda a, b: a ^ b,
    "equal": _equal,
    "less": lambda a, b: a < b,
    "less_equal": lambda a, b: a <= b,
    "greater": lambda a, b: a > b,
    "greater_equal": lambda a, b: a >= b,
}


def _broadcast_binary(n: NodeInfo, a: te.Tensor, b: te.Tensor,
                      fn: Callable[[Expr, Expr], Expr]) -> te.Tensor:
    shape = n.shape
    return te.compute(shape, lambda *i: fn(a(*broadcast_index(a, shape, i)),
                                           b(*broadcast_index(b, shape, i))), name=n.name)


def _binary(fn: Callable[[Expr, Expr], Expr]):
    def lower(n: NodeInfo, a: te.Tensor, b: te.Tensor) -> te.Tensor:
        return _broadcast_binary(n, a, b, fn)
    return lower


for _name, _fn in BINARY.items():
    compute(_name)(_binary(_fn))


def _float_fmod(a: Expr, b: Expr) -> Expr:
    """C's ``fmod``, vectorised (LLVM's ``frem`` is a libm call per lane): ``a - trunc(a/b) b``
    in float64. For float32 inputs and quotients below 2^29 that is exact; when the quotient
    rounds up to the next integer the remainder comes out with the wrong sign, and one ``b``
    is added back. ``fmod(finite, inf)`` is the dividend; inf or NaN operands give NaN."""
    dt = fastmath.dtype_of(a)
    a64, b64 = a.astype("float64"), b.astype("float64")
    r = a64 - tirx.trunc(a64 / b64) * b64
    wrong_sign = tirx.Select(a64 < _zero(a64), r > _zero(r), r < _zero(r))
    r = tirx.Select(wrong_sign, r + tirx.Select(a64 < _zero(a64), -tirx.abs(b64),
                                                tirx.abs(b64)), r)
    inf = _c(float("inf"), a64)
    r = tirx.Select(tirx.And(tirx.abs(b64) == inf, tirx.abs(a64) != inf), a64, r)
    return r if dt == "float64" else r.astype(dt)


def _mod(fmod: bool) -> Callable[[Expr, Expr], Expr]:
    def fn(a: Expr, b: Expr) -> Expr:
        if _is_float(a):
            r = _float_fmod(a, b)
            if fmod:
                return r
            # Python's sign: a nonzero remainder whose sign differs from b's moves by b
            moves = tirx.And(r != _zero(r), (r < _zero(r)) ^ (b < _zero(b)))  # ^: bool !=
            return tirx.Select(moves, r + b, r)
        zero = b == _zero(b)
        safe = tirx.Select(zero, _one(b), b)
        r = tirx.truncmod(a, safe) if fmod or _is_unsigned(a) else tirx.floormod(a, safe)
        return tirx.Select(zero, _zero(a), r)
    return fn


@compute("mod")
def mod(n: NodeInfo, a: te.Tensor, b: te.Tensor) -> te.Tensor:
    return _broadcast_binary(n, a, b, _mod(n.attrs.fmod))


# -- cast, where --------------------------------------------------------------------------------
@compute("cast")
def cast(n: NodeInfo, x: te.Tensor) -> te.Tensor:
    src, dst = n.ins[0].dtype, n.outs[0].dtype
    return te.compute(n.shape, lambda *i: convert(x(*i), src, dst, n.attrs.saturate),
                      name=n.name)


@compute("where")
def where(n: NodeInfo, c: te.Tensor, a: te.Tensor, b: te.Tensor) -> te.Tensor:
    shape = n.shape
    return te.compute(shape, lambda *i: tirx.Select(c(*broadcast_index(c, shape, i)),
                                                    a(*broadcast_index(a, shape, i)),
                                                    b(*broadcast_index(b, shape, i))),
                      name=n.name)
