"""Small nn-style modules that build graph nodes from NumPy weights.

A module holds its weights as NumPy arrays (PyTorch layouts, so ``state_dict`` tensors drop in)
and, when called on a ``Value``, appends its ops to that value's graph:

    layer = nn.TransformerEncoderLayer(256, heads=4, ffn=1024, rng=np.random.default_rng(0))
    y = layer(x)          # x: Value [batch, seq, 256]
"""

from __future__ import annotations

import math

import numpy as np

from kiln.errors import ModelError
from kiln.frontend import builder as ops
from kiln.ir.graph import Value


def _rng(rng: np.random.Generator | None) -> np.random.Generator:
    return rng if rng is not None else np.random.default_rng(0)


def _uniform(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    bound = 1.0 / math.sqrt(fan_in)   # PyTorch's default init for Linear and Conv
    return rng.uniform(-bound, bound, size=shape).astype(np.float32)


class Module:
    """Base class: subclasses implement ``forward(x: Value) -> Value``. ``name`` prefixes the
    names of the module's weights in the graph (``layer0.attn.q.weight``)."""

    name: str = "module"

    def __call__(self, x: Value, *args: object, **kwargs: object) -> Value:
        return self.forward(x, *args, **kwargs)

    def forward(self, x: Value) -> Value:
        raise NotImplementedError

    def param(self, x: Value, data: np.ndarray, what: str) -> Value:
        """``data`` as a constant of ``x``'s graph, named after this module."""
        return x.graph.constant(data, name=f"{self.name}.{what}")


class Linear(Module):
    """``y = x @ weight.T + bias`` with weight [out, in] (PyTorch layout)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 weight: np.ndarray | None = None, bias_value: np.ndarray | None = None,
                 rng: np.random.Generator | None = None, name: str = "linear") -> None:
        r = _rng(rng)
        self.name = name
        self.weight = weight if weight is not None else _uniform(r, (out_features, in_features),
                                                                 in_features)
        if self.weight.shape != (out_features, in_features):
            raise ModelError(f"Linear weight must be [{out_features}, {in_features}], "
                             f"got {list(self.weight.shape)}")
        self.bias = None
        if bias:
            self.bias = bias_value if bias_value is not None else _uniform(r, (out_features,),
                                                                           in_features)

    def forward(self, x: Value) -> Value:
        y = ops.dense(x, self.param(x, self.weight, "weight"))
        return ops.add(y, self.param(x, self.bias, "bias")) if self.bias is not None else y


class LayerNorm(Module):
    def __init__(self, dim: int, eps: float = 1e-5, weight: np.ndarray | None = None,
                 bias: np.ndarray | None = None, name: str = "norm") -> None:
        self.name = name
        self.weight = weight if weight is not None else np.ones(dim, np.float32)
        self.bias = bias if bias is not None else np.zeros(dim, np.float32)
        self.eps = eps

    def forward(self, x: Value) -> Value:
        return ops.layer_norm(x, self.param(x, self.weight, "weight"),
                              self.param(x, self.bias, "bias"), axis=-1, epsilon=self.eps)


_ACTIVATIONS = {"gelu": ops.gelu, "relu": ops.relu, "tanh": ops.tanh, "sigmoid": ops.sigmoid}


class MLP(Module):
    """Linear layers of the given widths with an activation between them (not after the last)."""

    def __init__(self, dims: list[int], activation: str = "gelu",
                 rng: np.random.Generator | None = None, name: str = "mlp") -> None:
        if activation not in _ACTIVATIONS:
            raise ModelError(f"unknown activation {activation!r}; "
                             f"choose one of {sorted(_ACTIVATIONS)}")
        r = _rng(rng)
        self.name = name
        self.layers = [Linear(a, b, rng=r, name=f"{name}.{i}")
                       for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True))]
        self.act = _ACTIVATIONS[activation]

    def forward(self, x: Value) -> Value:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = self.act(x)
        return x


class Conv2d(Module):
    """2-D convolution, NCHW, weight [out, in / groups, kh, kw]."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 stride: int = 1, padding: int = 0, groups: int = 1, bias: bool = True,
                 rng: np.random.Generator | None = None, name: str = "conv") -> None:
        r = _rng(rng)
        self.name = name
        fan_in = in_channels // groups * kernel_size * kernel_size
        self.weight = _uniform(r, (out_channels, in_channels // groups, kernel_size,
                                   kernel_size), fan_in)
        self.bias = _uniform(r, (out_channels,), fan_in) if bias else None
        self.stride, self.padding, self.groups = stride, padding, groups

    def forward(self, x: Value) -> Value:
        y = ops.conv2d(x, self.param(x, self.weight, "weight"), stride=self.stride,
                       padding=self.padding, groups=self.groups)
        if self.bias is not None:
            y = ops.add(y, self.param(x, self.bias.reshape(-1, 1, 1), "bias"))
        return y


