"""Recurrent layers: LSTM, GRU and RNN.

Each becomes the input projection of every timestep as one GEMM (``X W^T``, the biases in its
epilogue) followed by kiln's recurrence op (``lstm``/``gru``/``rnn``), which runs the loop over
time. ``layout=1`` (batch first) becomes transposes around them.
"""

from __future__ import annotations

import numpy as np
import onnx

from kiln.errors import ModelError
from kiln.frontend.onnx.context import Context, onnx_op, reshape
from kiln.ir.dtype import DType
from kiln.ir.graph import Value
from kiln.ir.ops.rnn import (
    GATES,
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


def _projection_bias(ctx: Context, b: Value, gh: int, h: int, lbr: bool) -> tuple[Value, Value]:
    """From B = [Wb, Rb] ([D, 2*G*H]): the bias added to the input projection (Wb + Rb, less
    GRU's recurrent h-gate bias under linear_before_reset) and that h-gate bias ([D, H])."""
    wb = ctx.emit("slice", [b], axes=(1,), starts=(0,), ends=(gh,))
    rb = ctx.emit("slice", [b], axes=(1,), starts=(gh,), ends=(2 * gh,))
    rbh = ctx.emit("slice", [rb], axes=(1,), starts=(gh - h,), ends=(gh,))
    if lbr:    # Rb_h is added inside the reset product, not to the projection
        keep = np.ones(gh, dtype=b.dtype.np)
        keep[gh - h:] = 0
        rb = ctx.emit("mul", [rb, ctx.constant(keep)])
    return ctx.emit("add", [wb, rb]), rbh


def _convert(op: str, ctx: Context) -> list[Value]:
    x, w, r = ctx.required(0), ctx.required(1), ctx.required(2)
    b, lens, h0 = ctx.input(3), ctx.input(4), ctx.input(5)
    c0 = ctx.input(6) if op == "lstm" else None
    p = ctx.input(7) if op == "lstm" else None
    direction = _direction(ctx)
    d_count, g = direction.count, GATES[op]
    h = int(ctx.attr("hidden_size", 0)) or _static(r, 2, "R's last dim (hidden_size)")
    gh = g * h
    if x.type.rank != 3 or w.type.rank != 3 or r.type.rank != 3:
        raise ModelError(f"X, W and R must be 3-D, got {x.type}, {w.type} and {r.type}")
    if w.shape[0] != d_count or w.shape[1] != gh or r.shape != (d_count, gh, h):
        raise ModelError(f"W {w.type} and R {r.type} do not fit {d_count} direction(s) of "
                         f"{g} gates x hidden_size {h}")
    if not x.dtype.is_float:
        raise ModelError(f"X must be floating-point, got {x.dtype}")
    batch_first = bool(ctx.attr("layout", 0)) if ctx.opset >= 14 else False
    if batch_first:                       # [B, T, I] -> [T, B, I]; states [B, D, H] -> [D, B, H]
        x = ctx.emit("transpose", [x], perm=(1, 0, 2))
        h0 = ctx.emit("transpose", [h0], perm=(1, 0, 2)) if h0 is not None else None
        c0 = ctx.emit("transpose", [c0], perm=(1, 0, 2)) if c0 is not None else None
    lbr = op == "gru" and bool(ctx.attr("linear_before_reset", 0))

    # the input projection of all timesteps, one GEMM: xp[t, b] = X[t, b] W^T + biases
    w2 = reshape(ctx, w, (d_count * gh, _static(w, 2, "W's input size")))
    t_len, batch, size = x.shape
    rows = t_len * batch if isinstance(t_len, int) and isinstance(batch, int) else (
        t_len if batch == 1 else batch if t_len == 1 else None)
    if rows is not None:   # one [T*B, I] GEMM: as a batch of T [B, I] ones its M would be B
        x = reshape(ctx, x, (rows, size))
    xp = ctx.emit("dense", [x, w2])
    rbh = ctx.constant(np.zeros((d_count, h), dtype=x.dtype.np)) if lbr else None
    if b is not None:      # before the reshape below, so the GEMM takes it as its epilogue
        bias, rbh_b = _projection_bias(ctx, b, gh, h, lbr)
        xp = ctx.emit("add", [xp, reshape(ctx, bias, (d_count * gh,))])
        rbh = rbh_b if lbr else None
    xp = reshape(ctx, xp, (t_len, batch, d_count * gh))
    inputs = [xp, ctx.emit("transpose", [r], perm=(0, 2, 1))]
    if rbh is not None:
        inputs.append(rbh)
    for v in (h0, c0, p):
        if v is not None:
            inputs.append(v)
    if lens is not None:
        inputs.append(lens if lens.dtype is DType.int32
                      else ctx.emit("cast", [lens], dtype=DType.int32))

    clip = ctx.attr("clip")
    attrs = dict(hidden_size=h, direction=direction,
                 activations=_activations(ctx, op, d_count),
                 clip=float(clip) if clip is not None else None,
                 has_h0=h0 is not None, has_lens=lens is not None)
    if op == "lstm":
        attrs.update(has_c0=c0 is not None, has_peephole=p is not None,
                     input_forget=bool(ctx.attr("input_forget", 0)))
    if op == "gru":
        attrs.update(linear_before_reset=lbr)
    outs = ctx.add(op, inputs, **attrs)
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
