"""The CUDA GEMM template (fp32): shared-memory tiles of A and B, a register tile per thread.

    C[b, m, n] = sum_k A[b, m, k] * B[b, k, n]

    block (b, bm, bn): a bm x bn tile of C, ty x tx threads
      for ko:                                  # k in steps of bk
        As[bm, bk], Bs[bk, bn] <- A, B          # all threads load, coalesced along the row
        for ki: acc[tm, tn] += As[.., ki] * Bs[ki, ..]   # each thread: its tm x tn, registers
      C[tile] = epilogue(acc)
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir

from kiln.errors import KnobError
from kiln.schedules.x86.common import block_name, inline_pointwise, output_blocks


@dataclass(frozen=True)
class CudaGemmKnobs:
    """``tm`` x ``tn`` outputs per thread, ``ty`` x ``tx`` threads per block (a block's tile is
    ty*tm x tx*tn), ``bk`` the k step staged in shared memory, ``vec`` floats per thread in
    each copy into shared memory."""

    tm: int
    tn: int
    ty: int
    tx: int
    bk: int
    vec: int = 1


def default_gemm_knobs(m: int, n: int, k: int) -> CudaGemmKnobs:
    """64 x 64 block tiles of 16 x 16 threads with 4 x 4 registers each, tiles copied into
    shared memory 4 floats per thread (on the H200 at 4096^3: 32 TFLOP/s, 0.63x cuBLAS; 1
    float: 31; 128 x 128 tiles of 8 x 8: 28.5); smaller problems get smaller tiles (a row or
    column of C shorter than the tile wastes threads)."""
    tm = 4 if m >= 64 else 1
    tn = 4 if n >= 64 else 1
    return CudaGemmKnobs(tm=tm, tn=tn, ty=16, tx=16, bk=16, vec=4)


def check_knobs(cfg: CudaGemmKnobs) -> None:
    if min(cfg.tm, cfg.tn, cfg.ty, cfg.tx, cfg.bk, cfg.vec) < 1 or cfg.ty * cfg.tx > 1024:
        raise KnobError(f"cuda gemm knobs {cfg}: all >= 1 and at most 1024 threads per block")


def schedule_gemm(sch: s_tir.Schedule, gemm: str, cfg: CudaGemmKnobs) -> None:
    """Schedule the kernel whose GEMM block is named ``gemm`` and whose other blocks are its
    elementwise epilogue (see the module docstring)."""
    check_knobs(cfg)
    out_names = {block_name(sch, b) for b in output_blocks(sch)}
    inline_pointwise(sch, keep={gemm})
    block = sch.get_sblock(gemm)
    *batch, m, n, k = sch.get_loops(block)
    bm, ty, tm = sch.split(m, [None, cfg.ty, cfg.tm])
    bn, tx, tn = sch.split(n, [None, cfg.tx, cfg.tn])
    ko, ki = sch.split(k, [None, cfg.bk])
    sch.reorder(*batch, bm, bn, ty, tx, ko, ki, tm, tn)
    grid = sch.fuse(*batch, bm, bn)
    sch.bind(grid, "blockIdx.x")
    sch.bind(ty, "threadIdx.y")
    sch.bind(tx, "threadIdx.x")
    for operand in (0, 1):                    # stage A's and B's tiles in shared memory
        shared = sch.cache_read(block, operand, "shared")
        sch.compute_at(shared, ko)
        flat = sch.fuse(*sch.get_loops(shared)[-2:])
        # each thread copies vectors of ``vec`` floats (128-bit loads and stores when 4)
        _, sy, sx, v = sch.split(flat, [None, cfg.ty, cfg.tx, cfg.vec])
        sch.bind(sy, "threadIdx.y")
        sch.bind(sx, "threadIdx.x")
        if cfg.vec > 1:
            sch.vectorize(v)
    acc = sch.cache_write(block, 0, "local")  # the thread's tm x tn in registers
    if gemm not in out_names:
        sch.compute_inline(acc)
        (acc,) = output_blocks(sch)
    sch.reverse_compute_at(acc, tx)
    sch.decompose_reduction(block, ko)
