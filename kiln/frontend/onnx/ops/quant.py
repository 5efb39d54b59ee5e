"""Quantized ONNX ops: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, MatMulInteger,
ConvInteger, QLinearMatMul, QLinearConv, and onnxruntime's com.microsoft QGemm, QLinearAdd,
QLinearMul and QLinearConcat.

Everything is written with kiln's ``quantize``, ``dequantize``, ``matmul_integer`` and
``fixed_point_multiply`` plus ordinary ops:
- DynamicQuantizeLinear is two reductions (min, max) and scalar arithmetic, then ``quantize``.
- ConvInteger / QLinearConv subtract the zero points in int32 (so the zero padding of ``conv2d``
  is padding with the zero point, as onnxruntime pads) and run ``conv2d`` on int32.
- An integer GEMM's or convolution's int32 accumulator moves to its output scale
  ("requantization") as onnxruntime's kernels move it: ``round(float(acc) * ratio) + zero
  point``, saturated, with the ratio in float32. QLinearAdd and QLinearMul likewise compute
  in float32 with the scale ratios folded, one multiply per input and no division.
- QLinearConcat with constant scales rescales in integer arithmetic (TFLite's quantized
  concatenation): each ratio becomes a Q31 multiplier and a shift at import, and the kernel
  runs ``fixed_point_multiply``.
"""

from __future__ import annotations

import numpy as np
import onnx

from kiln.errors import ModelError
from kiln.frontend.onnx.context import (
    Context,
    matmul_operands,
    matmul_result,
    onnx_dtype,
    onnx_op,
    reshape,
)
from kiln.ir.dtype import DType
from kiln.ir.graph import Value
from kiln.ir.ops.quant import quant_range, quantize_multiplier, requantize_steps
from kiln.ir.types import format_shape, normalize_axis

MS = "com.microsoft"


# -- helpers ------------------------------------------------------------------------------------
def _zero(ctx: Context, dtype: DType) -> Value:
    return ctx.constant(np.zeros((), dtype.np), dtype=dtype)


def _cast(ctx: Context, v: Value, dtype: DType) -> Value:
    return v if v.dtype == dtype else ctx.emit("cast", [v], dtype=dtype)


def _scalar_or_axis(ctx: Context, p: Value, x: Value, axis: int, what: str) -> Value:
    """A scale or zero point as kiln's quantize takes it: 0-d per tensor, [1, .., C, .., 1]
    per axis (ONNX gives a [C] vector and an ``axis``)."""
    if p.type.rank == 0:
        return p
    if p.type.is_static and p.type.numel == 1:
        return reshape(ctx, p, ())
    if p.type.rank != 1:
        raise ModelError(f"{what} {p.type} must be a scalar or a 1-D per-axis vector (a "
                         "blocked one needs block_size)")
    shape: list = [1] * x.type.rank
    shape[normalize_axis(axis, x.type.rank)] = p.shape[0]
    return reshape(ctx, p, shape)


def _quant_layout(ctx: Context, x: Value, scale: Value, zp: Value) -> tuple[Value, Value, dict]:
    """Scale, zero point and the quantize/dequantize attributes of the node's axis and
    block_size (opset 21+)."""
    block = int(ctx.attr("block_size", 0))
    axis = int(ctx.attr("axis", 1))
    if block:
        axis = normalize_axis(axis, x.type.rank)
        return scale, zp, {"axis": axis, "block_size": block}
    return (_scalar_or_axis(ctx, scale, x, axis, "the scale"),
            _scalar_or_axis(ctx, zp, x, axis, "the zero point"), {})


def _saturate(ctx: Context, v: Value, dtype: DType) -> Value:
    """An int32 ``v`` clamped to ``dtype``'s range and cast to it."""
    lo, hi = quant_range(dtype)
    v = ctx.emit("minimum", [v, ctx.constant(np.array(hi, np.int32))])
    v = ctx.emit("maximum", [v, ctx.constant(np.array(lo, np.int32))])
    return ctx.emit("cast", [v], dtype=dtype)


