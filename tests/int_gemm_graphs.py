"""Graphs for the int8 GEMM tests: matmul_integer with a constant weight and the zero points
and epilogues quantized models use (the x86 VNNI template, the aarch64 sdot one)."""

from __future__ import annotations

import numpy as np

import kiln
from kiln.ir.ops.quant import requantize_steps


def ints(dtype: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    lo, hi = (0, 256) if dtype == "uint8" else (-128, 128)
    return np.random.default_rng(seed).integers(lo, hi, shape).astype(dtype)


def const_weight_gemm(m: int, k: int, n: int, adt: str = "uint8", az: str = "runtime",
              bz: str = "zero", batch: tuple[int, ...] = (), epilogue: str = "",
              seed: int = 0, bdt: str = "int8") -> tuple[kiln.Graph, dict[str, np.ndarray]]:
    """matmul_integer with a constant weight (``bdt``). ``az``: "runtime" (a scalar input, as
    DynamicQuantizeLinear makes), "zero", "scalar" or "rows" (constants); ``bz``: "zero",
    "scalar" or "columns" (constants). ``epilogue``: "" (int32 out), "dequantize" (cast, times
    a scale) or "requantize" (fixed-point rescale, add a zero point, clamp to int8)."""
    g = kiln.Graph("int8_gemm")
    a = g.input("a", (*batch, m, k), adt)
    b = g.constant(ints(bdt, (k, n), seed + 1), name="b", dtype=bdt)
    feeds = {"a": ints(adt, (*batch, m, k), seed)}
    if az == "runtime":
        a_zp = g.input("az", (), adt)
        feeds["az"] = ints(adt, (), seed + 2)
    else:
        shape = (m, 1) if az == "rows" else ()
        data = np.zeros(shape, adt) if az == "zero" else ints(adt, shape, seed + 2)
        a_zp = g.constant(data, name="az", dtype=adt)
    bz_shape = (n,) if bz == "columns" else ()
    bz_data = np.zeros(bz_shape, bdt) if bz == "zero" else ints(bdt, bz_shape, seed + 3)
    y = g.add("matmul_integer", [a, b, a_zp, g.constant(bz_data, name="bz", dtype=bdt)])[0]
    if epilogue == "dequantize":
        y = g.add("cast", [y], dtype="float32")[0]
        y = g.add("mul", [y, g.input("scale", (), "float32")])[0]
        feeds["scale"] = np.array(0.003, np.float32)
    elif epilogue == "requantize":
        for i, (mult, shift) in enumerate(requantize_steps(1e-4, 255 * 128 * 4 * k)):
            y = g.add("fixed_point_multiply", [
                y, g.constant(mult.astype(np.int32), name=f"m{i}", dtype="int32"),
                g.constant(shift.astype(np.int32), name=f"s{i}", dtype="int32")])[0]
        y = g.add("add", [y, g.constant(np.array(3, np.int32), name="yz", dtype="int32")])[0]
        y = g.add("maximum", [y, g.constant(np.array(-128, np.int32), name="lo",
                                            dtype="int32")])[0]
        y = g.add("minimum", [y, g.constant(np.array(127, np.int32), name="hi",
                                            dtype="int32")])[0]
        y = g.add("cast", [y], dtype="int8")[0]
    g.output(y)
    return g, feeds
