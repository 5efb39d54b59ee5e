"""TE for elementwise and broadcasting ops; each op is one expression on scalars."""

from __future__ import annotations

from tvm import te, tirx

from kiln.ir.ops.elementwise import GeluApprox
from kiln.schedules.compute import fastmath
from kiln.schedules.compute.registry import NodeInfo, broadcast_index, compute, const


def _zero(x: tirx.PrimExpr) -> tirx.PrimExpr:
    return const(0, fastmath.dtype_of(x))


def _one(x: tirx.PrimExpr) -> tirx.PrimExpr:
    return const(1, fastmath.dtype_of(x))


UNARY = {
    "relu": lambda x: tirx.max(x, _zero(x)),
    "neg": lambda x: -x,
    "abs": tirx.abs,
    "exp": fastmath.exp,
    "log": tirx.log,
    "sqrt": tirx.sqrt,
    "rsqrt": lambda x: _one(x) / tirx.sqrt(x),
    "reciprocal": lambda x: _one(x) / x,
    "tanh": fastmath.tanh,
    "sigmoid": fastmath.sigmoid,
    "erf": fastmath.erf,
}


def _int_div(a: tirx.PrimExpr, b: tirx.PrimExpr) -> tirx.PrimExpr:
    """C division (toward zero); x / 0 is 0, as NumPy gives, instead of a SIGFPE crash."""
    zero = b == const(0, fastmath.dtype_of(b))
    return tirx.Select(zero, const(0, fastmath.dtype_of(a)),
                       tirx.truncdiv(a, tirx.Select(zero, const(1, fastmath.dtype_of(b)), b)))


BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b if fastmath.dtype_of(a).startswith("float") else _int_div(a, b),
    "pow": lambda a, b: tirx.power(a, b),
    "maximum": tirx.max,
    "minimum": tirx.min,
    "equal": lambda a, b: a == b,
    "less": lambda a, b: a < b,
    "greater": lambda a, b: a > b,
}


def _unary(fn):
    def lower(n: NodeInfo, x: te.Tensor) -> te.Tensor:
        return te.compute(n.shape, lambda *i: fn(x(*i)), name=n.name)
    return lower


for _name, _fn in UNARY.items():
    compute(_name)(_unary(_fn))


def _binary(fn):
    def lower(n: NodeInfo, a: te.Tensor, b: te.Tensor) -> te.Tensor:
        shape = n.shape
        return te.compute(shape, lambda *i: fn(a(*broadcast_index(a, shape, i)),
                                                b(*broadcast_index(b, shape, i))), name=n.name)
    return lower


for _name, _fn in BINARY.items():
    compute(_name)(_binary(_fn))


@compute("gelu")
def gelu(n: NodeInfo, x: te.Tensor) -> te.Tensor:
    fn = fastmath.gelu_tanh if n.attrs.approximate is GeluApprox.TANH else fastmath.gelu_erf
    return te.compute(n.shape, lambda *i: fn(x(*i)), name=n.name)


@compute("cast")
def cast(n: NodeInfo, x: te.Tensor) -> te.Tensor:
    return te.compute(n.shape, lambda *i: x(*i).astype(n.dtype), name=n.name)


@compute("where")
def where(n: NodeInfo, c: te.Tensor, a: te.Tensor, b: te.Tensor) -> te.Tensor:
    shape = n.shape
    return te.compute(shape, lambda *i: tirx.Select(c(*broadcast_index(c, shape, i)),
                                                    a(*broadcast_index(a, shape, i)),
                                                    b(*broadcast_index(b, shape, i))),
                      name=n.name)
