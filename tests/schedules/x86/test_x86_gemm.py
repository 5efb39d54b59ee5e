"""The x86 GEMM template on ragged shapes, with default and non-default knobs."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import s_tir, te

import kiln
from kiln import ops
from kiln.errors import KnobError
from kiln.ir.ops.registry import NoAttrs
from kiln.ir.types import TensorType
from kiln.schedules.compute import NodeInfo
from kiln.schedules.compute.matmul import gemm_padded, pack_weight, packed_operand
from kiln.schedules.x86.gemm import CpuGemmKnobs, default_gemm_knobs, round_up, schedule_gemm
from kiln.target import FIXED_TARGETS, Isa, host_target
from kiln.testing import assert_matches_reference


def build_gemm(m: int, n: int, k: int, cfg: CpuGemmKnobs, isa: Isa, relu: bool = True):
    a = te.placeholder((m, k), "float32", name="A")
    bp = te.placeholder((-(-n // cfg.nr), k, cfg.nr), "float32", name="Bp")
    info = NodeInfo(NoAttrs(), (TensorType((m, n), "float32"),), "C")
    c = gemm_padded(info, a, packed_operand(bp), k, round_up(m, cfg.mc), bp.shape[0] * cfg.nr)
    out = te.compute((m, n), lambda i, j: te.max(c[i, j], 0.0), name="relu") if relu else c
    sch = s_tir.Schedule(te.create_prim_func([a, bp, out]))
    schedule_gemm(sch, "C_gemm", cfg, isa)
    return sch.mod


def run_gemm(m: int, n: int, k: int, cfg: CpuGemmKnobs, relu: bool = True) -> None:
    target = host_target()
    mod = build_gemm(m, n, k, cfg, target.isa, relu)
    lib = tvm.compile(mod, target=tvm.target.Target(target.tvm_target))
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    out = tvm.runtime.empty((m, n), "float32", tvm.cpu())
    lib["main"](tvm.runtime.tensor(a), tvm.runtime.tensor(pack_weight(b, cfg.nr)), out)
    want = a.astype(np.float64) @ b
    np.testing.assert_allclose(out.numpy(), np.maximum(want, 0) if relu else want,
                               rtol=1e-4, atol=1e-4)
    return lib


@pytest.mark.parametrize("m,n,k", [(1, 2, 3), (72, 73, 74), (64, 64, 64), (7, 100, 129)])
@pytest.mark.parametrize("which", ["default", "other"])
def test_gemm_ragged_shapes(m: int, n: int, k: int, which: str) -> None:
    isa = host_target().isa
    lanes = isa.lanes()
    cfg = default_gemm_knobs(m, n, k, isa) if which == "default" else \
        CpuGemmKnobs(mr=3, nr=lanes, mc=6, nc=2 * lanes, ku=4)      # K % ku != 0 at k=74, 129
    run_gemm(m, n, k, cfg, relu=(which == "default"))


def test_gemm_uses_vector_fmas() -> None:
    isa = host_target().isa
    lib = run_gemm(64, 64, 64, default_gemm_knobs(64, 64, 64, isa))
    asm = lib.mod.inspect_source("asm")
    reg = "zmm" if isa is Isa.AVX512 else "ymm"
    assert any("vfmadd" in line and reg in line for line in asm.splitlines())


def test_knobs_are_checked_not_clamped() -> None:
    isa = Isa.AVX512
    with pytest.raises(KnobError, match="nr=24 must be a multiple"):
        build_gemm(8, 8, 8, CpuGemmKnobs(mr=4, nr=24, mc=8, nc=48, ku=1), isa)
    with pytest.raises(KnobError, match="mc=10 must be a multiple of mr=4"):
        build_gemm(8, 8, 8, CpuGemmKnobs(mr=4, nr=16, mc=10, nc=16, ku=1), isa)
    with pytest.raises(KnobError, match="vector registers"):
        build_gemm(8, 8, 8, CpuGemmKnobs(mr=16, nr=64, mc=16, nc=64, ku=1), isa)


def test_avx2_defaults_fit_sixteen_registers() -> None:
    isa = FIXED_TARGETS["x86-avx2"].isa
    cfg = default_gemm_knobs(128, 768, 768, isa)
    assert cfg.mr * cfg.nr // isa.lanes() + cfg.nr // isa.lanes() + 1 <= 16


@pytest.mark.parametrize("m,n", [(197, 768), (77, 1000), (5, 45)])
def test_ragged_packed_gemm_has_no_inner_predicate(m: int, n: int) -> None:
    """M is padded to whole cache tiles and N to whole panels, so the GEMM block carries no
    ``T.where``: only the store of the valid rows and columns is predicated."""
    g = kiln.Graph()
    g.output(ops.relu(ops.matmul(g.input("x", (m, 64), "float32"),
                                 np.ones((64, n), np.float32))))
    assert "T.where" not in _gemm_update_block(g)


def _gemm_update_block(g: kiln.Graph) -> str:
    script = kiln.compile_stages(g).kernels[0].func.script()
    block = script[script.index('T.sblock("matmul_gemm_update")'):]
    return block[:block.index("T.sblock", 10)]


@pytest.mark.parametrize("t", [77, 100])
def test_ragged_runtime_operand_is_packed_per_task(t: int) -> None:
    """Attention scores at a sequence length that is no multiple of the tile: the runtime B is
    packed into whole panels inside each task, so the inner loop carries no predicate."""
    g = kiln.Graph()
    q, k = g.input("q", (1, 3, t, 64), "float32"), g.input("k", (1, 3, 64, t), "float32")
    g.output(ops.matmul(q, k))
    assert "T.where" not in _gemm_update_block(g)
    assert any("at run time" in note for note in kiln.compile_stages(g).kernels[0].notes)
    assert_matches_reference(g, rtol=1e-4, atol=1e-4)
