"""The real models of ``tests/models/MANIFEST.json``: kiln against ONNX Runtime, alternating.

    python benchmarks/models.py [--models DIR] [--rounds 5] [--threads N] [name ...]

Each model is compiled for this CPU at the manifest's example shapes; MiniLM-L3 is also
compiled once with a symbolic sequence length and timed at 16, 77 and 128 tokens. Both
engines use the same threads (every core by default) and are timed in alternating rounds
(``benchmarks.timing``); the table gives medians and kiln's speedup (ORT time / kiln time,
> 1 is faster). ``python -m benchmarks.cpu --only models`` gives the same models in the suite's
table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import kiln

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

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "models"))
from fetch import example_feeds, fetch  # noqa: E402

__all__ = ["compile_at_manifest", "example_feeds", "fetch", "output_error"]


def compile_at_manifest(name: str, path: Path) -> tuple[kiln.Library, dict[str, np.ndarray],
                                                       float]:
    """Compile model ``name`` at the manifest's example shapes: the library, those example
    inputs and the compile time in seconds."""
    feeds = example_feeds(name)
    t0 = time.perf_counter()
    lib = kiln.compile(path, "x86", input_shapes={k: v.shape for k, v in feeds.items()})
    return lib, feeds, time.perf_counter() - t0


def output_error(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    """The largest output error relative to that output's largest magnitude."""
    errs = [float(np.max(np.abs(g.astype(np.float64) - w)) / (np.max(np.abs(w)) or 1.0))
            for g, w in zip(got, want, strict=True) if g.size]
    return max(errs, default=0.0)


def bench(label: str, lib: kiln.Library, path: Path, feeds: dict[str, np.ndarray],
          rounds: int, threads: int) -> tuple[str, float, float, float]:
    """label, kiln ms, ORT ms, output error of ``lib`` against ORT on ``feeds``."""
    ort_time, want = ort_timer(ort_session(path, threads), feeds)
    err = output_error(lib(**feeds), want)
    t_kiln, t_ort = alternate(kiln_timer(lib, feeds), ort_time, rounds)
    return label, t_kiln * 1e3, t_ort * 1e3, err


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="models (default: all)")
    ap.add_argument("--models", type=Path, default=Path(".cache/models"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=all_cores())
    args = ap.parse_args()
    limit_threads(args.threads)
    paths = fetch(args.models, args.names or None)
    rows = []
    for name, path in paths.items():
        lib, feeds, compile_s = compile_at_manifest(name, path)
        rows.append((*bench(name, lib, path, feeds, args.rounds, args.threads), compile_s))
        if name == "paraphrase_minilm_l3":
            t0 = time.perf_counter()
            dyn = kiln.compile(path, "x86", input_shapes={"input_ids": (1, "seq"),
                                                         "attention_mask": (1, "seq")})
            compile_s = time.perf_counter() - t0
            for seq in (16, 77, 128):
                f = example_feeds(name, seed=seq, input_ids=(1, seq), attention_mask=(1, seq))
                rows.append((*bench(f"  minilm seq={seq} (symbolic)", dyn, path, f,
                                    args.rounds, args.threads), compile_s))
    print(f"x86, {args.threads} threads, median of {args.rounds} alternating rounds; error = "
          "max |kiln - ORT| / max |ORT| over the outputs")
    print(f"{'model':34} | {'kiln ms':>9} | {'ORT ms':>9} | {'speedup':>7} | {'error':>8} | "
          f"{'compile s':>9}")
    print("-" * 92)
    for label, ms_kiln, ms_ort, err, compile_s in rows:
        print(f"{label:34} | {ms_kiln:9.3f} | {ms_ort:9.3f} | {ms_ort / ms_kiln:6.2f}x | "
              f"{err:8.1e} | {compile_s:9.1f}")


if __name__ == "__main__":
    main()
