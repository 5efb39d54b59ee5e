"""Convolution, pooling, normalisation, padding and resizing.

Several ONNX ops have no kiln op of their own and are written with others here:
BatchNormalization folds into the convolution before it (or becomes a per-channel multiply-add),
Instance/Group/MeanVariance normalisation are ``layer_norm`` on a reshaped or transposed view,
LRN is an average pool over channels, DepthToSpace/SpaceToDepth are reshape-transpose-reshape,
global pooling is a reduction, and 1-D convolution is a 2-D one of height 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import onnx

from kiln.errors import ModelError
from kiln.frontend.onnx.context import (
    Context,
    Converter,
    axes_list,
    onnx_op,
    reshape,
    static_dim,
)
from kiln.ir.graph import Value
from kiln.ir.types import format_shape, normalize_axis


def _static_spatial(x: Value, what: str) -> list[int]:
    dims = x.shape[2:]
    if not all(isinstance(d, int) for d in dims):
        raise ModelError(f"{what} needs static spatial dims, got {format_shape(x.shape)}")
    return [int(d) for d in dims]


def _explicit_pads(ctx: Context, sizes: Sequence[int], kernel: Sequence[int],
                   strides: Sequence[int], dilations: Sequence[int]) -> list[int]:
    """``pads`` (begin..., end...) from ``auto_pad`` or the ``pads`` attribute. SAME pads so
    that the output has ``ceil(size / stride)`` elements; SAME_UPPER puts the odd one at the
    end, SAME_LOWER at the start."""
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    k = len(kernel)
    if auto_pad == "NOTSET":
        pads = [int(p) for p in ctx.attr("pads", [0] * (2 * k))]
        if len(pads) != 2 * k:
            raise ModelError(f"pads {pads} must have 2 x {k} entries")
        return pads
    if auto_pad == "VALID":
        return [0] * (2 * k)
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        raise ModelError(f"unknown auto_pad {auto_pad!r}")
    lo, hi = [], []
    for size, kk, s, d in zip(sizes, kernel, strides, dilations, strict=True):
        total = max((-(-size // s) - 1) * s + (kk - 1) * d + 1 - size, 0)
        small, big = total // 2, total - total // 2
        lo.append(small if auto_pad == "SAME_UPPER" else big)
        hi.append(big if auto_pad == "SAME_UPPER" else small)
    return lo + hi


def _ints_attr(ctx: Context, name: str, k: int, default: int = 1) -> list[int]:
    v = [int(a) for a in ctx.attr(name, [default] * k)]
    if len(v) != k:
        raise ModelError(f"{name} {v} must have {k} entries (one per spatial axis)")
    return v


def _per_channel(ctx: Context, v: Value, rank: int) -> Value:
    """A [C] vector shaped [C, 1, ...] to broadcast along axis 1 of a rank-``rank`` tensor."""
    return reshape(ctx, v, (v.shape[0], *([1] * (rank - 2))))


# -- convolution --------------------------------------------------------------------------------
@onnx_op("Conv")
def _conv(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x, w, b = ctx.required(0), ctx.required(1), ctx.input(2)
    if x.type.rank not in (3, 4) or w.type.rank != x.type.rank:
        raise ModelError(f"only 1-D and 2-D convolution ([N, C, L] or [N, C, H, W] input) is "
                         f"supported, got input {x.type} and weight {w.type}")
    if not w.type.is_static:
        raise ModelError(f"the convolution weight needs a static shape, got {w.type}")
    k = x.type.rank - 2
    kernel = list(w.type.static_shape[2:])
    strides = _ints_attr(ctx, "strides", k)
    dilations = _ints_attr(ctx, "dilations", k)
    pads = _explicit_pads(ctx, _static_spatial(x, "Conv"), kernel, strides, dilations)
    group = int(ctx.attr("group", 1))
    if k == 1:   # a 1-D convolution is a 2-D one over a height of 1
        n, c, length = x.shape
        x2 = reshape(ctx, x, (n, c, 1, length))
        w2 = reshape(ctx, w, (*w.shape[:2], 1, kernel[0]))
        y = ctx.emit("conv2d", [x2, w2], strides=(1, strides[0]), padding=(0, pads[0], 0, pads[1]),
                     dilations=(1, dilations[0]), groups=group)
        y = reshape(ctx, y, (*y.shape[:2], y.shape[3]))
    else:
        y = ctx.emit("conv2d", [x, w], strides=strides, padding=(pads[0], pads[1], pads[2],
                                                                 pads[3]),
                     dilations=dilations, groups=group)
    if b is None:
        return [y]
    return [ctx.emit("add", [y, _per_channel(ctx, b, y.type.rank)])]


@onnx_op("ConvTranspose")
def _conv_transpose(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    """Output size ``stride * (in - 1) + output_padding + (k - 1) * dilation + 1 - pads``;
    see ``_transposed_conv2d`` for how it is computed."""
    x, w, b = ctx.required(0), ctx.required(1), ctx.input(2)
    if x.type.rank not in (3, 4) or w.type.rank != x.type.rank:
        raise ModelError(f"only 1-D and 2-D ConvTranspose is supported, got input {x.type} and "
                         f"weight {w.type}")
    if not w.type.is_static:
        raise ModelError(f"the ConvTranspose weight needs a static shape, got {w.type}")
    k = x.type.rank - 2
    sizes = _static_spatial(x, "ConvTranspose")
    kernel = list(w.type.static_shape[2:])
    strides = _ints_attr(ctx, "strides", k)
    dilations = _ints_attr(ctx, "dilations", k)
    out_pad = _ints_attr(ctx, "output_padding", k, 0)
    group = int(ctx.attr("group", 1))
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    full = [s * (n - 1) + op + (kk - 1) * d + 1
            for s, n, op, kk, d in zip(strides, sizes, out_pad, kernel, dilations, strict=True)]
    if ctx.has_attr("output_shape") or (auto_pad in ("SAME_UPPER", "SAME_LOWER")
                                        and not ctx.has_attr("pads")):
        want = [int(v) for v in ctx.attr("output_shape", [n * s for n, s in zip(sizes, strides,
                                                                               strict=True)])]
        want = want[-k:]
        total = [f - o for f, o in zip(full, want, strict=True)]
        if auto_pad == "SAME_UPPER":     # NOTSET with output_shape splits as SAME_LOWER
            pads = [t // 2 for t in total] + [t - t // 2 for t in total]
        else:
            pads = [t - t // 2 for t in total] + [t // 2 for t in total]
    elif auto_pad in ("NOTSET", "SAME_UPPER", "SAME_LOWER"):
        pads = _ints_attr(ctx, "pads", 2 * k, 0)
    elif auto_pad == "VALID":
        pads = [0] * (2 * k)
    else:
        raise ModelError(f"unknown auto_pad {auto_pad!r}")
    # output_padding only adds zeros at the end: a negative end pad of the full output
    pads = pads[:k] + [p - op for p, op in zip(pads[k:], out_pad, strict=True)]
    if k == 1:
        n, c, length = x.shape
        x = reshape(ctx, x, (n, c, 1, length))
        w = reshape(ctx, w, (*w.shape[:2], 1, kernel[0]))
        strides, dilations, kernel = [1, *strides], [1, *dilations], [1, *kernel]
        pads = [0, pads[0], 0, pads[1]]
    y = _transposed_conv2d(ctx, x, w, strides, pads, dilations, kernel, group)
    if k == 1:
        y = reshape(ctx, y, (*y.shape[:2], y.shape[3]))
    if b is None:
        return [y]
    return [ctx.emit("add", [y, _per_channel(ctx, b, y.type.rank)])]


def _transposed_conv2d(ctx: Context, x: Value, w: Value, strides: list[int], pads: list[int],
                       dilations: list[int], kernel: list[int], group: int) -> Value:
    """With a constant weight and no dilation, by stride phases: output row ``s * i + a``
    only meets the taps ``a + s * t``, so

        y_full[n, o, s*i + a, s*j + b]
            = sum_{c, t, u} x[n, c, i - t, j - u] w[c, o, a + s*t, b + s*u]

    is one ordinary conv2d to ``O * sh * sw`` channels (one per output channel and phase; taps
    past the kernel are zero) over ``x`` padded by the taps per phase less one, then a
    depth-to-space shuffle and a crop by ``pads``: every multiply-add is useful, and the conv2d
    template runs it. Otherwise ``conv_transpose2d`` (a conv over the zero-inserted input)."""
    c, og, kh, kw = w.type.static_shape
    n, _, h, wd = x.shape
    (sh, sw), (ph, pw) = strides, pads[:2]
    if not w.is_constant or dilations != [1, 1] or isinstance(h, str) or isinstance(wd, str):
        return ctx.emit("conv_transpose2d", [x, w], strides=strides,
                        padding=(pads[0], pads[1], pads[2], pads[3]), dilations=dilations,
                        groups=group)
    th, tw = -(-kh // sh), -(-kw // sw)            # taps per phase
    full = np.zeros((sh * th, sw * tw, c, og), w.data.dtype)    # kernel rows/cols padded
    full[:kh, :kw] = w.data.transpose(2, 3, 0, 1)
    # [t', a, u', b, c, o] with the taps flipped (t' = th - 1 - t) -> [(o, a, b), c / g, t', u']
    taps = full.reshape(th, sh, tw, sw, c, og)[::-1, :, ::-1]
    cg = c // group
    taps = taps.reshape(th, sh, tw, sw, group, cg, og).transpose(4, 6, 1, 3, 5, 0, 2)
    wz = np.ascontiguousarray(taps.reshape(group * og * sh * sw, cg, th, tw))
    z = ctx.emit("conv2d", [x, ctx.constant(wz, dtype=w.dtype)], groups=group,
                 padding=(th - 1, tw - 1, th - 1, tw - 1))
    hz, wz_ = h + th - 1, wd + tw - 1
    o = group * og
    if sh * sw > 1:
        z = reshape(ctx, z, (n, o, sh, sw, hz, wz_))
        z = ctx.emit("transpose", [z], perm=(0, 1, 4, 2, 5, 3))
        z = reshape(ctx, z, (n, o, hz * sh, wz_ * sw))
    out_h = sh * (h - 1) + kh - pads[0] - pads[2]
    out_w = sw * (wd - 1) + kw - pads[1] - pads[3]
    crop = [0, 0, -ph, -pw, 0, 0, out_h + ph - hz * sh, out_w + pw - wz_ * sw]
    return z if not any(crop) else ctx.emit("pad", [z], pads=crop)


def _mul(d: int | str, f: int) -> int | str:
    if isinstance(d, str):
        raise ModelError(f"a symbolic spatial dim {d!r} cannot be scaled statically")
    return d * f


# -- pooling ------------------------------------------------------------------------------------
def _pool(mode: str) -> Converter:
    def convert(node: onnx.NodeProto, ctx: Context) -> list[Value]:
        x = ctx.required(0)
        kernel = [int(v) for v in ctx.attr("kernel_shape", [])]
        k = len(kernel)
        if k == 0 or x.type.rank != k + 2:
            raise ModelError(f"kernel_shape {kernel} does not match the input {x.type}")
        strides = _ints_attr(ctx, "strides", k)
        dilations = _ints_attr(ctx, "dilations", k)
        pads = _explicit_pads(ctx, _static_spatial(x, node.op_type), kernel, strides, dilations)
        common = dict(kernel=kernel, strides=strides, pads=pads, dilations=dilations,
                      ceil_mode=bool(ctx.attr("ceil_mode", 0)))
        y = ctx.emit("pool", [x], mode=mode, **common,
                     count_include_pad=bool(ctx.attr("count_include_pad", 0)),
                     p=int(ctx.attr("p", 2)))
        if mode != "max" or len(node.output) < 2 or not node.output[1]:
            return [y]
        # MaxPool's Indices: where each window's max is, a second pass given the max
        return [y, ctx.emit("pool", [x, y], mode="argmax", **common,
                            storage_order=int(ctx.attr("storage_order", 0)))]
    return convert


onnx_op("MaxPool")(_pool("max"))
onnx_op("AveragePool")(_pool("avg"))
onnx_op("LpPool")(_pool("lp"))


def _global_pool(kiln_op: str) -> Converter:
    def convert(node: onnx.NodeProto, ctx: Context) -> list[Value]:
        x = ctx.required(0)
        return [ctx.emit(kiln_op, [x], axes=tuple(range(2, x.type.rank)), keepdims=True)]
    return convert


onnx_op("GlobalAveragePool")(_global_pool("reduce_mean"))
onnx_op("GlobalMaxPool")(_global_pool("reduce_max"))


# -- normalisation ------------------------------------------------------------------------------
@onnx_op("BatchNormalization")
def _batch_norm(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    """Inference mode: ``y = x * s + t`` with ``s = scale / sqrt(var + eps)`` and
    ``t = bias - mean * s``. After a convolution with a constant weight (and bias) the
    multiply-add folds into the weight and bias: the original convolution is then dead."""
    if ctx.attr("training_mode", 0):
        raise ModelError("BatchNormalization training_mode=1 (batch statistics) is not "
                         "supported: kiln compiles inference graphs")
    x, scale, bias, mean, var = (ctx.required(i) for i in range(5))
    eps = float(ctx.attr("epsilon", 1e-5))
    params = (scale, bias, mean, var)
    if all(p.is_constant for p in params):
        sc, bi, mu, va = (p.data.astype(np.float64) for p in params)
        s = sc / np.sqrt(va + eps)
        t = bi - mu * s
        folded = _fold_into_conv(ctx, x, s, t)
        if folded is not None:
            return [folded]
        s_v = ctx.constant(s.astype(x.dtype.np), dtype=x.dtype)
        t_v = ctx.constant(t.astype(x.dtype.np), dtype=x.dtype)
    else:
        s_v = ctx.emit("div", [scale, ctx.emit("sqrt", [ctx.emit("add", [var, ctx.scalar(eps,
                                                                                         var)])])])
        t_v = ctx.emit("sub", [bias, ctx.emit("mul", [mean, s_v])])
    rank = x.type.rank
    y = ctx.emit("mul", [x, _per_channel(ctx, s_v, rank)]) if rank > 1 else \
        ctx.emit("mul", [x, s_v])
    return [ctx.emit("add", [y, _per_channel(ctx, t_v, rank) if rank > 1 else t_v])]


def _fold_into_conv(ctx: Context, x: Value, s: np.ndarray, t: np.ndarray) -> Value | None:
    """``conv2d(x, w) [+ b]`` then ``* s + t`` as ``conv2d(x, w * s) + (b * s + t)``, when
    the weight and bias are constants; None when ``x`` is not such a convolution."""
    conv, b = x.producer, None
    if conv is not None and conv.op.name == "add":
        bias_in = [v for v in conv.inputs if v.is_constant]
        other = [v for v in conv.inputs if not v.is_constant]
        if len(bias_in) != 1 or len(other) != 1 or other[0].producer is None:
            return None
        b = bias_in[0].data
        conv = other[0].producer
    if conv is None or conv.op.name != "conv2d" or not conv.inputs[1].is_constant:
        return None
    o = conv.outputs[0].shape[1]
    if s.shape != (o,) or (b is not None and b.size not in (1, o)):
        return None
    w = conv.inputs[1].data
    bias = np.zeros(o) if b is None else np.broadcast_to(b.astype(np.float64).reshape(-1), (o,))
    w_new = (w.astype(np.float64) * s.reshape(-1, 1, 1, 1)).astype(w.dtype)
    b_new = (bias * s + t).astype(x.dtype.np)
    at = conv.attrs
    y = ctx.emit("conv2d", [conv.inputs[0], ctx.constant(w_new, dtype=x.dtype)],
                 strides=at.strides, padding=at.padding, dilations=at.dilations, groups=at.groups)
    return ctx.emit("add", [y, ctx.constant(b_new.reshape(o, 1, 1), dtype=x.dtype)])


def _normalize_trailing(ctx: Context, x: Value, axis: int, eps: float) -> Value:
    """``layer_norm`` over axes ``[axis, rank)`` without scale and bias."""
    norm_shape = x.shape[axis:]
    if not all(isinstance(d, int) for d in norm_shape):
        raise ModelError(f"normalised dims {format_shape(norm_shape)} must be static")
    ones = ctx.constant(np.ones(norm_shape, x.dtype.np), dtype=x.dtype)
    zeros = ctx.constant(np.zeros(norm_shape, x.dtype.np), dtype=x.dtype)
    return ctx.emit("layer_norm", [x, ones, zeros], axis=axis, epsilon=eps)


@onnx_op("InstanceNormalization")
def _instance_norm(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x, scale, bias = ctx.required(0), ctx.required(1), ctx.required(2)
    rank = x.type.rank
    y = _normalize_trailing(ctx, x, 2, float(ctx.attr("epsilon", 1e-5)))
    y = ctx.emit("mul", [y, _per_channel(ctx, scale, rank)])
    return [ctx.emit("add", [y, _per_channel(ctx, bias, rank)])]


@onnx_op("GroupNormalization")
def _group_norm(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    """Statistics per (sample, group of channels). Opset 18 scales and shifts per group
    (scale and bias of shape [G]), opset 21 per channel ([C])."""
    x, scale, bias = ctx.required(0), ctx.required(1), ctx.required(2)
    groups = int(ctx.attr("num_groups"))
    n, c = x.shape[0], static_dim(x, 1, "GroupNormalization")
    if groups < 1 or c % groups:
        raise ModelError(f"num_groups={groups} must divide the {c} channels")
    rest = math.prod(_static_spatial(x, "GroupNormalization"))
    grouped = reshape(ctx, x, (n, groups, c // groups * rest))
    y = _normalize_trailing(ctx, grouped, 2, float(ctx.attr("epsilon", 1e-5)))
    per_channel = scale.shape[0] == c and (ctx.opset >= 21 or groups == c)
    if not per_channel:
        if scale.shape != (groups,) or bias.shape != (groups,):
            raise ModelError(f"GroupNormalization scale {scale.type} and bias {bias.type} must "
                             f"be [{groups}] (one per group) or [{c}] (one per channel)")
        y = ctx.emit("mul", [y, reshape(ctx, scale, (groups, 1))])
        y = ctx.emit("add", [y, reshape(ctx, bias, (groups, 1))])
        return [reshape(ctx, y, x.shape)]
    y = reshape(ctx, y, x.shape)
    y = ctx.emit("mul", [y, _per_channel(ctx, scale, x.type.rank)])
    return [ctx.emit("add", [y, _per_channel(ctx, bias, x.type.rank)])]


@onnx_op("MeanVarianceNormalization")
def _mvn(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    """``(x - mean) / std`` over ``axes`` (default N, H, W): the axes are moved last and
    normalised as one row. ONNX adds 1e-9 to the std; an epsilon of 1e-18 on the variance
    matches it to float32 precision."""
    x = ctx.required(0)
    rank = x.type.rank
    axes = axes_list(ctx.attr("axes", [0, 2, 3]), rank)
    rest = [a for a in range(rank) if a not in axes]
    perm = rest + sorted(axes)
    xt = x if perm == list(range(rank)) else ctx.emit("transpose", [x], perm=tuple(perm))
    y = _normalize_trailing(ctx, xt, len(rest), 1e-18)
    if xt is x:
        return [y]
    return [ctx.emit("transpose", [y], perm=tuple(int(i) for i in np.argsort(perm)))]


@onnx_op("LRN")
def _lrn(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    """``y = x / (bias + alpha / size * sum_{window over channels} x^2) ^ beta``: the window
    sum is ``size`` times an average pool (zeros counted) along the channel axis."""
    x = ctx.required(0)
    size = int(ctx.attr("size"))
    alpha, beta = float(ctx.attr("alpha", 1e-4)), float(ctx.attr("beta", 0.75))
    bias = float(ctx.attr("bias", 1.0))
    n, c = x.shape[0], static_dim(x, 1, "LRN")
    rest = math.prod(_static_spatial(x, "LRN"))
    sq = reshape(ctx, ctx.emit("mul", [x, x]), (n, 1, c, rest))
    avg = ctx.emit("pool", [sq], mode="avg", kernel=(size, 1),
                   pads=((size - 1) // 2, 0, size - 1 - (size - 1) // 2, 0),
                   count_include_pad=True)
    den = ctx.emit("add", [ctx.emit("mul", [avg, ctx.scalar(alpha, x)]), ctx.scalar(bias, x)])
    den = ctx.emit("pow", [den, ctx.scalar(beta, x)])
    return [ctx.emit("div", [x, reshape(ctx, den, x.shape)])]


@onnx_op("LayerNormalization")
def _layer_norm(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x, scale, bias = ctx.required(0), ctx.required(1), ctx.input(2)
    axis = normalize_axis(ctx.attr("axis", -1), x.type.rank)
    eps = float(ctx.attr("epsilon", 1e-5))
    norm_shape = x.shape[axis:]
    if len(node.output) > 1 and any(node.output[1:]):
        return _layer_norm_with_stats(ctx, x, scale, bias, axis, eps)

    def fitted(v: Value | None, fill: float) -> Value | None:
        """``v`` in the exact [x.shape[axis:]] layout kiln's layer_norm takes, if possible."""
        if v is not None and v.shape == norm_shape:
            return v
        if not all(isinstance(d, int) for d in norm_shape):
            return None
        data = np.full(norm_shape, fill, x.dtype.np) if v is None else v.data
        if data is None:
            return None
        try:
            return ctx.constant(np.broadcast_to(data, norm_shape).copy(), dtype=x.dtype)
        except ValueError:
            raise ModelError(f"scale/bias of shape {format_shape(data.shape)} does not "
                             f"broadcast to {format_shape(norm_shape)}") from None

    gamma, beta = fitted(scale, 1.0), fitted(bias, 0.0)
    if gamma is not None and beta is not None:
        return [ctx.emit("layer_norm", [x, gamma, beta], axis=axis, epsilon=eps)]
    # a run-time scale or bias of a broadcastable shape: normalise, then apply them
    ones, zeros = fitted(None, 1.0), fitted(None, 0.0)
    if ones is None or zeros is None:
        raise ModelError(f"normalised dims {format_shape(norm_shape)} must be static")
    y = ctx.emit("layer_norm", [x, ones, zeros], axis=axis, epsilon=eps)
    y = ctx.emit("mul", [y, scale])
    return [y if bias is None else ctx.emit("add", [y, bias])]


