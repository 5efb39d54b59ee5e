"""ONNX LSTM, GRU and RNN compiled by kiln against onnxruntime: every direction, with and
without initial states and sequence lengths, both layouts, odd sizes (hidden 7, input 5,
batch 3, T 4), weights as initializers (packed at compile time) and as runtime inputs."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from test_onnx import init, make_model, randn, run_ort, tensor

import kiln
from kiln.errors import ModelError
from kiln.frontend.onnx import import_onnx
from kiln.testing import assert_outputs_close

T_, B_, I_, H_ = 4, 3, 5, 7
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
LENS = np.array([4, 0, 3], dtype=np.int32)   # an empty sequence gives zero states


def rnn_model(op: str, direction: str = "forward", *, states: bool = False, lens: bool = False,
              layout: int = 0, weights_const: bool = True, bias: bool = True,
              peephole: bool = False, opset: int = 14, outputs: tuple[str, ...] | None = None,
              batch: int = B_, **attrs: object) -> tuple:
    """One recurrent node; returns the model and its feeds."""
    d, g = (2 if direction == "bidirectional" else 1), GATES[op]
    x_shape = (batch, T_, I_) if layout else (T_, batch, I_)
    s_shape = (batch, d, H_) if layout else (d, batch, H_)
    arrays = {"W": randn(d, g * H_, I_, seed=1) * 0.5, "R": randn(d, g * H_, H_, seed=2) * 0.5}
    if bias:
        arrays["B"] = randn(d, 2 * g * H_, seed=3) * 0.5
    feeds = {"X": randn(*x_shape, seed=4)}
    names = ["X", "W", "R", "B" if bias else ""]
    names.append("lens" if lens else "")
    if lens:
        feeds["lens"] = LENS if batch == B_ else np.arange(batch, dtype=np.int32) * 3 % (T_ + 1)
    if states:
        feeds["h0"] = randn(*s_shape, seed=5)
    names.append("h0" if states else "")
    if op == "LSTM":
        if states:
            feeds["c0"] = randn(*s_shape, seed=6)
        names.append("c0" if states else "")
        if peephole:
            arrays["P"] = randn(d, 3 * H_, seed=7) * 0.5
        names.append("P" if peephole else "")
    while names[-1] == "":
        names.pop()
    outs = list(outputs or (("Y", "Y_h", "Y_c") if op == "LSTM" else ("Y", "Y_h")))
    if layout:
        attrs["layout"] = 1
    node = helper.make_node(op, names, outs, hidden_size=H_, direction=direction, **attrs)
    inputs = [tensor(n, feeds[n].shape, TensorProto.INT32 if n == "lens" else TensorProto.FLOAT)
              for n in feeds]
    if weights_const:
        inits = [init(n, a) for n, a in arrays.items()]
    else:
        inits = []
        inputs += [tensor(n, a.shape) for n, a in arrays.items()]
        feeds.update(arrays)
    return make_model([node], inputs, [o for o in outs if o], inits, opset), feeds


def check_compiled(model, feeds: dict, rtol: float = 1e-4, atol: float = 2e-5) -> None:
    """kiln's compiled code and its reference interpreter against onnxruntime."""
    want = run_ort(model, feeds)
    assert_outputs_close(kiln.run_reference(import_onnx(model), feeds), want, rtol, atol)
    assert_outputs_close(kiln.compile(model)(**feeds), want, rtol, atol)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_plain(op: str, direction: str) -> None:
    """No optional inputs, runtime weights, layout 0."""
    check_compiled(*rnn_model(op, direction, weights_const=False, bias=False))


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_states_lens(op: str, direction: str) -> None:
    """Initial states and sequence_lens (outputs past a length are zero, Y_h holds the last
    valid step), constant weights and bias."""
    check_compiled(*rnn_model(op, direction, states=True, lens=True))


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("direction", ["reverse", "bidirectional"])
def test_ragged_row_blocks(op: str, direction: str) -> None:
    """Batch 11: the kernel steps rows in blocks of 8, the last one 3 rows short (rows past
    the batch are computed and never written), each row its own length."""
    check_compiled(*rnn_model(op, direction, states=True, lens=True, batch=11))


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_batch_first(op: str, direction: str) -> None:
    """layout=1, which onnxruntime rejects: compared with the layout-0 model on transposed
    inputs, its outputs transposed back."""
    model, feeds = rnn_model(op, direction, states=True, lens=True, layout=1)
    model0, _ = rnn_model(op, direction, states=True, lens=True)
    feeds0 = {k: (v.transpose(1, 0, 2) if v.ndim == 3 else v) for k, v in feeds.items()}
    y, *states = run_ort(model0, feeds0)
    want = [y.transpose(2, 0, 1, 3), *(s.transpose(1, 0, 2) for s in states)]
    assert_outputs_close(kiln.compile(model)(**feeds), want, 1e-4, 2e-5)


