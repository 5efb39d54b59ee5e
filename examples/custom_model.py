"""A model written with kiln's Python API: a keyword spotter over 40 mel bands.

    python examples/custom_model.py

Conv2d front end -> 2-layer bidirectional LSTM -> Linear -> softmax over 12 keywords, random
weights. Compiled for this CPU, checked against the reference interpreter, timed; then
cross-compiled for aarch64 (arm-neon) into a library a board loads with the TVM runtime (needs
Debian's gcc-aarch64-linux-gnu, which ``make arm-tools`` installs).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import kiln
from kiln import nn, ops
from kiln.target import ARM_CC
from kiln.testing import relative_error

FRAMES, MELS, CHANNELS, HIDDEN, KEYWORDS = 98, 40, 16, 64, 12


def build(rng: np.random.Generator) -> kiln.Graph:
    g = kiln.Graph("keyword_spotter")
    x = g.input("mels", (1, 1, FRAMES, MELS), "float32")        # one second of 10 ms frames
    h = ops.relu(nn.Conv2d(1, CHANNELS, 3, padding=1, rng=rng, name="conv")(x))
    h = ops.transpose(h, (2, 0, 1, 3))                           # [T, 1, C, mels]
    h = ops.reshape(h, (FRAMES, 1, CHANNELS * MELS))
    y, _, _ = nn.LSTM(CHANNELS * MELS, HIDDEN, num_layers=2, bidirectional=True, rng=rng)(h)
    last = ops.reshape(ops.slice(y, [FRAMES - 1], [FRAMES], [0]), (1, 2 * HIDDEN))
    g.output(ops.softmax(nn.Linear(2 * HIDDEN, KEYWORDS, rng=rng, name="head")(last)))
    return g


def main() -> None:
    rng = np.random.default_rng(0)
    g = build(rng)
    t0 = time.perf_counter()
    lib = kiln.compile(g, "x86")
    print(f"keyword spotter: conv 3x3 x{CHANNELS} -> 2-layer bidirectional LSTM "
          f"({HIDDEN}) -> {KEYWORDS} keywords; {len(lib.compilation.kernels)} kernels for "
          f"{lib.compilation.target}, compiled in {time.perf_counter() - t0:.1f} s")
    mels = rng.standard_normal((1, 1, FRAMES, MELS)).astype(np.float32)
    (probs,) = lib(mels=mels)
    (ref,) = kiln.run_reference(g, mels=mels)
    err = relative_error(probs, ref)
    print(f"keyword probabilities sum to {probs.sum():.6f}; the likeliest is #{probs.argmax()} "
          f"({probs.max():.3f}); error vs the reference interpreter {err:.1e}")
    if err > 1e-4 or abs(probs.sum() - 1) > 1e-4:
        sys.exit(f"custom_model FAILED: error {err:.1e}")
    samples = lib.benchmark({"mels": mels}, number=10, repeat=20)
    print(f"x86 latency: median {np.median(samples) * 1e3:.3f} ms (no ONNX Runtime "
          "counterpart: the model exists only in kiln's API)")

    arm = kiln.compile(g, "arm-neon")
    if shutil.which(ARM_CC) is None:
        print(f"arm-neon: compiled ({len(arm.compilation.kernels)} kernels); exporting needs "
              f"{ARM_CC} (make arm-tools)")
    else:
        with tempfile.TemporaryDirectory() as d:
            path = arm.export(Path(d) / "keyword_spotter_arm.so")
            head = path.read_bytes()[:20]
            machine = int.from_bytes(head[18:20], "little")
            print(f"arm-neon: exported {path.name}, {path.stat().st_size / 1e3:.0f} kB, an ELF "
                  f"for machine {machine} (aarch64 is 183)")
    print("custom_model OK")


if __name__ == "__main__":
    main()
