"""The x86 GEMM template: register tile, cache tile, packed weight, fused epilogue.

    C[b, m, n] = sum_k A[b, m, k] * B[b, k, n]      (B is often a weight, packed at compile time)

The loop nest it produces (one parallel task per (b, mt, nt)):

    parallel for b, mt, nt:               # mc x nc block of C; its K x nc panel of B stays in L2
      for mo, no:                         # one mr x nr register tile of C
        acc[mr, nr] = 0                   # in vector registers
        for ko: for ki (unrolled):        # the whole K reduces in registers
          for mi (unrolled):              # mr rows: broadcast A[m, k], FMA into nr / lanes vectors
            acc[mi, :] += A[m, k] * B[k, n : n + nr]   (vectorised)
        C[tile] = epilogue(acc)           # bias, GELU, residual... applied once, stored once
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tvm import s_tir

from kiln.errors import KnobError
from kiln.schedules.compute.registry import ceil_div
from kiln.schedules.x86.common import (
    block_name,
    inline_pointwise,
    output_blocks,
    runs_more_than,
)
from kiln.target import Isa


@dataclass(frozen=True)
class CpuGemmKnobs:
    """Tile sizes: ``mr`` x ``nr`` register tile, ``mc`` x ``nc`` cache tile (one parallel
    task), ``ku`` unrolled k steps."""

    mr: int
    nr: int
    mc: int
    nc: int
    ku: int


def default_gemm_knobs(m: int, n: int, k: int, isa: Isa) -> CpuGemmKnobs:
    """Untuned defaults derived from the vector width and the problem size.

    AVX-512: an 8 x 32 tile is 16 zmm accumulators + 2 of B + 1 broadcast of A = 19 of 32
    registers; AVX2: 6 x 16 is 12 ymm + 2 + 1 = 15 of 16. 16 / 12 independent FMA chains
    cover the FMA latency (4 cycles) x issue width (2 per cycle). (NEON's tile:
    ``kiln.schedules.arm.gemm``.)
    """
    lanes = isa.lanes("float32")
    nr = 2 * lanes if n > lanes else lanes
    return knobs_around(m, n, k, min(8 if isa is Isa.AVX512 else 6, m), nr)


def knobs_around(m: int, n: int, k: int, mr: int, nr: int) -> CpuGemmKnobs:
    """The cache tile and unrolling around an ``mr`` x ``nr`` register tile: 4 to 8 register
    tiles of rows (whichever pads M least: the padding rows are computed for nothing), up to
    4 panels of columns (a divisor of the panel count, so no panel is partial), k unrolled
    8, 4, 2 or 1 times (dividing K)."""
    if m > 4 * mr:
        mc = min((mr * t for t in range(8, 3, -1)), key=lambda c: round_up(m, c))
    else:
        mc = round_up(m, mr)
    panels = -(-n // nr)
    nc = nr * next(d for d in (4, 3, 2, 1) if panels % d == 0)
    ku = next(u for u in (8, 4, 2, 1) if k % u == 0)
    return CpuGemmKnobs(mr=mr, nr=nr, mc=mc, nc=nc, ku=ku)


def round_up(x: Any, tile: int) -> Any:
    """``x`` (an int or a symbolic extent) rounded up to a multiple of ``tile``."""
    return ceil_div(x, tile) * tile


def register_tile_epilogue(sch: s_tir.Schedule, block: Any, loop: Any, fuse: bool,
                           lanes: int | None = None) -> None:
    """Keep a GEMM ``block``'s register tile in registers ("local") and write it back under
    ``loop``, vectorised (in vectors of ``lanes``, unrolled, when given); with ``fuse``, the
    write-back inlined into the (single) epilogue block, which reads the registers directly
    and stores C once."""
    write_back = sch.cache_write(block, 0, "local")
    if fuse:
        sch.compute_inline(write_back)
        (out,) = output_blocks(sch)
    else:
        out = write_back
    sch.reverse_compute_at(out, loop)
    inner = sch.get_loops(out)[-1]
    if lanes and runs_more_than(sch, inner, lanes):
        vectors, inner = sch.split(inner, [None, lanes])
        sch.unroll(vectors)
    if runs_more_than(sch, inner, 1):
        sch.vectorize(inner)


def check_tile_knobs(cfg: Any, kind: str, lanes: int, registers: int) -> None:
    """The register-tile / cache-tile knobs (``mr nr mc nc ku``) of a GEMM template: positive,
    ``nr`` whole vectors of ``lanes``, cache tiles whole register tiles, and the accumulators
    plus one row of B and one broadcast of A fitting the ``registers`` vector registers."""
    for name in ("mr", "nr", "mc", "nc", "ku"):
        if getattr(cfg, name) < 1:
            raise KnobError(f"{kind} knob {name}={getattr(cfg, name)} must be >= 1")
    if cfg.nr % lanes:
        raise KnobError(f"{kind} knob nr={cfg.nr} must be a multiple of the vector width "
                        f"{lanes}")
    if cfg.mc % cfg.mr or cfg.nc % cfg.nr:
        raise KnobError(f"{kind} knobs: mc={cfg.mc} must be a multiple of mr={cfg.mr} and "
                        f"nc={cfg.nc} a multiple of nr={cfg.nr}")
    accumulators = cfg.mr * cfg.nr // lanes
    if accumulators + cfg.nr // lanes + 1 > registers:
        raise KnobError(f"{kind} register tile {cfg.mr}x{cfg.nr} needs {accumulators} "
                        f"accumulators: more than the {registers} vector registers")


def check_knobs(cfg: CpuGemmKnobs, isa: Isa) -> None:
    check_tile_knobs(cfg, "gemm", isa.lanes("float32"), isa.vector_registers)


def schedule_gemm(sch: s_tir.Schedule, gemm: str, cfg: CpuGemmKnobs, isa: Isa) -> None:
    """Schedule the kernel whose GEMM block is named ``gemm`` and whose other blocks are its
    pointwise epilogue (see the module docstring for the loop nest)."""
    check_knobs(cfg, isa)
    out_names = {block_name(sch, b) for b in output_blocks(sch)}
    # a producer of the GEMM block is B packed at run time (A is always a plain input), or a
    # scalar immediate (an integer GEMM's zero point: it reads nothing, and inlines)
    packs = [block_name(sch, b) for b in sch.get_producers(sch.get_sblock(gemm))
             if sch.get(b).reads]
    inline_pointwise(sch, keep={gemm, *packs})  # the epilogue becomes one block, reading C
    block = sch.get_sblock(gemm)
    *batch, m, n, k = sch.get_loops(block)
    lanes = isa.lanes("float32")
    mt, mo, mi = sch.split(m, [None, cfg.mc // cfg.mr, cfg.mr])
    # n: task columns x register tiles x the tile's vectors (nv) x lanes (ni): vectors of one
    # register each (a 12-wide NEON tile as one <12 x float> made LLVM rebuild it lane by lane)
    nt, no, nv, ni = sch.split(n, [None, cfg.nc // cfg.nr, cfg.nr // lanes, lanes])
    ko, ki = sch.split(k, [None, cfg.ku])
    sch.reorder(*batch, mt, nt, mo, no, ko, ki, mi, nv, ni)
    task = sch.fuse(*batch, mt, nt)
    sch.parallel(task)                          # tasks write disjoint C tiles: no locks
    for loop in (ki, mi, nv):
        sch.unroll(loop)
    sch.vectorize(ni)
    # Accumulate the tile in registers; the epilogue reads them directly and stores C once.
    register_tile_epilogue(sch, block, no, fuse=gemm not in out_names, lanes=lanes)
    for name in packs:                          # each task packs the panels it reads
        pack = sch.get_sblock(name)
        sch.compute_at(pack, task)
        inner = sch.get_loops(pack)[-1]
        if runs_more_than(sch, inner, lanes):
            sch.unroll(sch.split(inner, [None, lanes])[0])
            inner = sch.get_loops(pack)[-1]
        sch.vectorize(inner)
    sch.decompose_reduction(block, ko)          # zero the accumulators once, before the k loop
