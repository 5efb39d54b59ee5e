"""Graph passes: constant folding, dead-code elimination, fusion."""

from __future__ import annotations

import numpy as np

import kiln
from kiln import ops
from kiln.ir.ops import Pattern
from kiln.ir.passes import eliminate_dead_code, fold_constants, fuse_groups, optimize
from kiln.testing import assert_matches_reference


def test_fold_constants_evaluates_constant_subgraphs() -> None:
    g = kiln.Graph()
    x = g.input("x", (2, 3), "float32")
    w = ops.transpose(g.constant(np.arange(6, dtype=np.float32).reshape(3, 2)))   # constant
    y = ops.add(x, ops.mul(w, 2.0))
    g.output(y)
    feeds = {"x": np.ones((2, 3), np.float32)}
    before = kiln.run_reference(g, feeds)
    assert fold_constants(g) == 2
    assert [n.op.name for n in g.nodes] == ["add"]
    assert g.nodes[0].inputs[1].is_constant
    np.testing.assert_array_equal(kiln.run_reference(g, feeds)[0], before[0])


def test_dead_code_elimination() -> None:
    g = kiln.Graph()
    x = g.input("x", (4,), "float32")
    ops.exp(ops.relu(x))                       # unused chain
    g.output(ops.neg(x))
    assert eliminate_dead_code(g) == 2
    assert [n.op.name for n in g.nodes] == ["neg"]


def test_optimize_does_not_modify_its_input() -> None:
    g = kiln.Graph()
    x = g.input("x", (4,), "float32")
    g.output(ops.add(x, ops.exp(g.constant(np.zeros(4, np.float32)))))
    text = str(g)
    o = optimize(g)
    assert str(g) == text and len(o.nodes) == 1


def _groups(g: kiln.Graph) -> list[list[str]]:
    return [[n.op.name for n in grp.nodes] for grp in fuse_groups(g).groups]


def test_gemm_takes_its_elementwise_epilogue() -> None:
    g = kiln.Graph()
    x = g.input("x", (8, 16), "float32")
    r = g.input("r", (8, 32), "float32")
    h = ops.gelu(ops.add(ops.dense(x, np.ones((32, 16), np.float32)), np.ones(32, np.float32)))
    g.output(ops.add(h, r))
    fused = fuse_groups(g)
    assert _groups(g) == [["dense", "add", "gelu", "add"]]
    grp = fused.groups[0]
    assert grp.kind is Pattern.OUT_FUSABLE and grp.anchor.op.name == "dense"
    assert grp.name == "fused_dense_add_gelu"
    assert [v.name for v in grp.inputs] == ["x", "const", "const_1", "r"]


def test_epilogue_stops_at_fanout_shape_change_and_graph_outputs() -> None:
    g = kiln.Graph()
    x = g.input("x", (8, 16), "float32")
    mm = ops.matmul(x, np.ones((16, 4), np.float32))
    a = ops.relu(mm)
    g.output(a, ops.exp(a))                    # a is a graph output: exp cannot join its group
    assert _groups(g) == [["matmul", "relu"], ["exp"]]
    g2 = kiln.Graph()
    x2 = g2.input("x", (8, 16), "float32")
    mm2 = ops.matmul(x2, np.ones((16, 4), np.float32))
    g2.output(ops.add(mm2, g2.input("big", (3, 8, 4), "float32")))   # broadcast grows the shape
    assert _groups(g2) == [["matmul"], ["add"]]


def test_reduction_takes_prologue_and_epilogue() -> None:
    g = kiln.Graph()
    x = g.input("x", (4, 37), "float32")
    s = ops.softmax(ops.add(ops.mul(x, 0.5), np.zeros(37, np.float32)))
    g.output(ops.mul(s, 3.0))
    assert _groups(g) == [["mul", "add", "softmax", "mul"]]
    assert fuse_groups(g).groups[0].name == "fused_softmax_mul_add"


def test_injective_chains_fuse_and_diamonds_stay_acyclic() -> None:
    g = kiln.Graph()
    x = g.input("x", (2, 3, 4), "float32")
    t = ops.transpose(ops.reshape(ops.exp(x), (3, 2, 4)), (1, 0, 2))
    g.output(ops.add(t, ops.sum(t, axes=0, keepdims=True)))
    fused = fuse_groups(g)
    # exp/reshape/transpose fuse; the reduction needs t, and the add needs both: no cycle
    order = [[n.op.name for n in grp.nodes] for grp in fused.groups]
    assert order[0] == ["exp", "reshape", "transpose"]
    produced: set[int] = {id(v) for v in g.inputs}
    for grp in fused.groups:                   # groups come in dependency order
        assert all(v.is_constant or id(v) in produced for v in grp.inputs), grp.name
        produced.update(id(v) for v in grp.outputs)


