"""Schedule primitives shared by the x86 templates: inlining, loop queries, the pointwise nest."""

from __future__ import annotations

from tvm import s_tir, tirx

# Below this many output elements a kernel runs on one thread: waking the pool costs a few
# microseconds, more than the work it would split.
MIN_PARALLEL_ELEMS = 16384


def blocks(sch: s_tir.Schedule) -> list:
    """The kernel's blocks in program (producer-first) order."""
    return list(sch.get_child_blocks(sch.get_sblock("root")))


def block_name(sch: s_tir.Schedule, block) -> str:
    return str(sch.get(block).name_hint)


def extent(sch: s_tir.Schedule, loop) -> int | None:
    """The loop's trip count; ``None`` when it depends on a symbolic dim."""
    e = sch.get(loop).extent
    return int(e) if isinstance(e, tirx.IntImm) else None


def runs_more_than(sch: s_tir.Schedule, loop, n: int) -> bool:
    """Whether ``loop`` runs more than ``n`` times; a symbolic loop is taken to."""
    e = extent(sch, loop)
    return e is None or e > n


def total_extent(sch: s_tir.Schedule, loops: list) -> int | None:
    """The product of the loops' trip counts; ``None`` when one is symbolic."""
    total = 1
    for lp in loops:
        e = extent(sch, lp)
        if e is None:
            return None
        total *= e
    return total


def worth_parallel(total: int | None) -> bool:
    """Enough work to wake the thread pool (a symbolic size is taken to be)."""
    return total is None or total >= MIN_PARALLEL_ELEMS


def is_reduction(sch: s_tir.Schedule, block) -> bool:
    return any(int(iv.iter_type) == 2 for iv in sch.get(block).iter_vars)  # 2: CommReduce


def output_blocks(sch: s_tir.Schedule) -> list:
    return list(sch.get_output_blocks(sch.get_sblock("root")))


def inline_pointwise(sch: s_tir.Schedule, keep: set[str] = frozenset(),
                     only_single_use: bool = False) -> None:
    """Inline every non-output, non-reduction block not named in ``keep`` into its consumers,
    consumers first. With ``only_single_use``, a block read by several blocks stays (it is then
    computed once and cached instead of recomputed per reader)."""
    outs = {block_name(sch, b) for b in output_blocks(sch)}
    for b in reversed(blocks(sch)):
        name = block_name(sch, b)
        if name in keep or name in outs or is_reduction(sch, b):
            continue
        if only_single_use and len(sch.get_consumers(b)) > 1:
            continue
        sch.compute_inline(b)


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
        vo, vi = sch.split(inner, [None, lanes])
        sch.vectorize(vi)
        outer = [*outer, vo]
    if worth_parallel(total) and outer:
        sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])
