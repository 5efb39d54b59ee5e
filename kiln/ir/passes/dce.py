"""Dead-code elimination: drop nodes none of whose outputs reach a graph output."""

from __future__ import annotations

from kiln.ir.graph import Graph


def eliminate_dead_code(g: Graph) -> int:
    """Remove unreachable nodes in place; returns how many were removed."""
    live: set[int] = {id(v) for v in g.outputs}
    kept = []
    for n in reversed(g.nodes):
        if any(id(o) in live for o in n.outputs):
            kept.append(n)
            live.update(id(v) for v in n.inputs)
    removed = len(g.nodes) - len(kept)
    g.nodes = kept[::-1]
    return removed
