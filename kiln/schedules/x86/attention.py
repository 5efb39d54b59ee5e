"""The x86 attention template: scores, softmax and the weighted sum of values in one kernel.

    O[b, i, :] = softmax(scale(Q[b, i, :] @ K^T[b] + mask))  @ V[b]       (per batch/head b)

One parallel task per block of ``bq`` query rows, which keeps only its own bq x S block of
scores (in L1/L2 for S up to thousands): the T x S matrix never exists in memory::

    parallel for b, jo: Kp[b, jo, :, :] = K^T[b, :, jo*lanes : +lanes]   # panels, once
    parallel for b, io:                   # bq query rows of one batch/head
      for jo:                             # scores, one bq x lanes register tile at a time
        acc[bq, lanes] = 0
        for d: for ii (unrolled): acc[ii, :] += Q[ii, d] * Kp[jo, d, :]
        S[:, jo*lanes : +lanes] = acc
      max, e = exp(scale(S) + mask - max), sum, P = e / sum    # row passes on vectors
      for co:                             # output, one bq x nv register tile at a time
        acc[bq, nv] = 0
        for j: for ii (unrolled): acc[ii, :] += P[ii, j] * V[j, co*nv : +nv]
        O[tile] = acc

The scores are exact two-pass softmax over whole rows (not flash attention's online rescaling):
a block of rows fits the cache, so one max and one exp per score are all it costs.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir, tirx

from kiln.errors import KnobError
from kiln.schedules.x86.common import (
    blocks,
    extent,
    inline_pointwise,
    is_reduction,
    output_blocks,
    runs_more_than,
)
from kiln.schedules.x86.gemm import register_tile_epilogue
from kiln.target import Isa


@dataclass(frozen=True)
class AttentionKnobs:
    """``bq`` query rows per task (the register tiles' rows); ``nv`` output columns per
    register tile of O (whole vectors)."""

    bq: int
    nv: int


def default_attention_knobs(t: int, dv: int, isa: Isa) -> AttentionKnobs:
    """AVX-512: 8 rows; O's tile is 8 x 32 (16 zmm accumulators + 2 of V + 1 broadcast), the
    scores' 8 x 16 (8 + 1 + 1). AVX2: 6 rows, 6 x 16 and 6 x 8 (12 + 2 + 1 of 16 ymm)."""
    lanes = isa.lanes("float32")
    bq = min(8 if isa is Isa.AVX512 else 6, t)
    nv = 2 * lanes if dv >= 2 * lanes else lanes
    return AttentionKnobs(bq=bq, nv=nv)


def check_attention_knobs(cfg: AttentionKnobs, isa: Isa) -> None:
    lanes = isa.lanes("float32")
    if cfg.bq < 1 or cfg.nv < lanes or cfg.nv % lanes:
        raise KnobError(f"attention knobs {cfg}: bq must be >= 1 and nv whole vectors of "
                        f"{lanes}")
    if cfg.bq * cfg.nv // lanes + cfg.nv // lanes + 1 > isa.vector_registers:
        raise KnobError(f"attention register tile {cfg.bq}x{cfg.nv} needs more than the "
                        f"{isa.vector_registers} vector registers")


def schedule_attention(sch: s_tir.Schedule, scores: str, cfg: AttentionKnobs, isa: Isa) -> None:
    """Schedule the attention kernel whose first matmul block is named ``scores`` (see the
    module docstring for the loop nest)."""
    check_attention_knobs(cfg, isa)
    lanes = isa.lanes("float32")
    (out,) = output_blocks(sch)
    # P = e * (1 / sum) stays a block: inlined, the multiply would join every FMA of O's tile
    (probs,) = sch.get_producers(out)
    inline_pointwise(sch, keep={sch.get(probs).name_hint}, only_single_use=True)
    out_name = sch.get(out).name_hint
    # the row reductions (max, sum): one vector of partial results per row (rfactor; before
    # compute_at, which rfactor cannot follow), summed to the row's scalar afterwards
    partials = [_vector_partial(sch, b, lanes) for b in blocks(sch) if is_reduction(sch, b)
                and sch.get(b).name_hint not in (scores, out_name)]
    rows = [sch.get(b).name_hint for b in blocks(sch) if sch.get(b).name_hint not in
            (scores, out_name)]
    packed = _pack_keys(sch, sch.get_sblock(scores), lanes)
    # the output: [batch..., i, c, j] -> parallel (batch, io); co; j; ii (unrolled); ci (vector)
    *batch, i, c, j = sch.get_loops(out)
    io, ii = sch.split(i, [None, cfg.bq])
    co, ci = sch.split(c, [None, cfg.nv])
    sch.reorder(*batch, io, co, j, ii, ci)
    task = sch.fuse(*batch, io)
    sch.parallel(task)
    for b in reversed(blocks(sch)[:-1]):              # consumers first, each inside the task
        if sch.get(b).name_hint != packed:
            sch.compute_at(b, task)
    sch.unroll(ii)
    sch.vectorize(ci)
    register_tile_epilogue(sch, out, co, fuse=False)
    sch.decompose_reduction(out, j)
    _scores_tile(sch, sch.get_sblock(scores), lanes)
    for name in rows:
        _row_pass(sch, sch.get_sblock(name), lanes)
    for partial in partials:
        if partial is not None:
            _partial_loops(sch, partial, lanes)


def _pack_keys(sch: s_tir.Schedule, scores, lanes: int) -> str | None:
    """K^T [..., d, S] copied, before the tasks, into panels [..., S / lanes, d, lanes]: the
    scores tile reads a vector of K^T per d, and in K^T's own layout those vectors are a row
    (S floats, 4 KiB at S = 1024) apart, so the d loop's loads all fall in one L1 set and evict
    one another; packed, they are consecutive. The copy is K's size, once per call. Returns
    the packing block's name (None where S is not whole vectors: K^T is read in place)."""
    block = sch.get(scores)
    n = None
    for index, region in enumerate(block.reads):
        shape = region.source.shape
        if len(shape) >= 2 and region.source.same_as(block.reads[-1].source):
            n, kt_index = shape[-1], index
    if n is None or not isinstance(n, tirx.IntImm) or int(n) % lanes:
        return None
    packed = sch.cache_read(scores, kt_index, "global")
    sch.transform_layout(scores, ("read", kt_index),
                         lambda *i: (*i[:-2], i[-1] // lanes, i[-2], i[-1] % lanes))
    *batch, d, j = sch.get_loops(packed)
    jo, ji = sch.split(j, [None, lanes])
    sch.reorder(*batch, jo, d, ji)
    sch.vectorize(ji)
    sch.parallel(sch.fuse(*batch, jo))
    return sch.get(packed).name_hint


def _scores_tile(sch: s_tir.Schedule, block, lanes: int) -> None:
    """S[ii, j] = sum_d Q[ii, d] K^T[d, j] for the task's rows: a bq x lanes register tile per
    vector of keys, the d loop inside it, one load of K^T shared by the bq rows."""
    _task, ii, j, d = sch.get_loops(block)
    jo, ji = sch.split(j, [None, lanes])
    sch.reorder(jo, d, ii, ji)
    sch.unroll(ii)
    sch.vectorize(ji)
    register_tile_epilogue(sch, block, jo, fuse=False)
    sch.decompose_reduction(block, d)


def _vector_partial(sch: s_tir.Schedule, block, lanes: int):
    """Split a row reduction's axis into vectors and rfactor the lanes: returns the partial
    block (``None`` for a row that is not whole vectors: it stays a scalar loop)."""
    j = sch.get_loops(block)[-1]
    n = extent(sch, j)
    if n is None or n % lanes or n == lanes:
        return None
    _, ji = sch.split(j, [None, lanes])
    return sch.rfactor(ji, 0)


def _partial_loops(sch: s_tir.Schedule, partial, lanes: int) -> None:
    """The partial under the task is [lane, ii, jo]: run it as jo, ii (unrolled), lanes
    (vectorised), so the bq rows' vectors accumulate side by side (bq independent chains
    hide the 4-cycle latency of each add or max)."""
    loops = sch.get_loops(partial)[1:]
    if len(loops) != 3 or extent(sch, loops[0]) != lanes:
        return
    lane, ii, jo = loops
    sch.reorder(jo, ii, lane)
    sch.unroll(ii)
    sch.vectorize(lane)
    sch.decompose_reduction(partial, jo)


def _row_pass(sch: s_tir.Schedule, block, lanes: int) -> None:
    """A pass over the task's score rows (max, exp, sum, P): the last axis in vectors."""
    loops = sch.get_loops(block)[1:]
    if not loops:
        return
    if is_reduction(sch, block):
        return                                        # a per-row scalar reduction: short
    last = loops[-1]
    if runs_more_than(sch, last, 1) and (extent(sch, last) or 0) >= lanes:
        _, vi = sch.split(last, [None, lanes])
        sch.vectorize(vi)
