"""ONNX If, Loop and Scan against onnxruntime: runtime and import-time conditions, subgraphs
reading the enclosing graph by name, loops and scans unrolled at import."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from test_onnx import init, make_model, randn, run_ort, tensor

import kiln
from kiln.errors import ModelError
from kiln.frontend.onnx import import_onnx
from kiln.testing import assert_outputs_close

SHAPE = (3, 5)


def branch(name: str, op: str, out: str, const: float) -> onnx.GraphProto:
    """A branch computing ``op(x, const)`` on the enclosing graph's ``x``."""
    c = helper.make_node("Constant", [], [f"{name}_c"],
                         value=helper.make_tensor(f"{name}_v", TensorProto.FLOAT, [], [const]))
    node = helper.make_node(op, ["x", f"{name}_c"], [out], name=f"{name}_{op.lower()}")
    return helper.make_graph([c, node], name, [], [tensor(out, SHAPE)])


def if_model(cond_const: bool | None = None, else_op: str = "Mul") -> onnx.ModelProto:
    nodes, inits, inputs = [], [], [tensor("x", SHAPE)]
    if cond_const is None:
        inputs.append(tensor("cond", [], TensorProto.BOOL))
    else:
        inits.append(init("cond", np.array(cond_const)))
    nodes.append(helper.make_node("If", ["cond"], ["y"], name="if0",
                                  then_branch=branch("then", "Add", "t_out", 1.5),
                                  else_branch=branch("else", else_op, "e_out", 2.0)))
    return make_model(nodes, inputs, [tensor("y", SHAPE)], inits)


@pytest.mark.parametrize("cond", [True, False])
def test_if_runtime_condition(cond: bool) -> None:
    """Both branches run; where picks (compiled, against onnxruntime)."""
    model = if_model()
    feeds = {"x": randn(*SHAPE), "cond": np.array(cond)}
    assert_outputs_close(kiln.compile(model)(**feeds), run_ort(model, feeds), 1e-6, 1e-6)


@pytest.mark.parametrize("cond", [True, False])
def test_if_constant_condition_takes_one_branch(cond: bool) -> None:
    model = if_model(cond_const=cond)
    g = import_onnx(model)
    ops = [n.op.name for n in g.nodes]
    assert ops == (["add"] if cond else ["mul"])
    feeds = {"x": randn(*SHAPE)}
    assert_outputs_close(kiln.compile(model)(**feeds), run_ort(model, feeds), 1e-6, 1e-6)


def test_if_branches_of_different_types_is_a_model_error() -> None:
    then_b = branch("then", "Add", "t_out", 1.0)
    else_b = helper.make_graph(
        [helper.make_node("ReduceSum", ["x"], ["e_out"], keepdims=0)], "else", [],
        [tensor("e_out", [])])
    node = helper.make_node("If", ["cond"], ["y"], then_branch=then_b, else_branch=else_b)
    model = make_model([node], [tensor("x", SHAPE), tensor("cond", [], TensorProto.BOOL)],
                       [tensor("y", SHAPE)])
    with pytest.raises(ModelError, match="must have equal types; output 0 is f32"):
        import_onnx(model)


def test_unsupported_op_inside_a_branch_is_named() -> None:
    model = if_model(else_op="Mul")
    mul = model.graph.node[0].attribute[0].g.node[1]     # else_branch's Mul
    mul.op_type, mul.domain = "Frobnicate", "custom.ops"
    model.opset_import.append(helper.make_opsetid("custom.ops", 1))
    with pytest.raises(ModelError, match="Frobnicate .*custom.ops.*if0/else_branch/else_mul"):
        import_onnx(model)


def loop_model(trip: int | None) -> onnx.ModelProto:
    """acc += x * i for i < trip; scan output: acc after each iteration."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Cast", ["i"], ["i_f"], to=TensorProto.FLOAT),
         helper.make_node("Mul", ["x", "i_f"], ["xi"]),
         helper.make_node("Add", ["acc_in", "xi"], ["acc_out"]),
         helper.make_node("Identity", ["acc_out"], ["scan"])],
        "body", [tensor("i", [], TensorProto.INT64), tensor("cond_in", [], TensorProto.BOOL),
                 tensor("acc_in", SHAPE)],
        [tensor("cond_out", [], TensorProto.BOOL), tensor("acc_out", SHAPE),
         tensor("scan", SHAPE)])
    inputs, inits = [tensor("x", SHAPE), tensor("acc0", SHAPE)], []
    if trip is None:
        inputs.append(tensor("trip", [], TensorProto.INT64))
    else:
        inits.append(init("trip", np.array(trip, dtype=np.int64)))
    inits.append(init("cond", np.array(True)))
    node = helper.make_node("Loop", ["trip", "cond", "acc0"], ["acc", "scans"], body=body)
    return make_model([node], inputs, [tensor("acc", SHAPE), tensor("scans", [trip or 1, *SHAPE])],
                      inits)


def test_loop_constant_trip_count_unrolls() -> None:
    model = loop_model(4)
    feeds = {"x": randn(*SHAPE, seed=1), "acc0": randn(*SHAPE, seed=2)}
    assert_outputs_close(kiln.compile(model)(**feeds), run_ort(model, feeds), 1e-5, 1e-6)


def test_loop_without_trip_count_stops_on_a_folded_condition() -> None:
    """A while loop: the body's condition (i < 2) folds each iteration, so it unrolls to 3."""
    body = helper.make_graph(
        [helper.make_node("Constant", [], ["two"], value=helper.make_tensor(
            "two_v", TensorProto.INT64, [], [2])),
         helper.make_node("Less", ["i", "two"], ["cond_out"]),
         helper.make_node("Mul", ["acc_in", "x"], ["acc_out"])],
        "body", [tensor("i", [], TensorProto.INT64), tensor("cond_in", [], TensorProto.BOOL),
                 tensor("acc_in", SHAPE)],
        [tensor("cond_out", [], TensorProto.BOOL), tensor("acc_out", SHAPE)])
    node = helper.make_node("Loop", ["", "cond", "x"], ["acc"], body=body)
    model = make_model([node], [tensor("x", SHAPE)], [tensor("acc", SHAPE)],
                       [init("cond", np.array(True))])
    feeds = {"x": randn(*SHAPE, seed=3)}
    assert_outputs_close(kiln.compile(model)(**feeds), run_ort(model, feeds), 1e-5, 1e-6)


def test_loop_runtime_trip_count_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="trip count is computed at run time"):
        import_onnx(loop_model(None))


def test_scan_reverse_on_axis_1() -> None:
    """A running sum over axis 1, scanned backwards, stacked along output axis 1."""
    body = helper.make_graph(
        [helper.make_node("Add", ["s_in", "x_t"], ["s_out"]),
         helper.make_node("Mul", ["s_out", "x_t"], ["y_t"])],
        "body", [tensor("s_in", [3]), tensor("x_t", [3])],
        [tensor("s_out", [3]), tensor("y_t", [3])])
    node = helper.make_node("Scan", ["s0", "x"], ["s", "y"], body=body, num_scan_inputs=1,
                            scan_input_axes=[1], scan_input_directions=[1],
                            scan_output_axes=[1])
    model = make_model([node], [tensor("s0", [3]), tensor("x", [3, 4])],
                       [tensor("s", [3]), tensor("y", [3, 4])])
    feeds = {"s0": randn(3, seed=1), "x": randn(3, 4, seed=2)}
    assert_outputs_close(kiln.compile(model)(**feeds), run_ort(model, feeds), 1e-5, 1e-6)
