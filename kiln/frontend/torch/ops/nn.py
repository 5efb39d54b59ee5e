"""Layers: convolution, pooling, normalisation, resizing, dropout.

Normalisations return torch's tuples (output, mean, rstd); kiln computes the output only, and
an exported graph that reads the statistics (training code) fails at that ``getitem``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from kiln.errors import ModelError
from kiln.frontend.torch.context import Context, aten, static_ints
from kiln.ir.graph import Value
from kiln.ir.types import Dim


def _per_dim(values: Sequence[int] | int, n: int, what: str) -> tuple[int, ...]:
    """torch's ``int[2]`` arguments: one value for every spatial dim, or one each."""
    vals = static_ints([values] if isinstance(values, int) else values, what)
    if len(vals) == 1:
        return tuple(vals) * n
    if len(vals) != n:
        raise ModelError(f"{what} {vals} does not fit {n} spatial dims")
    return tuple(vals)


def _channel(cx: Context, v: Value, rank: int) -> Value:
    """A per-channel [C] vector shaped [C, 1, ...] to broadcast against [N, C, ...]."""
    return cx.reshape(v, (v.shape[0],) + (1,) * (rank - 2))


# -- convolution ------------------------------------------------------------------------------
@aten("convolution.default")
def _convolution(cx: Context, x: Value, weight: Value, bias: Value | None,
                 stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
                 transposed: bool, output_padding: Sequence[int], groups: int) -> Value:
    """2-D convolutions as kiln's ``conv2d`` / ``conv_transpose2d``; 1-D ones as 2-D ones of
    height 1."""
    rank = x.type.rank
    if rank not in (3, 4):
        raise ModelError(f"kiln convolves 1-D and 2-D inputs ([N, C, L] or [N, C, H, W]), got "
                         f"{x.type}")
    n = rank - 2
    strides, pads = _per_dim(stride, n, "stride"), _per_dim(padding, n, "padding")
    dilations = _per_dim(dilation, n, "dilation")
    extra = _per_dim(output_padding, n, "output_padding")
    w = cx.cast(weight, x.dtype)
    if n == 1:                                  # [N, C, L] -> [N, C, 1, L]
        x = cx.reshape(x, (*x.shape[:2], 1, x.shape[2]))
        w = cx.reshape(w, (*w.shape[:2], 1, w.shape[2]))
        strides, pads, dilations, extra = ((1, *strides), (0, *pads), (1, *dilations),
                                           (0, *extra))
    if transposed:
        # output_padding adds rows at the end: crop that much less there
        if any(e > p for e, p in zip(extra, pads, strict=True)):
            raise ModelError(f"conv_transpose output_padding {list(extra)} larger than its "
                             f"padding {list(pads)} is not supported")
        crop = (*pads, *(p - e for p, e in zip(pads, extra, strict=True)))
        y = cx.emit("conv_transpose2d", [x, w], strides=strides, padding=crop,
                    dilations=dilations, groups=int(groups))
    else:
        y = cx.emit("conv2d", [x, w], strides=strides, padding=pads, dilations=dilations,
                    groups=int(groups))
    if bias is not None:
        y = cx.emit("add", [y, _channel(cx, cx.cast(bias, y.dtype), 4)])
    return cx.reshape(y, cx.out_shape())


# -- pooling ----------------------------------------------------------------------------------
def _max_pool(cx: Context, x: Value, kernel_size: Sequence[int], stride: Sequence[int],
              padding: Sequence[int], dilation: Sequence[int], ceil_mode: bool) -> Value:
    n = x.type.rank - 2
    kernel = _per_dim(kernel_size, n, "kernel_size")
    strides = _per_dim(stride, n, "stride") if stride else kernel
    pads = _per_dim(padding, n, "padding")
    return cx.emit("pool", [x], mode="max", kernel=kernel, strides=strides, pads=pads * 2,
                   dilations=_per_dim(dilation, n, "dilation"), ceil_mode=bool(ceil_mode))


@aten("max_pool2d_with_indices.default", "max_pool3d_with_indices.default")
def _max_pool_with_indices(cx: Context, x: Value, kernel_size: Sequence[int],
                           stride: Sequence[int] = (), padding: Sequence[int] = (0,),
                           dilation: Sequence[int] = (1,), ceil_mode: bool = False
                           ) -> tuple[Value, None]:
    return _max_pool(cx, x, kernel_size, stride, padding, dilation, ceil_mode), None


