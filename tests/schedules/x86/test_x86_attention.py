"""The attention fusion rule and the x86 attention template: which chains fuse, values against
the reference on ragged shapes, and that no kernel keeps the T x S score matrix."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tvm
from tvm import s_tir

import kiln
from kiln.codegen.pipeline import lower_graph
from kiln.ir.passes import fuse
from kiln.testing import assert_matches_reference


@pytest.fixture
def fuse_any_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fuse attention of any size (the default fuses only scores of 32 MiB and more)."""
    monkeypatch.setattr(fuse, "ATTENTION_SCORES_BYTES", 0)


def attention(batch: tuple[int, ...], t: int, s: int, d: int, dv: int, *, mask: bool = True,
              scale: str = "div", extra_use: str | None = None) -> kiln.Graph:
    """softmax(q @ kt (/ or *) c [+ mask]) @ v, as exporters write it."""
    g = kiln.Graph("attention")
    q = g.input("q", (*batch, t, d), "float32")
    kt = g.input("kt", (*batch, d, s), "float32")
    v = g.input("v", (*batch, s, dv), "float32")
    scores = kiln.ops.matmul(q, kt)
    c = np.float32(np.sqrt(d))
    y = kiln.ops.div(scores, c) if scale == "div" else kiln.ops.mul(scores, 1 / c)
    if mask:
        m = g.input("mask", (batch[0], *([1] * (len(batch) - 1)), 1, s), "float32")
        y = kiln.ops.add(y, m)
    p = kiln.ops.softmax(y, axis=-1)
    g.output(kiln.ops.matmul(p, v))
    if extra_use == "scores":
        g.output(scores)
    elif extra_use == "probs":
        g.output(p)
    return g


def feeds(g: kiln.Graph) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    for v in g.inputs:
        x = rng.standard_normal(v.shape).astype(np.float32)
        if v.name == "mask":
            x = np.where(rng.random(v.shape) < 0.2, np.float32(-1e9), np.float32(0))
        out[v.name] = x
    return out


def kinds(g: kiln.Graph) -> list[tuple[str, bool]]:
    return [(grp.name, grp.is_attention) for grp in lower_graph(g).fused.groups]


@pytest.mark.usefixtures("fuse_any_size")
@pytest.mark.parametrize("batch, t, s, d, dv, mask, scale", [
    ((2, 3), 37, 45, 24, 20, True, "div"),     # ragged everywhere, a [B, 1, 1, S] mask
    ((4,), 64, 64, 32, 64, False, "mul"),      # whole vectors, three-dim, dv of 4 vectors
    ((1, 2), 5, 160, 16, 16, True, "div")])    # fewer query rows than a block
def test_attention_is_one_kernel_with_the_reference_values(batch, t, s, d, dv, mask,
                                                           scale) -> None:
    g = attention(batch, t, s, d, dv, mask=mask, scale=scale)
    (kernel,) = lower_graph(g).kernels
    assert kernel.group.is_attention
    assert any(note.startswith("attention") for note in kernel.notes)
    assert_matches_reference(g, feeds(g), rtol=2e-5, atol=2e-6)


@pytest.mark.usefixtures("fuse_any_size")
def test_no_kernel_holds_the_score_matrix() -> None:
    """After TVM's buffer compaction, every scratch buffer of the kernel is at most a block of
    bq score rows (bq x S), but for K^T packed into panels (K's size), never T x S."""
    t = s = 256
    g = attention((2, 2), t, s, 32, 32)
    (kernel,) = lower_graph(g).kernels
    mod = tvm.IRModule({"main": kernel.func})
    for compaction in (s_tir.transform.LowerInitBlock(),
                       s_tir.transform.PlanAndUpdateBufferAllocationLocation(),
                       s_tir.transform.ConvertBlocksToOpaque(),
                       s_tir.transform.CompactBufferAllocation()):
        mod = compaction(mod)
    shapes = re.findall(r"alloc_buffer\(\(([\d, ]+)\)", mod.script())
    sizes = [int(np.prod([int(x) for x in sh.split(",") if x.strip()])) for sh in shapes]
    keys = 2 * 2 * 32 * s
    assert keys in sizes and all(n <= 8 * s or n == keys for n in sizes), sizes


@pytest.mark.usefixtures("fuse_any_size")
@pytest.mark.parametrize("case", ["scores", "probs", "axis", "cycle"])
def test_chains_that_are_not_attention_stay_apart(case: str) -> None:
    if case in ("scores", "probs"):          # an intermediate also read outside
        g = attention((2,), 8, 8, 4, 4, extra_use=case)
    else:
        g = kiln.Graph(case)
        q = g.input("q", (2, 8, 4), "float32")
        kt = g.input("kt", (2, 4, 8), "float32")
        scores = kiln.ops.matmul(q, kt)
        if case == "axis":                   # a softmax over the query axis
            g.output(kiln.ops.matmul(kiln.ops.softmax(scores, axis=1),
                                     g.input("v", (2, 8, 4), "float32")))
        else:                                # the values computed from the scores
            p = kiln.ops.softmax(scores, axis=-1)
            g.output(kiln.ops.matmul(p, kiln.ops.reshape(scores, (2, 8, 8))))
    assert not any(attn for _, attn in kinds(g))
    assert_matches_reference(g, feeds(g), rtol=2e-5, atol=2e-6)


def test_short_sequences_keep_three_kernels() -> None:
    """12 heads of 128 x 128 (MiniLM's): the scores take 786 KiB, below the threshold."""
    assert not any(attn for _, attn in kinds(attention((1, 12), 128, 128, 32, 32)))


def test_long_sequence_attention_at_the_default_threshold() -> None:
    """8 heads of 1024 x 1024: 32 MiB of scores, so one kernel by default, and its values."""
    g = attention((1, 8), 1024, 1024, 32, 32)
    assert [attn for _, attn in kinds(g)] == [True]
    assert_matches_reference(g, feeds(g), rtol=2e-5, atol=2e-6)


@pytest.mark.usefixtures("fuse_any_size")
def test_attention_on_avx2_fits_sixteen_registers() -> None:
    """The AVX2 tiles (6 rows; 6 x 16 output, 6 x 8 scores) on ymm, same values."""
    g = attention((2, 2), 29, 48, 16, 24)
    assert_matches_reference(g, feeds(g), rtol=2e-5, atol=2e-6, target="x86-avx2")
