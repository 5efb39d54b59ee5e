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
from kiln.codegen.lower import (
    IN_PLACE_OPS,
    Kernel,
    check_cuda_support,
    cuda_attention,
    lower_group,
)
from kiln.errors import InternalError
from kiln.ir.graph import Graph
from kiln.ir.passes import FusedGraph, fuse_groups, optimize
from kiln.ir.passes.fuse import Group, cpu_attention
from kiln.schedules.compute.inline_size import pointwise_size
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
    entry: str = "main"                     # the library function that runs this graph

    def kernel(self, name: str) -> Kernel:
        for k in self.kernels:
            if k.name == name:
                return k
        from kiln.errors import KilnError
        raise KilnError(f"no kernel named {name!r}; kernels: "
                        + ", ".join(k.name for k in self.kernels))


def lower_graph(g: Graph, target: str | Target = "x86",
                knobs_for: Callable[[Group], Any] | None = None,
                entry: str = "main") -> Compilation:
    """Every stage up to the Relax module, without invoking LLVM. ``knobs_for`` gives a
    group's tuned knobs, or None for the template's defaults. ``entry`` names the library
    function; other than ``main``, it prefixes the kernel names (unique across functions)."""
    tgt = get_target(target)
    clock = Clock()
    optimized = clock("graph passes", optimize, g)
    fused = clock("fusion", fuse_groups, optimized,
                  attention=cuda_attention if tgt.is_cuda else cpu_attention,
                  inline_size=pointwise_size)
    if tgt.is_cuda:
        check_cuda_support(fused.groups)
    prefix = "" if entry == "main" else f"{entry}_"
    in_place = writable_in_place(optimized, fused.groups)
    kernels = clock("TE and schedules", lambda: [
        lower_group(grp, tgt, name=prefix + grp.name,
                    knobs=knobs_for(grp) if knobs_for else None, in_place=i in in_place)
        for i, grp in enumerate(fused.groups)])
    relax_module = clock("Relax module", assemble, {entry: (optimized, kernels)}, tgt)
    return Compilation(tgt, g, optimized, fused, kernels, relax_module, seconds=clock.seconds,
                       entry=entry)


def writable_in_place(g: Graph, groups: list[Group]) -> set[int]:
    """The groups (by index, in run order) whose in-place kernel may store into its input:
    the input is not a weight, not an output of the graph, and no later kernel reads it. A
    graph input qualifies (the caller's cache is updated, as documented); the others get a
    kernel that copies first."""
    safe = set()
    outputs = {id(v) for v in g.outputs}
    for i, grp in enumerate(groups):
        if grp.anchor is None or grp.anchor.op.name not in IN_PLACE_OPS:
            continue
        x = grp.anchor.inputs[0]
        later = any(x in later.inputs for later in groups[i + 1:])
        if not (x.is_constant or id(x) in outputs or later):
            safe.add(i)
    return safe


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


def build(c: Compilation, *others: Compilation) -> Compilation:
    """Compile the Relax module to machine code for the target; ``others`` (entry points
    lowered with distinct ``entry`` names, for the same target) join ``c`` in one library.

    kiln's Relax module holds nothing but ``call_tir``s of scheduled kernels, so of TVM's CPU
    pipeline only the lowering half runs (dataflow lowering, static memory planning, VM
    lowering); its legalize-and-fuse half would re-fuse kiln's kernels with TVM's own rules.
    The result is checked: a PrimFunc kiln did not schedule (TVM's defaults run at 0.6 GFLOP/s
    on a GEMM) must never reach the library.
    """
    target = c.target.tvm()
    module = c.relax_module
    if others:
        if any(o.target.name != c.target.name for o in others):
            raise InternalError("the entry points of one library must share a target")
        module = assemble({x.entry: (x.optimized, x.kernels) for x in (c, *others)}, c.target)
    backend = cuda_pipeline if c.target.is_cuda else cpu_generic
    passes = backend.dataflow_lower_passes(target) + backend.finalize_passes(target)
    if c.target.is_cuda:
        cuda.prepare_build()       # device code as a fatbin: the GPU host needs no compiler
    clock = Clock(c.seconds)
    with target:
        lowered = clock("Relax lowering", tvm.transform.Sequential(passes), module)
    ours = {k.name for x in (c, *others) for k in x.kernels}
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
    for o in others:
        o.executable = c.executable
    return c
