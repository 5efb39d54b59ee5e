"""The CUDA GEMM template for float16 on tensor cores (mma.sync m16n8k16, float32 accumulators).

    C[b, m, n] = sum_k A[b, m, k] * B[b, k, n]          (or B[b, n, k]: a dense layer's W)

    block (b, bm, bn): a BM x BN tile of C, warps_m x warps_n warps
      for ko:                                        # k in steps of bk, `stages` deep
        As[BM, bk], Bs[bk, BN] <- A, B              # cp.async, 16 bytes per thread, no wait
        for ki:                                      # 16 at a time
          a[frags_m], b[frags_n] <- As, Bs           # ldmatrix: 16 x 16 fragments per warp
          acc[frags_m, frags_n] += a x b             # mma.sync, in registers
      Cs[BM, BN] <- acc                              # each warp its tile, through shared memory
      Y[tile] = epilogue(Cs)                         # bias, GELU, residual, cast: coalesced

The grid is padded to whole tiles (``pad_einsum``): the copies read zeros past M, N and K,
the epilogue stores only inside C. The operand fragments and the accumulators use the layouts
``ldmatrix`` and ``mma`` define (TVM's registered intrinsics, applied with ``tensorize``).
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir, tirx

from kiln.errors import KnobError
from kiln.schedules.common import inline_pointwise, output_blocks

WARP = 32
FRAG = 16          # an mma fragment is 16 x 16 (two m16n8k16 instructions)
COPY_LANES = 8     # float16 values per thread in a copy: 16 bytes, one cp.async


@dataclass(frozen=True)
class TensorCoreKnobs:
    """``warps_m`` x ``warps_n`` warps per block, each ``frags_m`` x ``frags_n`` 16 x 16
    fragments of C (a block's tile is 16*warps_m*frags_m x 16*warps_n*frags_n); ``bk`` the k
    step staged in shared memory; ``stages`` shared buffers in flight (2: double-buffered)."""

    warps_m: int = 2
    warps_n: int = 2
    frags_m: int = 4
    frags_n: int = 4
    bk: int = 64
    stages: int = 3

    @property
    def tile(self) -> tuple[int, int]:
        return FRAG * self.warps_m * self.frags_m, FRAG * self.warps_n * self.frags_n


def default_tensorcore_knobs(m: int, n: int) -> TensorCoreKnobs:
    """128 x 128 tiles of 4 warps, 64 x 64 each, k in steps of 64, three buffers (on the H200
    at 4096^3: 312 TFLOP/s; 8 warps of 64 x 32 or 32 x 64: 250-280; 128 x 256 tiles: 280).
    A problem too small to fill the GPU with them gets 64 x 64 tiles."""
    if m * n >= 128 * 128 * 132:           # a tile per SM at least (the H100 has 132)
        return TensorCoreKnobs()
    return TensorCoreKnobs(frags_m=2, frags_n=2, bk=32, stages=2)


def check_knobs(cfg: TensorCoreKnobs) -> None:
    if (min(cfg.warps_m, cfg.warps_n, cfg.frags_m, cfg.frags_n) < 1 or cfg.bk % FRAG
            or cfg.stages < 1 or cfg.warps_m * cfg.warps_n > 32):
        raise KnobError(f"tensor-core gemm knobs {cfg}: bk a multiple of 16, at least one "
                        "stage, at most 32 warps")


def _b_transposed(sch: s_tir.Schedule, gemm) -> bool:
    """Whether the GEMM reads B as [.., n, k] (a dense layer) rather than [.., k, n]."""
    block = sch.get(gemm)
    k = block.iter_vars[-1].var
    b_region = block.reads[1].region
    return any(v.same_as(k) for v in tirx.analysis.undefined_vars(b_region[-1].min))


def schedule_tensorcore_gemm(sch: s_tir.Schedule, gemm: str, cfg: TensorCoreKnobs) -> None:
    """Schedule the kernel whose float32-accumulated GEMM block is named ``gemm`` and whose
    other blocks are its elementwise epilogue, ending in one output (see the module
    docstring)."""
    # imported here: importing it registers TVM's ~70 CUDA intrinsics (tens of seconds)
    from tvm.s_tir.tensor_intrin import cuda as intrin

    check_knobs(cfg)
    inline_pointwise(sch, keep={gemm})
    (out,) = output_blocks(sch)
    block = sch.get_sblock(gemm)
    trans_b = _b_transposed(sch, block)
    bm, bn = cfg.tile
    nbatch = len(sch.get_loops(block)) - 3
    # whole tiles: the operands, copied (reindex) so pad_einsum can pad them, are read as
    # zeros past M, N and K; those copies then go into the shared-memory copies
    sch.reindex(block, ("read", 0))
    sch.reindex(block, ("read", 1))      # as [.., n, k]: back to [.., k, n] unless a dense W
    if not trans_b:
        sch.transform_layout(block, ("read", 1), lambda *i: (*i[:-2], i[-1], i[-2]))
    sch.pad_einsum(block, [1] * nbatch + [bm, bn, cfg.bk])
    for consumer in sch.get_consumers(block):
        if not sch.get(consumer).same_as(sch.get(out)):
            sch.compute_inline(consumer)      # pad_einsum's crop: the epilogue reads C_pad

    *batch, i, j, k = sch.get_loops(block)
    i, i16 = sch.split(i, [None, FRAG])
    j, j16 = sch.split(j, [None, FRAG])
    k, k16 = sch.split(k, [None, FRAG])
    sch.reorder(*batch, i, j, k, i16, j16, k16)
    inner, outer = block, sch.blockize(i16)       # outer: one 16 x 16 x 16 step, for mma
    i0, i1, i2 = sch.split(i, [None, cfg.warps_m, cfg.frags_m])
    j0, j1, j2 = sch.split(j, [None, cfg.warps_n, cfg.frags_n])
    k0, k1 = sch.split(k, [None, cfg.bk // FRAG])
    sch.reorder(*batch, i0, j0, i1, j1, k0, k1, i2, j2)
    grid = sch.fuse(*batch, i0, j0)
    sch.bind(grid, "blockIdx.x")
    warp = sch.fuse(i1, j1)
    sch.bind(warp, "threadIdx.y")
    warps = cfg.warps_m * cfg.warps_n

    for operand in (0, 1):          # A's and B's tiles: 16 bytes per thread, rows padded by 8
        shared = sch.cache_read(outer, operand, "shared.dyn")
        sch.compute_at(shared, k0)
        while producers := sch.get_producers(shared):   # the reindex and pad blocks
            sch.compute_inline(producers[0])
        flat = sch.fuse(*sch.get_loops(shared)[-2:])
        _, ty, tx, v = sch.split(flat, [None, warps, WARP, COPY_LANES])
        sch.bind(ty, "threadIdx.y")
        sch.bind(tx, "threadIdx.x")
        sch.vectorize(v)
        # rows 16 bytes longer than the tile: ldmatrix's 8 rows fall in different banks
        sch.storage_align(shared, 0, axis=-2, factor=32, offset=8)

    a_frag = sch.cache_read(outer, 0, "warp")
    b_frag = sch.cache_read(outer, 1, "warp")
    sch.compute_at(a_frag, k1)
    sch.compute_at(b_frag, k1)
    acc = sch.cache_write(outer, 0, "warp")       # the accumulators, in mma's layout
    sch.set_scope(acc, 0, "shared.dyn")           # C's tile, staged for the epilogue
    sch.storage_align(acc, 0, axis=-2, factor=16, offset=4)
    sch.reverse_compute_at(acc, warp)
    sch.reverse_compute_at(out, grid)
    init = sch.decompose_reduction(outer, k0)

    def fragment_loop(b):
        r, c = sch.get_loops(b)[-2:]
        r0, r1 = sch.split(r, [None, FRAG])
        c0, c1 = sch.split(c, [None, FRAG])
        sch.reorder(r0, c0, r1, c1)
        return r1

    def lanes(*idx):                              # [.., 16 r, 16 c] -> [.., r/16, c/16, 32, 8]
        *lead, r, c = idx
        return (*lead, r // FRAG, c // FRAG,
                *intrin.shared_16x16_to_ldmatrix_32x8_layout(r % FRAG, c % FRAG))

    a_loop, b_loop, acc_loop = fragment_loop(a_frag), fragment_loop(b_frag), fragment_loop(acc)
    sch.transform_layout(a_frag, ("write", 0), lanes)
    sch.transform_layout(b_frag, ("write", 0), lanes)
    sch.transform_layout(acc, ("read", 0), lanes)
    sch.tensorize(a_loop, intrin.LDMATRIX_f16_A_DYN_INTRIN)
    sch.tensorize(b_loop, intrin.LDMATRIX_f16_B_TRANS_DYN_INTRIN if trans_b
                  else intrin.LDMATRIX_f16_B_DYN_INTRIN)
    sch.tensorize(sch.get_loops(inner)[-3], intrin.MMA_f16f16f32_TRANS_B_INTRIN if trans_b
                  else intrin.MMA_f16f16f32_INTRIN)
    sch.tensorize(sch.get_loops(sch.get_child_blocks(init)[0])[-2],
                  intrin.MMA_fill_16x16_f32_INTRIN)
    sch.tensorize(acc_loop, "mma_store_16x16_f32_shared_dyn_simple_")

    # the epilogue: the block's tile from shared memory to Y, consecutive threads on a row
    flat = sch.fuse(*sch.get_loops(out)[1:])
    _, ty, tx = sch.split(flat, [None, warps, WARP])
    sch.bind(ty, "threadIdx.y")
    sch.bind(tx, "threadIdx.x")

    # ko: copy A, copy B, then the ki loop (its first fragments, its body, its last mma):
    # the copies run stages - 1 steps ahead, as cp.async; ki loads fragment k + 1 during mma k
    sch.annotate(k0, "software_pipeline_stage", [0, 0] + [cfg.stages - 1] * 3)
    sch.annotate(k0, "software_pipeline_order", [0, 1, 2, 3, 4])
    sch.annotate(k0, "software_pipeline_async_stages", [0])
    sch.annotate(k1, "software_pipeline_stage", [0, 0, 1])
    sch.annotate(k1, "software_pipeline_order", [0, 1, 2])
