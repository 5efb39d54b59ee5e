"""Tune every workload of a model; apply a database when compiling.

    results = tune("model.onnx", "x86", trials=64, time_budget=600, db="tuning.jsonl")
    lib = kiln.compile("model.onnx", "x86", tuning_db="tuning.jsonl")
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kiln.codegen.lower import plan_schedule
from kiln.ir.passes.fuse import Group
from kiln.target import Target, get_target
from kiln.tune.database import TuningDB
from kiln.tune.measure import LocalRunner, RpcRunner, Trial
from kiln.tune.search import Result, Search
from kiln.tune.workload import extract_workloads, is_static, target_id, workload_key


def tune(model: object, target: str | Target = "x86", trials: int = 64,
         time_budget: float | None = None, db: str | os.PathLike = "kiln_tuning.jsonl",
         rpc: str | Sequence[str] | None = None,
         input_shapes: Mapping[str, Sequence[int | str]] | None = None,
         progress: bool = True, timeout: float = 60.0,
         threads: int | None = None) -> list[Result]:
    """Tune each distinct workload of ``model`` for ``target`` up to ``trials`` trials
    (counting those already in ``db``), within ``time_budget`` seconds for all of them
    (each workload's share: its share of the model's time, its kernels' count times its
    default's time, measured first), measuring here or, with ``rpc``
    ("host:port", or several: one device each, measuring in parallel), on the devices behind
    those TVM RPC servers. Here, one kernel is timed at a time: two timed at once would
    share the cores. ``threads``: time kernels here on that many threads (default: every
    core). Every trial is appended to ``db`` as it is measured."""
    from kiln.compiler import compile_stages
    tgt = get_target(target)
    c = compile_stages(model, tgt, input_shapes)
    workloads = extract_workloads(c.fused, tgt)
    database = TuningDB(db)
    start = time.monotonic()
    addresses = [rpc] if isinstance(rpc, str) else list(rpc or [])
    runners = [RpcRunner(a, timeout) for a in addresses] or [LocalRunner(timeout, threads)]
    with contextlib.ExitStack() as stack:
        for r in runners:
            stack.enter_context(r)
        bar = stack.enter_context(_progress(progress))
        searches = [Search(w, runners[0], database) for w in workloads]
        tasks = [bar.add_task(f"{w.summary} (x{w.count})", total=trials,
                              completed=s.trials, best=_ms(s.best[1]))
                 for w, s in zip(workloads, searches, strict=True)]

        def advance(search: Search, task: int) -> Callable[[Trial], None]:
            return lambda _: bar.update(task, advance=1, best=_ms(search.best[1]))

        # first every default: a workload's share of the model's time (its kernels' count x
        # the default's time) is its share of the time budget
        for search, task in zip(searches, tasks, strict=True):
            search.run(1, None, advance(search, task), runners)
        weights = [w.count * (s.estimate(s.space[0]) or 0.0)
                   for w, s in zip(workloads, searches, strict=True)]
        results = []
        for i, (search, task) in enumerate(zip(searches, tasks, strict=True)):
            deadline = None
            if time_budget is not None:
                left = time_budget - (time.monotonic() - start)
                share = weights[i] / sum(weights[i:]) if sum(weights[i:]) else 1.0
                deadline = time.monotonic() + left * share   # what one leaves, the rest get
            results.append(search.run(trials, deadline, advance(search, task), runners))
            bar.update(task, completed=trials)
    return results


def _ms(t: float | None) -> str:
    return "-" if t is None else f"{t:.4g} ms"


def _progress(enabled: bool) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("best {task.fields[best]}"),
                    console=Console(stderr=True), disable=not enabled)


def format_results(results: list[Result]) -> str:
    """The per-workload table ``kiln tune`` prints."""
    rows = [("workload", "kernels", "default ms", "tuned ms", "trials", "speedup")]
    for r in results:
        rows.append((r.workload.summary, str(r.workload.count), _num(r.default_ms),
                     _num(r.best_ms), str(r.trials),
                     "-" if r.speedup is None else f"{r.speedup:.2f}x"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(c.ljust(w) if i == 0 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(row, widths, strict=True)))
             for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _num(t: float | None) -> str:
    return "-" if t is None else f"{t:.4f}"


def tuned_knobs(db: str | os.PathLike, target: Target) -> Callable[[Group], Any]:
    """For ``lower_graph``: a group's best knobs in ``db``, or None (the defaults) for a
    workload the database has not seen or whose record no longer fits its template."""
    database = TuningDB(db)
    tid = target_id(target)

    def lookup(group: Group) -> Any:
        if target.is_cuda or not is_static(group):
            return None
        best = database.best(workload_key(group, target), tid)
        if best is None:
            return None
        default = plan_schedule(group, target).knobs
        return best.knobs if type(default) is type(best.knobs) else None

    return lookup
