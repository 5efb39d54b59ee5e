"""The CUDA template for elementwise and injective groups: the chain inlined into each output,
whose elements are spread over threads (``THREADS`` per block, consecutive threads on
consecutive elements, so a warp's loads and stores coalesce)."""

from __future__ import annotations

from tvm import s_tir

from kiln.schedules.x86.common import extent, inline_pointwise, output_blocks

THREADS = 256


def bind_flat(sch: s_tir.Schedule, block, threads: int = THREADS) -> None:
    """All of ``block``'s loops as one index over blocks x threads (a rank-0 block gets one
    thread)."""
    loops = sch.get_loops(block)
    if not loops:
        loops = [sch.add_unit_loop(block)]
    flat = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    n = extent(sch, flat)
    width = threads if n is None or n >= threads else max(n, 1)
    bx, tx = sch.split(flat, [None, width])
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")


def schedule_injective(sch: s_tir.Schedule) -> None:
    inline_pointwise(sch)
    for out in output_blocks(sch):
        bind_flat(sch, out)