def fixed_point_rescale(ctx: Context, v: Value, ratio: np.ndarray, bound: int | None) -> Value:
    """``round(v * ratio)`` for an int32 ``v`` and a constant ``ratio`` (broadcast to ``v``), in
    integer arithmetic: Q31 multipliers and shifts computed here. With ``bound`` (``|v| <=
    bound``) the headroom left in int32 keeps extra fractional bits (``requantize_steps``);
    without it, one step (for a ``v`` that carries fractional bits of its own)."""
    steps = requantize_steps(ratio, bound) if bound else [quantize_multiplier(ratio)]
    for m, s in steps:
        v = ctx.emit("fixed_point_multiply", [v, ctx.constant(m), ctx.constant(s)])
    return v


def _requantize(ctx: Context, acc: Value, ratio: Value, y_zp: Value, dtype: DType) -> Value:
    """An int32 accumulator ``acc`` at scale ``in_scale`` as ``dtype`` at ``out_scale``, with
    ``ratio = in_scale / out_scale`` (float32, broadcast to ``acc``) and ``y_zp`` 0-d:
    onnxruntime's float path (MlasRequantizeOutput), ``round_half_even(float(acc) * ratio) +
    y_zp`` saturated. A float32 multiply per element is cheaper on every CPU than the Q31
    fixed-point steps it replaces (int64 lanes), and it is the arithmetic onnxruntime's int8
    kernels run, so the two agree to the bit wherever ``ratio`` is computed as they do."""
    f = ctx.emit("mul", [_cast(ctx, acc, DType.float32), _cast(ctx, ratio, DType.float32)])
    one = ctx.constant(np.array(1.0, np.float32))
    return ctx.emit("quantize", [f, one, y_zp], dtype=dtype)


def _span(dtype: DType) -> int:
    """The largest ``|q - zero point|`` of a ``dtype`` value."""
    lo, hi = quant_range(dtype)
    return hi - lo


def _zero_point(ctx: Context, i: int, of: Value) -> Value:
    zp = ctx.input(i)
    if zp is None:
        return _zero(ctx, of.dtype)
    if zp.dtype != of.dtype:
        raise ModelError(f"zero point {zp.type} must have the dtype of its input {of.type}")
    return zp


def _scalar(ctx: Context, v: Value, what: str) -> Value:
    if v.type.rank and not (v.type.is_static and v.type.numel == 1):
        raise ModelError(f"{what} {v.type} must be a scalar (per-tensor)")
    return reshape(ctx, v, ()) if v.type.rank else v


