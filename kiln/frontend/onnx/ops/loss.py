"""Loss functions: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss.

Neither is a kiln op: both lower onto existing ones, which fusion puts back together (the
gathers, masks and products are injective and inline into the reduction that ends them)::

    picked  = gather_elements(log_prob, target[:, None], axis=1)     # [N, d1, ...]
    loss    = where(target == ignore_index, 0, -picked) * weight[target]
    result  = loss | sum(loss) | sum(loss) / sum(weight[target] masked by ignore_index)

SoftmaxCrossEntropyLoss is the same on ``log_softmax(scores, axis=1)``, whose result is also
its optional second output. Both follow onnx's reference implementations exactly, including
their corner cases: an ignored target reads class 0 (never out of range, never a NaN from a
``-inf`` log probability times a zero weight), and the mean of weighted or ignoring losses
divides by the sum of the weights that count (0 / 0 is NaN when every target is ignored).
"""

from __future__ import annotations

import onnx

from kiln.errors import ModelError
from kiln.frontend.onnx.context import Context, onnx_op, reshape
from kiln.ir.graph import Value
from kiln.ir.types import Dim, format_shape

_REDUCTIONS = ("none", "sum", "mean")


def _same_dim(a: Dim, b: Dim) -> bool:
    """False only when both dims are known and differ."""
    return a == b or not (isinstance(a, int) and isinstance(b, int))


def _check(ctx: Context, x: Value, target: Value, weight: Value | None) -> str:
    """Validate the operands against the spec; returns the reduction."""
    reduction = ctx.attr("reduction", "mean")
    if reduction not in _REDUCTIONS:
        raise ModelError(f"reduction={reduction!r} is not one of {', '.join(_REDUCTIONS)}")
    if not x.dtype.is_float:
        raise ModelError(f"the input must be a float tensor, got {x.dtype}")
    if x.type.rank < 2:
        raise ModelError(f"the input must be [N, C] or [N, C, d1, ...], got "
                         f"{format_shape(x.shape)}")
    want = (x.shape[0], *x.shape[2:])
    if target.type.rank != len(want) or not target.dtype.is_int:
        raise ModelError(f"the target must be integers of shape {format_shape(want)} (the "
                         f"input's without C), got {target.type}")
    if weight is not None and (weight.type.rank != 1 or weight.dtype is not x.dtype
                               or not _same_dim(weight.shape[0], x.shape[1])):
        raise ModelError(f"the weight must be a [C] tensor of {x.dtype}, got {weight.type}")
    return reduction


def negative_log_likelihood(ctx: Context, log_prob: Value, target: Value,
                            weight: Value | None, reduction: str,
                            ignore_index: int | None) -> Value:
    """ONNX NegativeLogLikelihoodLoss of ``log_prob`` [N, C, d1, ...] at integer ``target``
    [N, d1, ...] in kiln ops: the per-element losses (``reduction="none"``), their sum, or
    their weighted mean."""
    ignored = None
    safe = target
    if ignore_index is not None:
        ignored = ctx.emit("equal", [target, ctx.scalar(ignore_index, target)])
        # an ignored target may lie outside [0, C) (negative, or past the last class): read
        # class 0 instead, whose value the mask then drops
        safe = ctx.emit("where", [ignored, ctx.scalar(0, target), target])
    shape = target.shape
    index = reshape(ctx, safe, (shape[0], 1, *shape[1:]))
    picked = reshape(ctx, ctx.emit("gather_elements", [log_prob, index], axis=1), shape)
    loss = ctx.emit("neg", [picked])
    zero = ctx.scalar(0, log_prob)
    if ignored is not None:
        loss = ctx.emit("where", [ignored, zero, loss])
    counted = None          # each element's share of the mean's denominator, when not 1
    if weight is not None:
        counted = ctx.emit("gather", [weight, safe], axis=0)
        if ignored is not None:
            counted = ctx.emit("where", [ignored, zero, counted])
        loss = ctx.emit("mul", [loss, counted])
    elif ignored is not None:
        counted = ctx.emit("where", [ignored, zero, ctx.scalar(1, log_prob)])
    if reduction == "none":
        return loss
    total = ctx.emit("reduce_sum", [loss], axes=None, keepdims=False)
    if reduction == "sum":
        return total
    if counted is None:
        return ctx.emit("reduce_mean", [loss], axes=None, keepdims=False)
    return ctx.emit("div", [total, ctx.emit("reduce_sum", [counted], axes=None,
                                            keepdims=False)])


def _ignore_index(ctx: Context) -> int | None:
    value = ctx.attr("ignore_index")
    return None if value is None else int(value)


@onnx_op("NegativeLogLikelihoodLoss")
def _nll_loss(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    """Opsets 12, 13 and 22 differ only in the dtypes they allow."""
    x, target, weight = ctx.required(0), ctx.required(1), ctx.input(2)
    reduction = _check(ctx, x, target, weight)
    return [negative_log_likelihood(ctx, x, target, weight, reduction, _ignore_index(ctx))]


@onnx_op("SoftmaxCrossEntropyLoss")
def _softmax_cross_entropy_loss(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    """The loss of ``log_softmax(scores, axis=1)``, and those log probabilities as the optional
    second output."""
    x, target, weight = ctx.required(0), ctx.required(1), ctx.input(2)
    reduction = _check(ctx, x, target, weight)
    log_prob = ctx.emit("log_softmax", [x], axis=1)
    loss = negative_log_likelihood(ctx, log_prob, target, weight, reduction, _ignore_index(ctx))
    if len(node.output) > 1 and node.output[1]:
        return [loss, log_prob]
    return [loss]
