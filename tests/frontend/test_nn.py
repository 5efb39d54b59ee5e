"""nn modules build the graphs their formulas say (checked with plain NumPy)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import kiln
from kiln import nn
from kiln.testing import assert_matches_reference


def test_linear_and_mlp_match_numpy() -> None:
    rng = np.random.default_rng(0)
    g = kiln.Graph()
    x = g.input("x", (3, 8), "float32")
    mlp = nn.MLP([8, 16, 4], activation="relu", rng=rng)
    g.output(mlp(x))
    xv = rng.standard_normal((3, 8)).astype(np.float32)
    l1, l2 = mlp.layers
    want = np.maximum(xv @ l1.weight.T + l1.bias, 0) @ l2.weight.T + l2.bias
    np.testing.assert_allclose(kiln.run_reference(g, x=xv)[0], want, rtol=1e-5, atol=1e-6)
    assert_matches_reference(g, {"x": xv}, rtol=1e-5, atol=1e-5)


def test_linear_rejects_wrong_weight_shape() -> None:
    with pytest.raises(kiln.ModelError, match=r"must be \[4, 3\]"):
        nn.Linear(3, 4, weight=np.zeros((3, 4), np.float32))
    with pytest.raises(kiln.ModelError, match="unknown activation"):
        nn.MLP([2, 2], activation="swish")


def test_multihead_attention_matches_numpy() -> None:
    rng = np.random.default_rng(1)
    b, t, d, h = 2, 5, 12, 3
    g = kiln.Graph()
    x = g.input("x", (b, t, d), "float32")
    mha = nn.MultiheadAttention(d, h, rng=rng)
    mask = np.triu(np.full((t, t), -1e9, np.float32), 1)       # causal, additive
    g.output(mha(x, mask))
    xv = rng.standard_normal((b, t, d)).astype(np.float32)

    def proj(lin: nn.Linear, v: np.ndarray) -> np.ndarray:
        return (v @ lin.weight.T + lin.bias).reshape(b, t, h, d // h).transpose(0, 2, 1, 3)

    q, k, v = proj(mha.q, xv), proj(mha.k, xv), proj(mha.v, xv)
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d // h) + mask
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    ctx = (p @ v).transpose(0, 2, 1, 3).reshape(b, t, d)
    want = ctx @ mha.out.weight.T + mha.out.bias
    np.testing.assert_allclose(kiln.run_reference(g, x=xv)[0], want, rtol=1e-4, atol=1e-5)
    assert_matches_reference(g, {"x": xv}, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_compiles_and_matches(norm_first: bool) -> None:
    g = kiln.Graph()
    x = g.input("x", (1, 9, 16), "float32")
    g.output(nn.TransformerEncoderLayer(16, 2, 24, norm_first=norm_first,
                                        rng=np.random.default_rng(2))(x))
    assert_matches_reference(g, rtol=1e-4, atol=1e-4)
