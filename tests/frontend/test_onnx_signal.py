"""ONNX signal, sampling and other less common ops: kiln's compiled code against onnxruntime
(and onnx's reference evaluator for the op onnxruntime lacks: BitCast)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import kiln
from kiln.errors import ModelError
from kiln.frontend.onnx import import_onnx
from kiln.testing import assert_outputs_close
from tests.frontend.test_onnx import make_model, randn, run_ort, tensor

F32 = TensorProto.FLOAT


def _compiled(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    lib = kiln.compile(model, target="x86")
    got = lib(*feeds.values())
    return list(got) if isinstance(got, (list, tuple)) else [got]


def _check(model: onnx.ModelProto, feeds: dict[str, np.ndarray], rtol: float = 1e-4,
           atol: float = 1e-5, compiled: bool = False) -> None:
    """kiln against onnxruntime: the compiled library where the op has its own kernel, else
    the imported graph on kiln's reference interpreter (the kiln ops these lower onto are
    compiled and tested on their own; compiling here would only slow the suite down)."""
    got = _compiled(model, feeds) if compiled else kiln.run_reference(import_onnx(model), feeds)
    assert_outputs_close(got, run_ort(model, feeds), rtol, atol)


def _check_spec(model: onnx.ModelProto, feeds: dict[str, np.ndarray],
                spec: onnx.ModelProto | None = None) -> None:
    """kiln's compiled library against onnx's reference evaluator (of ``spec`` if given)."""
    want = ReferenceEvaluator(spec or model).run(None, feeds)
    assert_outputs_close(_compiled(model, feeds), want, 1e-5, 1e-5)


def _node_model(op: str, inputs: list[tuple[str, tuple[int, ...]]], consts: dict[str, object],
                opset: int, **attrs: object) -> onnx.ModelProto:
    names = [n for n, _ in inputs] + list(consts)
    node = helper.make_node(op, names, ["y"], **attrs)
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()]
    return make_model([node], [tensor(n, s) for n, s in inputs], ["y"], inits, opset)


# -- GridSample, AffineGrid ---------------------------------------------------------------------
# onnxruntime's bicubic sampling with border padding differs from the spec's reference
# (taps past the border), so GridSample is checked against onnx's reference evaluator.
@pytest.mark.parametrize(("mode", "padding", "align"), [
    ("linear", "zeros", 0), ("cubic", "border", 1), ("nearest", "reflection", 0),
])
def test_grid_sample_2d(mode: str, padding: str, align: int) -> None:
    x, grid = randn(2, 3, 7, 9), randn(2, 5, 11, 2, seed=1) * 1.4   # some points outside
    model = _node_model("GridSample", [("x", x.shape), ("g", grid.shape)], {}, 20, mode=mode,
                        padding_mode=padding, align_corners=align)
    _check_spec(model, {"x": x, "g": grid})


def test_grid_sample_3d() -> None:
    x, grid = randn(1, 2, 5, 6, 7), randn(1, 3, 4, 5, 3, seed=1) * 1.2
    model = _node_model("GridSample", [("x", x.shape), ("g", grid.shape)], {}, 20,
                        mode="linear", padding_mode="reflection", align_corners=1)
    _check_spec(model, {"x": x, "g": grid})


def test_grid_sample_opset16_mode_names() -> None:
    x, grid = randn(1, 2, 5, 6), randn(1, 3, 4, 2, seed=1)
    old = _node_model("GridSample", [("x", x.shape), ("g", grid.shape)], {}, 16,
                      mode="bicubic", padding_mode="border")
    g = import_onnx(old)
    assert g.nodes[-1].attrs.mode.value == "cubic"
    new = _node_model("GridSample", [("x", x.shape), ("g", grid.shape)], {}, 20,
                      mode="cubic", padding_mode="border")
    assert_outputs_close(kiln.run_reference(g, {"x": x, "g": grid}),
                         ReferenceEvaluator(new).run(None, {"x": x, "g": grid}), 1e-5, 1e-5)


@pytest.mark.parametrize("align", [0, 1])
def test_affine_grid(align: int) -> None:
    theta = randn(2, 2, 3)
    model = _node_model("AffineGrid", [("t", theta.shape)],
                        {"size": np.array([2, 3, 5, 7], np.int64)}, 20, align_corners=align)
    _check(model, {"t": theta})


# -- DFT, STFT, windows, MelWeightMatrix --------------------------------------------------------
@pytest.mark.parametrize(("opset", "shape", "axis", "inverse", "onesided", "length"), [
    (17, (2, 9, 1), 1, 0, 0, None),
    (17, (2, 9, 3, 2), 1, 1, 0, 11),         # complex input, zero-padded
    (20, (3, 10, 1), -2, 0, 1, 7),           # rfft, truncated
    (20, (2, 5, 6, 2), 2, 1, 1, None),       # irfft of 6 bins -> 10 samples
    (20, (4, 7, 2), 0, 0, 0, None),
])
def test_dft(opset: int, shape: tuple[int, ...], axis: int, inverse: int, onesided: int,
             length: int | None) -> None:
    x = randn(*shape)
    consts: dict[str, object] = {}
    attrs: dict[str, object] = {"inverse": inverse, "onesided": onesided}
    if opset >= 20:
        consts["len"] = np.array(length if length is not None else 0, np.int64)
        consts["axis"] = np.array(axis, np.int64)
    else:
        attrs["axis"] = axis
        if length is not None:
            consts["len"] = np.array(length, np.int64)
    model = _node_model("DFT", [("x", shape)], consts, opset, **attrs)
    if opset >= 20 and length is None:      # an empty name leaves dft_length out
        model.graph.node[0].input[1] = ""
        del model.graph.initializer[0]
    _check(model, {"x": x}, compiled=opset == 20 and onesided == 1)


def test_stft_with_window() -> None:
    sig, win = randn(2, 37, 1), np.hanning(8).astype(np.float32)
    model = _node_model("STFT", [("s", sig.shape)],
                        {"step": np.array(5, np.int64), "w": win}, 17, onesided=1)
    _check(model, {"s": sig})


@pytest.mark.parametrize("op", ["HannWindow", "HammingWindow", "BlackmanWindow"])
@pytest.mark.parametrize("periodic", [0, 1])
def test_windows_fold_to_constants(op: str, periodic: int) -> None:
    model = _node_model(op, [], {"n": np.array(11, np.int64)}, 17, periodic=periodic)
    g = import_onnx(model)
    assert not g.nodes and g.outputs[0].is_constant
    assert_outputs_close(kiln.run_reference(g, {}), run_ort(model, {}), 1e-6, 1e-6)


def test_mel_weight_matrix() -> None:
    consts = {"bins": np.array(8, np.int64), "n": np.array(64, np.int64),
              "rate": np.array(16000, np.int64), "lo": np.array(20.0, np.float32),
              "hi": np.array(7000.0, np.float32)}
    model = _node_model("MelWeightMatrix", [], consts, 17)
    assert_outputs_close(kiln.run_reference(import_onnx(model), {}), run_ort(model, {}), 1e-6,
                         1e-6)


# -- LpNormalization, CenterCropPad, Col2Im ----------------------------------------------------
@pytest.mark.parametrize(("p", "axis"), [(1, 0), (2, -1), (2, 1)])
def test_lp_normalization(p: int, axis: int) -> None:
    x = randn(5, 7, 3)
    x[1, :, 2] = 0.0          # a zero norm along axis 1 gives 0, not NaN
    model = _node_model("LpNormalization", [("x", x.shape)], {}, 17, p=p, axis=axis)
    _check(model, {"x": x})


def test_center_crop_pad() -> None:
    x = randn(5, 8, 3)
    model = _node_model("CenterCropPad", [("x", x.shape)],
                        {"shape": np.array([7, 5], np.int64)}, 18, axes=[0, -2])
    _check(model, {"x": x})


def test_col2im() -> None:
    x = randn(2, 3 * 6, 20)      # 3 channels, 2x3 blocks, 4x5 block positions
    model = _node_model("Col2Im", [("x", x.shape)],
                        {"img": np.array([7, 9], np.int64), "blk": np.array([2, 3], np.int64)},
                        18, strides=[2, 2], pads=[1, 1, 1, 2], dilations=[1, 1])
    _check(model, {"x": x})


# -- EyeLike, BitCast, ReverseSequence, Det, MaxUnpool ------------------------------------------
def test_eye_like() -> None:
    x = randn(5, 7)
    model = _node_model("EyeLike", [("x", x.shape)], {}, 17, k=2, dtype=TensorProto.INT32)
    model.graph.output[0].type.tensor_type.elem_type = TensorProto.INT32
    _check(model, {"x": x})


@pytest.mark.parametrize(("src", "dst"), [(np.float32, TensorProto.INT32),
                                          (np.uint16, TensorProto.INT16),
                                          (np.bool_, TensorProto.UINT8)])
def test_bitcast(src: type, dst: int) -> None:
    x = (randn(5, 7) * 100).astype(src)
    node = helper.make_node("BitCast", ["x"], ["y"], to=dst)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(src))
    model = helper.make_model(helper.make_graph(
        [node], "t", [tensor("x", x.shape, elem)], [tensor("y", x.shape, dst)]),
        opset_imports=[helper.make_opsetid("", 26)])
    want = ReferenceEvaluator(model).run(None, {"x": x})
    got = _compiled(model, {"x": x}) if dst == TensorProto.INT32 else \
        kiln.run_reference(import_onnx(model), {"x": x})
    assert got[0].dtype == want[0].dtype
    np.testing.assert_array_equal(got[0], want[0])


def test_bitcast_needs_one_width() -> None:
    node = helper.make_node("BitCast", ["x"], ["y"], to=TensorProto.INT64)
    model = helper.make_model(helper.make_graph(
        [node], "t", [tensor("x", (3,))], [tensor("y", (3,), TensorProto.INT64)]),
        opset_imports=[helper.make_opsetid("", 26)])
    with pytest.raises(ModelError, match="one width"):
        import_onnx(model)


@pytest.mark.parametrize(("time_axis", "batch_axis"), [(0, 1), (1, 0)])
def test_reverse_sequence(time_axis: int, batch_axis: int) -> None:
    shape = (6, 5, 3) if time_axis == 0 else (5, 6, 3)
    x = randn(*shape)
    lens = np.array([6, 0, 3, 1, 5], np.int64)
    node = helper.make_node("ReverseSequence", ["x", "l"], ["y"], time_axis=time_axis,
                            batch_axis=batch_axis)
    model = make_model([node], [tensor("x", shape), tensor("l", (5,), TensorProto.INT64)],
                       ["y"])
    _check(model, {"x": x, "l": lens})


@pytest.mark.parametrize("n", [2, 3, 4])
def test_det(n: int) -> None:
    x = randn(3, 2, n, n)
    model = _node_model("Det", [("x", x.shape)], {}, 17)
    _check(model, {"x": x}, rtol=1e-4, atol=1e-5)


def test_max_unpool_with_output_shape() -> None:
    """Indices index the inferred shape, then the result is padded to output_shape at the end
    (ONNX's reference; onnxruntime reads them in output_shape's layout, so the padded case is
    checked against the reference)."""
    x = randn(2, 3, 6, 8)
    pool = helper.make_node("MaxPool", ["x"], ["p", "i"], kernel_shape=[2, 2], strides=[2, 2])
    pooled, idx = run_ort(make_model([pool], [tensor("x", x.shape)],
                                     ["p", tensor("i", None, TensorProto.INT64)]), {"x": x})
    feeds = {"p": pooled, "i": idx}
    for out_shape in [(2, 3, 6, 8), (2, 3, 7, 9)]:
        unpool = helper.make_node("MaxUnpool", ["p", "i", "s"], ["y"], kernel_shape=[2, 2],
                                  strides=[2, 2])
        inputs = [tensor("p", pooled.shape), tensor("i", idx.shape, TensorProto.INT64)]
        model = make_model([unpool], inputs, [tensor("y", out_shape)],
                           [numpy_helper.from_array(np.array(out_shape, np.int64), "s")])
        got = kiln.run_reference(import_onnx(model), feeds)
        want = (run_ort(model, feeds) if out_shape == x.shape else
                ReferenceEvaluator(model).run(None, feeds))
        assert_outputs_close(got, want, 0, 0)


def test_deform_conv_groups_mask_bias() -> None:
    """Against onnx's reference (the spec's own grid-sampling definition)."""
    x, w = randn(2, 4, 6, 7), randn(6, 2, 2, 3, seed=1)
    off = randn(2, 2 * 2 * 6, 4, 2, seed=2)           # offset_group 2, 2x3 taps, 4x2 output
    mask, b = np.abs(randn(2, 2 * 6, 4, 2, seed=3)), randn(6, seed=4)
    node = helper.make_node("DeformConv", ["x", "w", "o", "b", "m"], ["y"], group=2,
                            offset_group=2, strides=[2, 2], pads=[1, 0, 1, 0],
                            dilations=[1, 2])
    model = make_model([node], [tensor("x", x.shape), tensor("w", w.shape),
                                tensor("o", off.shape), tensor("b", b.shape),
                                tensor("m", mask.shape)], ["y"], opset=19)
    feeds = {"x": x, "w": w, "o": off, "b": b, "m": mask}
    want = ReferenceEvaluator(model).run(None, feeds)
    assert_outputs_close(_compiled(model, feeds), want, 1e-4, 1e-5)
