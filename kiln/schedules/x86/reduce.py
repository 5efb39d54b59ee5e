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

from dataclasses import dataclass

from tvm import s_tir, sym, tirx
from tvm.runtime import DataType

from kiln.errors import KnobError
from kiln.schedules.x86 import tir_edit
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

# Rows up to this size get the next row prefetched while they are reduced (it then arrives in
# L1 along with the current one); longer rows keep the hardware prefetcher's stream.
PREFETCH_MAX_ROW_BYTES = 16384


@dataclass(frozen=True)
class RowReductionKnobs:
    """``chains``: independent vector accumulators per row. A vector add or max has 4 cycles
    of latency and two issue ports, so one accumulator runs the loop at 1/8 of the core's
    rate; four (a 64-float partial LLVM keeps in 4 zmm) hide most of it. ``fold_min``: the
    partials are folded in vector halves down to this many lanes, then a scalar loop.
    ``prefetch``: the next row (up to 16 KiB) is prefetched during this row's first pass."""

    chains: int = 4
    fold_min: int = 2
    prefetch: bool = True


def check_row_knobs(cfg: RowReductionKnobs) -> None:
    for name in ("chains", "fold_min"):
        v = getattr(cfg, name)
        if v < 1 or v & (v - 1):
            raise KnobError(f"row reduction knob {name}={v} must be a power of two >= 1")
    if cfg.fold_min < 2:
        raise KnobError(f"row reduction knob fold_min={cfg.fold_min} must be >= 2")


