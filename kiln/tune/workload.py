"""Workloads: the fused groups of a model that have schedule knobs, keyed by what decides
their speed (op structure, shapes, dtypes, target), so identical kernels are tuned once.

A transformer's every layer has the same QKV GEMM: one workload, ``count`` kernels.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any

from kiln.codegen.lower import SchedulePlan, Template, plan_schedule
from kiln.ir.graph import Value
from kiln.ir.passes.fuse import FusedGraph, Group
from kiln.target import Target

TUNABLE = (Template.GEMM, Template.DOT_GEMM, Template.CONV2D, Template.ATTENTION,
           Template.ROW_REDUCTION)


@dataclass
class Workload:
    """One tunable kernel shape: ``group`` is the first of ``count`` groups with ``key``."""

    key: str
    summary: str
    group: Group
    target: Target
    plan: SchedulePlan            # with the default knobs
    count: int = 1

    @property
    def default(self) -> Any:
        return self.plan.knobs


def target_id(target: Target) -> str:
    """The target as tuning records name it: the name and what decides codegen."""
    if target.is_cuda:
        return f"{target.name}:{target.arch}"
    return f"{target.name}:{target.mcpu}:{target.isa.value}" + "".join(target.mattr)


def signature(group: Group, target: Target) -> str:
    """A canonical text of ``group`` for ``target``: every node's op, attributes and value
    types in order, values named by position (external input i, node j's output k),
    constants by type only (their values do not change the schedule's speed)."""
    where: dict[int, str] = {id(v): f"in{i}" for i, v in enumerate(group.inputs)}
    lines = [target_id(target)]

    def ref(v: Value) -> str:
        if id(v) not in where:          # a constant read directly
            where[id(v)] = f"const{len(where)}"
        return f"{where[id(v)]}:{v.type}"

    for j, n in enumerate(group.nodes):
        attrs = (sorted((f.name, repr(getattr(n.attrs, f.name)))
                        for f in dataclasses.fields(n.attrs))
                 if dataclasses.is_dataclass(n.attrs) else repr(n.attrs))
        ins = ", ".join(ref(v) for v in n.inputs)
        for k, o in enumerate(n.outputs):
            where[id(o)] = f"n{j}.{k}"
        outs = ", ".join(f"{where[id(o)]}:{o.type}" for o in n.outputs)
        lines.append(f"{n.op.name} {attrs} ({ins}) -> ({outs})")
    lines.append("outputs " + ", ".join(where.get(id(v), "?") for v in group.outputs))
    return "\n".join(lines)


def workload_key(group: Group, target: Target) -> str:
    return hashlib.sha256(signature(group, target).encode()).hexdigest()[:16]


def is_static(group: Group) -> bool:
    return all(isinstance(d, int) for v in (*group.inputs, *group.outputs) for d in v.shape)


def extract_workloads(fused: FusedGraph, target: Target) -> list[Workload]:
    """The tunable groups of ``fused`` (static shapes, a CPU template with knobs), one
    workload per key, in first-seen order."""
    out: dict[str, Workload] = {}
    if target.is_cuda:
        return []
    for group in fused.groups:
        if not is_static(group):
            continue
        plan = plan_schedule(group, target)
        if plan.template not in TUNABLE:
            continue
        key = workload_key(group, target)
        if key in out:
            out[key].count += 1
            continue
        out[key] = Workload(key, plan.notes[0].split(":")[0], group, target, plan)
    return list(out.values())
