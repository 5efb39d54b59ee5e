"""kiln's nn.LSTM against ONNX Runtime on the same model exported to ONNX.

    python -m benchmarks.lstm [--layers 2] [--hidden 256] [--seq 100] [--batch 8] [--input 256]
                              [--rounds 21] [--threads N]

The model: ``--layers`` stacked bidirectional LSTM layers (PyTorch's nn.LSTM, built with
``kiln.nn.LSTM`` from random weights), and the same weights written as ONNX LSTM nodes (with
the Transpose and Reshape between layers that torch.onnx.export writes). Both engines run it on
the same thread count, alternately (rounds of at least 0.2 s each), and the table gives the
medians; the outputs are checked against each other first.
"""

from __future__ import annotations

import argparse

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import kiln
from benchmarks.timing import all_cores, alternate, kiln_timer, ort_session, ort_timer
from kiln import nn


def onnx_model(module: nn.LSTM, seq: int, batch: int) -> bytes:
    """``module`` (bidirectional layers) as ONNX LSTM nodes."""
    nodes, inits = [], []
    x, hid = "x", module.hidden_size
    for layer in range(module.num_layers):
        w, r, b = module._layer_weights(layer)
        names = [f"W{layer}", f"R{layer}", f"B{layer}"]
        inits += [numpy_helper.from_array(a, n) for a, n in zip((w, r, b), names, strict=True)]
        y = f"y{layer}"
        nodes.append(helper.make_node("LSTM", [x, *names], [y, f"h{layer}", f"c{layer}"],
                                      hidden_size=hid, direction="bidirectional"))
        nodes.append(helper.make_node("Transpose", [y], [f"{y}_t"], perm=[0, 2, 1, 3]))
        shape = f"shape{layer}"
        inits.append(numpy_helper.from_array(np.array([seq, batch, 2 * hid], np.int64), shape))
        x = f"x{layer + 1}"
        nodes.append(helper.make_node("Reshape", [f"{y}_t", shape], [x]))
    graph = helper.make_graph(
        nodes, "lstm", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                      [seq, batch, module.input_size])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [seq, batch, 2 * hid])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--seq", type=int, default=100)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--input", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--threads", type=int, default=all_cores())
    args = ap.parse_args()

    module = nn.LSTM(args.input, args.hidden, args.layers, bidirectional=True,
                     rng=np.random.default_rng(0))
    g = kiln.Graph("lstm")
    y, _, _ = module(g.input("x", (args.seq, args.batch, args.input), "float32"))
    g.output(y)
    lib = kiln.compile(g)
    kiln.set_num_threads(args.threads)
    x = np.random.default_rng(1).standard_normal((args.seq, args.batch, args.input))
    feeds = {"x": x.astype(np.float32)}
    ort_time, (want,) = ort_timer(ort_session(onnx_model(module, args.seq, args.batch),
                                              args.threads), feeds)
    (got,) = lib(**feeds)
    err = float(np.abs(got - want).max() / np.abs(want).max())
    assert err < 1e-4, f"kiln and ONNX Runtime differ: {err:.2e}"
    t_kiln, t_ort = alternate(kiln_timer(lib, feeds), ort_time, args.rounds)
    print(f"{args.layers}-layer bidirectional LSTM, hidden {args.hidden}, input {args.input}, "
          f"seq {args.seq}, batch {args.batch}, {args.threads} thread(s), "
          f"{args.rounds} alternating rounds (medians); outputs agree to {err:.1e}")
    print(f"{'engine':<14} {'ms':>8} {'vs ORT':>8}")
    print(f"{'ONNX Runtime':<14} {t_ort * 1e3:8.3f} {1.0:7.2f}x")
    print(f"{'kiln':<14} {t_kiln * 1e3:8.3f} {t_kiln / t_ort:7.2f}x")


if __name__ == "__main__":
    main()
