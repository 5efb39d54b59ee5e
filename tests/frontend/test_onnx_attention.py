"""ONNX transformer ops of opsets 23-24 (Attention, RMSNormalization, SwiGLU), compiled by kiln
and compared with onnx's reference implementation (onnxruntime may not implement them)."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import kiln
from kiln.errors import ModelError
from kiln.testing import assert_outputs_close

F32 = TensorProto.FLOAT
B, S, H, D = 2, 5, 3, 7          # odd sizes: batch, seq, heads, head dim


def _model(op: str, inputs: dict[str, np.ndarray], outs: str = "y0", opset: int = 23,
           **attrs: Any) -> onnx.ModelProto:
    """One ``op`` node over graph inputs named by ``inputs`` (a blank name leaves an optional
    input out) and outputs named by ``outs`` (comma-separated, blank to leave one out)."""
    names = [n if n.strip() else "" for n in inputs]
    out_names = outs.split(",")
    node = helper.make_node(op, names, out_names, **attrs)
    vis = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
           for n, a in inputs.items() if n.strip()]
    graph = helper.make_graph([node], "t", vis, [helper.make_tensor_value_info(o, F32, None)
                                                  for o in out_names if o])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _check(model: onnx.ModelProto, inputs: dict[str, np.ndarray], rtol: float = 1e-4,
           atol: float = 1e-5) -> None:
    feeds = {n: a for n, a in inputs.items() if n.strip()}
    expected = ReferenceEvaluator(model).run(None, feeds)
    lib = kiln.compile(model, target="x86")
    got = lib(*feeds.values())
    got = list(got) if isinstance(got, (list, tuple)) else [got]
    assert_outputs_close(got, expected, rtol, atol)


def _rand(*shape: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_attention_4d_bool_mask_fully_masked_row() -> None:
    """A bool mask broadcast over heads; one query row masks every key: its output is 0."""
    mask = np.random.default_rng(3).random((S, S)) > 0.4
    mask[2] = False
    inputs = {"q": _rand(B, H, S, D, seed=0), "k": _rand(B, H, S, D, seed=1),
              "v": _rand(B, H, S, D, seed=2), "m": mask}
    _check(_model("Attention", inputs), inputs)


def test_attention_4d_gqa_causal_past_present_qk_output() -> None:
    """Grouped-query attention (3 query heads per kv head) with a cache: causal masking is
    aligned to the end of the keys; present_key/value and the post-softmax scores come back."""
    hq, hkv, past = 6, 2, 4
    inputs = {"q": _rand(B, hq, S, D, seed=0), "k": _rand(B, hkv, S, D, seed=1),
              "v": _rand(B, hkv, S, 9, seed=2), "": np.zeros(0, np.float32),
              "pk": _rand(B, hkv, past, D, seed=3), "pv": _rand(B, hkv, past, 9, seed=4)}
    model = _model("Attention", inputs, "y0,y1,y2,y3", is_causal=1, qk_matmul_output_mode=3,
                   scale=0.3)
    _check(model, inputs)


@pytest.mark.parametrize("mode", [0, 2])
def test_attention_3d_softcap_additive_mask(mode: int) -> None:
    """3-D inputs split into heads (MQA: one kv head), an additive mask shorter than the keys
    (padded with -inf), softcap, and the raw / biased scores output."""
    inputs = {"q": _rand(B, S, H * D, seed=0), "k": _rand(B, S, D, seed=1),
              "v": _rand(B, S, 4, seed=2), "m": _rand(S, S - 2, seed=3)}
    model = _model("Attention", inputs, "y0,,,y3", q_num_heads=H, kv_num_heads=1,
                   softcap=2.5, qk_matmul_output_mode=mode)
    _check(model, inputs)


def test_attention_nonpad_kv_seqlen_opset24() -> None:
    """Opset 24's per-batch count of valid keys, with causal masking aligned to it."""
    inputs = {"q": _rand(B, H, 2, D, seed=0), "k": _rand(B, H, S, D, seed=1),
              "v": _rand(B, H, S, D, seed=2), "": np.zeros(0, np.float32),
              " ": np.zeros(0, np.float32), "  ": np.zeros(0, np.float32),
              "n": np.array([3, 5], dtype=np.int64)}
    _check(_model("Attention", inputs, opset=24, is_causal=1), inputs)