class MultiheadAttention(Module):
    """Self-attention: ``softmax(Q K^T / sqrt(d) + mask) V`` over ``heads`` heads, then an
    output projection. ``x`` is [batch, seq, dim]; ``mask`` (optional) is additive and
    broadcasts to [batch, heads, seq, seq]."""

    def __init__(self, dim: int, heads: int, rng: np.random.Generator | None = None,
                 name: str = "attn") -> None:
        if dim % heads:
            raise ModelError(f"MultiheadAttention: dim {dim} is not divisible by heads {heads}")
        r = _rng(rng)
        self.dim, self.heads, self.name = dim, heads, name
        self.q, self.k, self.v, self.out = (Linear(dim, dim, rng=r, name=f"{name}.{p}")
                                            for p in ("q", "k", "v", "out"))

    def forward(self, x: Value, mask: Value | np.ndarray | None = None) -> Value:
        b, t, _ = x.shape
        h, d = self.heads, self.dim // self.heads

        def heads(y: Value, perm: tuple[int, ...]) -> Value:
            return ops.transpose(ops.reshape(y, (b, t, h, d)), perm)

        q = heads(self.q(x), (0, 2, 1, 3))                # [b, h, t, d]
        k = heads(self.k(x), (0, 2, 3, 1))                # [b, h, d, t]
        v = heads(self.v(x), (0, 2, 1, 3))                # [b, h, t, d]
        scores = ops.mul(ops.matmul(q, k), 1.0 / math.sqrt(d))
        if mask is not None:
            scores = ops.add(scores, mask)
        ctx = ops.matmul(ops.softmax(scores, axis=-1), v)  # [b, h, t, d]
        ctx = ops.reshape(ops.transpose(ctx, (0, 2, 1, 3)), (b, t, self.dim))
        return self.out(ctx)


class TransformerEncoderLayer(Module):
    """A BERT-style (post-norm) encoder layer:
    ``x = LN(x + MHA(x)); x = LN(x + W2 gelu(W1 x))``; ``norm_first`` gives the pre-norm form."""

    def __init__(self, dim: int, heads: int, ffn: int, eps: float = 1e-5,
                 norm_first: bool = False, rng: np.random.Generator | None = None,
                 name: str = "layer") -> None:
        r = _rng(rng)
        self.name = name
        self.attn = MultiheadAttention(dim, heads, rng=r, name=f"{name}.attn")
        self.ffn = MLP([dim, ffn, dim], activation="gelu", rng=r, name=f"{name}.ffn")
        self.norm1 = LayerNorm(dim, eps, name=f"{name}.norm1")
        self.norm2 = LayerNorm(dim, eps, name=f"{name}.norm2")
        for norm in (self.norm1, self.norm2):   # non-trivial affine params, so tests see them
            norm.weight = (1.0 + 0.1 * r.standard_normal(dim)).astype(np.float32)
            norm.bias = (0.1 * r.standard_normal(dim)).astype(np.float32)
        self.norm_first = norm_first

    def forward(self, x: Value, mask: Value | np.ndarray | None = None) -> Value:
        if self.norm_first:
            x = ops.add(x, self.attn(self.norm1(x), mask))
            return ops.add(x, self.ffn(self.norm2(x)))
        x = self.norm1(ops.add(x, self.attn(x, mask)))
        return self.norm2(ops.add(x, self.ffn(x)))
