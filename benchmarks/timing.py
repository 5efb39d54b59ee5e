"""Timing shared by the benchmarks: seconds per call of a Python callable, a kiln library and an
ONNX Runtime session; alternating pairs; every engine pinned to the same thread count.

Each engine is timed its own cheapest way, so that only the engine is measured: kiln through
the Relax VM's time evaluator (inputs already on the device), ONNX Runtime through IO binding
(inputs bound once, outputs preallocated), NumPy with ``out=`` arrays.
"""

from __future__ import annotations

import ctypes
import math
import os
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import onnxruntime as ort

import kiln

Timer = Callable[[], float]
"""One measurement: seconds per call, averaged over enough calls to take ``min_seconds``."""


def all_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else os.cpu_count() or 1


def per_call(fn: Callable[[], object], min_seconds: float = 0.2) -> float:
    """Seconds per call of ``fn``: one warm-up call, then calls until ``min_seconds`` pass."""
    fn()
    calls, t0 = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds:
            return elapsed / calls


def kiln_timer(lib: kiln.Library, feeds: Mapping[str, np.ndarray],
               min_seconds: float = 0.2, entry: str | None = None) -> Timer:
    """Seconds per call of ``lib`` (its function ``entry``) on ``feeds`` (VM time evaluator,
    one repeat of enough calls to take ``min_seconds``, sized from a first measurement)."""
    once = min(lib.benchmark(feeds, number=1, repeat=3, entry=entry))
    number = max(1, math.ceil(min_seconds / max(once, 1e-7)))
    return lambda: lib.benchmark(feeds, number=number, repeat=1, entry=entry)[0]


def ort_session(model: str | Path | bytes, threads: int,
                spin: bool = False) -> ort.InferenceSession:
    """A CPU session on ``threads`` intra-op threads (and one inter-op thread: the graph runs
    sequentially, as kiln's does), all graph optimisations on. Its workers do not spin between
    ops unless ``spin``: on this shared 2-core machine spinning made ORT 1.4-1.8x slower
    (MiniLM 41 vs 26 ms, alternating), and an anchor should run its best."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])


def ort_timer(sess: ort.InferenceSession, feeds: Mapping[str, np.ndarray],
              min_seconds: float = 0.2) -> tuple[Timer, list[np.ndarray]]:
    """Seconds per call of ``sess`` through IO binding (inputs bound once, outputs written
    into preallocated arrays), and the outputs of a first plain run."""
    outputs = sess.run(None, dict(feeds))
    binding = sess.io_binding()
    buffers = []                                 # the bound memory must outlive the binding
    for name, arr in feeds.items():
        buffers.append(np.ascontiguousarray(arr))
        binding.bind_cpu_input(name, buffers[-1])
    for meta, out in zip(sess.get_outputs(), outputs, strict=True):
        buffers.append(np.empty_like(out))
        binding.bind_ortvalue_output(meta.name, ort.OrtValue.ortvalue_from_numpy(buffers[-1]))

    def run(_buffers: list[np.ndarray] = buffers) -> None:
        sess.run_with_iobinding(binding)

    return (lambda: per_call(run, min_seconds)), outputs


def alternate_runs(kiln_time: Timer, anchor_time: Timer, rounds: int,
                   pause: float = 0.1) -> tuple[list[float], list[float]]:
    """Seconds per call of kiln and of its anchor in each of ``rounds`` alternating rounds
    (anchor, then kiln), pausing ``pause`` s after each so that the other engine's spinning
    workers have gone to sleep before the next is timed."""
    t_kiln, t_anchor = [], []
    for _ in range(rounds):
        t_anchor.append(anchor_time())
        time.sleep(pause)
        t_kiln.append(kiln_time())
        time.sleep(pause)
    return t_kiln, t_anchor


def alternate(kiln_time: Timer, anchor_time: Timer, rounds: int,
              pause: float = 0.1) -> tuple[float, float]:
    """Median seconds per call of kiln and of its anchor over ``alternate_runs``."""
    t_kiln, t_anchor = alternate_runs(kiln_time, anchor_time, rounds, pause)
    return statistics.median(t_kiln), statistics.median(t_anchor)


def _openblas() -> tuple[Callable[[int], None], Callable[[], int]] | None:
    """The set/get thread-count functions of the OpenBLAS that numpy loaded, found by symbol in
    the libraries this process mapped (what threadpoolctl does, for when it is not installed)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    paths = sorted({line.split()[-1] for line in maps.splitlines()
                    if "openblas" in line.lower() and line.split()[-1].startswith("/")})
    for path in paths:
        blas = ctypes.CDLL(path)
        for suffix in ("64_", "_64_", ""):
            for prefix in ("scipy_openblas", "openblas"):
                try:
                    set_ = getattr(blas, f"{prefix}_set_num_threads{suffix}")
                    get = getattr(blas, f"{prefix}_get_num_threads{suffix}")
                except AttributeError:
                    continue
                set_.argtypes, get.restype = [ctypes.c_int], ctypes.c_int
                return set_, get
    return None


def limit_threads(n: int) -> dict[str, int | None]:
    """Run kiln and NumPy's BLAS on ``n`` threads (ONNX Runtime takes its count per session,
    ``ort_session``). Returns the counts each engine reports back (None: not found)."""
    kiln.set_num_threads(n)
    blas: int | None = None
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(n, user_api="blas")
        from threadpoolctl import threadpool_info
        blas = min((i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"),
                   default=None)
    except ImportError:
        np.ones((2, 2)) @ np.ones((2, 2))        # make sure the BLAS is loaded
        found = _openblas()
        if found is not None:
            found[0](n)
            blas = int(found[1]())
    return {"kiln": kiln.num_threads(), "numpy BLAS": blas}


def geomean(values: list[float]) -> float:
    return math.exp(statistics.fmean(math.log(v) for v in values))
