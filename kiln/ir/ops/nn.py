"""Pooling, padding and resizing ops (ONNX ``MaxPool`` / ``AveragePool`` / ``LpPool``,
``Pad``, ``Resize``).

Normalisations (BatchNorm, InstanceNorm, GroupNorm, MVN, LRN) need no op of their own: the
frontend writes them with ``layer_norm``, the pooling ops and elementwise arithmetic.

Pooling runs over the trailing ``len(kernel)`` axes of an ``[N, C, *spatial]`` input::

    y[n, c, o] = reduce_{r in kernel} x[n, c, o * stride + r * dilation - pad_lo]

where reads outside ``x`` are skipped (max, and the average without ``count_include_pad``) or
count as zeros (the average with it, inside the explicit padding only).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from kiln.errors import ModelError
from kiln.ir.dtype import DType
from kiln.ir.ops.registry import OpDef, Pattern, register
from kiln.ir.types import TensorType


def _ints(obj: object, *names: str) -> None:
    for name in names:
        object.__setattr__(obj, name, tuple(int(v) for v in getattr(obj, name)))


# -- pooling ------------------------------------------------------------------------------------
class PoolMode(str, Enum):
    MAX = "max"
    AVG = "avg"
    LP = "lp"          # (sum |x|^p)^(1/p) over the window
    ARGMAX = "argmax"  # where the max is: a flat index into x (ONNX MaxPool's Indices)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class PoolAttrs:
    """``kernel``, ``strides`` and ``dilations`` per spatial axis; ``pads`` is (begin..., end...)
    as in ONNX. ``ceil_mode`` rounds the output size up (a last window that would start in the
    end padding is dropped, as PyTorch and onnxruntime do)."""

    mode: PoolMode
    kernel: tuple[int, ...]
    strides: tuple[int, ...] = ()
    pads: tuple[int, ...] = ()
    dilations: tuple[int, ...] = ()
    ceil_mode: bool = False
    count_include_pad: bool = False
    p: int = 2
    storage_order: int = 0     # argmax: 0 row-major flat indices, 1 column-major spatial dims

    def __post_init__(self) -> None:
        k = len(self.kernel)
        object.__setattr__(self, "mode", PoolMode(self.mode))
        if not self.strides:
            object.__setattr__(self, "strides", (1,) * k)
        if not self.dilations:
            object.__setattr__(self, "dilations", (1,) * k)
        if not self.pads:
            object.__setattr__(self, "pads", (0,) * (2 * k))
        _ints(self, "kernel", "strides", "pads", "dilations")
        if len(self.strides) != k or len(self.dilations) != k or len(self.pads) != 2 * k:
            raise ModelError(f"pool kernel {list(self.kernel)}: strides {list(self.strides)}, "
                             f"dilations {list(self.dilations)} and pads {list(self.pads)} "
                             "do not match its rank")
        if min(self.kernel, default=1) < 1 or min(self.strides, default=1) < 1 \
                or min(self.dilations, default=1) < 1 or min(self.pads, default=0) < 0:
            raise ModelError(f"pool kernel {list(self.kernel)}, strides {list(self.strides)} "
                             f"and dilations {list(self.dilations)} must be >= 1, pads "
                             f"{list(self.pads)} >= 0")
        object.__setattr__(self, "ceil_mode", bool(self.ceil_mode))
        object.__setattr__(self, "count_include_pad", bool(self.count_include_pad))
        object.__setattr__(self, "p", int(self.p))


def pool_output_size(at: PoolAttrs, sizes: tuple[int, ...]) -> tuple[int, ...]:
    """The output extent of each spatial axis."""
    k = len(at.kernel)
    out = []
    for i, size in enumerate(sizes):
        lo, hi = at.pads[i], at.pads[k + i]
        span = (at.kernel[i] - 1) * at.dilations[i] + 1
        room = size + lo + hi - span
        if room < 0:
            raise ModelError(f"pool window {span} (kernel {at.kernel[i]}, dilation "
                             f"{at.dilations[i]}) is larger than the padded input {size + lo + hi}")
        n = (-(-room // at.strides[i]) if at.ceil_mode else room // at.strides[i]) + 1
        if at.ceil_mode and (n - 1) * at.strides[i] >= size + lo:
            n -= 1                    # the last window would start in the end padding
        out.append(n)
    return tuple(out)


def _infer_pool(at: PoolAttrs, x: TensorType, y: TensorType | None = None) -> TensorType:
    """``argmax`` takes the max pool's output ``y`` as a second input (it finds where each
    window holds its max); the other modes take ``x`` only."""
    if (y is not None) != (at.mode is PoolMode.ARGMAX):
        raise ModelError("argmax pooling takes (x, max pooled x); the other modes take x only")
    k = len(at.kernel)
    if x.rank != k + 2:
        raise ModelError(f"pool with a {k}-D kernel needs a rank-{k + 2} [N, C, ...] input, "
                         f"got {x}")
    spatial = x.shape[2:]
    if not all(isinstance(d, int) for d in spatial):
        raise ModelError(f"pooling needs static spatial dims, got {x}")
    if at.mode not in (PoolMode.MAX, PoolMode.ARGMAX) and not x.dtype.is_float:
        raise ModelError(f"{at.mode} pooling needs a floating-point input, got {x.dtype}")
    out = pool_output_size(at, tuple(int(d) for d in spatial))
    if at.mode is PoolMode.ARGMAX:
        if not x.is_static or y.shape != (*x.shape[:2], *out):
            raise ModelError(f"argmax pooling needs a static x and its max pool, got {x}, {y}")
        return TensorType((*x.shape[:2], *out), DType.int64)
    return TensorType((*x.shape[:2], *out), x.dtype)


def flat_index(at: PoolAttrs, shape: tuple[int, ...], b: Any, c: Any, pos: list[Any]) -> Any:
    """The flat index of ``x[b, c, *pos]``: row-major, or with the spatial dims column-major
    (``storage_order=1``). NumPy arrays or TE expressions alike."""
    spatial = shape[2:]
    order = range(len(spatial)) if not at.storage_order else reversed(range(len(spatial)))
    flat = b * shape[1] + c
    for i in order:
        flat = flat * spatial[i] + pos[i]
    return flat


def pool_window_count(at: PoolAttrs, axis: int, o: Any, size: int, include_pad: bool,
                      maximum: Callable[[Any, Any], Any],
                      minimum: Callable[[Any, Any], Any]) -> Any:
    """How many taps of the window at output position ``o`` (along spatial ``axis``) fall
    inside the input (or inside the padded input with ``include_pad``). Works on NumPy arrays
    and TE expressions alike (integer arithmetic only)."""
    k = len(at.kernel)
    s, d, kern = at.strides[axis], at.dilations[axis], at.kernel[axis]
    lo = at.pads[axis]
    begin, end = (-lo, size + at.pads[k + axis]) if include_pad else (0, size)
    start = o * s - lo                               # input index of tap 0
    # taps r with begin <= start + r * d < end
    r_min = maximum((begin - start + d - 1) // d, 0)
    r_max = minimum((end - 1 - start) // d, kern - 1)
    return maximum(r_max - r_min + 1, 0)


def _pool_ref(at: PoolAttrs, x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
    k = len(at.kernel)
    spatial = x.shape[2:]
    out = pool_output_size(at, spatial)
    axes = tuple(range(2, 2 + k))
    # pad far enough that every window (ceil mode included) lies inside the array
    extra = [max(0, (o - 1) * s + (kk - 1) * d + 1 - (n + lo + hi))
             for o, s, kk, d, n, lo, hi in zip(out, at.strides, at.kernel, at.dilations, spatial,
                                               at.pads[:k], at.pads[k:], strict=True)]
    widths = [(0, 0), (0, 0)] + [(at.pads[i], at.pads[k + i] + extra[i]) for i in range(k)]
    xf = x.astype(np.float64)
    inside = np.pad(np.ones(x.shape, bool), widths)

    def windows(a: np.ndarray) -> np.ndarray:
        span = [(kk - 1) * d + 1 for kk, d in zip(at.kernel, at.dilations, strict=True)]
        w = np.lib.stride_tricks.sliding_window_view(a, span, axis=axes)
        index = [slice(None)] * 2
        index += [slice(0, (o - 1) * s + 1, s) for o, s in zip(out, at.strides, strict=True)]
        index += [slice(None, None, d) for d in at.dilations]
        return w[tuple(index)]

    win_axes = tuple(range(2 + k, 2 + 2 * k))
    valid = windows(inside)
    if at.mode is PoolMode.ARGMAX:      # the first max in window order, as a flat index
        vals = np.where(valid, windows(np.pad(xf, widths)), -np.inf)
        first = vals.reshape(*vals.shape[:2 + k], -1).argmax(-1)
        r = np.unravel_index(first, at.kernel)
        grid = np.indices(first.shape, sparse=True)
        pos = [grid[2 + i] * at.strides[i] + r[i] * at.dilations[i] - at.pads[i]
               for i in range(k)]
        return flat_index(at, x.shape, grid[0], grid[1], pos).astype(np.int64)
    if at.mode is PoolMode.MAX:
        vals = windows(np.pad(xf, widths))
        return np.where(valid, vals, -np.inf).max(axis=win_axes).astype(x.dtype)
    if at.mode is PoolMode.LP:
        total = np.where(valid, windows(np.pad(np.abs(xf) ** at.p, widths)), 0).sum(win_axes)
        return (total ** (1.0 / at.p)).astype(x.dtype)
    total = np.where(valid, windows(np.pad(xf, widths)), 0).sum(win_axes)
    count = np.ones(out, np.int64)
    for i in range(k):
        o = np.arange(out[i]).reshape([-1 if j == i else 1 for j in range(k)])
        count = count * pool_window_count(at, i, o, spatial[i], at.count_include_pad,
                                          np.maximum, np.minimum)
    return (total / count).astype(x.dtype)


register(OpDef("pool", PoolAttrs, Pattern.REDUCTION, _infer_pool, _pool_ref,
               num_inputs=(1, 2)))


# -- padding ------------------------------------------------------------------------------------
class PadMode(str, Enum):
    CONSTANT = "constant"
    REFLECT = "reflect"      # mirror without repeating the edge: [a b c] -> b [a b c] b
    EDGE = "edge"            # repeat the edge element
    WRAP = "wrap"            # periodic: [a b c] -> c [a b c] a

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class PadAttrs:
    """``pads`` is (begin..., end...) per axis as in ONNX; negative pads crop (before the
    mode pads the rest)."""

    pads: tuple[int, ...]
    mode: PadMode = PadMode.CONSTANT
    value: float = 0.0

    def __post_init__(self) -> None:
        _ints(self, "pads")
        object.__setattr__(self, "mode", PadMode(self.mode))
        object.__setattr__(self, "value", float(self.value))


def pad_bounds(at: PadAttrs, shape: tuple[int, ...]) -> list[tuple[int, int, int]]:
    """Per axis: (crop at the start, kept extent, pad at the start) after splitting each pad
    into its cropping (negative) and its padding (positive) part."""
    rank = len(shape)
    out = []
    for i, d in enumerate(shape):
        lo, hi = at.pads[i], at.pads[rank + i]
        kept = d - max(-lo, 0) - max(-hi, 0)
        if kept < 0 or (kept == 0 and at.mode is not PadMode.CONSTANT and lo + hi > -d):
            raise ModelError(f"pads {list(at.pads)} crop more than dim {i} ({d}) holds, or "
                             f"leave nothing for {at.mode} padding to repeat")
        out.append((max(-lo, 0), kept, max(lo, 0)))
    return out


def _infer_pad(at: PadAttrs, x: TensorType) -> TensorType:
    if len(at.pads) != 2 * x.rank:
        raise ModelError(f"pad needs 2 x rank = {2 * x.rank} pads for {x}, got {list(at.pads)}")
    if not x.is_static:
        raise ModelError(f"pad needs static shapes, got {x}")
    bounds = pad_bounds(at, x.static_shape)
    if at.mode is PadMode.REFLECT:
        for i, (_, kept, _) in enumerate(bounds):
            lo, hi = max(at.pads[i], 0), max(at.pads[x.rank + i], 0)
            if (lo or hi) and kept < 2:
                raise ModelError(f"reflect padding needs at least 2 elements along axis {i}")
    shape = tuple(d + at.pads[i] + at.pads[x.rank + i] for i, d in enumerate(x.static_shape))
    return TensorType(shape, x.dtype)


def pad_source(mode: PadMode, j: Any, n: int, floormod: Callable[[Any, Any], Any],
               clip: Callable[[Any, int, int], Any], where: Callable[[Any, Any, Any], Any]
               ) -> Any:
    """The index in ``[0, n)`` that position ``j`` of the padded axis reads (``j`` counts
    from the first kept element; it is out of range in the padding). NumPy or TE alike."""
    if mode is PadMode.EDGE or n == 1:
        return clip(j, 0, n - 1)
    if mode is PadMode.WRAP:
        return floormod(j, n)
    if mode is PadMode.REFLECT:
        m = floormod(j, 2 * (n - 1))
        return where(m < n, m, 2 * (n - 1) - m)
    return clip(j, 0, n - 1)    # constant: the caller masks what lies outside


def _pad_ref(at: PadAttrs, x: np.ndarray) -> np.ndarray:
    out_type = _infer_pad(at, TensorType.of(x.shape, x.dtype))
    bounds = pad_bounds(at, x.shape)
    index = [np.arange(size) - lo
             for (_, _, lo), size in zip(bounds, out_type.static_shape, strict=True)]
    grids = np.ix_(*index) if x.ndim else ()
    src, inside = [], np.ones(out_type.static_shape, bool)
    for g, (crop, kept, _) in zip(grids, bounds, strict=True):
        if kept == 0:
            src.append(np.zeros_like(g))
            inside = inside & np.zeros(g.shape, bool)
            continue
        src.append(crop + pad_source(at.mode, g, kept, np.mod, np.clip, np.where))
        inside = inside & (g >= 0) & (g < kept)
    y = x[tuple(src)] if x.ndim else x
    if at.mode is PadMode.CONSTANT:
        y = np.where(inside, y, np.asarray(at.value).astype(x.dtype))
    return np.asarray(y).astype(x.dtype)


register(OpDef("pad", PadAttrs, Pattern.INJECTIVE, _infer_pad, _pad_ref))


# -- resize -------------------------------------------------------------------------------------
class ResizeMode(str, Enum):
    NEAREST = "nearest"
    LINEAR = "linear"
    CUBIC = "cubic"

    def __str__(self) -> str:
        return self.value


COORDINATE_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
                    "asymmetric", "tf_crop_and_resize")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


@dataclass(frozen=True)
class ResizeAttrs:
    """Resize every axis to ``sizes`` (the full output shape). ``scales`` (one per axis) is
    the factor the coordinate transform uses; it may differ from ``size / input size`` when
    ONNX gave scales whose product is not a whole size. ``roi`` (begin..., end..., as
    fractions of each axis) is read by ``tf_crop_and_resize`` only."""

    sizes: tuple[int, ...]
    scales: tuple[float, ...]
    mode: ResizeMode = ResizeMode.NEAREST
    coordinate_mode: str = "half_pixel"
    nearest_mode: str = "round_prefer_floor"
    cubic_coeff_a: float = -0.75
    exclude_outside: bool = False
    extrapolation_value: float = 0.0
    roi: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        _ints(self, "sizes")
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))
        object.__setattr__(self, "mode", ResizeMode(self.mode))
        if self.roi is not None:
            object.__setattr__(self, "roi", tuple(float(r) for r in self.roi))
        if self.coordinate_mode not in COORDINATE_MODES:
            raise ModelError(f"resize coordinate_transformation_mode {self.coordinate_mode!r} "
                             f"is not one of {', '.join(COORDINATE_MODES)}")
        if self.nearest_mode not in NEAREST_MODES:
            raise ModelError(f"resize nearest_mode {self.nearest_mode!r} is not one of "
                             f"{', '.join(NEAREST_MODES)}")
        if len(self.sizes) != len(self.scales) or min(self.scales, default=1.0) <= 0:
            raise ModelError(f"resize sizes {list(self.sizes)} and scales {list(self.scales)} "
                             "must have one positive entry per axis")
        if self.coordinate_mode == "tf_crop_and_resize" and \
                (self.roi is None or len(self.roi) != 2 * len(self.sizes)):
            raise ModelError("resize tf_crop_and_resize needs a roi of 2 x rank values")


def _infer_resize(at: ResizeAttrs, x: TensorType) -> TensorType:
    if len(at.sizes) != x.rank:
        raise ModelError(f"resize sizes {list(at.sizes)} do not match {x}")
    if not x.is_static:
        raise ModelError(f"resize needs static shapes, got {x}")
    if at.mode is not ResizeMode.NEAREST and not x.dtype.is_float:
        raise ModelError(f"{at.mode} resize needs a floating-point input, got {x.dtype}")
    return TensorType(at.sizes, x.dtype)


@dataclass(frozen=True)
class ResizeMath:
    """The element functions ``resize_taps`` needs, for NumPy or for TE."""

    floor: Callable[[Any], Any]
    where: Callable[[Any, Any, Any], Any]
    to_int: Callable[[Any], Any]
    clip: Callable[[Any, int, int], Any]
    f64: Callable[[Any], Any]           # an integer index as a float64
    logical_and: Callable[[Any, Any], Any]
    logical_or: Callable[[Any, Any], Any]


def source_coordinate(at: ResizeAttrs, axis: int, i: Any, size_in: int, m: ResizeMath) -> Any:
    """The input coordinate (float64) that output index ``i`` maps to along ``axis``."""
    scale, size_out = at.scales[axis], at.sizes[axis]
    out_len = scale * size_in          # the output length before rounding to an integer
    x = m.f64(i)
    mode = at.coordinate_mode
    # as onnxruntime and ONNX's reference, align_corners and tf_crop_and_resize divide by the
    # unrounded output length (scale * input length), not by the integer output size
    if mode == "align_corners":
        return x * 0.0 if out_len == 1 else x * ((size_in - 1) / (out_len - 1))
    if mode == "asymmetric":
        return x / scale
    if mode == "pytorch_half_pixel":
        return x * 0.0 - 0.5 if out_len == 1 else (x + 0.5) / scale - 0.5
    if mode == "half_pixel":
        return (x + 0.5) / scale - 0.5
    if mode == "half_pixel_symmetric":
        offset = size_in / 2 * (1 - size_out / out_len)
        return offset + (x + 0.5) / scale - 0.5
    begin, end = at.roi[axis], at.roi[len(at.sizes) + axis]   # tf_crop_and_resize
    if out_len == 1:
        return x * 0.0 + (end - begin) * (size_in - 1) / 2 + begin * (size_in - 1)
    return x * ((end - begin) * (size_in - 1) / (out_len - 1)) + begin * (size_in - 1)


def _cubic_weights(f: Any, a: float) -> list[Any]:
    """Keys' cubic convolution weights of the taps at offsets -1, 0, 1, 2 from ``floor(x)``,
    ``f = x - floor(x)`` (the ONNX formulas)."""
    t0, t1, t2, t3 = f + 1.0, f, 1.0 - f, 2.0 - f
    return [((a * t0 - 5 * a) * t0 + 8 * a) * t0 - 4 * a,
            ((a + 2) * t1 - (a + 3)) * t1 * t1 + 1,
            ((a + 2) * t2 - (a + 3)) * t2 * t2 + 1,
            ((a * t3 - 5 * a) * t3 + 8 * a) * t3 - 4 * a]


def resize_taps(at: ResizeAttrs, axis: int, i: Any, size_in: int,
                m: ResizeMath) -> tuple[list[tuple[Any, Any]], Any]:
    """The input indices (clamped into range) and float64 weights that output index ``i``
    reads along ``axis``, and whether it lies outside the input (``tf_crop_and_resize``
    extrapolates there; ``None`` when it cannot happen). The nearest mode has one tap of
    weight ``None``."""
    x = source_coordinate(at, axis, i, size_in, m)
    outside = None
    if at.coordinate_mode == "tf_crop_and_resize":
        outside = m.logical_or(x < 0.0, x > float(size_in - 1))
    x0 = m.floor(x)
    f = x - x0
    base = m.to_int(x0)
    if at.mode is ResizeMode.NEAREST:
        if at.nearest_mode == "floor":
            idx = base
        elif at.nearest_mode == "ceil":
            idx = m.where(f > 0.0, base + 1, base)
        elif at.nearest_mode == "round_prefer_floor":
            idx = m.where(f > 0.5, base + 1, base)
        else:
            idx = m.where(f >= 0.5, base + 1, base)
        return [(m.clip(idx, 0, size_in - 1), None)], outside
    if at.mode is ResizeMode.LINEAR:
        offsets, weights = (0, 1), [1.0 - f, f]
    else:
        offsets, weights = (-1, 0, 1, 2), _cubic_weights(f, at.cubic_coeff_a)
    if at.exclude_outside:
        weights = [m.where(m.logical_and(base + o >= 0, base + o < size_in), w, w * 0.0)
                   for o, w in zip(offsets, weights, strict=True)]
        total = weights[0]
        for w in weights[1:]:
            total = total + w
        weights = [w / total for w in weights]
    return [(m.clip(base + o, 0, size_in - 1), w)
            for o, w in zip(offsets, weights, strict=True)], outside


NUMPY_MATH = ResizeMath(floor=np.floor, where=np.where, to_int=lambda v: v.astype(np.int64),
                        clip=np.clip, f64=lambda v: np.asarray(v, np.float64),
                        logical_and=np.logical_and, logical_or=np.logical_or)


def resized_axes(at: ResizeAttrs, shape: tuple[int, ...]) -> list[int]:
    """The axes resize changes (the others are copied)."""
    return [a for a, (n, size) in enumerate(zip(shape, at.sizes, strict=True))
            if n != size or at.scales[a] != 1.0 or at.coordinate_mode == "tf_crop_and_resize"]


def _resize_ref(at: ResizeAttrs, x: np.ndarray) -> np.ndarray:
    """One axis at a time (interpolation is separable), in float64."""
    y = x if at.mode is ResizeMode.NEAREST else x.astype(np.float64)
    outside_any = np.zeros(at.sizes, bool)
    for axis in resized_axes(at, x.shape):
        i = np.arange(at.sizes[axis])
        taps, outside = resize_taps(at, axis, i, x.shape[axis], NUMPY_MATH)
        shape = [1] * x.ndim
        shape[axis] = -1
        if outside is not None:
            outside_any |= np.broadcast_to(outside.reshape(shape), at.sizes)
        if taps[0][1] is None:
            y = np.take(y, taps[0][0], axis=axis)
            continue
        y = sum(np.take(y, idx, axis=axis) * np.asarray(w).reshape(shape) for idx, w in taps)
    if outside_any.any():
        y = np.where(outside_any, at.extrapolation_value, y)
    return np.asarray(y).astype(x.dtype)


register(OpDef("resize", ResizeAttrs, Pattern.INJECTIVE, _infer_resize, _resize_ref))


__all__ = ["COORDINATE_MODES", "NEAREST_MODES", "NUMPY_MATH", "PadAttrs", "PadMode", "PoolAttrs",
           "PoolMode", "ResizeAttrs", "ResizeMath", "ResizeMode", "flat_index", "pad_bounds",
           "pad_source",
           "pool_output_size", "pool_window_count", "resize_taps", "resized_axes",
           "source_coordinate"]
