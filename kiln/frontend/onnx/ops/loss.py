"""Loss functions: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss.

Neither is a kiln op: both lower onto existing ones (gather_elements, where, mul, reductions;
see ``lower_nll_loss`` in the builder, which ``kiln.ops.nll_loss`` shares), and fusion puts
them back together, the gathers and masks inlined into the reduction that ends them.
SoftmaxCrossEntropyLoss is the same on ``log_softmax(scores, axis=1)``, whose result is also
its optional second output. Opsets 12, 13 and 22 differ only in the dtypes they allow.
"""

from __future__ import annotations

import onnx

from kiln.frontend.builder import check_loss, lower_nll_loss
from kiln.frontend.onnx.context import Context, onnx_op
from kiln.ir.graph import Value


def _nll(ctx: Context, log_prob: Value) -> Value:
    """The loss of ``log_prob`` at input 1 with the node's weight input and attributes."""
    ignore_index = ctx.attr("ignore_index")
    return lower_nll_loss(ctx, log_prob, ctx.required(1), ctx.input(2), _reduction(ctx),
                          None if ignore_index is None else int(ignore_index))


def _reduction(ctx: Context) -> str:
    return ctx.attr("reduction", "mean")


@onnx_op("NegativeLogLikelihoodLoss")
def _nll_loss(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    return [_nll(ctx, ctx.required(0))]


@onnx_op("SoftmaxCrossEntropyLoss")
def _softmax_cross_entropy_loss(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x = ctx.required(0)
    check_loss(x, ctx.required(1), ctx.input(2), _reduction(ctx))   # before log_softmax can fail
    log_prob = ctx.emit("log_softmax", [x], axis=1)
    loss = _nll(ctx, log_prob)
    return [loss, log_prob] if len(node.output) > 1 and node.output[1] else [loss]
