"""Elementwise ATen ops: arithmetic with torch's type promotion, comparisons, activations.

torch promotes operands (an int tensor times a float scalar is float; a float32 tensor plus a
Python float stays float32); kiln's binary ops take one dtype. So each converter casts its
operands to the dtype torch computes in: the result's for arithmetic, the promoted operands'
for comparisons (whose result is bool).
"""

from __future__ import annotations

from kiln.errors import ModelError
from kiln.frontend.torch.context import Context, Scalar, aten, result_type
from kiln.ir.dtype import DType
from kiln.ir.graph import Value

Operand = Value | Scalar

# -- unary ------------------------------------------------------------------------------------
_UNARY = {
    "abs": "abs", "neg": "neg", "sign": "sign", "relu": "relu",
    "exp": "exp", "log": "log", "sqrt": "sqrt", "rsqrt": "rsqrt", "reciprocal": "reciprocal",
    "tanh": "tanh", "sigmoid": "sigmoid", "erf": "erf",
    "sin": "sin", "cos": "cos", "tan": "tan", "asin": "asin", "acos": "acos", "atan": "atan",
    "sinh": "sinh", "cosh": "cosh", "asinh": "asinh", "acosh": "acosh", "atanh": "atanh",
    "floor": "floor", "ceil": "ceil", "round": "round",
}
_INT_IDENTITY = {"floor", "ceil", "round", "trunc"}     # rounding an integer keeps it


def _unary(kiln_op: str, torch_op: str):  # noqa: ANN202 - a converter
    def convert(cx: Context, x: Value) -> Value:
        out = cx.out_dtype()
        if torch_op in _INT_IDENTITY and not out.is_float:
            return x
        return cx.emit(kiln_op, [cx.cast(x, out)])     # exp of an int tensor is float
    return convert


for _name, _op in _UNARY.items():
    aten(f"{_name}.default")(_unary(_op, _name))


@aten("trunc.default")
def _trunc(cx: Context, x: Value) -> Value:
    if not x.dtype.is_float:
        return x
    negative = cx.emit("less", [x, cx.scalar(0, x.dtype)])
    return cx.emit("where", [negative, cx.emit("ceil", [x]), cx.emit("floor", [x])])


@aten("logical_not.default")
def _logical_not(cx: Context, x: Value) -> Value:
    return cx.emit("logical_not", [cx.cast(x, DType.bool)])


@aten("bitwise_not.default")
def _bitwise_not(cx: Context, x: Value) -> Value:
    op = "logical_not" if x.dtype is DType.bool else "bitwise_not"
    return cx.emit(op, [x])


@aten("isnan.default")
def _isnan(cx: Context, x: Value) -> Value:
    if not x.dtype.is_float:         # integers are never NaN
        return cx.emit("logical_not", [cx.emit("equal", [x, x])])
    return cx.emit("is_nan", [x])


@aten("gelu.default")
def _gelu(cx: Context, x: Value, approximate: str = "none") -> Value:
    return cx.emit("gelu", [x], approximate=approximate)


@aten("leaky_relu.default")
def _leaky_relu(cx: Context, x: Value, negative_slope: float = 0.01) -> Value:
    return cx.emit("leaky_relu", [x], alpha=float(negative_slope))


@aten("elu.default")
def _elu(cx: Context, x: Value, alpha: float = 1.0, scale: float = 1.0,
         input_scale: float = 1.0) -> Value:
    if input_scale != 1:
        raise ModelError(f"elu with input_scale={input_scale} is not supported (only 1)")
    if scale == 1:
        return cx.emit("elu", [x], alpha=float(alpha))
    return cx.emit("selu", [x], alpha=float(alpha), gamma=float(scale))   # SELU is a scaled ELU


@aten("softplus.default")
def _softplus(cx: Context, x: Value, beta: float = 1.0, threshold: float = 20.0) -> Value:
    """``log(1 + e^(beta x)) / beta``, and ``x`` itself where ``beta x > threshold``."""
    bx = x if beta == 1 else cx.emit("mul", [x, cx.scalar(beta, x.dtype)])
    y = cx.emit("softplus", [bx])
    if beta != 1:
        y = cx.emit("div", [y, cx.scalar(beta, x.dtype)])
    linear = cx.emit("greater", [bx, cx.scalar(threshold, x.dtype)])
    return cx.emit("where", [linear, x, y])


@aten("mish.default")
def _mish(cx: Context, x: Value) -> Value:
    return cx.emit("mish", [x])


@aten("hardswish.default")
def _hardswish(cx: Context, x: Value) -> Value:
    return cx.emit("hard_swish", [x])


@aten("hardsigmoid.default")
def _hardsigmoid(cx: Context, x: Value) -> Value:
    return cx.emit("hard_sigmoid", [x], alpha=1 / 6, beta=0.5)     # relu6(x + 3) / 6


