"""A corpus of hostile ONNX files: each case writes one broken model into a directory of its
own and names the substring(s) that kiln's one-line error must hold.

Built at test time, deterministically (fixed seeds, no clocks), mostly from ``onnx.helper``;
the byte-level cases (truncation, wrong wire types, invalid UTF-8) start from the bytes of a
small valid model. Every case is broken in one way only, so that its expected message is
specific: ``kiln compile`` must refuse it with exit status 2 and one line on stderr, and
``kiln.compile`` must raise a ``kiln.KilnError``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, helper, numpy_helper

OPSET = 17
FLOAT = TensorProto.FLOAT


@dataclass(frozen=True)
class Case:
    """One hostile model: ``build(directory)`` writes it and returns its path; ``expect`` are
    substrings of the error line (case-sensitive); ``env`` is extra environment for kiln."""

    name: str
    category: str
    build: Callable[[Path], Path]
    expect: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()


# -- building blocks ----------------------------------------------------------------------------
def vi(name: str, shape: Sequence[int | str] | None, elem: int = FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def model(nodes: Sequence[onnx.NodeProto], inputs: Sequence[onnx.ValueInfoProto],
          outputs: Sequence[onnx.ValueInfoProto],
          initializers: Sequence[onnx.TensorProto] = (),
          opsets: Sequence[tuple[str, int]] | None = (("", OPSET),),
          value_info: Sequence[onnx.ValueInfoProto] = (), name: str = "hostile",
          ir_version: int = 8, sparse: Sequence[onnx.SparseTensorProto] = ()
          ) -> onnx.ModelProto:
    """A ModelProto built without onnx's checks (those are what the cases break)."""
    g = helper.make_graph(list(nodes), name, list(inputs), list(outputs),
                          initializer=list(initializers), value_info=list(value_info),
                          sparse_initializer=list(sparse))
    m = onnx.ModelProto(ir_version=ir_version, producer_name="kiln-hostile", graph=g)
    for domain, version in opsets or ():
        m.opset_import.add(domain=domain, version=version)
    return m


def relu_model() -> onnx.ModelProto:
    """A valid model: ``Y = Relu(X)``, X float32[2, 3]."""
    return model([helper.make_node("Relu", ["X"], ["Y"], name="relu")],
                 [vi("X", [2, 3])], [vi("Y", [2, 3])])


def matmul_model() -> onnx.ModelProto:
    """A valid model with weights (some hundreds of bytes): ``Y = Relu(X @ W + B)``."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "B")
    nodes = [helper.make_node("MatMul", ["X", "W"], ["h"], name="mm"),
             helper.make_node("Add", ["h", "B"], ["hb"], name="add"),
             helper.make_node("Relu", ["hb"], ["Y"], name="relu")]
    return model(nodes, [vi("X", [4, 8])], [vi("Y", [4, 16])], [w, b])


def writer(make: Callable[[], onnx.ModelProto | bytes],
           file: str = "model.onnx") -> Callable[[Path], Path]:
    """A ``build`` that writes what ``make`` returns (a model, or raw bytes) as ``file``."""
    def build(d: Path) -> Path:
        data = make()
        path = d / file
        path.write_bytes(data if isinstance(data, bytes) else data.SerializeToString())
        return path
    return build


def varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, wire: int, payload: bytes | int) -> bytes:
    """One protobuf field: a varint (wire 0), length-delimited bytes (2) or fixed32 (5)."""
    key = varint(number << 3 | wire)
    if wire == 0:
        assert isinstance(payload, int)
        return key + varint(payload)
    assert isinstance(payload, bytes)
    return key + (varint(len(payload)) + payload if wire == 2 else payload)


def cut(fraction: float) -> Callable[[], bytes]:
    """The valid weighted model's bytes truncated to ``fraction`` of their length."""
    def make() -> bytes:
        data = matmul_model().SerializeToString()
        return data[:max(1, int(len(data) * fraction))]
    return make


def random_bytes() -> bytes:
    return np.random.default_rng(1234).integers(0, 256, 4096, dtype=np.uint8).tobytes()


