"""The ONNX importer against onnxruntime: each op (and each opset whose semantics differ) run by
kiln's reference interpreter, plus a few models compiled end to end."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import kiln
from kiln.frontend.onnx import import_onnx
from kiln.testing import assert_outputs_close

ort = pytest.importorskip("onnxruntime")

F32 = TensorProto.FLOAT
I64 = TensorProto.INT64
ODD = (3, 5, 7)
INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min


# -- helpers ------------------------------------------------------------------------------------
def tensor(name: str, shape: Sequence[int | str] | None, elem: int = F32) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def init(name: str, data: object) -> TensorProto:
    return numpy_helper.from_array(np.asarray(data), name)


def make_model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto],
               outputs: list[onnx.ValueInfoProto] | Sequence[str],
               initializers: Sequence[TensorProto] = (), opset: int = 17) -> onnx.ModelProto:
    """A model onnxruntime 1.31 reads: IR 10 (onnx 1.23 writes IR 14 by default). Outputs given
    by name are float tensors of undeclared shape."""
    outs = [tensor(o, None) if isinstance(o, str) else o for o in outputs]
    graph = helper.make_graph(nodes, "test", inputs, outs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                             ir_version=10)


def run_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), sess_options=opts,
                                providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def check(model: onnx.ModelProto, feeds: dict[str, np.ndarray], rtol: float = 1e-5,
          atol: float = 1e-6) -> kiln.Graph:
    """Import ``model``, run kiln's reference interpreter and compare with onnxruntime."""
    g = import_onnx(model)
    assert_outputs_close(kiln.run_reference(g, feeds), run_ort(model, feeds), rtol, atol)
    return g


def randn(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def one_op(op: str, shapes: Sequence[Sequence[int]], opset: int = 17, n_out: int = 1,
           consts: Sequence[TensorProto] = (), **attrs: object) -> onnx.ModelProto:
    """A model of one ``op`` node on float inputs x0, x1, ... then the constants' names."""
    names = [f"x{i}" for i in range(len(shapes))]
    outs = [f"y{i}" for i in range(n_out)]
    node = helper.make_node(op, names + [c.name for c in consts], outs, name="n", **attrs)
    return make_model([node], [tensor(n, s) for n, s in zip(names, shapes, strict=True)], outs,
                      consts, opset)


def feeds_for(shapes: Sequence[Sequence[int]], positive: bool = False) -> dict[str, np.ndarray]:
    out = {}
    for i, s in enumerate(shapes):
        x = randn(*s, seed=i)
        out[f"x{i}"] = np.abs(x) + 0.5 if positive else x
    return out


# -- elementwise ------------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["Relu", "Sigmoid", "Tanh", "Exp", "Erf", "Neg", "Abs", "Log",
                                "Sqrt", "Reciprocal"])
def test_unary(op: str) -> None:
    positive = op in ("Log", "Sqrt", "Reciprocal")
    check(one_op(op, [ODD]), feeds_for([ODD], positive))


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min"])
@pytest.mark.parametrize("shapes", [(ODD, ODD), (ODD, (5, 1)), ((7,), ODD)])
def test_binary(op: str, shapes) -> None:
    check(one_op(op, shapes), feeds_for(shapes, positive=op in ("Div", "Pow")), rtol=1e-5)


@pytest.mark.parametrize("op", ["Max", "Min"])
def test_variadic_max_min(op: str) -> None:
    shapes = [ODD, (5, 7), (7,)]
    check(one_op(op, shapes), feeds_for(shapes))


def test_pow_with_integer_exponent() -> None:
    model = one_op("Pow", [ODD], consts=[init("e", np.array(3, np.int64))])
    check(model, feeds_for([ODD]), rtol=1e-5)


def test_pow_integer_base_float_exponent() -> None:
    node = helper.make_node("Pow", ["x", "e"], ["y"])
    model = make_model([node], [tensor("x", ODD, I64)], [tensor("y", None, I64)],
                       [init("e", np.array([0.5, 1.5, 2.0, 1.0, 3.0, 0.0, 2.5], np.float32))])
    check(model, {"x": np.random.default_rng(0).integers(0, 9, ODD)})


