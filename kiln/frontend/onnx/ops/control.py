"""Control flow: If, and Loop and Scan unrolled.

A condition known at import (a constant, or folded from constants) converts only the branch
it takes. A runtime condition converts both branches into the graph and picks each output
with ``where``: both run, which is what a dataflow kernel library can do, and is cheap for
the small branches exporters emit (shape fix-ups, optional paths).

Loop and Scan are unrolled at import: their bodies are converted once per iteration, which
needs the iteration count at import (a constant trip count and loop conditions that fold; a
Scan's static sequence length). Each iteration's values then fold or fuse like any others.
"""

from __future__ import annotations

import numpy as np
import onnx

from kiln.errors import ModelError
from kiln.frontend.onnx.context import Context, onnx_op, reshape
from kiln.frontend.onnx.importer import convert_subgraph
from kiln.ir.dtype import DType
from kiln.ir.graph import Value
from kiln.ir.types import normalize_axis

MAX_UNROLL = 4096   # iterations; past this the unrolled graph is too large to compile


@onnx_op("If")
def _if(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    cond = ctx.required(0)
    then_branch, else_branch = ctx.attr("then_branch"), ctx.attr("else_branch")
    if cond.type.is_static and cond.type.numel != 1:
        raise ModelError(f"the condition must hold one element, got {cond.type}")
    if cond.is_constant:
        taken = then_branch if bool(np.asarray(cond.data).reshape(-1)[0]) else else_branch
        return convert_subgraph(ctx, taken)
    then_outs = convert_subgraph(ctx, then_branch)
    else_outs = convert_subgraph(ctx, else_branch)
    if len(then_outs) != len(else_outs):
        raise ModelError(f"the branches have {len(then_outs)} and {len(else_outs)} outputs")
    for k, (a, b) in enumerate(zip(then_outs, else_outs, strict=True)):
        if a.type != b.type:
            raise ModelError(f"with a condition known only at run time both branches run, so "
                             f"their outputs must have equal types; output {k} is {a.type} in "
                             f"then_branch and {b.type} in else_branch")
    if cond.dtype is not DType.bool:
        cond = ctx.emit("cast", [cond], dtype=DType.bool)
    cond = reshape(ctx, cond, ())
    return [a if a is b else ctx.emit("where", [cond, a, b])
            for a, b in zip(then_outs, else_outs, strict=True)]


def _unrolled(ctx: Context, what: str, steps: int) -> None:
    if steps > MAX_UNROLL:
        raise ModelError(f"{what} runs {steps} iterations; kiln unrolls loops at import and "
                         f"takes at most {MAX_UNROLL}")


def _stack(ctx: Context, items: list[Value], axis: int, what: str) -> Value:
    """``items`` (equal types) stacked along a new ``axis``."""
    if not items:
        raise ModelError(f"{what}: no iteration ran, so its shape is unknown")
    first = items[0]
    if any(v.type != first.type for v in items):
        raise ModelError(f"{what}: iterations give different types "
                         f"({', '.join(sorted({str(v.type) for v in items}))})")
    axis = normalize_axis(axis, first.type.rank + 1)
    shape = (*first.shape[:axis], 1, *first.shape[axis:])
    parts = [reshape(ctx, v, shape) for v in items]
    return parts[0] if len(parts) == 1 else ctx.emit("concat", parts, axis=axis)


def _take(ctx: Context, x: Value, axis: int, i: int) -> Value:
    """``x``'s ``i``-th slice along ``axis``, that axis dropped."""
    part = ctx.emit("slice", [x], axes=(axis,), starts=(i,), ends=(i + 1,))
    return reshape(ctx, part, x.shape[:axis] + x.shape[axis + 1:])


@onnx_op("Loop")
def _loop(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    body = ctx.attr("body")
    trip, cond = ctx.input(0), ctx.input(1)
    carried = [ctx.required(i) for i in range(2, len(node.input))]
    if trip is not None and not trip.is_constant:
        raise ModelError("the trip count is computed at run time; kiln unrolls loops at "
                         "import and needs it constant")
    if cond is not None and not cond.is_constant:
        raise ModelError("the loop condition is computed at run time; kiln unrolls loops at "
                         "import and needs it constant")
    limit = int(np.asarray(trip.data).reshape(-1)[0]) if trip is not None else None
    if limit is None and cond is None:
        raise ModelError("a loop with neither trip count nor condition never ends")
    _unrolled(ctx, "the loop", limit or 0)
    running = cond is None or bool(np.asarray(cond.data).reshape(-1)[0])
    scans: list[list[Value]] = []
    i = 0
    while running and (limit is None or i < limit):
        if i >= MAX_UNROLL:
            _unrolled(ctx, "the loop", i + 1)
        outs = convert_subgraph(ctx, body, [ctx.constant(np.array(i, dtype=np.int64)),
                                            ctx.constant(np.array(True)), *carried])
        cond_out, carried = outs[0], outs[1:1 + len(carried)]
        scans.append(outs[1 + len(carried):])
        if not cond_out.is_constant:
            raise ModelError(f"the condition the body computes in iteration {i} is known "
                             "only at run time; kiln unrolls loops at import and needs it "
                             "to fold to a constant")
        running = bool(np.asarray(cond_out.data).reshape(-1)[0])
        i += 1
    k_count = len(body.output) - 1 - len(carried)
    return [*carried, *(_stack(ctx, [s[k] for s in scans], 0, f"scan output {k}")
                        for k in range(k_count))]


@onnx_op("Scan")
def _scan(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    body, m = ctx.attr("body"), int(ctx.attr("num_scan_inputs"))
    if ctx.opset >= 9:
        values = ctx.inputs()
        n, k_count = len(values) - m, len(body.output) - (len(values) - m)
        xs = values[len(values) - m:]
        in_axes = [normalize_axis(int(a), x.type.rank)
                   for a, x in zip(ctx.attr("scan_input_axes", [0] * m), xs, strict=True)]
        return _scan_unrolled(ctx, body, values[:n], xs, in_axes,
                              list(ctx.attr("scan_input_directions", [0] * m)),
                              list(ctx.attr("scan_output_axes", [0] * k_count)),
                              list(ctx.attr("scan_output_directions", [0] * k_count)))
    # opset 8: every input has a batch axis 0 (the sequence is axis 1), scanned per row
    if ctx.input(0) is not None:
        raise ModelError("Scan-8 with sequence_lens is not supported")
    values = [ctx.required(i) for i in range(1, len(node.input))]
    n, k_count = len(values) - m, len(body.output) - (len(values) - m)
    batch = values[0].shape[0]
    if not isinstance(batch, int):
        raise ModelError(f"Scan-8 needs a static batch, got {values[0].type}")
    rows = []
    for b in range(batch):
        row = [_take(ctx, v, 0, b) for v in values]
        rows.append(_scan_unrolled(ctx, body, row[:n], row[n:], [0] * m,
                                   list(ctx.attr("directions", [0] * m)),
                                   [0] * k_count, [0] * k_count))
    return [_stack(ctx, [r[j] for r in rows], 0, f"output {j}") for j in range(n + k_count)]


def _scan_unrolled(ctx: Context, body: onnx.GraphProto, states: list[Value], xs: list[Value],
                   in_axes: list[int], in_dirs: list[int], out_axes: list[int],
                   out_dirs: list[int]) -> list[Value]:
    """Scan (opset 9 semantics) unrolled: the final states, then the scan outputs."""
    n = len(states)
    lengths = {x.shape[a] for x, a in zip(xs, in_axes, strict=True)}
    if len(lengths) != 1 or not isinstance(steps := lengths.pop(), int):
        raise ModelError(f"the scan inputs' sequence lengths must be one static number, got "
                         f"{sorted(map(str, lengths))}; kiln unrolls Scan at import")
    _unrolled(ctx, "the scan", steps)
    scans: list[list[Value]] = []
    for i in range(steps):
        slices = [_take(ctx, x, a, steps - 1 - i if d else i)
                  for x, a, d in zip(xs, in_axes, in_dirs, strict=True)]
        outs = convert_subgraph(ctx, body, [*states, *slices])
        states = outs[:n]
        scans.append(outs[n:])
    results = list(states)
    for k in range(len(out_axes)):
        items = [s[k] for s in scans]
        if out_dirs[k]:
            items.reverse()      # a reverse scan output is built by prepending
        results.append(_stack(ctx, items, int(out_axes[k]), f"scan output {k}"))
    return results