# log1p and expm1 near 0: Taylor series below |x| = 0.1 (8 terms: the next is under 1e-9 of
# the result), log(1 + x) and e^x - 1 above, where rounding 1 + x or e^x costs at most
# ~6e-7 relative. (The textbook tricks on ``(1 + x) - 1`` do not survive TVM's simplifier.)
_SERIES_BELOW = 0.1
_TERMS = 8


def _near_zero(cx: Context, x: Value, series: Value, direct: Value) -> Value:
    small = cx.emit("less", [cx.emit("abs", [x]), cx.scalar(_SERIES_BELOW, x.dtype)])
    return cx.emit("where", [small, series, direct])


@aten("log1p.default")
def _log1p(cx: Context, x: Value) -> Value:
    """``log(1 + x)``: x (1 - x (1/2 - x (1/3 - ...))) near 0."""
    x = cx.cast(x, cx.out_dtype())
    acc = cx.scalar(1 / _TERMS, x.dtype)
    for n in range(_TERMS - 1, 0, -1):
        acc = cx.emit("sub", [cx.scalar(1 / n, x.dtype), cx.emit("mul", [x, acc])])
    direct = cx.emit("log", [cx.emit("add", [x, cx.scalar(1, x.dtype)])])
    return _near_zero(cx, x, cx.emit("mul", [x, acc]), direct)


@aten("expm1.default")
def _expm1(cx: Context, x: Value) -> Value:
    """``e^x - 1``: x (1 + x/2 (1 + x/3 (1 + ...))) near 0."""
    x = cx.cast(x, cx.out_dtype())
    acc = cx.scalar(1, x.dtype)
    for n in range(_TERMS, 1, -1):
        term = cx.emit("mul", [x, cx.scalar(1 / n, x.dtype)])
        acc = cx.emit("add", [cx.scalar(1, x.dtype), cx.emit("mul", [term, acc])])
    direct = cx.emit("sub", [cx.emit("exp", [x]), cx.scalar(1, x.dtype)])
    return _near_zero(cx, x, cx.emit("mul", [x, acc]), direct)


@aten("hardtanh.default")
def _hardtanh(cx: Context, x: Value, min_val: float = -1.0, max_val: float = 1.0) -> Value:
    return _clamp(cx, x, min_val, max_val)


@aten("clamp.default", "clamp.Tensor")
def _clamp(cx: Context, x: Value, min: Operand | None = None,  # noqa: A002 - schema names
           max: Operand | None = None) -> Value:  # noqa: A002
    out = cx.out_dtype()
    y = cx.cast(x, out)
    if min is not None:
        y = cx.emit("maximum", [y, cx.operand(min, out)])
    if max is not None:
        y = cx.emit("minimum", [y, cx.operand(max, out)])
    return y


# -- binary -----------------------------------------------------------------------------------
def _arith(cx: Context, op: str, a: Operand, b: Operand) -> Value:
    """``a op b`` in the dtype torch computes it in: the result's."""
    out = cx.out_dtype()
    return cx.emit(op, [cx.operand(a, out), cx.operand(b, out)])


def _scaled(cx: Context, b: Operand, alpha: Scalar) -> Operand:
    """``alpha * b``, torch's ``add(a, b, alpha=)``."""
    if alpha == 1:
        return b
    if isinstance(b, Value):
        out = cx.out_dtype()
        return cx.emit("mul", [cx.cast(b, out), cx.scalar(alpha, out)])
    return b * alpha


@aten("add.Tensor", "add.Scalar")
def _add(cx: Context, a: Operand, b: Operand, alpha: Scalar = 1) -> Value:
    if cx.out_dtype() is DType.bool:
        return cx.emit("logical_or", [cx.cast(a, DType.bool), cx.operand(b, DType.bool)])
    return _arith(cx, "add", a, _scaled(cx, b, alpha))


@aten("sub.Tensor", "sub.Scalar")
def _sub(cx: Context, a: Operand, b: Operand, alpha: Scalar = 1) -> Value:
    return _arith(cx, "sub", a, _scaled(cx, b, alpha))


@aten("rsub.Tensor", "rsub.Scalar")
def _rsub(cx: Context, a: Operand, b: Operand, alpha: Scalar = 1) -> Value:
    return _arith(cx, "sub", b, _scaled(cx, a, alpha))


@aten("mul.Tensor", "mul.Scalar")
def _mul(cx: Context, a: Operand, b: Operand) -> Value:
    if cx.out_dtype() is DType.bool:
        return cx.emit("logical_and", [cx.cast(a, DType.bool), cx.operand(b, DType.bool)])
    return _arith(cx, "mul", a, b)


@aten("div.Tensor", "div.Scalar")
def _div(cx: Context, a: Operand, b: Operand) -> Value:
    return _arith(cx, "div", a, b)     # the result is float: torch's true division


