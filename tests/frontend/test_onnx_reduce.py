"""ONNX reductions, arg-reductions and the softmax family against onnxruntime, compiled for
x86: every ReduceX (axes as attribute and as input, keepdims, noop_with_empty_axes, empty sets,
integer and bool inputs), ArgMax/ArgMin, Softmax/LogSoftmax/Hardmax before and after opset 13."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from test_onnx import F32, I64, init, make_model, randn, run_ort, tensor

import kiln
from kiln.errors import ConstantInputError
from kiln.frontend.onnx import import_onnx
from kiln.testing import assert_outputs_close

REDUCE_OPS = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
              "ReduceL2", "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp"]


def check_compiled(model, feeds: dict[str, np.ndarray], rtol: float = 1e-5,
                   atol: float = 1e-5) -> kiln.Graph:
    """Compile ``model`` with kiln and compare its outputs with onnxruntime's."""
    g = import_onnx(model)
    got = kiln.compile(g)(**feeds)
    assert_outputs_close(got, run_ort(model, feeds), rtol, atol)
    return g


def reduce_model(op: str, shape: tuple[int, ...], axes: list[int] | None, opset: int,
                 elem: int = F32, **attrs: object):
    """One ReduceX node with ``axes`` where its opset wants them (attribute or input)."""
    input_from = 13 if op == "ReduceSum" else 18
    inits, names = [], ["x"]
    if axes is not None and opset >= input_from:
        inits.append(init("axes", np.array(axes, np.int64)))
        names.append("axes")
    elif axes is not None:
        attrs["axes"] = axes
    node = helper.make_node(op, names, ["y"], **attrs)
    return make_model([node], [tensor("x", shape, elem)], [tensor("y", None, elem)], inits,
                      opset)


@pytest.mark.parametrize("op, opset", [(op, 13 if i % 2 else 18) for i, op in
                                       enumerate(REDUCE_OPS)] + [("ReduceSum", 11)])
def test_reduce_ops(op: str, opset: int) -> None:
    x = np.abs(randn(3, 5, 7)) + 0.5      # positive, for ReduceLogSum
    model = reduce_model(op, (3, 5, 7), [0, -1], opset, keepdims=1)
    check_compiled(model, {"x": x}, rtol=1e-4)


@pytest.mark.parametrize("op, axes, keepdims", [("ReduceSum", None, 0), ("ReduceMax", [2], 0),
                                                ("ReduceLogSumExp", [1], 1),
                                                ("ReduceLogSumExp", None, 1)])
def test_reduce_axes_and_keepdims(op: str, axes, keepdims: int) -> None:
    model = reduce_model(op, (4, 6, 9), axes, 18, keepdims=keepdims)
    check_compiled(model, {"x": randn(4, 6, 9)}, rtol=1e-4)


def test_empty_axes_noop_and_reduce_all() -> None:
    x = randn(3, 5)
    for noop in (0, 1):
        node = helper.make_node("ReduceSum", ["x", "axes"], ["y"], noop_with_empty_axes=noop)
        model = make_model([node], [tensor("x", (3, 5))], ["y"],
                           [init("axes", np.zeros(0, np.int64))], 13)
        check_compiled(model, {"x": x})


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceProd", "ReduceMax", "ReduceMin",
                                "ReduceLogSumExp"])
def test_reduce_empty_set_gives_the_identity(op: str) -> None:
    model = reduce_model(op, (2, 0, 4), [1], 18, keepdims=1)
    g = import_onnx(model)
    (want,) = run_ort(model, {"x": np.zeros((2, 0, 4), np.float32)})
    (got,) = kiln.run_reference(g, {"x": np.zeros((2, 0, 4), np.float32)})
    assert_outputs_close([got], [want], 0, 0)


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMin", "ReduceProd"])
def test_reduce_int32(op: str) -> None:
    x = np.random.default_rng(0).integers(-4, 5, (3, 7, 5)).astype(np.int32)
    model = reduce_model(op, (3, 7, 5), [1], 18, elem=TensorProto.INT32, keepdims=0)
    check_compiled(model, {"x": x}, 0, 0)


def test_reduce_max_bool() -> None:
    x = np.random.default_rng(0).random((3, 5)) < 0.3
    model = reduce_model("ReduceMax", (3, 5), [1], 20, elem=TensorProto.BOOL, keepdims=0)
    check_compiled(model, {"x": x}, 0, 0)


def test_reduce_log_sum_exp_is_stable() -> None:
    x = (randn(3, 11) * 50 + 1000).astype(np.float32)
    model = reduce_model("ReduceLogSumExp", (3, 11), [1], 18, keepdims=0)
    (got,) = kiln.compile(import_onnx(model))(x=x)
    want = np.log(np.exp(x.astype(np.float64) - 1000).sum(axis=1)) + 1000
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_runtime_axes_name_the_input_and_bind_as_constants() -> None:
    node = helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=0)
    model = make_model([node], [tensor("x", (3, 5)), tensor("axes", (1,), I64)],
                       [tensor("y", ("a",))], opset=13)
    with pytest.raises(ConstantInputError, match="constants=") as e:
        import_onnx(model)
    assert e.value.input_name == "axes"
    axes = np.array([1], np.int64)
    x = randn(3, 5)
    got = kiln.compile(model, constants={"axes": axes})(x=x)
    assert_outputs_close(got, run_ort(model, {"x": x, "axes": axes}), 1e-6, 1e-6)


@pytest.mark.parametrize("op, axis, keepdims, last", [("ArgMax", 1, 1, 0), ("ArgMin", -1, 0, 1),
                                                      ("ArgMax", 0, 1, 1)])
def test_arg_reductions_with_ties(op: str, axis: int, keepdims: int, last: int) -> None:
    x = np.random.default_rng(0).integers(0, 3, (5, 7, 9)).astype(np.float32)   # many ties
    node = helper.make_node(op, ["x"], ["y"], axis=axis, keepdims=keepdims,
                            select_last_index=last)
    model = make_model([node], [tensor("x", (5, 7, 9))], [tensor("y", None, I64)], opset=13)
    check_compiled(model, {"x": x}, 0, 0)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
@pytest.mark.parametrize("opset, axis", [(11, 1), (11, -1), (13, 1), (13, -1)])
def test_softmax_family(op: str, opset: int, axis: int) -> None:
    """Before opset 13 these flatten to 2-D at ``axis``; from 13 they act along it."""
    node = helper.make_node(op, ["x"], ["y"], axis=axis)
    model = make_model([node], [tensor("x", (3, 5, 7))], ["y"], opset=opset)
    check_compiled(model, {"x": randn(3, 5, 7)}, rtol=1e-5, atol=1e-5)


def test_log_softmax_is_exact_in_the_tail() -> None:
    """x - max - log(sum): no log of an underflowed softmax, so -200 stays -200 (not -inf)."""
    x = np.array([[0.0, -200.0, 1.0, 2.0]], np.float32)
    node = helper.make_node("LogSoftmax", ["x"], ["y"], axis=-1)
    model = make_model([node], [tensor("x", (1, 4))], ["y"], opset=13)
    (got,) = kiln.compile(import_onnx(model))(x=x)
    assert np.isfinite(got).all()
    assert_outputs_close([got], run_ort(model, {"x": x}), 1e-5, 1e-5)
