"""CUDA templates for reduction groups (softmax, layer_norm, reduce_*, with their fused
prologues and epilogues).

Row reductions (the reduced axes trailing) get one thread block per row (rows of at most
``WARP_ROW_MAX`` elements: one warp per row, ``WARP_ROWS`` rows per block)::

    block per row:
      partial[t] = reduce(x[row, k] for k = t, t + THREADS, ...)   # each thread, serial
      stat = reduce(partial[0 : THREADS])          # warp shuffles, then across warps
      y[row, k] = epilogue(x[row, k], stat)         # threads over the row again

Other reductions put one output element on each thread and reduce serially.
"""

from __future__ import annotations

from tvm import s_tir

from kiln.schedules.common import (
    blocks,
    extent,
    inline_pointwise,
    is_reduction,
    output_blocks,
    total_extent,
)
from kiln.schedules.cuda.injective import THREADS

WARP_ROW_MAX = 512     # rows up to this long get a warp each (16 elements per thread at most)
WARP_ROWS = 4          # such rows per block


def _threads_for(n: int | None) -> int:
    """Threads per row: a warp's multiple, at most ``THREADS``, fewer for short rows."""
    if n is None:
        return THREADS
    return min(THREADS, max(32, -(-n // 32) * 32))


def schedule_row_reduction(sch: s_tir.Schedule, row_rank: int) -> None:
    """One thread block per row, or a warp per short row (see the module docstring)."""
    if row_rank == 0:
        schedule_generic_reduction(sch)
        return
    # every pointwise stage recomputed where it is read: a kernel's scratch must be registers
    # or shared memory, and a row's worth would not fit
    inline_pointwise(sch)
    (out,) = output_blocks(sch)
    out_name = sch.get(out).name_hint
    lengths = [total_extent(sch, sch.get_loops(b)[row_rank:]) for b in blocks(sch)]
    short = None not in lengths and max(lengths) <= WARP_ROW_MAX
    rows = sch.get_loops(out)[:row_rank]
    row = sch.fuse(*rows) if len(rows) > 1 else rows[0]
    if short:           # a warp per row, WARP_ROWS rows per block: shuffles only, no barrier
        bx, row = sch.split(row, [None, WARP_ROWS])
        sch.bind(bx, "blockIdx.x")
        sch.bind(row, "threadIdx.y")
    else:
        sch.bind(row, "blockIdx.x")
    for b in reversed(blocks(sch)[:-1]):
        sch.compute_at(b, row)
    depth = 2 if short else 1
    for b in blocks(sch):
        body = sch.get_loops(b)[depth:]
        if not body:
            continue
        flat = sch.fuse(*body) if len(body) > 1 else body[0]
        # a reduction: each thread accumulates every THREADS-th element serially, then the
        # threads' partials combine (TVM lowers the thread-bound reduce loop to warp
        # shuffles); a ragged last step is predicated, never read past the row
        _, tx = sch.split(flat, [None, 32 if short else _threads_for(extent(sch, flat))])
        sch.bind(tx, "threadIdx.x")
        if is_reduction(sch, b) and sch.get(b).name_hint != out_name:
            sch.set_scope(b, 0, "shared")       # the row's statistic, read by every thread


def schedule_generic_reduction(sch: s_tir.Schedule) -> None:
    """Each output element on a thread, its reduction serial; the group's other blocks as
    injective ones."""
    inline_pointwise(sch)
    for b in blocks(sch):
        kinds = [int(iv.iter_type) for iv in sch.get(b).iter_vars]
        loops = sch.get_loops(b)
        spatial = [lp for lp, t in zip(loops, kinds, strict=True) if t == 0]
        reduce_ = [lp for lp, t in zip(loops, kinds, strict=True) if t == 2]
        if not spatial:                         # a reduction to a scalar: one thread
            sch.bind(sch.add_unit_loop(b), "blockIdx.x")
            continue
        sch.reorder(*spatial, *reduce_)
        flat = sch.fuse(*spatial) if len(spatial) > 1 else spatial[0]
        bx, tx = sch.split(flat, [None, THREADS])
        sch.bind(bx, "blockIdx.x")
        sch.bind(tx, "threadIdx.x")
