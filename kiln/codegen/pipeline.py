"""The compile pipeline, one call per stage (as Halide's Lower.cpp): every stage's output is
kept on the ``Compilation`` so ``kiln inspect`` and tests can look at it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import tvm
from tvm import tirx
from tvm.relax.backend.cpu_generic import pipeline as cpu_generic
from tvm.relax.backend.cuda import pipeline as cuda_pipeline

from kiln.codegen import cuda
from kiln.codegen.assemble import assemble
from kiln.codegen.lower import Kernel, check_cuda_support, cuda_attention, lower_group
from kiln.errors import InternalError
from kiln.ir.graph import Graph
from kiln.ir.passes import FusedGraph, fuse_groups, optimize
from kiln.ir.passes.fuse import Group, cpu_attention
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
    seconds: dict[str, float] = field(default_factory=dict)    # each stage's compile time

    def kernel(self, name: str) -> Kernel:
        for k in self.kernels:
            if k.name == name:
                return k
        from kiln.errors import KilnError
        raise KilnError(f"no kernel named {name!r}; kernels: "
                        + ", ".join(k.name for k in self.kernels))


def lower_graph(g: Graph, target: str | Target = "x86",
                knobs_for: Callable[[Group], Any] | None = None) -> Compilation:
    """Every stage up to the Relax module, without invoking LLVM. ``knobs_for`` gives a
    group's tuned knobs, or None for the template's defaults."""
    tgt = get_target(target)
    clock = Clock()
    optimized = clock("graph passes", optimize, g)
    fused = clock("fusion", fuse_groups, optimized,
                  attention=cuda_attention if tgt.is_cuda else cpu_attention)
    if tgt.is_cuda:
        check_cuda_support(fused.groups)
    kernels = clock("TE and schedules", lambda: [
        lower_group(grp, tgt, knobs=knobs_for(grp) if knobs_for else None)
        for grp in fused.groups])
    relax_module = clock("Relax module", assemble, optimized, kernels)
    return Compilation(tgt, g, optimized, fused, kernels, relax_module, seconds=clock.seconds)


class Clock:
    """Runs a stage and adds its wall time to ``seconds[name]``."""

    def __init__(self, seconds: dict[str, float] | None = None) -> None:
        self.seconds = seconds if seconds is not None else {}

    def __call__(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def build(c: Compilation) -> Compilation:
    """Compile the Relax module to machine code for the target.

    kiln's Relax module holds nothing but ``call_tir``s of scheduled kernels, so of TVM's CPU
    pipeline only the lowering half runs (dataflow lowering, static memory planning, VM
    lowering); its legalize-and-fuse half would re-fuse kiln's kernels with TVM's own rules.
    The result is checked: a PrimFunc kiln did not schedule (TVM's defaults run at 0.6 GFLOP/s
    on a GEMM) must never reach the library.
    """
    target = c.target.tvm()
    backend = cuda_pipeline if c.target.is_cuda else cpu_generic
    passes = backend.dataflow_lower_passes(target) + backend.finalize_passes(target)
    if c.target.is_cuda:
        cuda.prepare_build()       # device code as a fatbin: the GPU host needs no compiler
    clock = Clock(c.seconds)
    with target:
        lowered = clock("Relax lowering", tvm.transform.Sequential(passes), c.relax_module)
    ours = {k.name for k in c.kernels}
    # shape_func*: the VM's scalar arithmetic on symbolic dims (VMShapeLower), not a kernel
    extra = sorted(gv.name_hint for gv, f in lowered.functions.items()
                   if isinstance(f, tirx.PrimFunc) and gv.name_hint not in ours
                   and not gv.name_hint.startswith("shape_func"))
    if extra:
        raise InternalError(f"the Relax pipeline added unscheduled kernels: {', '.join(extra)}")
    # cuda: global -> shared copies in a pipelined loop's async stage become cp.async
    config = {"tirx.use_async_copy": True} if c.target.is_cuda else {}
    with target, tvm.transform.PassContext(config=config):
        c.executable = clock("TIR lowering and codegen", tvm.compile, lowered, target=target,
                             relax_pipeline=None)
    return c
