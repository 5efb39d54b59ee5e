"""Symbolic dims through the whole pipeline: one library, many sequence lengths.

The graphs here keep ``seq`` symbolic from import to kernels; every length is checked against
the reference interpreter (builder graphs) or onnxruntime (ONNX models with shape subgraphs).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import kiln
from kiln import ops
from kiln.errors import InputError
from kiln.frontend.onnx import import_onnx
from kiln.ir.graph import Graph
from kiln.testing import relative_error

ort = pytest.importorskip("onnxruntime")

LENGTHS = (1, 7, 16, 77)


def _attention_graph() -> Graph:
    """Embedding, layer norm, two-head attention and GELU over ``seq`` tokens."""
    rng = np.random.default_rng(0)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)

    g = Graph("attn")
    ids = g.input("ids", (1, "seq"), "int64")
    x = ops.gather(g.constant(w(50, 32), "emb"), ids)
    x = ops.layer_norm(x, g.constant(np.ones(32, np.float32)),
                       g.constant(np.zeros(32, np.float32)))

    def heads(name: str, perm: tuple[int, ...]) -> kiln.Value:
        y = ops.reshape(ops.dense(x, g.constant(w(32, 32), name)), (1, "seq", 2, 16))
        return ops.transpose(y, perm)

    q, kt, v = heads("q", (0, 2, 1, 3)), heads("k", (0, 2, 3, 1)), heads("v", (0, 2, 1, 3))
    s = ops.softmax(ops.mul(ops.matmul(q, kt), 0.25))
    o = ops.reshape(ops.transpose(ops.matmul(s, v), (0, 2, 1, 3)), (1, "seq", 32))
    g.output(ops.gelu(o))
    return g


def test_one_library_runs_every_length() -> None:
    g = _attention_graph()
    lib = kiln.compile(g, "x86")
    assert lib.inputs[0].shape == (1, "seq")
    rng = np.random.default_rng(1)
    for n in LENGTHS:
        ids = rng.integers(0, 50, (1, n)).astype(np.int64)
        got = lib(ids)[0]
        want = kiln.run_reference(g, {"ids": ids})[0]
        assert got.shape == (1, n, 32)
        assert relative_error(got, want) < 1e-5, n


def test_symbolic_gemm_rows_match_static_compile() -> None:
    """A symbolic M gives the same numbers as a library compiled for that M."""
    g = Graph("dense")
    x = g.input("x", ("rows", 45), "float32")
    wt = np.random.default_rng(2).standard_normal((45, 37)).astype(np.float32)
    g.output(ops.relu(ops.matmul(x, g.constant(wt, "w"))))
    dynamic = kiln.compile(g, "x86")
    for m in (1, 5, 64, 67):
        xv = np.random.default_rng(m).standard_normal((m, 45)).astype(np.float32)
        static = kiln.compile(g, "x86", input_shapes={"x": (m, 45)})
        np.testing.assert_array_equal(dynamic(xv)[0], static(xv)[0])


def test_inconsistent_symbolic_dims_name_the_input() -> None:
    g = Graph("pair")
    a, b = g.input("a", ("n",), "float32"), g.input("b", ("n",), "float32")
    g.output(ops.add(a, b))
    lib = kiln.compile(g, "x86")
    with pytest.raises(InputError, match="'b'.*'n' is 3 here but 4"):
        lib(np.zeros(4, np.float32), np.zeros(3, np.float32))


# -- ONNX: shape subgraphs stay symbolic -----------------------------------------------------
def _shape_subgraph_model() -> onnx.ModelProto:
    """What exporters write around attention: reshape targets built from Shape of the input,
    a position-id prefix sliced to the sequence length, a mask expanded to the input shape."""
    i64 = lambda name, vals: numpy_helper.from_array(np.array(vals, np.int64), name)  # noqa: E731
    pos = numpy_helper.from_array(np.arange(128, dtype=np.int64).reshape(1, 128), "pos_ids")
    emb = numpy_helper.from_array(
        np.random.default_rng(3).standard_normal((128, 8)).astype(np.float32), "pos_emb")
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "one"], ["seq"], axis=0),
        helper.make_node("Unsqueeze", ["seq", "zero_axis"], ["seq1"]),
        helper.make_node("Slice", ["pos_ids", "zero1", "seq1", "one_axis"], ["pos"]),
        helper.make_node("Gather", ["pos_emb", "pos"], ["pe"]),            # [1, seq, 8]
        helper.make_node("Add", ["x", "pe"], ["xp"]),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
        helper.make_node("Unsqueeze", ["batch", "zero_axis"], ["batch1"]),
        helper.make_node("Concat", ["batch1", "seq1", "two", "four"], ["target"], axis=0),
        helper.make_node("Reshape", ["xp", "target"], ["heads"]),          # [1, seq, 2, 4]
        helper.make_node("Transpose", ["heads"], ["ht"], perm=[0, 2, 1, 3]),
        helper.make_node("Shape", ["ht"], ["ht_shape"]),
        helper.make_node("ConstantOfShape", ["ht_shape"], ["ones"],
                         value=numpy_helper.from_array(np.array([1.0], np.float32))),
        helper.make_node("Mul", ["ht", "ones"], ["y"]),
        helper.make_node("Shape", ["mask"], ["mask_shape"]),
        helper.make_node("Concat", ["mask_shape", "eight"], ["mask_target"], axis=0),
        helper.make_node("Unsqueeze", ["mask", "minus_one"], ["mask3"]),
        helper.make_node("Cast", ["mask3"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Expand", ["maskf", "mask_target"], ["mask_e"]),
        helper.make_node("Mul", ["x", "mask_e"], ["z"]),
    ]
    inits = [pos, emb, i64("one", 1), i64("zero", 0), i64("zero_axis", [0]), i64("zero1", [0]),
             i64("one_axis", [1]), i64("two", [2]), i64("four", [4]), i64("eight", [8]),
             i64("minus_one", [-1])]
    graph = helper.make_graph(
        nodes, "shapes",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "seq", 8]),
         helper.make_tensor_value_info("mask", TensorProto.INT64, [1, "seq"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def test_shape_subgraphs_stay_symbolic() -> None:
    model = _shape_subgraph_model()
    g = import_onnx(model)
    assert [v.shape for v in g.outputs] == [(1, 2, "seq", 4), (1, "seq", 8)]
    lib = kiln.compile(model, "x86")
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(4)
    for n in LENGTHS:
        feeds = {"x": rng.standard_normal((1, n, 8)).astype(np.float32),
                 "mask": rng.integers(0, 2, (1, n)).astype(np.int64)}
        for got, want in zip(lib(**feeds), sess.run(None, feeds), strict=True):
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_input_shapes_can_name_a_dim() -> None:
    """``input_shapes`` fixes some dims and renames others (a str is a symbolic dim)."""
    model = _shape_subgraph_model()
    g = import_onnx(model, input_shapes={"x": (1, "n", 8), "mask": (1, "n")})
    assert g.outputs[1].shape == (1, "n", 8)
    g = import_onnx(model, input_shapes={"x": (1, 5, 8), "mask": (1, 5)})
    assert g.outputs[0].shape == (1, 2, 5, 4)
