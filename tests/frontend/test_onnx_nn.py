"""ONNX convolution, pooling, normalisation, padding and resizing against onnxruntime: Conv
(1-D, auto_pad), ConvTranspose (the 1x1-conv shuffle and the general op, output_shape,
output_padding, groups), Max/Average/Lp/Global pooling, BatchNorm (folded into the conv before
it or a multiply-add), Instance/Group/MeanVariance/LayerNorm, LRN, Pad (every mode, opset 2 /
11 / 18), DepthToSpace/SpaceToDepth, Resize (opsets 11-19) and Upsample."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from test_onnx import check, init, make_model, randn, run_ort, tensor

import kiln
from kiln.errors import ModelError
from kiln.frontend.onnx import import_onnx
from kiln.testing import assert_outputs_close


def node_model(op: str, x_shape, consts=(), opset: int = 17, n_out: int = 1,
               out_shape=None, **attrs):
    """One ``op`` node on input ``x`` followed by the constants (empty names skip a slot).
    ``out_shape`` declares the first output's shape (ONNX's checker wants one for ops that
    are functions, such as GroupNormalization)."""
    names = ["x"] + [c.name if c is not None else "" for c in consts]
    outs = [f"y{i}" for i in range(n_out)]
    node = helper.make_node(op, names, outs, **attrs)
    declared = [tensor(o, out_shape) if i == 0 and out_shape else o for i, o in enumerate(outs)]
    return make_model([node], [tensor("x", x_shape)], declared,
                      [c for c in consts if c is not None], opset)


def compiled(model, feeds, rtol: float = 1e-5, atol: float = 1e-5) -> kiln.Graph:
    """Compile with kiln for x86 and compare with onnxruntime."""
    g = import_onnx(model)
    assert_outputs_close(kiln.compile(g)(**feeds), run_ort(model, feeds), rtol, atol)
    return g


def x_feed(shape, seed: int = 0):
    return {"x": randn(*shape, seed=seed)}


# -- convolution ---------------------------------------------------------------------------------
@pytest.mark.parametrize("attrs", [dict(), dict(strides=[2], pads=[1, 2]),
                                   dict(dilations=[2], auto_pad="VALID"),
                                   dict(group=2, auto_pad="SAME_LOWER", strides=[3])])
def test_conv1d(attrs) -> None:
    w = randn(6, 2, 3, seed=1) if attrs.get("group") else randn(6, 4, 3, seed=1)
    model = node_model("Conv", (2, 4, 17), [init("w", w), init("b", randn(6, seed=2))], **attrs)
    compiled(model, x_feed((2, 4, 17)), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("attrs", [dict(auto_pad="SAME_UPPER", strides=[2, 2]),
                                   dict(auto_pad="VALID"), dict(auto_pad="SAME_LOWER")])
def test_conv2d_auto_pad(attrs) -> None:
    model = node_model("Conv", (1, 3, 9, 10), [init("w", randn(4, 3, 2, 3, seed=1))], **attrs)
    check(model, x_feed((1, 3, 9, 10)), rtol=1e-4, atol=1e-5)


def test_conv3d_is_an_error() -> None:
    model = node_model("Conv", (1, 1, 3, 3, 3), [init("w", randn(1, 1, 2, 2, 2))])
    with pytest.raises(ModelError, match="1-D and 2-D"):
        import_onnx(model)


@pytest.mark.parametrize("x_shape,w_shape,attrs", [
    ((1, 8, 5, 7), (8, 4, 2, 2), dict(strides=[2, 2])),                 # 1x1 conv + shuffle
    ((1, 3, 4, 5), (3, 2, 3, 3), dict(strides=[2, 2], pads=[1, 0, 1, 1])),
    ((1, 4, 3, 3), (4, 2, 3, 3), dict(strides=[3, 2], output_padding=[1, 1], group=2)),
    ((1, 2, 3, 4), (2, 3, 3, 3), dict(strides=[2, 2], output_shape=[8, 9])),
    ((1, 2, 3, 4), (2, 3, 3, 3), dict(strides=[2, 2], auto_pad="SAME_UPPER")),
    ((1, 2, 4, 4), (2, 2, 3, 2), dict(dilations=[2, 1])),
    ((2, 3, 9), (3, 2, 4), dict(strides=[3], pads=[1, 2])),               # 1-D
])
def test_conv_transpose(x_shape, w_shape, attrs) -> None:
    b = randn(w_shape[1] * attrs.get("group", 1), seed=2)
    model = node_model("ConvTranspose", x_shape, [init("w", randn(*w_shape, seed=1)),
                                                  init("b", b)], **attrs)
    compiled(model, x_feed(x_shape), rtol=1e-4, atol=1e-4)


def test_conv_transpose_stride_equal_to_kernel_is_a_1x1_conv() -> None:
    model = node_model("ConvTranspose", (1, 8, 5, 7), [init("w", randn(8, 4, 2, 2, seed=1))],
                       strides=[2, 2])
    g = import_onnx(model)
    assert [n.op.name for n in g.nodes if n.op.name.startswith("conv")] == ["conv2d"]


# -- pooling -------------------------------------------------------------------------------------
@pytest.mark.parametrize("op,attrs", [
    ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    ("MaxPool", dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)),
    ("MaxPool", dict(kernel_shape=[3, 2], dilations=[2, 1], pads=[2, 1, 1, 0])),
    ("AveragePool", dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])),
    ("AveragePool", dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1,
                         strides=[2, 2], ceil_mode=1)),
    ("AveragePool", dict(kernel_shape=[2, 3], auto_pad="SAME_LOWER", strides=[2, 1])),
    ("LpPool", dict(kernel_shape=[2, 2], p=2, strides=[2, 2])),
])
def test_pool(op, attrs) -> None:
    model = node_model(op, (1, 3, 9, 11), opset=19, **attrs)
    compiled(model, x_feed((1, 3, 9, 11)))


def test_max_pool_1d_and_unused_indices() -> None:
    model = node_model("MaxPool", (2, 3, 13), n_out=2, kernel_shape=[3], strides=[2])
    model.graph.output.pop()                         # the Indices output is not read
    compiled(model, x_feed((2, 3, 13)))


def test_max_pool_indices() -> None:
    model = node_model("MaxPool", (1, 3, 8, 9), n_out=2, kernel_shape=[3, 3], strides=[2, 2],
                       pads=[1, 1, 1, 1])
    model.graph.output[1].type.tensor_type.elem_type = 7      # Indices are int64
    compiled(model, x_feed((1, 3, 8, 9)), rtol=0, atol=0)


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
def test_global_pool(op) -> None:
    compiled(node_model(op, (2, 5, 7, 9)), x_feed((2, 5, 7, 9)))


# -- normalisation -------------------------------------------------------------------------------
def bn_consts(c: int):
    rng = np.random.default_rng(3)
    return [init("s", rng.uniform(0.5, 1.5, c).astype(np.float32)),
            init("bb", rng.standard_normal(c).astype(np.float32)),
            init("m", rng.standard_normal(c).astype(np.float32)),
            init("v", rng.uniform(0.5, 2, c).astype(np.float32))]


def test_batch_norm_folds_into_conv() -> None:
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "s", "bb", "m", "v"], ["y"],
                              epsilon=1e-3)]
    consts = [init("w", randn(5, 3, 3, 3, seed=1)), init("b", randn(5, seed=2)), *bn_consts(5)]
    model = make_model(nodes, [tensor("x", (1, 3, 7, 9))], ["y"], consts)
    g = compiled(model, x_feed((1, 3, 7, 9)), rtol=1e-4, atol=1e-4)
    kernels = kiln.compile_stages(g).kernels
    assert len(kernels) == 1 and "conv2d" in kernels[0].name      # conv + bias, nothing else


def test_batch_norm_without_conv() -> None:
    model = node_model("BatchNormalization", (2, 4, 5, 3), bn_consts(4))
    compiled(model, x_feed((2, 4, 5, 3)))


def test_batch_norm_training_mode_is_an_error() -> None:
    model = node_model("BatchNormalization", (2, 4, 3), bn_consts(4), opset=15, n_out=3,
                       out_shape=(2, 4, 3), training_mode=1)
    with pytest.raises(ModelError, match="training_mode"):
        import_onnx(model)


def test_instance_norm() -> None:
    model = node_model("InstanceNormalization", (2, 3, 5, 7),
                       [init("s", randn(3, seed=1)), init("b", randn(3, seed=2))], epsilon=1e-3)
    compiled(model, x_feed((2, 3, 5, 7)), rtol=1e-4, atol=1e-4)


def test_group_norm() -> None:
    # opset 21's per-channel scale and bias (onnx's checker rejects opset 18's per-group ones)
    model = node_model("GroupNormalization", (2, 6, 3, 5),
                       [init("s", randn(6, seed=1)), init("b", randn(6, seed=2))],
                       opset=21, num_groups=2, out_shape=(2, 6, 3, 5))
    compiled(model, x_feed((2, 6, 3, 5)), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("axes", [None, [2, 3], [1]])
def test_mean_variance_normalization(axes) -> None:
    attrs = {} if axes is None else {"axes": axes}
    model = node_model("MeanVarianceNormalization", (2, 3, 4, 5), out_shape=(2, 3, 4, 5),
                       **attrs)
    compiled(model, x_feed((2, 3, 4, 5)), rtol=1e-4, atol=1e-4)


def test_lrn() -> None:
    model = node_model("LRN", (2, 7, 4, 5), size=3, alpha=1e-3, beta=0.75, bias=2.0)
    compiled(model, x_feed((2, 7, 4, 5)), rtol=1e-5, atol=1e-5)


def test_layer_norm_with_mean_and_inv_std_outputs() -> None:
    model = node_model("LayerNormalization", (3, 4, 5),
                       [init("s", randn(4, 5, seed=1)), init("b", randn(4, 5, seed=2))],
                       n_out=3, axis=1)
    compiled(model, x_feed((3, 4, 5)), rtol=1e-4, atol=1e-5)


# -- padding and rearranging ---------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
def test_pad(mode) -> None:
    pads = init("p", np.array([0, 1, 2, 0, 0, 2, 1, 3], np.int64))
    model = node_model("Pad", (1, 3, 4, 5), [pads, init("v", np.array(1.5, np.float32))],
                       opset=19, mode=mode)
    compiled(model, x_feed((1, 3, 4, 5)))


def test_pad_axes_and_negative_pads() -> None:
    consts = [init("p", np.array([2, -1, 1, 3], np.int64)), None,
              init("a", np.array([3, 1], np.int64))]
    model = node_model("Pad", (1, 3, 4, 5), consts, opset=18)
    check(model, x_feed((1, 3, 4, 5)))


def test_pad_opset2_attributes() -> None:
    model = node_model("Pad", (3, 4), opset=2, pads=[1, 0, 0, 2], mode="edge")
    check(model, x_feed((3, 4)))


@pytest.mark.parametrize("op,mode", [("DepthToSpace", "DCR"), ("DepthToSpace", "CRD"),
                                     ("SpaceToDepth", None)])
def test_depth_space(op, mode) -> None:
    shape = (2, 8, 3, 5) if op == "DepthToSpace" else (2, 3, 4, 6)
    attrs = {"blocksize": 2} | ({"mode": mode} if mode else {})
    compiled(node_model(op, shape, **attrs), x_feed(shape))


# -- resizing ------------------------------------------------------------------------------------
@pytest.mark.parametrize("opset,mode,coord,scales,sizes", [
    (13, "nearest", "asymmetric", [1, 1, 2, 2], None),
    (11, "nearest", "half_pixel", None, [1, 3, 7, 4]),
    (13, "linear", "half_pixel", [1, 1, 1.5, 0.75], None),
    (13, "linear", "align_corners", None, [1, 3, 9, 11]),
    (19, "linear", "pytorch_half_pixel", None, [1, 3, 2, 9]),
    (13, "cubic", "half_pixel", [1, 1, 1.6, 1.7], None),
])
def test_resize(opset, mode, coord, scales, sizes) -> None:
    consts = [init("roi", np.zeros(0, np.float32)),
              init("sc", np.array(scales or [], np.float32)),
              init("sz", np.array(sizes, np.int64)) if sizes else None]
    model = node_model("Resize", (1, 3, 5, 6), consts, opset=opset, mode=mode,
                       coordinate_transformation_mode=coord)
    compiled(model, x_feed((1, 3, 5, 6)), rtol=1e-4, atol=1e-5)


def test_resize_axes_and_keep_aspect_ratio() -> None:
    consts = [None, None, init("sz", np.array([8, 9], np.int64))]
    model = node_model("Resize", (1, 2, 4, 6), consts, opset=18, axes=[2, 3],
                       keep_aspect_ratio_policy="not_larger")
    check(model, x_feed((1, 2, 4, 6)))


def test_resize_runtime_scales_is_an_error() -> None:
    node = helper.make_node("Resize", ["x", "", "s"], ["y"])
    model = make_model([node], [tensor("x", (1, 1, 2, 2)), tensor("s", (4,))], ["y"])
    with pytest.raises(ModelError, match="constant"):
        import_onnx(model)


@pytest.mark.parametrize("opset", [7, 9])
def test_upsample(opset) -> None:
    scales = [1.0, 1.0, 2.0, 3.0]
    if opset < 9:       # the scales attribute of opset 7
        model = node_model("Upsample", (1, 2, 3, 4), opset=opset, mode="nearest", scales=scales)
    else:
        model = node_model("Upsample", (1, 2, 3, 4), [init("s", np.array(scales, np.float32))],
                           opset=opset, mode="nearest")
    x = x_feed((1, 2, 3, 4))
    want = x["x"].repeat(2, axis=2).repeat(3, axis=3)
    np.testing.assert_array_equal(kiln.compile(import_onnx(model))(**x)[0], want)

