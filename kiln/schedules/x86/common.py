"""Schedule primitives shared by the x86 templates: the target-neutral helpers (re-exported
from ``kiln.schedules.common``), the parallel threshold and the pointwise nest."""

from __future__ import annotations

from tvm import s_tir

from kiln.schedules.common import (  # noqa: F401 (re-exported for the x86 templates)
    block_name,
    blocks,
    extent,
    inline_pointwise,
    is_reduction,
    output_blocks,
    runs_more_than,
    total_extent,
)

# Below this many output elements a kernel runs on one thread: waking the pool costs a few
# microseconds, more than the work it would split.
MIN_PARALLEL_ELEMS = 16384


def worth_parallel(total: int | None) -> bool:
    """Enough work to wake the thread pool (a symbolic size is taken to be)."""
    return total is None or total >= MIN_PARALLEL_ELEMS


def _whole_vectors(sch: s_tir.Schedule, loop, lanes: int) -> int:
    """The vector width for a last axis: ``lanes``, or where the axis is not whole vectors of
    it, the widest power of two (from 4 up) that divides it, so no lane is predicated (a
    predicated vector loop ran a QDQ model's [.., 96] uint8 multiply 10x slower than 32-wide
    vectors: 96 is not a multiple of uint8's 64 lanes)."""
    n = extent(sch, loop)
    if n is None or n % lanes == 0:
        return lanes
    width = lanes
    while width >= 4:
        if n % width == 0:
            return width
        width //= 2
    return lanes


def schedule_pointwise(sch: s_tir.Schedule, block, lanes: int) -> None:
    """The loop nest for an injective block: the last axis split into vectors of ``lanes``
    (tails are predicated), everything outside it fused into one loop that runs in parallel.
    A last axis shorter than a vector is fused with the rest first, so it still vectorises."""
    loops = sch.get_loops(block)
    if not loops:
        return
    total = total_extent(sch, loops)
    if total == 0:                  # an empty tensor: nothing to compute, nothing to split
        return
    if not runs_more_than(sch, loops[-1], lanes - 1) and len(loops) > 1:
        loops = [sch.fuse(*loops)]
    outer, (inner,) = loops[:-1], loops[-1:]
    if runs_more_than(sch, inner, 1):
        vo, vi = sch.split(inner, [None, _whole_vectors(sch, inner, lanes)])
        sch.vectorize(vi)
        outer = [*outer, vo]
    if worth_parallel(total) and outer:
        sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])
