"""fp32 GEMM: kiln against numpy (OpenBLAS), alternating in one run, same cores.

    python benchmarks/gemm.py [--sizes 512 1024 2048] [--rounds 7]

kiln compiles ``y = x @ W`` with ``W`` a constant (packed at compile time, as for any model
weight); numpy multiplies the same arrays. Each round times numpy, then kiln, each over enough
calls to take ~0.2 s (``benchmarks.timing``); the table reports per-engine medians over rounds
and the ratio. ``python -m benchmarks.cpu --only gemm`` gives the suite's shapes in its table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import kiln
import kiln.target
from kiln import ops

if __package__ in (None, ""):                  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.timing import alternate, kiln_timer, per_call  # noqa: E402


def bench(m: int, n: int, k: int, rounds: int) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((k, n)).astype(np.float32)
    g = kiln.Graph("gemm")
    g.output(ops.matmul(g.input("a", (m, k), "float32"), w))
    lib = kiln.compile(g)
    (out,) = lib(a=a)
    np.testing.assert_allclose(out, a @ w, rtol=1e-3, atol=1e-3 * np.sqrt(k))
    c = np.empty((m, n), np.float32)
    t_kiln, t_np = alternate(kiln_timer(lib, {"a": a}),
                             lambda: per_call(lambda: np.matmul(a, w, out=c)), rounds)
    flop = 2.0 * m * n * k
    return flop / t_np / 1e9, flop / t_kiln / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048])
    ap.add_argument("--bert", action="store_true", help="also BERT-base shapes (M=128)")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    shapes = [(s, s, s) for s in args.sizes]
    if args.bert:
        shapes += [(128, 768, 768), (128, 3072, 768), (128, 768, 3072)]
    print(f"fp32 GEMM on {kiln.target.get_target('x86')}, median of {args.rounds} "
          "alternating rounds")
    print(f"{'M x N x K':>20} | {'numpy GFLOP/s':>13} | {'kiln GFLOP/s':>12} | {'kiln/numpy':>10}")
    print("-" * 66)
    for m, n, k in shapes:
        g_np, g_kiln = bench(m, n, k, args.rounds)
        print(f"{f'{m} x {n} x {k}':>20} | {g_np:13.1f} | {g_kiln:12.1f} | {g_kiln / g_np:9.2f}x")


if __name__ == "__main__":
    main()