@aten("max_pool1d.default", "max_pool2d.default", "max_pool3d.default")
def _max_pool_plain(cx: Context, x: Value, kernel_size: Sequence[int],
                    stride: Sequence[int] = (), padding: Sequence[int] = (0,),
                    dilation: Sequence[int] = (1,), ceil_mode: bool = False) -> Value:
    return _max_pool(cx, x, kernel_size, stride, padding, dilation, ceil_mode)


@aten("avg_pool1d.default")
def _avg_pool1d(cx: Context, x: Value, kernel_size: Sequence[int], stride: Sequence[int] = (),
                padding: Sequence[int] = (0,), ceil_mode: bool = False,
                count_include_pad: bool = True) -> Value:
    return _avg_pool(cx, x, kernel_size, stride, padding, ceil_mode, count_include_pad)


@aten("avg_pool2d.default", "avg_pool3d.default")
def _avg_pool(cx: Context, x: Value, kernel_size: Sequence[int], stride: Sequence[int] = (),
              padding: Sequence[int] = (0,), ceil_mode: bool = False,
              count_include_pad: bool = True, divisor_override: int | None = None) -> Value:
    n = x.type.rank - 2
    kernel = _per_dim(kernel_size, n, "kernel_size")
    strides = _per_dim(stride, n, "stride") if stride else kernel
    pads = _per_dim(padding, n, "padding")
    y = cx.emit("pool", [x], mode="avg", kernel=kernel, strides=strides, pads=pads * 2,
                ceil_mode=bool(ceil_mode), count_include_pad=bool(count_include_pad))
    if divisor_override is None:
        return y
    if any(pads) or ceil_mode:
        raise ModelError("avg_pool divisor_override is supported without padding and "
                         "ceil_mode only (where every window is whole)")
    return cx.emit("mul", [y, cx.scalar(math.prod(kernel) / divisor_override, y.dtype)])


