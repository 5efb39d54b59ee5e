"""kiln.tune: config spaces, isolated measurement (crashes and hangs cost one trial), the JSON
Lines database (atomic appends, torn lines, resume after kill -9), the search, remote
measurement over TVM RPC on loopback, and tuned knobs applied by kiln compile."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import kiln
from kiln import ops
from kiln.codegen.lower import Template, lower_group
from kiln.errors import KnobError
from kiln.schedules.x86 import CpuGemmKnobs, RowReductionKnobs
from kiln.target import get_target
from kiln.tune import Search, TuningDB, tune
from kiln.tune.measure import LocalRunner, Task, make_inputs, measure
from kiln.tune.space import config_space
from kiln.tune.workload import extract_workloads, target_id, workload_key

MODEL = '''import numpy as np
import kiln
from kiln import ops


def build():
    g = kiln.Graph("mlp")
    x = g.input("x", (48, 96), "float32")
    w = np.random.default_rng(0).standard_normal((96, 80)).astype(np.float32)
    h = ops.matmul(x, w)
    g.output(ops.layer_norm(h, np.ones(80, np.float32), np.zeros(80, np.float32)))
    return g
'''


def _mlp(m: int = 48) -> kiln.Graph:
    g = kiln.Graph("mlp")
    x = g.input("x", (m, 96), "float32")
    w = np.random.default_rng(0).standard_normal((96, 80)).astype(np.float32)
    g.output(ops.layer_norm(ops.matmul(x, w), np.ones(80, np.float32), np.zeros(80, np.float32)))
    return g


def _workloads(g: kiln.Graph, target: str = "x86"):
    c = kiln.compile_stages(g, target)
    return extract_workloads(c.fused, c.target)


def test_workloads_are_keyed_by_structure_not_names() -> None:
    """Two layers with the same shapes are one workload (count 2); another M is another."""
    g = kiln.Graph("two")
    x = g.input("x", (48, 96), "float32")
    rng = np.random.default_rng(0)
    h = ops.relu(ops.matmul(x, rng.standard_normal((96, 96)).astype(np.float32)))
    g.output(ops.relu(ops.matmul(h, rng.standard_normal((96, 96)).astype(np.float32))))
    (w,) = _workloads(g)
    assert w.count == 2 and w.plan.template is Template.GEMM
    keys = {w.key for w in _workloads(_mlp(48))} & {w.key for w in _workloads(_mlp(50))}
    assert not keys
    assert workload_key(w.group, get_target("x86")) != workload_key(w.group,
                                                                     get_target("x86-avx2"))


def test_config_space_is_valid_and_starts_at_the_default() -> None:
    gemm, rows = _workloads(_mlp())
    space = config_space(gemm)
    assert space[0] == gemm.default and len(space) == len(set(space)) > 100
    lanes = get_target("x86").isa.lanes()
    for cfg in space:
        assert cfg.nr % lanes == 0 and cfg.mc % cfg.mr == 0 and cfg.nc % cfg.nr == 0
        assert cfg.mr * cfg.nr // lanes + cfg.nr // lanes + 1 <= 32     # no spilling tile
        assert cfg.mr <= 48 and cfg.nr <= 80 + lanes
    assert config_space(rows)[0] == RowReductionKnobs() and len(config_space(rows)) == 32


def test_every_config_of_a_small_space_computes_the_right_result() -> None:
    """Tuned knobs change the schedule, never the numbers: a sample of the GEMM space and
    the whole row-reduction space, each against the reference."""
    rng = np.random.default_rng(0)
    with LocalRunner() as runner:
        for w in _workloads(_mlp(13)):
            space = config_space(w)
            pick = space if len(space) <= 32 else [space[i] for i in
                                                   rng.choice(len(space), 12, replace=False)]
            inputs = make_inputs(w.group)
            for cfg in pick:
                trial = measure(w, cfg, runner, inputs)
                assert trial.ok, (cfg, trial.error)


def test_knobs_of_another_template_are_refused() -> None:
    (gemm, rows) = _workloads(_mlp())
    with pytest.raises(KnobError, match="do not fit"):
        lower_group(gemm.group, gemm.target, knobs=RowReductionKnobs())
    with pytest.raises(KnobError):
        lower_group(gemm.group, gemm.target, knobs=CpuGemmKnobs(40, 64, 40, 64, 1))


class _Crash:
    def __reduce__(self):
        return os._exit, (3,)


class _Hang:
    def __reduce__(self):
        return time.sleep, (600,)


def test_a_crash_or_a_hang_costs_one_trial() -> None:
    (gemm, _) = _workloads(_mlp())
    inputs = make_inputs(gemm.group)
    with LocalRunner(timeout=20) as runner:
        status, why = runner.run(Task(_Crash(), "k", gemm.target, [], []))
        assert status == "error" and "crashed" in why and "3" in why
        runner.timeout = 3
        status, why = runner.run(Task(_Hang(), "k", gemm.target, [], []))
        assert status == "error" and "timed out" in why
        runner.timeout = 60
        assert measure(gemm, gemm.default, runner, inputs).ok      # a fresh worker goes on


def test_database_appends_whole_lines_and_skips_a_torn_one(tmp_path: Path) -> None:
    path = tmp_path / "db.jsonl"
    db = TuningDB(path)
    db.append("w1", "x86", CpuGemmKnobs(8, 32, 64, 128, 8), 1.5, None, "gemm")
    db.append("w1", "x86", CpuGemmKnobs(4, 32, 64, 128, 8), None, "wrong result", "gemm")
    with open(path, "a") as f:
        f.write('{"workload": "w1", "target": "x86", "knobs_ty')        # a torn last line
    db = TuningDB(path)
    assert len(db.records) == 2 and db.skipped == 1
    db.append("w1", "x86", CpuGemmKnobs(6, 32, 60, 128, 8), 1.2, None)
    lines = path.read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[-1])["time_ms"] == 1.2     # a fresh line
    db = TuningDB(path)
    assert db.best("w1", "x86").knobs == CpuGemmKnobs(6, 32, 60, 128, 8)
    assert db.best("w1", "x86-other") is None
    record = json.loads(lines[0])
    assert {"workload", "target", "knobs_type", "knobs", "time_ms", "error", "kiln",
            "tvm"} <= record.keys()


def test_the_search_finds_the_best_of_a_synthetic_landscape(monkeypatch) -> None:
    """With a made-up cost (fastest at mr=6, nr=48, ku=4, smooth around it), 32 trials get
    within 5% of the best of the whole space, and far ahead of the default."""
    (gemm, _) = _workloads(_mlp(96))

    def cost(cfg: CpuGemmKnobs) -> float:
        return (1 + 0.1 * abs(cfg.mr - 6) + 0.2 * abs(cfg.nr - 48) / 16
                + 0.15 * abs(np.log2(cfg.ku) - 2) + 0.05 * abs(np.log2(cfg.mc / cfg.mr) - 2))

    def fake_measure(w, cfg, runner, inputs):
        from kiln.tune.measure import Trial
        return Trial(cfg, time_ms=cost(cfg))

    monkeypatch.setattr("kiln.tune.search.measure", fake_measure)
    monkeypatch.setattr("kiln.tune.search.make_inputs", lambda group: None)
    search = Search(gemm, runner=LocalRunner(), db=_MemoryDB())
    result = search.run(32)
    best = min(cost(c) for c in config_space(gemm))
    assert result.measured == 32 and len(result.curve) == 32
    assert result.best_ms <= 1.05 * best < cost(gemm.default)


def test_a_config_timed_fast_once_by_luck_is_measured_again_and_not_chosen(
        monkeypatch, tmp_path) -> None:
    """Every config is as fast as the default, but each non-default config's first
    measurement reads 0.7 to 0.95 of it (luck). The leaders are measured again at the end
    of the budget, their medians fall back to the truth, and the default (no slower) stays
    the best, in the search and in the database (which marks the default's records)."""
    (gemm, _) = _workloads(_mlp(96))
    seen: set = set()
    rng = np.random.default_rng(0)

    def fake_measure(w, cfg, runner, inputs):
        from kiln.tune.measure import Trial
        first = cfg not in seen and cfg != gemm.default
        seen.add(cfg)
        return Trial(cfg, time_ms=1.0 * (rng.uniform(0.7, 0.95) if first else 1.0))

    monkeypatch.setattr("kiln.tune.search.measure", fake_measure)
    monkeypatch.setattr("kiln.tune.search.make_inputs", lambda group: None)
    db = TuningDB(tmp_path / "db.jsonl")
    result = Search(gemm, runner=LocalRunner(), db=db).run(24)
    assert result.best == gemm.default and result.best_ms == 1.0
    assert db.best(gemm.key, target_id(gemm.target)).knobs == gemm.default
    again = [c for c, t in Search(gemm, LocalRunner(), db).samples.items() if len(t) > 1]
    assert gemm.default not in again and len(again) >= 2



def test_a_time_budget_goes_to_the_workloads_by_their_share_of_the_model(
        monkeypatch, tmp_path) -> None:
    """Trials take 20 ms each; the GEMM's default reads 10x the row reduction's: within a
    3 s budget the GEMM gets most of the trials (the row reduction's 32 configs would
    take 0.64 s: an even split would measure them all)."""
    def fake_measure(w, cfg, runner, inputs):
        from kiln.tune.measure import Trial
        time.sleep(0.02)
        return Trial(cfg, time_ms=10.0 if w.plan.template is Template.GEMM else 1.0)

    monkeypatch.setattr("kiln.tune.search.measure", fake_measure)
    monkeypatch.setattr("kiln.tune.search.make_inputs", lambda group: None)
    gemm, rows = tune(_mlp(), trials=10_000, time_budget=3.0, db=tmp_path / "db.jsonl",
                      progress=False)
    assert gemm.workload.plan.template is Template.GEMM
    assert gemm.measured > 2 * rows.measured and rows.measured < 20

class _MemoryDB(TuningDB):
    def __init__(self) -> None:
        self.records = []

    def append(self, *args, **kwargs) -> None:
        pass


def _kiln(*args: str) -> list[str]:
    return [sys.executable, "-m", "kiln", *args]


def test_kill_9_loses_at_most_the_trial_in_flight(tmp_path: Path) -> None:
    """kiln tune killed with SIGKILL mid-run leaves a database every line of which reads;
    the rerun measures only what is missing: each workload ends with exactly the trials
    asked for, no config twice."""
    model, db = tmp_path / "mlp.py", tmp_path / "db.jsonl"
    model.write_text(MODEL)
    cmd = _kiln("tune", str(model), "--trials", "10", "--db", str(db), "--quiet")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if db.exists() and len(db.read_text().splitlines()) >= 4:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    lines = db.read_text().splitlines()
    assert len(lines) >= 4 and all(json.loads(line) for line in lines)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in db.read_text().splitlines()]
    assert records[:len(lines)] == [json.loads(line) for line in lines]
    for key in {r["workload"] for r in records}:
        configs = [json.dumps(r["knobs"], sort_keys=True) for r in records
                   if r["workload"] == key]
        assert len(configs) == 10 == len(set(configs))
    assert "speedup" in done.stdout and "row reduction" in done.stdout


