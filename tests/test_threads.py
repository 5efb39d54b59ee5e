"""Thread control: ``kiln.set_num_threads`` reads back, refuses what the pool cannot do, leaves
results bit-identical, and really changes how many threads do the work (per-thread CPU time of
a parallel GEMM, read from /proc in a fresh process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import kiln
from kiln import ops


@pytest.fixture
def restore_threads():
    """Each test leaves the pool as it found it (the setting outlives the test otherwise)."""
    before = kiln.num_threads()
    yield before
    kiln.set_num_threads(before)


def _gemm_softmax(m: int, k: int, n: int) -> tuple[kiln.Library, np.ndarray]:
    w = np.random.default_rng(0).standard_normal((k, n)).astype(np.float32)
    g = kiln.Graph("gemm_softmax")
    y = ops.matmul(g.input("a", (m, k), "float32"), w)
    g.output(y, ops.softmax(y, axis=-1))
    return kiln.compile(g, target="x86"), w


def test_setting_reads_back(restore_threads) -> None:
    size = restore_threads            # kiln starts with the whole pool
    for n in (1, size, 1):
        kiln.set_num_threads(n)
        assert kiln.num_threads() == n


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "2"])
def test_bad_counts_are_refused(restore_threads, bad) -> None:
    kiln.set_num_threads(1)
    with pytest.raises(kiln.KilnError, match="integer >= 1"):
        kiln.set_num_threads(bad)
    assert kiln.num_threads() == 1


def test_more_threads_than_the_pool_is_refused(restore_threads) -> None:
    kiln.set_num_threads(1)
    size = restore_threads
    with pytest.raises(kiln.KilnError, match=f"pool of {size} threads.*TVM_NUM_THREADS"):
        kiln.set_num_threads(size + 1)
    assert kiln.num_threads() == 1   # unchanged


def test_results_identical_at_one_and_two_threads(restore_threads) -> None:
    if restore_threads < 2:
        pytest.skip("the pool has one thread")
    m, k, n = 97, 131, 203            # ragged: the parallel split leaves uneven tail tiles
    lib, w = _gemm_softmax(m, k, n)
    a = np.random.default_rng(1).standard_normal((m, k)).astype(np.float32)
    kiln.set_num_threads(1)
    y1, s1 = lib(a=a)
    kiln.set_num_threads(2)
    y2, s2 = lib(a=a)
    # each output element is computed by the same code whichever thread runs its tile
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(s1, s2)
    ref = a.astype(np.float64) @ w
    np.testing.assert_allclose(y1, ref, rtol=1e-4, atol=1e-4 * np.sqrt(k))
    e = np.exp(ref - ref.max(axis=-1, keepdims=True))
    np.testing.assert_allclose(s1, e / e.sum(axis=-1, keepdims=True), rtol=1e-3, atol=1e-6)


_PER_THREAD_CPU = """
    import json, os, threading, numpy as np, kiln
    from kiln import ops

    def cpu_ns():   # nanoseconds each thread of this process has run
        out = {}
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                out[tid] = int(f.read().split()[0])
        return out

    rng = np.random.default_rng(0)
    a = rng.standard_normal((509, 515)).astype(np.float32)
    g = kiln.Graph("gemm")
    g.output(ops.matmul(g.input("a", a.shape, "float32"),
                        rng.standard_normal((515, 517)).astype(np.float32)))
    lib = kiln.compile(g, target="x86")
    me, shares = str(threading.get_native_id()), {}
    for n in (1, 2):
        kiln.set_num_threads(n)
        lib.benchmark({"a": a}, number=1, repeat=1)
        before = cpu_ns()
        lib.benchmark({"a": a}, number=40, repeat=1)
        after = cpu_ns()
        spent = {t: after[t] - before.get(t, 0) for t in after}
        shares[n] = 1 - spent[me] / sum(spent.values())   # share of the other threads
    print(json.dumps(shares))
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_thread_count_changes_who_does_the_work(tmp_path) -> None:
    """At 1 thread the calling thread does all the work; at 2 a pool worker does a real part.
    Timing cannot show this on a loaded machine, per-thread CPU time can. The pool's workers
    spin (sched_yield) after a task by default; spinning off keeps idle workers at ~0."""
    script = tmp_path / "threads.py"
    script.write_text(textwrap.dedent(_PER_THREAD_CPU))
    env = {**os.environ, "TVM_NUM_THREADS": "2", "TVM_THREAD_POOL_SPIN_COUNT": "0"}
    run = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                         text=True, timeout=300, check=True)
    shares = {int(k): v for k, v in json.loads(run.stdout.splitlines()[-1]).items()}
    assert shares[1] < 0.03, shares
    assert shares[2] > 0.15, shares