def mutate(edit: Callable[[onnx.ModelProto], object],
           base: Callable[[], onnx.ModelProto] = relu_model) -> Callable[[], onnx.ModelProto]:
    """``base()`` changed in place by ``edit``."""
    def make() -> onnx.ModelProto:
        m = base()
        edit(m)
        return m
    return make


def one_node(op: str, inputs: Sequence[str], in_shapes: Sequence[Sequence[int]],
             out_shape: Sequence[int] | None, initializers: Sequence[TensorProto] = (),
             domain: str = "", opsets: Sequence[tuple[str, int]] = (("", OPSET),),
             **attrs: object) -> Callable[[], onnx.ModelProto]:
    """A model of one node ``op`` reading graph inputs (those not among ``initializers``)."""
    def make() -> onnx.ModelProto:
        init_names = {t.name for t in initializers}
        node = helper.make_node(op, list(inputs), ["Y"], name=op.lower(), domain=domain,
                                **attrs)
        ins = [vi(n, s) for n, s in zip(inputs, in_shapes, strict=False)
               if n and n not in init_names]
        return model([node], ins, [vi("Y", out_shape)], initializers, opsets=opsets)
    return make


def raw_attr(name: str, type_: int, **values: object) -> AttributeProto:
    """An AttributeProto set field by field: its ``type`` need not match its value."""
    a = AttributeProto(name=name)
    for key, value in values.items():
        if isinstance(value, list):
            getattr(a, key).extend(value)
        else:
            setattr(a, key, value)
    # by bytes: protobuf refuses an enum value out of range (it parses as an unknown field)
    return AttributeProto.FromString(a.SerializeToString() + field(20, 0, type_))


def node_with(op: str, inputs: Sequence[str], attrs: Sequence[AttributeProto]) -> onnx.NodeProto:
    node = helper.make_node(op, list(inputs), ["Y"], name=op.lower())
    node.attribute.extend(attrs)
    return node


def external(location: str, *, write: bytes | None = None, length: int | None = None,
             link_to: Path | None = None) -> Callable[[Path], Path]:
    """A model whose weight W lives in external data at ``location`` (relative to the model's
    directory); ``write`` puts bytes there, ``link_to`` makes it a symbolic link."""
    def build(d: Path) -> Path:
        m = matmul_model()
        w = m.graph.initializer[0]
        w.ClearField("raw_data")
        w.ClearField("float_data")
        w.data_location = TensorProto.EXTERNAL
        w.external_data.add(key="location", value=location)
        if length is not None:
            w.external_data.add(key="length", value=str(length))
        if write is not None:
            (d / location).write_bytes(write)
        if link_to is not None:
            os.symlink(link_to, d / location)
        path = d / "model.onnx"
        path.write_bytes(m.SerializeToString())
        return path
    return build


def op_type_as_varint() -> onnx.ModelProto:
    """A node whose op_type (field 4, a string) comes as a varint: protobuf keeps it as an
    unknown field, so the node has no op type."""
    node = onnx.NodeProto(input=["X"], output=["Y"], name="typeless")
    node = onnx.NodeProto.FromString(node.SerializeToString() + field(4, 0, 7))
    return model([node], [vi("X", [2, 3])], [vi("Y", [2, 3])])


def nested_if(depth: int, broken: bool = True) -> Callable[[], bytes]:
    """If nodes nested ``depth`` deep (each then branch holds the next If); the innermost
    branch reads a tensor no one defines when ``broken``. Written as bytes: protobuf's Python
    objects refuse to build messages nested deeper than its parser's limit."""
    def graph(nodes: bytes, name: str, out: str) -> bytes:
        return nodes + field(2, 2, name.encode()) + field(12, 2, vi(out, [2]).SerializeToString())

    def node(op: str, inputs: Sequence[str], out: str, name: str, attrs: bytes = b"") -> bytes:
        return (b"".join(field(1, 2, i.encode()) for i in inputs) + field(2, 2, out.encode())
                + field(3, 2, name.encode()) + field(4, 2, op.encode()) + attrs)

    def graph_attr(name: str, g: bytes) -> bytes:
        return field(5, 2, field(1, 2, name.encode()) + field(6, 2, g)
                     + field(20, 0, AttributeProto.GRAPH))

    def make() -> bytes:
        body = graph(field(1, 2, node("Identity", ["nowhere" if broken else "X"], "r0", "leaf")),
                     "leaf", "r0")
        for level in range(1, depth + 1):
            other = graph(field(1, 2, node("Identity", ["X"], f"e{level}", f"else{level}")),
                          f"else{level}", f"e{level}")
            attrs = graph_attr("then_branch", body) + graph_attr("else_branch", other)
            body = graph(field(1, 2, node("If", ["C"], f"r{level}", f"if{level}", attrs)),
                         f"level{level}", f"r{level}")
        inputs = b"".join(field(11, 2, v.SerializeToString())
                          for v in (vi("C", [], TensorProto.BOOL), vi("X", [2])))
        g = body + inputs
        return (field(1, 0, 8) + field(2, 2, b"kiln-hostile") + field(7, 2, g)
                + field(8, 2, field(2, 0, OPSET)))
    return make