def _layer_norm_with_stats(ctx: Context, x: Value, scale: Value, bias: Value | None, axis: int,
                           eps: float) -> list[Value]:
    """LayerNormalization whose Mean and InvStdDev outputs are read: written out with
    reductions (two passes: the variance is the mean of ``(x - mean)^2``)."""
    axes = tuple(range(axis, x.type.rank))
    mean = ctx.emit("reduce_mean", [x], axes=axes, keepdims=True)
    d = ctx.emit("sub", [x, mean])
    var = ctx.emit("reduce_mean", [ctx.emit("mul", [d, d])], axes=axes, keepdims=True)
    inv = ctx.emit("rsqrt", [ctx.emit("add", [var, ctx.scalar(eps, x)])])
    y = ctx.emit("mul", [ctx.emit("mul", [d, inv]), scale])
    if bias is not None:
        y = ctx.emit("add", [y, bias])
    return [y, mean, inv]


# -- padding and rearranging --------------------------------------------------------------------
@onnx_op("Pad")
def _pad(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    """Pads as an attribute before opset 11, as input 1 after; the constant as an attribute
    (``value``) or input 2; opset 18 adds ``axes`` (input 3) naming the padded axes."""
    x = ctx.required(0)
    rank = x.type.rank
    mode = ctx.attr("mode", "constant")
    if ctx.opset < 11:
        pads = [int(p) for p in ctx.attr("pads", ctx.attr("paddings", []))]
        value = float(ctx.attr("value", 0.0))
    else:
        pads = [int(p) for p in ctx.const_input(1, required=True).reshape(-1)]
        cv = ctx.const_input(2)
        value = 0.0 if cv is None or cv.size == 0 else cv.reshape(-1)[0].item()
    raw_axes = ctx.const_input(3) if ctx.opset >= 18 else None
    if raw_axes is not None:
        axes = axes_list(raw_axes, rank)
        if len(pads) != 2 * len(axes):
            raise ModelError(f"pads {pads} must have 2 x {len(axes)} entries for axes {axes}")
        full = [0] * (2 * rank)
        for i, a in enumerate(axes):
            full[a], full[rank + a] = pads[i], pads[len(axes) + i]
        pads = full
    if len(pads) != 2 * rank:
        raise ModelError(f"pads {pads} must have 2 x rank = {2 * rank} entries for {x.type}")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise ModelError(f"Pad mode {mode!r} is not supported (constant, reflect, edge, wrap)")
    if not any(pads):
        return [x]
    return [ctx.emit("pad", [x], pads=pads, mode=mode, value=value)]


@onnx_op("DepthToSpace")
def _depth_to_space(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x = ctx.required(0)
    b = int(ctx.attr("blocksize"))
    n, c, h, w = x.shape
    c = static_dim(x, 1, "DepthToSpace")
    if c % (b * b):
        raise ModelError(f"DepthToSpace blocksize {b}: {c} channels are not a multiple of {b * b}")
    if ctx.attr("mode", "DCR") == "DCR":
        y = reshape(ctx, x, (n, b, b, c // (b * b), h, w))
        y = ctx.emit("transpose", [y], perm=(0, 3, 4, 1, 5, 2))
    else:
        y = reshape(ctx, x, (n, c // (b * b), b, b, h, w))
        y = ctx.emit("transpose", [y], perm=(0, 1, 4, 2, 5, 3))
    return [reshape(ctx, y, (n, c // (b * b), _mul(h, b), _mul(w, b)))]


@onnx_op("SpaceToDepth")
def _space_to_depth(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x = ctx.required(0)
    b = int(ctx.attr("blocksize"))
    n, c, h, w = x.shape
    h, w = static_dim(x, 2, "SpaceToDepth"), static_dim(x, 3, "SpaceToDepth")
    if h % b or w % b:
        raise ModelError(f"SpaceToDepth blocksize {b} must divide the height {h} and width {w}")
    y = reshape(ctx, x, (n, c, h // b, b, w // b, b))
    crd = ctx.attr("mode", "DCR") == "CRD"     # channel-major blocks (the mode of opset 25)
    y = ctx.emit("transpose", [y], perm=(0, 1, 3, 5, 2, 4) if crd else (0, 3, 5, 1, 2, 4))
    return [reshape(ctx, y, (n, _mul(c, b * b), h // b, w // b))]


# -- resizing -----------------------------------------------------------------------------------
@onnx_op("Resize")
def _resize(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    """Opset 10: (X, scales), asymmetric coordinates. Opset 11+: (X, roi, scales, sizes),
    exactly one of scales and sizes given. Opset 18 adds ``axes``, ``keep_aspect_ratio_policy``
    and ``antialias`` (not supported)."""
    x = ctx.required(0)
    if not x.type.is_static:
        raise ModelError(f"Resize needs a static input shape, got {x.type}")
    shape = x.type.static_shape
    rank = len(shape)
    if ctx.attr("antialias", 0):
        raise ModelError("Resize antialias=1 is not supported")
    mode = ctx.attr("mode", "nearest")
    if ctx.opset < 11:
        roi, scales, sizes = None, ctx.const_input(1, required=True), None
        coord = "asymmetric"
    else:
        roi, scales, sizes = ctx.const_input(1), ctx.const_input(2), ctx.const_input(3)
        coord = ctx.attr("coordinate_transformation_mode", "half_pixel")
    axes = axes_list(ctx.attr("axes"), rank) if ctx.attr("axes") is not None else list(range(rank))
    if roi is not None and roi.size == 0:
        roi = None
    if scales is not None and scales.size == 0:
        scales = None
    if sizes is not None and sizes.size == 0:
        sizes = None
    full_roi = None
    if roi is not None:
        full_roi = [0.0] * rank + [1.0] * rank
        r = roi.reshape(-1).astype(np.float64).tolist()
        if len(r) != 2 * len(axes):
            raise ModelError(f"Resize roi {r} must have 2 x {len(axes)} entries")
        for i, a in enumerate(axes):
            full_roi[a], full_roi[rank + a] = r[i], r[len(axes) + i]
    out_sizes, out_scales = list(shape), [1.0] * rank
    if sizes is not None:
        sz = [int(v) for v in sizes.reshape(-1)]
        if len(sz) != len(axes):
            raise ModelError(f"Resize sizes {sz} must have {len(axes)} entries")
        for a, v in zip(axes, sz, strict=True):
            out_sizes[a], out_scales[a] = v, v / shape[a]
        policy = ctx.attr("keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            picks = [out_scales[a] for a in axes]
            if policy not in ("not_larger", "not_smaller"):
                raise ModelError(f"unknown keep_aspect_ratio_policy {policy!r}")
            s = min(picks) if policy == "not_larger" else max(picks)
            for a in axes:
                out_scales[a], out_sizes[a] = s, int(s * shape[a] + 0.5)
    elif scales is not None:
        sc = [float(v) for v in scales.reshape(-1)]
        if len(sc) != len(axes):
            raise ModelError(f"Resize scales {sc} must have {len(axes)} entries")
        for a, v in zip(axes, sc, strict=True):
            # in float32 arithmetic as onnxruntime: 5 x 1.4f is 7, not 6.9999999
            out_scales[a] = v
            out_sizes[a] = int(np.floor(np.float32(v) * np.float32(shape[a])))
    else:
        raise ModelError("Resize needs scales or sizes")
    return [_emit_resize(ctx, x, out_sizes, out_scales, mode, coord, full_roi)]


def _emit_resize(ctx: Context, x: Value, sizes: list[int], scales: list[float], mode: str,
                 coord: str, roi: list[float] | None, nearest_mode: str | None = None) -> Value:
    if coord == "tf_crop_and_resize" and roi is None:
        raise ModelError("Resize tf_crop_and_resize needs a roi input")
    if list(sizes) == list(x.type.static_shape) and all(s == 1.0 for s in scales) \
            and coord != "tf_crop_and_resize":
        return x
    return ctx.emit("resize", [x], sizes=sizes, scales=scales, mode=mode,
                    coordinate_mode=coord,
                    nearest_mode=nearest_mode or ctx.attr("nearest_mode", "round_prefer_floor"),
                    cubic_coeff_a=float(ctx.attr("cubic_coeff_a", -0.75)),
                    exclude_outside=bool(ctx.attr("exclude_outside", 0)),
                    extrapolation_value=float(ctx.attr("extrapolation_value", 0.0)),
                    roi=None if coord != "tf_crop_and_resize" else roi)


@onnx_op("Upsample")
def _upsample(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    """Deprecated Resize: scales as an attribute (opset 7) or input 1 (opset 9), asymmetric
    coordinates, nearest rounding down (``np.repeat`` for whole scales)."""
    x = ctx.required(0)
    if not x.type.is_static:
        raise ModelError(f"Upsample needs a static input shape, got {x.type}")
    shape = x.type.static_shape
    raw = ctx.attr("scales") if ctx.opset < 9 else ctx.const_input(1, required=True)
    scales = [float(v) for v in np.asarray(raw).reshape(-1)]
    if len(scales) != len(shape):
        raise ModelError(f"Upsample scales {scales} must have one entry per axis of {x.type}")
    mode = ctx.attr("mode", "nearest")
    mode = "linear" if mode in ("linear", "bilinear") else mode
    sizes = [int(math.floor(s * d)) for s, d in zip(scales, shape, strict=True)]
    return [_emit_resize(ctx, x, sizes, scales, mode, "asymmetric", None, "floor")]
