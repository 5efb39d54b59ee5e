"""Every stage of compiling a model, as text: what ``kiln inspect`` prints, for Python.

    for s in kiln.inspect("bert.onnx", "scheduled", input_shapes={"input_ids": (1, 128)},
                          op="softmax"):
        print(s.title); print(s.text)

Stages, in pipeline order:

- ``graph``: the graph as imported; ``simplified``: after the graph passes; ``fused``: the
  fused groups, each with its anchor op and its epilogue;
- per kernel: ``te`` (its tensor expressions), ``tir`` (the PrimFunc before scheduling),
  ``scheduled`` (after the schedule, with the template's knob values and the trace of its
  primitives), ``lowered`` (after TVM's lowering pipeline), ``llvm``, ``asm`` (x86 or
  aarch64) and ``cuda`` (the CUDA C of a cuda target).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from kiln.codegen.lower import Kernel
from kiln.codegen.pipeline import Compilation
from kiln.codegen.stage_text import kernel_sources, lowered_tir, te_text
from kiln.compiler import Shapes, compile_stages, to_graph
from kiln.errors import KilnError
from kiln.ir.passes.fuse import Group
from kiln.target import Target

GRAPH_STAGES = ("graph", "simplified", "fused")
KERNEL_STAGES = ("te", "tir", "scheduled", "lowered", "llvm", "asm", "cuda")
STAGES = GRAPH_STAGES + KERNEL_STAGES
_CODE = {"llvm": ("ll", "llvm"), "asm": ("asm", "gas"), "cuda": ("cu", "cuda")}  # format, lexer


@dataclass
class StageText:
    """One stage of one kernel (or of the whole graph) as text."""

    stage: str
    title: str          # "kernel fused_softmax", "graph bert"
    text: str
    language: str       # the pygments lexer that colours it

    def __str__(self) -> str:
        comment = ";" if self.language == "llvm" else "//" if self.language == "cuda" else "#"
        return f"{comment} {self.title}\n{self.text}"


def inspect(model: object, stage: str, target: str | Target = "x86",
            input_shapes: Shapes | None = None, group: str | None = None,
            op: str | None = None, tuning_db: str | os.PathLike | None = None,
            constants: Mapping[str, np.ndarray] | None = None) -> list[StageText]:
    """``model`` at ``stage`` (one of ``STAGES``), for every kernel or only for the group
    named ``group`` or the groups holding an op of type ``op``."""
    _check(stage, group, op)
    if stage == "graph":        # before compile_stages: it prints before symbolic dims bind
        g = to_graph(model, input_shapes, constants)
        return [StageText(stage, f"graph {g.name}", str(g), "text")]
    return stage_texts(compile_stages(model, target, input_shapes, constants, tuning_db),
                       stage, group, op)


def stage_texts(c: Compilation, stage: str, group: str | None = None,
                op: str | None = None) -> list[StageText]:
    """``c`` at ``stage``: see ``inspect``."""
    _check(stage, group, op)
    if stage in ("graph", "simplified"):
        g = c.graph if stage == "graph" else c.optimized
        return [StageText(stage, f"graph {g.name}", str(g), "text")]
    if stage == "cuda" and not c.target.is_cuda:
        raise KilnError(f"--stage cuda needs a cuda target (--target cuda); this is "
                        f"{c.target.name}")
    groups = _select(c, group, op)
    if stage == "fused":
        if group is None and op is None:
            return [StageText(stage, f"fused graph {c.fused.graph.name}", str(c.fused), "text")]
        return [StageText(stage, f"group {g.name}", _group_text(g), "text") for g in groups]
    kernels = {k.name: k for k in c.kernels}
    chosen = [kernels[g.name] for g in groups]
    if stage in _CODE:
        fmt, lexer = _CODE[stage]
        code = kernel_sources([k.func for k in chosen], c.target, fmt)
        return [StageText(stage, f"kernel {k.name}", code[k.name], lexer) for k in chosen]
    return [_kernel_stage(k, c.target, stage) for k in chosen]


def _check(stage: str, group: str | None, op: str | None) -> None:
    if stage not in STAGES:
        raise KilnError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    if (group or op) and stage in ("graph", "simplified"):
        raise KilnError(f"--group and --op apply to stages fused to cuda, not {stage}")
    if group and op:
        raise KilnError("give --group or --op, not both")


def _select(c: Compilation, group: str | None, op: str | None) -> list[Group]:
    if group is not None:
        return [c.fused.group(group)]
    if op is None:
        return list(c.fused.groups)
    found = [g for g in c.fused.groups if any(n.op.name == op for n in g.nodes)]
    if not found:
        ops = sorted({n.op.name for g in c.fused.groups for n in g.nodes})
        raise KilnError(f"no group holds an op {op!r}; the model's ops: {', '.join(ops)}")
    return found


def _group_text(g: Group) -> str:
    anchor = g.anchor.op.name if g.anchor is not None else "none"
    epilogue = [n.op.name for n in g.nodes[g.nodes.index(g.anchor) + 1:]] if g.anchor else []
    return f"# anchor: {anchor}; epilogue: {', '.join(epilogue) or 'none'}\n{g}"


def _kernel_stage(k: Kernel, target: Target, stage: str) -> StageText:
    title = f"kernel {k.name}"
    if stage == "te":
        if not k.te_outputs:
            text = "# written as TIR, scheduled (no TE): its PrimFunc\n" + k.te_func.script()
        else:
            text = te_text(k.te_outputs)
        return StageText(stage, title, text, "python")
    if stage == "tir":
        return StageText(stage, f"{title}, before scheduling", k.te_func.script(), "python")
    if stage == "scheduled":
        head = [f"# template: {k.template.value if k.template else 'none'}",
                f"# knobs: {k.knobs if k.knobs is not None else 'none (the template has none)'}",
                *(f"# {note}" for note in k.notes)]
        trace = str(k.trace) if k.trace is not None else "# written scheduled: no trace"
        text = "\n".join(head) + "\n" + k.func.script() + "\n\n# the schedule's trace\n" + trace
        return StageText(stage, title, text, "python")
    return StageText(stage, title, lowered_tir(k.func, target).script(), "python")


def highlight(s: StageText) -> str:
    """``s`` coloured for a terminal (pygments)."""
    from pygments import highlight as pyg_highlight
    from pygments.formatters import TerminalFormatter
    from pygments.lexers import get_lexer_by_name
    return pyg_highlight(str(s), get_lexer_by_name(s.language),
                         TerminalFormatter()).rstrip("\n")
