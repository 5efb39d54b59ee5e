"""Graph passes, in the order ``optimize`` runs them."""

from __future__ import annotations

from kiln.ir.graph import Graph
from kiln.ir.passes.dce import eliminate_dead_code
from kiln.ir.passes.fold import fold_constants
from kiln.ir.passes.fuse import FusedGraph, Group, fuse_groups
from kiln.ir.passes.simplify import simplify_graph
from kiln.ir.passes.tabulate import tabulate_byte_functions
from kiln.ir.verify import verify


def optimize(g: Graph) -> Graph:
    """Verify, fold constants, simplify (written-out norms and GELUs become one op, so they
    fuse and schedule as units; it needs the folded constants), drop dead code (folding can
    kill the nodes that fed it), then tabulate byte functions (a quantized model's activation
    chains become 256-entry lookups; a dead reader would keep a chain's value alive). Returns
    a new graph; ``g`` is not modified."""
    verify(g)
    g = g.copy()
    fold_constants(g)
    simplify_graph(g)
    eliminate_dead_code(g)
    tabulate_byte_functions(g)
    verify(g)
    return g


__all__ = ["FusedGraph", "Group", "eliminate_dead_code", "fold_constants", "fuse_groups",
           "optimize", "simplify_graph", "tabulate_byte_functions"]
