"""The real models of ``tests/models/MANIFEST.json``: kiln against ONNX Runtime, alternating.

    python benchmarks/models.py [--models DIR] [--rounds 5] [name ...]

Each model is compiled for this CPU at the manifest's example shapes; MiniLM-L3 is also
compiled once with a symbolic sequence length and timed at 16, 77 and 128 tokens. Both
engines use every core (ORT's workers do not spin) and are timed in alternating rounds; the
table gives medians and kiln's speedup (ORT time / kiln time, > 1 is faster).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

import kiln

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "models"))
from fetch import example_feeds, fetch  # noqa: E402


def _time(fn, min_seconds: float = 0.2) -> float:
    fn()
    calls, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < min_seconds:
        fn()
        calls += 1
    return (time.perf_counter() - t0) / calls


def _session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = len(os.sched_getaffinity(0))
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _error(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    """The largest output error relative to that output's largest magnitude."""
    errs = [float(np.max(np.abs(g.astype(np.float64) - w)) / (np.max(np.abs(w)) or 1.0))
            for g, w in zip(got, want, strict=True) if g.size]
    return max(errs, default=0.0)


def bench(label: str, lib: kiln.Library, sess: ort.InferenceSession,
          feeds: dict[str, np.ndarray], rounds: int) -> tuple[str, float, float, float]:
    err = _error(lib(**feeds), sess.run(None, feeds))
    t_ort, t_kiln = [], []
    for _ in range(rounds):
        t_ort.append(_time(lambda: sess.run(None, feeds)))
        t_kiln.append(statistics.median(lib.benchmark(feeds, number=5, repeat=5)))
    return label, statistics.median(t_kiln) * 1e3, statistics.median(t_ort) * 1e3, err


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="models (default: all)")
    ap.add_argument("--models", type=Path, default=Path(".cache/models"))
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    paths = fetch(args.models, args.names or None)
    rows = []
    for name, path in paths.items():
        feeds = example_feeds(name)
        t0 = time.perf_counter()
        lib = kiln.compile(path, "x86", input_shapes={k: v.shape for k, v in feeds.items()})
        compile_s = time.perf_counter() - t0
        sess = _session(path)
        rows.append((*bench(name, lib, sess, feeds, args.rounds), compile_s))
        if name == "paraphrase_minilm_l3":
            t0 = time.perf_counter()
            dyn = kiln.compile(path, "x86", input_shapes={"input_ids": (1, "seq"),
                                                         "attention_mask": (1, "seq")})
            compile_s = time.perf_counter() - t0
            for seq in (16, 77, 128):
                f = example_feeds(name, seed=seq, input_ids=(1, seq), attention_mask=(1, seq))
                rows.append((*bench(f"  minilm seq={seq} (symbolic)", dyn, sess, f,
                                    args.rounds), compile_s))
    print(f"x86, {len(os.sched_getaffinity(0))} threads, median of {args.rounds} alternating "
          "rounds; error = max |kiln - ORT| / max |ORT| over the outputs")
    print(f"{'model':34} | {'kiln ms':>9} | {'ORT ms':>9} | {'speedup':>7} | {'error':>8} | "
          f"{'compile s':>9}")
    print("-" * 92)
    for label, ms_kiln, ms_ort, err, compile_s in rows:
        print(f"{label:34} | {ms_kiln:9.3f} | {ms_ort:9.3f} | {ms_ort / ms_kiln:6.2f}x | "
              f"{err:8.1e} | {compile_s:9.1f}")


if __name__ == "__main__":
    main()
