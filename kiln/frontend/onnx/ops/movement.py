"""Reshapes, transposes, concatenation, splitting and slicing."""

from __future__ import annotations

import numpy as np
import onnx

from kiln.errors import ModelError
from kiln.frontend.onnx.context import (
    Context,
    axes_list,
    axes_operand,
    onnx_op,
    prod_dims,
    reshape,
    resolve_minus_one,
    static_dim,
)
from kiln.ir.graph import Value
from kiln.ir.types import Dim, format_shape, normalize_axis


@onnx_op("Reshape")
def _reshape_op(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x = ctx.required(0)
    # the shape was an attribute before opset 5
    shape: list[Dim] = ([int(d) for d in ctx.attr("shape")] if ctx.opset < 5
                        else ctx.dims_input(1, required=True))
    if not ctx.attr("allowzero", 0):       # 0 copies the input dim unless allowzero (opset 14)
        for i, d in enumerate(shape):
            if d == 0:
                if i >= x.type.rank:
                    raise ModelError(f"shape {shape} copies dim {i} of a rank-{x.type.rank} "
                                     "input")
                shape[i] = x.shape[i]
    return [reshape(ctx, x, resolve_minus_one(x.shape, shape))]


@onnx_op("Flatten")
def _flatten(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x = ctx.required(0)
    rank = x.type.rank
    axis = ctx.attr("axis", 1)
    axis = axis + rank if axis < 0 else axis
    if not 0 <= axis <= rank:
        raise ModelError(f"axis {ctx.attr('axis')} is out of range for rank {rank}")
    shape = (prod_dims(x.shape[:axis], "Flatten"), prod_dims(x.shape[axis:], "Flatten"))
    return [reshape(ctx, x, shape)]

@onnx_op("Unsqueeze")
def _unsqueeze(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x = ctx.required(0)
    raw = axes_operand(ctx, 13)
    if raw is None:
        raise ModelError("Unsqueeze needs axes")
    rank = x.type.rank + np.asarray(raw).size
    axes = axes_list(raw, rank)
    dims = iter(x.shape)
    return [reshape(ctx, x, [1 if i in axes else next(dims) for i in range(rank)])]


@onnx_op("Squeeze")
def _squeeze(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x = ctx.required(0)
    raw = axes_operand(ctx, 13)
    if raw is None:        # every dim known to be 1; a symbolic dim is kept
        axes = [i for i, d in enumerate(x.shape) if d == 1]
    else:
        axes = axes_list(raw, x.type.rank)
        for a in axes:
            if x.shape[a] != 1:
                raise ModelError(f"cannot squeeze dim {a} of {format_shape(x.shape)}")
    return [reshape(ctx, x, [d for i, d in enumerate(x.shape) if i not in axes])]


@onnx_op("Transpose")
def _transpose(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x = ctx.required(0)
    perm = ctx.attr("perm") or list(reversed(range(x.type.rank)))
    return [ctx.emit("transpose", [x], perm=tuple(perm))]


@onnx_op("Concat")
def _concat(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    xs = ctx.inputs()
    return [ctx.emit("concat", xs, axis=normalize_axis(ctx.attr("axis"), xs[0].type.rank))]


@onnx_op("Split")
def _split(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x = ctx.required(0)
    axis = normalize_axis(ctx.attr("axis", 0), x.type.rank)
    # sizes: the `split` attribute before opset 13, the optional second input after
    raw = ctx.attr("split") if ctx.opset < 13 else ctx.const_input(1)
    if raw is not None:
        sizes = [int(s) for s in np.asarray(raw).reshape(-1)]
        return ctx.add("split", [x], axis=axis, sizes=tuple(sizes))
    dim = static_dim(x, axis, "Split")
    n = ctx.attr("num_outputs") if ctx.opset >= 18 else None
    if n is not None:      # opset 18: equal chunks of ceil(dim / n), the last one smaller
        chunk = -(-dim // n)
        sizes = [chunk] * (n - 1) + [dim - chunk * (n - 1)]
        if sizes[-1] < 0:
            raise ModelError(f"cannot split dim {dim} into {n} chunks of {chunk}")
    else:
        n = len(node.output)
        if dim % n:
            raise ModelError(f"cannot split dim {dim} into {n} equal parts")
        sizes = [dim // n] * n
    return ctx.add("split", [x], axis=axis, sizes=tuple(sizes))


_INT32_MAX = 2**31 - 1     # exporters write "to the end" as INT32_MAX or INT64_MAX


def _slice_bound(v: int, dim: int, step: int, is_end: bool) -> int:
    """ONNX's clamping of one start/end, written so Python slicing reads it the same way."""
    v = v + dim if v < 0 else v
    if step > 0:
        return min(max(v, 0), dim)
    v = min(max(v, -1 if is_end else 0), dim - 1)
    return -dim - 1 if v < 0 else v    # -1 means "past index 0", which Python spells -dim-1


@onnx_op("Slice")
def _slice(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x = ctx.required(0)
    if ctx.opset < 10:     # starts/ends/axes were attributes; steps did not exist
        starts, ends, axes, steps = (ctx.attr("starts"), ctx.attr("ends"), ctx.attr("axes"),
                                     None)
    else:
        starts, ends = ctx.dims_input(1, required=True), ctx.dims_input(2, required=True)
        axes, steps = ctx.const_input(3), ctx.const_input(4)
    starts = [v if isinstance(v, str) else int(v) for v in np.asarray(starts).reshape(-1)]
    ends = [v if isinstance(v, str) else int(v) for v in np.asarray(ends).reshape(-1)]
    axes_ = list(range(len(starts))) if axes is None else axes_list(axes, x.type.rank)
    steps_ = [1] * len(starts) if steps is None else [int(v) for v in
                                                      np.asarray(steps).reshape(-1)]
    if not len(starts) == len(ends) == len(axes_) == len(steps_):
        raise ModelError("starts, ends, axes and steps differ in length")
    if 0 in steps_:
        raise ModelError("a slice step of 0 is not allowed")
    b: list[Dim] = []
    e: list[Dim] = []
    for ax, s0, e0, st in zip(axes_, starts, ends, steps_, strict=True):
        dim = x.shape[ax]
        if isinstance(dim, int) and not isinstance(s0, str) and not isinstance(e0, str):
            b.append(_slice_bound(s0, dim, st, is_end=False))
            e.append(_slice_bound(e0, dim, st, is_end=True))
        elif isinstance(dim, str) and s0 == 0 and st == 1 and (e0 == dim or (
                isinstance(e0, int) and e0 >= _INT32_MAX)):
            b.append(0)
            e.append(dim)                  # all of a symbolic dim
        elif isinstance(e0, str) and s0 == 0 and st == 1:
            b.append(0)
            e.append(e0)                   # a prefix of symbolic length (position_ids[:seq])
        else:
            raise ModelError(f"slice {s0}:{e0}:{st} of dim {dim} of %{x.name}: with symbolic "
                             "sizes kiln takes prefixes only; fix the sizes with input_shapes")
    return [ctx.emit("slice", [x], axes=tuple(axes_), starts=tuple(b), ends=tuple(e),
                     steps=tuple(steps_))]
