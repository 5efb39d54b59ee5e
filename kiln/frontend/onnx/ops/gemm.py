"""MatMul and Gemm."""

from __future__ import annotations

import onnx

from kiln.errors import ModelError
from kiln.frontend.onnx.context import (
    Context,
    matmul_operands,
    matmul_result,
    onnx_op,
)
from kiln.ir.graph import Value
from kiln.ir.types import broadcast_shapes


@onnx_op("MatMul")
def _matmul(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    a, b = ctx.required(0), ctx.required(1)
    return [matmul_result(ctx, ctx.emit("matmul", list(matmul_operands(ctx, a, b))), a, b)]


@onnx_op("Gemm")
def _gemm(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    a, b, c = ctx.required(0), ctx.required(1), ctx.input(2)
    alpha, beta = ctx.attr("alpha", 1.0), ctx.attr("beta", 1.0)
    if a.type.rank != 2 or b.type.rank != 2:
        raise ModelError(f"Gemm needs 2-D A and B, got {a.type} and {b.type}")
    if ctx.attr("transA", 0):
        a = ctx.emit("transpose", [a], perm=(1, 0))
    if ctx.attr("transB", 0):
        y = ctx.emit("dense", [a, b])              # dense takes W as [N, K]: B as given
    elif b.is_constant:
        y = ctx.emit("dense", [a, ctx.emit("transpose", [b], perm=(1, 0))])  # folds
    else:
        y = ctx.emit("matmul", [a, b])
    if alpha != 1.0:
        y = ctx.emit("mul", [y, ctx.scalar(alpha, y)])
    if c is None or beta == 0.0:
        return [y]
    try:
        ok = broadcast_shapes(c.shape, y.shape) == y.shape
    except ModelError:
        ok = False
    if not ok:
        raise ModelError(f"C {c.type} does not broadcast to the result {y.type}")
    if beta != 1.0:
        c = ctx.emit("mul", [c, ctx.scalar(beta, c)])   # folds when C is an initializer
    return [ctx.emit("add", [y, c])]
