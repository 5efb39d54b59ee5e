"""Which attention chains the CUDA flash template takes (no compiler needed): the fusion rule
for cuda is ``flash_attention_of``; a chain it refuses stays three kernels."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln import ops
from kiln.codegen.pipeline import lower_graph
from kiln.ir.passes import fuse_groups, optimize
from kiln.schedules.cuda import flash_attention_of


def _graph(t: int = 128, s: int = 128, d: int = 64, dtype: str = "float16",
           mask: np.ndarray | None = None, scale: float = 0.125) -> kiln.Graph:
    g = kiln.Graph("attention")
    q = g.input("q", (2, 3, t, d), dtype)
    k = g.input("k", (2, 3, s, d), dtype)
    v = g.input("v", (2, 3, s, d), dtype)
    scores = ops.mul(ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))), np.dtype(dtype).type(scale))
    if mask is not None:
        scores = ops.add(scores, mask.astype(dtype))
    g.output(ops.matmul(ops.softmax(scores, axis=-1), v))
    return g


def _chains(g: kiln.Graph) -> list:
    groups = fuse_groups(optimize(g), attention=lambda c: True).groups
    return [grp.nodes for grp in groups if grp.is_attention]


def _triangle(t: int, s: int, k: int, fill: float = -np.inf) -> np.ndarray:
    return np.triu(np.full((t, s), fill, np.float32), k)


@pytest.mark.parametrize(("t", "s", "k"), [(128, 128, 1), (64, 192, 129)])
def test_a_causal_mask_is_recognised_top_left_or_bottom_right_aligned(t: int, s: int,
                                                                      k: int) -> None:
    (chain,) = _chains(_graph(t, s, mask=_triangle(t, s, k)))
    fa = flash_attention_of(chain)
    assert fa is not None and fa.causal and (fa.t, fa.s, fa.batch) == (t, s, 6)
    assert fa.scale == pytest.approx(0.125)


@pytest.mark.parametrize("fill", [-np.inf, -65504.0, -30000.0])
def test_any_large_negative_fill_masks(fill: float) -> None:
    (chain,) = _chains(_graph(mask=_triangle(128, 128, 1, fill)))
    assert flash_attention_of(chain).causal


@pytest.mark.parametrize("mask", [
    _triangle(128, 128, 2),                                   # the diagonal masked too
    _triangle(128, 128, 1, -1.0),                             # a bias, not a mask
    np.where(np.eye(128) > 0, -np.inf, 0).astype(np.float32),  # not a triangle
])
def test_other_masks_are_refused(mask: np.ndarray) -> None:
    (chain,) = _chains(_graph(mask=mask))
    assert flash_attention_of(chain) is None


@pytest.mark.parametrize("kwargs", [dict(dtype="float32"), dict(t=100), dict(d=40),
                                    dict(d=256), dict(scale=-0.5)])
def test_shapes_and_dtypes_the_kernel_cannot_take_are_refused(kwargs: dict) -> None:
    (chain,) = _chains(_graph(**kwargs))
    assert flash_attention_of(chain) is None


def test_cuda_fuses_only_what_the_flash_template_takes() -> None:
    """A refused chain (float32 here) stays matmul, softmax, matmul kernels for cuda."""
    taken = lower_graph(_graph(mask=_triangle(128, 128, 1)), "cuda").kernels
    assert [k.notes[0].split(" ")[0:2] for k in taken if "flash" in k.notes[0]] == [
        ["flash", "attention"]]
    refused = lower_graph(_graph(dtype="float32"), "cuda").kernels
    assert not any("flash" in " ".join(k.notes) for k in refused)
    assert sum("gemm" in k.notes[0] for k in refused) == 2
