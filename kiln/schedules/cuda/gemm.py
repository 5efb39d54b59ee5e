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
from kiln.schedules.common import block_name, extent, inline_pointwise, output_blocks


@dataclass(frozen=True)
class CudaGemmKnobs:
    """``tm`` x ``tn`` outputs per thread, ``ty`` x ``tx`` threads per block (a block's tile is
    ty*tm x tx*tn), ``bk`` the k step staged in shared memory, ``vec`` floats per thread in
    each copy into shared memory; ``a_kmajor``: A's tile transposed there, so that the tm
    values of A a thread reads per k step are adjacent (vector loads) instead of a row
    apart; ``pipeline``: shared tiles doubled, the copy of step ko + 1 issued before the
    compute of step ko (TVM's software pipelining), so the loads' latency hides;
    ``b_interleave``: B's tile rows stored even float4s first, so the two float4s a thread
    reads per k step are each one 128-byte line across 8 threads (tn = 8, whole tiles)."""

    tm: int
    tn: int
    ty: int
    tx: int
    bk: int
    vec: int = 1
    a_kmajor: bool = False      # A's tile stored [k, m] in shared memory
    pipeline: bool = False      # double-buffered tiles: the next k step's copy overlaps this one
    b_interleave: bool = False  # B's tile rows stored even float4s first (tn = 8, whole tiles)


def default_gemm_knobs(m: int, n: int, k: int) -> CudaGemmKnobs:
    """64 x 128 block tiles of 8 x 16 threads with 8 x 8 registers each, A's tile stored k-major
    so a thread's 8 rows are one contiguous read, B's rows interleaved so its reads are
    conflict-free, double-buffered (on the H200 at 4096^3: 41.7 TFLOP/s, 0.81x cuBLAS; B in
    order 39.3; without double buffering 36.6; 64 x 64 tiles of 4 x 4: 32.1; 128 x 128 of
    8 x 8: 35.4; bk 8 or 32 lower).
    Smaller problems get 64 x 64 tiles of 4 x 4 (or thinner: a row or column of C shorter
    than the tile wastes threads)."""
    if m >= 64 and n >= 128:
        return CudaGemmKnobs(tm=8, tn=8, ty=8, tx=16, bk=16, vec=4, a_kmajor=True,
                             pipeline=True, b_interleave=True)
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
    # B's interleaved rows need tn = 8 and N in whole block columns
    cols = cfg.tx * cfg.tn
    interleave = cfg.b_interleave and cfg.tn == 8 and (extent(sch, n) or 1) % cols == 0
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
        if operand == 0 and cfg.a_kmajor:
            sch.transform_layout(block, ("read", 0), lambda *i: (*i[:-2], i[-1], i[-2]))
        if operand == 1 and interleave:
            # a thread reads its tn = 8 values of B as two float4s; stored in order, 8
            # threads' first float4s span 256 bytes (two passes through the banks). Even
            # float4s of a row first, then odd ones: each 8 threads read 128 contiguous bytes
            sch.transform_layout(block, ("read", 1), lambda *i: (
                *i[:-1], i[-1] // cols, i[-1] // 4 % 2, i[-1] % cols // 8, i[-1] % 4))
    acc = sch.cache_write(block, 0, "local")  # the thread's tm x tn in registers
    if gemm not in out_names:
        sch.compute_inline(acc)
        (acc,) = output_blocks(sch)
    sch.reverse_compute_at(acc, tx)
    sch.decompose_reduction(block, ko)
    if cfg.pipeline:         # ko's body: copy A, copy B, compute; the copies one step ahead
        sch.annotate(ko, "software_pipeline_stage", [0, 0, 1])
        sch.annotate(ko, "software_pipeline_order", [0, 1, 2])

