"""TE compute of pooling, padding and resizing (see ``kiln.ir.ops.nn`` for their semantics).

Pooling reads a padded copy of its input split by stride phase (the conv2d trick: unit-stride
vector loads whatever the stride), reduces over the window, then, for the average and Lp
modes, a pointwise block divides by the window count or takes the p-th root. Padding and
resizing are injective: each output element computes where it reads from.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
from tvm import te, tirx

from kiln.ir.ops.nn import (
    NUMPY_MATH,
    PadMode,
    PoolMode,
    ResizeMath,
    flat_index,
    pad_bounds,
    pad_source,
    pool_window_count,
    resize_taps,
    resized_axes,
)
from kiln.schedules.compute.registry import NodeInfo, compute, const, shape_of

ACC_SUFFIX = "_acc"     # the window reduction of an average or Lp pool is ``<name>_acc``
PAD_SUFFIX = "_pad"     # the padded, phase-split input a pool reads is ``<name>_pad``


def _lowest(dtype: str) -> tirx.PrimExpr:
    if dtype.startswith("float"):
        return const(-np.inf, dtype)
    return tirx.min_value(dtype)


def _clip(v: Any, lo: int, hi: int) -> Any:
    return tirx.max(tirx.min(v, hi), lo)


def _pool_input(name: str, x: te.Tensor, at: Any, out_spatial: tuple[int, ...],
                init: tirx.PrimExpr) -> tuple[te.Tensor | None, Any]:
    """The stage the window reads, and how a tap reads it: ``read(b, c, o, r)``.

    Padded (with ``init``: -inf for max, 0 for the sums) and, along the last axis, split by
    stride phase as conv2d's input (``xp[..., phase, j] = xpad[..., j * stride + phase]``),
    so the taps of consecutive output columns are consecutive elements whatever the stride and
    no tap tests a bound. With no padding and unit strides the window reads ``x`` directly."""
    k = len(at.kernel)
    spatial = shape_of(x)[2:]
    need = [(o - 1) * s + (kk - 1) * d + 1 for o, s, kk, d in
            zip(out_spatial, at.strides, at.kernel, at.dilations, strict=True)]
    pads = at.pads[:k]
    sw = at.strides[-1]
    if not any(pads) and sw == 1 and all(n <= size for n, size in zip(need, spatial,
                                                                       strict=True)):
        def direct(b: Any, c: Any, o: Any, r: Any) -> Any:
            return x(b, c, *(o[i] * at.strides[i] + r[i] * at.dilations[i] for i in range(k)))
        return None, direct
    wq = -(-need[-1] // sw)

    def f(b: Any, c: Any, *idx: Any) -> Any:
        rows, phase, j = idx[:k - 1], idx[k - 1], idx[k]
        col = j * sw + phase if sw > 1 else j          # one phase: a plain (rectangular) pad
        src = [rows[i] - pads[i] for i in range(k - 1)] + [col - pads[-1]]
        inside = []                           # only the bounds some index can cross
        for i, (pos, n) in enumerate(zip(src, spatial, strict=True)):
            hi = need[i] if i < k - 1 else wq * sw
            if pads[i]:
                inside.append(pos >= 0)
            if hi - pads[i] > n:
                inside.append(pos < n)
        value = x(b, c, *src)
        return tirx.if_then_else(tirx.all(*inside), value, init) if inside else value

    xp = te.compute((*shape_of(x)[:2], *need[:-1], sw, wq), f, name=name + PAD_SUFFIX)

    def read(b: Any, c: Any, o: Any, r: Any) -> Any:
        rows = [o[i] * at.strides[i] + r[i] * at.dilations[i] for i in range(k - 1)]
        col = r[-1] * at.dilations[-1]
        return xp(b, c, *rows, col % sw, o[-1] + col // sw)
    return xp, read


@compute("pool")
def pool(n: NodeInfo, x: te.Tensor, y: te.Tensor | None = None) -> te.Tensor:
    at = n.attrs
    k = len(at.kernel)
    spatial = shape_of(x)[2:]
    out_spatial = n.shape[2:]
    dt = n.dtype
    rs = [te.reduce_axis((0, kk), name=f"r{i}") for i, kk in enumerate(at.kernel)]
    if at.mode is PoolMode.ARGMAX:
        return _argmax_pool(n, x, y, rs)
    init = _lowest(dt) if at.mode is PoolMode.MAX else const(0, dt)
    _, read = _pool_input(n.name, x, at, out_spatial, init)

    def window(b: Any, c: Any, *o: Any) -> Any:
        v = read(b, c, o, rs)
        if at.mode is PoolMode.LP:
            v = tirx.abs(v) if at.p == 1 else v * v if at.p == 2 else \
                tirx.power(tirx.abs(v), const(at.p, dt))
        return (te.max if at.mode is PoolMode.MAX else te.sum)(v, axis=rs)

    if at.mode is PoolMode.MAX:
        return te.compute(n.shape, window, name=n.name)
    acc = te.compute(n.shape, window, name=n.name + ACC_SUFFIX)
    if at.mode is PoolMode.LP:
        root = (lambda v: v) if at.p == 1 else tirx.sqrt if at.p == 2 else \
            (lambda v: tirx.power(v, const(1.0 / at.p, dt)))
        return te.compute(n.shape, lambda *i: root(acc(*i)), name=n.name)
    counts = [pool_window_count(at, i, np.arange(out_spatial[i]), spatial[i],
                                at.count_include_pad, np.maximum, np.minimum) for i in range(k)]
    if all((c == c[0]).all() for c in counts):     # every window holds as many taps
        scale = const(1.0 / float(np.prod([c[0] for c in counts])), dt)
        return te.compute(n.shape, lambda *i: acc(*i) * scale, name=n.name)

    def average(b: Any, c: Any, *o: Any) -> Any:
        count: Any = 1
        for i in range(k):
            count = count * pool_window_count(at, i, o[i], spatial[i], at.count_include_pad,
                                              tirx.max, tirx.min)
        return acc(b, c, *o) / count.astype(dt)

    return te.compute(n.shape, average, name=n.name)


def _argmax_pool(n: NodeInfo, x: te.Tensor, y: te.Tensor, rs: list) -> te.Tensor:
    """The smallest window position (in window order: the first) whose element equals the
    window's max ``y``, as a flat index into ``x``: a min-reduction over the window."""
    at = n.attrs
    k = len(at.kernel)
    shape = shape_of(x)
    _, read = _pool_input(n.name, x, at, n.shape[2:], _lowest(str(x.dtype)))
    big = tirx.max_value("int64")

    def f(b: Any, c: Any, *o: Any) -> Any:
        pos = [(o[i] * at.strides[i] + rs[i] * at.dilations[i] - at.pads[i]).astype("int64")
               for i in range(k)]
        flat = flat_index(at, shape, b.astype("int64"), c.astype("int64"), pos)
        return te.min(tirx.Select(read(b, c, o, rs) == y(b, c, *o), flat, big), axis=rs)

    return te.compute(n.shape, f, name=n.name)