@pytest.mark.parametrize("lbr", [0, 1])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_gru_linear_before_reset(lbr: int, direction: str) -> None:
    check_compiled(*rnn_model("GRU", direction, states=True, lens=True,
                              linear_before_reset=lbr))


def test_lstm_peepholes_sequence_lens() -> None:
    check_compiled(*rnn_model("LSTM", "bidirectional", states=True, lens=True, peephole=True))


def test_lstm_activations_clip_input_forget() -> None:
    """Non-default activations with their alphas and betas (consumed in order by the
    functions that take them), clip and input_forget."""
    check_compiled(*rnn_model(
        "LSTM", "bidirectional", states=True, clip=1.5, input_forget=1,
        activations=["HardSigmoid", "LeakyRelu", "Tanh", "Sigmoid", "Softsign", "Relu"],
        activation_alpha=[0.3, 0.05], activation_beta=[0.4]))


@pytest.mark.parametrize("op,acts", [("GRU", ["Sigmoid", "Softplus"]),
                                     ("RNN", ["Relu"]), ("RNN", ["Affine"])])
def test_other_activations(op: str, acts: list[str]) -> None:
    check_compiled(*rnn_model(op, "forward", states=True, clip=2.0, activations=acts,
                              activation_alpha=[0.7], activation_beta=[0.1]))


def test_omitted_outputs() -> None:
    """Only Y_h requested (Y left empty), opset 11 (no layout attribute)."""
    check_compiled(*rnn_model("LSTM", "reverse", states=True, opset=11,
                              outputs=("", "Y_h")))


def test_stacked_layers_symbolic_length() -> None:
    """Two stacked GRU layers (Y -> [T, B, 2H] -> layer 2) with a symbolic sequence length,
    fixed at compile time."""
    w1, r1 = randn(2, 3 * H_, I_, seed=1) * 0.5, randn(2, 3 * H_, H_, seed=2) * 0.5
    w2, r2 = randn(1, 3 * H_, 2 * H_, seed=3) * 0.5, randn(1, 3 * H_, H_, seed=4) * 0.5
    nodes = [helper.make_node("GRU", ["X", "W1", "R1"], ["Y1"], hidden_size=H_,
                              direction="bidirectional", linear_before_reset=1),
             helper.make_node("Transpose", ["Y1"], ["Yt"], perm=[0, 2, 1, 3]),
             helper.make_node("Reshape", ["Yt", "shape"], ["X2"]),
             helper.make_node("GRU", ["X2", "W2", "R2"], ["Y2", "Y2_h"], hidden_size=H_)]
    inits = [init("W1", w1), init("R1", r1), init("W2", w2), init("R2", r2),
             init("shape", np.array([0, 0, -1], dtype=np.int64))]
    model = make_model(nodes, [tensor("X", ["T", B_, I_])], ["Y2", "Y2_h"], inits)
    feeds = {"X": randn(6, B_, I_, seed=5)}
    lib = kiln.compile(model, input_shapes={"X": (6, B_, I_)})
    assert_outputs_close(lib(**feeds), run_ort(model, feeds), 1e-4, 2e-5)


def test_unknown_activation_is_a_model_error() -> None:
    model, _ = rnn_model("RNN", activations=["Swish"])
    with pytest.raises(ModelError, match="activation 'Swish' is not supported"):
        import_onnx(model)