def _adaptive(mode: str, with_indices: bool):  # noqa: ANN202 - a converter
    def convert(cx: Context, x: Value, output_size: Sequence[int]) -> object:
        n = len(output_size)
        sizes = static_ints(x.shape[-n:], "adaptive pooling's input dims")
        outs = _per_dim(output_size, n, "output_size")
        if any(s % o for s, o in zip(sizes, outs, strict=True)):
            raise ModelError(f"adaptive pooling of {sizes} to {list(outs)}: kiln takes output "
                             "sizes that divide the input's (equal windows)")
        kernel = tuple(s // o for s, o in zip(sizes, outs, strict=True))
        y = cx.emit("pool", [x], mode=mode, kernel=kernel, strides=kernel)
        return (y, None) if with_indices else y
    return convert


for _n in ("1d", "2d", "3d"):
    aten(f"_adaptive_avg_pool{_n}.default", f"adaptive_avg_pool{_n}.default")(
        _adaptive("avg", False))
    aten(f"adaptive_max_pool{_n}.default")(_adaptive("max", True))


# -- normalisation ------------------------------------------------------------------------------
@aten("native_layer_norm.default")
def _layer_norm(cx: Context, x: Value, normalized_shape: Sequence[Dim], weight: Value | None,
                bias: Value | None, eps: float) -> tuple[Value, None, None]:
    axis = x.type.rank - len(normalized_shape)
    shape = static_ints(x.shape[axis:], "layer_norm's normalized dims")
    gamma = cx.cast(weight, x.dtype) if weight is not None else \
        cx.constant(np.ones(shape, x.dtype.np), name="ones")
    beta = cx.cast(bias, x.dtype) if bias is not None else \
        cx.constant(np.zeros(shape, x.dtype.np), name="zeros")
    return cx.emit("layer_norm", [x, gamma, beta], axis=axis, epsilon=float(eps)), None, None


@aten("native_group_norm.default")
def _group_norm(cx: Context, x: Value, weight: Value | None, bias: Value | None, N: Dim,  # noqa: N803
                C: int, HxW: Dim, group: int, eps: float) -> tuple[Value, None, None]:  # noqa: N803
    """A layer norm over each group's [C / G, H, W], then the per-channel affine."""
    rest = static_ints(x.shape[1:], "group_norm's channel and spatial dims")
    size = math.prod(rest) // int(group)
    ones = cx.constant(np.ones(size, x.dtype.np), name="ones")
    zeros = cx.constant(np.zeros(size, x.dtype.np), name="zeros")
    grouped = cx.reshape(x, (x.shape[0], int(group), size))
    y = cx.reshape(cx.emit("layer_norm", [grouped, ones, zeros], axis=-1, epsilon=float(eps)),
                   x.shape)
    if weight is not None:
        y = cx.emit("mul", [y, _channel(cx, cx.cast(weight, y.dtype), y.type.rank)])
    if bias is not None:
        y = cx.emit("add", [y, _channel(cx, cx.cast(bias, y.dtype), y.type.rank)])
    return y, None, None


@aten("_native_batch_norm_legit_no_training.default")
def _batch_norm(cx: Context, x: Value, weight: Value | None, bias: Value | None,
                running_mean: Value, running_var: Value, momentum: float, eps: float
                ) -> tuple[Value, None, None]:
    """Inference batch norm, ``x * scale + shift`` per channel: with constant statistics
    (a trained model's) scale and shift are folded here, in float64; kiln's graph passes
    then fold them into the convolution before."""
    stats = [running_mean, running_var, weight, bias]
    if all(v is None or v.is_constant for v in stats):
        mean, var = running_mean.data.astype(np.float64), running_var.data.astype(np.float64)
        w = np.ones_like(mean) if weight is None else weight.data.astype(np.float64)
        b = np.zeros_like(mean) if bias is None else bias.data.astype(np.float64)
        scale = w / np.sqrt(var + eps)
        shift = b - mean * scale
        scale_v = cx.constant(scale.astype(x.dtype.np), name="bn_scale")
        shift_v = cx.constant(shift.astype(x.dtype.np), name="bn_shift")
    else:
        var = cx.emit("add", [cx.cast(running_var, x.dtype), cx.scalar(eps, x.dtype)])
        scale_v = cx.emit("rsqrt", [var])
        if weight is not None:
            scale_v = cx.emit("mul", [scale_v, cx.cast(weight, x.dtype)])
        shift_v = cx.emit("neg", [cx.emit("mul", [cx.cast(running_mean, x.dtype), scale_v])])
        if bias is not None:
            shift_v = cx.emit("add", [shift_v, cx.cast(bias, x.dtype)])
    rank = x.type.rank
    y = cx.emit("mul", [x, _channel(cx, scale_v, rank)])
    return cx.emit("add", [y, _channel(cx, shift_v, rank)]), None, None


@aten("_native_batch_norm_legit.default")
def _batch_norm_maybe_training(cx: Context, x: Value, weight: Value | None,
                               bias: Value | None, running_mean: Value, running_var: Value,
                               training: bool, momentum: float, eps: float
                               ) -> tuple[Value, None, None]:
    if training:
        raise ModelError("batch norm in training mode uses the batch's statistics: call "
                         "model.eval() before exporting")
    return _batch_norm(cx, x, weight, bias, running_mean, running_var, momentum, eps)


# -- resizing -----------------------------------------------------------------------------------
@aten("upsample_nearest2d.vec", "upsample_nearest1d.vec")
def _upsample_nearest(cx: Context, x: Value, output_size: Sequence[int] | None,
                      scale_factors: Sequence[float] | None) -> Value:
    """torch's "nearest": source index ``floor(dst * in / out)``."""
    sizes = static_ints(cx.out_shape(), "upsample's output shape")
    return cx.emit("resize", [x], sizes=tuple(sizes), scales=_scales(x, sizes, scale_factors),
                   mode="nearest", coordinate_mode="asymmetric", nearest_mode="floor")


@aten("upsample_bilinear2d.vec", "upsample_linear1d.vec")
def _upsample_linear(cx: Context, x: Value, output_size: Sequence[int] | None,
                     align_corners: bool, scale_factors: Sequence[float] | None) -> Value:
    sizes = static_ints(cx.out_shape(), "upsample's output shape")
    mode = "align_corners" if align_corners else "pytorch_half_pixel"
    return cx.emit("resize", [x], sizes=tuple(sizes), scales=_scales(x, sizes, scale_factors),
                   mode="linear", coordinate_mode=mode)


def _scales(x: Value, sizes: Sequence[int], factors: Sequence[float] | None
            ) -> tuple[float, ...]:
    """The factors torch maps coordinates by: the given ``scale_factor`` where there is one
    (torch uses it even when the size was rounded), else out / in."""
    ins = static_ints(x.shape, "upsample's input shape")
    if factors:
        return (1.0, 1.0, *(float(f) for f in factors))
    return tuple(o / i for o, i in zip(sizes, ins, strict=True))


# -- dropout ------------------------------------------------------------------------------------
@aten("dropout.default")
def _dropout(cx: Context, x: Value, p: float, train: bool | None) -> Value:
    if train:
        raise ModelError("dropout in training mode is random: call model.eval() before "
                         "exporting")
    return x


@aten("native_dropout.default")
def _native_dropout(cx: Context, x: Value, p: float, train: bool | None
                    ) -> tuple[Value, None]:
    return _dropout(cx, x, p, train), None
