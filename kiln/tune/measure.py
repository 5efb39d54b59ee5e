"""Measuring one config: build the kernel with its knobs, time it in an isolated worker
process (here, or on a remote device over TVM RPC), check its outputs against the reference.

    runner = LocalRunner(timeout=60)          # or RpcRunner("board:9090", ...)
    trial = measure(workload, knobs, runner, reference)

The worker is a separate process (``spawn``): a kernel that crashes takes the worker down, one
that hangs is killed at the timeout, and either costs one trial, not the run: the runner
starts a fresh worker for the next.

Timing: one warm-up call, then ``repeat`` timed repeats of at least ``min_repeat_ms`` each
(``time_evaluator``), of which the fastest counts: a busy machine only ever slows a repeat.
Busy stretches outlast a trial, though (a 2-thread GEMM read 0.46 or 0.70 ms by turns, and
a whole search drifts), so each candidate is timed in ``PAIRS`` rounds alternating with the
workload's default kernel, and its time is the median ratio to the default: the drift
cancels, and every trial of a workload compares with the same yardstick.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kiln.codegen.lower import Kernel, lower_group
from kiln.errors import KnobError
from kiln.ir.graph import Value
from kiln.ir.passes.fuse import Group
from kiln.target import ARM_CC, Target
from kiln.tune.workload import Workload


@dataclass
class Trial:
    """One measured config: its median time, or why it has none."""

    knobs: Any
    time_ms: float | None = None
    error: str | None = None
    vs_default: float | None = None     # its time / the default kernel's, timed alternately
    default_ms: float | None = None     # the default kernel's time in this trial

    @property
    def ok(self) -> bool:
        return self.time_ms is not None


@dataclass
class Task:
    """What a worker needs to build and time one kernel (picklable)."""

    func: Any                        # the scheduled PrimFunc
    name: str
    target: Target
    args: list[np.ndarray]           # inputs, in parameter order
    out_shapes: list[tuple[tuple[int, ...], str]]
    repeat: int = 3
    min_repeat_ms: int = 15
    rpc: str | None = None           # "host:port"
    threads: int | None = None       # the thread pool's size for the kernel (None: all cores)
    baseline: Task | None = None     # the default kernel, timed alternately with this one
    baseline_key: str = ""           # the worker compiles each baseline once


@dataclass
class Inputs:
    """One workload's arguments and its reference outputs, made once for all its trials."""

    feeds: dict[int, np.ndarray] = field(default_factory=dict)     # id(Value) -> array
    reference: list[np.ndarray] = field(default_factory=list)
    baseline: Kernel | None = None      # the default kernel, lowered at the first trial


def random_value(v: Value, rng: np.random.Generator) -> np.ndarray:
    dtype, shape = v.dtype.value, v.type.static_shape
    if dtype in ("float32", "float64", "float16"):
        return rng.uniform(-1, 1, shape).astype(dtype)
    if dtype in ("int8", "uint8"):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max + 1, shape).astype(dtype)
    if dtype == "bool":
        return rng.integers(0, 2, shape).astype(bool)
    return rng.integers(0, 2, shape).astype(dtype)          # indices, counts: small


def make_inputs(group: Group, seed: int = 0) -> Inputs:
    """Random inputs for ``group``'s external values and its outputs by the NumPy reference."""
    rng = np.random.default_rng(seed)
    env: dict[int, np.ndarray] = {}
    for v in group.inputs:
        env[id(v)] = v.data if v.is_constant else random_value(v, rng)
    feeds = dict(env)
    for n in group.nodes:
        arrays = [v.data if v.is_constant else env[id(v)] for v in n.inputs]
        for o, r in zip(n.outputs, n.op.run_reference(n.attrs, arrays), strict=True):
            env[id(o)] = np.asarray(r)
    return Inputs(feeds, [env[id(v)] for v in group.outputs])


def task_for(kernel: Kernel, target: Target, inputs: Inputs, runner: Runner) -> Task:
    args = [a if isinstance(a, np.ndarray) else inputs.feeds[id(a)] for a in kernel.args]
    outs = [(v.type.static_shape, v.dtype.value) for v in kernel.outputs]
    return Task(kernel.func, kernel.name, target, args, outs, rpc=runner.rpc,
                threads=runner.threads)


def outputs_match(got: list[np.ndarray], want: list[np.ndarray]) -> str | None:
    """None when ``got`` matches the reference (exactly for integers; floats to a tolerance
    that allows another summation order), else what differs."""
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        if g.shape != w.shape:
            return f"output {i} has shape {g.shape}, the reference {w.shape}"
        if np.issubdtype(w.dtype, np.floating):
            scale = max(float(np.abs(w).max(initial=0.0)), 1.0)
            err = float(np.abs(g.astype(np.float64) - w).max(initial=0.0))
            if not err <= 1e-3 * scale:
                return f"output {i} is off the reference by {err:.3g} (scale {scale:.3g})"
        elif not np.array_equal(g, w):
            return f"output {i} differs from the reference"
    return None


def measure(w: Workload, knobs: Any, runner: Runner, inputs: Inputs) -> Trial:
    """Build ``w`` with ``knobs``, time it on ``runner``, check it against the reference."""
    try:
        kernel = lower_group(w.group, w.target, name="kernel", knobs=knobs)
    except KnobError as e:
        return Trial(knobs, error=f"invalid: {e}")
    except Exception as e:          # a schedule the template cannot apply: one bad trial
        return Trial(knobs, error=f"schedule failed: {type(e).__name__}: {e}")
    if inputs.baseline is None:
        inputs.baseline = lower_group(w.group, w.target, name="baseline")
    task = task_for(kernel, w.target, inputs, runner)
    task.baseline = task_for(inputs.baseline, w.target, inputs, runner)
    task.baseline_key = w.key
    status, payload = runner.run(task)
    if status != "ok":
        return Trial(knobs, error=payload)
    time_ms, default_ms, ratio, outputs = payload
    wrong = outputs_match(outputs, inputs.reference)
    if wrong:
        return Trial(knobs, error=f"wrong result: {wrong}")
    return Trial(knobs, time_ms=time_ms, vs_default=ratio, default_ms=default_ms)


