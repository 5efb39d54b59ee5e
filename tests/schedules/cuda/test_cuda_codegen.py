"""The CUDA target on a machine without a GPU: every template compiles (nvcc, ahead of time),
the generated CUDA uses what each schedule promises, and the exported library carries device
machine code, not source. Values are checked on a GPU host (tests/gpu/)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kiln
from kiln import ops
from kiln.codegen import cuda
from kiln.codegen.pipeline import lower_graph

pytestmark = pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc (CUDA toolkit)")


def _source(g: kiln.Graph) -> str:
    """The CUDA C of the compiled library (the VM executable imports the host module, which
    imports the device one)."""
    stack = [kiln.compile(g, "cuda").compilation.executable.mod]
    while stack:
        m = stack.pop()
        if m.kind == "cuda":
            return m.inspect_source("")
        stack.extend(m.imports)
    raise AssertionError("no CUDA module in the library")


def test_gemm_stages_tiles_in_shared_memory_and_fuses_its_epilogue() -> None:
    g = kiln.Graph("gemm")
    x = g.input("x", (37, 96), "float32")
    w = np.random.default_rng(0).standard_normal((96, 70)).astype(np.float32)
    g.output(ops.gelu(ops.matmul(x, w)))
    (kernel,) = lower_graph(g, "cuda").kernels
    assert kernel.notes[0].startswith("cuda gemm")
    src = _source(g)
    assert "__shared__" in src and "__syncthreads()" in src
    kernels = set(re.findall(r"__global__ void __launch_bounds__\(\d+\) (\w+)\(", src))
    assert kernels == {"fused_matmul_gelu_kernel"}           # the GELU rides in the GEMM


@pytest.mark.parametrize("shape", [(256, 128, 512), (37, 96, 70)])
@pytest.mark.parametrize("dense", [False, True])
def test_half_gemms_run_on_tensor_cores_with_async_copies(shape: tuple, dense: bool) -> None:
    """float16: ldmatrix fragments, mma.sync with float32 accumulators, tiles copied by
    cp.async (whole 16-byte vectors in 256 x 512 x 128; the ragged 37 x 96 x 70 loads what
    it must element by element, predicated); the bias and GELU fused."""
    m, k, n = shape
    g = kiln.Graph("half")
    x = g.input("x", (m, k), "float16")
    w = np.random.default_rng(0).standard_normal((n, k) if dense else (k, n)).astype(np.float16)
    y = ops.dense(x, w) if dense else ops.matmul(x, w)
    g.output(ops.gelu(ops.add(y, np.ones(n, np.float16))))
    (kernel,) = lower_graph(g, "cuda").kernels
    assert kernel.notes[0].startswith("tensor-core gemm")
    src = _source(g)
    assert "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32" in src
    assert "ldmatrix.sync.aligned" in src and ("trans" in src) != dense
    assert "cp.async.cg.shared.global" in src or m % 16       # the ragged tiles may not
    assert len(set(re.findall(r"__global__ void __launch_bounds__\(\d+\) (\w+)\(", src))) == 1


@pytest.mark.parametrize("dense", [False, True])
def test_lone_half_gemms_in_whole_tiles_use_wgmma_on_hopper(dense: bool) -> None:
    """No epilogue and whole 128 x 256 x 64 tiles: the wgmma kernel, operands read from
    swizzled shared memory through descriptors, B N-major ([K, N]) or K-major (W [N, K])."""
    g = kiln.Graph("half")
    x = g.input("x", (2, 128, 192), "float16")
    w = np.random.default_rng(0).standard_normal((256, 192) if dense else (192, 256))
    g.output(ops.dense(x, w.astype(np.float16)) if dense else ops.matmul(x, w.astype(np.float16)))
    (kernel,) = lower_graph(g, "cuda").kernels
    assert kernel.notes[0].startswith("wgmma gemm") and f"b_kmajor={dense}" in kernel.notes[0]
    src = _source(g)
    assert "wgmma.mma_async.sync.aligned.m64n256k16.f32.f16.f16" in src
    assert "wgmma.wait_group" in src and "cp_async" in src


def test_gemms_wgmma_cannot_take_keep_the_scheduled_template() -> None:
    """An epilogue, a ragged shape, or sm_80 (no wgmma) keep the mma.sync template."""
    def plan(m: int, epilogue: bool, target: str = "cuda") -> str:
        g = kiln.Graph("half")
        y = ops.matmul(g.input("x", (m, 64), "float16"), np.ones((64, 256), np.float16))
        g.output(ops.relu(y) if epilogue else y)
        return lower_graph(g, target).kernels[0].notes[0].split(" M=")[0]
    assert plan(128, False).startswith("wgmma gemm")
    assert plan(128, True) == plan(100, False) == plan(128, False, "cuda-sm80") == (
        "tensor-core gemm")


@pytest.mark.parametrize("d", [64, 128])
def test_flash_attention_keeps_scores_in_registers(d: int) -> None:
    """One kernel from scores to output: mma.sync for both products, K and V tiles by
    cp.async, row statistics by shuffles; its shared memory is dynamic (d 128 needs more than
    48 KiB)."""
    t = 256
    g = kiln.Graph("attention")
    q, k, v = (g.input(n, (1, 2, t, d), "float16") for n in "qkv")
    scores = ops.mul(ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))), np.float16(d ** -0.5))
    scores = ops.add(scores, np.triu(np.full((t, t), -np.inf, np.float16), 1))
    g.output(ops.matmul(ops.softmax(scores, axis=-1), v))
    notes = [kn.notes[0] for kn in lower_graph(g, "cuda").kernels]
    assert len(notes) == 2 and notes[1].startswith("flash attention")   # K^T, then attention
    src = _source(g)
    kernel = src[src.index("fused_matmul_mul_add_softmax_kernel("):]
    for promised in ("mma.sync.aligned.m16n8k16", "ldmatrix.sync.aligned.m8n8.x4.trans",
                     "cp_async", "__shfl_xor_sync", "exp2f", "buf_dyn_shmem"):
        assert promised in kernel, promised


@pytest.mark.parametrize("op", ["softmax", "layer_norm", "sum"])
def test_row_reductions_combine_threads_with_warp_shuffles(op: str) -> None:
    g = kiln.Graph(op)
    x = g.input("x", (13, 1000), "float32")
    if op == "softmax":
        g.output(ops.softmax(x, axis=-1))
    elif op == "layer_norm":
        g.output(ops.layer_norm(x, np.ones(1000, np.float32), np.zeros(1000, np.float32)))
    else:
        g.output(ops.sum(x, axes=[-1]))
    src = _source(g)
    assert "__shfl_down_sync" in src or "__shfl_xor_sync" in src
    assert "blockIdx.x" in src and "threadIdx.x" in src


@pytest.mark.parametrize(("cols", "warp_rows"), [(77, True), (512, True), (1000, False)])
def test_short_rows_get_a_warp_each_long_rows_a_block(cols: int, warp_rows: bool) -> None:
    g = kiln.Graph("softmax")
    g.output(ops.softmax(g.input("x", (6, 9, cols), "float32"), axis=-1))
    src = _source(g)
    kernel = src[src.index("fused_softmax_kernel(float"):]
    assert "__shfl_down_sync" in kernel
    assert ("threadIdx.y" in kernel) == warp_rows       # WARP_ROWS rows per block


def test_elementwise_chains_move_128_bit_vectors() -> None:
    g = kiln.Graph("chain")
    x = g.input("x", (64, 1000), "float32")
    g.output(ops.sigmoid(ops.add(x, g.input("b", (1000,), "float32"))))
    assert "float4" in _source(g)


def test_the_library_carries_machine_code_and_refuses_to_run_without_a_gpu(
        tmp_path: Path) -> None:
    g = kiln.Graph("chain")
    x = g.input("x", (5, 7, 9), "float32")
    g.output(ops.transpose(ops.exp(x), (2, 0, 1)))
    lib = kiln.compile(g, "cuda-sm80")
    data = lib.export(tmp_path / "chain.so").read_bytes()
    assert b"sm_80" in data and b".nv.info" in data           # a cubin/fatbin for sm_80
    assert b"__global__" not in data                          # no CUDA C to compile there
    if not cuda.has_gpu():
        with pytest.raises(kiln.KilnError, match="no CUDA device"):
            lib(x=np.zeros((5, 7, 9), np.float32))


def test_nodes_without_a_cuda_schedule_yet_are_named_all_at_once() -> None:
    g = kiln.Graph("cnn")
    x = g.input("x", (1, 3, 8, 8), "float32")
    y = ops.conv2d(x, np.ones((4, 3, 3, 3), np.float32))
    g.output(ops.pool(ops.relu(y), "max", (2, 2)))
    with pytest.raises(kiln.KilnError, match=r"2 node\(s\) have no CUDA schedule yet: "
                                              r"conv2d \(node .*\), pool \(node .*\)"):
        lower_graph(g, "cuda")


def test_the_cli_compiles_for_cuda_here(tmp_path: Path) -> None:
    """``kiln compile --target cuda`` on a machine without a GPU: a library that carries
    sm_90 machine code."""
    (tmp_path / "model.py").write_text(
        "import numpy as np\nimport kiln\nfrom kiln import ops\n\n\ndef build():\n"
        "    g = kiln.Graph('m')\n    x = g.input('x', (8, 32), 'float32')\n"
        "    g.output(ops.softmax(ops.matmul(x, np.ones((32, 16), np.float32)), axis=-1))\n"
        "    return g\n")
    proc = subprocess.run([sys.executable, "-m", "kiln", "compile", str(tmp_path / "model.py"),
                           "-o", str(tmp_path / "m.so"), "--target", "cuda"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    data = (tmp_path / "m.so").read_bytes()
    assert b"sm_90" in data and b".nv.info" in data


@pytest.mark.skipif(cuda.has_gpu(), reason="checks the message of a machine without a GPU")
def test_loading_a_cuda_library_without_a_driver_says_so(tmp_path: Path) -> None:
    """In a fresh process (no stand-in driver loaded), kiln.load names the missing driver."""
    g = kiln.Graph("chain")
    g.output(ops.exp(g.input("x", (4, 8), "float32")))
    path = kiln.compile(g, "cuda").export(tmp_path / "chain.so")
    code = ("import kiln, sys\ntry:\n    kiln.load(sys.argv[1])\nexcept kiln.KilnError as e:\n"
            "    print(e)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                          text=True, timeout=120)
    assert "no CUDA driver" in proc.stdout, (proc.stdout, proc.stderr)
