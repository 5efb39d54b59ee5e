"""A BERT-style transformer encoder built with kiln's Python API (used by the demo and tests)."""

from __future__ import annotations

import numpy as np

import kiln
from kiln import nn


def build_encoder(layers: int = 2, hidden: int = 256, heads: int = 4, ffn: int = 1024,
                  seq: int = 128, batch: int = 1, seed: int = 0) -> kiln.Graph:
    """``layers`` post-norm encoder layers on an input ``x`` of shape [batch, seq, hidden]."""
    rng = np.random.default_rng(seed)
    g = kiln.Graph("encoder")
    y = g.input("x", (batch, seq, hidden), "float32")
    for i in range(layers):
        y = nn.TransformerEncoderLayer(hidden, heads, ffn, rng=rng, name=f"layer{i}")(y)
    g.output(y)
    return g


def build() -> kiln.Graph:
    """The 2-layer encoder of the Foundation issue (hidden 256, 4 heads, FFN 1024, seq 128)."""
    return build_encoder()