def test_fused_graph_prints_named_groups() -> None:
    g = kiln.Graph("m")
    x = g.input("x", (8, 16), "float32")
    g.output(ops.softmax(ops.relu(ops.dense(x, np.ones((4, 16), np.float32)))))
    text = str(fuse_groups(g))
    assert "group fused_dense_relu [out-fusable] (%x, %const) -> (%relu) {" in text
    assert "group fused_softmax [reduction] (%relu) -> (%softmax) {" in text


def test_diamond_epilogues_fuse_whole() -> None:
    g = kiln.Graph()
    x = g.input("x", (8, 16), "float32")
    h = ops.dense(x, np.ones((32, 16), np.float32))
    silu = ops.mul(h, ops.sigmoid(h))                               # h read twice
    gelu = ops.mul(ops.mul(silu, ops.add(ops.erf(ops.div(silu, 1.41)), 1.0)), 0.5)
    g.output(gelu)
    assert _groups(g) == [["dense", "sigmoid", "mul", "div", "erf", "add", "mul", "mul"]]
    assert_matches_reference(g, rtol=1e-5, atol=1e-5)


def test_epilogue_never_closes_a_cycle() -> None:
    g = kiln.Graph()
    x = g.input("x", (8, 16), "float32")
    r = ops.relu(ops.dense(x, np.ones((32, 16), np.float32)))
    s = ops.sum(r, axes=-1, keepdims=True)               # a reduction group reading r
    g.output(ops.add(r, s))                               # needs r and s: cannot join dense
    assert _groups(g) == [["dense", "relu"], ["reduce_sum"], ["add"]]
    assert_matches_reference(g, rtol=1e-5)


def test_fusion_sees_dependencies_through_other_nodes_of_a_group() -> None:
    """A node may not join group A when one of its inputs comes from a group B that reads
    from A through a different node of B: the groups would depend on each other."""
    g = kiln.Graph("cycle")
    x = g.input("x", (4, 6))
    a = kiln.ops.exp(x)                        # group A starts here
    b1 = kiln.ops.neg(kiln.ops.transpose(x, (1, 0)))
    b2 = kiln.ops.add(b1, kiln.ops.transpose(a, (1, 0)))   # B reads A
    c = kiln.ops.mul(a, kiln.ops.transpose(b1, (1, 0)))    # joins A? reads B's b1
    g.output(c, b2)
    fused = fuse_groups(optimize(g))
    owner = {id(n): i for i, grp in enumerate(fused.groups) for n in grp.nodes}
    for i, grp in enumerate(fused.groups):                 # producers strictly before readers
        for n in grp.nodes:
            for v in n.inputs:
                if v.producer is not None:
                    assert owner[id(v.producer)] <= i
    x_val = {"x": np.ones((4, 6), np.float32)}
    for got, want in zip(kiln.compile(g)(**x_val), kiln.run_reference(g, x_val), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_an_integer_gemms_epilogue_runs_past_its_requantized_bytes() -> None:
    """matmul_integer -> cast to uint8 (the requantized output) -> a float activation that
    reads it twice: one kernel, the activation applied to the tile in registers, and the
    result matches the reference."""
    g = kiln.Graph("q")
    a = g.input("a", (4, 32), "uint8")
    w = g.constant(np.random.default_rng(0).integers(-128, 128, (32, 16)).astype(np.int8))
    az, bz = g.constant(np.uint8(3)), g.constant(np.int8(0))
    (y,) = g.add("matmul_integer", [a, w, az, bz])
    q = ops.cast(ops.maximum(ops.minimum(ops.div(y, 64), 255), 0), "uint8")
    f = ops.cast(q, "float32")
    g.output(ops.mul(f, ops.add(f, 1.0)))
    assert _groups(g) == [["matmul_integer", "div", "minimum", "maximum", "cast", "cast",
                          "add", "mul"]]
    a_val = np.random.default_rng(1).integers(0, 256, (4, 32)).astype(np.uint8)
    assert_matches_reference(g, {"a": a_val})
