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


class _Recurrent(Module):
    """PyTorch's ``nn.LSTM`` / ``nn.GRU``: ``num_layers`` stacked layers, each optionally
    bidirectional, with PyTorch's parameter names and layouts (``weight_ih_l0`` [G*H, in],
    ``weight_hh_l0`` [G*H, H], ``bias_ih_l0``, ``bias_hh_l0``, ``..._reverse`` for the second
    direction), so ``load_state_dict`` takes a torch module's ``state_dict()`` (as NumPy).
    Each layer is one input-projection GEMM over all timesteps and one recurrence kernel
    (``ops.lstm`` / ``ops.gru``, as ONNX's LSTM and GRU)."""

    op = ""
    torch_gates: tuple[int, ...] = ()     # PyTorch's gate blocks in ONNX's order

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bidirectional: bool = False, batch_first: bool = False,
                 rng: np.random.Generator | None = None, name: str = "") -> None:
        if input_size < 1 or hidden_size < 1 or num_layers < 1:
            raise ModelError(f"{type(self).__name__} needs input_size, hidden_size and "
                             f"num_layers >= 1, got {input_size}, {hidden_size}, {num_layers}")
        r = _rng(rng)
        self.name = name or self.op
        self.input_size, self.hidden_size = input_size, hidden_size
        self.num_layers, self.directions = num_layers, 2 if bidirectional else 1
        self.batch_first = batch_first
        g = len(self.torch_gates) * hidden_size
        self.params: dict[str, np.ndarray] = {}
        for name_, shape in self._shapes(g).items():
            self.params[name_] = _uniform(r, shape, hidden_size)     # PyTorch's init: 1/sqrt(H)

    def _shapes(self, g: int) -> dict[str, tuple[int, ...]]:
        shapes = {}
        for layer in range(self.num_layers):
            size = self.input_size if layer == 0 else self.hidden_size * self.directions
            for suffix in ("", "_reverse")[:self.directions]:
                shapes[f"weight_ih_l{layer}{suffix}"] = (g, size)
                shapes[f"weight_hh_l{layer}{suffix}"] = (g, self.hidden_size)
                shapes[f"bias_ih_l{layer}{suffix}"] = (g,)
                shapes[f"bias_hh_l{layer}{suffix}"] = (g,)
        return shapes

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Take every parameter from ``state`` (PyTorch names and shapes; tensors may be
        NumPy arrays or anything ``np.asarray`` reads)."""
        shapes = self._shapes(len(self.torch_gates) * self.hidden_size)
        missing = sorted(set(shapes) - set(state))
        extra = sorted(set(state) - set(shapes))
        if missing or extra:
            raise ModelError(f"{type(self).__name__} state: missing {missing}, unexpected "
                             f"{extra}")
        for name_, shape in shapes.items():
            value = np.asarray(state[name_], dtype=np.float32)
            if value.shape != shape:
                raise ModelError(f"{name_} must be {list(shape)}, got {list(value.shape)}")
            self.params[name_] = value

    def _onnx_gates(self, a: np.ndarray) -> np.ndarray:
        blocks = np.split(a, len(self.torch_gates), axis=0)
        return np.concatenate([blocks[i] for i in self.torch_gates], axis=0)

    def _layer_weights(self, layer: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """W [D, G*H, in], R [D, G*H, H], B [D, 2*G*H] of one layer, in ONNX's gate order."""
        ws, rs, bs = [], [], []
        for suffix in ("", "_reverse")[:self.directions]:
            p = {k: self.params[f"{k}_l{layer}{suffix}"]
                 for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
            ws.append(self._onnx_gates(p["weight_ih"]))
            rs.append(self._onnx_gates(p["weight_hh"]))
            bs.append(np.concatenate([self._onnx_gates(p["bias_ih"]),
                                      self._onnx_gates(p["bias_hh"])]))
        return np.stack(ws), np.stack(rs), np.stack(bs)

    def _run(self, x: Value, states: list[Value | None]) -> tuple[Value, list[Value]]:
        """The stacked layers on ``x`` [T, B, in]; ``states``: initial states [L*D, B, H] or
        None each. Returns y [T, B, D*H] and the last states, [L*D, B, H] each."""
        if self.batch_first:
            x = ops.transpose(x, (1, 0, 2))
        if x.type.rank != 3 or x.shape[2] != self.input_size:
            raise ModelError(f"{type(self).__name__} input must be [T, B, {self.input_size}]"
                             f"{' (batch first)' if self.batch_first else ''}, got {x.type}")
        d = self.directions
        last: list[list[Value]] = [[] for _ in states]
        for layer in range(self.num_layers):
            w, r, b = self._layer_weights(layer)
            names = [f"l{layer}.W", f"l{layer}.R", f"l{layer}.B"]
            w, r, b = (self.param(x, a, n) for a, n in zip((w, r, b), names, strict=True))
            init = [ops.slice(s, [layer * d], [(layer + 1) * d], [0]) if s is not None
                    else None for s in states]
            outs = self._layer(x, w, r, b, init, "bidirectional" if d == 2 else "forward")
            y, layer_states = outs[0], outs[1:]
            t, _, batch, h = y.shape              # y [T, D, B, H] -> [T, B, D*H]
            x = ops.reshape(ops.transpose(y, (0, 2, 1, 3)), (t, batch, d * h))
            for acc, s in zip(last, layer_states, strict=True):
                acc.append(s)
        final = [s[0] if len(s) == 1 else ops.concat(s, axis=0) for s in last]
        return (ops.transpose(x, (1, 0, 2)) if self.batch_first else x), final

    def _layer(self, x: Value, w: Value, r: Value, b: Value, init: list[Value | None],
               direction: str) -> list[Value]:
        raise NotImplementedError


class LSTM(_Recurrent):
    """``y, h_n, c_n = lstm(x, h0=None, c0=None)`` as PyTorch's ``nn.LSTM`` (see
    ``_Recurrent``): y [T, B, D*H] ([B, T, D*H] batch first), h_n and c_n [L*D, B, H]."""

    op = "lstm"
    torch_gates = (0, 3, 1, 2)            # PyTorch i, f, g, o -> ONNX i, o, f, c

    def forward(self, x: Value, h0: Value | None = None,
                c0: Value | None = None) -> tuple[Value, Value, Value]:
        y, (h_n, c_n) = self._run(x, [h0, c0])
        return y, h_n, c_n

    def _layer(self, x, w, r, b, init, direction):
        return list(ops.lstm(x, w, r, b, init[0], init[1], direction))


class GRU(_Recurrent):
    """``y, h_n = gru(x, h0=None)`` as PyTorch's ``nn.GRU`` (see ``_Recurrent``): PyTorch
    applies the reset gate after the recurrent product, ONNX's ``linear_before_reset``."""

    op = "gru"
    torch_gates = (1, 0, 2)               # PyTorch r, z, n -> ONNX z, r, h

    def forward(self, x: Value, h0: Value | None = None) -> tuple[Value, Value]:
        y, (h_n,) = self._run(x, [h0])
        return y, h_n

    def _layer(self, x, w, r, b, init, direction):
        return list(ops.gru(x, w, r, b, init[0], direction, linear_before_reset=True))
