"""kiln_run, the C++ deploy runner (examples/deploy_cpp), built here with CMake against this
machine's TVM runtime: it runs an x86 kiln library with no Python and writes what
``Library.__call__`` returns."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import kiln
from kiln import ops

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deploy import build_runner, host_libs, run  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("g++") is None,
                                reason="needs cmake and g++")


def test_the_runner_runs_an_x86_library(tmp_path: Path) -> None:
    g = kiln.Graph("mlp")
    x = g.input("x", (37, 96), "float32")
    keep = g.input("keep", (37, 1), "bool")
    w = np.random.default_rng(0).standard_normal((96, 70)).astype(np.float32)
    h = ops.gelu(ops.matmul(x, w))
    g.output(ops.softmax(h, axis=-1), ops.where(keep, h, np.float32(0)))
    lib = kiln.compile(g, "x86")
    path = lib.export(tmp_path / "mlp.so")
    rng = np.random.default_rng(1)
    feeds = [rng.standard_normal((37, 96)).astype(np.float32), rng.random((37, 1)) > 0.5]
    runner = build_runner(tmp_path / "build", host_libs(tmp_path / "libs"))
    got = run(runner, path, feeds, tmp_path / "run")
    want = lib(*feeds)
    assert len(got) == len(want)
    for g_, w_ in zip(got, want, strict=True):
        assert g_.dtype == w_.dtype and g_.shape == w_.shape
        np.testing.assert_array_equal(g_, w_)     # the same machine code, the same bits