def test_tuned_knobs_are_applied_by_compile(tmp_path: Path) -> None:
    """kiln compile --tuning-db takes each workload's best record (here a deliberately odd
    config, measured fastest in a hand-made database) and still computes the model."""
    g = _mlp()
    gemm, rows = _workloads(g)
    db = TuningDB(tmp_path / "db.jsonl")
    odd = CpuGemmKnobs(mr=3, nr=16, mc=12, nc=16, ku=2)
    db.append(gemm.key, target_id(gemm.target), odd, 0.001, None)
    db.append(gemm.key, target_id(gemm.target), gemm.default, 0.002, None)
    lib = kiln.compile(g, tuning_db=db.path)
    k_gemm, k_rows = lib.compilation.kernels
    assert "knobs from tuning" in k_gemm.notes and str(odd) in k_gemm.notes[0]
    assert "knobs from tuning" not in k_rows.notes            # unseen: the default
    x = np.random.default_rng(1).standard_normal((48, 96)).astype(np.float32)
    np.testing.assert_allclose(lib(x=x)[0], kiln.run_reference(g, x=x)[0], rtol=1e-4,
                               atol=1e-4)


def test_rpc_loopback_measures_on_the_servers(tmp_path: Path) -> None:
    """kiln.tune with rpc= builds here and times on TVM RPC servers (two, on loopback: one
    trial on each at once)."""
    from tvm import rpc
    servers = [rpc.Server(host="127.0.0.1", port=9190, port_end=9290) for _ in range(2)]
    try:
        results = tune(_mlp(), trials=4, db=tmp_path / "db.jsonl",
                       rpc=[f"127.0.0.1:{s.port}" for s in servers], progress=False)
    finally:
        for s in servers:
            s.terminate()
    assert [r.measured for r in results] == [4, 4]
    records = TuningDB(tmp_path / "db.jsonl").records
    assert len(records) == 8 and all(r.time_ms and r.time_ms > 0 and not r.error
                                     for r in records)


