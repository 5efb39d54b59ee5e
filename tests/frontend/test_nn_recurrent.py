"""nn.LSTM and nn.GRU (stacked, bidirectional, PyTorch layouts) compiled for x86, against a
NumPy implementation of PyTorch's equations written here (independent of kiln's reference
interpreter, which follows ONNX's gate order), and against torch itself when it is installed."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln import nn
from kiln.errors import ModelError


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _lstm_cell(p: dict, x: np.ndarray, h: np.ndarray, c: np.ndarray):
    gates = x @ p["weight_ih"].T + p["bias_ih"] + h @ p["weight_hh"].T + p["bias_hh"]
    i, f, g, o = np.split(gates, 4, axis=-1)            # PyTorch's order
    c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    return _sigmoid(o) * np.tanh(c), c


def _gru_cell(p: dict, x: np.ndarray, h: np.ndarray, c: None):
    gx = x @ p["weight_ih"].T + p["bias_ih"]
    gh = h @ p["weight_hh"].T + p["bias_hh"]
    xr, xz, xn = np.split(gx, 3, axis=-1)
    hr, hz, hn = np.split(gh, 3, axis=-1)
    r, z = _sigmoid(xr + hr), _sigmoid(xz + hz)
    n = np.tanh(xn + r * hn)
    return (1 - z) * n + z * h, None


def torch_equations(module: nn.LSTM | nn.GRU, x: np.ndarray, h0=None, c0=None):
    """PyTorch's nn.LSTM / nn.GRU forward, in float64 NumPy."""
    lstm = isinstance(module, nn.LSTM)
    cell = _lstm_cell if lstm else _gru_cell
    x = x.astype(np.float64)
    if module.batch_first:
        x = x.transpose(1, 0, 2)
    t_len, batch, _ = x.shape
    d, hid = module.directions, module.hidden_size
    hs, cs = [], []
    for layer in range(module.num_layers):
        outs = []
        for k, suffix in enumerate(("", "_reverse")[:d]):
            p = {n: module.params[f"{n}_l{layer}{suffix}"].astype(np.float64)
                 for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
            i = layer * d + k
            h = h0[i].astype(np.float64) if h0 is not None else np.zeros((batch, hid))
            c = c0[i].astype(np.float64) if c0 is not None else np.zeros((batch, hid))
            y = np.zeros((t_len, batch, hid))
            for t in (reversed(range(t_len)) if k else range(t_len)):
                h, c = cell(p, x[t], h, c)
                y[t] = h
            outs.append(y)
            hs.append(h)
            cs.append(c)
        x = np.concatenate(outs, axis=-1)
    y = x.transpose(1, 0, 2) if module.batch_first else x
    return [y, np.stack(hs)] + ([np.stack(cs)] if lstm else [])


def _run(module, x: np.ndarray, states: list[np.ndarray | None]) -> list[np.ndarray]:
    g = kiln.Graph("rnn")
    xv = g.input("x", x.shape, "float32")
    feeds = {"x": x}
    svals = []
    for i, s in enumerate(states):
        if s is None:
            svals.append(None)
            continue
        svals.append(g.input(f"s{i}", s.shape, "float32"))
        feeds[f"s{i}"] = s
    for out in module(xv, *svals):
        g.output(out)
    return kiln.compile(g)(**feeds)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
@pytest.mark.parametrize(("layers", "bidirectional", "batch_first", "with_states"), [
    (1, False, False, False),
    (2, True, False, True),
    (3, True, True, False),
    (2, False, True, True),
])
def test_matches_torch_equations(kind: str, layers: int, bidirectional: bool,
                                 batch_first: bool, with_states: bool) -> None:
    rng = np.random.default_rng(layers)
    t_len, batch, size, hid = 9, 3, 7, 13                   # odd: tails in every vector loop
    module = getattr(nn, kind)(size, hid, layers, bidirectional, batch_first, rng=rng)
    shape = (batch, t_len, size) if batch_first else (t_len, batch, size)
    x = rng.standard_normal(shape).astype(np.float32)
    n_states = 2 if kind == "LSTM" else 1
    d = 2 if bidirectional else 1
    states = [rng.standard_normal((layers * d, batch, hid)).astype(np.float32)
              if with_states else None for _ in range(n_states)]
    got = _run(module, x, states)
    want = torch_equations(module, x, *states)
    assert [a.shape for a in got] == [w.shape for w in want]
    for a, w in zip(got, want, strict=True):
        np.testing.assert_allclose(a, w, rtol=1e-4, atol=1e-5)


def test_state_dict_round_trip_and_errors() -> None:
    a = nn.LSTM(4, 6, 2, bidirectional=True, rng=np.random.default_rng(0))
    b = nn.LSTM(4, 6, 2, bidirectional=True, rng=np.random.default_rng(1))
    b.load_state_dict(a.params)
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    with pytest.raises(ModelError, match=r"missing \['weight_hh_l1_reverse'\]"):
        b.load_state_dict({k: v for k, v in a.params.items() if k != "weight_hh_l1_reverse"})
    with pytest.raises(ModelError, match=r"weight_ih_l0 must be \[24, 4\], got \[24, 5\]"):
        b.load_state_dict({**a.params, "weight_ih_l0": np.zeros((24, 5))})
    g = kiln.Graph("bad")
    with pytest.raises(ModelError, match=r"input must be \[T, B, 4\]"):
        a(g.input("x", (3, 2, 5), "float32"))


def test_one_recurrence_kernel_per_layer() -> None:
    """Each layer: the projection GEMM over all timesteps and one recurrence kernel (both
    directions in it), not a kernel per step."""
    module = nn.LSTM(8, 16, 2, bidirectional=True)
    g = kiln.Graph("lstm")
    for out in module(g.input("x", (50, 4, 8), "float32")):
        g.output(out)
    c = kiln.compile_stages(g)
    templates = [k.template.value for k in c.kernels]
    assert templates.count("recurrence") == 2
    gemms = [k for k in c.kernels if k.template.value == "gemm"]
    assert len(gemms) == 2 and all("M=200" in " ".join(k.notes) for k in gemms)


@pytest.mark.torch                                   # make test-torch installs it
@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_matches_torch(kind: str) -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    ref = getattr(torch.nn, kind)(10, 12, num_layers=2, bidirectional=True)
    module = getattr(nn, kind)(10, 12, 2, bidirectional=True)
    module.load_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((11, 3, 10)).astype(np.float32)
    got = _run(module, x, [None] * (2 if kind == "LSTM" else 1))
    with torch.no_grad():
        y, states = ref(torch.from_numpy(x))
    want = [y, *(states if kind == "LSTM" else (states,))]
    for a, w in zip(got, want, strict=True):
        np.testing.assert_allclose(a, w.numpy(), rtol=1e-4, atol=1e-5)