def test_attention_bad_heads() -> None:
    inputs = {"q": _rand(B, S, 8, seed=0), "k": _rand(B, S, 8, seed=1),
              "v": _rand(B, S, 8, seed=2)}
    with pytest.raises(ModelError, match="not divisible"):
        kiln.compile(_model("Attention", inputs, q_num_heads=3, kv_num_heads=1), target="x86")


@pytest.mark.parametrize("axis", [-1, 1])
def test_rms_normalization(axis: int) -> None:
    x = _rand(B, S, D, seed=0)
    scale = _rand(*x.shape[axis:], seed=1)
    inputs = {"x": x, "s": scale}
    _check(_model("RMSNormalization", inputs, axis=axis, epsilon=1e-3), inputs)


def test_swiglu() -> None:
    inputs = {"a": _rand(B, S, D, seed=0), "b": _rand(B, S, D, seed=1)}
    _check(_model("SwiGLU", inputs, opset=28, alpha=1.7), inputs)


@pytest.mark.parametrize("mode", ["linear", "circular"])
def test_tensor_scatter(mode: str) -> None:
    inputs = {"c": _rand(B, H, 9, D, seed=0), "u": _rand(B, H, S, D, seed=1),
              "w": np.array([1, 6], dtype=np.int64)}
    if mode == "linear":
        inputs["w"] = np.array([1, 4], dtype=np.int64)
    _check(_model("TensorScatter", inputs, opset=24, mode=mode), inputs)


@pytest.mark.parametrize("past", [False, True])
def test_causal_conv_with_state(past: bool) -> None:
    inputs = {"x": _rand(B, H, S, seed=0), "w": _rand(H, 1, 4, seed=1),
              "b": _rand(H, seed=2)}
    if past:
        inputs["p"] = _rand(B, H, 3, seed=3)
    _check(_model("CausalConvWithState", inputs, "y0,y1", opset=27, activation="silu"), inputs)


@pytest.mark.parametrize("rule", ["linear", "gated_delta"])
def test_linear_attention(rule: str) -> None:
    """Grouped heads (3 query heads per kv head), a past state, per-key-dim decay."""
    hkv = 2
    inputs = {"q": _rand(B, S, 3 * hkv * D, seed=0), "k": _rand(B, S, hkv * D, seed=1),
              "v": _rand(B, S, hkv * 4, seed=2), "s": _rand(B, hkv, D, 4, seed=3)}
    if rule == "gated_delta":
        inputs["g"] = -np.abs(_rand(B, S, hkv * D, seed=4))
        inputs["be"] = 1 / (1 + np.exp(_rand(B, S, hkv, seed=5)))
    _check(_model("LinearAttention", inputs, "y0,y1", opset=27, update_rule=rule,
                  q_num_heads=3 * hkv, kv_num_heads=hkv), inputs)


@pytest.mark.parametrize("interleaved", [0, 1])
@pytest.mark.parametrize("rank", [3, 4])
def test_rotary_embedding(interleaved: int, rank: int) -> None:
    """Partial rotation (6 of 8 dims) with position ids picking cache rows."""
    d, rot = 8, 6
    x = _rand(B, S, H * d, seed=0) if rank == 3 else _rand(B, H, S, d, seed=0)
    inputs = {"x": x, "c": _rand(11, rot // 2, seed=1), "s": _rand(11, rot // 2, seed=2),
              "p": np.random.default_rng(3).integers(0, 11, (B, S)).astype(np.int64)}
    extra = {"num_heads": H} if rank == 3 else {}
    _check(_model("RotaryEmbedding", inputs, interleaved=interleaved, rotary_embedding_dim=rot,
                  **extra), inputs)
