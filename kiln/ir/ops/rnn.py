"""Recurrent ops: ``lstm``, ``gru`` and ``rnn``, the time recurrence of ONNX's LSTM, GRU and RNN.

The input projection is not part of these ops: the frontend computes it for all timesteps as
one GEMM (``xp = X W^T + biases``, a fused bias epilogue) and the recurrent op runs the loop
over time on it. Inputs, in order (``D`` directions, ``G`` gates, ``H`` hidden units)::

    xp    [T, B, D*G*H]   input projection, with the input bias and the recurrent bias folded in
                          (except GRU's recurrent h-gate bias under linear_before_reset)
    rt    [D, H, G*H]     recurrence weights, transposed: rt[d, k, j] = R[d, j, k]
    rbh   [D, H]          GRU with linear_before_reset only: the recurrent h-gate bias
    h0    [D, B, H]       if ``has_h0`` (else zeros)
    c0    [D, B, H]       LSTM, if ``has_c0`` (else zeros)
    p     [D, 3*H]        LSTM peepholes (i, o, f), if ``has_peephole``
    lens  [B] int32       if ``has_lens``: batch b runs lens[b] steps (else T)

Outputs: ``y [T, D, B, H]`` (zero past a sequence's length), ``y_h [D, B, H]`` (the state after
the last valid step; zero for an empty sequence) and, for LSTM, ``y_c [D, B, H]``. Gate orders
follow ONNX: LSTM i, o, f, c; GRU z, r, h. A reverse direction (and the second direction of a
bidirectional one) walks each sequence from step lens[b] - 1 down to 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from kiln.errors import ModelError
from kiln.ir.dtype import DType
from kiln.ir.ops.registry import OpDef, Pattern, register
from kiln.ir.types import TensorType, format_shape


class Direction(str, Enum):
    FORWARD = "forward"
    REVERSE = "reverse"
    BIDIRECTIONAL = "bidirectional"

    @property
    def count(self) -> int:
        return 2 if self is Direction.BIDIRECTIONAL else 1

    def reversed(self, d: int) -> bool:
        """Does direction index ``d`` walk the sequence backwards?"""
        return self is Direction.REVERSE or (self is Direction.BIDIRECTIONAL and d == 1)

    def __str__(self) -> str:
        return self.value


class Activation(str, Enum):
    """The activation functions ONNX's recurrent ops name (their ``activations`` attribute)."""

    SIGMOID = "sigmoid"
    TANH = "tanh"
    RELU = "relu"
    HARD_SIGMOID = "hard_sigmoid"      # max(0, min(1, alpha x + beta))
    LEAKY_RELU = "leaky_relu"          # x if x >= 0 else alpha x
    THRESHOLDED_RELU = "thresholded_relu"   # x if x > alpha else 0
    SCALED_TANH = "scaled_tanh"        # alpha tanh(beta x)
    AFFINE = "affine"                  # alpha x + beta
    ELU = "elu"                        # x if x >= 0 else alpha (e^x - 1)
    SOFTSIGN = "softsign"              # x / (1 + |x|)
    SOFTPLUS = "softplus"              # log(1 + e^x)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class ActivationFn:
    """An activation with its parameters (unused ones stay 0)."""

    kind: Activation
    alpha: float = 0.0
    beta: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", Activation(self.kind))

    def __str__(self) -> str:
        if self.kind in _USES_ALPHA or self.kind in _USES_BETA:
            return f"{self.kind}({self.alpha:g}, {self.beta:g})"
        return str(self.kind)


_USES_ALPHA = {Activation.HARD_SIGMOID, Activation.LEAKY_RELU, Activation.THRESHOLDED_RELU,
               Activation.SCALED_TANH, Activation.AFFINE, Activation.ELU}
_USES_BETA = {Activation.HARD_SIGMOID, Activation.SCALED_TANH, Activation.AFFINE}


def uses_alpha(kind: Activation) -> bool:
    return kind in _USES_ALPHA


def uses_beta(kind: Activation) -> bool:
    return kind in _USES_BETA