def expand_model(shape: Sequence[int]) -> Callable[[], onnx.ModelProto]:
    """``Y = Expand(X, shape)`` with a constant ``shape``: the output's size is ``shape``'s."""
    target = numpy_helper.from_array(np.array(shape, np.int64), "shape")
    return one_node("Expand", ["X", "shape"], [[1, 1]], list(shape), [target])


# -- the corpus ---------------------------------------------------------------------------------
def _cases() -> list[Case]:
    c: list[Case] = []

    def add(name: str, category: str, build: Callable[[Path], Path], *expect: str,
            env: dict[str, str] | None = None) -> None:
        c.append(Case(name, category, build, expect, tuple((env or {}).items())))

    # files that are not ONNX models at all
    add("empty_file", "file", writer(lambda: b""), "not an ONNX model", "empty")
    add("random_bytes", "file", writer(random_bytes), "not an ONNX model")
    add("text_file", "file", writer(lambda: b"ir_version: 8\ngraph { name: 'g' }\n"),
        "not an ONNX model")
    add("zip_archive", "file", writer(lambda: b"PK\x03\x04" + bytes(60)), "not an ONNX model")
    add("all_0xff", "file", writer(lambda: b"\xff" * 64), "not an ONNX model")
    for fraction in (0.001, 0.1, 0.5, 0.9, 0.999):
        add(f"truncated_{fraction:g}".replace(".", "_"), "truncated", writer(cut(fraction)),
            "not an ONNX model, or a truncated one")

    # valid protobuf, but of another message
    add("tensor_proto", "wrong message", writer(lambda: numpy_helper.from_array(
        np.arange(6, dtype=np.float32).reshape(2, 3), "t").SerializeToString()),
        "not an ONNX model")
    add("graph_proto", "wrong message",
        writer(lambda: relu_model().graph.SerializeToString()), "not an ONNX model")
    add("node_proto", "wrong message", writer(lambda: helper.make_node(
        "Relu", ["X"], ["Y"]).SerializeToString()), "not an ONNX model")

    # protobuf fields of the wrong wire type or with values out of range
    add("graph_as_varint", "protobuf fields",
        writer(lambda: field(1, 0, 8) + field(7, 0, 5) + field(8, 2, field(2, 0, OPSET))),
        "holds no graph")
    add("op_type_as_varint", "protobuf fields", writer(op_type_as_varint), "empty op type")
    add("invalid_utf8_name", "protobuf fields", writer(lambda: relu_model().SerializeToString()
                                                       .replace(b"relu", b"\xff\xfe\xfd\xfc")),
        "not valid UTF-8")
    add("input_elem_type_999", "protobuf fields", writer(mutate(
        lambda m: setattr(m.graph.input[0].type.tensor_type, "elem_type", 999))),
        "'X'", "999")
    add("input_elem_type_undefined", "protobuf fields", writer(mutate(
        lambda m: setattr(m.graph.input[0].type.tensor_type, "elem_type", 0))),
        "'X'", "UNDEFINED")
    add("input_string_dtype", "protobuf fields", writer(mutate(
        lambda m: setattr(m.graph.input[0].type.tensor_type, "elem_type",
                          TensorProto.STRING))), "'X'", "STRING")
    add("initializer_data_type_999", "protobuf fields", writer(mutate(
        lambda m: setattr(m.graph.initializer[0], "data_type", 999), matmul_model)),
        "'W'", "999")
    add("raw_data_too_short", "protobuf fields", writer(mutate(
        lambda m: setattr(m.graph.initializer[0], "raw_data",
                          m.graph.initializer[0].raw_data[:-4]), matmul_model)),
        "tensor name: W", "508 bytes", "512 bytes required")
    add("float_data_wrong_count", "protobuf fields", writer(lambda: model(
        [helper.make_node("Add", ["X", "B"], ["Y"])], [vi("X", [4])], [vi("Y", [4])],
        [TensorProto(name="B", data_type=FLOAT, dims=[4], float_data=[1.0, 2.0, 3.0])])),
        "tensor name: B", "float_data size (3)", "4 float values required")
    add("attribute_type_99", "protobuf fields", writer(lambda: model(
        [node_with("Softmax", ["X"], [raw_attr("axis", 99, i=1)])],
        [vi("X", [2, 3])], [vi("Y", [2, 3])])), "attribute 'axis'", "no type")
    add("ir_version_absurd", "protobuf fields", writer(mutate(
        lambda m: setattr(m, "ir_version", 1 << 40))), "ir_version 1099511627776")

    # graph structure
    add("undefined_node_input", "graph structure", writer(lambda: model(
        [helper.make_node("Add", ["X", "ghost"], ["Y"], name="add")],
        [vi("X", [2, 3])], [vi("Y", [2, 3])])),
        "ONNX node add (Add) reads 'ghost', which no node, graph input or initializer defines")
    add("output_never_produced", "graph structure", writer(lambda: model(
        [helper.make_node("Relu", ["X"], ["Y"])], [vi("X", [2, 3])],
        [vi("Y", [2, 3]), vi("Z", [2, 3])])), "'Z'")
    add("cycle", "graph structure", writer(lambda: model(
        [helper.make_node("Add", ["X", "b"], ["a"], name="first"),
         helper.make_node("Relu", ["a"], ["b"], name="second"),
         helper.make_node("Relu", ["a"], ["Y"], name="third")],
        [vi("X", [2, 3])], [vi("Y", [2, 3])])),
        "ONNX node first (Add) reads 'b', which node second computes only later")
    add("duplicate_node_output", "graph structure", writer(lambda: model(
        [helper.make_node("Relu", ["X"], ["Y"], name="one"),
         helper.make_node("Sigmoid", ["X"], ["Y"], name="two")],
        [vi("X", [2, 3])], [vi("Y", [2, 3])])), "'Y'")
    add("duplicate_graph_input", "graph structure", writer(lambda: model(
        [helper.make_node("Relu", ["X"], ["Y"])], [vi("X", [2, 3]), vi("X", [2, 3])],
        [vi("Y", [2, 3])])), "'X'")
    add("no_outputs", "graph structure", writer(lambda: model(
        [helper.make_node("Relu", ["X"], ["Y"])], [vi("X", [2, 3])], [])), "no outputs")
    add("missing_required_input", "graph structure", writer(lambda: model(
        [helper.make_node("Add", ["X"], ["Y"], name="add")], [vi("X", [2, 3])],
        [vi("Y", [2, 3])])), "Add")
    add("empty_op_type", "graph structure", writer(lambda: model(
        [helper.make_node("", ["X"], ["Y"])], [vi("X", [2, 3])], [vi("Y", [2, 3])])),
        "empty op type")

    # attributes of the wrong type or size
    add("float_for_int_list", "attributes", writer(lambda: model(
        [node_with("Transpose", ["X"], [raw_attr("perm", AttributeProto.FLOAT, f=1.5)])],
        [vi("X", [2, 3])], [vi("Y", [3, 2])])), "perm")
    add("string_for_int", "attributes", writer(lambda: model(
        [node_with("Softmax", ["X"], [raw_attr("axis", AttributeProto.STRING, s=b"last")])],
        [vi("X", [2, 3])], [vi("Y", [2, 3])])), "axis")
    add("int_for_graph", "attributes", writer(lambda: model(
        [helper.make_node("If", ["C"], ["Y"], then_branch=3, else_branch=4)],
        [vi("C", [], TensorProto.BOOL)], [vi("Y", [2])])), "else_branch", "GRAPH", "INT")
    add("axis_out_of_range", "attributes", writer(one_node(
        "Softmax", ["X"], [[2, 3]], [2, 3], axis=1 << 40)), "axis")
    add("huge_perm_attribute", "attributes", writer(one_node(
        "Transpose", ["X"], [[2, 3]], [3, 2], perm=list(range(200_000)))), "perm [0, 1, 2",
        "characters]", "is not a permutation of rank 2")
    add("negative_pads", "attributes", writer(one_node(
        "MaxPool", ["X"], [[1, 1, 4, 4]], None, kernel_shape=[2, 2],
        pads=[-9, -9, -9, -9])), "pads")

    # shapes: absurd sizes, negative dims, zero and rank-0 oddities
    add("input_10e12_elements", "shapes", writer(one_node(
        "Relu", ["X"], [[1_000_000, 1_000_000]], [1_000_000, 1_000_000])),
        "input 'X'", "would need 4000000000000 bytes (3.6 TiB)", "KILN_MAX_TENSOR_BYTES")
    add("initializer_10e12_dims", "shapes", writer(lambda: model(
        [helper.make_node("Add", ["X", "W"], ["Y"])], [vi("X", [1])], [vi("Y", None)],
        [TensorProto(name="W", data_type=FLOAT, dims=[1_000_000, 1_000_000])])),
        "initializer 'W'", "would need 4000000000000 bytes (3.6 TiB)")
    add("expand_to_10e14", "shapes", writer(expand_model([10_000_000, 10_000_000])),
        "400000000000000 bytes")
    add("constant_of_shape_huge", "shapes", writer(lambda: model(
        [helper.make_node("ConstantOfShape", ["s"], ["Y"], name="cos",
                          value=helper.make_tensor("v", FLOAT, [1], [1.0]))],
        [], [vi("Y", None)],
        [numpy_helper.from_array(np.array([1 << 20, 1 << 20], np.int64), "s")])),
        "4398046511104 bytes")
    add("constant_of_shape_folded_huge", "shapes", writer(lambda: model(
        [helper.make_node("Add", ["s", "zero"], ["s2"], name="add"),
         helper.make_node("ConstantOfShape", ["s2"], ["Y"], name="cos",
                          value=helper.make_tensor("v", FLOAT, [1], [1.0]))],
        [], [vi("Y", None)],
        [numpy_helper.from_array(np.array([1 << 20, 1 << 20], np.int64), "s"),
         numpy_helper.from_array(np.array([0, 0], np.int64), "zero")])),
        "value 'Y'", "4398046511104 bytes")
    add("tile_huge", "shapes", writer(lambda: model(
        [helper.make_node("Tile", ["c", "r"], ["Y"], name="tile")], [], [vi("Y", None)],
        [numpy_helper.from_array(np.ones((4, 4), np.float32), "c"),
         numpy_helper.from_array(np.array([1 << 20, 1 << 20], np.int64), "r")])),
        "value 'Y'", "would need 70368744177664 bytes (64.0 TiB)")
    add("budget_from_env", "shapes", writer(matmul_model), "initializer 'W'", "512 bytes",
        "KILN_MAX_TENSOR_BYTES", env={"KILN_MAX_TENSOR_BYTES": "256"})
    add("budget_env_not_a_number", "shapes", writer(relu_model), "KILN_MAX_TENSOR_BYTES",
        "'lots'", env={"KILN_MAX_TENSOR_BYTES": "lots"})
    add("negative_initializer_dim", "shapes", writer(lambda: model(
        [helper.make_node("Add", ["X", "W"], ["Y"])], [vi("X", [3])], [vi("Y", [3])],
        [TensorProto(name="W", data_type=FLOAT, dims=[-3], float_data=[1, 2, 3])])),
        "initializer 'W'", "negative")
    add("reshape_to_negative_dim", "shapes", writer(lambda: model(
        [helper.make_node("Reshape", ["X", "s"], ["Y"], name="reshape")],
        [vi("X", [2, 3])], [vi("Y", None)],
        [numpy_helper.from_array(np.array([-2, -3], np.int64), "s")])), "Reshape")
    add("gemm_on_rank0", "shapes", writer(one_node(
        "Gemm", ["A", "B"], [[], []], None)), "Gemm")
    add("concat_of_scalars", "shapes", writer(one_node(
        "Concat", ["A", "B"], [[], []], None, axis=0)), "Concat")
    add("zero_size_reshape_ambiguous", "shapes", writer(lambda: model(
        [helper.make_node("Reshape", ["X", "s"], ["Y"], name="reshape", allowzero=1)],
        [vi("X", [0, 3])], [vi("Y", None)],
        [numpy_helper.from_array(np.array([-1, 0], np.int64), "s")])), "reshape")
    add("transpose_of_scalar", "shapes", writer(one_node(
        "Transpose", ["X"], [[]], None, perm=[1, 0])), "perm")
    add("input_without_shape", "shapes", writer(lambda: model(
        [helper.make_node("Relu", ["X"], ["Y"])], [vi("X", None)], [vi("Y", None)])),
        "input 'X' has no shape")

    # ops, domains and opsets
    add("unknown_op", "ops", writer(one_node("FrobnicateTensor", ["X"], [[2]], [2])),
        "unsupported ONNX ops", "FrobnicateTensor")
    add("unknown_domain", "ops", writer(one_node(
        "Relu", ["X"], [[2]], [2], domain="com.example.secret",
        opsets=(("", OPSET), ("com.example.secret", 1)))),
        "custom domain com.example.secret")
    add("no_opset_import", "opsets", writer(mutate(lambda m: m.ClearField("opset_import"))),
        "imports no opset")
    add("opset_absurd", "opsets", writer(mutate(
        lambda m: setattr(m.opset_import[0], "version", 1 << 40))), "opset 1099511627776")
    add("opset_negative", "opsets", writer(mutate(
        lambda m: setattr(m.opset_import[0], "version", -5))), "opset -5")
    add("opset_duplicate", "opsets", writer(mutate(
        lambda m: m.opset_import.add(domain="", version=9))), "twice")

    # external data
    add("external_missing_file", "external data", external("weights.bin"), "weights.bin")
    add("external_outside_dir", "external data", external("../../../../../../etc/passwd"),
        "outside")
    add("external_absolute_path", "external data", external("/etc/passwd"), "/etc/passwd")
    add("external_too_short", "external data", external("w.bin", write=bytes(100)),
        "tensor name: W", "100 bytes")
    add("external_length_beyond", "external data",
        external("w.bin", write=bytes(512), length=1 << 40), "'W'")
    add("external_symlink_outside", "external data",
        external("w.bin", link_to=Path("/etc/hostname")), "w.bin")

    add("raw_data_too_long", "protobuf fields", writer(mutate(
        lambda m: setattr(m.graph.initializer[0], "raw_data",
                          m.graph.initializer[0].raw_data + bytes(8)), matmul_model)),
        "initializer 'W'", "do not decode")
    add("cast_to_999", "attributes", writer(one_node("Cast", ["X"], [[2]], [2], to=999)),
        "999")
    add("constant_without_value", "attributes", writer(lambda: model(
        [helper.make_node("Constant", [], ["Y"], name="const")], [], [vi("Y", [2])])),
        "Constant")
    add("split_sizes_mismatch", "attributes", writer(lambda: model(
        [helper.make_node("Split", ["X", "s"], ["Y", "Z"], name="split", axis=0)],
        [vi("X", [6])], [vi("Y", None), vi("Z", None)],
        [numpy_helper.from_array(np.array([2, 7], np.int64), "s")])), "split")
    add("sparse_initializer_read", "dtypes", writer(lambda: model(
        [helper.make_node("Add", ["X", "S"], ["Y"])], [vi("X", [4])], [vi("Y", [4])],
        sparse=[helper.make_sparse_tensor(
            helper.make_tensor("S", FLOAT, [1], [1.0]),
            helper.make_tensor("S_idx", TensorProto.INT64, [1], [2]), [4])])),
        "sparse initializer 'S'")

    # dtypes that disagree
    add("initializer_vs_value_info_dtype", "dtypes", writer(lambda: model(
        [helper.make_node("Add", ["X", "B"], ["Y"])], [vi("X", [3]), vi("B", [3])],
        [vi("Y", [3])], [numpy_helper.from_array(np.arange(3, dtype=np.int64), "B")])),
        "'B'")
    add("add_float_int64", "dtypes", writer(lambda: model(
        [helper.make_node("Add", ["X", "B"], ["Y"])], [vi("X", [3])], [vi("Y", [3])],
        [numpy_helper.from_array(np.arange(3, dtype=np.int64), "B")])), "Add")
    add("string_initializer", "dtypes", writer(lambda: model(
        [helper.make_node("Add", ["X", "S"], ["Y"])], [vi("X", [1])], [vi("Y", [1])],
        [helper.make_tensor("S", TensorProto.STRING, [1], [b"x"])])), "STRING")

    # subgraphs (If and Loop bodies)
    add("if_branch_undefined", "subgraphs", writer(nested_if(1)),
        "ONNX node leaf of subgraph if1/then_branch (Identity) reads 'nowhere'")
    add("if_nested_30_broken", "subgraphs", writer(nested_if(30)),
        "ONNX node leaf of subgraph if30/then_branch/if29/then_branch/if28", "reads 'nowhere'")
    add("if_nested_200", "subgraphs", writer(nested_if(200, broken=False)), "nested")
    add("if_missing_else", "subgraphs", writer(lambda: model(
        [helper.make_node("If", ["C"], ["Y"], then_branch=helper.make_graph(
            [helper.make_node("Identity", ["X"], ["t"])], "then", [], [vi("t", [2])]))],
        [vi("C", [], TensorProto.BOOL), vi("X", [2])], [vi("Y", [2])])), "else_branch")
    add("loop_body_wrong_arity", "subgraphs", writer(lambda: model(
        [helper.make_node("Loop", ["N", "", "X"], ["Y"], body=helper.make_graph(
            [helper.make_node("Identity", ["x"], ["xo"])], "body",
            [vi("x", [2])], [vi("xo", [2])]))],
        [vi("X", [2])], [vi("Y", [2])],
        [numpy_helper.from_array(np.array(3, np.int64), "N")])), "body")
    add("if_branch_output_count", "subgraphs", writer(lambda: model(
        [helper.make_node("If", ["C"], ["Y"], then_branch=helper.make_graph(
            [helper.make_node("Identity", ["X"], ["t"])], "then", [], [vi("t", [2])]),
            else_branch=helper.make_graph([helper.make_node("Identity", ["X"], ["e"]),
                                           helper.make_node("Neg", ["X"], ["f"])],
                                          "else", [], [vi("e", [2]), vi("f", [2])]))],
        [vi("C", [], TensorProto.BOOL), vi("X", [2])], [vi("Y", [2])])), "If")
    add("subgraph_huge_initializer", "subgraphs", writer(lambda: model(
        [helper.make_node("If", ["C"], ["Y"], then_branch=helper.make_graph(
            [helper.make_node("Identity", ["big"], ["t"])], "then", [], [vi("t", None)],
            initializer=[TensorProto(name="big", data_type=TensorProto.DOUBLE,
                                     dims=[1 << 30, 1 << 12])]),
            else_branch=helper.make_graph([helper.make_node("Identity", ["X"], ["e"])],
                                          "else", [], [vi("e", [2])]))],
        [vi("C", [], TensorProto.BOOL), vi("X", [2])], [vi("Y", None)])),
        "initializer 'big' of subgraph #0/then_branch", "35184372088832 bytes")
    return c


CASES: list[Case] = _cases()
assert len({case.name for case in CASES}) == len(CASES), "case names repeat"


def write_corpus(root: Path) -> dict[str, Path]:
    """Write every case under ``root/<number>/`` (a neutral name: expected substrings must not
    match the path); returns the model path of each case, by name."""
    paths = {}
    for i, case in enumerate(CASES):
        d = root / f"{i:03d}"
        d.mkdir(parents=True)
        paths[case.name] = case.build(d)
    return paths