# -- the worker process -------------------------------------------------------------------------
_UPLOADS = itertools.count()


PAIRS = 4          # alternating rounds of candidate and default per trial


def _worker_main(conn: Any) -> None:
    sessions: dict[str, Any] = {}       # RPC sessions, and compiled baselines
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        try:
            conn.send(("ok", _build_and_time(task, sessions)))
        except Exception as e:          # reported as this trial's error; the worker lives on
            conn.send(("error", f"{type(e).__name__}: {str(e).strip().splitlines()[-1]}"))


def _load(task: Task, sessions: dict[str, Any]) -> tuple[Any, Any]:
    """Compile ``task``'s kernel; the module and device it runs on (here, or uploaded)."""
    import tempfile
    from pathlib import Path

    import tvm
    from tvm.support import cc

    lib = tvm.compile(tvm.IRModule({task.name: task.func}), target=task.target.tvm())
    if task.rpc is None:
        return lib.mod, tvm.cpu()
    from tvm import rpc
    if task.rpc not in sessions:
        host, port = task.rpc.rsplit(":", 1)
        sessions[task.rpc] = rpc.connect(host, int(port))
    remote = sessions[task.rpc]
    # a fresh name per upload: the server's dlopen would hand back a library of the same
    # path it loaded before (now overwritten under it: a segfault)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"kiln_tune_{os.getpid()}_{next(_UPLOADS)}.so"
        fcompile = cc.cross_compiler(ARM_CC) if task.target.is_arm else None
        lib.export_library(str(path), fcompile=fcompile)
        remote.upload(str(path))
    return remote.load_module(path.name), remote.cpu()


def _timer(task: Task, mod: Any, dev: Any) -> tuple[Any, list[Any]]:
    """A function timing one run of repeats (seconds, the fastest), and the outputs."""
    import tvm
    args = [tvm.runtime.tensor(a, dev) for a in task.args]
    outs = [tvm.runtime.empty(shape, dtype, dev) for shape, dtype in task.out_shapes]
    mod[task.name](*args, *outs)                                    # warm-up
    ev = mod.time_evaluator(task.name, dev, number=1, repeat=task.repeat,
                            min_repeat_ms=task.min_repeat_ms)
    return (lambda: min(ev(*args, *outs).results)), outs


def _build_and_time(task: Task, sessions: dict[str, Any]
                    ) -> tuple[float, float | None, float | None, list[np.ndarray]]:
    """The candidate's time (ms), the default's, their median ratio, and the outputs."""
    if task.threads is not None:
        from kiln.codegen.library import set_num_threads
        set_num_threads(task.threads)
    mod, dev = _load(task, sessions)
    time_it, outs = _timer(task, mod, dev)
    if task.baseline is None:
        return time_it() * 1e3, None, None, [o.numpy() for o in outs]
    key = f"baseline:{task.baseline_key}:{task.rpc}"
    if key not in sessions:
        sessions[key] = _timer(task.baseline, *_load(task.baseline, sessions))[0]
    time_base = sessions[key]
    pairs = [(time_it(), time_base()) for _ in range(PAIRS)]
    ratio = float(np.median([c / b for c, b in pairs]))
    return (min(c for c, _ in pairs) * 1e3, min(b for _, b in pairs) * 1e3, ratio,
            [o.numpy() for o in outs])


class Runner:
    """Runs tasks in a worker process, one at a time: a crash or a hang past ``timeout``
    seconds is that task's error, and a fresh worker takes the next."""

    rpc: str | None = None

    def __init__(self, timeout: float = 60.0, threads: int | None = None) -> None:
        self.timeout = timeout
        self.threads = threads
        self._ctx = multiprocessing.get_context("spawn")
        self._proc: Any = None
        self._conn: Any = None

    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_worker_main, args=(child,), daemon=True)
        proc.start()                # (raises in a script without an ``if __name__`` guard)
        child.close()
        self._proc, self._conn = proc, parent

    def _stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.join()
            self._proc = None

    def run(self, task: Task) -> tuple[str, Any]:
        if self._proc is None or not self._proc.is_alive():
            self._start()
        try:
            self._conn.send(task)
            if not self._conn.poll(self.timeout):
                self._stop()
                return "error", f"timed out after {self.timeout:g} s (worker killed)"
            return self._conn.recv()
        except (EOFError, OSError):
            self._proc.join(5)
            code = self._proc.exitcode
            self._stop()
            return "error", f"the worker crashed (exit code {code})"

    def close(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            try:
                self._conn.send(None)
                self._proc.join(5)
            except OSError:
                pass
        self._stop()

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalRunner(Runner):
    """Times kernels on this machine, on ``threads`` threads (default: every core)."""


class RpcRunner(Runner):
    """Builds here (cross-compiling for arm targets) and times on the device behind a TVM RPC
    server at ``address`` ("host:port"; on the device: ``python -m tvm.exec.rpc_server``)."""

    def __init__(self, address: str, timeout: float = 120.0) -> None:
        super().__init__(timeout)
        self.rpc = address
