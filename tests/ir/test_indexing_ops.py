"""Index-driven ops compiled for x86 against their NumPy references, on ragged shapes: gathers,
scatters (every reduction), tile, one_hot, trilu, cumulative sums and products, top_k."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln.codegen.pipeline import lower_graph
from kiln.errors import ModelError
from kiln.ir.interpreter import run_reference
from kiln.testing import assert_matches_reference, assert_outputs_close


def _graph(op: str, inputs: list[tuple[str, tuple[int, ...], str]],
           consts: tuple[np.ndarray, ...] = (), **attrs: object) -> kiln.Graph:
    """One ``op`` node on graph inputs (name, shape, dtype) followed by constants."""
    g = kiln.Graph(op)
    vals = [g.input(name, shape, dtype) for name, shape, dtype in inputs]
    vals += [g.constant(c, name=f"c{i}") for i, c in enumerate(consts)]
    for out in g.add(op, vals, **attrs):
        g.output(out)
    return g


def _randn(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _ints(lo: int, hi: int, shape: tuple[int, ...], seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(lo, hi, size=shape).astype(np.int64)


@pytest.mark.parametrize("axis", [0, -1])
def test_gather_elements_with_negative_indices(axis: int) -> None:
    shape = (5, 7, 3)
    dim = shape[axis]
    idx_shape = (4, 6, 3)
    g = _graph("gather_elements", [("x", shape, "float32"), ("i", idx_shape, "int64")],
               axis=axis)
    assert_matches_reference(g, {"x": _randn(*shape), "i": _ints(-dim, dim, idx_shape)})


@pytest.mark.parametrize("batch_dims, x_shape, i_shape", [
    (0, (5, 7, 3), (4, 2)),        # pairs of leading indices -> rows of 3
    (0, (5, 7), (3, 1, 2)),        # full element indices
    (1, (3, 5, 7), (3, 4, 1)),     # per-batch row picks
])
def test_gather_nd(batch_dims: int, x_shape, i_shape) -> None:
    g = _graph("gather_nd", [("x", x_shape, "float32"), ("i", i_shape, "int64")],
               batch_dims=batch_dims)
    m = i_shape[-1]
    dims = x_shape[batch_dims:batch_dims + m]
    idx = np.stack([_ints(-d, d, i_shape[:-1], seed=k) for k, d in enumerate(dims)], axis=-1)
    assert_matches_reference(g, {"x": _randn(*x_shape), "i": idx})


def test_tile() -> None:
    g = _graph("tile", [("x", (3, 1, 5), "float32")], repeats=(2, 7, 3))
    assert_matches_reference(g)


@pytest.mark.parametrize("axis", [0, -1])
def test_one_hot_negative_and_out_of_range(axis: int) -> None:
    g = _graph("one_hot", [("i", (3, 5), "int64")], (np.array([-1.5, 4.0], np.float32),),
               depth=7, axis=axis)
    assert_matches_reference(g, {"i": _ints(-8, 9, (3, 5))})


@pytest.mark.parametrize("upper, k", [(True, 0), (True, -2), (False, 3)])
def test_trilu(upper: bool, k: int) -> None:
    g = _graph("trilu", [("x", (2, 5, 7), "float32")], upper=upper, k=k)
    assert_matches_reference(g)


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "min"])
def test_scatter_nd(reduction: str) -> None:
    # the reductions see a repeated index row (0 twice) and must combine both updates;
    # without one, repeats are undefined, so that case drops the repeat
    rows = [[0], [3], [0], [-1]] if reduction != "none" else [[0], [3], [-1]]
    idx = np.array(rows, np.int64)
    g = kiln.Graph("scatter_nd")
    x, u = g.input("x", (5, 3, 7), "float32"), g.input("u", (len(rows), 3, 7), "float32")
    (y,) = g.add("scatter_nd", [x, g.constant(idx, name="i"), u], reduction=reduction)
    g.output(y)
    assert_matches_reference(g)


def test_scatter_nd_element_indices() -> None:
    g = kiln.Graph("scatter_nd")
    x, u = g.input("x", (4, 5), "float32"), g.input("u", (3,), "float32")
    idx = g.constant(np.array([[0, 1], [3, -1], [2, 2]], np.int64), name="i")
    (y,) = g.add("scatter_nd", [x, idx, u], reduction="add")
    g.output(y)
    assert_matches_reference(g)


@pytest.mark.parametrize("axis, reduction", [(0, "none"), (1, "add"), (2, "max"),
                                             (2, "none")])
def test_scatter_elements(axis: int, reduction: str) -> None:
    shape, ishape = (4, 5, 6), (3, 4, 5)
    dim = shape[axis]
    rng = np.random.default_rng(3)
    if reduction == "none":   # distinct targets along the axis, so the result is defined
        idx = np.argsort(rng.random(ishape[:axis] + (dim,) + ishape[axis + 1:]), axis=axis)
        idx = np.take(idx, range(ishape[axis]), axis=axis).astype(np.int64)
    else:
        idx = rng.integers(-dim, dim, size=ishape).astype(np.int64)
    g = _graph("scatter_elements", [("x", shape, "float32"), ("i", ishape, "int64"),
                                    ("u", ishape, "float32")], axis=axis, reduction=reduction)
    assert_matches_reference(g, {"x": _randn(*shape), "i": idx, "u": _randn(*ishape, seed=4)})


@pytest.mark.parametrize("op, axis, exclusive, reverse", [
    ("cumsum", 0, False, False), ("cumsum", 1, True, False), ("cumsum", 2, False, True),
    ("cumprod", 1, True, True), ("cumprod", 2, False, False)])
def test_cumulative(op: str, axis: int, exclusive: bool, reverse: bool) -> None:
    g = _graph(op, [("x", (3, 7, 19), "float32")], axis=axis, exclusive=exclusive,
               reverse=reverse)
    x = np.random.default_rng(0).uniform(0.8, 1.2, (3, 7, 19)).astype(np.float32)
    assert_matches_reference(g, {"x": x}, rtol=1e-5, atol=1e-5)


def test_cumsum_int32() -> None:
    g = _graph("cumsum", [("x", (5, 9), "int32")], axis=1)
    assert_matches_reference(g)


@pytest.mark.parametrize("axis, largest", [(0, True), (1, False), (-1, True)])
def test_top_k(axis: int, largest: bool) -> None:
    shape = (6, 11, 5)
    g = _graph("top_k", [("x", shape, "float32")], k=4, axis=axis, largest=largest)
    assert_matches_reference(g, {"x": _randn(*shape)})


def test_top_k_ties_keep_the_lower_index_first() -> None:
    g = _graph("top_k", [("x", (3, 9), "int64")], k=5, axis=1)
    x = np.array([[1, 3, 3, 2, 3, 1, 0, 3, 2]] * 3, np.int64)
    x[1] = 0
    got = assert_matches_reference(g, {"x": x})
    assert got[1][0].tolist() == [1, 2, 4, 7, 3]
    assert got[1][1].tolist() == [0, 1, 2, 3, 4]


def test_top_k_whole_row() -> None:
    g = _graph("top_k", [("x", (2, 13), "float32")], k=13, axis=1)
    assert_matches_reference(g)


def test_loop_nest_kernels_run_rows_in_parallel() -> None:
    """The written-out kernels are scheduled as written: a parallel loop over rows (when there
    is enough work), and for a scan over a middle axis, a vectorised loop over the trailing
    dim."""
    g = _graph("cumsum", [("x", (64, 33, 48), "float32")], axis=1)
    (kernel,) = lower_graph(g).kernels
    text = kernel.func.script()
    assert "T.parallel(64)" in text and "T.vectorized(48)" in text
    g = _graph("top_k", [("x", (400, 50), "float32")], k=3, axis=1)
    (kernel,) = lower_graph(g).kernels
    assert "T.parallel(400)" in kernel.func.script()
    g = _graph("top_k", [("x", (4, 50), "float32")], k=3, axis=1)   # too little work to split
    (kernel,) = lower_graph(g).kernels
    assert "T.parallel" not in kernel.func.script()


def test_reference_rejects_out_of_range_indices() -> None:
    g = _graph("gather_elements", [("x", (3, 4), "float32"), ("i", (3, 4), "int64")], axis=1)
    with pytest.raises(ModelError, match="out of range"):
        run_reference(g, {"x": _randn(3, 4), "i": np.full((3, 4), 4, np.int64)})


def test_injective_indexing_fuses_with_elementwise() -> None:
    g = kiln.Graph("fused")
    x = g.input("x", (5, 7), "float32")
    (t,) = g.add("trilu", [x], upper=True, k=1)
    (y,) = g.add("neg", [t])
    (z,) = g.add("tile", [y], repeats=(2, 1))
    g.output(z)
    c = lower_graph(g)
    assert len(c.kernels) == 1
    feeds = {"x": _randn(5, 7)}
    assert_outputs_close(kiln.compile(g)(**feeds), run_reference(g, feeds), 1e-5, 1e-6)
