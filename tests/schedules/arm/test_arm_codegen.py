"""The arm-neon targets on this x86 machine: kernels compile for aarch64 with NEON code (GEMM
and convolution on fmla over .4s vectors, the int8 GEMM on sdot with dotprod), libraries link
with the cross compiler into aarch64 ELF files, and neither a compiled nor a loaded one
pretends to run here."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tvm

import kiln
from kiln import ops
from kiln.codegen.pipeline import lower_graph
from kiln.errors import KnobError
from kiln.schedules.arm.int_gemm import SDOT
from kiln.schedules.x86.int_gemm import DotGemmKnobs, schedule_dot_gemm
from kiln.target import ARM_CC, get_target

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from int_gemm_graphs import const_weight_gemm  # noqa: E402

FMLA_4S = re.compile(r"fmla\s+v\d+\.4s")
SDOT_4S = re.compile(r"sdot\s+v\d+\.4s, v\d+\.16b, v\d+\.16b")


def _asm(g: kiln.Graph, target: str = "arm-neon") -> dict[str, str]:
    """Each kernel's aarch64 assembly."""
    tgt = get_target(target).tvm()
    return {k.name: tvm.compile(tvm.IRModule({k.name: k.func}), target=tgt).mod
            .inspect_source("asm") for k in lower_graph(g, target).kernels}


def _mlp() -> kiln.Graph:
    g = kiln.Graph("mlp")
    x = g.input("x", (37, 96), "float32")
    w = np.random.default_rng(0).standard_normal((96, 70)).astype(np.float32)
    g.output(ops.softmax(ops.gelu(ops.matmul(x, w)), axis=-1))
    return g


def test_gemm_register_tile_is_8_by_12_on_fmla() -> None:
    (kernel, *_) = lower_graph(_mlp(), "arm-neon").kernels
    assert "mr=8, nr=12" in kernel.notes[0]
    asm = _asm(_mlp())["fused_matmul_gelu"]
    assert len(FMLA_4S.findall(asm)) >= 8 * 12 // 4      # one register tile's worth at least


def test_conv2d_runs_on_fmla() -> None:
    g = kiln.Graph("conv")
    x = g.input("x", (1, 8, 14, 16), "float32")    # rows of whole 4-lane vectors
    w = np.random.default_rng(1).standard_normal((16, 8, 3, 3)).astype(np.float32)
    g.output(ops.relu(ops.conv2d(x, w, padding=(1, 1, 1, 1))))
    (asm,) = _asm(g).values()
    assert FMLA_4S.search(asm)


@pytest.mark.parametrize("adt", ["uint8", "int8"])
def test_int8_gemm_runs_on_sdot_with_dotprod(adt: str) -> None:
    """A constant-weight matmul_integer with its requantizing epilogue: on arm-neon-dotprod
    one register tile of sdot (int8 x int8 into 4 int32 lanes) per group of 4 k steps, with
    the weight packed into [N/nr, K/4, nr, 4] panels; plain arm-neon has no sdot and keeps
    the widening template."""
    g, _ = const_weight_gemm(21, 100, 50, adt, bz="columns", epilogue="requantize")
    (kernel,) = lower_graph(g, "arm-neon-dotprod").kernels
    assert "on sdot" in kernel.notes[0]
    knobs = DotGemmKnobs(**{k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", kernel.notes[0])
                            if k in ("mr", "nr", "mc", "nc", "ku")})
    (packed,) = [a for a in kernel.args if isinstance(a, np.ndarray) and a.ndim == 4]
    assert packed.shape == (-(-50 // knobs.nr), 25, knobs.nr, 4)
    (asm,) = _asm(g, "arm-neon-dotprod").values()
    assert len(SDOT_4S.findall(asm)) >= knobs.mr * knobs.nr // 4     # a whole register tile
    (kernel,) = lower_graph(g, "arm-neon").kernels
    assert "sdot" not in " ".join(kernel.notes)
    assert not SDOT_4S.search(next(iter(_asm(g, "arm-neon").values())))


def test_sdot_register_tile_must_fit_32_registers() -> None:
    g, _ = const_weight_gemm(8, 16, 64)
    (kernel,) = lower_graph(g, "arm-neon-dotprod").kernels
    sch = tvm.s_tir.Schedule(kernel.te_func)
    with pytest.raises(KnobError, match="32 vector registers"):
        schedule_dot_gemm(sch, "matmul_integer_gemm", DotGemmKnobs(8, 16, 8, 16, 1), SDOT)


def test_dotprod_target_enables_the_extension() -> None:
    assert "+dotprod" in get_target("arm-neon-dotprod").tvm_target["mattr"]
    assert "+dotprod" not in get_target("arm-neon").tvm_target["mattr"]


@pytest.mark.skipif(shutil.which(ARM_CC) is None, reason=f"needs {ARM_CC}")
def test_the_library_is_an_aarch64_elf_that_says_where_it_runs(tmp_path: Path) -> None:
    lib = kiln.compile(_mlp(), "arm-neon")
    with pytest.raises(kiln.KilnError, match="aarch64"):
        lib(x=np.zeros((37, 96), np.float32))
    path = lib.export(tmp_path / "mlp.so")
    head = path.read_bytes()[:20]
    assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == 183  # AArch64
    with pytest.raises(kiln.KilnError, match="aarch64 library"):
        kiln.load(path)


def test_inspect_prints_neon_assembly(tmp_path: Path) -> None:
    model = tmp_path / "model.py"
    model.write_text("import numpy as np\nimport kiln\nfrom kiln import ops\n\n\n"
                     "def build():\n    g = kiln.Graph('m')\n"
                     "    x = g.input('x', (16, 32), 'float32')\n"
                     "    g.output(ops.matmul(x, np.ones((32, 48), np.float32)))\n"
                     "    return g\n")
    proc = subprocess.run([sys.executable, "-m", "kiln", "inspect", str(model), "--target",
                           "arm-neon", "--stage", "asm"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert FMLA_4S.search(proc.stdout)
