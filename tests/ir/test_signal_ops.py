"""grid_sample and bitcast: the NumPy references against onnx's reference implementation (every
mode, padding and align_corners, 2-D and 3-D), the compiled kernels against the references on
ragged shapes, and the shape rules."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import kiln
from kiln.errors import ModelError
from kiln.ir.ops import get_op
from kiln.testing import assert_matches_reference


def _graph(op: str, inputs: list[tuple[str, tuple[int, ...], str]], **attrs: object) -> kiln.Graph:
    g = kiln.Graph(op)
    vals = [g.input(name, shape, dtype) for name, shape, dtype in inputs]
    for out in g.add(op, vals, **attrs):
        g.output(out)
    return g


def _onnx_grid_sample(x: np.ndarray, grid: np.ndarray, mode: str, padding: str,
                      align: bool) -> np.ndarray:
    node = helper.make_node("GridSample", ["x", "g"], ["y"], mode=mode, padding_mode=padding,
                            align_corners=int(align))
    graph = helper.make_graph([node], "t", [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape),
        helper.make_tensor_value_info("g", TensorProto.FLOAT, grid.shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    return ReferenceEvaluator(model).run(None, {"x": x, "g": grid})[0]


def _inputs(xshape: tuple[int, ...], gshape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(xshape).astype(np.float32)
    grid = (rng.standard_normal(gshape) * 1.5).astype(np.float32)   # many points outside
    grid.reshape(-1)[:4] = [-1.0, 1.0, 0.0, 3.25]                  # edges, centre, far out
    return x, grid


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align", [False, True])
def test_grid_sample_reference_matches_onnx_2d(mode: str, padding: str, align: bool) -> None:
    x, grid = _inputs((2, 2, 4, 5), (2, 3, 4, 2))
    at = get_op("grid_sample").make_attrs(mode=mode, padding_mode=padding, align_corners=align)
    got = get_op("grid_sample").run_reference(at, [x, grid])[0]
    np.testing.assert_allclose(got, _onnx_grid_sample(x, grid, mode, padding, align),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("padding", ["zeros", "reflection"])
def test_grid_sample_reference_matches_onnx_3d(mode: str, padding: str) -> None:
    x, grid = _inputs((1, 2, 3, 4, 5), (1, 2, 3, 2, 3))
    at = get_op("grid_sample").make_attrs(mode=mode, padding_mode=padding, align_corners=False)
    got = get_op("grid_sample").run_reference(at, [x, grid])[0]
    np.testing.assert_allclose(got, _onnx_grid_sample(x, grid, mode, padding, False),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("mode", "padding", "align"), [
    ("linear", "reflection", False), ("cubic", "zeros", True), ("nearest", "border", False),
])
def test_grid_sample_compiled(mode: str, padding: str, align: bool) -> None:
    x, grid = _inputs((2, 3, 11, 13), (2, 7, 19, 2))
    g = _graph("grid_sample", [("x", x.shape, "float32"), ("g", grid.shape, "float32")],
               mode=mode, padding_mode=padding, align_corners=align)
    assert_matches_reference(g, {"x": x, "g": grid}, rtol=1e-5, atol=1e-5)


def test_grid_sample_shapes() -> None:
    op = get_op("grid_sample")
    g = _graph("grid_sample", [("x", (2, 3, 5, 6, 7), "float32"),
                               ("g", (2, 4, 1, 9, 3), "float32")])
    assert g.outputs[0].shape == (2, 3, 4, 1, 9)
    with pytest.raises(ModelError, match="grid"):
        _graph("grid_sample", [("x", (2, 3, 5, 6), "float32"), ("g", (2, 4, 9, 3), "float32")])
    with pytest.raises(ModelError, match="cubic"):
        _graph("grid_sample", [("x", (1, 1, 2, 3, 4), "float32"),
                               ("g", (1, 2, 2, 2, 3), "float32")], mode="cubic")
    with pytest.raises(ValueError):
        op.make_attrs(mode="bilinear")      # the frontend maps ONNX's opset-16 names


@pytest.mark.parametrize(("src", "dst"), [("float32", "int32"), ("int64", "float64"),
                                          ("uint16", "int16"), ("int8", "uint8"),
                                          ("bool", "uint8")])
def test_bitcast_compiled(src: str, dst: str) -> None:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((5, 37)) * 1000).astype(src)
    g = _graph("bitcast", [("x", x.shape, src)], dtype=dst)
    got = assert_matches_reference(g, {"x": x}, rtol=0, atol=0)[0]
    np.testing.assert_array_equal(got, x.view(dst))


def test_bitcast_needs_one_width() -> None:
    with pytest.raises(ModelError, match="one width"):
        _graph("bitcast", [("x", (3,), "float32")], dtype="float64")


def _onnx_roi_align(x: np.ndarray, rois: np.ndarray, batch: np.ndarray,
                    **attrs: object) -> np.ndarray:
    node = helper.make_node("RoiAlign", ["x", "r", "b"], ["y"], **attrs)
    graph = helper.make_graph([node], "t", [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape),
        helper.make_tensor_value_info("r", TensorProto.FLOAT, rois.shape),
        helper.make_tensor_value_info("b", TensorProto.INT64, batch.shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    return ReferenceEvaluator(model).run(None, {"x": x, "r": rois, "b": batch})[0]


@pytest.mark.parametrize(("mode", "half_pixel", "sr"), [("avg", True, 2), ("max", False, 1)])
def test_roi_align(mode: str, half_pixel: bool, sr: int) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 9, 11)).astype(np.float32)
    rois = np.array([[0.5, 1.0, 7.5, 6.0], [-3.0, -2.0, 4.0, 20.0], [2.0, 2.0, 2.2, 2.1],
                     [10.0, 8.0, 30.0, 30.0], [1.0, 3.0, 11.0, 9.0]], np.float32)
    batch = np.array([0, 1, 1, 0, 1], np.int64)
    attrs = {"output_height": 3, "output_width": 4, "sampling_ratio": sr,
             "spatial_scale": 0.75}
    want = _onnx_roi_align(x, rois, batch, mode=mode, coordinate_transformation_mode=(
        "half_pixel" if half_pixel else "output_half_pixel"), **attrs)
    op = get_op("roi_align")
    at = op.make_attrs(mode=mode, half_pixel=half_pixel, **attrs)
    np.testing.assert_allclose(op.run_reference(at, [x, rois, batch])[0], want, rtol=1e-5,
                               atol=1e-6)
    g = _graph("roi_align", [("x", x.shape, "float32"), ("r", rois.shape, "float32"),
                             ("b", batch.shape, "int64")], mode=mode, half_pixel=half_pixel,
               **attrs)
    assert_matches_reference(g, {"x": x, "r": rois, "b": batch}, rtol=1e-5, atol=1e-5)


def test_builder_functions() -> None:
    """kiln.ops.grid_sample / roi_align / bitcast build the ops (NumPy operands lifted)."""
    x, grid = _inputs((1, 2, 4, 5), (1, 3, 2, 2))
    g = kiln.Graph("b")
    xv = g.input("x", x.shape, "float32")
    rois = np.array([[0.0, 0.0, 3.0, 2.0]], np.float32)
    outs = [kiln.ops.grid_sample(xv, grid, mode="cubic", padding_mode="border"),
            kiln.ops.roi_align(xv, rois, np.array([0], np.int64), (2, 2), sampling_ratio=2),
            kiln.ops.bitcast(xv, "int32")]
    g.output(*outs)
    got = kiln.run_reference(g, {"x": x})
    np.testing.assert_allclose(got[0], _onnx_grid_sample(x, grid, "cubic", "border", False),
                               rtol=1e-5, atol=1e-6)
    assert got[1].shape == (1, 2, 2, 2)
    np.testing.assert_array_equal(got[2], x.view(np.int32))
