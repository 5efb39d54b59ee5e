"""Lower one fused group: its nodes' TE -> a PrimFunc -> the PrimFunc scheduled for the target.

Each stage's result is kept on the ``Kernel`` so ``kiln inspect`` can print it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
from tvm import s_tir, te, tirx

from kiln.errors import ModelError
from kiln.ir.graph import Node, Value
from kiln.ir.ops.reduce import reduce_axes
from kiln.ir.ops.registry import Pattern
from kiln.ir.passes.fuse import Group
from kiln.ir.types import format_shape, normalize_axis
from kiln.schedules import x86
from kiln.schedules.compute import COMPUTE, NodeInfo
from kiln.schedules.compute.matmul import gemm_packed, pack_weight
from kiln.target import Target


@dataclass
class Kernel:
    """A lowered group. ``args`` lists, in parameter order, where each input comes from: a
    graph value, or a constant array (possibly a packed copy of a weight)."""

    name: str
    group: Group
    te_func: tirx.PrimFunc            # before scheduling
    func: tirx.PrimFunc               # scheduled
    args: list[Value | np.ndarray]
    outputs: list[Value]
    notes: list[str] = field(default_factory=list)   # schedule decisions, for inspect


def _ident(name: str) -> str:
    return re.sub(r"\W", "_", name)


def _require_static(group: Group) -> None:
    for v in [*group.inputs, *(o for n in group.nodes for o in n.outputs)]:
        if not v.type.is_static:
            raise ModelError(f"group {group.name}: %{v.name} has symbolic shape "
                             f"{format_shape(v.shape)}; give concrete sizes with input_shapes")


GEMM_OPS = ("matmul", "dense")


def _packable_weight(n: Node) -> np.ndarray | None:
    """The [K, N] weight of a GEMM node when it is a float32 2-D constant, else None."""
    if n.op.name not in GEMM_OPS:
        return None
    w = n.inputs[1]
    if not w.is_constant or w.type.rank != 2 or w.dtype.value != "float32":
        return None
    return w.data if n.op.name == "matmul" else w.data.T


def _gemm_sizes(n: Node) -> tuple[int, int, int]:
    a, out = n.inputs[0].type.static_shape, n.outputs[0].type.static_shape
    return (out[-2] if len(out) > 1 else 1), out[-1], a[-1]


def row_rank(anchor: Node) -> int | None:
    """How many leading output axes of a reduction index independent rows, when its reduced
    axes are the trailing ones; ``None`` otherwise."""
    rank = anchor.inputs[0].type.rank
    at = anchor.attrs
    if anchor.op.name == "softmax":
        return rank - 1 if normalize_axis(at.axis, rank) == rank - 1 else None
    if anchor.op.name == "layer_norm":
        return normalize_axis(at.axis, rank)
    axes = reduce_axes(at, rank)
    if axes != tuple(range(rank - len(axes), rank)):
        return None
    return rank - len(axes)


def _constant_fn(imm: tirx.PrimExpr):
    return lambda *_: imm


def lower_group(group: Group, target: Target, name: str | None = None) -> Kernel:
    """Build the TE of ``group``, make it a PrimFunc and schedule it for ``target``."""
    _require_static(group)
    name = _ident(name or group.name)
    tensors: dict[int, te.Tensor] = {}
    params: list[te.Tensor] = []
    args: list[Value | np.ndarray] = []
    used: set[str] = set()

    def fresh(hint: str) -> str:
        base = _ident(hint)
        out, k = base, 1
        while out in used:
            out, k = f"{base}_{k}", k + 1
        used.add(out)
        return out

    anchor = group.anchor
    packed = _packable_weight(anchor) if anchor is not None else None
    for v in group.inputs:
        if packed is not None and v is anchor.inputs[1]:
            continue                      # the weight goes in packed, below
        if v.is_constant and v.data.size == 1:   # scalars become immediates
            imm = tirx.const(v.data.reshape(()).item(), v.dtype.value)
            tensors[id(v)] = te.compute(v.type.static_shape, _constant_fn(imm),
                                        name=fresh(f"c_{v.name}"))
            continue
        ph = te.placeholder(v.type.static_shape, v.dtype.value, name=fresh(v.name))
        tensors[id(v)] = ph
        params.append(ph)
        args.append(v.data if v.is_constant else v)

    isa = target.isa
    gemm_block, conv_block, knobs, notes = None, None, None, []
    for n in group.nodes:
        info = NodeInfo(n.attrs, tuple(o.type for o in n.outputs), fresh(n.name))
        ins = [tensors.get(id(v)) for v in n.inputs]   # None: the packed weight
        if n is anchor and n.op.name in GEMM_OPS:
            m_, n_, k_ = _gemm_sizes(n)
            knobs = x86.default_gemm_knobs(m_, n_, k_, isa)
            notes.append(f"gemm M={m_} N={n_} K={k_}: {knobs}")
        if n is anchor and packed is not None:
            bp = te.placeholder((-(-packed.shape[1] // knobs.nr), packed.shape[0], knobs.nr),
                                n.inputs[1].dtype.value, name=fresh(f"{n.inputs[1].name}_packed"))
            params.append(bp)
            args.append(pack_weight(packed, knobs.nr))
            outs = gemm_packed(info, ins[0], bp)
            gemm_block = outs.op.input_tensors[0].op.name
            notes.append(f"weight %{n.inputs[1].name} packed as {list(bp.shape)}")
        else:
            if n.op.name not in COMPUTE:
                raise ModelError(f"node {n.name}: op {n.op.name} has no TE compute yet")
            outs = COMPUTE[n.op.name](info, *ins)
            if n is anchor and n.op.name in GEMM_OPS:
                gemm_block = outs.op.name
            elif n is anchor and n.op.name == "conv2d":
                conv_block = outs.op.name
                knobs = x86.default_conv_knobs(info.shape, n.inputs[1].type.static_shape,
                                               n.attrs.groups, isa, info.dtype)
                notes.append(f"conv2d {format_shape(info.shape)} groups={n.attrs.groups}: {knobs}")
        for o, t in zip(n.outputs, outs if isinstance(outs, tuple) else (outs,), strict=True):
            tensors[id(o)] = t

    te_func = te.create_prim_func([*params, *(tensors[id(v)] for v in group.outputs)])
    sch = s_tir.Schedule(te_func)
    lanes = isa.lanes(group.outputs[0].dtype.value)
    if gemm_block is not None:
        x86.schedule_gemm(sch, gemm_block, knobs, isa)
    elif conv_block is not None:
        x86.schedule_conv2d(sch, conv_block, knobs, isa)
    elif group.kind is Pattern.REDUCTION:
        rows = row_rank(anchor)
        if rows is None:
            x86.schedule_generic_reduction(sch, lanes)
            notes.append("reduction over non-trailing axes: generic schedule")
        else:
            x86.schedule_row_reduction(sch, rows, lanes)
            notes.append(f"row reduction: {rows} row axes, vectors of {lanes}")
    else:
        x86.schedule_injective(sch, lanes)
    func = sch.mod["main"].with_attr("global_symbol", name)
    return Kernel(name, group, te_func.with_attr("global_symbol", name), func, args,
                  list(group.outputs), notes)
