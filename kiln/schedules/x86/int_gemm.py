"""The int8 GEMM template on a dot-product instruction, on a weight packed at compile time:
AVX-512 VNNI's ``vpdpbusd`` here; aarch64's ``sdot`` (``kiln.schedules.arm.int_gemm``) takes
the same loop nest with its own intrinsic and tiles.

    C[b, m, n] = sum_k A8[b, m, k] * Bp[n // nr, k // 4, n % nr, k % 4]    (int32)

``kiln.schedules.compute.quant.dot_matmul_integer`` builds the blocks (A as the instruction's
byte type padded to whole groups of 4 k steps, the raw GEMM, the zero-point terms in its
view); this template tiles the GEMM and replaces each L x 4 piece (L int32 lanes: 16 in a
zmm, 4 in a q register) by one dot instruction:

    A8 = pack(A)                          # k past K is 0, rows past M re-read row M - 1
                                          # (no copy when A is of that type on the grid)
    parallel for b, mt, nt:               # mc x nc block of C; its mc x K rows of A in L2
      for no, mo:                         # one mr x nr register tile: mr * nr / L vectors;
                                          # the K x nr panel of Bp comes from memory once (at
                                          # mo = 0) and stays in L1 for the other row tiles
        acc[mr, nr] = 0
        for ko: for kq (unrolled ku):     # one group of 4 k steps
          for mi (unrolled): for nv (unrolled):
            acc[mi, nv*L : nv*L+L] = dot(acc, broadcast(A8[m, 4k:4k+4]),
                                         Bp[panel, k, nv*L : nv*L+L, 0:4])
        C[tile] = epilogue(acc - az * colsum(b) - bz * rowsum(a) + K * az * bz)
                                          # (with rowsum(a): stored, then a second pass)
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir
from tvm.script import tirx as T

from kiln.schedules.compute.quant import DOT_GROUP
from kiln.schedules.x86.common import (
    block_name,
    blocks,
    inline_pointwise,
    output_blocks,
    runs_more_than,
    schedule_pointwise,
    total_extent,
    worth_parallel,
)
from kiln.schedules.x86.gemm import check_tile_knobs, register_tile_epilogue, round_up

VNNI_INTRIN = "kiln_vnni_16x4_u8i8i32"
VNNI_LANES = 16


# C[i] += sum_k A[k] * B[i, k] for 16 lanes i and 4 bytes k, C a register tile ("local"; TVM's
# own description is for a C in memory).
@T.prim_func(s_tir=True)
def _vnni_desc(A: T.Buffer((4,), "uint8", offset_factor=1),
               B: T.Buffer((16, 4), "int8", offset_factor=1),
               C: T.Buffer((16,), "int32", offset_factor=1, scope="local")) -> None:
    with T.sblock("root"):
        T.reads(C[0:16], A[0:4], B[0:16, 0:4])
        T.writes(C[0:16])
        for i, k in T.grid(16, 4):
            with T.sblock("update"):
                vi, vk = T.axis.remap("SR", [i, k])
                C[vi] = C[vi] + T.Cast("int32", A[vk]) * T.Cast("int32", B[vi, vk])


# TVM's own VNNI intrinsic (``dot_16x4_vnni``) fails LLVM verification with the bundled LLVM:
# vpdpbusd's operands are now <64 x i8>. This one broadcasts the 4 bytes of A as one int32 and
# reinterprets both operands as 64 bytes.
@T.prim_func(s_tir=True)
def _vnni_impl(A: T.Buffer((4,), "uint8", offset_factor=1),
               B: T.Buffer((16, 4), "int8", offset_factor=1),
               C: T.Buffer((16,), "int32", offset_factor=1, scope="local")) -> None:
    with T.sblock("root"):
        T.reads(C[0:16], A[0:4], B[0:16, 0:4])
        T.writes(C[0:16])
        a_i32 = T.reinterpret(A.vload([0], "uint8x4"), dtype="int32")
        a_u8x64 = T.reinterpret(T.broadcast(a_i32, 16), dtype="uint8x64")
        C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
            C.vload([0], dtype="int32x16"), a_u8x64, B.vload([0, 0], dtype="int8x64"),
            dtype="int32x16")


s_tir.TensorIntrin.register(VNNI_INTRIN, _vnni_desc, _vnni_impl, override=True)


@dataclass(frozen=True)
class DotInstruction:
    """An int8 dot product as a registered tensor intrinsic: ``lanes`` int32 accumulators of
    one vector register, each adding 4 byte products of ``a8`` (the broadcast activation)
    and int8 (the packed weight); ``registers`` vector registers to tile with."""

    intrin: str
    mnemonic: str
    lanes: int
    registers: int
    a8: str


VPDPBUSD = DotInstruction(VNNI_INTRIN, "vpdpbusd", VNNI_LANES, 32, "uint8")


@dataclass(frozen=True)
class DotGemmKnobs:
    """Tile sizes: ``mr`` x ``nr`` register tile (``nr`` a multiple of the instruction's
    lanes, one vector of int32 per lanes columns), ``mc`` x ``nc`` cache tile (one parallel
    task), ``ku`` groups of 4 k steps unrolled."""

    mr: int
    nr: int
    mc: int
    nc: int
    ku: int


# (mr, nr) register tiles of 24 accumulators (16 for one column vector): with nr / 16 loads of
# B and one broadcast of A live, 24 + 4 + 1 <= 32 zmm. 24 independent vpdpbusd chains cover its
# latency (5 cycles) x throughput (2 per cycle) twice over.
REGISTER_TILES = ((6, 64), (8, 48), (12, 32), (16, 16))
# A 16-column tile broadcasts A once per vpdpbusd (one load per multiply, against 1/3 for
# 8 x 48): measured 7% slower per MAC (317 against 339 GMAC/s, one thread, 64 x 1536 x 512).
NARROW_TILE_COST = 1.08
# A tile width that does not divide N leaves a predicate (column < N) in the epilogue, and
# LLVM then scalarises it: 64 x 1024 x 512 took 193 us on 8 x 48 against 99 on 6 x 64.
RAGGED_N_COST = 2.0


def default_vnni_knobs(m: int, n: int, k: int) -> DotGemmKnobs:
    """Untuned defaults for vpdpbusd (see ``default_dot_knobs``)."""
    return default_dot_knobs(m, n, k, REGISTER_TILES, VNNI_LANES)


def default_dot_knobs(m: int, n: int, k: int, register_tiles: tuple[tuple[int, int], ...],
                      lanes: int) -> DotGemmKnobs:
    """Untuned defaults: of ``register_tiles``, the one whose cache tiles pad M x N least (a
    one-vector one counted 8% dearer, one not dividing N twice as dear; ties: the wider one,
    fewer broadcasts of A per dot instruction); the cache tile takes 4 to 12 register tiles
    of rows (whichever pads M least) and up to 4 panels of columns (dividing the panel
    count)."""

    def rows(mr: int) -> int:      # 4 to 12 register tiles: 64 rows take 11 of 6, not 12
        if m > 4 * mr:
            return min((mr * t for t in range(12, 3, -1)), key=lambda c: round_up(m, c))
        return round_up(m, mr)

    tiles = [(min(mr, m), nr) for mr, nr in register_tiles if nr <= round_up(n, lanes)]

    def cost(t: tuple[int, int]) -> tuple[float, int]:     # padded MACs, then the wider tile
        area = round_up(m, rows(t[0])) * round_up(n, t[1])
        area *= NARROW_TILE_COST if t[1] == lanes else 1.0
        return area * (RAGGED_N_COST if n % t[1] else 1.0), -t[1]

    mr, nr = min(tiles, key=cost)
    mc = rows(mr)
    panels = -(-n // nr)
    nc = nr * next(d for d in (4, 3, 2, 1) if panels % d == 0)
    groups = -(-k // DOT_GROUP)
    ku = next(u for u in (4, 2, 1) if groups % u == 0)
    return DotGemmKnobs(mr=mr, nr=nr, mc=mc, nc=nc, ku=ku)


def schedule_dot_gemm(sch: s_tir.Schedule, gemm: str, cfg: DotGemmKnobs,
                      dot: DotInstruction) -> None:
    """Schedule the kernel built by ``dot_matmul_integer`` whose GEMM block is ``gemm``, with
    its pointwise epilogue, on the instruction ``dot`` (see the module docstring)."""
    check_tile_knobs(cfg, f"{dot.mnemonic} gemm", dot.lanes, dot.registers)
    lanes = dot.lanes
    out_names = {block_name(sch, b) for b in output_blocks(sch)}
    names = {block_name(sch, b) for b in blocks(sch)}
    base = gemm.removesuffix("_gemm")            # the blocks dot_matmul_integer names
    pack_a, rowsum = f"{base}_a8", f"{base}_rowsum"
    inline_pointwise(sch, keep={gemm, pack_a})   # the epilogue becomes one block, reading C
    # A as its byte type (a +- 128, or M / K padded): each task converts the mc rows it reads, just
    # before using them (no parallel region of its own; mc x K bytes, 33 KB for T5);
    # the row sums read all of it before the GEMM, so with them it is one pass up front
    pack_in_task = pack_a in names and rowsum not in names
    if pack_a in names and not pack_in_task:
        schedule_pointwise(sch, sch.get_sblock(pack_a), 64)
    if rowsum in names:                          # sum_k A8 per row: M x K adds, serial k
        *rows, _ = sch.get_loops(sch.get_sblock(rowsum))
        total = total_extent(sch, rows)
        row = sch.fuse(*rows) if len(rows) > 1 else rows[0]
        if worth_parallel(total):
            sch.parallel(row)
    block = sch.get_sblock(gemm)
    *batch, m, n, k = sch.get_loops(block)
    # m: task rows (mt) x register tiles in a task (mo) x rows of one register tile (mi)
    mt, mo, mi = sch.split(m, [None, cfg.mc // cfg.mr, cfg.mr])
    # n: task columns (nt) x register tiles (no) x vectors of the tile (nv) x int32 lanes (ni)
    nt, no, nv, ni = sch.split(n, [None, cfg.nc // cfg.nr, cfg.nr // lanes, lanes])
    # k: unrolled steps (ko) x groups of 4 in one step (kq) x the 4 bytes one lane sums (ki)
    ko, kq, ki = sch.split(k, [None, cfg.ku, DOT_GROUP])
    # panels outer, row tiles inner: a T5-sized GEMM (M = 64, weights of 0.2 to 0.5 MB) is
    # bound by streaming its weight; mo inside no reads each panel from memory once
    # (in-model int8 GEMMs of the T5 encoder, one thread: 9.0 -> 6.4 ms)
    sch.reorder(*batch, mt, nt, no, mo, ko, kq, mi, nv, ni, ki)
    task = sch.fuse(*batch, mt, nt)
    sch.parallel(task)                           # tasks write disjoint C tiles: no locks
    if pack_in_task:
        pack = sch.get_sblock(pack_a)
        sch.compute_at(pack, task)
        k_loop = sch.get_loops(pack)[-1]
        if runs_more_than(sch, k_loop, 64):
            k_loop = sch.split(k_loop, [None, 64])[1]
        sch.vectorize(k_loop)
    for loop in (kq, mi, nv):
        sch.unroll(loop)
    # Accumulate the tile in registers; the epilogue reads them directly and stores C once.
    # With row sums (a nonzero bz) it cannot: a block computed at the register tile must have
    # all its producers there, and the row sums are computed once, before the GEMM. The tile
    # is then stored as is, and the epilogue is a second pass over C.
    register_tile_epilogue(sch, block, mo, fuse=not (gemm in out_names or rowsum in names))
    if rowsum in names and gemm not in out_names:
        for epilogue in output_blocks(sch):
            schedule_pointwise(sch, epilogue, lanes)
    # The intrinsic has no init: the accumulators are zeroed once per register tile, before
    # the k loop (one vpxor per accumulator, unrolled).
    init = sch.decompose_reduction(block, ko)
    *_, i_mi, i_nv, i_ni = sch.get_loops(init)
    sch.unroll(i_mi)
    sch.unroll(i_nv)
    sch.vectorize(i_ni)
    sch.tensorize(ni, dot.intrin)                # ni x ki (lanes x 4): one dot instruction
