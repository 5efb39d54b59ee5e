"""kiln.frontend.torch: torch models and ATen ops imported, compiled, checked against torch.

Every case runs the torch module, the reference interpreter on the imported graph and the
library compiled for x86, on odd shapes. Needs torch (``make test-torch``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest

import kiln
from kiln.testing import relative_error

pytestmark = [pytest.mark.torch,
              # torch's own deprecation inside torch.export, not kiln's
              pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")]
torch = pytest.importorskip("torch")
nn, F = torch.nn, torch.nn.functional
from torch.export import Dim  # noqa: E402  (after the importorskip)

from kiln.frontend.torch import from_torch, supported_ops  # noqa: E402

TOL = 2e-6      # max |kiln - torch| / max |torch| for float32


class Fn(nn.Module):
    """A module around a function of tensors (one case of the per-op table)."""

    def __init__(self, fn: Callable[..., object]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *xs: torch.Tensor) -> object:
        return self.fn(*xs)


def _flat(out: object) -> list[np.ndarray]:
    if isinstance(out, torch.Tensor):
        return [out.detach().numpy()]
    return [a for o in out for a in _flat(o)]


def check(model: nn.Module, inputs: Sequence[torch.Tensor], tol: float = TOL) -> None:
    """torch == reference interpreter == compiled library, within ``tol``."""
    model = model.eval()
    g = from_torch(model, tuple(inputs))
    with torch.no_grad():
        want = _flat(model(*inputs))
    feeds = {v.name: x.numpy() for v, x in zip(g.inputs, inputs, strict=True)}
    runs = {"reference": kiln.run_reference(g, feeds),
            "x86": kiln.compile(g, target="x86")(**feeds)}
    for name, got in runs.items():
        assert len(got) == len(want), name
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            assert a.shape == b.shape, (name, i, a.shape, b.shape)
            assert a.dtype == b.dtype, (name, i, a.dtype, b.dtype)
            if b.dtype.kind in "biu":
                np.testing.assert_array_equal(a, b, err_msg=f"{name} output {i}")
            else:
                assert relative_error(a, b) <= tol, (name, i, relative_error(a, b))


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# -- a transformer block ------------------------------------------------------------------------
class Block(nn.Module):
    """Pre-norm transformer block: multi-head self-attention (SDPA) with a padding or causal
    mask, residuals, an MLP with GELU; dropout, which eval() turns off."""

    def __init__(self, d: int = 24, heads: int = 3, causal: bool = False) -> None:
        super().__init__()
        self.heads, self.causal = heads, causal
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.drop = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2)
                   for z in self.qkv(self.ln1(x)).split(d, dim=-1))
        m = None if mask is None else mask[:, None, None, :]
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=m, is_causal=self.causal)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(b, t, d)))
        return x + self.drop(self.mlp(self.ln2(x)))


# the reference's softmax over a row of -inf is NaN before the where that zeroes it
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_transformer_block_with_padding_mask() -> None:
    torch.manual_seed(0)
    x = randn(3, 7, 24)
    mask = torch.rand(3, 7, generator=torch.Generator().manual_seed(1)) > 0.3
    mask[0, 0] = True
    mask[2] = False            # a sequence with every key hidden: torch gives zeros there
    check(Block(), [x, mask])


def test_transformer_block_causal() -> None:
    torch.manual_seed(1)
    check(Block(causal=True), [randn(2, 9, 24)])


def test_torch_encoder_layer_and_multihead_attention() -> None:
    """torch's own layers: nn.TransformerEncoderLayer with a causal and a padding mask, and
    nn.MultiheadAttention returning its averaged attention weights too."""
    torch.manual_seed(7)
    layer = nn.TransformerEncoderLayer(24, 3, 40, dropout=0.1, batch_first=True).eval()
    mha = nn.MultiheadAttention(24, 4, batch_first=True).eval()
    causal = torch.ones(7, 7, dtype=torch.bool).triu(1)        # True: may not attend

    def fn(x: torch.Tensor, pad: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y = layer(x, src_mask=causal, src_key_padding_mask=pad)
        return (y, *mha(y, x, x, key_padding_mask=pad))
    pad = torch.zeros(2, 7, dtype=torch.bool)
    pad[1, 4:] = True
    check(Fn(fn), [randn(2, 7, 24), pad])


class TinyLM(nn.Module):
    """Token and position embeddings (arange over the sequence), a causal block, a tied
    LM head and log-softmax."""

    def __init__(self, vocab: int = 37, d: int = 24) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(64, d)
        self.block, self.norm = Block(d, causal=True), nn.LayerNorm(d)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tok(ids) + self.pos(torch.arange(ids.shape[1]))
        h = self.norm(self.block(x))
        return F.log_softmax(h @ self.tok.weight.T, dim=-1)


def test_tiny_lm() -> None:
    torch.manual_seed(2)
    ids = torch.randint(0, 37, (2, 11), generator=torch.Generator().manual_seed(3))
    check(TinyLM(), [ids])


def test_symbolic_batch_and_sequence_one_library() -> None:
    """dynamic_shapes' Dims become kiln's symbolic dims; one library runs every size."""
    torch.manual_seed(4)
    model = TinyLM().eval()
    ids = torch.randint(0, 37, (2, 11))
    g = from_torch(model, (ids,), {"ids": {0: Dim("batch"), 1: Dim("seq", max=64)}})
    assert g.inputs[0].shape == ("batch", "seq")
    lib = kiln.compile(g, target="x86")
    for b, t in ((1, 5), (3, 17), (2, 64)):
        ids = torch.randint(0, 37, (b, t), generator=torch.Generator().manual_seed(t))
        with torch.no_grad():
            want = model(ids).numpy()
        (got,) = lib(ids=ids.numpy())
        assert got.shape == (b, t, 37)
        assert relative_error(got, want) <= TOL, (b, t)


class Scale(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.relu() * 2


def test_unnamed_symbolic_dims_are_named_after_the_input() -> None:
    ep = torch.export.export(Scale(), (randn(4, 6),), dynamic_shapes={"x": {0: Dim.AUTO}})
    g = from_torch(ep)
    assert g.inputs[0].shape == ("x_dim0", 6)
    assert g.inputs[0].name == "x"


# -- a small CNN --------------------------------------------------------------------------------
class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=2), nn.GroupNorm(4, 16), nn.SiLU(),
            nn.Conv2d(16, 16, 3, padding=2, dilation=2, groups=16),        # depthwise
            nn.BatchNorm2d(16), nn.Hardswish(),
            nn.AvgPool2d(3, stride=1, padding=1))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2),
                                  nn.Linear(16, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def test_small_cnn() -> None:
    torch.manual_seed(5)
    model = SmallCNN()
    for m in model.modules():          # trained-looking statistics, not 0 and 1
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    check(model, [randn(2, 3, 17, 19)])


def test_conv_transpose_upsample_and_conv1d() -> None:
    torch.manual_seed(6)
    up = nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1)
    conv1d = nn.Conv1d(4, 5, 3, padding=1, stride=2)

    def fn(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (up(x), F.interpolate(x, scale_factor=2, mode="nearest"),
                F.interpolate(x, size=(9, 14), mode="bilinear", align_corners=False),
                F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True),
                conv1d(x.flatten(2)))
    check(Fn(fn), [randn(2, 4, 5, 7)])


# -- ATen ops one at a time ---------------------------------------------------------------------
X, Y = randn(3, 5, 7, seed=10), randn(5, 7, seed=11)
IDS = torch.tensor([[0, 4, 2], [3, 3, 1]])
INTS = torch.tensor([[7, -7, 5], [-3, 0, 9]])
EMB = nn.Embedding(5, 6)
Q, K, V = randn(2, 4, 5, 8, seed=12), randn(2, 4, 6, 8, seed=13), randn(2, 4, 6, 8, seed=14)
KV2 = randn(2, 2, 6, 8, seed=15)
MASK = randn(5, 6, seed=16)

OPS: dict[str, tuple[Callable[..., object], list[torch.Tensor]]] = {
    # arithmetic, tensor and scalar, broadcasting and type promotion
    "add_sub_mul_div": (lambda x, y: (x + y, x - 2.5, 3 - x, x * y, x / y, 1 / (y.abs() + 1),
                                      torch.add(x, y, alpha=2), torch.sub(x, y, alpha=0.5)),
                        [X, Y]),
    "int_promotion": (lambda a: (a * 1.5, a / 2, a // 2, a % 4, a + True, a.float() // 2,
                                 torch.div(a, 4, rounding_mode="trunc"), torch.fmod(a, 3)),
                      [INTS]),
    "pow": (lambda x: (x ** 2, x.abs() ** 0.5, x.abs() ** 1.7, torch.pow(2.0, x), x ** 3),
            [X]),
    "activations": (lambda x: (F.relu(x), F.gelu(x), F.gelu(x, approximate="tanh"), F.silu(x),
                               torch.tanh(x), torch.sigmoid(x), F.leaky_relu(x, 0.1),
                               F.elu(x), F.selu(x), F.softplus(x), F.softplus(x, beta=2),
                               F.softplus(x, beta=3, threshold=1), F.logsigmoid(x),
                               F.hardswish(x), F.hardsigmoid(x), F.hardtanh(x), F.mish(x),
                               x.clamp(-0.5, 0.7), x.clamp(min=0)), [X]),
    "unary_math": (lambda x: (x.exp(), x.abs().sqrt(), (x.abs() + 0.1).rsqrt(),
                              (x.abs() + 0.1).log(), torch.erf(x), x.neg(), x.sign(),
                              x.floor(), x.ceil(), x.round(), x.trunc(), x.sin(), x.cos(),
                              x.reciprocal(), torch.log1p(x.abs() * 1e-6), torch.log1p(x.abs()),
                              torch.expm1(x * 1e-6), torch.expm1(x)), [X]),
    "compare_and_logic": (lambda x, y: (x > y, x <= 0.2, x == x, x != y, ~(x > 0),
                                        (x > 0) & (y < 0), (x > 0) | (y < 0), (x > 0) ^ (y > 0),
                                        torch.maximum(x, y), torch.minimum(x, y)), [X, Y]),
    "where_masked_fill": (lambda x, y: (torch.where(x > y, x, y), torch.where(x > 0, x, 0.0),
                                        x.masked_fill(y > 0.5, -1e4),
                                        x.masked_fill(x < 0, float("-inf")).exp()), [X, Y]),
    "casts": (lambda x, a: (x.to(torch.int32), a.float() * x[0, :2, :3], (x > 0).long(),
                            x.double().sum(-1).float(), a.to(torch.int32) + 1), [X, INTS]),
    # reductions
    "reductions": (lambda x: (x.mean(-1), x.sum((0, 2), keepdim=True), x.amax(1), x.amin(-1),
                              x.max(dim=1).values, x.max(dim=1).indices, x.argmax(-1),
                              x.argmin(), x.var(-1), x.std(1, keepdim=True), x.sum(),
                              (x > 1).any(-1), (x > -2).all(1), x.logsumexp(-1), x.mean(),
                              x.prod(-1), torch.linalg.vector_norm(x, dim=-1),
                              F.normalize(x, dim=1)), [X]),
    "softmax": (lambda x: (x.softmax(-1), x.softmax(1), F.log_softmax(x, dim=-1)), [X]),
    "scans_topk": (lambda x: (x.cumsum(1), x.cumprod(-1), torch.topk(x, 3).values,
                              torch.topk(x, 2, dim=1, largest=False).indices), [X]),
    "norms": (lambda x: (F.layer_norm(x, (7,)), F.layer_norm(x, (5, 7)),
                         F.layer_norm(x, (7,), torch.linspace(0.5, 2, 7), torch.ones(7) * 0.1),
                         F.rms_norm(x, (7,), eps=1e-6)), [X]),
    # data movement and indexing
    "views": (lambda x: (x.view(15, 7), x.reshape(-1), x.permute(2, 0, 1), x.transpose(0, 1),
                         x.unsqueeze(1), x[:, :1].squeeze(1), x[:, None].expand(3, 4, 5, 7),
                         x.flatten(1), x.t() if x.dim() == 2 else x.mT, x.contiguous()), [X]),
    "slicing": (lambda x: (x[:, 1:4], x[..., ::2], x[:, -2:], x[1], x[:, 2, 1:], x.narrow(2, 3, 4),
                           x.flip(1), x[:, [0, 3]], x[[2, 0]], x[[0, 2], [4, 1]],
                           x[torch.tensor([[1], [2]]), torch.tensor([0, -1, 3])]), [X]),
    "joining": (lambda x, y: (torch.cat([x, y[None]], 0), torch.stack([x[0], y], -1),
                              *x.split(3, dim=-1), *x.chunk(2, dim=1), *x.unbind(0),
                              x.repeat(2, 1, 3), y.repeat(2, 1, 1)), [X, Y]),
    "gather_embedding": (lambda ids, x: (EMB(ids), x.gather(2, ids[:1, None, :].expand(3, 5, 3)),
                                         torch.index_select(x, 1, ids[1])), [IDS, X]),
    "pad": (lambda x: (F.pad(x, (1, 2)), F.pad(x, (1, 0, 2, 1), value=0.5),
                       F.pad(x[None], (2, 1, 1, 2), mode="reflect"),
                       F.pad(x[None], (1, 1, 0, 2), mode="replicate")), [X]),
    "constants": (lambda x: (x + torch.arange(7), x * torch.full((5, 1), 0.5),
                             torch.zeros_like(x) + torch.ones(7), torch.arange(2, 9, 3),
                             torch.arange(0.5, 3.0, 0.5) * x[0, 0, :5],
                             x.new_full((2,), 3.0)), [X]),
    # GEMMs and attention
    "gemm": (lambda x, y: (x @ y.T, torch.mm(y, y.T), torch.bmm(x, x.transpose(1, 2)),
                           torch.matmul(y[0], y.T), torch.matmul(x, y[0]),
                           torch.addmm(y[:, 0], y, y.T, beta=0.5, alpha=2.0),
                           torch.baddbmm(x[:, :, :5], x, x.transpose(1, 2), alpha=0.5),
                           F.linear(x, y, y[:, 0])), [X, Y]),
    "attention": (lambda q, k, v, kv2: (
        F.scaled_dot_product_attention(q, k, v),
        F.scaled_dot_product_attention(q, k, v, attn_mask=MASK),
        F.scaled_dot_product_attention(q, k, v, attn_mask=MASK > 0),
        F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.3),
        F.scaled_dot_product_attention(q, kv2, kv2, enable_gqa=True)), [Q, K, V, KV2]),
    "pooling": (lambda x: (F.max_pool2d(x, 3, stride=2, padding=1),
                           F.max_pool2d(x, 2, ceil_mode=True), F.avg_pool2d(x, 2),
                           F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False),
                           F.avg_pool2d(x, 3, stride=2, padding=1, ceil_mode=True),
                           F.adaptive_avg_pool2d(x, (1, 2)), F.adaptive_max_pool2d(x, 1),
                           F.avg_pool1d(x.flatten(2), 3), F.max_pool1d(x.flatten(2), 2),
                           F.avg_pool2d(x, 2, divisor_override=3)),
                [randn(2, 3, 7, 10, seed=17)]),
    "pooling_1d_3d": (lambda x: (F.avg_pool3d(x, 2), F.max_pool3d(x, (1, 2, 3), stride=1),
                                 F.adaptive_avg_pool1d(x.flatten(2), 5),
                                 F.interpolate(x.flatten(2), scale_factor=3, mode="nearest"),
                                 F.interpolate(x.flatten(2), size=17, mode="linear"),
                                 F.pad(x.flatten(2), (2, 1), mode="reflect"),
                                 F.pad(x, (1, 0, 0, 2, 1, 1), mode="replicate")),
                      [randn(2, 3, 4, 5, 6, seed=18)]),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_op(name: str) -> None:
    fn, inputs = OPS[name]
    tol = {"unary_math": 4e-6, "activations": 4e-6, "reductions": 4e-6}.get(name, TOL)
    check(Fn(fn), inputs, tol)


def test_batch_norm_with_runtime_statistics() -> None:
    """Statistics that are inputs rather than parameters take the unfolded path."""
    def fn(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, mean, var, torch.ones(3) * 1.5, None, training=False, eps=1e-3)
    check(Fn(fn), [randn(2, 3, 4, 5), randn(3, seed=1), randn(3, seed=2).abs() + 0.5])


def test_training_mode_dropout_in_attention_is_refused() -> None:
    mha = nn.MultiheadAttention(8, 2, dropout=0.5, batch_first=True).train()
    with pytest.raises(kiln.ModelError, match=r"node scaled_dot_product_attention.*dropout_p"):
        from_torch(Fn(lambda x: mha(x, x, x, need_weights=False)[0]), (randn(2, 3, 8),))


# -- errors -------------------------------------------------------------------------------------
class Unsupported(nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        s = torch.sort(x).values + torch.sort(y).values
        return torch.atan2(s, y).relu()


def test_unsupported_ops_are_listed_at_once_with_their_nodes() -> None:
    with pytest.raises(kiln.ModelError) as err:
        from_torch(Unsupported(), (randn(3, 4), randn(3, 4)))
    msg = str(err.value)
    assert "2 torch ops" in msg, msg
    assert "aten.sort.default (nodes sort, sort_1)" in msg, msg
    assert "aten.atan2.default (node atan2)" in msg, msg
    assert "relu" not in msg, msg            # supported ops are not listed


def test_training_mode_asks_for_eval() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)).train()
    with pytest.raises(kiln.ModelError, match=r"model\.eval\(\)"):
        from_torch(model, (randn(3, 4),))


def test_other_inputs_are_rejected() -> None:
    with pytest.raises(kiln.ModelError, match="nn.Module or a torch.export.ExportedProgram"):
        from_torch(lambda x: x, (randn(2),))


def test_supported_ops_lists_the_table() -> None:
    ops = supported_ops()
    assert "aten.convolution.default" in ops and "aten.scaled_dot_product_attention.default" \
        in ops
    assert ops == sorted(ops) and len(ops) > 100
