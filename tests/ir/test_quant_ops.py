"""The quantization ops: NumPy references against hand-computed values, the fixed-point
requantisation helper against a float reference across many scale ratios, and each op compiled
for x86 against its reference on ragged shapes."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln.errors import ModelError
from kiln.ir.interpreter import run_reference
from kiln.ir.ops.quant import (
    fixed_point_multiply_ref,
    quantize_multiplier,
    requantize_steps,
)
from kiln.testing import assert_matches_reference


def _graph(op: str, inputs: list[tuple[str, tuple[int, ...], str]],
           consts: tuple[np.ndarray, ...] = (), **attrs: object) -> kiln.Graph:
    """One ``op`` node on graph inputs (name, shape, dtype) followed by constants."""
    g = kiln.Graph(op)
    vals = [g.input(name, shape, dtype) for name, shape, dtype in inputs]
    vals += [g.constant(c, name=f"c{i}", dtype=c.dtype) for i, c in enumerate(consts)]
    for out in g.add(op, vals, **attrs):
        g.output(out)
    return g


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# -- references -------------------------------------------------------------------------------
def test_quantize_rounds_half_to_even_and_saturates() -> None:
    g = _graph("quantize", [("x", (8,), "float32")],
               (np.array(0.5, np.float32), np.array(10, np.uint8)), dtype="uint8")
    x = np.array([0.25, 0.75, 1.25, -0.25, -5.5, -100.0, 200.0, 1e9], np.float32)
    (y,) = run_reference(g, {"x": x})
    # x / 0.5 = 0.5, 1.5, 2.5, -0.5 -> 0, 2, 2, -0 (half to even), then + 10, clamped
    np.testing.assert_array_equal(y, [10, 12, 12, 10, 0, 0, 255, 255])


def test_quantize_blocked_reads_one_scale_per_block() -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    scale = np.array([[1.0, 2.0], [4.0, 8.0], [1.0, 1.0]], np.float32)
    g = _graph("quantize", [("x", (3, 4), "float32")],
               (scale, np.zeros((3, 2), np.int8)), dtype="int8", axis=1, block_size=2)
    (y,) = run_reference(g, {"x": x})
    want = np.rint(x / np.repeat(scale, 2, axis=1)).astype(np.int8)
    np.testing.assert_array_equal(y, want)


def test_matmul_integer_reference_subtracts_zero_points() -> None:
    a = np.array([[1, 2], [3, 4]], np.uint8)
    b = np.array([[5, 6], [7, 8]], np.int8)
    g = _graph("matmul_integer", [("a", (2, 2), "uint8"), ("b", (2, 2), "int8")],
               (np.array([[1], [2]], np.uint8), np.array([1, -1], np.int8)))
    (y,) = run_reference(g, {"a": a, "b": b})
    want = (a.astype(np.int64) - [[1], [2]]) @ (b.astype(np.int64) - [1, -1])
    np.testing.assert_array_equal(y, want)
    assert y.dtype == np.int32


def test_bad_zero_point_dtype_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="zero point"):
        _graph("quantize", [("x", (3,), "float32")],
               (np.array(0.5, np.float32), np.array(0, np.int8)), dtype="uint8")


# -- the requantisation helper ------------------------------------------------------------------
def test_quantize_multiplier_represents_the_ratio() -> None:
    ratios = np.geomspace(1e-9, 1e6, 500)
    m, s = quantize_multiplier(ratios)
    assert np.all((m >= 1 << 30) & (m.astype(np.int64) < 1 << 31))
    np.testing.assert_allclose(m * np.exp2(s.astype(np.float64) - 31), ratios, rtol=2.0**-30)


@pytest.mark.parametrize("bound", [255, 1 << 16, 1 << 24])
def test_requantize_steps_match_float_rounding(bound: int) -> None:
    """Across 400 ratios from 1e-6 to 300 and inputs up to ``bound`` (a zero-point-centred
    int8 value, an int16 one, a GEMM accumulator), the integer steps give the float product
    rounded half away from zero, off by one only within the kept precision of a tie."""
    rng = _rng(bound)
    top = min(300.0, 2.0**30 / bound)        # a left shift of the input must not saturate
    ratios = np.exp(rng.uniform(np.log(1e-6), np.log(top), 400))
    x = rng.integers(-bound, bound + 1, (400, 256))
    x[:, :3] = [bound, -bound, 0]
    got = np.empty(x.shape, np.int64)
    precision = np.full((len(ratios), 1), 1e-6)
    for i, r in enumerate(ratios):
        v = x[i].astype(np.int32)
        steps = requantize_steps(r, bound)
        for m, s in steps:
            v = fixed_point_multiply_ref(v, m, s)
        got[i] = v
        if len(steps) == 2:        # L fractional bits kept: each step rounds within 2^-L
            precision[i] = 2.0 ** (2 + int(steps[1][1]) - 1)
    exact = x * ratios[:, None]
    want = np.sign(exact) * np.floor(np.abs(exact) + 0.5)
    fits = np.abs(exact) < 2.0**31 - 1
    assert np.all(np.abs(got - want)[fits] <= 1)
    precision = precision + np.abs(exact) * 2.0**-29      # the Q31 multiplier's own error
    near_tie = np.abs(np.abs(exact - np.trunc(exact)) - 0.5) <= precision
    assert np.all((got == want)[fits & ~near_tie])


def test_one_step_rounds_twice_below_one_half() -> None:
    """Why ``requantize_steps`` keeps fractional bits: at a ratio of 0.3, one step rounds
    1 * 0.6 up to 1 before halving it; two steps give round(0.3) = 0."""
    m, s = quantize_multiplier(np.array(0.3))
    assert fixed_point_multiply_ref(np.array([1], np.int32), m, s)[0] == 1
    v = np.array([1], np.int32)
    for m, s in requantize_steps(0.3, 255):
        v = fixed_point_multiply_ref(v, m, s)
    assert v[0] == 0


def test_fixed_point_multiply_ties_round_away_from_zero() -> None:
    m, s = quantize_multiplier(np.array(0.25))
    x = np.array([2, 6, 10, -2, -6, -10], np.int32)
    np.testing.assert_array_equal(fixed_point_multiply_ref(x, m, s), [1, 2, 3, -1, -2, -3])


# -- compiled against the references ----------------------------------------------------------
@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_quantize_per_axis_compiled(dtype: str) -> None:
    rng = _rng(1)
    scale = rng.uniform(0.01, 0.1, (1, 5, 1)).astype(np.float32)
    zp = rng.integers(-20 if dtype == "int8" else 0, 20, (1, 5, 1)).astype(dtype)
    g = _graph("quantize", [("x", (3, 5, 7), "float32")], (scale, zp), dtype=dtype)
    x = (rng.standard_normal((3, 5, 7)) * 5).astype(np.float32)
    assert_matches_reference(g, {"x": x}, rtol=0, atol=0)


def test_quantize_blocked_runtime_scale_compiled() -> None:
    rng = _rng(2)
    g = _graph("quantize", [("x", (3, 7), "float32"), ("s", (3, 3), "float32"),
                            ("z", (3, 3), "uint8")], dtype="uint8", axis=1, block_size=3)
    feeds = {"x": (rng.standard_normal((3, 7)) * 9).astype(np.float32),
             "s": rng.uniform(0.05, 0.2, (3, 3)).astype(np.float32),
             "z": rng.integers(100, 150, (3, 3)).astype(np.uint8)}
    assert_matches_reference(g, feeds, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int32"])
def test_dequantize_compiled(dtype: str) -> None:
    rng = _rng(3)
    zp = np.zeros((5, 1), dtype) if dtype == "int32" else \
        rng.integers(0, 50, (5, 1)).astype(dtype)
    g = _graph("dequantize", [("x", (3, 5, 7), dtype)],
               (rng.uniform(0.01, 0.1, (5, 1)).astype(np.float32), zp), dtype="float32")
    x = rng.integers(-100 if dtype != "uint8" else 0, 100, (3, 5, 7)).astype(dtype)
    assert_matches_reference(g, {"x": x}, rtol=1e-6, atol=0)


def test_fixed_point_multiply_per_channel_compiled() -> None:
    rng = _rng(4)
    m, s = quantize_multiplier(rng.uniform(1e-4, 40.0, (5, 1)))
    g = _graph("fixed_point_multiply", [("x", (3, 5, 7), "int32")], (m, s))
    x = rng.integers(-(1 << 24), 1 << 24, (3, 5, 7)).astype(np.int32)
    x[0, 0, :3] = [np.iinfo(np.int32).max, np.iinfo(np.int32).min, 0]
    assert_matches_reference(g, {"x": x}, rtol=0, atol=0)
