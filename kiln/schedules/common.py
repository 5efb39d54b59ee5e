"""Schedule helpers every target's templates use: block and loop queries, inlining."""

from __future__ import annotations

from tvm import s_tir, tirx


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
