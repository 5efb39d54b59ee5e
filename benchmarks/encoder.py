"""A BERT-style encoder as an ONNX file: kiln against ONNX Runtime, alternating in one run.

    python benchmarks/encoder.py [--layers 2] [--hidden 256] [--heads 4] [--ffn 1024]
                                 [--seq 128] [--rounds 7]

The model is written the way exporters write BERT (MatMul + Add projections, Reshape/Transpose
heads, Softmax, LayerNormalization, GELU spelled out with Erf), so kiln's ONNX import, fusion
and schedules are all on the path. Both engines use every core and are timed alternately
(``benchmarks.timing``: ORT through IO binding, kiln through the VM's time evaluator), each
going idle before the other is timed.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import kiln
from kiln.testing import relative_error

if __package__ in (None, ""):                  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.timing import (  # noqa: E402
    all_cores,
    alternate,
    kiln_timer,
    limit_threads,
    ort_session,
    ort_timer,
)


def encoder_onnx(layers: int, hidden: int, heads: int, ffn: int, seq: int,
                 seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def weight(name: str, *shape: int, scale: float | None = None) -> str:
        s = scale if scale is not None else 1 / math.sqrt(shape[0])
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) * s)
                                             .astype(np.float32), name))
        return name

    def node(op: str, ins: list[str], out: str, **attrs) -> str:
        nodes.append(helper.make_node(op, ins, [out], name=out, **attrs))
        return out

    def linear(x: str, name: str, k: int, n: int) -> str:
        y = node("MatMul", [x, weight(f"{name}.w", k, n)], f"{name}.mm")
        return node("Add", [y, weight(f"{name}.b", n, scale=0.1)], name)

    d = hidden // heads
    inits.append(numpy_helper.from_array(np.array([1, seq, heads, d], np.int64), "heads_shape"))
    inits.append(numpy_helper.from_array(np.array([1, seq, hidden], np.int64), "hidden_shape"))
    for c, v in (("scale", 1 / math.sqrt(d)), ("sqrt2", math.sqrt(2)), ("one", 1.0),
                 ("half", 0.5)):
        inits.append(numpy_helper.from_array(np.array(v, np.float32), c))
    x = "x"
    for i in range(layers):
        p = f"l{i}"
        q, k, v = (node("Transpose", [node("Reshape", [linear(x, f"{p}.{t}", hidden, hidden),
                                                        "heads_shape"], f"{p}.{t}.r")],
                        f"{p}.{t}.t", perm=perm)
                   for t, perm in (("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]), ("v", [0, 2, 1, 3])))
        s = node("Mul", [node("MatMul", [q, k], f"{p}.qk"), "scale"], f"{p}.scores")
        ctx = node("MatMul", [node("Softmax", [s], f"{p}.probs", axis=-1), v], f"{p}.ctx")
        ctx = node("Reshape", [node("Transpose", [ctx], f"{p}.ctx.t", perm=[0, 2, 1, 3]),
                               "hidden_shape"], f"{p}.ctx.r")
        h = node("Add", [x, linear(ctx, f"{p}.o", hidden, hidden)], f"{p}.res1")
        h = node("LayerNormalization", [h, weight(f"{p}.ln1.g", hidden, scale=1.0),
                                        weight(f"{p}.ln1.b", hidden, scale=0.1)], f"{p}.ln1")
        f = linear(h, f"{p}.ff1", hidden, ffn)
        erf = node("Erf", [node("Div", [f, "sqrt2"], f"{p}.g.div")], f"{p}.g.erf")
        gelu = node("Mul", [node("Mul", [f, node("Add", [erf, "one"], f"{p}.g.add")],
                                 f"{p}.g.mul"), "half"], f"{p}.gelu")
        h2 = node("Add", [h, linear(gelu, f"{p}.ff2", ffn, hidden)], f"{p}.res2")
        x = node("LayerNormalization", [h2, weight(f"{p}.ln2.g", hidden, scale=1.0),
                                        weight(f"{p}.ln2.b", hidden, scale=0.1)], f"{p}.ln2")
    graph = helper.make_graph(
        nodes, "encoder", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, seq, hidden])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, seq, hidden])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--ffn", type=int, default=1024)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    model = encoder_onnx(args.layers, args.hidden, args.heads, args.ffn, args.seq)
    threads = all_cores()
    limit_threads(threads)
    sess = ort_session(model.SerializeToString(), threads)
    t0 = time.perf_counter()
    lib = kiln.compile(model)
    compile_s = time.perf_counter() - t0
    x = np.random.default_rng(1).standard_normal((1, args.seq, args.hidden)).astype(np.float32)
    (ours,) = lib(x=x)
    ort_time, (theirs,) = ort_timer(sess, {"x": x}, 0.3)
    err = relative_error(ours, theirs)
    t_kiln, t_ort = alternate(kiln_timer(lib, {"x": x}, 0.3), ort_time, args.rounds)
    ms_ort, ms_kiln = t_ort * 1e3, t_kiln * 1e3
    print(f"{args.layers}-layer encoder (hidden {args.hidden}, {args.heads} heads, FFN "
          f"{args.ffn}, seq {args.seq}) from ONNX, {threads} threads, median of {args.rounds} "
          f"alternating rounds")
    print(f"kiln: {len(lib.compilation.kernels)} kernels, compiled in {compile_s:.1f} s, "
          f"max error vs ORT {err:.1e} (relative to max |output|)")
    print(f"{'engine':>14} | {'latency ms':>10} | {'vs ORT':>7}")
    print("-" * 38)
    print(f"{'onnxruntime':>14} | {ms_ort:10.3f} | {1.0:6.2f}x")
    print(f"{'kiln':>14} | {ms_kiln:10.3f} | {ms_ort / ms_kiln:6.2f}x")


if __name__ == "__main__":
    main()
