"""Gather and friends."""

from __future__ import annotations

import onnx

from kiln.frontend.onnx.context import (
    Context,
    onnx_op,
)
from kiln.ir.graph import Value
from kiln.ir.types import normalize_axis


@onnx_op("Gather")
def _gather(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x, idx = ctx.required(0), ctx.required(1)
    return [ctx.emit("gather", [x, idx], axis=normalize_axis(ctx.attr("axis", 0), x.type.rank))]
