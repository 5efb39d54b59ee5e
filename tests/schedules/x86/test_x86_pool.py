"""Pooling: the NumPy reference against loops written from the ONNX definition, the compiled x86
pool template against the reference (max / average / Lp, padding, ceil mode, dilation, 1-D to
3-D, fused prologue and epilogue), and the schedule it gets."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import kiln
from kiln.errors import ModelError
from kiln.ir.ops import get_op
from kiln.ir.ops.nn import PoolAttrs
from kiln.testing import assert_matches_reference


def pool_graph(shape, prologue: bool = False, epilogue: bool = False, **attrs) -> kiln.Graph:
    g = kiln.Graph("pool")
    x = g.input("x", shape)
    if prologue:
        (x,) = g.add("relu", [x])
    (y,) = g.add("pool", [x], **attrs)
    if epilogue:
        (y,) = g.add("mul", [y, g.constant(np.float32(2.0))])
    g.output(y)
    return g


def naive_pool(x: np.ndarray, at: PoolAttrs) -> np.ndarray:
    """Every window element by element, from the ONNX definition."""
    k = len(at.kernel)
    out = get_op("pool").infer_types(at, [kiln.ir.types.TensorType.of(x.shape, x.dtype)])[0]
    y = np.zeros(out.static_shape)
    for idx in itertools.product(*(range(d) for d in out.static_shape)):
        vals, padded = [], 0
        for r in itertools.product(*(range(kk) for kk in at.kernel)):
            pos = [idx[2 + i] * at.strides[i] + r[i] * at.dilations[i] - at.pads[i]
                   for i in range(k)]
            if all(0 <= p < x.shape[2 + i] for i, p in enumerate(pos)):
                vals.append(float(x[(idx[0], idx[1], *pos)]))
            elif all(-at.pads[i] <= p < x.shape[2 + i] + at.pads[k + i]
                     for i, p in enumerate(pos)):
                padded += 1
        if at.mode == "max":
            y[idx] = max(vals)
        elif at.mode == "lp":
            y[idx] = sum(abs(v) ** at.p for v in vals) ** (1 / at.p)
        else:
            y[idx] = sum(vals) / (len(vals) + (padded if at.count_include_pad else 0))
    return y


CASES = [
    ((2, 3, 11, 13), dict(mode="max", kernel=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1))),
    ((1, 5, 9, 7), dict(mode="max", kernel=(2, 2), strides=(2, 2), ceil_mode=True)),
    ((1, 3, 10, 9), dict(mode="avg", kernel=(3, 2), pads=(1, 0, 2, 1))),
    ((1, 3, 10, 9), dict(mode="avg", kernel=(3, 3), pads=(1, 1, 1, 1), count_include_pad=True,
                         strides=(2, 2), ceil_mode=True)),
    ((1, 2, 12, 11), dict(mode="avg", kernel=(2, 3), dilations=(2, 2), pads=(1, 1, 1, 1))),
    ((1, 4, 8, 7), dict(mode="lp", kernel=(3, 3), p=2, pads=(1, 1, 1, 1))),
    ((1, 4, 8, 7), dict(mode="lp", kernel=(2, 2), p=3, strides=(2, 1))),
    ((2, 3, 17), dict(mode="max", kernel=(4,), strides=(3,), pads=(2, 1))),
    ((1, 2, 5, 6, 7), dict(mode="avg", kernel=(2, 3, 2), strides=(1, 2, 2))),
]


@pytest.mark.parametrize("shape,attrs", CASES[:6])
def test_reference_matches_naive_loops(shape, attrs) -> None:
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    at = PoolAttrs(**attrs)
    np.testing.assert_allclose(get_op("pool").reference(at, x), naive_pool(x, at), rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("shape,attrs", CASES)
def test_compiled_matches_reference(shape, attrs) -> None:
    assert_matches_reference(pool_graph(shape, **attrs), rtol=1e-5, atol=1e-5)


def test_fused_prologue_and_epilogue_in_one_kernel() -> None:
    g = pool_graph((1, 8, 15, 21), prologue=True, epilogue=True, mode="avg", kernel=(3, 3),
                   pads=(1, 1, 1, 1))
    assert_matches_reference(g, rtol=1e-5, atol=1e-5)
    (kernel,) = kiln.compile_stages(g, target="x86-avx512").kernels
    assert any("avg pool" in n for n in kernel.notes)


def test_integer_max_pool() -> None:
    g = kiln.Graph("pool")
    (y,) = g.add("pool", [g.input("x", (1, 2, 7, 9), "uint8")], mode="max", kernel=(3, 3),
                 pads=(1, 1, 1, 1))
    g.output(y)
    x = np.random.default_rng(1).integers(0, 255, (1, 2, 7, 9)).astype(np.uint8)
    assert_matches_reference(g, {"x": x}, rtol=0, atol=0)


def test_schedule_is_parallel_and_vectorised() -> None:
    g = pool_graph((1, 32, 56, 56), mode="max", kernel=(3, 3), strides=(2, 2),
                   pads=(1, 1, 1, 1))
    (kernel,) = kiln.compile_stages(g, target="x86-avx512").kernels
    tir = kernel.func.script()
    assert "T.parallel" in tir and "T.vectorized" in tir
    assert "_local" in tir                     # accumulators in registers


@pytest.mark.parametrize("attrs,match", [
    (dict(mode="max", kernel=(9, 9)), "larger than the padded input"),
    (dict(mode="max", kernel=(2,)), "rank-3"),
    (dict(mode="max", kernel=(2, 2), strides=(0, 1)), ">= 1"),
    (dict(mode="avg", kernel=(2, 2), pads=(1, 1)), "do not match"),
])
def test_errors(attrs, match) -> None:
    g = kiln.Graph("pool")
    with pytest.raises(ModelError, match=match):
        g.add("pool", [g.input("x", (1, 2, 5, 5))], **attrs)


def test_builder_pool_pad_and_conv_transpose() -> None:
    from kiln import ops
    g = kiln.Graph("built")
    y = ops.pool(ops.pad(g.input("x", (1, 3, 9, 9)), (0, 0, 1, 1, 0, 0, 1, 1), mode="edge"),
                 "max", (3, 3), stride=(2, 2))
    w = np.random.default_rng(2).standard_normal((3, 2, 3, 3)).astype(np.float32)
    g.output(ops.conv_transpose2d(y, w, stride=2, padding=1))
    got = assert_matches_reference(g, rtol=1e-4, atol=1e-4)
    assert got[0].shape == (1, 2, 9, 9)


@pytest.mark.parametrize("storage_order", [0, 1])
def test_argmax_pool_gives_flat_indices(storage_order) -> None:
    g = kiln.Graph("argmax")
    x = g.input("x", (2, 3, 7, 9))
    attrs = dict(kernel=(3, 2), strides=(2, 2), pads=(1, 0, 1, 1))
    (y,) = g.add("pool", [x], mode="max", **attrs)
    (i,) = g.add("pool", [x, y], mode="argmax", storage_order=storage_order, **attrs)
    g.output(y, i)
    feeds = {"x": np.random.default_rng(3).standard_normal((2, 3, 7, 9)).astype(np.float32)}
    _, idx = assert_matches_reference(g, feeds, rtol=0, atol=0)
    xs = feeds["x"] if not storage_order else feeds["x"].transpose(0, 1, 3, 2)
    np.testing.assert_array_equal(xs.reshape(-1)[idx], assert_matches_reference(g, feeds)[0])
