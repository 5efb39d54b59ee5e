"""A recurrent layer (LSTM, GRU, RNN) as graph nodes: the one construction that both the ONNX
importer and the Python API (``ops.lstm``, ``nn.LSTM``) use.

The input projection of every timestep is one GEMM, ``xp = X W^T + bias`` over all T x B rows
(the biases in its epilogue), and kiln's recurrence op (``lstm``/``gru``/``rnn``) runs the loop
over time in one kernel per layer, both directions in parallel tasks. Layouts are ONNX's:

    x [T, B, I]   w [D, G*H, I]   r [D, G*H, H]   b [D, 2*G*H] (Wb then Rb)
    gates: LSTM i, o, f, c; GRU z, r, h; D = 2 for a bidirectional layer
    returns y [T, D, B, H], y_h [D, B, H] (and y_c [D, B, H] for LSTM)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from kiln.errors import ModelError
from kiln.ir.dtype import DType
from kiln.ir.graph import Value
from kiln.ir.ops.rnn import GATES
from kiln.ir.types import Dim

# adds one node: (op, inputs, **attrs) -> its outputs (Graph.add, or the ONNX context's add,
# which also tracks what it can fold)
Emit = Callable[..., list[Value]]
# a constant of the graph
Constant = Callable[[np.ndarray], Value]


def recurrent_layer(emit: Emit, constant: Constant, op: str, x: Value, w: Value, r: Value,
                    b: Value | None = None, h0: Value | None = None, c0: Value | None = None,
                    peephole: Value | None = None, lens: Value | None = None,
                    **attrs: Any) -> list[Value]:
    """The graph of one recurrent layer (see the module docstring). ``attrs`` are the
    recurrence op's (``hidden_size``, ``direction``, ``activations``, ...)."""
    d_count, gh, size = w.shape
    h = gh // GATES[op]
    lbr = bool(attrs.get("linear_before_reset", False))
    w2 = _reshape(emit, w, (d_count * gh, size))
    t_len, batch, _ = x.shape
    rows = t_len * batch if isinstance(t_len, int) and isinstance(batch, int) else (
        t_len if batch == 1 else batch if t_len == 1 else None)
    if rows is not None:   # one [T*B, I] GEMM: as a batch of T [B, I] ones its M would be B
        x = _reshape(emit, x, (rows, size))
    xp = emit("dense", [x, w2])[0]
    rbh = constant(np.zeros((d_count, h), dtype=x.dtype.np)) if lbr else None
    if b is not None:      # before the reshape below, so the GEMM takes it as its epilogue
        bias, rbh_b = _projection_bias(emit, constant, b, gh, h, lbr)
        xp = emit("add", [xp, _reshape(emit, bias, (d_count * gh,))])[0]
        rbh = rbh_b if lbr else None
    xp = _reshape(emit, xp, (t_len, batch, d_count * gh))
    inputs = [xp, emit("transpose", [r], perm=(0, 2, 1))[0]]
    inputs += [v for v in (rbh, h0, c0, peephole) if v is not None]
    if lens is not None:
        inputs.append(lens if lens.dtype is DType.int32
                      else emit("cast", [lens], dtype=DType.int32)[0])
    return emit(op, inputs, **attrs, has_h0=h0 is not None, has_lens=lens is not None,
                **({"has_c0": c0 is not None, "has_peephole": peephole is not None}
                   if op == "lstm" else {}))


def check_weights(op: str, d_count: int, h: int, x: Value, w: Value, r: Value) -> None:
    """Shapes and dtype of a layer's X, W and R, with the error a user can act on."""
    g = GATES[op]
    if x.type.rank != 3 or w.type.rank != 3 or r.type.rank != 3:
        raise ModelError(f"X, W and R must be 3-D, got {x.type}, {w.type} and {r.type}")
    if w.shape[0] != d_count or w.shape[1] != g * h or r.shape != (d_count, g * h, h):
        raise ModelError(f"W {w.type} and R {r.type} do not fit {d_count} direction(s) of "
                         f"{g} gates x hidden_size {h}")
    if not x.dtype.is_float:
        raise ModelError(f"X must be floating-point, got {x.dtype}")


def _projection_bias(emit: Emit, constant: Constant, b: Value, gh: int, h: int,
                     lbr: bool) -> tuple[Value, Value]:
    """From B = [Wb, Rb] ([D, 2*G*H]): the bias added to the input projection (Wb + Rb, less
    GRU's recurrent h-gate bias under linear_before_reset) and that h-gate bias ([D, H])."""
    wb = emit("slice", [b], axes=(1,), starts=(0,), ends=(gh,))[0]
    rb = emit("slice", [b], axes=(1,), starts=(gh,), ends=(2 * gh,))[0]
    rbh = emit("slice", [rb], axes=(1,), starts=(gh - h,), ends=(gh,))[0]
    if lbr:    # Rb_h is added inside the reset product, not to the projection
        keep = np.ones(gh, dtype=b.dtype.np)
        keep[gh - h:] = 0
        rb = emit("mul", [rb, constant(keep)])[0]
    return emit("add", [wb, rb])[0], rbh


def _reshape(emit: Emit, x: Value, shape: Sequence[Dim]) -> Value:
    shape = tuple(shape)
    return x if shape == x.shape else emit("reshape", [x], shape=shape)[0]
