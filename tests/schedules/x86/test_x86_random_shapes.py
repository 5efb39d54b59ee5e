"""Property tests: random shapes and broadcasts through fused chains, compiled vs reference."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kiln
from kiln import ops
from kiln.testing import assert_matches_reference

dims = st.integers(min_value=1, max_value=40)
# derandomized: CI sees the same cases every run (a failure reproduces); explore more locally
# with a larger max_examples and derandomize=False
SETTINGS = settings(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def broadcast_pair(draw) -> tuple[tuple[int, ...], tuple[int, ...]]:
    shape = tuple(draw(st.lists(dims, min_size=1, max_size=4)))
    other = tuple(d if draw(st.booleans()) else 1 for d in shape[draw(st.integers(0, len(shape)
                                                                                   - 1)):])
    return (shape, other) if draw(st.booleans()) else (other, shape)


@settings(SETTINGS, max_examples=12)
@given(shapes=broadcast_pair(), op=st.sampled_from(["add", "mul", "sub", "maximum"]),
       act=st.sampled_from(["relu", "tanh", "sigmoid", "gelu", "exp"]))
def test_broadcast_chain(shapes, op: str, act: str) -> None:
    g = kiln.Graph()
    a, b = g.input("a", shapes[0], "float32"), g.input("b", shapes[1], "float32")
    g.output(getattr(ops, act)(getattr(ops, op)(a, b)))
    assert_matches_reference(g, rtol=2e-5, atol=2e-6)


@settings(SETTINGS, max_examples=10)
@given(shape=st.lists(dims, min_size=2, max_size=3), data=st.data())
def test_row_reductions(shape: list[int], data) -> None:
    axis = data.draw(st.integers(-len(shape), -1))
    rng = np.random.default_rng(0)
    gamma = rng.standard_normal(shape[-1]).astype(np.float32)
    g = kiln.Graph()
    x = g.input("x", tuple(shape), "float32")
    g.output(ops.softmax(x, axis), ops.layer_norm(x, gamma, np.zeros_like(gamma)),
             ops.mean(x, axes=axis, keepdims=True))
    assert_matches_reference(g, rtol=1e-4, atol=1e-5)


@settings(SETTINGS, max_examples=10)
@given(m=dims, n=dims, k=dims)
def test_gemm_any_size(m: int, n: int, k: int) -> None:
    w = np.random.default_rng(1).standard_normal((k, n)).astype(np.float32)
    g = kiln.Graph()
    x = g.input("x", (m, k), "float32")
    g.output(ops.relu(ops.matmul(x, w)), ops.matmul(x, g.input("b", (k, n), "float32")))
    assert_matches_reference(g, rtol=1e-4, atol=1e-4)
