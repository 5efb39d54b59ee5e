"""The x86 pooling template (NC + spatial layout, any number of spatial axes).

    y[n, c, o..., ow] = reduce_{r...} x[n, c, o * s + r * d - pad ..., ow * sw + rw * dw - pad]

Vectors run along the output width, the contiguous axis of the output; the window loops run
outside the vector, so each tap is one vector load combined into ``owl`` accumulators that stay
in registers. The loads are unit-stride and unmasked: the window reads a copy of its rows padded
and split by stride phase (see ``kiln.schedules.compute.nn``)::

    parallel for n, c, o...:                # every output row is a task
      xp[rows it reads] = pad(x)            # padded, split by stride phase (as conv2d)
      for owo:                              # vectors of owl output columns
        acc[0:owl] = init                   # -inf for max, 0 for the sums
        for r...:                           # the window, innermost tap unrolled
          acc[:] = max/+(acc[:], xp[tap])   # vectorised over owl, unit stride
        y[n, c, o..., owo * owl :] = epilogue(acc)   # / count, p-th root, fused ops

A prologue (an activation before the pool) is inlined into the taps; the epilogue (average
count, Lp root and any fused elementwise ops) is applied once per vector as it is stored.
"""

from __future__ import annotations

from tvm import s_tir

from kiln.schedules.compute.nn import ACC_SUFFIX, PAD_SUFFIX
from kiln.schedules.x86.common import (
    MIN_PARALLEL_ELEMS,
    block_name,
    extent,
    inline_pointwise,
    output_blocks,
    runs_more_than,
    total_extent,
)
from kiln.schedules.x86.conv import vector_width

# The innermost window loop is unrolled up to this many taps (3x3 and 5x5 windows whole rows).
MAX_UNROLL_TAPS = 8


def schedule_pool(sch: s_tir.Schedule, pool: str, lanes: int) -> None:
    """Schedule the kernel of the pool node whose block is named ``pool`` (its window
    reduction is ``pool`` itself for max pooling, ``pool + ACC_SUFFIX`` otherwise)."""
    names = {block_name(sch, b) for b in sch.get_child_blocks(sch.get_sblock("root"))}
    pad = pool + PAD_SUFFIX if pool + PAD_SUFFIX in names else None
    if pool + ACC_SUFFIX in names:
        pool += ACC_SUFFIX
    is_output = pool in {block_name(sch, b) for b in output_blocks(sch)}
    inline_pointwise(sch, keep={pool, pad} - {None})
    block = sch.get_sblock(pool)
    loops = sch.get_loops(block)
    k = (len(loops) - 2) // 2
    spatial, window = loops[:2 + k], loops[2 + k:]
    total = total_extent(sch, spatial)         # None: a symbolic dim, taken as large
    width = extent(sch, spatial[-1])
    owl = lanes if width is None or width >= lanes else vector_width(width, lanes)
    owo, owi = sch.split(spatial[-1], [None, owl])
    sch.reorder(*spatial[:-1], owo, *window, owi)
    pads = _pad_in_task(sch, pad, spatial[:-1]) if pad is not None else []
    rows = sch.fuse(*spatial[:-1])
    if (total is None or total >= MIN_PARALLEL_ELEMS) and runs_more_than(sch, rows, 1):
        sch.parallel(rows)
    if window and extent(sch, window[-1]) <= MAX_UNROLL_TAPS:
        sch.unroll(window[-1])
    if owl > 1:
        sch.vectorize(owi)
    write_back = sch.cache_write(block, 0, "local")      # the accumulators, in registers
    if is_output:
        out = write_back
    else:
        sch.compute_inline(write_back)                    # the epilogue reads them directly
        (out,) = output_blocks(sch)
    sch.reverse_compute_at(out, owo)
    inner = sch.get_loops(out)[-1]
    if owl > 1 and runs_more_than(sch, inner, 1):
        sch.vectorize(inner)
    if window:
        sch.decompose_reduction(block, window[0])
    for part in pads:
        own = sch.get_loops(part)[1:]          # below the task's (fused) row loop
        if own and runs_more_than(sch, own[-1], lanes - 1):
            j = own[-1]
            _, ji = sch.split(j, [None, lanes])
            sch.vectorize(ji)


def _pad_in_task(sch: s_tir.Schedule, pad: str, rows: list) -> list:
    """Make the padded rows one output row's windows read inside its task (in cache; rows
    that neighbouring tasks share are padded again, kernel / stride times). A guarded copy
    vectorises badly (LLVM gets one scalar load per lane), so when the guard is a rectangle
    (one stride phase) the pad value is filled first and the inside copied unguarded. Placed
    before the row loops are fused, while the rows' indices are still affine."""
    p = sch.get_sblock(pad)
    sch.compute_at(p, rows[-1])
    loops = sch.get_loops(p)
    if len(loops) > len(rows) and sch.can_decompose_padding(p, loops[len(rows)]):
        first = loops[len(rows)]
        return [sch.decompose_padding(p, first), p]
    return [p]
