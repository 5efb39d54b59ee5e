"""The x86 GEMM template on matmul_integer: int32 accumulation of (a - az) * (b - bz) on ragged
shapes, the int8 weight packed at compile time, a runtime B packed per task, zero points per
tensor, per row and per column, and a fused dequantizing epilogue."""

from __future__ import annotations

import numpy as np
import pytest
import tvm

import kiln
from kiln.testing import assert_matches_reference


def _ints(dtype: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    lo, hi = (0, 256) if dtype == "uint8" else (-128, 128)
    return np.random.default_rng(seed).integers(lo, hi, shape).astype(dtype)


def int_gemm(m: int, k: int, n: int, adt: str = "uint8", bdt: str = "int8",
             const_b: bool = True, per_channel: bool = False, batch: tuple[int, ...] = (),
             epilogue: bool = False) -> tuple[kiln.Graph, dict[str, np.ndarray]]:
    g = kiln.Graph("int_gemm")
    a = g.input("a", (*batch, m, k), adt)
    b_data = _ints(bdt, (k, n), seed=1)
    b = g.constant(b_data, name="b", dtype=bdt) if const_b else g.input("b", (k, n), bdt)
    az = _ints(adt, (m, 1) if per_channel else (), seed=2)
    bz = _ints(bdt, (n,) if per_channel else (), seed=3)
    y = g.add("matmul_integer", [a, b, g.constant(az, name="az", dtype=adt),
                                 g.constant(bz, name="bz", dtype=bdt)])[0]
    if epilogue:   # what a dynamically quantized model does next: to float, times the scales
        y = g.add("cast", [y], dtype="float32")[0]
        y = g.add("mul", [y, g.input("scale", (), "float32")])[0]
    g.output(y)
    feeds = {"a": _ints(adt, (*batch, m, k))}
    if not const_b:
        feeds["b"] = b_data
    if epilogue:
        feeds["scale"] = np.array(0.003, np.float32)
    return g, feeds


@pytest.mark.parametrize("m,k,n", [(1, 2, 3), (7, 13, 5), (72, 73, 74), (64, 512, 96)])
@pytest.mark.parametrize("const_b", [True, False])
def test_int_gemm_ragged_shapes(m: int, k: int, n: int, const_b: bool) -> None:
    g, feeds = int_gemm(m, k, n, const_b=const_b, per_channel=(m % 2 == 1))
    assert_matches_reference(g, feeds, rtol=0, atol=0)


@pytest.mark.parametrize("adt,bdt", [("int8", "int8"), ("uint8", "uint8"), ("int8", "uint8")])
def test_int_gemm_operand_types(adt: str, bdt: str) -> None:
    g, feeds = int_gemm(7, 13, 5, adt, bdt, per_channel=True)
    assert_matches_reference(g, feeds, rtol=0, atol=0)


def test_int_gemm_batched_with_fused_epilogue() -> None:
    g, feeds = int_gemm(9, 40, 33, batch=(2,), epilogue=True)
    assert_matches_reference(g, feeds, rtol=1e-6, atol=0)
    (kernel,) = kiln.compile_stages(g).kernels            # GEMM and epilogue: one kernel
    assert any("packed into" in note for note in kernel.notes)


def test_int8_weight_is_packed_at_compile_time() -> None:
    """The constant weight goes into the library packed, still int8 (1 byte per element)."""
    g, _ = int_gemm(7, 13, 40)
    (kernel,) = kiln.compile_stages(g).kernels
    packed = [a for a in kernel.args if isinstance(a, np.ndarray) and a.ndim == 3]
    assert len(packed) == 1 and packed[0].dtype == np.int8
    assert packed[0].shape[1] == 13 and packed[0].shape[0] * packed[0].shape[2] >= 40


def test_int_gemm_is_vectorised() -> None:
    """The inner loop multiplies int32 vectors: vpmulld on 512-bit registers (AVX-512)."""
    g, _ = int_gemm(16, 64, 64)
    c = kiln.compile_stages(g, target="x86-avx512")
    (kernel,) = c.kernels
    assert "T.parallel" in kernel.func.script() and "T.vectorized" in kernel.func.script()
    asm = tvm.compile(tvm.IRModule({kernel.name: kernel.func}),
                      target=tvm.target.Target(c.target.tvm_target)).mod.inspect_source("asm")
    muls = [ln for ln in asm.splitlines() if "vpmulld" in ln]
    assert muls and all("zmm" in ln for ln in muls)
