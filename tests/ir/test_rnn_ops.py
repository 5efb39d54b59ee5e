"""The recurrence ops (lstm, gru, rnn): compiled kernels against their NumPy references on odd
sizes (matvec and gate-math tails), every option, float64, symbolic sequence lengths; shape
and attribute errors."""

from __future__ import annotations

import re

import numpy as np
import pytest

import kiln
from kiln.compiler import compile_stages
from kiln.errors import ModelError
from kiln.ir.ops.rnn import GATES, ActivationFn
from kiln.testing import assert_matches_reference

DEFAULTS = {"lstm": ("sigmoid", "tanh", "tanh"), "gru": ("sigmoid", "tanh"), "rnn": ("tanh",)}


def acts(*kinds: str, alpha: float = 0.0, beta: float = 0.0) -> tuple[ActivationFn, ...]:
    return tuple(ActivationFn(k, alpha, beta) for k in kinds)


def recurrent_graph(op: str, steps: int | str = 4, batch: int = 3, hidden: int = 7,
                    directions: int = 1, dtype: str = "float32", **attrs) -> kiln.Graph:
    """One recurrent node on graph inputs named after its operands."""
    g = kiln.Graph(op)
    d, gh = directions, GATES[op] * hidden
    rng = np.random.default_rng(0)
    ins = [g.input("xp", (steps, batch, d * gh), dtype),
           g.constant((rng.standard_normal((d, hidden, gh)) * 0.4).astype(dtype), "rt")]
    if attrs.get("linear_before_reset"):
        ins.append(g.input("rbh", (d, hidden), dtype))
    if attrs.get("has_h0"):
        ins.append(g.input("h0", (d, batch, hidden), dtype))
    if attrs.get("has_c0"):
        ins.append(g.input("c0", (d, batch, hidden), dtype))
    if attrs.get("has_peephole"):
        ins.append(g.input("p", (d, 3 * hidden), dtype))
    if attrs.get("has_lens"):
        ins.append(g.input("lens", (batch,), "int32"))
    attrs.setdefault("activations", acts(*DEFAULTS[op]) * d)
    direction = "bidirectional" if d == 2 else attrs.pop("direction", "forward")
    g.output(*g.add(op, ins, hidden_size=hidden, direction=direction, **attrs))
    return g


def feeds_for(g: kiln.Graph, lens: list[int] | None = None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    feeds = {v.name: rng.standard_normal(v.type.static_shape).astype(v.dtype.np)
             for v in g.inputs if v.name != "lens"}
    if lens is not None:
        feeds["lens"] = np.array(lens, dtype=np.int32)
    return feeds


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_lstm_every_option(direction: str) -> None:
    g = recurrent_graph("lstm", direction=direction, has_h0=True, has_c0=True,
                        has_peephole=True, has_lens=True, clip=1.2, input_forget=True)
    assert_matches_reference(g, feeds_for(g, [4, 0, 2]), rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("lbr", [False, True])
def test_gru_bidirectional_lens(lbr: bool) -> None:
    g = recurrent_graph("gru", directions=2, has_h0=True, has_lens=True,
                        linear_before_reset=lbr)
    assert_matches_reference(g, feeds_for(g, [1, 4, 3]), rtol=1e-4, atol=2e-5)


def test_directions_with_different_activations() -> None:
    """Each direction of a bidirectional RNN gets its own kernel body."""
    g = recurrent_graph("rnn", directions=2, has_h0=True,
                        activations=acts("tanh") + acts("leaky_relu", alpha=0.1))
    assert_matches_reference(g, feeds_for(g), rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("kind,alpha,beta", [
    ("hard_sigmoid", 0.3, 0.4), ("thresholded_relu", 0.2, 0.0), ("scaled_tanh", 0.8, 1.3),
    ("affine", 0.5, 0.1), ("elu", 0.9, 0.0), ("softsign", 0.0, 0.0), ("softplus", 0.0, 0.0),
    ("relu", 0.0, 0.0)])
def test_activations(kind: str, alpha: float, beta: float) -> None:
    g = recurrent_graph("gru", has_h0=True,
                        activations=acts(kind, alpha=alpha, beta=beta) + acts("tanh"))
    assert_matches_reference(g, feeds_for(g), rtol=1e-4, atol=2e-5)


def test_tails_of_matvec_and_gate_vectors() -> None:
    """hidden 37: 4 * 37 = 148 gates (two 64-wide matvec chunks and a 20-wide tail), gate
    math in two 16-wide vectors and a 5-wide tail."""
    g = recurrent_graph("lstm", steps=3, batch=2, hidden=37, has_h0=True, has_c0=True)
    assert_matches_reference(g, feeds_for(g), rtol=1e-4, atol=2e-5)


def test_float64() -> None:
    g = recurrent_graph("gru", dtype="float64", has_h0=True, has_lens=True)
    assert_matches_reference(g, feeds_for(g, [2, 4, 3]), rtol=1e-10, atol=1e-12)


def test_symbolic_sequence_length() -> None:
    """One library for any T: the time loop's extent is a runtime variable."""
    g = recurrent_graph("rnn", steps="T", has_h0=True)
    lib = kiln.compile(g)
    for steps in (2, 5):
        rng = np.random.default_rng(steps)
        feeds = {"xp": rng.standard_normal((steps, 3, 7)).astype(np.float32),
                 "h0": rng.standard_normal((1, 3, 7)).astype(np.float32)}
        for got, want in zip(lib(**feeds), kiln.run_reference(g, feeds), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5)


def test_kernel_runs_sequences_in_parallel_and_vectorised() -> None:
    g = recurrent_graph("gru", directions=2, has_h0=True, linear_before_reset=True, batch=11)
    (kernel,) = compile_stages(g).kernels
    text = kernel.func.script()
    assert "T.parallel(4)" in text          # directions x blocks of 8 rows (8 + 3)
    assert "T.unroll(8)" in text            # the rows of a block share each weight load
    assert "T.vectorized(21)" in text       # the product over 3 * 7 gates (one chunk)
    # a symbolic batch: one row per task, as many tasks as directions x rows
    g = recurrent_graph("gru", directions=2, has_h0=True, linear_before_reset=True,
                        batch="B")
    (kernel,) = compile_stages(g).kernels
    assert re.search(r"T\.parallel\(B \* 2|T\.parallel\(2 \* B", kernel.func.script())


def test_wrong_weight_shape_is_a_model_error() -> None:
    g = kiln.Graph("bad")
    xp = g.input("xp", (4, 3, 28))
    rt = g.constant(np.zeros((1, 7, 21), np.float32), "rt")
    with pytest.raises(ModelError, match=r"rt must be \[1, 7, 28\]"):
        g.add("lstm", [xp, rt], hidden_size=7, activations=acts(*DEFAULTS["lstm"]))


def test_wrong_activation_count_is_a_model_error() -> None:
    g = kiln.Graph("bad")
    xp = g.input("xp", (4, 3, 7))
    rt = g.constant(np.zeros((1, 7, 7), np.float32), "rt")
    with pytest.raises(ModelError, match="1 activations per direction, got 2"):
        g.add("rnn", [xp, rt], hidden_size=7, activations=acts("tanh", "tanh"))
