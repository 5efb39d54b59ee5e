"""The graph IR: building, shape inference, the printer, the verifier, the interpreter."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln import ops
from kiln.errors import InternalError, ModelError
from kiln.ir import DType, TensorType, verify
from kiln.ir.specialize import specialize
from kiln.ir.types import broadcast_shapes


def small_graph() -> kiln.Graph:
    g = kiln.Graph("mlp")
    x = g.input("x", ("batch", 4), "float32")
    w = np.arange(12, dtype=np.float32).reshape(3, 4) / 10
    y = ops.relu(ops.add(ops.dense(x, w), np.ones(3, np.float32)))
    g.output(ops.softmax(y))
    return g


def test_shapes_and_symbolic_dims() -> None:
    g = small_graph()
    assert g.outputs[0].shape == ("batch", 3)
    assert g.outputs[0].dtype is DType.float32
    assert broadcast_shapes(("b", 1, 5), (4, 1)) == ("b", 4, 5)
    with pytest.raises(ModelError, match="do not broadcast"):
        broadcast_shapes((3,), (4,))
    with pytest.raises(ModelError, match="invalid dimension"):
        TensorType.of((-1, 2), "float32")


def test_printer_is_stable_and_readable() -> None:
    text = str(small_graph())
    assert text == str(small_graph())
    assert text.splitlines()[0] == "graph mlp(%x: f32[batch, 4]) {"
    assert "%dense = dense(%x, %const) : f32[batch, 3]" in text
    assert "%softmax = softmax(%relu) {axis=-1} : f32[batch, 3]" in text
    assert text.rstrip().endswith("return %softmax\n}")


def test_inference_errors_name_the_node() -> None:
    g = kiln.Graph()
    x = g.input("x", (2, 3), "float32")
    with pytest.raises(ModelError, match=r"node matmul \(matmul\): matmul: contraction dims"):
        ops.matmul(x, np.zeros((4, 5), np.float32))
    with pytest.raises(ModelError, match="one dtype"):
        ops.add(x, g.input("i", (2, 3), "int32"))
    with pytest.raises(ModelError, match="unknown attribute"):
        g.add("softmax", [x], dim=1)
    with pytest.raises(ModelError, match="takes 2 inputs"):
        g.add("add", [x])
    with pytest.raises(ModelError, match="cannot reshape"):
        ops.reshape(x, (4, 2))


def test_verifier_names_the_broken_node() -> None:
    g = small_graph()
    verify(g)
    node = g.find_node("relu")
    node.outputs[0].type = TensorType((7,), DType.float32)        # corrupt a recorded type
    with pytest.raises(InternalError, match=r"node relu \(relu\): outputs are typed"):
        verify(g)
    g2 = small_graph()
    g2.nodes.reverse()                                              # break topological order
    with pytest.raises(InternalError, match="used before it is defined"):
        verify(g2)
    with pytest.raises(ModelError, match="no outputs"):
        verify(kiln.Graph("empty"))


def test_reference_interpreter_and_input_checks() -> None:
    g = small_graph()
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    (y,) = kiln.run_reference(g, x=x)
    w = np.arange(12, dtype=np.float32).reshape(3, 4) / 10
    h = np.maximum(x @ w.T + 1, 0)
    want = np.exp(h - h.max(1, keepdims=True))
    np.testing.assert_allclose(y, want / want.sum(1, keepdims=True), rtol=1e-6)
    with pytest.raises(kiln.InputError, match="missing input.*'x'"):
        kiln.run_reference(g)
    with pytest.raises(kiln.InputError, match="'x': expected dtype float32"):
        kiln.run_reference(g, x=x.astype(np.float64))
    with pytest.raises(kiln.InputError, match=r"'x': expected shape \['batch', 4\]"):
        kiln.run_reference(g, x=x[:, :3])


def test_specialize_binds_symbolic_dims() -> None:
    g = small_graph()
    s = specialize(g, {"x": (7, 4)})
    assert s.outputs[0].shape == (7, 3) and g.outputs[0].shape == ("batch", 3)
    with pytest.raises(ModelError, match="unknown input"):
        specialize(g, {"y": (1, 4)})
    with pytest.raises(ModelError, match="fixed shape"):
        specialize(g, {"x": (7, 5)})


def test_input_shapes_fix_symbolic_dims_or_leave_them() -> None:
    assert kiln.compile(small_graph()).inputs[0].shape == small_graph().inputs[0].shape
    lib = kiln.compile(small_graph(), input_shapes={"x": (2, 4)})
    assert lib.inputs[0].shape == (2, 4)


def test_copy_is_independent() -> None:
    g = small_graph()
    c = g.copy()
    c.nodes.pop()
    assert len(g.nodes) == 4 and len(c.nodes) == 3
    assert str(g) == str(small_graph())


def test_builder_rejects_mixed_graphs_and_bad_operands() -> None:
    g1, g2 = kiln.Graph("a"), kiln.Graph("b")
    x1, x2 = g1.input("x", (2,), "float32"), g2.input("x", (2,), "float32")
    with pytest.raises(ModelError, match="belongs to graph"):
        ops.add(x1, x2)
    with pytest.raises(ModelError, match="at least one operand"):
        ops.add(np.ones(2), np.ones(2))
    with pytest.raises(ModelError, match="already used"):
        g1.input("x", (3,), "float32")
