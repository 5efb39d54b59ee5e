"""Convolution, pooling, normalisation and resizing."""

from __future__ import annotations

import numpy as np
import onnx

from kiln.errors import ModelError
from kiln.frontend.onnx.context import (
    Context,
    onnx_op,
    reshape,
)
from kiln.ir.graph import Value
from kiln.ir.types import format_shape, normalize_axis


@onnx_op("Conv")
def _conv(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x, w, b = ctx.required(0), ctx.required(1), ctx.input(2)
    if x.type.rank != 4 or w.type.rank != 4:
        raise ModelError(f"only 2-D convolution (NCHW input) is supported, got {x.type}")
    strides = tuple(ctx.attr("strides", (1, 1)))
    dilations = tuple(ctx.attr("dilations", (1, 1)))
    kernel = w.type.static_shape[2:]
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads_lo, pads_hi = [], []
        for size, k, s, d in zip(x.shape[2:], kernel, strides, dilations, strict=True):
            if not isinstance(size, int):
                raise ModelError("auto_pad SAME needs static spatial dims")
            total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small, big = total // 2, total - total // 2
            pads_lo.append(small if auto_pad == "SAME_UPPER" else big)
            pads_hi.append(big if auto_pad == "SAME_UPPER" else small)
        pads = (*pads_lo, *pads_hi)
    elif auto_pad in ("NOTSET", "VALID"):
        pads = tuple(ctx.attr("pads", (0, 0, 0, 0))) if auto_pad == "NOTSET" else (0, 0, 0, 0)
    else:
        raise ModelError(f"unknown auto_pad {auto_pad!r}")
    y = ctx.emit("conv2d", [x, w], strides=strides, padding=pads, dilations=dilations,
                 groups=int(ctx.attr("group", 1)))
    if b is None:
        return [y]
    return [ctx.emit("add", [y, reshape(ctx, b, (b.shape[0], 1, 1))])]


# -- normalisation ------------------------------------------------------------------------------

@onnx_op("LayerNormalization")
def _layer_norm(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x, scale, bias = ctx.required(0), ctx.required(1), ctx.input(2)
    axis = normalize_axis(ctx.attr("axis", -1), x.type.rank)
    eps = float(ctx.attr("epsilon", 1e-5))
    norm_shape = x.shape[axis:]

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