# -- QuantizeLinear / DequantizeLinear ----------------------------------------------------------
@onnx_op("QuantizeLinear")
def _quantize_linear(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x, scale, zp = ctx.required(0), ctx.required(1), ctx.input(2)
    if zp is not None:
        dtype = zp.dtype
    elif ctx.attr("output_dtype"):               # opset 21+
        dtype = onnx_dtype(ctx.attr("output_dtype"), "QuantizeLinear's output_dtype")
    else:
        dtype = DType.uint8
    if zp is None:
        zp = _zero(ctx, dtype)
    if ctx.attr("precision"):                    # opset 23+: the dtype of the division
        calc = onnx_dtype(ctx.attr("precision"), "QuantizeLinear's precision")
        x, scale = _cast(ctx, x, calc), _cast(ctx, scale, calc)
    scale, zp, attrs = _quant_layout(ctx, x, scale, zp)
    saturate = bool(ctx.attr("saturate", 1))      # opset 19+: float8 outputs
    return [ctx.emit("quantize", [x, scale, zp], dtype=dtype, saturate=saturate, **attrs)]


@onnx_op("DequantizeLinear")
def _dequantize_linear(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x, scale = ctx.required(0), ctx.required(1)
    zp = _zero_point(ctx, 2, x)
    dtype = scale.dtype
    if ctx.attr("output_dtype"):                 # opset 23+
        dtype = onnx_dtype(ctx.attr("output_dtype"), "DequantizeLinear's output_dtype")
    scale, zp, attrs = _quant_layout(ctx, x, scale, zp)
    return [ctx.emit("dequantize", [x, scale, zp], dtype=dtype, **attrs)]


def _reduce_all(ctx: Context, op: str, x: Value) -> Value:
    """``op`` over every element of ``x`` (keepdims), in two passes: over the last axis, rows
    in parallel on vector lanes, then over the short column of row results. In one pass the
    reduction to a scalar is one serial loop (0.45 ms for a [128, 1536] activation, 20x the
    two passes: the rank-0 case the row template cannot split)."""
    if x.type.rank >= 2:
        x = ctx.emit(op, [x], axes=(x.type.rank - 1,), keepdims=True)
    return ctx.emit(op, [x], keepdims=True)


@onnx_op("DynamicQuantizeLinear")
def _dynamic_quantize_linear(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    """onnxruntime's arithmetic, in float32: the range [min(x, 0), max(x, 0)]; scale = range /
    255 (1 when the range is empty); zero point = round_half_even(clamp(0 - min / scale))."""
    x = ctx.required(0)
    if x.dtype is not DType.float32:
        raise ModelError(f"DynamicQuantizeLinear needs a float32 input, got {x.type}")
    zero, one = ctx.scalar(0.0, x), ctx.scalar(1.0, x)
    # keepdims: the statistics stay [1, .., 1] (the row-reduction template's shape) until the
    # outputs are made 0-d at the end
    hi = ctx.emit("maximum", [_reduce_all(ctx, "reduce_max", x), zero])
    lo = ctx.emit("minimum", [_reduce_all(ctx, "reduce_min", x), zero])
    span = ctx.emit("div", [ctx.emit("sub", [hi, lo]), ctx.scalar(255.0, x)])
    scale = ctx.emit("where", [ctx.emit("equal", [hi, lo]), one, span])
    zp_real = ctx.emit("neg", [ctx.emit("div", [lo, scale])])
    u8zero = _zero(ctx, DType.uint8)
    zp = ctx.emit("quantize", [zp_real, one, u8zero], dtype=DType.uint8)   # round + saturate
    y = ctx.emit("quantize", [x, scale, zp], dtype=DType.uint8)
    return [y, reshape(ctx, scale, ()), reshape(ctx, zp, ())]


# -- integer GEMM -------------------------------------------------------------------------------
def _matmul_integer(ctx: Context, a: Value, b: Value, az: Value, bz: Value) -> Value:
    """``(a - az) @ (b - bz)`` in int32, with numpy.matmul's promotion of 1-D operands; ``az``
    is per tensor or per row of ``a``, ``bz`` per tensor or per column of ``b``."""
    if a.type.rank == 0 or b.type.rank == 0:
        raise ModelError(f"integer MatMul needs operands of rank >= 1, got {a.type} and {b.type}")
    a2, b2 = matmul_operands(ctx, a, b)
    if az.type.is_static and az.type.numel == 1:
        az = reshape(ctx, az, ())
    elif az.type.rank == 1:                       # [M]: one per row
        az = reshape(ctx, az, (az.shape[0], 1))
    if bz.type.is_static and bz.type.numel == 1:
        bz = reshape(ctx, bz, ())
    return matmul_result(ctx, ctx.emit("matmul_integer", [a2, b2, az, bz]), a, b)


@onnx_op("MatMulInteger")
def _matmul_integer_op(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    a, b = ctx.required(0), ctx.required(1)
    return [_matmul_integer(ctx, a, b, _zero_point(ctx, 2, a), _zero_point(ctx, 3, b))]


def _per_row(ctx: Context, s: Value, what: str) -> Value:
    """A per-tensor or per-row (a [M] vector -> [M, 1]) scale of a matmul's A."""
    if s.type.rank == 0 or (s.type.is_static and s.type.numel == 1):
        return _scalar(ctx, s, what)
    if s.type.rank != 1:
        raise ModelError(f"{what} {s.type} must be a scalar or one per row")
    return reshape(ctx, s, (s.shape[0], 1))


@onnx_op("QLinearMatMul")
def _qlinear_matmul(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    """``y = saturate(round((a - az) @ (b - bz) * a_scale * b_scale / y_scale) + y_zp)``; the
    ratio in the scales' dtype (a float16 ratio is computed in float16, as the spec's
    reference does)."""
    a, a_scale = ctx.required(0), ctx.required(1)
    b, b_scale = ctx.required(3), ctx.required(4)
    y_scale = ctx.required(6)
    az, bz = _zero_point(ctx, 2, a), _zero_point(ctx, 5, b)
    y_zp = ctx.input(7)
    y_zp = _scalar(ctx, y_zp, "y_zero_point") if y_zp is not None else _zero(ctx, a.dtype)
    acc = _matmul_integer(ctx, a, b, _per_row(ctx, az, "a_zero_point"), bz)
    per_column = b_scale.type.rank == 1 and b_scale.shape[0] != 1     # [N] broadcasts as is
    b_scale = b_scale if per_column else _scalar(ctx, b_scale, "b_scale")
    ratio = ctx.emit("mul", [_per_row(ctx, a_scale, "a_scale"), b_scale])
    ratio = ctx.emit("div", [ratio, _scalar(ctx, y_scale, "y_scale")])
    return [_requantize(ctx, acc, ratio, y_zp, y_zp.dtype)]


@onnx_op("QGemm", domain=MS)
def _qgemm(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    """onnxruntime's quantized Gemm: ``alpha * (A - az) @ (B - bz) + C`` with ``C`` the int32
    bias at scale ``a_scale * b_scale``; requantized to ``y_scale`` / ``y_zero_point`` when
    given, else dequantized to float32. ``b`` per tensor or per column (of ``op(B)``)."""
    a, a_scale = ctx.required(0), ctx.required(1)
    b, b_scale = ctx.required(3), ctx.required(4)
    az, bz = _zero_point(ctx, 2, a), _zero_point(ctx, 5, b)
    if a.type.rank != 2 or b.type.rank != 2:
        raise ModelError(f"QGemm needs 2-D A and B, got {a.type} and {b.type}")
    if int(ctx.attr("transA", 0)):
        a = ctx.emit("transpose", [a], perm=(1, 0))
    if int(ctx.attr("transB", 0)):
        b = ctx.emit("transpose", [b], perm=(1, 0))          # folds for a constant weight
    acc = _matmul_integer(ctx, a, b, _scalar(ctx, az, "a_zero_point"), bz)
    bias = ctx.input(6)
    if bias is not None:
        if bias.dtype is not DType.int32:
            raise ModelError(f"QGemm's C must be int32, got {bias.type}")
        acc = ctx.emit("add", [acc, bias])
    per_column = b_scale.type.rank == 1 and b_scale.shape[0] != 1
    b_scale = b_scale if per_column else _scalar(ctx, b_scale, "b_scale")
    scale = ctx.emit("mul", [_scalar(ctx, a_scale, "a_scale"), b_scale])
    scale = ctx.emit("mul", [scale, ctx.scalar(float(ctx.attr("alpha", 1.0)), scale)])
    y_scale = ctx.input(7)
    if y_scale is None:
        return [ctx.emit("mul", [_cast(ctx, acc, DType.float32), scale])]
    y_zp = ctx.input(8)
    y_zp = _scalar(ctx, y_zp, "y_zero_point") if y_zp is not None else _zero(ctx, a.dtype)
    ratio = ctx.emit("div", [scale, _scalar(ctx, y_scale, "y_scale")])
    return [_requantize(ctx, acc, ratio, y_zp, y_zp.dtype)]


# -- integer convolution ------------------------------------------------------------------------
def _ints(ctx: Context, name: str, k: int, default: int) -> list[int]:
    v = [int(a) for a in ctx.attr(name, [default] * k)]
    if len(v) != k:
        raise ModelError(f"{name} {v} must have {k} entries (one per spatial axis)")
    return v


def _conv2d(ctx: Context, x: Value, w: Value, xz: Value | None = None) -> Value:
    """The node's Conv attributes (strides, dilations, pads / auto_pad, group) applied to
    ``conv2d`` (``conv2d_integer`` of ``x - xz`` with a zero point ``xz``); a 1-D convolution
    runs as a 2-D one of height 1."""
    if x.type.rank not in (3, 4) or w.type.rank != x.type.rank or not w.type.is_static:
        raise ModelError(f"only 1-D and 2-D convolution with a static weight is supported, "
                         f"got input {x.type} and weight {w.type}")
    k = x.type.rank - 2
    sizes = x.shape[2:]
    kernel = list(w.type.static_shape[2:])
    strides, dilations = _ints(ctx, "strides", k, 1), _ints(ctx, "dilations", k, 1)
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    if auto_pad == "NOTSET":
        pads = _ints(ctx, "pads", 2 * k, 0)
    elif auto_pad == "VALID":
        pads = [0] * (2 * k)
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        if not all(isinstance(d, int) for d in sizes):
            raise ModelError(f"auto_pad {auto_pad} needs static spatial dims, got "
                             f"{format_shape(x.shape)}")
        lo, hi = [], []
        for size, kk, s, d in zip(sizes, kernel, strides, dilations, strict=True):
            total = max((-(-size // s) - 1) * s + (kk - 1) * d + 1 - size, 0)
            small, big = total // 2, total - total // 2
            lo.append(small if auto_pad == "SAME_UPPER" else big)
            hi.append(big if auto_pad == "SAME_UPPER" else small)
        pads = lo + hi
    else:
        raise ModelError(f"unknown auto_pad {auto_pad!r}")
    group = int(ctx.attr("group", 1))
    op, extra = ("conv2d", []) if xz is None else ("conv2d_integer", [xz])
    if k == 2:
        return ctx.emit(op, [x, w, *extra], strides=strides, dilations=dilations, groups=group,
                        padding=(pads[0], pads[1], pads[2], pads[3]))
    x2 = reshape(ctx, x, (*x.shape[:2], 1, x.shape[2]))
    w2 = reshape(ctx, w, (*w.shape[:2], 1, kernel[0]))
    y = ctx.emit(op, [x2, w2, *extra], strides=(1, strides[0]), dilations=(1, dilations[0]),
                 groups=group, padding=(0, pads[0], 0, pads[1]))
    return reshape(ctx, y, (*y.shape[:2], y.shape[3]))


def _conv_integer(ctx: Context, x: Value, w: Value, xz: Value, wz: Value) -> Value:
    """``conv(x - xz, w - wz)`` in int32 (``conv2d_integer``: the kernel reads the bytes of
    ``x``); ``wz`` per tensor or per output channel."""
    i32 = DType.int32
    if wz.type.rank == 1 and wz.shape[0] != 1:
        wz = reshape(ctx, wz, (wz.shape[0], *([1] * (w.type.rank - 1))))
    elif wz.type.rank:
        wz = _scalar(ctx, wz, "w_zero_point")
    w32 = ctx.emit("sub", [_cast(ctx, w, i32), _cast(ctx, wz, i32)])   # folds for a weight
    return _conv2d(ctx, x, w32, _scalar(ctx, xz, "x_zero_point"))


@onnx_op("ConvInteger")
def _conv_integer_op(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x, w = ctx.required(0), ctx.required(1)
    return [_conv_integer(ctx, x, w, _zero_point(ctx, 2, x), _zero_point(ctx, 3, w))]


@onnx_op("QLinearConv")
def _qlinear_conv(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    """The int32 convolution plus the int32 bias, requantized per output channel by
    ``x_scale * w_scale[o] / y_scale``."""
    x, x_scale = ctx.required(0), ctx.required(1)
    w, w_scale = ctx.required(3), ctx.required(4)
    y_scale, bias = ctx.required(6), ctx.input(8)
    y_zp = ctx.input(7)
    y_zp = _scalar(ctx, y_zp, "y_zero_point") if y_zp is not None else _zero(ctx, x.dtype)
    acc = _conv_integer(ctx, x, w, _zero_point(ctx, 2, x), _zero_point(ctx, 5, w))
    spatial = [1] * (acc.type.rank - 2)
    if bias is not None:
        acc = ctx.emit("add", [acc, reshape(ctx, _cast(ctx, bias, DType.int32),
                                            (bias.shape[0], *spatial))])
    if w_scale.type.rank == 1 and w_scale.shape[0] != 1:
        w_scale = reshape(ctx, w_scale, (w_scale.shape[0], *spatial))
    else:
        w_scale = _scalar(ctx, w_scale, "w_scale")
    ratio = ctx.emit("div", [ctx.emit("mul", [_scalar(ctx, x_scale, "x_scale"), w_scale]),
                             _scalar(ctx, y_scale, "y_scale")])
    return [_requantize(ctx, acc, ratio, y_zp, y_zp.dtype)]


# -- com.microsoft: QLinearAdd, QLinearConcat ---------------------------------------------------
def _const_scale(v: Value) -> float | None:
    if v.data is None or v.data.size != 1:
        return None
    s = float(v.data.reshape(()))
    return s if s > 0 and np.isfinite(s) else None


def _binary_operands(ctx: Context) -> tuple[Value, Value, Value, Value, Value, list[Value]]:
    """A, B, their 0-d zero points, C's zero point and the scales (A, B, C) of QLinearAdd /
    QLinearMul (A, A_scale, A_zero_point, B, B_scale, B_zero_point, C_scale, C_zero_point)."""
    a, b = ctx.required(0), ctx.required(3)
    az = _scalar(ctx, _zero_point(ctx, 2, a), "A_zero_point")
    bz = _scalar(ctx, _zero_point(ctx, 5, b), "B_zero_point")
    cz = _scalar(ctx, _zero_point(ctx, 7, a), "C_zero_point")
    scales = [_scalar(ctx, ctx.required(i), what)
              for i, what in ((1, "A_scale"), (4, "B_scale"), (6, "C_scale"))]
    return a, b, az, bz, cz, scales


@onnx_op("QLinearAdd", domain=MS)
def _qlinear_add(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    """``C = saturate(round((A - az) * sa / sc + (B - bz) * sb / sc) + cz)``, broadcasting, in
    float32 as onnxruntime's reference kernel: each input dequantized at its ratio to the
    output scale (a multiply, no division per element), the sum rounded half to even."""
    a, b, az, bz, cz, (sa, sb, sc) = _binary_operands(ctx)
    f32 = DType.float32
    da = ctx.emit("dequantize", [a, ctx.emit("div", [sa, sc]), az], dtype=f32)
    db = ctx.emit("dequantize", [b, ctx.emit("div", [sb, sc]), bz], dtype=f32)
    one = ctx.constant(np.array(1.0, np.float32))
    return [ctx.emit("quantize", [ctx.emit("add", [da, db]), one, cz], dtype=cz.dtype)]


@onnx_op("QLinearMul", domain=MS)
def _qlinear_mul(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    """``C = saturate(round((A - az) * (B - bz) * sa * sb / sc) + cz)``, broadcasting, in
    float32 as onnxruntime's kernel: one ratio ``sa * sb / sc``, A dequantized at it and B at
    1 (its centred integers), so no division per element."""
    a, b, az, bz, cz, (sa, sb, sc) = _binary_operands(ctx)
    f32 = DType.float32
    one = ctx.constant(np.array(1.0, np.float32))
    ratio = ctx.emit("div", [ctx.emit("mul", [sa, sb]), sc])
    da = ctx.emit("dequantize", [a, ratio, az], dtype=f32)
    db = ctx.emit("dequantize", [b, one, bz], dtype=f32)
    return [ctx.emit("quantize", [ctx.emit("mul", [da, db]), one, cz], dtype=cz.dtype)]


@onnx_op("QLinearConcat", domain=MS)
def _qlinear_concat(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    """Inputs ``Y_scale, Y_zero_point, (X, X_scale, X_zero_point)...``: each input rescaled to
    the output's scale and zero point (as is when they already match), then concatenated."""
    y_scale = _scalar(ctx, ctx.required(0), "Y_scale")
    y_zp = _scalar(ctx, ctx.required(1), "Y_zero_point")
    if (len(node.input) - 2) % 3 or len(node.input) < 5:
        raise ModelError(f"QLinearConcat takes Y_scale, Y_zero_point and (X, X_scale, "
                         f"X_zero_point) triples, got {len(node.input)} inputs")
    sy = _const_scale(y_scale)
    i32 = DType.int32
    parts = []
    for i in range(2, len(node.input), 3):
        x = ctx.required(i)
        xs = _scalar(ctx, ctx.required(i + 1), "X_scale")
        xz = _scalar(ctx, ctx.required(i + 2), "X_zero_point")
        sx = _const_scale(xs)
        same_zp = xz.data is not None and y_zp.data is not None and xz.data == y_zp.data
        if sx is not None and sx == sy and same_zp:
            parts.append(x)
        elif sx is not None and sy is not None:
            centred = ctx.emit("sub", [_cast(ctx, x, i32), _cast(ctx, xz, i32)])
            v = fixed_point_rescale(ctx, centred, np.array(sx / sy), _span(x.dtype))
            parts.append(_saturate(ctx, ctx.emit("add", [v, _cast(ctx, y_zp, i32)]),
                                   y_zp.dtype))
        else:
            f = ctx.emit("dequantize", [x, xs, xz], dtype=DType.float32)
            parts.append(ctx.emit("quantize", [f, y_scale, y_zp], dtype=y_zp.dtype))
    rank = parts[0].type.rank
    axis = normalize_axis(int(ctx.attr("axis", 0)), rank)
    return [ctx.emit("concat", parts, axis=axis) if len(parts) > 1 else parts[0]]
