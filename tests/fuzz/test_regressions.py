"""The bugs differential fuzzing found, shrunk to the smallest graph that showed each one.

Each test is the graph hypothesis reported, written out, checked the same way the fuzzer
checks (``check_case``: compiled for x86, every output against the reference interpreter).
"""

from __future__ import annotations

import time

import numpy as np
from fuzz_graphs import Case, Feed, check_case

from kiln.ir.graph import Graph


def _case(g: Graph, bindings: list[dict[str, int]] | None = None) -> Case:
    feeds = {v.name: Feed("normal") for v in g.inputs}
    return Case(g, feeds, bindings or [{}])


def test_depthwise_conv_padding_with_one_row_per_task() -> None:
    """A depthwise conv whose padding stage, placed in the task loop, kept no row loop of its
    own: decomposing the padding at the task loop made TVM drop the conv block ("The loop no
    longer exists in the IRModule")."""
    g = Graph("fuzz")
    x = g.input("x1", (1, 2, 1, 1), "float32")
    w = g.constant(np.array([0.12573, -0.132105], np.float32).reshape(2, 1, 1, 1), name="w")
    (y,) = g.add("conv2d", [x, w], strides=[1, 1], padding=[0, 0, 0, 1], dilations=[1, 1],
                 groups=2)
    g.output(y)
    check_case(_case(g))


def test_chain_of_transcendental_ops_compiles_in_seconds() -> None:
    """``gelu(erf(asinh(x)))`` fused into one expression: each op reads its input many times
    (fastmath's range reductions and selects), so the inlined tree grew as the product, to
    about 200 million nodes, and TVM ran out of memory. Fusion now ends a group before its
    expression passes ``MAX_INLINE_SIZE`` nodes."""
    g = Graph("fuzz")
    x = g.input("x0", (3, 7), "float32")
    (a,) = g.add("asinh", [x])
    (e,) = g.add("erf", [a])
    (y,) = g.add("gelu", [e])
    (z,) = g.add("sin", [g.add("exp", [y])[0]])
    g.output(z)
    start = time.perf_counter()
    check_case(_case(g))
    assert time.perf_counter() - start < 60


def test_layer_norm_over_a_symbolic_row() -> None:
    """layer_norm whose normalised axes include a symbolic dim: its element count is an
    expression, which the compute passed to ``tirx.const`` (an internal TVM error)."""
    g = Graph("fuzz")
    x = g.input("x0", (3, "n"), "float32")
    gamma = g.input("x1", ("n",), "float32")
    beta = g.input("x2", ("n",), "float32")
    (y,) = g.add("layer_norm", [x, gamma, beta], axis=-1, epsilon=1e-5)
    g.output(y)
    check_case(_case(g, [{"n": 1}, {"n": 13}]))


def test_conv_and_pool_over_a_symbolic_batch() -> None:
    """conv2d and pool whose batch is symbolic: the conv planner asked for the output's static
    shape (a ModelError), the pool template multiplied loop extents that were ``None``."""
    g = Graph("fuzz")
    x = g.input("x2", ("n", 2, 5, 7), "float32")
    w = g.constant(np.linspace(-0.5, 0.5, 36, dtype=np.float32).reshape(2, 2, 3, 3), name="w")
    (c,) = g.add("conv2d", [x, w], strides=[1, 1], padding=[1, 1, 1, 1], dilations=[1, 1],
                 groups=1)
    wd = g.constant(np.float32([0.3, -0.2]).reshape(2, 1, 1, 1), name="wd")
    (d,) = g.add("conv2d", [x, wd], strides=[2, 1], padding=[1, 0, 0, 1], dilations=[1, 1],
                 groups=2)     # depthwise, its padding made inside each task
    (p,) = g.add("pool", [c], mode="max", kernel=[2, 2], strides=[1, 2], pads=[1, 0, 0, 1],
                 dilations=[1, 1], ceil_mode=False, count_include_pad=False, p=2,
                 storage_order=0)
    g.output(p, d)
    check_case(_case(g, [{"n": 1}, {"n": 3}]))

