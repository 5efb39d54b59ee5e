"""The report's numbers, without a browser (these run in make test): FLOPs and bytes counted
from a kernel's TIR, the measured roofs, the graph handed to Graphviz, the profile joined to
the kernels."""

from __future__ import annotations

import re

import numpy as np
import pytest

import kiln
from kiln import ops
from kiln.codegen.cost import flops, min_bytes
from kiln.report import build_report
from kiln.report.html import graph_dot
from kiln.report.peaks import Peaks, measure_peaks
from kiln.target import get_target

M, N, K = 37, 45, 29          # odd: no dim a multiple of a vector or a tile


def _kernels(g: kiln.Graph) -> dict[str, kiln.codegen.lower.Kernel]:
    return {k.group.anchor.op.name if k.group.anchor else k.name: k
            for k in kiln.compile_stages(g).kernels}


def test_gemm_flops_and_bytes() -> None:
    rng = np.random.default_rng(0)
    g = kiln.Graph("gemm")
    x = g.input("x", (M, K), "float32")
    w = rng.standard_normal((K, N)).astype(np.float32)
    g.output(ops.relu(ops.add(ops.matmul(x, w), rng.standard_normal(N).astype(np.float32))))
    (k,) = kiln.compile_stages(g).kernels
    # the GEMM as the kernel runs it: padded to whole register tiles (M to mr, N to nr)
    mp, np_ = -(-M // k.knobs.mr) * k.knobs.mr, -(-N // k.knobs.nr) * k.knobs.nr
    assert (mp, np_) != (M, N)
    assert flops(k.te_func) == 2 * mp * np_ * K + M * N + M * N   # GEMM, bias, relu's select
    raw = 4 * (M * K + N + M * N)                                # x, bias, output
    packed = next(a for a in k.args if isinstance(a, np.ndarray) and a.size >= K * N)
    assert packed.size >= K * N                                  # panels padded to whole tiles
    assert min_bytes(k) == raw + packed.nbytes


def test_reduction_and_data_movement_flops() -> None:
    g = kiln.Graph("rows")
    x = g.input("x", (M, N), "float32")
    g.output(ops.transpose(ops.sum(ops.mul(x, x), axes=[1], keepdims=True), [1, 0]))
    kernels = kiln.compile_stages(g).kernels
    counted = {k.name: flops(k.te_func) for k in kernels}
    total = sum(counted.values())
    # a multiply and an add per element; the transpose moves data only
    assert total == 2 * M * N, counted


@pytest.fixture
def one_thread():
    """make test runs two workers on two cores: a second thread would wait on the other."""
    before = kiln.num_threads()
    kiln.set_num_threads(1)
    yield
    kiln.set_num_threads(before)


def test_peaks_are_plausible(one_thread) -> None:
    p = measure_peaks(get_target("x86"))
    assert p.threads == 1
    assert 1 < p.gflops < 20_000 and 0.5 < p.gbps < p.cache_gbps < 20_000
    # the bound: memory-bound below the ridge, the compute peak above it
    ridge = p.gflops / p.cache_gbps
    assert p.bound(ridge / 10, 1) == pytest.approx(p.cache_gbps * ridge / 10)
    assert p.bound(ridge * 10, 1) == p.gflops
    assert Peaks(100, 10, 50, 1).bound(1, 0) == 100


def test_report_profiles_every_kernel(one_thread) -> None:
    rng = np.random.default_rng(1)
    g = kiln.Graph("mlp")
    x = g.input("x", (M, 2 * K), "float32")
    h = ops.gelu(ops.dense(x, rng.standard_normal((N, 2 * K)).astype(np.float32)))
    g.output(ops.softmax(ops.reshape(h, (N, M))))
    report = build_report(g)
    names = [k.name for k in report.compilation.kernels]
    assert sorted(r.name for r in report.rows) == sorted(names)
    called = [r for r in report.rows if r.calls]
    assert [r.ms * r.calls for r in called] == sorted((r.ms * r.calls for r in called),
                                                      reverse=True)
    gemm = next(r for r in report.rows if r.template == "gemm")
    assert gemm.ms > 0 and gemm.flops >= 2 * M * N * 2 * K
    assert 0 < report.bound_share(gemm) < 1.5
    assert report.latency_ms > 0 and report.library_bytes > 10_000
    assert list(report.seconds)[:3] == ["import", "graph passes", "fusion"]
    assert all(s >= 0 for s in report.seconds.values())
    assert "TIR lowering and codegen" in report.seconds
    assert all(".type" in r.code for r in called)          # each kernel's own assembly
    assert "vfmadd" in gemm.code                  # with its hot loop (a parallel lambda)
    dot = graph_dot(report)
    for name in names:
        assert re.search(rf'^  "{name}" \[id="group-{name}"', dot, re.M)
    edges = re.findall(r'^  "([^"]+)" -> "([^"]+)";$', dot, re.M)
    assert ("in:x", names[0]) in edges and len(edges) == len(names) + 1


def test_cli_report_without_graphviz(tmp_path, capsys, monkeypatch) -> None:
    """No dot: one line naming the package, exit status 2, before any compiling."""
    import kiln.report.html
    from kiln.cli import main

    monkeypatch.setattr(kiln.report.html.shutil, "which", lambda name: None)
    model = tmp_path / "m.py"
    model.write_text("raise SystemExit('must not be loaded')\n")
    assert main(["report", str(model), "-o", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "apt-get install graphviz" in err
    assert not (tmp_path / "r.html").exists()