@compute("pad")
def pad(n: NodeInfo, x: te.Tensor) -> te.Tensor:
    at = n.attrs
    shape = shape_of(x)
    bounds = pad_bounds(at, shape)

    def f(*i: Any) -> Any:
        src, inside = [], []
        for axis, (crop, kept, lo) in enumerate(bounds):
            j = i[axis] - lo
            if lo == 0 and n.shape[axis] == kept:      # this axis is only cropped, or kept
                src.append(j + crop)
                continue
            if at.mode is PadMode.CONSTANT:
                # an affine read guarded by the bounds: contiguous vector loads inside the row
                src.append(j + crop)
                if lo:
                    inside.append(j >= 0)
                if n.shape[axis] > lo + kept:
                    inside.append(j < kept)
                continue
            src.append(crop + pad_source(at.mode, j, kept, tirx.floormod, _clip, tirx.Select))
        v = x(*src)
        if not inside:
            return v
        return tirx.if_then_else(tirx.all(*inside), v, const(at.value, n.dtype))

    return te.compute(n.shape, f, name=n.name)


TE_MATH = ResizeMath(floor=tirx.floor, where=tirx.Select,
                     to_int=lambda v: v.astype("int64"), clip=_clip,
                     f64=lambda v: v.astype("float64"), logical_and=tirx.And,
                     logical_or=tirx.Or)


def _floor_ratio(at: Any, axis: int, size_in: int) -> bool:
    """Whether nearest resizing along ``axis`` reads ``floor(i * size_in / size_out)``:
    then the index is integer arithmetic instead of float64 coordinates."""
    size_out = at.sizes[axis]
    i = np.arange(size_out)
    idx = resize_taps(at, axis, i, size_in, NUMPY_MATH)[0][0][0]
    return at.coordinate_mode != "tf_crop_and_resize" and \
        np.array_equal(idx, i * size_in // size_out)


@compute("resize")
def resize(n: NodeInfo, x: te.Tensor) -> te.Tensor:
    """Separable taps per resized axis; the output sums every combination of them (1 read
    for nearest, 2^k for k linear axes, 4^k for cubic)."""
    at = n.attrs
    shape = shape_of(x)
    axes = resized_axes(at, shape)
    dt = n.dtype
    fast = {a for a in axes if at.mode.value == "nearest" and _floor_ratio(at, a, shape[a])}

    def f(*i: Any) -> Any:
        terms: list[tuple[list[Any], Any]] = [(list(i), None)]
        outside = []
        for a in axes:
            if a in fast:       # i * n // size in the loop's int32: i // 2 for a 2x upsample
                g = math.gcd(shape[a], at.sizes[a])
                num, den = shape[a] // g, at.sizes[a] // g
                for src, _ in terms:
                    src[a] = (i[a] * num if num != 1 else i[a]) // den if den != 1 else \
                        i[a] * num
                continue
            taps, out = resize_taps(at, a, i[a], shape[a], TE_MATH)
            if out is not None:
                outside.append(out)
            grown = []
            for src, w in terms:
                for idx, tw in taps:
                    s = list(src)
                    s[a] = idx
                    grown.append((s, tw if w is None else (tw if tw is None else w * tw)))
            terms = grown
        value = None
        for src, w in terms:
            v = x(*src)
            if w is not None:
                v = w.astype(dt) * v
            value = v if value is None else value + v
        if outside:
            value = tirx.Select(functools.reduce(tirx.Or, outside),
                                const(at.extrapolation_value, dt), value)
        return value

    return te.compute(n.shape, f, name=n.name)