def activate(f: ActivationFn, x: np.ndarray) -> np.ndarray:
    """The NumPy reference of one activation (float64 in, float64 out)."""
    a, b = f.alpha, f.beta
    k = f.kind
    if k is Activation.SIGMOID:
        return 1.0 / (1.0 + np.exp(-x))
    if k is Activation.TANH:
        return np.tanh(x)
    if k is Activation.RELU:
        return np.maximum(x, 0.0)
    if k is Activation.HARD_SIGMOID:
        return np.clip(a * x + b, 0.0, 1.0)
    if k is Activation.LEAKY_RELU:
        return np.where(x >= 0, x, a * x)
    if k is Activation.THRESHOLDED_RELU:
        return np.where(x > a, x, 0.0)
    if k is Activation.SCALED_TANH:
        return a * np.tanh(b * x)
    if k is Activation.AFFINE:
        return a * x + b
    if k is Activation.ELU:
        return np.where(x >= 0, x, a * (np.exp(np.minimum(x, 0.0)) - 1.0))
    if k is Activation.SOFTSIGN:
        return x / (1.0 + np.abs(x))
    return np.logaddexp(0.0, x)       # softplus


@dataclass(frozen=True)
class RecurrentAttrs:
    """What ``lstm``, ``gru`` and ``rnn`` share. ``activations`` holds ``k`` functions per
    direction (LSTM f, g, h; GRU f, g; RNN f), direction 0's first."""

    hidden_size: int
    direction: Direction = Direction.FORWARD
    activations: tuple[ActivationFn, ...] = ()
    clip: float | None = None          # gate pre-activations are clipped to [-clip, clip]
    has_h0: bool = False
    has_lens: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "direction", Direction(self.direction))
        object.__setattr__(self, "activations", tuple(self.activations))
        if self.hidden_size < 1:
            raise ModelError(f"hidden_size must be >= 1, got {self.hidden_size}")
        if self.clip is not None and not self.clip > 0:
            raise ModelError(f"clip must be positive, got {self.clip}")

    def activation(self, d: int, i: int) -> ActivationFn:
        """The ``i``-th activation function of direction ``d``."""
        per = len(self.activations) // self.direction.count
        return self.activations[d * per + i]


@dataclass(frozen=True)
class LstmAttrs(RecurrentAttrs):
    has_c0: bool = False
    has_peephole: bool = False
    input_forget: bool = False         # couple the gates: f = 1 - i


@dataclass(frozen=True)
class GruAttrs(RecurrentAttrs):
    linear_before_reset: bool = False  # h-gate: r * (h R_h^T + Rb_h) instead of (r * h) R_h^T


# gates per op, and activations per direction
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
NUM_ACTIVATIONS = {"lstm": 3, "gru": 2, "rnn": 1}


def split_inputs(op: str, at: RecurrentAttrs, inputs: list) -> dict:
    """Name the positional inputs (types or arrays) of a recurrent op, by its flags."""
    names = ["xp", "rt"]
    if op == "gru" and at.linear_before_reset:
        names.append("rbh")
    if at.has_h0:
        names.append("h0")
    if op == "lstm" and at.has_c0:
        names.append("c0")
    if op == "lstm" and at.has_peephole:
        names.append("p")
    if at.has_lens:
        names.append("lens")
    if len(inputs) != len(names):
        raise ModelError(f"{op} with these attributes takes {len(names)} inputs "
                         f"({', '.join(names)}), got {len(inputs)}")
    return dict(zip(names, inputs, strict=True))


def _expect(op: str, what: str, t: TensorType, shape: tuple) -> None:
    ok = t.rank == len(shape) and all(
        isinstance(a, str) or isinstance(b, str) or a == b
        for a, b in zip(t.shape, shape, strict=True))
    if not ok:
        raise ModelError(f"{op}: {what} must be {format_shape(shape)}, got {t}")


def _infer(op: str):
    def infer(at: RecurrentAttrs, *types: TensorType) -> tuple[TensorType, ...]:
        ins = split_inputs(op, at, list(types))
        xp, d, h, g = ins["xp"], at.direction.count, at.hidden_size, GATES[op]
        if len(at.activations) != d * NUM_ACTIVATIONS[op]:
            raise ModelError(f"{op} needs {NUM_ACTIVATIONS[op]} activations per direction, "
                             f"got {len(at.activations)} for {d} direction(s)")
        if not xp.dtype.is_float:
            raise ModelError(f"{op} needs a floating-point input, got {xp.dtype}")
        if xp.rank != 3:
            raise ModelError(f"{op}: xp must be [T, B, {d * g * h}], got {xp}")
        t, b = xp.shape[0], xp.shape[1]
        _expect(op, "xp", xp, (t, b, d * g * h))
        _expect(op, "rt", ins["rt"], (d, h, g * h))
        for name, shape in (("rbh", (d, h)), ("h0", (d, b, h)), ("c0", (d, b, h)),
                            ("p", (d, 3 * h)), ("lens", (b,))):
            if name in ins:
                _expect(op, name, ins[name], shape)
                want = DType.int32 if name == "lens" else xp.dtype
                if ins[name].dtype != want:
                    raise ModelError(f"{op}: {name} must be {want}, got {ins[name].dtype}")
        if ins["rt"].dtype != xp.dtype:
            raise ModelError(f"{op}: rt must be {xp.dtype}, got {ins['rt'].dtype}")
        state = TensorType((d, b, h), xp.dtype)
        y = TensorType((t, d, b, h), xp.dtype)
        return (y, state, state) if op == "lstm" else (y, state)
    return infer


