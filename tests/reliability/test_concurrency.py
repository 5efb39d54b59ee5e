"""One loaded library called from 8 Python threads at once, and from several processes at
once: every call returns its own inputs' results. Each calling thread runs on a VM of its own
(the library's code and weights are shared), and TVM gives each calling thread its own pool of
workers, so concurrent calls neither share registers nor wait for each other."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import kiln
from kiln import ops

THREADS, CALLS = 8, 12


def _model() -> kiln.Graph:
    """A GEMM with an epilogue, a reduction and a symbolic batch: parallel kernels and
    per-call memory sized by the input."""
    rng = np.random.default_rng(0)
    g = kiln.Graph("concurrent")
    x = g.input("x", ("n", 96), "float32")
    h = ops.gelu(ops.matmul(x, rng.standard_normal((96, 80)).astype(np.float32)))
    g.output(ops.softmax(h, axis=-1), ops.layer_norm(h, np.ones(80, np.float32),
                                                     np.zeros(80, np.float32)))
    return g


def _inputs(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((int(rng.integers(1, 40)), 96)).astype(np.float32)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return kiln.compile(_model()).export(tmp_path_factory.mktemp("lib") / "concurrent.so")


def test_eight_threads_at_once(exported: Path) -> None:
    lib = kiln.load(exported)
    seeds = list(range(THREADS * CALLS))
    want = {s: lib(x=_inputs(s)) for s in seeds}          # one thread, one call at a time

    def worker(t: int) -> list[tuple[int, list[np.ndarray]]]:
        return [(s, lib(x=_inputs(s))) for s in seeds[t::THREADS]]

    with ThreadPoolExecutor(THREADS) as pool:
        results = [r for part in pool.map(worker, range(THREADS)) for r in part]
    assert len(results) == len(seeds)
    for s, got in results:
        for g_, w_ in zip(got, want[s], strict=True):
            np.testing.assert_array_equal(g_, w_)
    first = kiln.run_reference(_model(), {"x": _inputs(0)})
    for g_, w_ in zip(want[0], first, strict=True):
        np.testing.assert_allclose(g_, w_, rtol=1e-4, atol=1e-5)


def test_several_processes_at_once(exported: Path, tmp_path: Path) -> None:
    """Four processes load the same file and run at the same time; each writes its results,
    compared here with this process's."""
    script = textwrap.dedent(f"""
        import sys, numpy as np, kiln
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_concurrency import _inputs
        lib = kiln.load(sys.argv[1])
        seed = int(sys.argv[2])
        out = {{}}
        for i in range(20):
            for j, o in enumerate(lib(x=_inputs(seed * 100 + i))):
                out[f"{{i}}_{{j}}"] = o
        np.savez(sys.argv[3], **out)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(exported), str(p),
                               str(tmp_path / f"out{p}.npz")], stderr=subprocess.PIPE,
                              text=True) for p in range(4)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    lib = kiln.load(exported)
    for p in range(4):
        with np.load(tmp_path / f"out{p}.npz") as got:
            for i in range(20):
                for j, want in enumerate(lib(x=_inputs(p * 100 + i))):
                    np.testing.assert_array_equal(got[f"{i}_{j}"], want)
