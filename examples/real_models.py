"""What the examples on real pretrained models share: finding the model file, and timing kiln
against ONNX Runtime fairly.

Models are looked up in ``$KILN_MODELS``, else in ``.cache/models`` of the repository, where
``python tests/models/fetch.py .cache/models NAME`` puts them (``make test`` fetches the ones
the examples use).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import onnxruntime as ort

import kiln

ROOT = Path(__file__).resolve().parents[1]


def model_path(example: str, name: str) -> Path:
    """The fetched model ``name``; prints how to fetch it and exits 2 when it is missing."""
    folder = Path(os.environ.get("KILN_MODELS") or ROOT / ".cache" / "models")
    path = folder / f"{name}.onnx"
    if not path.is_file():
        print(f"{example}: model {name} not found at {path}; fetch it with: python "
              f"{_shown(ROOT / 'tests' / 'models' / 'fetch.py')} {_shown(folder)} {name}",
              file=sys.stderr)
        sys.exit(2)
    return path


def _shown(path: Path) -> str:
    """``path`` relative to the working directory where it lies under it, else absolute."""
    rel = os.path.relpath(path.resolve())
    return str(path.resolve()) if rel.startswith("..") else rel


def ort_session(path: Path) -> ort.InferenceSession:
    """ONNX Runtime on the same cores as kiln, all graph optimisations on, ops run one after
    another, and idle workers that sleep instead of spinning: a spinning pool would steal a
    core from kiln's rounds (and from its own next round)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = kiln.num_threads()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _ort_round(sess: ort.InferenceSession, feeds: Mapping[str, np.ndarray]) -> Callable[[int],
                                                                                     float]:
    """Seconds per call of ``sess`` over ``n`` calls, inputs bound once (IO binding) and
    outputs written into arrays allocated once, as kiln's timer does."""
    outs = sess.run(None, dict(feeds))
    binding, keep = sess.io_binding(), []          # the bound memory must outlive the binding
    for name, arr in feeds.items():
        keep.append(np.ascontiguousarray(arr))
        binding.bind_cpu_input(name, keep[-1])
    for meta, out in zip(sess.get_outputs(), outs, strict=True):
        keep.append(np.empty_like(out))
        binding.bind_ortvalue_output(meta.name, ort.OrtValue.ortvalue_from_numpy(keep[-1]))

    def run(n: int, _keep: list = keep) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            sess.run_with_iobinding(binding)
        return (time.perf_counter() - t0) / n

    return run


def compare_latency(lib: kiln.Library, sess: ort.InferenceSession,
                    feeds: Mapping[str, np.ndarray], rounds: int = 15,
                    round_s: float = 0.1) -> tuple[float, float]:
    """Median seconds per call of kiln and of ONNX Runtime on ``feeds`` over ``rounds``
    alternating rounds of about ``round_s`` each (ORT, then kiln), with a pause after each so
    that one engine's workers are asleep before the other is timed."""
    ort_run = _ort_round(sess, feeds)
    once_kiln = min(lib.benchmark(feeds, number=1, repeat=3))
    once_ort = min(ort_run(1) for _ in range(3))
    n_kiln = max(1, round(round_s / max(once_kiln, 1e-6)))
    n_ort = max(1, round(round_s / max(once_ort, 1e-6)))
    t_kiln, t_ort = [], []
    for _ in range(rounds):
        t_ort.append(ort_run(n_ort))
        time.sleep(0.05)
        t_kiln.append(lib.benchmark(feeds, number=n_kiln, repeat=1)[0])
        time.sleep(0.05)
    return statistics.median(t_kiln), statistics.median(t_ort)


def latency_line(what: str, t_kiln: float, t_ort: float, rounds: int = 15) -> str:
    return (f"latency ({what}, {kiln.num_threads()} threads, median of {rounds} alternating "
            f"rounds): kiln {t_kiln * 1e3:.3f} ms, ONNX Runtime {t_ort * 1e3:.3f} ms "
            f"(kiln {t_ort / t_kiln:.2f}x ORT's speed)")
