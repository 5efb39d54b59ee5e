"""Recurrent layers: LSTM, GRU and RNN, built by ``kiln.frontend.recurrent`` (as the Python
API's are): the input projection of every timestep as one GEMM, then kiln's recurrence op.
``layout=1`` (batch first) becomes transposes around them.
"""

from __future__ import annotations

import onnx

from kiln.errors import ModelError
from kiln.frontend.onnx.context import Context, onnx_op
from kiln.frontend.recurrent import check_weights, recurrent_layer
from kiln.ir.graph import Value
from kiln.ir.ops.rnn import (
    NUM_ACTIVATIONS,
    Activation,
    ActivationFn,
    Direction,
    uses_alpha,
    uses_beta,
)

_ACTIVATIONS = {"sigmoid": Activation.SIGMOID, "tanh": Activation.TANH, "relu": Activation.RELU,
                "hardsigmoid": Activation.HARD_SIGMOID, "leakyrelu": Activation.LEAKY_RELU,
                "thresholdedrelu": Activation.THRESHOLDED_RELU,
                "scaledtanh": Activation.SCALED_TANH, "affine": Activation.AFFINE,
                "elu": Activation.ELU, "softsign": Activation.SOFTSIGN,
                "softplus": Activation.SOFTPLUS}
_DEFAULT_ACTIVATIONS = {"lstm": ("Sigmoid", "Tanh", "Tanh"), "gru": ("Sigmoid", "Tanh"),
                        "rnn": ("Tanh",)}
# (alpha, beta) when activation_alpha / activation_beta run out, as onnxruntime takes them
_DEFAULT_PARAMS = {Activation.HARD_SIGMOID: (0.2, 0.5), Activation.LEAKY_RELU: (0.01, 0.0),
                   Activation.THRESHOLDED_RELU: (1.0, 0.0), Activation.SCALED_TANH: (1.0, 1.0),
                   Activation.AFFINE: (1.0, 0.0), Activation.ELU: (1.0, 0.0)}


def _activations(ctx: Context, op: str, directions: int) -> tuple[ActivationFn, ...]:
    """The ``activations`` attribute with its alphas and betas, which are consumed in order
    by the functions that take them; one list per direction."""
    per = NUM_ACTIVATIONS[op]
    names = [str(n) for n in ctx.attr("activations", _DEFAULT_ACTIVATIONS[op] * directions)]
    if len(names) == per and directions == 2:
        names = names * 2
    if len(names) != per * directions:
        raise ModelError(f"activations lists {len(names)} functions; {op.upper()} takes "
                         f"{per} per direction ({per * directions} here)")
    alphas = list(ctx.attr("activation_alpha", []))
    betas = list(ctx.attr("activation_beta", []))
    out = []
    for name in names:
        kind = _ACTIVATIONS.get(name.lower())
        if kind is None:
            raise ModelError(f"activation {name!r} is not supported (supported: "
                             f"{', '.join(sorted(_ACTIVATIONS))})")
        alpha, beta = _DEFAULT_PARAMS.get(kind, (0.0, 0.0))
        if uses_alpha(kind) and alphas:
            alpha = float(alphas.pop(0))
        if uses_beta(kind) and betas:
            beta = float(betas.pop(0))
        out.append(ActivationFn(kind, alpha, beta))
    return tuple(out)


def _direction(ctx: Context) -> Direction:
    name = ctx.attr("direction", "forward")
    try:
        return Direction(name)
    except ValueError:
        raise ModelError(f"direction {name!r} is not one of forward, reverse, "
                         "bidirectional") from None


def _static(v: Value, axis: int, what: str) -> int:
    d = v.shape[axis]
    if not isinstance(d, int):
        raise ModelError(f"{what} must be static, got {v.type}")
    return d


def _convert(op: str, ctx: Context) -> list[Value]:
    x, w, r = ctx.required(0), ctx.required(1), ctx.required(2)
    b, lens, h0 = ctx.input(3), ctx.input(4), ctx.input(5)
    c0 = ctx.input(6) if op == "lstm" else None
    p = ctx.input(7) if op == "lstm" else None
    direction = _direction(ctx)
    d_count = direction.count
    h = int(ctx.attr("hidden_size", 0)) or _static(r, 2, "R's last dim (hidden_size)")
    check_weights(op, d_count, h, x, w, r)
    _static(w, 2, "W's input size")
    batch_first = bool(ctx.attr("layout", 0)) if ctx.opset >= 14 else False
    if batch_first:                       # [B, T, I] -> [T, B, I]; states [B, D, H] -> [D, B, H]
        x = ctx.emit("transpose", [x], perm=(1, 0, 2))
        h0 = ctx.emit("transpose", [h0], perm=(1, 0, 2)) if h0 is not None else None
        c0 = ctx.emit("transpose", [c0], perm=(1, 0, 2)) if c0 is not None else None
    clip = ctx.attr("clip")
    attrs = dict(hidden_size=h, direction=direction,
                 activations=_activations(ctx, op, d_count),
                 clip=float(clip) if clip is not None else None)
    if op == "lstm":
        attrs.update(input_forget=bool(ctx.attr("input_forget", 0)))
    if op == "gru":
        attrs.update(linear_before_reset=bool(ctx.attr("linear_before_reset", 0)))
    outs = recurrent_layer(ctx.add, ctx.constant, op, x, w, r, b, h0, c0, p, lens, **attrs)
    if batch_first:                       # Y [T, D, B, H] -> [B, T, D, H]; states -> [B, D, H]
        outs = [ctx.emit("transpose", [outs[0]], perm=(2, 0, 1, 3)),
                *(ctx.emit("transpose", [s], perm=(1, 0, 2)) for s in outs[1:])]
    return outs


@onnx_op("LSTM")
def _lstm(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    return _convert("lstm", ctx)


@onnx_op("GRU")
def _gru(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    return _convert("gru", ctx)


@onnx_op("RNN")
def _rnn(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    return _convert("rnn", ctx)