def _reference(op: str):
    def reference(at: RecurrentAttrs, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        ins = split_inputs(op, at, list(arrays))
        xp = ins["xp"].astype(np.float64)
        t_len, batch = xp.shape[:2]
        d_count, h, g = at.direction.count, at.hidden_size, GATES[op]
        lens = np.clip(ins["lens"], 0, t_len) if "lens" in ins else np.full(batch, t_len)
        y = np.zeros((t_len, d_count, batch, h))
        y_h = np.zeros((d_count, batch, h))
        y_c = np.zeros((d_count, batch, h))
        for d in range(d_count):
            rt = ins["rt"][d].astype(np.float64)
            for b in range(batch):
                hs = ins["h0"][d, b].astype(np.float64) if "h0" in ins else np.zeros(h)
                cs = ins["c0"][d, b].astype(np.float64) if "c0" in ins else np.zeros(h)
                n = int(lens[b])
                for s in range(n):
                    t = n - 1 - s if at.direction.reversed(d) else s
                    x = xp[t, b, d * g * h:(d + 1) * g * h]
                    hs, cs = _STEP[op](at, d, ins, x, hs, cs, rt)
                    y[t, d, b] = hs
                if n:      # an empty sequence leaves zero states, as onnxruntime gives
                    y_h[d, b], y_c[d, b] = hs, cs
        dt = ins["xp"].dtype
        outs = (y.astype(dt), y_h.astype(dt))
        return (*outs, y_c.astype(dt)) if op == "lstm" else outs
    return reference


def _clip(at: RecurrentAttrs, x: np.ndarray) -> np.ndarray:
    return x if at.clip is None else np.clip(x, -at.clip, at.clip)


def _lstm_step(at: LstmAttrs, d: int, ins: dict, x, hs, cs, rt):
    h = at.hidden_size
    gates = x + hs @ rt
    pi, po, pf = ((ins["p"][d].astype(np.float64).reshape(3, h)) if "p" in ins
                  else np.zeros((3, h)))
    f_act, g_act, h_act = (at.activation(d, k) for k in range(3))
    i = activate(f_act, _clip(at, gates[0:h] + pi * cs))
    if at.input_forget:
        f = 1.0 - i
    else:
        f = activate(f_act, _clip(at, gates[2 * h:3 * h] + pf * cs))
    c_new = f * cs + i * activate(g_act, _clip(at, gates[3 * h:4 * h]))
    o = activate(f_act, _clip(at, gates[h:2 * h] + po * c_new))
    return o * activate(h_act, c_new), c_new


def _gru_step(at: GruAttrs, d: int, ins: dict, x, hs, cs, rt):
    h = at.hidden_size
    f_act, g_act = at.activation(d, 0), at.activation(d, 1)
    zr = x[:2 * h] + hs @ rt[:, :2 * h]
    z = activate(f_act, _clip(at, zr[:h]))
    r = activate(f_act, _clip(at, zr[h:]))
    if at.linear_before_reset:
        rec = r * (hs @ rt[:, 2 * h:] + ins["rbh"][d].astype(np.float64))
    else:
        rec = (r * hs) @ rt[:, 2 * h:]
    hh = activate(g_act, _clip(at, x[2 * h:] + rec))
    return (1.0 - z) * hh + z * hs, cs


def _rnn_step(at: RecurrentAttrs, d: int, ins: dict, x, hs, cs, rt):
    return activate(at.activation(d, 0), _clip(at, x + hs @ rt)), cs


_STEP = {"lstm": _lstm_step, "gru": _gru_step, "rnn": _rnn_step}
_ATTRS = {"lstm": LstmAttrs, "gru": GruAttrs, "rnn": RecurrentAttrs}
_MAX_INPUTS = {"lstm": 7, "gru": 5, "rnn": 4}

for _op in GATES:
    register(OpDef(_op, _ATTRS[_op], Pattern.OPAQUE, _infer(_op), _reference(_op),
                   num_inputs=(2, _MAX_INPUTS[_op])))

RECURRENT_OPS = tuple(GATES)
