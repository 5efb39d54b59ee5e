"""Static int8 MobileNetV3 (PP-OCR's direction classifier, QDQ from ``quantize_static``): kiln
int8 against kiln float32 on the model it was quantized from, and ONNX Runtime on both.

    python -m benchmarks.int8 [--models DIR] [--rounds 15] [--threads N]

The float model is the shared ``ppocr_mobile_v2_cls`` fixed at its example shape (1 x 3 x 48 x
192) and pre-processed as ``quantize_static`` wants; the int8 model is calibrated on 8 seeded
document pages (``tests/models/quantized.py``). All four run on the same threads, one after
another in each of ``--rounds`` rounds (at least 0.2 s each); the table gives the medians and
each one's time relative to kiln int8. Outputs are checked first: kiln int8 within one
quantisation step of ONNX Runtime's unoptimised run of the int8 model.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

import kiln

if __package__ in (None, ""):                  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.timing import all_cores, kiln_timer, ort_session, ort_timer  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "models"))
from fetch import document_image, fetch  # noqa: E402
from quantized import quantize_static_qdq  # noqa: E402

NAME = "ppocr_mobile_v2_cls"
SHAPE = (1, 3, 48, 192)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=Path(".cache/models"))
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=all_cores())
    args = ap.parse_args()

    src = fetch(args.models, [NAME])[NAME]
    with tempfile.TemporaryDirectory() as tmp:
        floats, int8 = quantize_static_qdq(src, NAME, Path(tmp))
        t0 = time.perf_counter()
        kiln_int8 = kiln.compile(int8, "x86")
        compile_s = time.perf_counter() - t0
        kiln_fp32 = kiln.compile(floats, "x86")
        sessions = {p: ort_session(p, args.threads) for p in (int8, floats)}
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        as_written = ort.InferenceSession(str(int8), opts, providers=["CPUExecutionProvider"])
    kiln.set_num_threads(args.threads)
    feeds = {"x": document_image(SHAPE, np.random.default_rng(7))}
    steps = np.abs(kiln_int8(**feeds)[0] - as_written.run(None, feeds)[0]).max() * 255
    assert steps <= 1.0001, f"kiln int8 is {steps:.1f} steps from onnxruntime's"

    engines = {"kiln int8": kiln_timer(kiln_int8, feeds),
               "kiln float32": kiln_timer(kiln_fp32, feeds)}
    for label, path in (("ONNX Runtime int8", int8), ("ONNX Runtime float32", floats)):
        engines[label] = ort_timer(sessions[path], feeds)[0]
    times: dict[str, list[float]] = {k: [] for k in engines}
    for r in range(args.rounds):
        order = list(engines)[r % len(engines):] + list(engines)[:r % len(engines)]
        for label in order:
            times[label].append(engines[label]())
            time.sleep(0.05)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{NAME} at {'x'.join(map(str, SHAPE))}, {args.threads} thread(s), {args.rounds} "
          f"rotating rounds (medians); kiln int8 compiled in {compile_s:.1f} s, its output "
          f"{steps:.0f} step(s) from ONNX Runtime's")
    print(f"{'engine':<22} {'ms':>8} {'vs kiln int8':>13}")
    for label, t in med.items():
        print(f"{label:<22} {t * 1e3:8.3f} {t / med['kiln int8']:12.2f}x")


if __name__ == "__main__":
    main()
