"""The compile pipeline, one call per stage (as Halide's Lower.cpp): every stage's output is
kept on the ``Compilation`` so ``kiln inspect`` and tests can look at it."""

from __future__ import annotations

from dataclasses import dataclass, field

import tvm

from kiln.codegen.assemble import assemble
from kiln.codegen.lower import Kernel, lower_group
from kiln.ir.graph import Graph
from kiln.ir.passes import FusedGraph, fuse_groups, optimize
from kiln.target import Target, get_target


@dataclass
class Compilation:
    """Every stage of one compile: graph -> optimized -> fused -> kernels -> Relax -> binary."""

    target: Target
    graph: Graph
    optimized: Graph
    fused: FusedGraph
    kernels: list[Kernel]
    relax_module: tvm.IRModule
    executable: object = field(default=None, repr=False)

    def kernel(self, name: str) -> Kernel:
        for k in self.kernels:
            if k.name == name:
                return k
        from kiln.errors import KilnError
        raise KilnError(f"no kernel named {name!r}; kernels: "
                        + ", ".join(k.name for k in self.kernels))


def lower_graph(g: Graph, target: str | Target = "x86") -> Compilation:
    """Every stage up to the Relax module, without invoking LLVM."""
    tgt = get_target(target)
    optimized = optimize(g)
    fused = fuse_groups(optimized)
    kernels = [lower_group(grp, tgt) for grp in fused.groups]
    return Compilation(tgt, g, optimized, fused, kernels, assemble(optimized, kernels))


def build(c: Compilation) -> Compilation:
    """Compile the Relax module to machine code for the target."""
    c.executable = tvm.compile(c.relax_module, target=tvm.target.Target(c.target.tvm_target))
    return c
