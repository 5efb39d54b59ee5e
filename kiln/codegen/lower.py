"""Lower one fused group: plan its schedule, build its TE, make a PrimFunc, schedule it.

    plan = plan_schedule(group, target)      # which template, which knobs, which weight to pack
    te_func, args, anchor_block, te_outputs = build_te(group, plan)   # the TE, one PrimFunc
    func, trace = apply_schedule(te_func, plan, anchor_block)    # the template applied

Each stage's result is kept on the ``Kernel`` so ``kiln inspect`` can print it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

import numpy as np
from tvm import s_tir, te, tirx

from kiln.errors import KnobError, ModelError
from kiln.ir.dtype import to_storage
from kiln.ir.graph import Node, Value
from kiln.ir.ops.indexing import LOOP_NEST_OPS
from kiln.ir.ops.kv_cache import KV_CACHE_OPS
from kiln.ir.ops.reduce import AXIS_REDUCTIONS, reduce_axes
from kiln.ir.ops.registry import Pattern
from kiln.ir.ops.rnn import RECURRENT_OPS
from kiln.ir.passes.fuse import Group
from kiln.ir.types import Dim, format_shape, normalize_axis
from kiln.schedules import arm, cuda, x86
from kiln.schedules.compute import COMPUTE, NodeInfo
from kiln.schedules.compute.kv_cache import KEY_BLOCK, kv_cache_write_func
from kiln.schedules.compute.matmul import (
    dense_operand,
    gemm_padded,
    matmul_operand,
    pack_at_runtime,
    pack_weight,
    packed_operand,
    reduction_of,
)
from kiln.schedules.compute.quant import (
    dot_matmul_integer,
    float_exact_conv,
    integer_product,
    pack_weight_dot,
)
from kiln.schedules.compute.registry import shape_of, te_shape
from kiln.schedules.x86.int_conv import (
    default_dot_conv_knobs,
    dot_conv1x1,
    dot_conv1x1_fits,
    pack_dot_conv_weight,
    schedule_dot_conv1x1,
)
from kiln.schedules.x86.int_gemm import (
    VPDPBUSD,
    DotInstruction,
    default_vnni_knobs,
    schedule_dot_gemm,
)
from kiln.schedules.x86.lookup import table_lookup_func
from kiln.target import Target

GEMM_OPS = ("matmul", "dense", "matmul_integer")
IN_PLACE_OPS = ("kv_cache_write",)     # their kernel stores into input 0 (Kernel.inplace)


class Template(Enum):
    """The schedule template a group gets (x86 or CUDA), chosen by its anchor op."""

    GEMM = "gemm"
    DOT_GEMM = "int8 dot gemm"  # matmul_integer, constant weight: vpdpbusd (VNNI) or sdot
    DOT_CONV = "int8 dot conv1x1"   # conv2d_integer 1x1 on NCHW uint8: vpdpbusd (int_conv.py)
    CONV2D = "conv2d"
    POOL = "pool"
    ROW_REDUCTION = "row reduction"
    GENERIC_REDUCTION = "generic reduction"
    INJECTIVE = "injective"
    RECURRENCE = "recurrence"
    ATTENTION = "attention"     # matmul -> scale/mask -> softmax -> matmul, one kernel
    CUDA_GEMM = "cuda gemm"     # shared-memory tiles, a register tile per thread
    TENSOR_CORE_GEMM = "tensor-core gemm"   # float16 on mma.sync, float32 accumulators
    FLASH_ATTENTION = "flash attention"     # cuda: one pass over K/V tiles, online softmax
    WGMMA_GEMM = "wgmma gemm"               # sm_90a float16: warpgroup MMA from shared memory
    IN_PLACE = "in-place update"            # a written kernel that stores into an input
    TABLE_LOOKUP = "byte table lookup"      # table_lookup on AVX-512 VBMI (x86/lookup.py)


@dataclass
class SchedulePlan:
    """What to do with a group: the template, its knobs, and the GEMM weight to pack."""

    template: Template
    target: Target
    dtype: str                              # of the outputs: sets the vector lanes
    knobs: Any = None                       # the template's knobs (flash, wgmma: (problem, knobs))
    row_rank: int = 0                       # ROW_REDUCTION: leading output axes that are rows
    # the constant weight the template lays out itself: GEMM panels of the [K, N] weight, the
    # int8 conv's [O, C] bytes, an integer conv's float32 copy (summed on the FMA units)
    packed_weight: np.ndarray | None = None
    pack_at_runtime: bool = False           # GEMM: pack a runtime B per task (N % nr != 0)
    notes: list[str] = field(default_factory=list)


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
    template: Template | None = None
    knobs: Any = None                                 # the template's knobs, as applied
    te_outputs: list[te.Tensor] = field(default_factory=list)   # the TE, before te_func
    trace: s_tir.Trace | None = None                  # the schedule's primitives, in order
    inplace: int | None = None      # the arg the (one) output is written into, in place


def lower_group(group: Group, target: Target, name: str | None = None,
                knobs: Any = None, in_place: bool = True) -> Kernel:
    """Build the TE of ``group``, make it a PrimFunc and schedule it for ``target``, with the
    template's default knobs or ``knobs`` (tuned ones, of the template's knob type). An
    in-place op (``IN_PLACE_OPS``) stores into its first input, or with ``in_place=False``
    into a copy of it."""
    name = _ident(name or group.name)
    plan = plan_schedule(group, target, knobs)
    if plan.template is Template.FLASH_ATTENTION:
        return _flash_attention_kernel(group, plan, name)
    if plan.template is Template.IN_PLACE:
        n = group.anchor
        func = kv_cache_write_func(n.attrs, n.inputs[0].type, n.inputs[1].type, in_place)
        return replace(_written_kernel(group, plan, name, func), inplace=0 if in_place else None)
    if plan.template is Template.TABLE_LOOKUP:
        n = group.anchor
        return _written_kernel(group, plan, name,
                               table_lookup_func(n.inputs[0].type, n.outputs[0].type))
    if plan.template is Template.WGMMA_GEMM:
        return _written_kernel(group, plan, name, cuda.wgmma_gemm_func(
            *plan.knobs, [v.type.static_shape for v in (*group.anchor.inputs,
                                                        group.outputs[0])]))
    te_func, args, anchor_block, te_outputs = build_te(group, plan)
    func, trace = apply_schedule(te_func, plan, anchor_block)
    return Kernel(name, group, te_func.with_attr("global_symbol", name),
                  func.with_attr("global_symbol", name), args, list(group.outputs), plan.notes,
                  plan.template, plan.knobs, te_outputs, trace)


# -- 1. plan ------------------------------------------------------------------------------------
def plan_schedule(group: Group, target: Target, knobs: Any = None) -> SchedulePlan:
    """Pick the template from the group's anchor, with default knobs for its shape, or
    ``knobs`` where given (for the CPU templates that have knobs: GEMM, int8 dot GEMM, conv,
    attention, row reduction)."""
    if target.is_cuda:
        if knobs is not None:
            raise KnobError("the cuda templates take their default knobs (no tuning yet)")
        return _plan_cuda(group, target)
    plan = _plan_cpu(group, target, None)
    if knobs is None:
        return plan
    if type(plan.knobs) is not type(knobs):
        raise KnobError(f"{type(knobs).__name__} do not fit this group's template "
                        f"({plan.template.value})")
    plan = _plan_cpu(group, target, knobs)
    plan.notes.append("knobs from tuning")
    return plan


def _plan_cpu(group: Group, target: Target, tuned: Any) -> SchedulePlan:
    anchor, isa = group.anchor, target.isa
    dtype = group.outputs[0].dtype.tvm
    if anchor is not None and anchor.op.name in RECURRENT_OPS:
        return SchedulePlan(Template.RECURRENCE, target, dtype, notes=[
            f"{anchor.op.name}: time loop written scheduled (parallel over directions x batch, "
            "vectorised matvec and gate math)"])
    if anchor is not None and anchor.op.name == "kv_cache_write":
        return SchedulePlan(Template.IN_PLACE, target, dtype, notes=[
            "kv_cache_write: the new keys and values stored into the cache in place (parallel "
            "over batch x heads, vectorised over the head dim)"])
    if anchor is not None and anchor.op.name == "kv_attention":
        return SchedulePlan(Template.RECURRENCE, target, dtype, notes=[
            f"kv_attention: flash-style loop nest written scheduled (parallel over batch x "
            f"heads x queries, online softmax over blocks of {KEY_BLOCK} keys)"])
    if anchor is not None and anchor.op.name == "table_lookup" and target.vbmi:
        return SchedulePlan(Template.TABLE_LOOKUP, target, dtype, notes=[
            "table_lookup: 64 bytes per pair of vpermi2b over the 256-entry table"])
    if anchor is not None and anchor.op.name in LOOP_NEST_OPS:
        return SchedulePlan(Template.RECURRENCE, target, dtype, notes=[
            f"{anchor.op.name}: loop nest written scheduled in its compute (parallel over "
            "independent rows, vectorised over trailing dims)"])
    if group.is_attention:
        q, out = anchor.inputs[0].shape, group.outputs[0].shape
        knobs = tuned or x86.default_attention_knobs(q[-2], out[-1], isa)
        return SchedulePlan(Template.ATTENTION, target, dtype, knobs, notes=[
            f"attention T={q[-2]} S={anchor.outputs[0].shape[-1]} d={q[-1]} dv={out[-1]}: "
            f"{knobs}, a {knobs.bq} x S block of scores per task (never T x S)"])
    if anchor is not None and _dot_gemm(anchor, target):
        m, n, k = gemm_dims(anchor)
        knobs = tuned or (arm.default_sdot_knobs if target.is_arm else default_vnni_knobs)(
            _typical(m), n, k)
        return SchedulePlan(Template.DOT_GEMM, target, dtype, knobs,
                            packed_weight=anchor.inputs[1].data, notes=[
                                f"int8 gemm M={m} N={n} K={k} on "
                                f"{_dot_instruction(target).mnemonic}: {knobs}",
                                f"weight %{anchor.inputs[1].name} packed into "
                                f"{-(-n // knobs.nr)} panels of K/4 x {knobs.nr} x 4"])
    if anchor is not None and anchor.op.name in GEMM_OPS:
        m, n, k = gemm_dims(anchor)
        dims = _typical(m), _typical(n), _typical(k)
        knobs = tuned or (arm.default_gemm_knobs(*dims) if target.is_arm
                          else x86.default_gemm_knobs(*dims, isa))
        # a symbolic N or K gets tiles that need no exact division of it: one panel per
        # task column, no unrolled k (TVM cannot prove a split of a symbolic extent exact)
        knobs = replace(knobs, nc=knobs.nc if isinstance(n, int) else knobs.nr,
                        ku=knobs.ku if isinstance(k, int) else 1)
        if tuned is None and not isinstance(m, int):
            # M is padded to whole cache tiles: a symbolic M (a prompt's length) may be as
            # small as a few rows, so its tile is one register tile (8 tokens: 8 rows, not 64)
            knobs = replace(knobs, mc=knobs.mr)
        plan = SchedulePlan(Template.GEMM, target, dtype, knobs,
                            packed_weight=_packable_weight(anchor),
                            notes=[f"gemm M={m} N={n} K={k}: {knobs}"])
        if plan.packed_weight is not None:
            plan.notes.append(f"weight %{anchor.inputs[1].name} packed into "
                              f"{-(-n // knobs.nr)} panels of K x {knobs.nr}")
        elif not isinstance(n, int) or n % knobs.nr:
            # a ragged N would leave a predicate in the vectorised inner loop (30x slower)
            plan.pack_at_runtime = True
            plan.notes.append(f"%{anchor.inputs[1].name} packed per task into K x "
                              f"{knobs.nr} panels at run time (N={n} is not a multiple of nr)")
        return plan
    if anchor is not None and _dot_conv(anchor, target):
        o, width = anchor.outputs[0].shape[1], anchor.outputs[0].shape[3]
        knobs = tuned or default_dot_conv_knobs(o, width)
        return SchedulePlan(Template.DOT_CONV, target, dtype, knobs,
                            packed_weight=anchor.inputs[1].data, notes=[
                                f"int8 1x1 conv {format_shape(anchor.outputs[0].shape)} on "
                                f"vpdpbusd (NCHW, 4 channels interleaved per dot): {knobs}"])
    if anchor is not None and anchor.op.name in ("conv2d", "conv_transpose2d", "conv2d_integer"):
        out = anchor.outputs[0].type
        wshape = anchor.inputs[1].type.static_shape
        if anchor.op.name == "conv_transpose2d":   # a conv2d over the zero-inserted input
            g = anchor.attrs.groups
            wshape = (wshape[1] * g, wshape[0] // g, *wshape[2:])
        in_float = _float_conv(anchor, target)
        acc = "float32" if in_float else out.dtype.value
        # only the batch may be symbolic (conv2d's shape inference): tiles sized for one image
        knobs = tuned or x86.default_conv_knobs((_typical_batch(out.shape[0]), *out.shape[1:]),
                                                wshape, anchor.attrs.groups, isa, acc)
        plan = SchedulePlan(Template.CONV2D, target, dtype, knobs, notes=[
            f"{anchor.op.name} {format_shape(out.shape)} groups={anchor.attrs.groups}: {knobs}"])
        if in_float:
            plan.packed_weight = anchor.inputs[1].data
            plan.notes.append("integer products summed on the FMA units: exact, every partial "
                              "sum below 2^24")
        return plan
    if anchor is not None and anchor.op.name == "pool":
        return SchedulePlan(Template.POOL, target, dtype, notes=[
            f"{anchor.attrs.mode} pool, kernel {list(anchor.attrs.kernel)}"])
    if group.kind is Pattern.REDUCTION:
        plan = _reduction_plan(group, target, dtype, "generic schedule", "")
        if plan.template is Template.ROW_REDUCTION:
            plan.knobs = tuned or x86.RowReductionKnobs()
            plan.notes[0] += f": {plan.knobs}"
        return plan
    return SchedulePlan(Template.INJECTIVE, target, dtype)


def gemm_dims(anchor: Node) -> tuple[Dim, Dim, Dim]:
    """M, N, K of a GEMM node (``x[K] @ W`` has one row)."""
    out, a = anchor.outputs[0].shape, anchor.inputs[0].shape
    return (out[-2] if len(out) > 1 else 1), out[-1], a[-1]


def _reduction_plan(group: Group, target: Target, dtype: str, generic: str,
                    per_row: str) -> SchedulePlan:
    """The row template when the reduced axes trail (``row_rank``), else the generic one;
    ``generic`` and ``per_row`` say, in the notes, how the target runs each."""
    rows = row_rank(group.anchor)
    if rows is None:
        return SchedulePlan(Template.GENERIC_REDUCTION, target, dtype,
                            notes=[f"reduction over non-trailing axes: {generic}"])
    return SchedulePlan(Template.ROW_REDUCTION, target, dtype, row_rank=rows,
                        notes=[f"row reduction: {rows} row axes{per_row}"])


# ops whose x86 templates have no CUDA counterpart yet
CUDA_PENDING = ("conv2d", "conv_transpose2d", "pool", "matmul_integer", "conv2d_integer",
                *RECURRENT_OPS,
                *LOOP_NEST_OPS, *KV_CACHE_OPS)


def check_cuda_support(groups: list[Group]) -> None:
    """Refuse, naming every one at once, the groups no CUDA template covers yet."""
    missing = [f"{grp.anchor.op.name} (node {grp.anchor.name})" for grp in groups
               if grp.anchor is not None and grp.anchor.op.name in CUDA_PENDING]
    if missing:
        raise ModelError(f"{len(missing)} node(s) have no CUDA schedule yet: "
                         f"{', '.join(missing)} (the cuda target covers GEMMs, reductions and "
                         "elementwise ops)")


def cuda_attention(chain: list[Node]) -> bool:
    """The fusion rule for cuda: the attention chains the flash template takes."""
    return cuda.flash_attention_of(chain) is not None


def _plan_cuda(group: Group, target: Target) -> SchedulePlan:
    anchor = group.anchor
    dtype = group.outputs[0].dtype.tvm
    check_cuda_support([group])
    if group.is_attention:
        fa = cuda.flash_attention_of(group.nodes)
        knobs = cuda.default_flash_knobs(fa.t, fa.d, fa.dv)
        return SchedulePlan(Template.FLASH_ATTENTION, target, dtype, (fa, knobs), notes=[
            f"flash attention {fa}: {knobs}, {knobs.rows} query rows per block, "
            f"keys in tiles of {knobs.bc} (the T x S scores stay in registers)"])
    wgmma = _wgmma_gemm(group, target)
    if wgmma is not None:
        knobs = cuda.WgmmaKnobs()
        return SchedulePlan(Template.WGMMA_GEMM, target, dtype, (wgmma, knobs), notes=[
            f"wgmma gemm {wgmma}: {knobs}, tiles in 128-byte-swizzled shared memory"])
    if anchor is not None and anchor.op.name in GEMM_OPS and _tensor_core_gemm(group):
        m, n, k = gemm_dims(anchor)
        knobs = cuda.default_tensorcore_knobs(_typical(m), _typical(n))
        return SchedulePlan(Template.TENSOR_CORE_GEMM, target, dtype, knobs, notes=[
            f"tensor-core gemm M={m} N={n} K={k}: {knobs}, block tile {knobs.tile}"])
    if anchor is not None and anchor.op.name in GEMM_OPS:
        m, n, k = gemm_dims(anchor)
        knobs = cuda.default_gemm_knobs(_typical(m), _typical(n), _typical(k))
        return SchedulePlan(Template.CUDA_GEMM, target, dtype, knobs,
                            notes=[f"cuda gemm M={m} N={n} K={k}: {knobs}"])
    if group.kind is Pattern.REDUCTION:
        return _reduction_plan(group, target, dtype, "a thread per output",
                               ", a thread block per row (a warp per row of up to 512)")
    return SchedulePlan(Template.INJECTIVE, target, dtype, notes=["a thread per element"])


def _wgmma_gemm(group: Group, target: Target) -> cuda.WgmmaGemm | None:
    """A lone float16 matmul or dense (no epilogue: the wgmma kernel is written, not
    scheduled, and fuses nothing) on sm_90a, in whole tiles, A not broadcast, as the wgmma
    template takes it; else None."""
    n = group.anchor
    if (target.arch != "sm_90a" or len(group.nodes) != 1 or n is None
            or n.op.name not in ("matmul", "dense") or n.inputs[0].dtype.tvm != "float16"
            or not all(isinstance(d, int) for v in (*n.inputs, n.outputs[0]) for d in v.shape)):
        return None
    a, b = (v.type.static_shape for v in n.inputs)
    out = n.outputs[0].type.static_shape
    if n.op.name == "dense" or len(b) == 2:      # one B: A's leading dims are all rows
        g = cuda.WgmmaGemm(1, math.prod(a[:-1]), out[-1], a[-1], n.op.name == "dense")
    elif len(a) == len(b) == len(out) and a[:-2] == b[:-2]:
        g = cuda.WgmmaGemm(math.prod(out[:-2]), a[-2], out[-1], a[-1], False)
    else:
        return None
    return g if cuda.wgmma_fits(g) else None


def _tensor_core_gemm(group: Group) -> bool:
    """A float16 GEMM whose group ends in one output (its epilogue's): mma.sync takes it."""
    a = group.anchor.inputs[0]
    return (group.anchor.op.name != "matmul_integer" and a.dtype.tvm == "float16"
            and len(group.outputs) == 1)


def _dot_gemm(n: Node, target: Target) -> bool:
    """A matmul_integer that an int8 dot instruction takes (vpdpbusd: uint8 x int8; sdot:
    int8 x int8): a target with one, a constant 2-D weight (packed at compile time, its
    column sums folded; a uint8 one shifted to int8 by -128, its zero point with it), a
    uint8 or int8 activation (shifted by 128 to the instruction's type). A runtime weight
    keeps the widening GEMM template."""
    if n.op.name != "matmul_integer" or not target.int8_dot:
        return False
    w = n.inputs[1]
    return w.is_constant and w.type.rank == 2 and w.dtype.value in ("int8", "uint8") \
        and isinstance(n.inputs[0].shape[-1], int)


def _packable_weight(n: Node) -> np.ndarray | None:
    """The [K, N] weight of a GEMM node when it is a float32 2-D constant (int8 / uint8 for
    matmul_integer: packed as is, widened in the inner loop), else None."""
    w = n.inputs[1]
    packs = ("int8", "uint8") if n.op.name == "matmul_integer" else ("float32",)
    if not w.is_constant or w.type.rank != 2 or w.dtype.value not in packs:
        return None
    return w.data.T if n.op.name == "dense" else w.data


def row_rank(anchor: Node) -> int | None:
    """How many leading output axes of a reduction index independent rows, when its reduced
    axes are the trailing ones; ``None`` otherwise."""
    rank = anchor.inputs[0].type.rank
    at = anchor.attrs
    if anchor.op.name in AXIS_REDUCTIONS:
        return rank - 1 if normalize_axis(at.axis, rank) == rank - 1 else None
    if anchor.op.name in ("layer_norm", "rms_norm"):
        return normalize_axis(at.axis, rank)
    axes = reduce_axes(at, rank)
    if axes != tuple(range(rank - len(axes), rank)):
        return None
    return rank - len(axes)


# -- 2. TE --------------------------------------------------------------------------------------
def build_te(group: Group, plan: SchedulePlan
             ) -> tuple[tirx.PrimFunc, list[Value | np.ndarray], str | None, list[te.Tensor]]:
    """The group's nodes as TE, made one PrimFunc. Returns it, where each of its inputs comes
    from, the name of the anchor's main block (the GEMM or conv the template tiles), and the
    output tensors."""
    names = _Names()
    syms = symbolic_vars(group)
    tensors: dict[int, te.Tensor] = {}
    params: list[te.Tensor] = []
    args: list[Value | np.ndarray] = []
    anchor = group.anchor
    packed_input = anchor.inputs[1] if plan.packed_weight is not None else None
    for v in group.inputs:
        if v is packed_input:
            continue                                  # goes in packed, with its GEMM below
        if v.is_constant and v.data.size == 1:       # scalars become immediates
            imm = tirx.const(to_storage(v.data, v.dtype).reshape(()).item(), v.dtype.tvm)
            tensors[id(v)] = te.compute(v.type.static_shape, _constant_fn(imm),
                                        name=names.fresh(f"c_{v.name}"))
            continue
        tensors[id(v)] = te.placeholder(te_shape(v.shape, syms), v.dtype.tvm,
                                        name=names.fresh(v.name))
        params.append(tensors[id(v)])
        args.append(v.data if v.is_constant else v)

    anchor_block = None
    for n in group.nodes:
        info = NodeInfo(n.attrs, tuple(o.type for o in n.outputs), names.fresh(n.name), syms,
                        tuple(v.type for v in n.inputs))
        ins = [tensors.get(id(v)) for v in n.inputs]      # None: the weight, packed below
        if n is anchor and plan.template is Template.DOT_CONV:
            outs = _dot_conv_te(info, ins, plan, names, params, args)
            anchor_block = f"{info.name}_gemm"
        elif n is anchor and plan.template is Template.CONV2D and plan.packed_weight is not None:
            wf = te.placeholder(plan.packed_weight.shape, "float32",
                                name=names.fresh(f"{n.inputs[1].name}_f32"))
            params.append(wf)
            args.append(plan.packed_weight.astype(np.float32))
            outs = COMPUTE[n.op.name](info, ins[0], wf, ins[2], acc_dtype="float32")
            anchor_block = f"{info.name}_acc"
        elif n is anchor and plan.template in (Template.GEMM, Template.DOT_GEMM):
            outs = _padded_gemm(n, info, ins, plan, names, params, args)
            anchor_block = f"{info.name}_gemm"       # the padded GEMM under the view
        else:
            if n.op.name not in COMPUTE:
                raise ModelError(f"node {n.name}: op {n.op.name} has no TE compute yet")
            outs = COMPUTE[n.op.name](info, *ins)
            if n is anchor and isinstance(outs, te.Tensor):
                anchor_block = (reduction_of(outs) if n.op.name in GEMM_OPS else outs).op.name
        for o, t in zip(n.outputs, outs if isinstance(outs, tuple) else (outs,), strict=True):
            tensors[id(o)] = t
    outputs = [tensors[id(v)] for v in group.outputs]
    return te.create_prim_func([*params, *outputs]), args, anchor_block, outputs


def _padded_gemm(n: Node, info: NodeInfo, ins: list, plan: SchedulePlan, names: _Names,
                 params: list[te.Tensor], args: list[Value | np.ndarray]) -> te.Tensor:
    """The anchor GEMM on the grid its cache tiles divide: M padded to a multiple of ``mc``,
    and N to whole ``nr`` panels when the weight is packed (adding it as a parameter)."""
    cfg = plan.knobs
    if plan.template is Template.DOT_GEMM:
        return _dot_padded_gemm(n, info, ins, plan, names, params, args)
    shape = info.shape if len(info.shape) > 1 else (1, *info.shape)
    k_extent = shape_of(ins[0])[-1]
    if plan.packed_weight is not None:
        panels = pack_weight(plan.packed_weight, cfg.nr)
        bp = te.placeholder(panels.shape, n.inputs[1].dtype.value,
                            name=names.fresh(f"{n.inputs[1].name}_packed"))
        params.append(bp)
        args.append(panels)
        b_at, n_pad = packed_operand(bp), panels.shape[0] * cfg.nr
    else:
        b_at = matmul_operand(info.shape, ins[1]) if n.op.name != "dense" \
            else dense_operand(ins[1])
        n_pad = shape[-1]
        if plan.pack_at_runtime:
            bp = pack_at_runtime(b_at, shape[:-2], k_extent, shape[-1], cfg.nr,
                                 n.inputs[1].dtype.value,
                                 names.fresh(f"{info.name}_pack"))
            b_at, n_pad = packed_operand(bp), shape_of(bp)[-3] * cfg.nr
    m = shape[-2]
    m_pad = x86.round_up(m, cfg.mc)
    product = integer_product(info.shape, ins[0], ins[2], ins[3]) \
        if n.op.name == "matmul_integer" else None
    return gemm_padded(info, ins[0], b_at, k_extent, m_pad, n_pad, product)


def _dot_conv(n: Node, target: Target) -> bool:
    """A conv2d_integer the x86 vpdpbusd 1x1 template takes (``dot_conv1x1_fits``)."""
    if n.op.name != "conv2d_integer" or not target.int8_dot or target.is_arm:
        return False
    x = n.inputs[0]
    return dot_conv1x1_fits(x.shape, n.inputs[1].data, x.dtype.value, n.attrs)


def _float_conv(n: Node, target: Target) -> bool:
    """An x86 conv2d_integer whose sums float32 holds exactly (``float_exact_conv``)."""
    w = n.inputs[1].data
    return (n.op.name == "conv2d_integer" and not target.is_arm and w is not None
            and float_exact_conv(w, n.inputs[0].dtype.value))


def _dot_conv_te(info: NodeInfo, ins: list, plan: SchedulePlan, names: _Names,
                 params: list[te.Tensor], args: list[Value | np.ndarray]) -> te.Tensor:
    """The 1x1 int8 conv's TE, its weight as [O padded to occ, C] int8 and its row sums as
    parameters."""
    o = info.shape[1]
    w8, wsum = pack_dot_conv_weight(plan.packed_weight, x86.round_up(o, plan.knobs.occ))
    for arr, hint in ((w8, "w8"), (wsum, "wsum")):
        params.append(te.placeholder(arr.shape, str(arr.dtype), name=names.fresh(hint)))
        args.append(arr)
    return dot_conv1x1(info.name, info.shape, ins[0], ins[2], params[-2], params[-1],
                       w8.shape[0])


def _dot_instruction(target: Target) -> DotInstruction:
    return arm.SDOT if target.is_arm else VPDPBUSD


def _dot_padded_gemm(n: Node, info: NodeInfo, ins: list, plan: SchedulePlan, names: _Names,
                     params: list[te.Tensor], args: list[Value | np.ndarray]) -> te.Tensor:
    """matmul_integer on a dot instruction: the weight packed into [N/nr, K/4, nr, 4] panels
    and its column sums [N] (int32, for the activation zero point's term) as parameters."""
    w, (az, bz) = plan.packed_weight, n.inputs[2:]
    if w.dtype == np.uint8:     # b - bz = (b - 128) - (bz - 128): an int8 weight
        w = (w.astype(np.int16) - 128).astype(np.int8)
    panels = pack_weight_dot(w, plan.knobs.nr)
    bp = te.placeholder(panels.shape, "int8", name=names.fresh(f"{n.inputs[1].name}_packed"))
    params.append(bp)
    args.append(panels)
    colsum = None
    a8 = _dot_instruction(plan.target).a8
    az_zero = az.is_constant and not np.any(az.data) and az.dtype.value == a8
    if not az_zero:
        sums = w.astype(np.int32).sum(axis=0, dtype=np.int32)     # |sum| <= 128 K
        colsum = te.placeholder(sums.shape, "int32", name=names.fresh(f"{n.inputs[1].name}_colsum"))
        params.append(colsum)
        args.append(sums)
    bz_zero = bz.is_constant and not np.any(bz.data) and bz.dtype.value == "int8"
    m_pad = x86.round_up(info.shape[-2], plan.knobs.mc)
    return dot_matmul_integer(info, ins[0], ins[2], ins[3], bp, colsum, w.shape[0], m_pad,
                              bz_zero, a8)


class _Names:
    """Block and buffer names, unique within one kernel and valid identifiers."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def fresh(self, hint: str) -> str:
        base = _ident(hint)
        out, k = base, 1
        while out in self.used:
            out, k = f"{base}_{k}", k + 1
        self.used.add(out)
        return out


def _constant_fn(imm: tirx.PrimExpr):
    return lambda *_: imm


# -- 3. schedule --------------------------------------------------------------------------------
def apply_schedule(func: tirx.PrimFunc, plan: SchedulePlan, anchor_block: str | None
                   ) -> tuple[tirx.PrimFunc, s_tir.Trace]:
    """Apply the plan's template (every kernel gets one: none ships unscheduled). Returns the
    scheduled function and the trace of the schedule's primitives."""
    sch = s_tir.Schedule(func)
    return _apply(sch, plan, anchor_block), sch.trace


def _apply(sch: s_tir.Schedule, plan: SchedulePlan, anchor_block: str | None
           ) -> tirx.PrimFunc:
    if plan.target.is_cuda:
        return _apply_cuda(sch, plan, anchor_block)
    isa = plan.target.isa
    lanes = isa.lanes(plan.dtype)
    if plan.template is Template.GEMM:
        x86.schedule_gemm(sch, anchor_block, plan.knobs, isa)
    elif plan.template is Template.DOT_GEMM:
        schedule_dot_gemm(sch, anchor_block, plan.knobs, _dot_instruction(plan.target))
    elif plan.template is Template.DOT_CONV:
        schedule_dot_conv1x1(sch, anchor_block, plan.knobs)
    elif plan.template is Template.CONV2D:
        x86.schedule_conv2d(sch, anchor_block, plan.knobs, isa)
    elif plan.template is Template.ATTENTION:
        x86.schedule_attention(sch, anchor_block, plan.knobs, isa)
    elif plan.template is Template.POOL:
        x86.schedule_pool(sch, anchor_block, lanes)
    elif plan.template is Template.ROW_REDUCTION:
        return x86.schedule_row_reduction(sch, plan.row_rank, lanes, plan.knobs)
    elif plan.template is Template.GENERIC_REDUCTION:
        x86.schedule_generic_reduction(sch, lanes)
    elif plan.template is Template.RECURRENCE:
        pass    # an extern kernel whose loops its compute writes scheduled (compute/rnn.py)
    else:
        x86.schedule_injective(sch, lanes)
    return sch.mod["main"]


def _apply_cuda(sch: s_tir.Schedule, plan: SchedulePlan, anchor_block: str | None
                ) -> tirx.PrimFunc:
    if plan.template is Template.CUDA_GEMM:
        cuda.schedule_gemm(sch, anchor_block, plan.knobs)
    elif plan.template is Template.TENSOR_CORE_GEMM:
        cuda.schedule_tensorcore_gemm(sch, anchor_block, plan.knobs)
    elif plan.template is Template.ROW_REDUCTION:
        cuda.schedule_row_reduction(sch, plan.row_rank)
    elif plan.template is Template.GENERIC_REDUCTION:
        cuda.schedule_generic_reduction(sch)
    else:
        cuda.schedule_injective(sch)
    return sch.mod["main"]


def _flash_attention_kernel(group: Group, plan: SchedulePlan, name: str) -> Kernel:
    """The flash kernel's parameters are Q, K^T, V and the output; the scale and the causal
    mask are folded in."""
    mm, mm2 = group.nodes[0], group.nodes[-1]
    args = [mm.inputs[0], mm.inputs[1], mm2.inputs[1]]
    shapes = [v.type.static_shape for v in (*args, mm2.outputs[0])]
    return _written_kernel(group, plan, name, cuda.flash_attention_func(*plan.knobs, shapes),
                           args)


def _written_kernel(group: Group, plan: SchedulePlan, name: str, func: tirx.PrimFunc,
                    args: list[Value] | None = None) -> Kernel:
    """A template written scheduled (a TIR kernel, not TE plus a schedule): it is its own
    "before scheduling" stage; ``args`` default to the anchor's inputs."""
    func = func.with_attr("global_symbol", name)
    return Kernel(name, group, func, func, args or list(group.anchor.inputs),
                  list(group.outputs), plan.notes, plan.template, plan.knobs)


def _ident(name: str) -> str:
    return re.sub(r"\W", "_", name)


def symbolic_vars(group: Group) -> dict[str, tirx.Var]:
    """One int32 variable per symbolic dim the group's tensors use: the loops are int32, and
    TVM's region analysis does not see through int64 -> int32 casts."""
    syms: dict[str, tirx.Var] = {}
    for v in [*group.inputs, *(o for n in group.nodes for o in n.outputs)]:
        for d in v.shape:
            if isinstance(d, str) and d not in syms:
                syms[d] = tirx.Var(d, "int32")
    return syms


# Knobs are picked for this size where a GEMM dim is symbolic (a typical sequence length).
TYPICAL_DIM = 128


def _typical(d: Dim) -> int:
    return d if isinstance(d, int) else TYPICAL_DIM


def _typical_batch(d: Dim) -> int:
    return d if isinstance(d, int) else 1