def test_several_runners_measure_a_batch_each(monkeypatch) -> None:
    (gemm, _) = _workloads(_mlp())
    seen = []

    def fake_measure(w, cfg, runner, inputs):
        from kiln.tune.measure import Trial
        seen.append((runner, cfg))
        return Trial(cfg, time_ms=1.0 + cfg.mr)

    monkeypatch.setattr("kiln.tune.search.measure", fake_measure)
    monkeypatch.setattr("kiln.tune.search.make_inputs", lambda group: None)
    result = Search(gemm, LocalRunner(), db=_MemoryDB()).run(9, runners=["a", "b"])
    assert result.measured == 9 and [r for r, _ in seen] == ["a", "b"] * 4 + ["a"]
    assert len({c for _, c in seen}) == 9


def test_cli_tune_errors_are_one_line(tmp_path: Path) -> None:
    model = tmp_path / "mlp.py"
    model.write_text(MODEL)
    for args, message in ((["--target", "cuda"], "CPU targets"),
                          (["--rpc", "nohost"], "HOST:PORT"),
                          (["--target", "arm-neon"], "--rpc"),
                          (["--time-budget", "soon"], "not a duration")):
        proc = subprocess.run(_kiln("tune", str(model), "--db", str(tmp_path / "d.jsonl"),
                                    *args), capture_output=True, text=True)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
