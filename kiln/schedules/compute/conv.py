"""TE for ``conv2d`` (NCHW x OIHW): a zero-padding stage, then the reduction over (c, kh, kw).

The padding stage also splits the width by stride phase when the stride is > 1::

    xp[n, c, h, phase, j] = xpad[n, c, h, j * sw + phase]       (xpad: x zero-padded)

so the input column ``ow * sw + kw * dw`` read for output column ``ow`` is
``xp[..., (kw * dw) % sw, ow + (kw * dw) // sw]``: consecutive output columns read consecutive
elements of one phase, and a schedule that vectorises along the output width loads its input
with unit stride whatever the stride is. With stride 1 the phase axis has extent 1; with no
padding and stride 1 there is no stage at all and the reduction reads ``x`` directly.
"""

from __future__ import annotations

from typing import Any

from tvm import te, tirx

from kiln.schedules.compute.registry import NodeInfo, compute, const, shape_of

PAD_SUFFIX = "_pad"   # the padding stage is named ``<conv block>_pad``


def padded_input(name: str, x: te.Tensor, padding: tuple[int, int, int, int],
                  stride_w: int) -> te.Tensor:
    """``xp[n, c, h, phase, j] = xpad[n, c, h, j * stride_w + phase]`` (zero outside ``x``)."""
    n, c, h, w = shape_of(x)
    pt, pl, pb, pr = padding
    hp, wp = h + pt + pb, w + pl + pr
    wq = -(-wp // stride_w)

    def f(b: Any, ch: Any, row: Any, phase: Any, j: Any) -> Any:
        col = j * stride_w + phase if stride_w > 1 else j   # one phase: a rectangular guard
        inside = []                           # only the bounds some index can cross
        if pt:
            inside.append(row >= pt)
        if pb:
            inside.append(row < h + pt)
        if pl:
            inside.append(col >= pl)
        if wq * stride_w > w + pl:
            inside.append(col < w + pl)
        value = x[b, ch, row - pt, col - pl]
        if not inside:
            return value
        return tirx.if_then_else(tirx.all(*inside), value, const(0, x.dtype))

    return te.compute((n, c, hp, stride_w, wq), f, name=name + PAD_SUFFIX)


@compute("conv2d")
def conv2d(n: NodeInfo, x: te.Tensor, w: te.Tensor) -> te.Tensor:
    at = n.attrs
    oc, cg, kh, kw = shape_of(w)
    (sh, sw), (dh, dw) = at.strides, at.dilations
    ocg = oc // at.groups                     # output channels per group
    if any(at.padding) or sw > 1:
        xp = padded_input(n.name, x, at.padding, sw)

        def src(b: Any, ch: Any, row: Any, ow: Any, q: Any) -> Any:
            return xp[b, ch, row, (q * dw) % sw, ow + (q * dw) // sw]
    else:
        def src(b: Any, ch: Any, row: Any, ow: Any, q: Any) -> Any:
            return x[b, ch, row, ow + q * dw]

    rc = te.reduce_axis((0, cg), name="rc")
    rh = te.reduce_axis((0, kh), name="rh")
    rw = te.reduce_axis((0, kw), name="rw")

    def f(b: Any, o: Any, oh: Any, ow: Any) -> Any:
        ch = rc if at.groups == 1 else (o // ocg) * cg + rc
        return te.sum(src(b, ch, oh * sh + rh * dh, ow, rw) * w[o, rc, rh, rw],
                      axis=[rc, rh, rw])

    return te.compute(n.shape, f, name=n.name)


@compute("conv_transpose2d")
def conv_transpose2d(n: NodeInfo, x: te.Tensor, w: te.Tensor) -> te.Tensor:
    """A stride-1 convolution with the flipped kernel over the input with ``stride - 1`` zeros
    inserted between pixels and ``(k - 1) * dilation - pad`` zeros around it. The zero-inserted
    input is the padding stage (one phase), so the conv2d templates schedule it unchanged."""
    at = n.attrs
    _, c, h, wd = shape_of(x)
    _, og, kh, kw = shape_of(w)
    _, _, oh, ow = n.shape
    (sh, sw), (dh, dw) = at.strides, at.dilations
    pt, pl, _, _ = at.padding
    top, left = (kh - 1) * dh - pt, (kw - 1) * dw - pl       # may be negative: a crop
    hd, wdd = oh + (kh - 1) * dh, ow + (kw - 1) * dw

    def dilated(b: Any, ch: Any, row: Any, phase: Any, col: Any) -> Any:
        u, v = row - top, col - left
        inside = [u >= 0, v >= 0, u < (h - 1) * sh + 1, v < (wd - 1) * sw + 1]
        if sh > 1:
            inside.append(tirx.floormod(u, sh) == 0)
        if sw > 1:
            inside.append(tirx.floormod(v, sw) == 0)
        value = x[b, ch, tirx.floordiv(u, sh), tirx.floordiv(v, sw)]
        return tirx.if_then_else(tirx.all(*inside), value, const(0, x.dtype))

    xd = te.compute((shape_of(x)[0], c, hd, 1, wdd), dilated, name=n.name + PAD_SUFFIX)
    cg = c // at.groups
    rc = te.reduce_axis((0, cg), name="rc")
    rh = te.reduce_axis((0, kh), name="rh")
    rw = te.reduce_axis((0, kw), name="rw")

    def f(b: Any, o: Any, i: Any, j: Any) -> Any:
        ch = rc if at.groups == 1 else (o // og) * cg + rc
        wo = o if at.groups == 1 else o % og
        return te.sum(xd[b, ch, i + rh * dh, 0, j + rw * dw]
                      * w[ch, wo, kh - 1 - rh, kw - 1 - rw], axis=[rc, rh, rw])

    return te.compute(n.shape, f, name=n.name)