@aten("div.Tensor_mode", "div.Scalar_mode")
def _div_mode(cx: Context, a: Operand, b: Operand, rounding_mode: str | None = None) -> Value:
    if rounding_mode is None:
        return _div(cx, a, b)
    out = cx.out_dtype()
    x, y = cx.operand(a, out), cx.operand(b, out)
    if rounding_mode == "trunc":
        q = cx.emit("div", [x, y])                 # integer division truncates
        return _trunc(cx, q) if out.is_float else q
    if rounding_mode != "floor":
        raise ModelError(f"rounding_mode={rounding_mode!r} is not 'trunc' or 'floor'")
    if out.is_float:
        return cx.emit("floor", [cx.emit("div", [x, y])])
    # (x - x mod y) / y is exact, and mod takes the divisor's sign as floor division needs
    rest = cx.emit("sub", [x, cx.emit("mod", [x, y], fmod=False)])
    return cx.emit("div", [rest, y])


@aten("remainder.Tensor", "remainder.Scalar")
def _remainder(cx: Context, a: Operand, b: Operand) -> Value:
    out = cx.out_dtype()
    return cx.emit("mod", [cx.operand(a, out), cx.operand(b, out)], fmod=False)


@aten("fmod.Tensor", "fmod.Scalar")
def _fmod(cx: Context, a: Operand, b: Operand) -> Value:
    out = cx.out_dtype()
    return cx.emit("mod", [cx.operand(a, out), cx.operand(b, out)], fmod=True)


@aten("pow.Tensor_Scalar", "pow.Tensor_Tensor", "pow.Scalar")
def _pow(cx: Context, a: Operand, b: Operand) -> Value:
    out = cx.out_dtype()
    if isinstance(a, Value) and not isinstance(b, Value):
        x = cx.cast(a, out)
        if b == 1:
            return x
        if b == 2:                                 # exact, and one multiply
            return cx.emit("mul", [x, x])
        if b == 0.5 and out.is_float:
            return cx.emit("sqrt", [x])
        if b == -0.5 and out.is_float:
            return cx.emit("rsqrt", [x])
    return _arith(cx, "pow", a, b)


@aten("maximum.default")
def _maximum(cx: Context, a: Value, b: Value) -> Value:
    return _arith(cx, "maximum", a, b)


@aten("minimum.default")
def _minimum(cx: Context, a: Value, b: Value) -> Value:
    return _arith(cx, "minimum", a, b)


# -- comparisons and logic ---------------------------------------------------------------------
_COMPARE = {"eq": "equal", "lt": "less", "le": "less_equal", "gt": "greater",
            "ge": "greater_equal", "ne": "equal"}


def _compare(torch_op: str):  # noqa: ANN202 - a converter
    def convert(cx: Context, a: Operand, b: Operand) -> Value:
        dtype = result_type(a, b)
        y = cx.emit(_COMPARE[torch_op], [cx.operand(a, dtype), cx.operand(b, dtype)])
        return cx.emit("logical_not", [y]) if torch_op == "ne" else y
    return convert


for _name in _COMPARE:
    aten(f"{_name}.Tensor", f"{_name}.Scalar")(_compare(_name))


def _logical(op: str):  # noqa: ANN202 - a converter
    def convert(cx: Context, a: Value, b: Value) -> Value:
        return cx.emit(op, [cx.cast(a, DType.bool), cx.cast(b, DType.bool)])
    return convert


for _name in ("logical_and", "logical_or", "logical_xor"):
    aten(f"{_name}.default")(_logical(_name))


def _bitwise(op: str):  # noqa: ANN202 - a converter
    def convert(cx: Context, a: Operand, b: Operand) -> Value:
        out = cx.out_dtype()
        kiln_op = op.replace("bitwise", "logical") if out is DType.bool else op
        return cx.emit(kiln_op, [cx.operand(a, out), cx.operand(b, out)])
    return convert


for _name in ("bitwise_and", "bitwise_or", "bitwise_xor"):
    aten(f"{_name}.Tensor", f"{_name}.Scalar")(_bitwise(_name))


@aten("where.self", "where.ScalarSelf", "where.ScalarOther", "where.Scalar")
def _where(cx: Context, cond: Value, a: Operand, b: Operand) -> Value:
    out = cx.out_dtype()
    if not isinstance(a, Value) and not isinstance(b, Value):
        raise ModelError("where needs a tensor among its values")
    return cx.emit("where", [cx.cast(cond, DType.bool), cx.operand(a, out), cx.operand(b, out)])


@aten("masked_fill.Scalar", "masked_fill.Tensor")
def _masked_fill(cx: Context, x: Value, mask: Value, value: Operand) -> Value:
    out = cx.out_dtype()
    return cx.emit("where", [cx.cast(mask, DType.bool), cx.operand(value, out),
                             cx.cast(x, out)])


# -- casts ------------------------------------------------------------------------------------
@aten("_to_copy.default")
def _to_copy(cx: Context, x: Value) -> Value:
    return cx.cast(x, cx.out_dtype())

