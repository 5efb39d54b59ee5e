"""The CUDA template for elementwise and injective groups: the chain inlined into each output,
whose elements are spread over threads (``THREADS`` per block, consecutive threads on
consecutive vectors of ``VECTOR`` elements: 128-bit loads and stores that a warp coalesces)."""

from __future__ import annotations

from tvm import s_tir

from kiln.schedules.common import extent, inline_pointwise, output_blocks

THREADS = 256
VECTOR = 4      # elements per thread where the size allows: one 128-bit access for float32


def bind_flat(sch: s_tir.Schedule, block, threads: int = THREADS) -> None:
    """All of ``block``'s loops as one index over blocks x threads x vector lanes (a rank-0
    block gets one thread; a size that is not whole vectors, one element per thread)."""
    loops = sch.get_loops(block)
    if not loops:
        loops = [sch.add_unit_loop(block)]
    flat = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    n = extent(sch, flat)
    if n is not None and n % VECTOR == 0 and n >= threads * VECTOR:
        bx, tx, v = sch.split(flat, [None, threads, VECTOR])
        sch.vectorize(v)
    else:
        width = threads if n is None or n >= threads else max(n, 1)
        bx, tx = sch.split(flat, [None, width])
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")


def schedule_injective(sch: s_tir.Schedule) -> None:
    inline_pointwise(sch)
    for out in output_blocks(sch):
        bind_flat(sch, out)
