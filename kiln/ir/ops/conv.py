"""Convolution: ``conv2d`` on NCHW inputs with OIHW weights (ONNX ``Conv`` semantics).

    y[n, o, i, j] = sum_{c, p, q} xpad[n, g * C_g + c, i * sh + p * dh, j * sw + q * dw]
                                  * w[o, c, p, q]          with g = o // (O / groups)

``xpad`` is ``x`` zero-padded by ``padding = (top, left, bottom, right)``; ``w`` is
[O, C / groups, KH, KW]. ``groups == C`` (with O a multiple of C) is a depthwise convolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kiln.errors import ModelError
from kiln.ir.ops.registry import OpDef, Pattern, register
from kiln.ir.types import TensorType


def _pair(value: int | tuple[int, ...], name: str) -> tuple[int, int]:
    v = (value, value) if isinstance(value, int) else tuple(value)
    if len(v) != 2:
        raise ModelError(f"conv2d {name} must be an int or a pair, got {value!r}")
    return int(v[0]), int(v[1])


def _padding(value: int | tuple[int, ...]) -> tuple[int, int, int, int]:
    """An int, a pair (height, width) or (top, left, bottom, right)."""
    v = (value,) if isinstance(value, int) else tuple(value)
    if len(v) == 1:
        v = v * 4
    elif len(v) == 2:
        v = (v[0], v[1], v[0], v[1])
    if len(v) != 4:
        raise ModelError(f"conv2d padding must be an int, a pair or (top, left, bottom, right), "
                         f"got {value!r}")
    return int(v[0]), int(v[1]), int(v[2]), int(v[3])


@dataclass(frozen=True)
class Conv2dAttrs:
    """``strides`` and ``dilations`` are (height, width); ``padding`` is (top, left, bottom,
    right). Ints and pairs are accepted and normalised."""

    strides: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilations: tuple[int, int] = (1, 1)
    groups: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "strides", _pair(self.strides, "strides"))
        object.__setattr__(self, "dilations", _pair(self.dilations, "dilations"))
        object.__setattr__(self, "padding", _padding(self.padding))
        object.__setattr__(self, "groups", int(self.groups))
        if min(self.strides) < 1 or min(self.dilations) < 1:
            raise ModelError(f"conv2d strides {list(self.strides)} and dilations "
                             f"{list(self.dilations)} must be >= 1")
        if min(self.padding) < 0:
            raise ModelError(f"conv2d padding {list(self.padding)} must be >= 0")
        if self.groups < 1:
            raise ModelError(f"conv2d groups={self.groups} must be >= 1")


def conv_output_size(size: int, kernel: int, stride: int, dilation: int, pad_lo: int,
                     pad_hi: int) -> int:
    """Output extent along one spatial axis (floor mode, as ONNX and PyTorch)."""
    return (size + pad_lo + pad_hi - (kernel - 1) * dilation - 1) // stride + 1


def _infer_conv2d(at: Conv2dAttrs, x: TensorType, w: TensorType) -> TensorType:
    if x.rank != 4 or w.rank != 4:
        raise ModelError(f"conv2d needs an NCHW input and an OIHW weight (both rank 4), "
                         f"got {x} and {w}")
    if x.dtype != w.dtype:
        raise ModelError(f"conv2d needs input and weight of one dtype, got {x.dtype} and "
                         f"{w.dtype}")
    if not (w.is_static and all(isinstance(d, int) for d in x.shape[1:])):
        raise ModelError(f"conv2d supports a symbolic batch dim only, got {x} and {w}")
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    g = at.groups
    if c % g or o % g:
        raise ModelError(f"conv2d groups={g} must divide the input channels ({c}) and the "
                         f"output channels ({o})")
    if cg * g != c:
        raise ModelError(f"conv2d channel mismatch: input has {c} channels, the weight "
                         f"{list(w.shape)} expects {cg} x {g} groups = {cg * g}")
    pt, pl, pb, pr = at.padding
    (sh, sw), (dh, dw) = at.strides, at.dilations
    for axis, size, k, d, lo, hi in (("height", h, kh, dh, pt, pb), ("width", wd, kw, dw, pl, pr)):
        span = (k - 1) * d + 1
        if span > size + lo + hi:
            raise ModelError(f"conv2d kernel {axis} {k} (dilated to {span}) is larger than the "
                             f"padded input {axis} {size + lo + hi}")
    oh = conv_output_size(h, kh, sh, dh, pt, pb)
    ow = conv_output_size(wd, kw, sw, dw, pl, pr)
    return TensorType((n, o, oh, ow), x.dtype)


def _conv2d_ref(at: Conv2dAttrs, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """im2col as a strided view of the padded input, then one contraction per group."""
    out_type = _infer_conv2d(at, TensorType.of(x.shape, x.dtype), TensorType.of(w.shape, w.dtype))
    n, _, oh, ow = out_type.static_shape
    o, cg, kh, kw = w.shape
    g = at.groups
    pt, pl, pb, pr = at.padding
    (sh, sw), (dh, dw) = at.strides, at.dilations
    acc = np.float64 if x.dtype.kind == "f" else np.int64
    xp = np.pad(x.astype(acc), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    span = ((kh - 1) * dh + 1, (kw - 1) * dw + 1)
    win = np.lib.stride_tricks.sliding_window_view(xp, span, axis=(2, 3))
    win = win[:, :, : (oh - 1) * sh + 1 : sh, : (ow - 1) * sw + 1 : sw, ::dh, ::dw]
    win = win.reshape(n, g, cg, oh, ow, kh, kw)        # [n, g, c, oh, ow, kh, kw]
    wg = w.astype(acc).reshape(g, o // g, cg, kh, kw)   # [g, o, c, kh, kw]
    y = np.einsum("ngchwpq,gocpq->ngohw", win, wg, optimize=True)
    return y.reshape(n, o, oh, ow).astype(x.dtype)


register(OpDef("conv2d", Conv2dAttrs, Pattern.OUT_FUSABLE, _infer_conv2d, _conv2d_ref,
               num_inputs=(2, 2)))



@dataclass(frozen=True)
class ConvTranspose2dAttrs:
    """The transpose (gradient) of ``conv2d``: each input pixel scatters ``w[c, o]`` times itself
    onto the output at ``i * stride + k * dilation - pad``. ``padding`` (top, left, bottom, right)
    crops the full output; a negative entry extends it with zeros (ONNX ``output_padding`` is a
    negative bottom / right pad)."""

    strides: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilations: tuple[int, int] = (1, 1)
    groups: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "strides", _pair(self.strides, "strides"))
        object.__setattr__(self, "dilations", _pair(self.dilations, "dilations"))
        object.__setattr__(self, "padding", _padding(self.padding))
        object.__setattr__(self, "groups", int(self.groups))
        if min(self.strides) < 1 or min(self.dilations) < 1 or self.groups < 1:
            raise ModelError(f"conv_transpose2d strides {list(self.strides)}, dilations "
                             f"{list(self.dilations)} and groups {self.groups} must be >= 1")


def conv_transpose_output_size(size: int, kernel: int, stride: int, dilation: int, pad_lo: int,
                               pad_hi: int) -> int:
    return stride * (size - 1) + (kernel - 1) * dilation + 1 - pad_lo - pad_hi


def _infer_conv_transpose2d(at: ConvTranspose2dAttrs, x: TensorType,
                            w: TensorType) -> TensorType:
    if x.rank != 4 or w.rank != 4:
        raise ModelError(f"conv_transpose2d needs an NCHW input and a [C, O / groups, KH, KW] "
                         f"weight, got {x} and {w}")
    if x.dtype != w.dtype:
        raise ModelError(f"conv_transpose2d needs input and weight of one dtype, got {x.dtype} "
                         f"and {w.dtype}")
    if not (w.is_static and all(isinstance(d, int) for d in x.shape[1:])):
        raise ModelError(f"conv_transpose2d supports a symbolic batch dim only, got {x} and {w}")
    n, c, h, wd = x.shape
    cw, og, kh, kw = w.shape
    if cw != c or c % at.groups:
        raise ModelError(f"conv_transpose2d weight {list(w.shape)} needs {c} input channels "
                         f"divisible by groups={at.groups}")
    pt, pl, pb, pr = at.padding
    (sh, sw), (dh, dw) = at.strides, at.dilations
    oh = conv_transpose_output_size(h, kh, sh, dh, pt, pb)
    ow = conv_transpose_output_size(wd, kw, sw, dw, pl, pr)
    if oh < 1 or ow < 1:
        raise ModelError(f"conv_transpose2d padding {list(at.padding)} leaves no output")
    return TensorType((n, og * at.groups, oh, ow), x.dtype)


def _conv_transpose2d_ref(at: ConvTranspose2dAttrs, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Scatter each tap onto the full output, then crop (or zero-extend) by the padding."""
    n, c, h, wd = x.shape
    _, og, kh, kw = w.shape
    g = at.groups
    (sh, sw), (dh, dw) = at.strides, at.dilations
    acc = np.float64 if x.dtype.kind == "f" else np.int64
    full = np.zeros((n, g * og, (h - 1) * sh + (kh - 1) * dh + 1,
                     (wd - 1) * sw + (kw - 1) * dw + 1), acc)
    xg = x.astype(acc).reshape(n, g, c // g, h, wd)
    wg = w.astype(acc).reshape(g, c // g, og, kh, kw)
    for p in range(kh):
        for q in range(kw):
            part = np.einsum("ngchw,gco->ngohw", xg, wg[..., p, q]).reshape(n, g * og, h, wd)
            full[:, :, p * dh: p * dh + (h - 1) * sh + 1: sh,
                 q * dw: q * dw + (wd - 1) * sw + 1: sw] += part
    pt, pl, pb, pr = at.padding
    full = np.pad(full, ((0, 0), (0, 0), (max(-pt, 0), max(-pb, 0)), (max(-pl, 0), max(-pr, 0))))
    y = full[:, :, max(pt, 0): full.shape[2] - max(pb, 0), max(pl, 0): full.shape[3] - max(pr, 0)]
    return y.astype(x.dtype)


register(OpDef("conv_transpose2d", ConvTranspose2dAttrs, Pattern.OUT_FUSABLE,
               _infer_conv_transpose2d, _conv_transpose2d_ref, num_inputs=(2, 2)))

__all__ = ["Conv2dAttrs", "ConvTranspose2dAttrs", "conv_output_size", "conv_transpose_output_size"]
