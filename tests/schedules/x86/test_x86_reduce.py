"""The x86 reduction templates on the reductions added for ONNX: reduce_min / reduce_prod /
reduce_log_sum_exp, arg_max / arg_min and log_softmax. Values against the NumPy references on
ragged shapes, and one property each that proves the template took effect."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln.codegen.pipeline import lower_graph
from kiln.testing import assert_matches_reference


def one_op(op: str, shape: tuple[int, ...], dtype: str = "float32", **attrs) -> kiln.Graph:
    g = kiln.Graph(op)
    x = g.input("x", shape, dtype)
    (y,) = g.add(op, [x], **attrs)
    g.output(y)
    return g


@pytest.mark.parametrize("op, axes, keepdims", [
    ("reduce_min", (2,), False), ("reduce_min", (0, 2), True), ("reduce_prod", (1,), False),
    ("reduce_prod", (2,), True), ("reduce_log_sum_exp", (2,), False),
    ("reduce_log_sum_exp", (0, 2), True)])
def test_new_reductions(op: str, axes, keepdims: bool) -> None:
    g = one_op(op, (3, 7, 11), axes=axes, keepdims=keepdims)
    x = np.random.default_rng(0).uniform(0.7, 1.3, (3, 7, 11)).astype(np.float32)
    assert_matches_reference(g, {"x": x}, rtol=2e-5, atol=1e-6)


def test_reduce_min_int64() -> None:
    assert_matches_reference(one_op("reduce_min", (5, 9), "int64", axes=(1,)))


def test_reduce_log_sum_exp_does_not_overflow() -> None:
    g = one_op("reduce_log_sum_exp", (4, 37), axes=(1,))
    x = (np.random.default_rng(0).standard_normal((4, 37)) * 30 + 500).astype(np.float32)
    (got,) = assert_matches_reference(g, {"x": x}, rtol=1e-6, atol=0)
    assert np.isfinite(got).all()


@pytest.mark.parametrize("op, axis, keepdims, last", [
    ("arg_max", -1, False, False), ("arg_min", -1, True, True), ("arg_max", 0, False, True),
    ("arg_min", 1, True, False)])
def test_arg_reductions_with_ties(op: str, axis: int, keepdims: bool, last: bool) -> None:
    g = one_op(op, (6, 9, 13), axis=axis, keepdims=keepdims, select_last_index=last)
    x = np.random.default_rng(1).integers(0, 4, (6, 9, 13)).astype(np.float32)
    assert_matches_reference(g, {"x": x}, rtol=0, atol=0)


@pytest.mark.parametrize("op, attrs", [("arg_max", {"axis": 1, "keepdims": False}),
                                       ("log_softmax", {"axis": -1}),
                                       ("reduce_log_sum_exp", {"axes": (1,)})])
def test_row_reductions_are_parallel_and_vectorised(op: str, attrs) -> None:
    """Rows of 512: each pass over a row runs on vectors (rfactor into one vector of partial
    results), rows run in parallel."""
    g = one_op(op, (64, 512), **attrs)
    (kernel,) = lower_graph(g).kernels
    assert any("row reduction" in note for note in kernel.notes)
    text = kernel.func.script()
    assert "T.parallel(64)" in text and "T.vectorized(" in text
    x = np.random.default_rng(2).standard_normal((64, 512)).astype(np.float32)
    assert_matches_reference(g, {"x": x}, rtol=1e-5, atol=1e-5)


def test_arg_max_over_a_leading_axis_vectorises_the_output_axis() -> None:
    g = one_op("arg_max", (37, 48), axis=0, keepdims=False)
    (kernel,) = lower_graph(g).kernels
    assert "T.vectorized(" in kernel.func.script()


def test_log_softmax_is_stable() -> None:
    g = one_op("log_softmax", (3, 40), axis=-1)
    x = np.random.default_rng(0).standard_normal((3, 40)).astype(np.float32) * 300
    (got,) = assert_matches_reference(g, {"x": x}, rtol=1e-5, atol=1e-4)
    assert np.isfinite(got).all()


@pytest.mark.parametrize("n", [128, 1024, 77])
def test_softmax_masked_entries_are_exact_zeros_and_nan_rows_nan(n: int) -> None:
    """The x - max <= 0 exponential: -inf (a mask) and far-below entries give exactly 0, a
    NaN makes its row NaN as in the reference, other rows are untouched."""
    g = one_op("softmax", (4, n), axis=-1)
    x = np.random.default_rng(1).standard_normal((4, n)).astype(np.float32) * 30
    x[0, ::3] = -np.inf
    x[1, 5] = np.nan
    x[2, :] = np.float32(-200.0)
    x[2, 7] = 0.0                                 # e^-200 underflows: exact 0 and exact 1
    (got,) = assert_matches_reference(g, {"x": x}, rtol=1e-5, atol=1e-7)
    assert (got[0, ::3] == 0).all() and np.isnan(got[1]).all()
    assert got[2, 7] == 1.0 and (np.delete(got[2], 7) == 0).all()


def test_l2_norm_is_one_kernel() -> None:
    """ReduceL2 as the frontend writes it: x * x -> reduce_sum -> sqrt fuses into one kernel."""
    g = kiln.Graph("l2")
    x = g.input("x", (5, 33), "float32")
    (sq,) = g.add("mul", [x, x])
    (s,) = g.add("reduce_sum", [sq], axes=(1,), keepdims=True)
    (y,) = g.add("sqrt", [s])
    g.output(y)
    assert len(lower_graph(g).kernels) == 1
    assert_matches_reference(g)


@pytest.mark.parametrize("shape", [(64,), (12,), (3, 64), (15,)])
def test_reductions_to_a_scalar(shape: tuple[int, ...]) -> None:
    """Full reductions (rank-0 outputs), alone and two in one kernel, as a mean loss is."""
    g = kiln.Graph("scalar")
    x, w = g.input("x", shape), g.input("w", shape)
    g.output(kiln.ops.div(kiln.ops.sum(x), kiln.ops.sum(w)), kiln.ops.max(x))
    feeds = {"x": np.random.default_rng(0).random(shape, np.float32) + 0.5,
             "w": np.random.default_rng(1).random(shape, np.float32) + 0.5}
    got = kiln.compile(g)(**feeds)
    for out, ref in zip(got, kiln.run_reference(g, feeds), strict=True):
        np.testing.assert_allclose(out, ref, rtol=1e-6)


@pytest.mark.parametrize("op, n", [("softmax", 1024), ("softmax", 384), ("layer_norm", 640)])
def test_row_kernels_keep_the_row_in_the_output_and_prefetch_the_next(op: str, n: int) -> None:
    """The tir_edit passes on the row template: softmax's e = exp(x - max) is computed in the
    chunks the sum reads (one pass), stored in the output (a match buffer of it, not scratch)
    and every row prefetches the next; the values stay the reference's."""
    g = kiln.Graph(op)
    x = g.input("x", (7, n), "float32")
    rng = np.random.default_rng(3)
    if op == "softmax":
        y = kiln.ops.softmax(x, axis=-1)
    else:
        y = kiln.ops.layer_norm(x, rng.standard_normal(n).astype(np.float32),
                                rng.standard_normal(n).astype(np.float32))
    g.output(y)
    (kernel,) = lower_graph(g).kernels
    text = kernel.func.script()
    assert "llvm.prefetch" in text and "T.min(i0 + 1, 6)" in text
    if op == "softmax":
        assert f"softmax_exp = T.match_buffer(softmax[0:7, 0:{n}]" in text
        exp_at = text.index('T.sblock("softmax_exp")')
        assert text.index('T.sblock("softmax_sum_rf_update")') > exp_at   # same chunk loop
    xs = rng.standard_normal((7, n)).astype(np.float32) * 4
    assert_matches_reference(g, {"x": xs}, rtol=2e-6, atol=1e-6)


def test_softmax_with_a_narrowing_epilogue_keeps_its_scratch_row() -> None:
    """A float16 output cannot hold the float32 row: no aliasing, same values."""
    g = kiln.Graph("softmax16")
    x = g.input("x", (5, 256), "float32")
    g.output(kiln.ops.cast(kiln.ops.softmax(x, axis=-1), "float16"))
    (kernel,) = lower_graph(g).kernels
    assert "T.match_buffer" not in kernel.func.script()
    assert_matches_reference(g, rtol=1e-3, atol=1e-4)