def _rfactor_lanes(sch: s_tir.Schedule, block, lanes: int,
                   cfg: RowReductionKnobs) -> list[str]:
    """Split the innermost reduce loop into vector partial results (``rfactor``) so the
    reduction runs on vectors: ``cfg.chains`` vectors of partials when the row is long
    enough, then folded in halves (more rfactors) down to ``cfg.fold_min`` lanes, then to
    the scalar. Returns the partial blocks' names; none when no vector width divides the
    loop (an imperfect split is never used: rfactor would read past the row)."""
    r = sch.get_loops(block)[-1]
    n = extent(sch, r)
    widths = (lanes * cfg.chains, lanes, lanes // 2, lanes // 4)
    width = None if n is None else next(    # a symbolic row length: no split is known exact
        (w for w in widths if w > 1 and n % w == 0 and n >= 2 * w), None)
    if width is None:
        return []
    _, ri = sch.split(r, [None, width])
    names = [block_name(sch, sch.rfactor(ri, 0))]
    # The block now reduces `width` partials. Fold them in halves, each half a vector op
    # (64 -> 32 -> ... -> 2 -> the scalar): log2(width) dependent steps instead of a scalar
    # chain of `width` adds, which on short rows (attention's 128) costs more than the row.
    while width > cfg.fold_min:
        width //= 2
        _, ri = sch.split(sch.get_loops(block)[-1], [None, width])
        names.append(block_name(sch, sch.rfactor(ri, 0)))
    return names


def _vectorize_last(sch: s_tir.Schedule, loop, lanes: int) -> None:
    if runs_more_than(sch, loop, 1):
        _, vi = sch.split(loop, [None, lanes])
        sch.vectorize(vi)


def schedule_row_reduction(sch: s_tir.Schedule, row_rank: int, lanes: int,
                           cfg: RowReductionKnobs | None = None) -> tirx.PrimFunc:
    """Schedule a kernel whose output's first ``row_rank`` axes index independent rows and
    whose reductions all run over the remaining (trailing) axes of a row. Returns the
    scheduled function with the edits schedules cannot make (``tir_edit``): the cached row
    the output reads kept in the output itself, and the next row prefetched."""
    cfg = cfg or RowReductionKnobs()
    check_row_knobs(cfg)
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
    partials = {p for b in reductions for p in _rfactor_lanes(sch, b, lanes, cfg)}
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
    fusions = []
    for b in blocks(sch)[:-1]:
        name = block_name(sch, b)
        body = sch.get_loops(b)[depth:]
        if name in partials:                 # [lanes, reduce...] -> reduce loops, then lanes
            lane, *red = body
            sch.reorder(*red, lane)
            sch.vectorize(lane)
        elif not is_reduction(sch, b) and body:   # a cached row
            loop = sch.fuse(*body) if len(body) > 1 else body[0]
            fused = _chunk_for_partial(sch, b, loop, partials, lanes)
            if fused:
                fusions.append(fused)
            else:
                _vectorize_last(sch, loop, lanes)
    for partial, chunk in fusions:
        sch.reverse_compute_at(partial, chunk)
        sch.vectorize(sch.get_loops(partial)[-1])
    vector_partials = [b for b in blocks(sch)[:-1] if block_name(sch, b) in partials]
    for b in vector_partials:        # each keeps its handle: it is now the update block
        sch.decompose_reduction(b, sch.get_loops(b)[depth])
    in_place = _cached_row_of_output(sch, out)
    prefetches = (_prefetch_next_row(sch, row, vector_partials[0], row_rank)
                  if row is not None and vector_partials and cfg.prefetch else None)
    func = sch.mod["main"]
    if in_place:
        func = tir_edit.alias_to_output(func, *in_place)
    if prefetches:
        func = tir_edit.prepend_to_loop(func, *prefetches)
    return func


def _cached_row_of_output(sch: s_tir.Schedule, out) -> tuple | None:
    """(cached row, output buffer) when the output block reads a cached row at the very index
    it writes (softmax's ``y = e * (1 / sum)``): the row can live in the output's memory.
    The output block runs last in its row, after every other reader of the cached row."""
    block = sch.get(out)
    if len(block.writes) != 1:
        return None
    (written,) = block.writes
    scratch = sch.get(sch.get_sblock("root")).alloc_buffers
    for read in block.reads:
        buf = read.source
        if (any(buf.same_as(b) for b in scratch) and buf.dtype == written.source.dtype
                and len(buf.shape) == len(written.source.shape)
                and all(tir_edit.equal(a, b) for a, b in zip(buf.shape, written.source.shape,
                                                             strict=True))
                and tir_edit.same_region(read.region, written.region)):
            return buf, written.source
    return None


def _prefetch_next_row(sch: s_tir.Schedule, row, first, row_rank: int) -> tuple | None:
    """Prefetches of the next row's input, spread over the first pass of this row: each
    chunk of the ``first`` vector partial (``chains`` vectors) prefetches the same chunk of
    the next row. The hardware prefetcher does not cross a 4 KiB page and a row often is one, so
    without this each row starts on cache misses the core waits for. Returns (the chunk
    loop's variable, the prefetch statements), or None where the first pass reads no input
    laid out row by row."""
    chunk_rv, lane_rv = sch.get_loops(first)[1], sch.get_loops(first)[-1]
    chunk, rows, width = sch.get(chunk_rv), sch.get(row), extent(sch, lane_rv)
    params = sch.mod["main"].params
    stmts = []
    for read in sch.get(first).reads:
        buf = read.source
        if width is None or not any(buf.same_as(p) for p in params):
            continue
        row_len = _product(buf.shape[row_rank:])
        itemsize = DataType(buf.dtype).bits // 8
        lines, rest = divmod(width * itemsize, tir_edit.CACHE_LINE)
        if (rest or not lines or not tir_edit.equal(row_len, chunk.extent * width)
                or not tir_edit.equal(_product(buf.shape[:row_rank]), rows.extent)
                or not isinstance(row_len, tirx.IntImm)
                or int(row_len) * itemsize > PREFETCH_MAX_ROW_BYTES):
            continue
        nxt = tirx.min(rows.loop_var + 1, rows.extent - 1)
        stmts += [tir_edit.prefetch(buf, nxt * row_len + chunk.loop_var * width
                                    + j * (tir_edit.CACHE_LINE // itemsize))
                  for j in range(lines)]
    return (chunk.loop_var, stmts) if stmts else None


def _product(dims) -> tirx.PrimExpr:
    total = tirx.const(1, "int64") if not dims else dims[0]
    for d in dims[1:]:
        total = total * d
    return sym.Analyzer().simplify(total)


def _chunk_for_partial(sch: s_tir.Schedule, cached, loop, partials: set[str], lanes: int):
    """A cached row that a vector partial reduction alone consumes first (softmax's
    e = exp(x - max): the sum reads it, then the output) is computed in chunks of the
    partial's width, and the partial's update goes inside each chunk: one pass over the row
    computes, stores and accumulates it, where two passes would write it and read it back.
    Returns (the partial block, the chunk loop) to fuse, or None where the shapes don't
    allow it (a row over several axes; the partial reading other blocks too)."""
    for consumer in sch.get_consumers(cached):
        if block_name(sch, consumer) not in partials:
            continue
        width = int(sch.get(consumer).iter_vars[0].dom.extent)     # the rfactor's lanes
        n = extent(sch, loop)
        if (len(sch.get_producers(consumer)) != 1 or n is None or n % width or width % lanes
                or len(sch.get_loops(consumer)) != len(sch.get_loops(cached)) + 1):
            return None
        chunk, inner = sch.split(loop, [None, width])
        _vectorize_last(sch, inner, lanes)
        return consumer, chunk
    return None


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
