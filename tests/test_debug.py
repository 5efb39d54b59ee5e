"""kiln debug, the numerics bisector: on a correct build every kernel matches the reference;
with a bug planted in one group (a wrong epilogue compute, a wrong schedule) it names that
group and says which part of it is wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tvm_ffi
from tvm import te, tirx

import kiln
from kiln import schedules
from kiln.cli import main
from kiln.debug import bisect
from kiln.schedules.compute import COMPUTE
from kiln.testing import random_inputs

MODEL = '''\
import numpy as np

import kiln
from kiln import ops


def build() -> kiln.Graph:
    rng = np.random.default_rng(0)
    g = kiln.Graph("mlp")
    x = g.input("x", (5, 40), "float32")          # odd sizes: tails in every vector loop
    h = ops.dense(x, rng.standard_normal((24, 40)).astype("float32"))
    h = ops.gelu(ops.add(h, rng.standard_normal(24).astype("float32")))
    h = ops.softmax(h)
    g.output(ops.layer_norm(ops.relu(h), np.ones(24, np.float32), np.zeros(24, np.float32)))
    return g
'''
GROUPS = ["fused_dense_add_gelu", "fused_softmax_relu", "fused_layer_norm"]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("debug") / "mlp.py"
    path.write_text(MODEL)
    return path


def _graph(model: Path) -> kiln.Graph:
    namespace: dict = {}
    exec(compile(model.read_text(), str(model), "exec"), namespace)
    return namespace["build"]()


def _wrong_gelu(info, x: te.Tensor) -> te.Tensor:
    """SiLU, x * sigmoid(x), where GELU was meant: off by up to 0.2 near x = -2 and 2."""
    return te.compute(x.shape, lambda *i: x(*i) * tirx.sigmoid(x(*i)), name=info.name)


def _scaled_store(schedule):
    """A row-reduction schedule that, after its real work, scales the output by 1.1."""
    def wrong(*args, **kwargs):
        func = schedule(*args, **kwargs)

        def store(v, m):
            v = m.default_mutate(v)
            if v.buffer.name != "relu":          # the output of fused_softmax_relu
                return v
            return tirx.BufferStore(v.buffer, v.value * tirx.const(1.1, "float32"), v.indices)

        return tvm_ffi.structural_mutate(func, (tirx.BufferStore, store))
    return wrong


def test_correct_build_matches(model: Path) -> None:
    c = kiln.compile_stages(_graph(model))
    report = bisect(c, random_inputs(c.optimized))
    assert report.ok and [k.name for k in report.kernels] == GROUPS
    assert all(k.error < 1e-5 for k in report.kernels), str(report)


def test_names_the_group_with_a_wrong_epilogue(model: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(COMPUTE, "gelu", _wrong_gelu)
    c = kiln.compile_stages(_graph(model))
    report = bisect(c, random_inputs(c.optimized))
    assert not report.ok
    assert report.first_bad.name == "fused_dense_add_gelu"
    assert [k.name for k in report.kernels] == ["fused_dense_add_gelu"]   # stops there
    assert report.kernels[0].error > 2e-3
    assert not report.unscheduled.ok                 # wrong before any schedule
    assert [op.what for op in report.ops] == ["dense", "add", "gelu"]
    assert [op.ok for op in report.ops] == [True, True, False]
    assert "gelu" in report.verdict and "TE compute" in report.verdict


def test_names_the_group_with_a_wrong_schedule(model: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schedules.x86, "schedule_row_reduction",
                        _scaled_store(schedules.x86.schedule_row_reduction))
    c = kiln.compile_stages(_graph(model))
    report = bisect(c, random_inputs(c.optimized))
    assert report.first_bad is not None and report.first_bad.name == "fused_softmax_relu"
    assert [k.ok for k in report.kernels] == [True, False]
    assert 2e-3 < report.kernels[1].error < 0.1 + 1e-6   # 10% of softmax values, all <= 1
    assert report.unscheduled.ok                     # the TE is right; the schedule is not
    assert "row reduction schedule" in report.verdict
    text = str(report)
    assert "first divergent kernel: fused_softmax_relu" in text and "T.prim_func" in text


def test_cli_exit_status(model: Path, capsys: pytest.CaptureFixture,
                         monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    x = np.random.default_rng(3).standard_normal((5, 40)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert main(["debug", str(model), "-i", f"x={tmp_path / 'x.npy'}"]) == 0
    assert "every kernel matches the reference (3 kernels)" in capsys.readouterr().out
    monkeypatch.setitem(COMPUTE, "gelu", _wrong_gelu)
    assert main(["debug", str(model), "--no-unfuse", "--tolerance", "1e-4"]) == 1
    out = capsys.readouterr().out
    assert "(tolerance 0.0001)" in out
    assert "first divergent kernel: fused_dense_add_gelu" in out
    assert "its ops compiled alone" not in out


@pytest.mark.parametrize(("args", "needle"), [
    (["-i", "y=nope.npy"], "the model has no input 'y'"),
    (["--target", "arm-neon"], "do not run there"),
])
def test_cli_errors(model: Path, capsys: pytest.CaptureFixture, args: list[str],
                    needle: str) -> None:
    assert main(["debug", str(model), *args]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
