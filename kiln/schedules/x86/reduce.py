"""x86 templates for reduction groups: softmax, layer_norm, reduce_* and their fused
prologues and epilogues.

Row reductions (the reduced axes are the trailing ones) get one parallel task per row::

    parallel for row:
      cached[:] = prologue(x[row, :])               # kept only if several passes read it
      partial[0:4*lanes] = reduce(cached[k : k + 4*lanes] for k)   # 4 vector accumulators
      partial[0:n/2] = partial[0:n/2] (+) partial[n/2:n]   # folded in vector halves to 2
      stat = partial[0] (+) partial[1]              # max, sum; then mean, 1/std...
      y[row, :] = epilogue(cached[:], stat)         # vectorised

Other reductions run with the innermost output axis vectorised and the outermost parallel.
"""

from __future__ import annotations

from tvm import s_tir

from kiln.schedules.x86.common import (
    block_name,
    blocks,
    extent,
    inline_pointwise,
    is_reduction,
    output_blocks,
    runs_more_than,
    schedule_pointwise,
    total_extent,
    worth_parallel,
)

# Independent accumulators per row reduction. A vector add or max has 4 cycles of latency and
# two issue ports, so a single zmm accumulator runs the loop at 1/8 of the core's rate; four
# chains (a 64-float partial that LLVM keeps in 4 zmm registers) hide most of the latency.
CHAINS = 4
FOLD_MIN = 2     # partials folded in vector halves down to this many, then a scalar loop


def _rfactor_lanes(sch: s_tir.Schedule, block, lanes: int) -> list[str]:
    """Split the innermost reduce loop into vector partial results (``rfactor``) so the
    reduction runs on vectors: ``CHAINS`` vectors of partials when the row is long enough,
    then folded in halves (more rfactors) down to ``FOLD_MIN`` lanes, then to the scalar.
    Returns the partial blocks' names; none when no vector width divides the loop (an
    imperfect split is never used: rfactor would read past the row)."""
    r = sch.get_loops(block)[-1]
    n = extent(sch, r)
    widths = (lanes * CHAINS, lanes, lanes // 2, lanes // 4)
    width = None if n is None else next(    # a symbolic row length: no split is known exact
        (w for w in widths if w > 1 and n % w == 0 and n >= 2 * w), None)
    if width is None:
        return []
    _, ri = sch.split(r, [None, width])
    names = [block_name(sch, sch.rfactor(ri, 0))]
    # The block now reduces `width` partials. Fold them in halves, each half a vector op
    # (64 -> 32 -> ... -> 2 -> the scalar): log2(width) dependent steps instead of a scalar
    # chain of `width` adds, which on short rows (attention's 128) costs more than the row.
    while width > FOLD_MIN:
        width //= 2
        _, ri = sch.split(sch.get_loops(block)[-1], [None, width])
        names.append(block_name(sch, sch.rfactor(ri, 0)))
    return names


def _vectorize_last(sch: s_tir.Schedule, loop, lanes: int) -> None:
    if runs_more_than(sch, loop, 1):
        _, vi = sch.split(loop, [None, lanes])
        sch.vectorize(vi)


def schedule_row_reduction(sch: s_tir.Schedule, row_rank: int, lanes: int) -> None:
    """Schedule a kernel whose output's first ``row_rank`` axes index independent rows and
    whose reductions all run over the remaining (trailing) axes of a row."""
    inline_pointwise(sch, only_single_use=True)
    # the work is the elements a pass reads (rows x row length), not the output's size: an
    # arg_max or a log-sum-exp writes one value per row however long the row is
    sizes = [total_extent(sch, sch.get_loops(b)) for b in blocks(sch)]
    work = None if None in sizes else max(sizes, default=0)
    reductions = [b for b in blocks(sch) if is_reduction(sch, b)]
    # A reduction to a scalar (no row axes) stays one scalar loop: TVM 0.27's rfactor fails
    # on rank-0 blocks ("block_realize == old_block_realize_"). Rare in inference (losses).
    if row_rank == 0:
        reductions = []
    partials = {p for b in reductions for p in _rfactor_lanes(sch, b, lanes)}
    (out,) = output_blocks(sch)
    loops = sch.get_loops(out)
    # when the output is itself the (cross-lane) reduction, its loops past the rows reduce
    rows, inner = loops[:row_rank], ([] if is_reduction(sch, out) else loops[row_rank:])
    if inner:
        _vectorize_last(sch, sch.fuse(*inner) if len(inner) > 1 else inner[0], lanes)
    row = None
    if rows:
        row = sch.fuse(*rows) if len(rows) > 1 else rows[0]
        if runs_more_than(sch, row, 1) and worth_parallel(work):
            sch.parallel(row)
        for b in reversed(blocks(sch)[:-1]):   # consumers first, so each lands inside the row
            sch.compute_at(b, row)
    depth = 1 if row is not None else 0
    for b in blocks(sch)[:-1]:
        name = block_name(sch, b)
        body = sch.get_loops(b)[depth:]
        if name in partials:                 # [lanes, reduce...] -> reduce loops, then lanes
            lane, *red = body
            sch.reorder(*red, lane)
            sch.vectorize(lane)
            sch.decompose_reduction(b, red[0])
        elif not is_reduction(sch, b) and body:   # a cached row
            _vectorize_last(sch, sch.fuse(*body) if len(body) > 1 else body[0], lanes)


def schedule_generic_reduction(sch: s_tir.Schedule, lanes: int) -> None:
    """Reductions over leading or middle axes: each block on its own; a reduction block runs
    its reduce loops outside the innermost output axis, which is vectorised, with the
    outermost output axis in parallel."""
    inline_pointwise(sch, only_single_use=True)
    for b in blocks(sch):
        if not is_reduction(sch, b):
            schedule_pointwise(sch, b, lanes)
            continue
        kinds = [int(iv.iter_type) for iv in sch.get(b).iter_vars]
        loops = sch.get_loops(b)
        spatial = [lp for lp, t in zip(loops, kinds, strict=True) if t == 0]
        reduce_ = [lp for lp, t in zip(loops, kinds, strict=True) if t == 2]
        if not spatial:
            continue
        sch.reorder(*spatial[:-1], *reduce_, spatial[-1])
        if len(spatial) > 1 and runs_more_than(sch, spatial[0], 1):
            sch.parallel(spatial[0])
        _vectorize_last(sch, spatial[-1], lanes)
        sch.decompose_reduction(b, reduce_[0])
