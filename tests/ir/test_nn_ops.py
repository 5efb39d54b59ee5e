"""Pad, resize and conv_transpose2d: the NumPy references against ONNX's own reference
implementation, and the compiled x86 kernels against the references on odd shapes."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

import kiln
from kiln.errors import ModelError
from kiln.ir.ops import get_op
from kiln.ir.ops.conv import ConvTranspose2dAttrs
from kiln.ir.ops.nn import PadAttrs, ResizeAttrs
from kiln.testing import assert_matches_reference

RNG = np.random.default_rng(0)


def onnx_ref(op: str, inputs: list[np.ndarray], **attrs) -> np.ndarray:
    names = [f"i{k}" if a is not None else "" for k, a in enumerate(inputs)]
    node = helper.make_node(op, names, ["y"], **attrs)
    feeds = {n: a for n, a in zip(names, inputs, strict=True) if n}
    return ReferenceEvaluator(node).run(None, feeds)[0]


def one_node_graph(op: str, shape, dtype: str = "float32", **attrs) -> kiln.Graph:
    g = kiln.Graph(op)
    (y,) = g.add(op, [g.input("x", shape, dtype)], **attrs)
    g.output(y)
    return g


# -- pad ------------------------------------------------------------------------------------------
PADS = [
    ((3, 5), (1, 2, 2, 0)),
    ((2, 3, 5), (0, 1, -1, 1, 0, 3)),           # a negative pad crops
    ((1, 2, 4, 7), (0, 0, 3, 5, 0, 0, 2, 6)),   # pads wider than the axis
]


def numpy_pad(x: np.ndarray, pads, mode: str, value: float) -> np.ndarray:
    """Crop the negative pads, then ``np.pad`` the positive ones (ONNX's order)."""
    r = x.ndim
    crop = tuple(slice(max(-pads[i], 0), x.shape[i] - max(-pads[r + i], 0)) for i in range(r))
    widths = [(max(pads[i], 0), max(pads[r + i], 0)) for i in range(r)]
    if mode == "constant":
        return np.pad(x[crop], widths, constant_values=value)
    return np.pad(x[crop], widths, mode=mode)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
@pytest.mark.parametrize("shape,pads", PADS)
def test_pad_reference_matches_numpy(shape, pads, mode) -> None:
    x = RNG.standard_normal(shape).astype(np.float32)
    got = get_op("pad").reference(PadAttrs(pads, mode, 1.5), x)
    np.testing.assert_array_equal(got, numpy_pad(x, pads, mode, 1.5))


def test_pad_reference_matches_onnx() -> None:
    x = RNG.standard_normal((3, 4)).astype(np.float32)
    for mode in ("constant", "reflect", "edge", "wrap"):
        want = onnx_ref("Pad", [x, np.array([1, 2, 2, 3], np.int64), np.array(1.5, np.float32)],
                        mode=mode)
        got = get_op("pad").reference(PadAttrs((1, 2, 2, 3), mode, 1.5), x)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
@pytest.mark.parametrize("shape,pads", PADS)
def test_pad_compiled_matches_reference(shape, pads, mode) -> None:
    assert_matches_reference(one_node_graph("pad", shape, pads=pads, mode=mode, value=-2.0),
                             rtol=0, atol=0)


def test_reflect_repeats_past_the_edge() -> None:
    x = np.arange(3, dtype=np.float32)
    y = get_op("pad").reference(PadAttrs((4, 5), "reflect"), x)
    np.testing.assert_array_equal(y, [0, 1, 2, 1, 0, 1, 2, 1, 0, 1, 2, 1])


def test_pad_errors() -> None:
    with pytest.raises(ModelError, match="2 x rank"):
        one_node_graph("pad", (3, 4), pads=(1, 1))
    with pytest.raises(ModelError, match="at least 2"):
        one_node_graph("pad", (1, 4), pads=(1, 0, 0, 0), mode="reflect")


# -- resize ---------------------------------------------------------------------------------------
def resize_attrs(shape, sizes, mode, coord, **kw) -> ResizeAttrs:
    scales = kw.pop("scales", None) or [s / d for s, d in zip(sizes, shape, strict=True)]
    return ResizeAttrs(sizes=sizes, scales=scales, mode=mode, coordinate_mode=coord, **kw)


RESIZES = [
    ((1, 2, 4, 5), (1, 2, 8, 10), "nearest", "asymmetric", dict(nearest_mode="floor")),
    ((1, 2, 4, 5), (1, 2, 7, 9), "nearest", "half_pixel", {}),
    ((1, 2, 5, 4), (1, 2, 3, 7), "nearest", "align_corners", dict(nearest_mode="ceil")),
    ((1, 1, 4, 6), (1, 1, 9, 5), "nearest", "pytorch_half_pixel",
     dict(nearest_mode="round_prefer_ceil")),
    ((1, 3, 5, 7), (1, 3, 9, 4), "linear", "half_pixel", {}),
    ((1, 3, 5, 7), (1, 3, 9, 4), "linear", "align_corners", {}),
    ((2, 6, 5), (2, 11, 5), "linear", "half_pixel_symmetric", {}),
    ((1, 1, 4, 4), (1, 1, 7, 3), "cubic", "half_pixel", {}),
    ((1, 1, 4, 4), (1, 1, 7, 3), "cubic", "asymmetric",
     dict(exclude_outside=True, cubic_coeff_a=-0.5)),
    ((1, 1, 5, 6), (1, 1, 3, 4), "linear", "tf_crop_and_resize",
     dict(roi=(0, 0, 0.2, 0.3, 1, 1, 1.2, 0.8), extrapolation_value=9.0)),
]


@pytest.mark.parametrize("shape,sizes,mode,coord,kw", RESIZES)
def test_resize_reference_matches_onnx(shape, sizes, mode, coord, kw) -> None:
    x = RNG.standard_normal(shape).astype(np.float32)
    at = resize_attrs(shape, sizes, mode, coord, **kw)
    onnx_kw = dict(mode=mode, coordinate_transformation_mode=coord)
    for name, key in (("nearest_mode", "nearest_mode"), ("cubic_coeff_a", "cubic_coeff_a"),
                      ("extrapolation_value", "extrapolation_value")):
        if name in kw:
            onnx_kw[key] = kw[name]
    if kw.get("exclude_outside"):
        onnx_kw["exclude_outside"] = 1
    roi = np.array(kw["roi"], np.float32) if "roi" in kw else None
    want = onnx_ref("Resize", [x, roi, None, np.array(sizes, np.int64)], **onnx_kw)
    got = get_op("resize").reference(at, x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape,sizes,mode,coord,kw", RESIZES)
def test_resize_compiled_matches_reference(shape, sizes, mode, coord, kw) -> None:
    at = resize_attrs(shape, sizes, mode, coord, **kw)
    g = one_node_graph("resize", shape, **vars(at))
    assert_matches_reference(g, rtol=1e-5, atol=1e-5)


def test_nearest_whole_scale_reads_with_integer_arithmetic() -> None:
    at = resize_attrs((1, 4, 6, 10), (1, 4, 12, 20), "nearest", "asymmetric",
                      nearest_mode="floor")
    g = one_node_graph("resize", (1, 4, 6, 10), **vars(at))
    assert_matches_reference(g, rtol=0, atol=0)
    (kernel,) = kiln.compile_stages(g, target="x86-avx512").kernels
    assert "float64" not in kernel.func.script()


def test_resize_errors() -> None:
    with pytest.raises(ModelError, match="coordinate_transformation_mode"):
        ResizeAttrs(sizes=(2,), scales=(1.0,), coordinate_mode="sideways")
    with pytest.raises(ModelError, match="roi"):
        ResizeAttrs(sizes=(2,), scales=(1.0,), coordinate_mode="tf_crop_and_resize")


# -- conv_transpose2d -----------------------------------------------------------------------------
CONV_T = [
    ((1, 3, 5, 6), (3, 2, 3, 3), dict()),
    ((2, 4, 4, 5), (4, 3, 3, 2), dict(strides=(2, 3), padding=(1, 0, 1, 1))),
    ((1, 4, 5, 5), (4, 1, 3, 3), dict(strides=(2, 2), groups=2, dilations=(2, 1))),
    ((1, 2, 3, 3), (2, 3, 3, 3), dict(strides=(3, 2), padding=(0, 0, -1, -1))),  # output_padding
    ((1, 6, 7, 9), (6, 1, 3, 3), dict(strides=(2, 2), padding=(1, 1, 1, 1), groups=6)),
]


@pytest.mark.parametrize("x_shape,w_shape,kw", CONV_T)
def test_conv_transpose_reference_matches_onnx(x_shape, w_shape, kw) -> None:
    x = RNG.standard_normal(x_shape).astype(np.float32)
    w = RNG.standard_normal(w_shape).astype(np.float32)
    at = ConvTranspose2dAttrs(**kw)
    pt, pl, pb, pr = at.padding
    out_pad = [max(-pb, 0), max(-pr, 0)]
    g, cg = at.groups, x_shape[1] // at.groups
    # one ungrouped ONNX reference per group (ONNX's reference mishandles groups)
    want = np.concatenate([
        onnx_ref("ConvTranspose", [x[:, k * cg:(k + 1) * cg], w[k * cg:(k + 1) * cg]],
                 strides=list(at.strides), dilations=list(at.dilations),
                 pads=[pt, pl, max(pb, 0), max(pr, 0)], output_padding=out_pad)
        for k in range(g)], axis=1)
    got = get_op("conv_transpose2d").reference(at, x, w)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("x_shape,w_shape,kw", CONV_T)
def test_conv_transpose_compiled_matches_reference(x_shape, w_shape, kw) -> None:
    g = kiln.Graph("convt")
    w = RNG.standard_normal(w_shape).astype(np.float32)
    (y,) = g.add("conv_transpose2d", [g.input("x", x_shape), g.constant(w)], **kw)
    (y,) = g.add("relu", [y])
    g.output(y)
    assert_matches_reference(g, rtol=1e-4, atol=1e-4)
    (kernel,) = kiln.compile_stages(g, target="x86-avx512").kernels
    assert any("Knobs" in n for n in kernel.notes)      # the conv2d template took it


def test_conv_transpose_errors() -> None:
    g = kiln.Graph("convt")
    with pytest.raises(ModelError, match="input channels"):
        g.add("conv_transpose2d", [g.input("x", (1, 3, 4, 4)),
                                   g.constant(np.zeros((2, 2, 3, 3), np.float32))])
