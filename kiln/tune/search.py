"""The search over one workload's config space: the hand-written default first, a few random
configs, then configs a cost model picks.

The cost model is scikit-learn's gradient-boosted trees, fit after every trial on the
measured configs (features: each knob's log2, and what decides a tiled kernel's speed:
multiply-adds per load, accumulators, padding, how evenly the tasks fill the cores),
predicting log time; the next trial is the unmeasured config it predicts fastest (one in ten
a random one, so a wrong model cannot trap the search). Configs already in
the database are not measured again, so a rerun resumes where a killed run stopped.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from kiln.tune.database import CONFIRM_SAMPLES, TuningDB, estimate, estimates
from kiln.tune.measure import Runner, Trial, make_inputs, measure
from kiln.tune.space import config_space
from kiln.tune.workload import Workload, target_id

RANDOM_SHARE = 0.1          # of the model-guided trials, this share is random instead
CANDIDATES = 4096           # unmeasured configs the model ranks per trial (a random sample)
CONFIRM = 10                # at most this many last trials of a budget (a sixth of it)
                            # measure the leaders again
LEADERS = 2                 # how many leaders are confirmed


@dataclass
class Result:
    """How tuning one workload went."""

    workload: Workload
    default_ms: float | None
    best_ms: float | None
    best: Any
    trials: int                     # in the database for this workload, this run's included
    measured: int                   # by this search (its runs so far)
    curve: list[float | None]       # best time so far after each of those trials

    @property
    def speedup(self) -> float | None:
        if self.default_ms and self.best_ms:
            return self.default_ms / self.best_ms
        return None


def features(w: Workload, cfg: Any, threads: int) -> list[float]:
    """The cost model's view of one config: each knob's log2, and for tiled templates what
    decides their speed: multiply-adds per vector load of the register tile, its
    accumulators, the padding the cache tiles add, how evenly the tasks fill ``threads``,
    and the bytes one task's tiles read."""
    vals = {f.name: getattr(cfg, f.name) for f in fields(cfg)}
    out = [float(v) if isinstance(v, bool) else math.log2(max(v, 1)) for v in vals.values()]
    lanes = w.target.isa.lanes("float32")          # 32-bit accumulators and activations
    if {"mr", "nr", "mc", "nc"} <= vals.keys():
        a, shape = w.group.anchor.inputs[0].shape, w.group.anchor.outputs[0].shape
        batch, rows = math.prod(shape[:-2]), (shape[-2] if len(shape) > 1 else 1)
        cols, k = shape[-1], a[-1]
        mr, nv, mc, nc = vals["mr"], vals["nr"] // lanes, vals["mc"], vals["nc"]
        tasks = batch * -(-rows // mc) * -(-cols // nc)
        out += [mr * nv / (mr + nv), math.log2(mr * nv),
                -(-rows // mc) * mc * -(-cols // nc) * nc / (rows * cols),
                tasks / (-(-tasks // threads) * threads), math.log2(k * (mc + nc))]
    elif {"owv", "owl"} <= vals.keys():
        _, oc, oh, _ = w.group.anchor.outputs[0].type.static_shape
        rows = vals.get("ocr", vals.get("ohr", 1))
        nv = vals["owv"] * -(-vals["owl"] // lanes)
        tasks = oh // vals["ohc"] * (oc // vals["occ"] if "occ" in vals else oc)
        out += [rows * nv / (rows + nv), math.log2(rows * nv),
                vals["owl"] / (-(-vals["owl"] // lanes) * lanes),
                tasks / (-(-tasks // threads) * threads)]
    return out


class Search:
    """Tunes one workload, writing every trial to ``db`` as it is measured.

    A trial's time is its ratio to the default kernel, timed alternately within the trial
    (see ``measure``), times the default's time at the workload's first trial. The last
    sixth of a budget of 16 trials or more (at most ``CONFIRM``; also of the trials a
    deadline leaves) measures the leaders again; a config's time: ``estimates``."""

    def __init__(self, w: Workload, runner: Runner, db: TuningDB, seed: int = 0,
                 random_trials: int = 7) -> None:
        self.w, self.runner, self.db = w, runner, db
        self.rng = np.random.default_rng(seed)
        self.space = config_space(w)
        self.index = {cfg: i for i, cfg in enumerate(self.space)}
        threads = os.cpu_count() or 1
        self.x = np.array([features(w, c, threads) for c in self.space])
        self.target = target_id(w.target)
        self.samples: dict[Any, list[float]] = {}     # config -> its times (empty: failed)
        self.trials = 0
        for r in db.trials(w.key, self.target):        # resume: what an earlier run measured
            self._record(r.knobs, r.time_ms)
        # the yardstick: each trial's time is its ratio to the default kernel (timed
        # alternately in the trial) times this, the default's time at the first trial
        self.reference_ms = self.estimate(self.space[0])
        self.random_trials = random_trials
        self.measured = 0                             # trials measured by this object's runs
        self.curve: list[float | None] = []           # the best time after each of them
        self._inputs = None

    def _record(self, cfg: Any, time_ms: float | None) -> None:
        self.samples.setdefault(cfg, [])
        if time_ms is not None:
            self.samples[cfg].append(time_ms)
        self.trials += 1

    @property
    def times(self) -> dict[Any, float]:
        """Each config's time that can win (``estimates``); failed configs are left out."""
        return estimates(self.samples, {self.space[0]})

    def estimate(self, cfg: Any) -> float | None:
        """``cfg``'s time (``database.estimate``), None if it has no trial that ran."""
        t = self.samples.get(cfg)
        return estimate(t) if t else None

    @property
    def best(self) -> tuple[Any, float | None]:
        times = self.times
        if not times:
            return None, None
        cfg = min(times, key=times.get)
        return cfg, times[cfg]

    def next_config(self, confirm: bool = False, pending: Sequence[Any] = ()) -> Any | None:
        """The default, then random configs, then the cost model's pick; with ``confirm``
        (the last trials of a budget), the leaders again (``_leader_to_confirm``).
        ``pending``: configs being measured now (not picked again)."""
        if confirm:
            cfg = self._leader_to_confirm(pending)
            if cfg is not None:
                return cfg
        measured = self.samples.keys()
        todo = [i for i, c in enumerate(self.space) if c not in measured and c not in pending]
        if not todo:                # the whole space measured: confirm the leaders instead
            return self._leader_to_confirm(pending)
        if self.space[0] not in measured and self.space[0] not in pending:
            return self.space[0]
        ok = [c for c, t in self.samples.items() if t and c in self.index]
        if len(ok) < self.random_trials + 1 or self.rng.random() < RANDOM_SHARE:
            return self.space[int(self.rng.choice(todo))]
        pool = np.array(todo)
        if len(pool) > CANDIDATES:
            pool = self.rng.choice(pool, CANDIDATES, replace=False)
        return self.space[int(pool[np.argmax(self._score(pool))])]

    def _leader_to_confirm(self, pending: Sequence[Any]) -> Any | None:
        """The first of the ``LEADERS`` fastest configs (by their ``estimate`` so far) with
        fewer than ``CONFIRM_SAMPLES`` trials: a lucky leader drops down the ranking as it
        is timed again, and the next takes its place. (The default needs no confirming:
        every trial is timed against it.)"""
        default = self.space[0]
        est = {c: self.estimate(c) for c, t in self.samples.items() if t and c != default}
        for cfg in sorted(est, key=est.get)[:LEADERS]:
            if len(self.samples[cfg]) < CONFIRM_SAMPLES and cfg not in pending:
                return cfg
        return None

    def _score(self, pool: np.ndarray) -> np.ndarray:
        """The cost model: gradient-boosted trees fit to the log times measured (a failed
        config counts as 4x the slowest); a config of ``pool`` scores its predicted speed.
        (On made-up landscapes with 8% timing noise, 32 trials of it got within 11% and 7%
        of the optimum on average, where a Gaussian process with expected improvement got
        within 15% and 32%.)"""
        from sklearn.ensemble import GradientBoostingRegressor
        times = {c: self.estimate(c) for c in self.samples if c in self.index}
        worst = max(t for t in times.values() if t is not None)
        measured = list(times)
        y = np.log([t if t is not None else 4 * worst for t in times.values()])
        model = GradientBoostingRegressor(n_estimators=80, max_depth=3, learning_rate=0.15,
                                          random_state=0)
        model.fit(self.x[[self.index[c] for c in measured]], y)
        return -model.predict(self.x[pool])

    def run(self, trials: int, deadline: float | None = None,
            on_trial: Callable[[Trial], None] | None = None,
            runners: Sequence[Runner] = ()) -> Result:
        """Measure until the workload has ``trials`` trials in the database, the space is
        exhausted (and its leaders confirmed), or ``deadline`` (``time.monotonic()``)
        passes. With several ``runners`` (devices), each measures one config of every
        batch, in parallel."""
        runners = list(runners) or [self.runner]
        if self._inputs is None:
            self._inputs = make_inputs(self.w.group)
        start, first = time.monotonic(), self.trials
        # the last trials confirm the leaders (a budget under 16 only explores)
        window = min(CONFIRM, trials // 6) if trials >= 16 else 0
        while self.trials < trials and (deadline is None or time.monotonic() < deadline):
            left = trials - self.trials     # trials to go, by the budget or by the clock
            if deadline is not None and self.trials > first:
                per_trial = (time.monotonic() - start) / (self.trials - first)
                left = min(left, int((deadline - time.monotonic()) / per_trial * len(runners)))
            batch: list[Any] = []
            for _ in range(min(len(runners), trials - self.trials)):
                cfg = self.next_config(left - len(batch) <= window, batch)
                if cfg is None:
                    break
                batch.append(cfg)
            if not batch:
                break
            with ThreadPoolExecutor(len(batch)) as pool:
                done = list(pool.map(lambda job: measure(self.w, job[1], job[0], self._inputs),
                                     zip(runners, batch, strict=False)))
            for cfg, trial in zip(batch, done, strict=True):
                t = trial.time_ms
                if trial.vs_default is not None:
                    self.reference_ms = self.reference_ms or trial.default_ms
                    t = trial.vs_default * self.reference_ms
                self.db.append(self.w.key, self.target, cfg, t, trial.error, self.w.summary,
                               trial.vs_default, default=cfg == self.space[0])
                self._record(cfg, t)
                self.measured += 1
                self.curve.append(self.best[1])
                if on_trial:
                    on_trial(trial)
        best_cfg, best_ms = self.best
        return Result(self.w, self.estimate(self.space[0]), best_ms, best_cfg,
                      self.trials, self.measured, list(self.curve))
