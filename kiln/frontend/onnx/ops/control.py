"""Control flow: If.

A condition known at import (a constant, or folded from constants) converts only the branch
it takes. A runtime condition converts both branches into the graph and picks each output
with ``where``: both run, which is what a dataflow kernel library can do, and is cheap for
the small branches exporters emit (shape fix-ups, optional paths).
"""

from __future__ import annotations

import numpy as np
import onnx

from kiln.errors import ModelError
from kiln.frontend.onnx.context import Context, onnx_op, reshape
from kiln.frontend.onnx.importer import convert_subgraph
from kiln.ir.dtype import DType
from kiln.ir.graph import Value


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
