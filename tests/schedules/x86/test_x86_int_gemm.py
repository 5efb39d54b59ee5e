"""The x86 GEMM templates on matmul_integer: int32 accumulation of (a - az) * (b - bz) on ragged
shapes, the int8 weight packed at compile time, a runtime B packed per task, zero points per
tensor, per row and per column, and a fused dequantizing epilogue. On AVX-512 VNNI (this CPU's
"x86" when it has it) a constant weight takes the vpdpbusd template (zero points applied
outside the dot product; a uint8 weight shifted to int8); "x86-avx512" (skylake, no VNNI)
and "x86-avx2" keep the widening one. All results are compared for exact equality with the
NumPy reference."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import tvm

import kiln
from kiln.codegen.pipeline import Compilation
from kiln.target import get_target
from kiln.testing import assert_matches_reference

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from int_gemm_graphs import const_weight_gemm, ints  # noqa: E402

needs_vnni = pytest.mark.skipif(not get_target("x86").vnni,
                                reason="this CPU has no AVX-512 VNNI")


def int_gemm(m: int, k: int, n: int, adt: str = "uint8", bdt: str = "int8",
             const_b: bool = True, per_channel: bool = False, batch: tuple[int, ...] = (),
             epilogue: bool = False) -> tuple[kiln.Graph, dict[str, np.ndarray]]:
    g = kiln.Graph("int_gemm")
    a = g.input("a", (*batch, m, k), adt)
    b_data = ints(bdt, (k, n), seed=1)
    b = g.constant(b_data, name="b", dtype=bdt) if const_b else g.input("b", (k, n), bdt)
    az = ints(adt, (m, 1) if per_channel else (), seed=2)
    bz = ints(bdt, (n,) if per_channel else (), seed=3)
    y = g.add("matmul_integer", [a, b, g.constant(az, name="az", dtype=adt),
                                 g.constant(bz, name="bz", dtype=bdt)])[0]
    if epilogue:   # what a dynamically quantized model does next: to float, times the scales
        y = g.add("cast", [y], dtype="float32")[0]
        y = g.add("mul", [y, g.input("scale", (), "float32")])[0]
    g.output(y)
    feeds = {"a": ints(adt, (*batch, m, k))}
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
    (kernel,) = kiln.compile_stages(g, target="x86-avx512").kernels
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


# -- AVX-512 VNNI (vpdpbusd) -------------------------------------------------------------------
def _vnni_kernel(g: kiln.Graph) -> Compilation:
    c = kiln.compile_stages(g)
    (kernel,) = c.kernels
    assert any("vpdpbusd" in note for note in kernel.notes), kernel.notes
    return c


@needs_vnni
@pytest.mark.parametrize("m,k,n", [(1, 2, 3), (7, 13, 5), (17, 64, 48), (72, 73, 74),
                                   (64, 512, 96), (33, 130, 401)])
@pytest.mark.parametrize("adt", ["uint8", "int8"])
def test_vnni_ragged_shapes(m: int, k: int, n: int, adt: str) -> None:
    """M, N and K off the 4 / 16 / tile grid: K padded with zero groups, N with zero panels,
    M with clamped rows; a runtime activation zero point (uint8 and int8 = uint8 - 128)."""
    g, feeds = const_weight_gemm(m, k, n, adt)
    _vnni_kernel(g)
    assert_matches_reference(g, feeds, rtol=0, atol=0)


@needs_vnni
@pytest.mark.parametrize("az,bz", [("zero", "zero"), ("scalar", "zero"), ("rows", "zero"),
                                   ("runtime", "scalar"), ("scalar", "columns"),
                                   ("rows", "columns"), ("zero", "columns")])
@pytest.mark.parametrize("adt", ["uint8", "int8"])
def test_vnni_zero_points(az: str, bz: str, adt: str) -> None:
    """Per-tensor, per-row and per-column zero points, constant or runtime, folded outside
    the dot product: - az colsum(b) - bz rowsum(a) + K az bz."""
    g, feeds = const_weight_gemm(19, 45, 37, adt, az, bz)
    _vnni_kernel(g)
    assert_matches_reference(g, feeds, rtol=0, atol=0)


@needs_vnni
@pytest.mark.parametrize("adt", ["uint8", "int8"])
@pytest.mark.parametrize("bz", ["zero", "scalar", "columns"])
def test_vnni_uint8_weight(adt: str, bz: str) -> None:
    """A uint8 weight is packed as b - 128 (int8) with bz - 128: a zero bz becomes -128, so
    the row sums always come in."""
    g, feeds = const_weight_gemm(23, 70, 41, adt, "runtime", bz, bdt="uint8")
    _vnni_kernel(g)
    assert_matches_reference(g, feeds, rtol=0, atol=0)


@needs_vnni
@pytest.mark.parametrize("bz", ["zero", "columns"])
def test_vnni_batched_with_dequantize_epilogue(bz: str) -> None:
    g, feeds = const_weight_gemm(9, 40, 33, batch=(2,), bz=bz, epilogue="dequantize")
    _vnni_kernel(g)
    assert_matches_reference(g, feeds, rtol=1e-6, atol=0)


@needs_vnni
@pytest.mark.parametrize("adt,bz", [("uint8", "zero"), ("int8", "columns")])
def test_vnni_fused_requantize_epilogue(adt: str, bz: str) -> None:
    """The int32 result rescaled in fixed point, offset and clamped to int8, in the GEMM's
    kernel: exact."""
    g, feeds = const_weight_gemm(21, 100, 50, adt, bz=bz, epilogue="requantize")
    _vnni_kernel(g)
    assert_matches_reference(g, feeds, rtol=0, atol=0)


@needs_vnni
def test_vnni_extreme_values() -> None:
    """All operands at their extremes (255 x -128 over K = 1000): the int32 sums are exact."""
    g, _ = const_weight_gemm(5, 1000, 20, "uint8", az="scalar", bz="scalar")
    assert_matches_reference(g, {"a": np.full((5, 1000), 255, np.uint8)}, rtol=0, atol=0)
    g, _ = const_weight_gemm(5, 1000, 20, "int8", az="scalar", bz="columns")
    assert_matches_reference(g, {"a": np.full((5, 1000), -128, np.int8)}, rtol=0, atol=0)


@needs_vnni
def test_vnni_weight_packed_with_column_sums() -> None:
    """The weight goes in as [N/nr, K/4, nr, 4] int8 panels (zero-padded), its column sums as
    int32; the asm multiplies with vpdpbusd on zmm registers (vpmulld is left only in the
    epilogue, for az * colsum)."""
    g, _ = const_weight_gemm(7, 13, 40)
    c = _vnni_kernel(g)
    (kernel,) = c.kernels
    packed = [a for a in kernel.args if isinstance(a, np.ndarray) and a.dtype == np.int8]
    (p,) = packed
    assert p.ndim == 4 and p.shape[1:4:2] == (4, 4) and p.shape[0] * p.shape[2] >= 40
    sums = [a for a in kernel.args if isinstance(a, np.ndarray) and a.dtype == np.int32]
    assert len(sums) == 1
    asm = tvm.compile(tvm.IRModule({kernel.name: kernel.func}),
                      target=tvm.target.Target(c.target.tvm_target)).mod.inspect_source("asm")
    dots = [ln for ln in asm.splitlines() if "vpdpbusd" in ln]
    assert dots and all("zmm" in ln for ln in dots)


def test_no_vnni_keeps_the_widening_template() -> None:
    """Targets without VNNI (AVX2, skylake AVX-512) and a runtime weight take the widening
    template, still exact."""
    g, feeds = const_weight_gemm(7, 13, 5, "int8", bz="columns")
    for target in ("x86-avx2", "x86-avx512"):
        (kernel,) = kiln.compile_stages(g, target=target).kernels
        assert not any("vpdpbusd" in note for note in kernel.notes)
        assert_matches_reference(g, feeds, rtol=0, atol=0, target=target)
    g, feeds = int_gemm(7, 13, 5, const_b=False)
    (kernel,) = kiln.compile_stages(g).kernels
    assert not any("vpdpbusd" in note for note in kernel.notes)


@needs_vnni
@pytest.mark.parametrize("adt", ["uint8", "int8"])
def test_vnni_symbolic_rows(adt: str) -> None:
    """A symbolic M (a sequence length): whole cache tiles of clamped rows, one library run at
    several lengths, each exact."""
    g = kiln.Graph("vnni_symbolic")
    a = g.input("a", ("m", 45), adt)
    b_data = ints("int8", (45, 37), seed=1)
    y = g.add("matmul_integer", [a, g.constant(b_data, name="b", dtype="int8"),
                                 g.input("az", (), adt),
                                 g.constant(np.array(0, np.int8), name="bz", dtype="int8")])[0]
    g.output(y)
    _vnni_kernel(g)
    lib = kiln.compile(g)
    for m in (1, 5, 64, 77, 130):
        feeds = {"a": ints(adt, (m, 45), seed=m), "az": np.array(3, adt)}
        want = (feeds["a"].astype(np.int64) - 3) @ b_data.astype(np.int64)
        np.testing.assert_array_equal(lib(**feeds)[0], want)
