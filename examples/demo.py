"""`make demo`: compile a 2-layer transformer encoder for this CPU, export it, load it back,
check it against the reference interpreter and print the latency."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from encoder import build_encoder  # noqa: E402

import kiln  # noqa: E402
from kiln.testing import relative_error  # noqa: E402


def main() -> None:
    g = build_encoder()
    print(f"model: 2-layer transformer encoder, hidden 256, 4 heads, FFN 1024, seq 128 "
          f"({len(g.nodes)} ops)")
    t0 = time.perf_counter()
    lib = kiln.compile(g, target="x86")
    target = lib.compilation.target
    print(f"compiled for {target} in {time.perf_counter() - t0:.1f} s: "
          f"{len(lib.compilation.kernels)} fused kernels")
    with tempfile.TemporaryDirectory() as d:
        path = lib.export(Path(d) / "encoder.so")
        print(f"exported {path.name} ({path.stat().st_size / 1e6:.1f} MB); loading it back")
        lib = kiln.load(path)
        x = np.random.default_rng(1).standard_normal((1, 128, 256)).astype(np.float32)
        (out,) = lib(x=x)
        (ref,) = kiln.run_reference(g, x=x)
        err = relative_error(out, ref)
        print(f"max abs error / max abs output vs the NumPy reference: {err:.2e}")
        if err > 1e-4:
            sys.exit(f"demo FAILED: error {err:.2e} exceeds 1e-4")
        samples = lib.benchmark({"x": x}, number=10, repeat=30)
        print(f"latency: median {np.median(samples) * 1e3:.3f} ms over {len(samples)} x 10 runs")
    print("demo OK")


if __name__ == "__main__":
    main()
