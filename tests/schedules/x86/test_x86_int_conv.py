"""conv2d_integer on x86 off the vpdpbusd template: where every partial sum stays below 2^24
(255 x the weight's largest per-channel sum of magnitudes) the products run on the FMA units
in float32, and where one may not, in int32. Both are compared for exact equality with the
NumPy reference, on odd shapes, with sums near the float32 limit (a wrong choice loses their
low bits)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln.schedules.compute.quant import FLOAT_EXACT, float_exact_conv

FMA_NOTE = "summed on the FMA units"


def conv_integer(x_shape: tuple[int, ...], w: np.ndarray, xz: int, dtype: str, groups: int,
                 padding: tuple[int, int, int, int], strides: tuple[int, int]) -> kiln.Graph:
    g = kiln.Graph("conv_integer")
    x = g.input("x", x_shape, dtype)
    (y,) = g.add("conv2d_integer", [x, g.constant(w), g.constant(np.array(xz, dtype))],
                 groups=groups, padding=padding, strides=strides)
    g.output(y)
    return g


def extreme_input(shape: tuple[int, ...], dtype: str, seed: int = 0) -> np.ndarray:
    """Bytes at the ends of the range (the largest |x - xz| for a zero point in the middle)."""
    lo, hi = (0, 255) if dtype == "uint8" else (-128, 127)
    pick = np.random.default_rng(seed).random(shape) < 0.5
    return np.where(pick, lo, hi).astype(dtype)


def _run(g: kiln.Graph, feeds: dict[str, np.ndarray]) -> list[str]:
    c = kiln.compile_stages(g, "x86")
    got = kiln.compile(g)(**feeds)[0]
    np.testing.assert_array_equal(got, kiln.run_reference(g, feeds)[0])
    return c.kernels[0].notes


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
@pytest.mark.parametrize("shape, kernel, strides", [
    ((1, 7, 5, 13), 5, (1, 1)),        # odd plane, 5x5
    ((2, 9, 6, 11), 3, (2, 1)),        # batch 2, stride (2, 1)
])
def test_depthwise_sums_in_float_exactly(dtype: str, shape: tuple, kernel: int,
                                         strides: tuple) -> None:
    c = shape[1]
    w = np.random.default_rng(1).integers(-128, 128, (c, 1, kernel, kernel)).astype(np.int32)
    w[0] = -128                        # one channel at the largest sum of magnitudes
    assert float_exact_conv(w, dtype)
    pad = kernel // 2
    g = conv_integer(shape, w, 128 if dtype == "uint8" else 0, dtype, c, (pad,) * 4, strides)
    notes = _run(g, {"x": extreme_input(shape, dtype)})
    assert any(FMA_NOTE in n for n in notes), notes


def test_sums_past_float32s_integers_stay_int32() -> None:
    """1100 channels of weights +-127, and one pixel whose inputs match the weights' signs at
    127 / -128: its sum, 1100 * ~16200 = 1.78e7, is past 2^24 (float32 would round it to an
    even number), so the conv runs in int32, exactly. A third of the channels fit the bound."""
    channels = 1100
    rng = np.random.default_rng(2)
    sign = np.where(rng.random((5, channels, 1, 1)) < 0.5, -1, 1)
    w = (127 * sign).astype(np.int32)
    assert not float_exact_conv(w, "int8")
    assert float_exact_conv(w[:, :channels // 3], "int8")
    x = extreme_input((1, channels, 3, 5), "int8", seed=3)
    x[0, :, 0, 0] = np.where(sign[0, :, 0, 0] > 0, 127, -128)
    if (x[0, :, 0, 0].astype(np.int64) * w[0, :, 0, 0]).sum() % 2 == 0:
        x[0, 0, 0, 0] -= sign[0, 0, 0, 0]         # one step inwards: an odd sum
    g = conv_integer(x.shape, w, 0, "int8", 1, (0, 0, 0, 0), (1, 1))
    peak = int(kiln.run_reference(g, {"x": x})[0][0, 0, 0, 0])
    assert peak > FLOAT_EXACT and peak % 2 == 1
    notes = _run(g, {"x": x})
    assert not any(FMA_NOTE in n for n in notes), notes