@pytest.mark.parametrize("op", ["Equal", "Less", "Greater"])
def test_compare_and_where(op: str) -> None:
    nodes = [helper.make_node(op, ["a", "b"], ["c"]),
             helper.make_node("Cast", ["b"], ["b2"], to=F32),
             helper.make_node("Where", ["c", "x", "b2"], ["y"])]
    model = make_model(nodes, [tensor("a", ODD, I64), tensor("b", (5, 1), I64),
                               tensor("x", ODD)], ["y"])
    rng = np.random.default_rng(0)
    check(model, {"a": rng.integers(-2, 3, ODD), "b": rng.integers(-2, 3, (5, 1)),
                  "x": randn(*ODD)})


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_opset20(approximate: str) -> None:
    check(one_op("Gelu", [ODD], opset=20, approximate=approximate), feeds_for([ODD]),
          rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("to,elem", [("int32", TensorProto.INT32), ("int64", I64),
                                     ("float16", TensorProto.FLOAT16),
                                     ("bool", TensorProto.BOOL), ("float32", F32)])
def test_cast(to: str, elem: int) -> None:
    model = make_model([helper.make_node("Cast", ["x"], ["y"], to=elem)], [tensor("x", ODD)],
                       [tensor("y", None, elem)])
    x = randn(*ODD) * 3
    x[0, 0, :3] = 0.0
    g = check(model, {"x": x})
    assert g.outputs[0].dtype.value == to


# -- GEMM ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("trans_a", [0, 1])
@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("b_const", [True, False])
def test_gemm_transposes(trans_a: int, trans_b: int, b_const: bool) -> None:
    m, k, n = 3, 7, 5
    a_shape = (k, m) if trans_a else (m, k)
    b_shape = (n, k) if trans_b else (k, n)
    b = randn(*b_shape, seed=3)
    inputs = [tensor("a", a_shape)] + ([] if b_const else [tensor("b", b_shape)])
    inits = [init("b", b), init("c", randn(n, seed=4))] if b_const else [init("c",
                                                                          randn(n, seed=4))]
    node = helper.make_node("Gemm", ["a", "b", "c"], ["y"], transA=trans_a, transB=trans_b,
                            alpha=0.5, beta=2.0)
    feeds = {"a": randn(*a_shape)} | ({} if b_const else {"b": b})
    check(make_model([node], inputs, ["y"], inits), feeds, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("c_shape", [None, (), (1,), (5,), (1, 5), (3, 1), (3, 5)])
@pytest.mark.parametrize("c_input", [False, True])
def test_gemm_bias(c_shape, c_input: bool) -> None:
    inputs, inits, names = [tensor("a", (3, 7))], [init("w", randn(5, 7, seed=1))], ["a", "w"]
    feeds = {"a": randn(3, 7)}
    if c_shape is not None:
        c = randn(*c_shape, seed=2) if c_shape else np.float32(0.25)
        names.append("c")
        if c_input:
            inputs.append(tensor("c", c_shape))
            feeds["c"] = np.asarray(c, np.float32)
        else:
            inits.append(init("c", np.asarray(c, np.float32)))
    node = helper.make_node("Gemm", names, ["y"], transB=1, beta=0.5)
    check(make_model([node], inputs, ["y"], inits), feeds, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shapes", [(ODD, (7, 4)), ((2, 1, 5, 7), (3, 7, 4)), ((7,), (3, 7, 4)),
                                    (ODD, (7,)), ((7,), (7,)), ((5, 7), (3, 7, 2))])
def test_matmul(shapes) -> None:
    check(one_op("MatMul", shapes), feeds_for(shapes), rtol=1e-5, atol=1e-5)


# -- normalisation ------------------------------------------------------------------------------
@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("axis", [None, 0, 1, 2, -1, -2])
def test_softmax_opsets(opset: int, axis: int | None) -> None:
    attrs = {} if axis is None else {"axis": axis}
    check(one_op("Softmax", [ODD], opset=opset, **attrs), feeds_for([ODD]), atol=1e-6)


@pytest.mark.parametrize("axis", [-1, 1])
@pytest.mark.parametrize("bias", ["const", "none", "input"])
def test_layer_norm(axis: int, bias: str) -> None:
    norm = ODD[axis:]
    inputs, feeds = [tensor("x", ODD)], {"x": randn(*ODD)}
    inits = [init("s", randn(*norm, seed=5))]
    names = ["x", "s"]
    if bias == "const":
        inits.append(init("b", randn(*norm, seed=6)))
        names.append("b")
    elif bias == "input":
        inputs.append(tensor("b", norm))
        feeds["b"] = randn(*norm, seed=6)
        names.append("b")
    node = helper.make_node("LayerNormalization", names, ["y"], axis=axis, epsilon=1e-3)
    check(make_model([node], inputs, ["y"], inits), feeds, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scale_input", [False, True])
def test_layer_norm_broadcast_scale(scale_input: bool) -> None:
    """Scale of shape [1, 7] for normalised dims [5, 7]: kiln's layer_norm wants [5, 7]."""
    node = helper.make_node("LayerNormalization", ["x", "s", "b"], ["y"], axis=1)
    scale = randn(1, 7, seed=1)
    inputs, feeds = [tensor("x", ODD)], {"x": randn(*ODD)}
    inits = [init("b", randn(7, seed=2))]
    if scale_input:
        inputs.append(tensor("s", (1, 7)))
        feeds["s"] = scale
    else:
        inits.append(init("s", scale))
    check(make_model([node], inputs, ["y"], inits), feeds, rtol=1e-5, atol=1e-5)


# -- data movement ------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [[0, -1], [-1, 7], [7, 0, 3], [105], [3, 5, 7, 1], [-1]])
def test_reshape(shape: list[int]) -> None:
    model = one_op("Reshape", [ODD], consts=[init("s", np.array(shape, np.int64))])
    check(model, feeds_for([ODD]))


def test_reshape_allowzero() -> None:
    model = one_op("Reshape", [ODD], opset=14, consts=[init("s", np.array([3, 35], np.int64))],
                   allowzero=1)
    check(model, feeds_for([ODD]))


@pytest.mark.parametrize("perm", [None, [0, 2, 1], [2, 0, 1]])
def test_transpose(perm) -> None:
    attrs = {} if perm is None else {"perm": perm}
    check(one_op("Transpose", [ODD], **attrs), feeds_for([ODD]))


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concat(axis: int) -> None:
    shape2 = list(ODD)
    shape2[axis] = 2
    shapes = [ODD, tuple(shape2)]
    check(one_op("Concat", shapes, axis=axis), feeds_for(shapes))


@pytest.mark.parametrize("opset,sizes,n_out,axis", [
    (11, [2, 5], 2, 2), (11, None, 5, 1), (13, [1, 4, 2], 3, -1), (13, None, 3, 0),
    (18, [3, 4], 2, 2), (18, "num_outputs=3", 3, 2), (18, "num_outputs=4", 4, 2),
    (18, "num_outputs=5", 5, 1),
])
def test_split_opsets(opset: int, sizes, n_out: int, axis: int) -> None:
    attrs: dict[str, object] = {"axis": axis}
    consts = []
    if isinstance(sizes, str):
        attrs["num_outputs"] = int(sizes.split("=")[1])
    elif sizes is not None and opset < 13:
        attrs["split"] = sizes
    elif sizes is not None:
        consts = [init("split", np.array(sizes, np.int64))]
    check(one_op("Split", [ODD], opset=opset, n_out=n_out, consts=consts, **attrs),
          feeds_for([ODD]))


SLICES = [  # starts, ends, axes, steps
    ([1], [3], [0], None),
    ([0, 1], [INT64_MAX, -1], [1, 2], None),
    ([-3], [INT64_MAX], [-1], [2]),
    ([-1], [INT64_MIN], [2], [-1]),
    ([4, 10], [-10, 0], [1, 2], [-2, -3]),
    ([1, 0, 2], [2, 5, 6], None, None),
    ([100], [INT64_MAX], [2], None),
]


@pytest.mark.parametrize("starts,ends,axes,steps", SLICES)
def test_slice_inputs(starts, ends, axes, steps) -> None:
    consts = [init("starts", np.array(starts, np.int64)), init("ends", np.array(ends, np.int64))]
    if axes is not None or steps is not None:
        consts.append(init("axes", np.array(axes if axes is not None
                                            else list(range(len(starts))), np.int64)))
    if steps is not None:
        consts.append(init("steps", np.array(steps, np.int64)))
    check(one_op("Slice", [ODD], opset=13, consts=consts), feeds_for([ODD]))


def test_slice_attributes_opset9() -> None:
    model = one_op("Slice", [ODD], opset=9, starts=[1, -4], ends=[INT64_MAX, 6], axes=[0, 2])
    check(model, feeds_for([ODD]))


@pytest.mark.parametrize("axis,indices", [(0, [2, 0, -1]), (1, [[1, 4], [-2, 0]]), (2, 3),
                                          (-1, [6, 6, 0])])
def test_gather_constant_indices(axis: int, indices) -> None:
    model = one_op("Gather", [ODD], consts=[init("i", np.array(indices, np.int64))], axis=axis)
    check(model, feeds_for([ODD]))


def test_gather_runtime_indices() -> None:
    node = helper.make_node("Gather", ["table", "ids"], ["y"])
    model = make_model([node], [tensor("ids", (2, 3), I64)], ["y"],
                       [init("table", randn(11, 4))])
    check(model, {"ids": np.array([[0, 10, 3], [3, 5, 1]], np.int64)})


@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("axes", [[0], [1, -1], [4, 0]])
def test_unsqueeze_opsets(opset: int, axes: list[int]) -> None:
    if opset < 13:
        model = one_op("Unsqueeze", [ODD], opset=opset, axes=axes)
    else:
        model = one_op("Unsqueeze", [ODD], opset=opset,
                       consts=[init("axes", np.array(axes, np.int64))])
    check(model, feeds_for([ODD]))


@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("axes", [None, [2], [-1, 0]])
def test_squeeze_opsets(opset: int, axes) -> None:
    shape = (1, 5, 1, 7, 1)
    if axes is None:
        model = one_op("Squeeze", [shape], opset=opset)
    elif opset < 13:
        model = one_op("Squeeze", [shape], opset=opset, axes=axes)
    else:
        model = one_op("Squeeze", [shape], opset=opset,
                       consts=[init("axes", np.array(axes, np.int64))])
    check(model, feeds_for([shape]))


@pytest.mark.parametrize("axis", [0, 1, 2, 3, -1])
def test_flatten(axis: int) -> None:
    check(one_op("Flatten", [ODD], axis=axis), feeds_for([ODD]))


# -- reductions ---------------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean", "ReduceMax"])
@pytest.mark.parametrize("opset", [11, 13, 18])
@pytest.mark.parametrize("axes,keepdims", [([1], 1), ([0, -1], 0), (None, 1), (None, 0),
                                           ([2], 0)])
def test_reduce_opsets(op: str, opset: int, axes, keepdims: int) -> None:
    axes_as_input = opset >= 18 or (op == "ReduceSum" and opset >= 13)
    attrs: dict[str, object] = {"keepdims": keepdims}
    consts = []
    if axes is not None and axes_as_input:
        consts = [init("axes", np.array(axes, np.int64))]
    elif axes is not None:
        attrs["axes"] = axes
    check(one_op(op, [ODD], opset=opset, consts=consts, **attrs), feeds_for([ODD]),
          rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op,opset", [("ReduceSum", 13), ("ReduceMean", 18), ("ReduceMax", 18)])
def test_reduce_noop_with_empty_axes(op: str, opset: int) -> None:
    model = one_op(op, [ODD], opset=opset, consts=[init("axes", np.array([], np.int64))],
                   noop_with_empty_axes=1)
    g = check(model, feeds_for([ODD]))
    assert not g.nodes


# -- constants and shape arithmetic ---------------------------------------------------------------
def test_constant_nodes_and_identity() -> None:
    nodes = [
        helper.make_node("Constant", [], ["c"], value=init("cv", randn(5, 7, seed=1))),
        helper.make_node("Constant", [], ["s"], value_float=2.5),
        helper.make_node("Constant", [], ["k"], value_ints=[3, 35]),
        helper.make_node("Add", ["x", "c"], ["a"]),
        helper.make_node("Identity", ["a"], ["b"]),
        helper.make_node("Mul", ["b", "s"], ["m"]),
        helper.make_node("Reshape", ["m", "k"], ["y"]),
    ]
    g = check(make_model(nodes, [tensor("x", ODD)], ["y"]), {"x": randn(*ODD)})
    assert [n.op.name for n in g.nodes] == ["add", "mul", "reshape"]


def test_shape_arithmetic_folds() -> None:
    """``Shape -> Gather -> Unsqueeze -> Concat -> Reshape``, as exporters write it."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shp"]),
        helper.make_node("Gather", ["shp", "zero"], ["b"], axis=0),
        helper.make_node("Unsqueeze", ["b", "ax0"], ["b1"]),
        helper.make_node("Concat", ["b1", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["flat"]),
        helper.make_node("Shape", ["x"], ["tail"], start=-2),
        helper.make_node("Cast", ["tail"], ["tailf"], to=F32),
        helper.make_node("ReduceSum", ["tailf"], ["n"], keepdims=0),
        helper.make_node("Div", ["flat", "n"], ["y"]),
    ]
    inits = [init("zero", np.array(0, np.int64)), init("ax0", np.array([0], np.int64)),
             init("minus1", np.array([-1], np.int64))]
    g = check(make_model(nodes, [tensor("x", ODD)], ["y"], inits), {"x": randn(*ODD)})
    assert [n.op.name for n in g.nodes] == ["reshape", "div"]


def test_constant_of_shape_and_expand() -> None:
    nodes = [
        helper.make_node("ConstantOfShape", ["shp"], ["z"],
                         value=init("v", np.array([1.5], np.float32))),
        helper.make_node("Expand", ["x", "shp"], ["e"]),
        helper.make_node("Expand", ["row", "shp"], ["rows"]),
        helper.make_node("Add", ["e", "z"], ["ez"]),
        helper.make_node("Add", ["ez", "rows"], ["y"]),
    ]
    model = make_model(nodes, [tensor("x", (5, 1))], ["y"],
                       [init("shp", np.array([3, 5, 7], np.int64)), init("row", randn(7))])
    g = check(model, {"x": randn(5, 1)})
    assert [n.op.name for n in g.nodes] == ["broadcast_to", "add", "add"]


# -- naming, warnings, errors ---------------------------------------------------------------------
def test_names_follow_the_model(tmp_path) -> None:
    nodes = [helper.make_node("MatMul", ["x", "w"], ["hidden"], name="fc"),
             helper.make_node("Relu", ["hidden"], ["act"], name="act"),
             helper.make_node("Gemm", ["act", "w2", "b2"], ["logits"], transB=1)]
    model = make_model(nodes, [tensor("x", (2, 4))], ["logits"],
                       [init("w", randn(4, 3)), init("w2", randn(5, 3)), init("b2", randn(5))])
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    g = import_onnx(str(path))
    assert [v.name for v in g.inputs] == ["x"]
    assert [v.name for v in g.outputs] == ["logits"]
    assert [o.name for n in g.nodes for o in n.outputs] == ["hidden", "act", "logits.dense",
                                                             "logits"]
    assert "%logits = add(%logits.dense, %b2)" in str(g)


def test_symbolic_and_unknown_dims() -> None:
    x = helper.make_tensor_value_info("x", F32, ["batch", None, 7])
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [x], ["y"])
    g = import_onnx(model)
    assert g.inputs[0].shape == ("batch", "x_dim1", 7)
    assert g.outputs[0].shape == ("batch", "x_dim1", 7)


def test_input_shapes_fix_symbolic_dims_before_conversion() -> None:
    """``Shape`` of a symbolic dim stays symbolic; ``input_shapes`` folds it to a constant."""
    nodes = [helper.make_node("Shape", ["x"], ["shp"], name="shape"),
             helper.make_node("Reshape", ["x", "shp"], ["y"])]
    model = make_model(nodes, [tensor("x", ("batch", 7))], ["y"])
    g = import_onnx(model)
    assert g.outputs[0].shape == ("batch", 7)
    g = import_onnx(model, input_shapes={"x": (3, 7)})
    assert g.inputs[0].shape == (3, 7)
    assert [n.op.name for n in g.nodes] == []        # the reshape to its own shape is gone
    x = randn(3, 7)
    np.testing.assert_array_equal(kiln.run_reference(g, x=x)[0], x)
    with pytest.raises(kiln.ModelError, match="input 'x' has shape"):
        import_onnx(model, input_shapes={"x": (3, 8)})


def test_unusable_initializer_is_an_error_only_when_read() -> None:
    odd = helper.make_tensor("odd", TensorProto.FLOAT8E8M0, [3], [1.0, 2.0, 4.0])
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [tensor("x", ODD)], ["y"],
                       [odd])
    check(model, {"x": randn(*ODD)})
    model = make_model([helper.make_node("Cast", ["odd"], ["y"], to=F32, name="c")], [], ["y"],
                       [odd])
    with pytest.raises(kiln.ModelError,
                       match="node c .*initializer 'odd' has ONNX dtype FLOAT8E8M0"):
        import_onnx(model)


def test_declared_output_shape_mismatch_warns() -> None:
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [tensor("x", ODD)],
                       [tensor("y", (3, 5, 8))])
    with pytest.warns(UserWarning, match=r"ONNX output 'y'.*kiln infers f32\[3, 5, 7\]"):
        g = import_onnx(model)
    assert g.outputs[0].shape == ODD


def test_matching_declared_output_does_not_warn() -> None:
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [tensor("x", ("n", 5))],
                       [tensor("y", ("n", 5))])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        import_onnx(model)


def test_unsupported_ops_are_all_listed() -> None:
    nodes = [
        helper.make_node("LSTM", ["x", "w", "r"], ["h1"], name="lstm_1", hidden_size=4),
        helper.make_node("Relu", ["x"], ["rx"], name="relu"),
        helper.make_node("LSTM", ["rx", "w", "r"], ["h2"], name="lstm_2", hidden_size=4),
        helper.make_node("NonMaxSuppression", ["boxes", "scores"], ["sel"], name="nms"),
    ]
    model = make_model(
        nodes, [tensor("x", (2, 1, 3)), tensor("boxes", (1, 4, 4)), tensor("scores", (1, 1, 4))],
        [tensor("h1", None), tensor("h2", None), tensor("sel", None, I64)],
        [init("w", randn(1, 16, 3)), init("r", randn(1, 16, 4))])
    with pytest.raises(kiln.ModelError) as e:
        import_onnx(model)
    assert str(e.value) == ("unsupported ONNX ops: NonMaxSuppression (domain ai.onnx, "
                            "opset 17; node nms)")


def test_ops_of_other_domains_are_unsupported() -> None:
    node = helper.make_node("FusedMatMul", ["x", "x"], ["y"], domain="com.microsoft")
    model = make_model([node], [tensor("x", (4, 4))], [tensor("y", (4, 4))])
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    with pytest.raises(kiln.ModelError,
                       match=r"^unsupported ONNX ops: FusedMatMul \(custom domain "
                             r"com\.microsoft, opset 1; node #0\)$"):
        import_onnx(model)


def test_invalid_model_is_a_model_error(tmp_path) -> None:
    bad = make_model([helper.make_node("Relu", ["x"], ["y"])], [tensor("x", ODD)], ["nope"])
    with pytest.raises(kiln.ModelError, match="invalid ONNX model") as e:
        import_onnx(bad)
    assert "\n" not in str(e.value)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00not a model")
    with pytest.raises(kiln.ModelError, match="cannot read ONNX model"):
        import_onnx(garbage)


def test_unsupported_input_dtype_names_the_tensor() -> None:
    model = make_model([helper.make_node("Identity", ["s"], ["y"])],
                       [tensor("s", (2,), TensorProto.COMPLEX64)],
                       [tensor("y", None, TensorProto.COMPLEX64)])
    with pytest.raises(kiln.ModelError, match="input 's' has ONNX dtype COMPLEX64"):
        import_onnx(model)


def test_gemm_with_bad_bias_shape_names_node_and_opset() -> None:
    node = helper.make_node("Gemm", ["a", "w", "c"], ["y"], name="proj", transB=1)
    model = make_model([node], [tensor("a", (3, 7)), tensor("c", (4, 5))], ["y"],
                       [init("w", randn(5, 7))])
    with pytest.raises(kiln.ModelError, match=r"ONNX node proj \(Gemm, opset 17\): C f32\[4, 5\]"):
        import_onnx(model)


def test_runtime_reshape_shape_is_rejected() -> None:
    node = helper.make_node("Reshape", ["x", "s"], ["y"], name="r")
    model = make_model([node], [tensor("x", ODD), tensor("s", (2,), I64)], ["y"])
    with pytest.raises(kiln.ConstantInputError,
                       match=r"node r \(Reshape, opset 17\).*graph input 's'.*constants="):
        import_onnx(model)


# -- end to end: compiled with kiln.compile, compared with onnxruntime -----------------------------
def assert_compiled_matches_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray],
                                **compile_args: object) -> None:
    lib = kiln.compile(model, **compile_args)
    got = lib(**feeds)
    want = run_ort(model, feeds)
    for out, ref in zip(got, want, strict=True):
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


def mlp_model(batch: int | str = 3, reshapes: bool = False) -> onnx.ModelProto:
    """MatMul+Add+Gelu, MatMul+Add+Relu, Gemm, Softmax; ``reshapes`` routes x through
    ``Reshape [0, 4, -1]`` and ``Reshape [0, -1]`` first (a -1 next to a symbolic batch)."""
    first = "x"
    pre, pre_inits = [], []
    if reshapes:
        first = "x2"
        pre = [helper.make_node("Reshape", ["x", "to3"], ["x3"]),
               helper.make_node("Reshape", ["x3", "to2"], ["x2"])]
        pre_inits = [init("to3", np.array([0, 4, -1], np.int64)),
                     init("to2", np.array([0, -1], np.int64))]
    nodes = pre + [
        helper.make_node("MatMul", [first, "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Gelu", ["hb"], ["g"]),
        helper.make_node("MatMul", ["g", "w2"], ["o"]),
        helper.make_node("Add", ["o", "b2"], ["ob"]),
        helper.make_node("Relu", ["ob"], ["r"]),
        helper.make_node("Gemm", ["r", "w3", "b3"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"]),
    ]
    inits = [init("w1", randn(16, 37, seed=1) * 0.3), init("b1", randn(37, seed=2)),
             init("w2", randn(37, 24, seed=3) * 0.3), init("b2", randn(24, seed=4)),
             init("w3", randn(10, 24, seed=5) * 0.3), init("b3", randn(10, seed=6)), *pre_inits]
    return make_model(nodes, [tensor("x", (batch, 16))], ["probs"], inits, opset=20)


@pytest.mark.slow
def test_mlp_compiled() -> None:
    assert_compiled_matches_ort(mlp_model(), {"x": randn(3, 16)})


@pytest.mark.slow
def test_symbolic_batch_compiled() -> None:
    model = mlp_model("batch", reshapes=True)
    g = import_onnx(model)
    assert g.inputs[0].shape == ("batch", 16)
    assert [n.outputs[0].shape for n in g.nodes[:2]] == [("batch", 4, 4), ("batch", 16)]
    assert g.outputs[0].shape == ("batch", 10)
    assert_compiled_matches_ort(model, {"x": randn(2, 16)}, input_shapes={"x": (2, 16)})


def attention_model(batch: int = 2, seq: int = 7, hidden: int = 16,
                    heads: int = 2) -> onnx.ModelProto:
    """A post-LN BERT encoder block's attention half, as an exporter would write it."""
    hd = hidden // heads
    split_heads = np.array([0, 0, heads, hd], np.int64)
    nodes = [
        helper.make_node("MatMul", ["x", "w_qkv"], ["qkv0"]),
        helper.make_node("Add", ["qkv0", "b_qkv"], ["qkv"]),
        helper.make_node("Split", ["qkv", "split"], ["q0", "k0", "v0"], axis=-1),
        *[helper.make_node("Reshape", [f"{t}0", "heads_shape"], [f"{t}1"]) for t in "qkv"],
        helper.make_node("Transpose", ["q1"], ["q"], perm=[0, 2, 1, 3]),
        helper.make_node("Transpose", ["k1"], ["kt"], perm=[0, 2, 3, 1]),
        helper.make_node("Transpose", ["v1"], ["v"], perm=[0, 2, 1, 3]),
        helper.make_node("MatMul", ["q", "kt"], ["scores0"]),
        helper.make_node("Div", ["scores0", "scale"], ["scores1"]),
        # mask: [batch, seq] of 0/1 -> additive [batch, 1, 1, seq]
        helper.make_node("Unsqueeze", ["mask", "mask_axes"], ["m4"]),
        helper.make_node("Cast", ["m4"], ["mf"], to=F32),
        helper.make_node("Sub", ["one", "mf"], ["inv"]),
        helper.make_node("Mul", ["inv", "neg_big"], ["bias"]),
        helper.make_node("Add", ["scores1", "bias"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["probs"], axis=-1),
        helper.make_node("MatMul", ["probs", "v"], ["ctx0"]),
        helper.make_node("Transpose", ["ctx0"], ["ctx1"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["ctx1", "merge_shape"], ["ctx"]),
        helper.make_node("MatMul", ["ctx", "w_o"], ["proj0"]),
        helper.make_node("Add", ["proj0", "b_o"], ["proj"]),
        helper.make_node("Add", ["proj", "x"], ["res"]),
        helper.make_node("LayerNormalization", ["res", "gamma", "beta"], ["y"], epsilon=1e-12),
    ]
    inits = [
        init("w_qkv", randn(hidden, 3 * hidden, seed=1) * 0.3),
        init("b_qkv", randn(3 * hidden, seed=2) * 0.1),
        init("split", np.array([hidden] * 3, np.int64)),
        init("heads_shape", split_heads),
        init("scale", np.array(np.sqrt(hd), np.float32)),
        init("mask_axes", np.array([1, 2], np.int64)),
        init("one", np.array(1.0, np.float32)),
        init("neg_big", np.array(-10000.0, np.float32)),
        init("merge_shape", np.array([0, 0, -1], np.int64)),
        init("w_o", randn(hidden, hidden, seed=3) * 0.3),
        init("b_o", randn(hidden, seed=4) * 0.1),
        init("gamma", 1 + 0.1 * randn(hidden, seed=5)),
        init("beta", 0.1 * randn(hidden, seed=6)),
    ]
    return make_model(nodes, [tensor("x", (batch, seq, hidden)),
                              tensor("mask", (batch, seq), I64)], ["y"], inits)


@pytest.mark.slow
def test_attention_block_compiled() -> None:
    mask = np.ones((2, 7), np.int64)
    mask[1, 5:] = 0
    feeds = {"x": randn(2, 7, 16), "mask": mask}
    model = attention_model()
    check(model, feeds, rtol=1e-5, atol=1e-5)
    assert_compiled_matches_ort(model, feeds)


def pooler_model() -> onnx.ModelProto:
    """Embeddings (runtime Gather), a folded position Slice, LayerNorm, then a [CLS] Slice and a
    mean over the sequence, concatenated into a classifier."""
    nodes = [
        helper.make_node("Gather", ["word_emb", "ids"], ["words"]),
        helper.make_node("Slice", ["pos_table", "zero", "seq"], ["pos"]),
        helper.make_node("Add", ["words", "pos"], ["emb"]),
        helper.make_node("LayerNormalization", ["emb", "gamma", "beta"], ["h"]),
        helper.make_node("Slice", ["h", "zero", "one", "one"], ["cls3"]),
        helper.make_node("Squeeze", ["cls3", "one"], ["cls"]),
        helper.make_node("ReduceMean", ["h", "one"], ["mean"], keepdims=0),
        helper.make_node("Concat", ["cls", "mean"], ["pooled"], axis=1),
        helper.make_node("Gemm", ["pooled", "w", "b"], ["logits0"], transB=1),
        helper.make_node("Tanh", ["logits0"], ["logits"]),
    ]
    inits = [init("word_emb", randn(50, 16, seed=1)), init("pos_table", randn(32, 16, seed=2)),
             init("zero", np.array([0], np.int64)), init("one", np.array([1], np.int64)),
             init("seq", np.array([7], np.int64)), init("gamma", 1 + 0.1 * randn(16, seed=3)),
             init("beta", 0.1 * randn(16, seed=4)), init("w", randn(5, 32, seed=5) * 0.3),
             init("b", randn(5, seed=6))]
    return make_model(nodes, [tensor("ids", (2, 7), I64)], ["logits"], inits, opset=18)


@pytest.mark.slow
def test_pooler_compiled() -> None:
    feeds = {"ids": np.random.default_rng(0).integers(0, 50, (2, 7))}
    model = pooler_model()
    check(model, feeds, rtol=1e-5, atol=1e-5)
    assert_compiled_matches_ort(model, feeds)


@pytest.mark.parametrize("attrs", [
    {"pads": [1, 1, 1, 1]},
    {"strides": [2, 2], "pads": [0, 1, 2, 1]},
    {"auto_pad": "SAME_UPPER", "strides": [2, 2]},
    {"auto_pad": "SAME_LOWER"},
    {"dilations": [2, 2], "pads": [2, 1, 0, 1]},
    {"auto_pad": "VALID", "group": 3},
])
def test_conv(attrs: dict) -> None:
    groups = attrs.get("group", 1)
    w = randn(6, 6 // groups, 3, 3, seed=1)
    model = make_model([helper.make_node("Conv", ["x", "w", "b"], ["y"], **attrs)],
                       [tensor("x", [1, 6, 11, 9])], ["y"], [init("w", w), init("b", randn(6))])
    g = check(model, {"x": randn(1, 6, 11, 9)}, rtol=1e-4, atol=1e-5)
    got = kiln.compile(g)(x=randn(1, 6, 11, 9))[0]
    np.testing.assert_allclose(got, run_ort(model, {"x": randn(1, 6, 11, 9)})[0],
                               rtol=1e-4, atol=1e-4)


def test_graph_inputs_kiln_needs_while_compiling_are_bound_with_constants() -> None:
    """A Reshape whose shape is a graph input: the error names the input; binding it with
    ``constants=`` compiles a library without that input."""
    model = make_model([helper.make_node("Reshape", ["x", "shape"], ["y"])],
                       [tensor("x", (3, 4)), tensor("shape", (2,), I64)], ["y"])
    with pytest.raises(kiln.ConstantInputError, match="'shape'") as info:
        kiln.compile(model)
    assert info.value.input_name == "shape"
    lib = kiln.compile(model, constants={"shape": np.array([4, 3], np.int64)})
    assert [s.name for s in lib.inputs] == ["x"]
    x = randn(3, 4)
    np.testing.assert_array_equal(lib(x)[0], x.reshape(4, 3))
    with pytest.raises(kiln.ModelError, match="dtype int32"):
        kiln.compile(model, constants={"shape": np.array([4, 3], np.int32)})


def test_an_output_behind_an_identity_keeps_the_models_name() -> None:
    """The library's outputs are named as the ONNX graph names them, also where the value
    reaches the output through an Identity (kiln removes it) or is itself an input."""
    model = make_model(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Identity", ["r"], ["y"]),
         helper.make_node("Identity", ["x"], ["echo"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("echo", TensorProto.FLOAT, [2, 3])])
    lib = kiln.compile(model)
    assert [o.name for o in lib.outputs] == ["y", "x"]      # an input keeps its own name
    x = np.array([[-1, 2, -3], [4, -5, 6]], np.float32)
    y, echo = lib(x=x)
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    np.testing.assert_array_equal(echo, x)
