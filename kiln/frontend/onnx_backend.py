"""ONNX's backend API (``onnx.backend.base``) on kiln, and the node-test expectations tool.

``KilnBackend`` is what ONNX's backend test runner and other ONNX tooling call: ``prepare``
compiles a model once with ``kiln.compile(model, target="x86")``, and the returned rep runs it
as often as wanted, returning the outputs as NumPy arrays in graph-output order::

    import numpy as np, onnx
    from kiln.frontend.onnx_backend import KilnBackend

    model = onnx.load("model.onnx")
    rep = KilnBackend.prepare(model)            # compiles; raises a KilnError if kiln cannot
    outputs = rep.run([np.ones((1, 3, 224, 224), np.float32)])   # inputs in graph order
    outputs = rep.run({"input": x})                               # or by name
    probs = outputs["probs"]                    # by output name, or outputs[0]
    outputs = KilnBackend.run_model(model, [x]) # prepare + run, once

The same module keeps ``tests/frontend/onnx_node_expectations.txt``, the list of ONNX node tests
(``onnx.backend.test``) that kiln does not pass, with the reason for each::

    python -m kiln.frontend.onnx_backend \
        --write-expectations tests/frontend/onnx_node_expectations.txt
    python -m kiln.frontend.onnx_backend --run-case test_abs       # one case, with its verdict
    python -m kiln.frontend.onnx_backend --check resize            # cases named *resize*

It runs every case in worker processes (one per core by default) with a time limit per case,
so a case that crashes or hangs kiln is recorded as such instead of ending the run.

This module sits above the whole compiler (like the CLI): it is a driver, and nothing inside
kiln imports it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter, deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep, Device, DeviceType, namedtupledict

from kiln.codegen.library import Library, set_num_threads
from kiln.compiler import compile as kiln_compile
from kiln.errors import ConstantInputError, InputError, KilnError, first_line

# -- the backend --------------------------------------------------------------------------------


class KilnRep(BackendRep):
    """A model compiled by kiln, ready to run on inputs given in graph order or by name.

    kiln compiles shapes, axes, pads and the like as constants. When the model feeds one of
    them as a graph input (ReduceSum's axes, Reshape's shape, Resize's scales), kiln cannot
    compile it ahead of the values, so the rep compiles at ``run`` with those inputs bound to
    the values given (``kiln.compile(..., constants=...)``) and keeps one library per set of
    such values; ``bound`` names those inputs. Every other input stays a run-time input.
    """

    def __init__(self, model: onnx.ModelProto, target: Any,
                 input_shapes: Mapping[str, Sequence[Any]] | None) -> None:
        self.model = model
        self._target, self._input_shapes = target, input_shapes
        initializers = {t.name for t in model.graph.initializer}
        # the model's inputs (initializers excluded), in order: kiln may drop one no node reads
        self.input_names = [vi.name for vi in model.graph.input if vi.name not in initializers]
        self.output_names = [vi.name for vi in model.graph.output]
        self._outputs = namedtupledict("Outputs", self.output_names)
        self.bound: list[str] = []   # inputs compiled in as constants, as kiln asked for them
        self._specialized: dict[tuple, Library] = {}
        self.library: Library | None = None   # the library, when no input had to be bound
        try:
            self.library = self._compile({})
        except ConstantInputError as e:   # compile at run time, when the value is known
            self.bound.append(e.input_name)

    def _compile(self, constants: Mapping[str, np.ndarray]) -> Library:
        return kiln_compile(self.model, self._target, self._input_shapes, constants or None)

    def _library_for(self, feeds: Mapping[str, Any]) -> Library:
        """The library specialized to the values of the bound inputs in ``feeds``."""
        while True:
            missing = [n for n in self.bound if n not in feeds]
            if missing:
                raise InputError("missing input(s) " + ", ".join(map(repr, missing)))
            constants = {n: np.asarray(feeds[n]) for n in self.bound}
            key = tuple((n, a.dtype.str, a.shape, a.tobytes()) for n, a in constants.items())
            if key in self._specialized:
                return self._specialized[key]
            try:
                library = self._compile(constants)
            except ConstantInputError as e:   # a further input kiln needs the value of
                if e.input_name in self.bound or e.input_name not in self.input_names:
                    raise
                self.bound.append(e.input_name)
                continue
            self._specialized[key] = library
            return library

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        """Run on ``inputs`` (a list in graph-input order, a dict by name, or one array);
        returns a namedtuple of NumPy arrays that also takes output names as keys."""
        if kwargs:
            raise KilnError(f"KilnRep.run takes no options, got {sorted(kwargs)}")
        feeds = self._feeds(inputs)
        unknown = sorted(set(feeds) - set(self.input_names))
        if unknown:
            raise InputError(f"unknown input(s) {', '.join(map(repr, unknown))} (the model's "
                             f"inputs are {', '.join(map(repr, self.input_names))})")
        library = self.library if self.library is not None else self._library_for(feeds)
        wanted = {spec.name for spec in library.inputs}
        outputs = library(**{k: v for k, v in feeds.items() if k in wanted})
        return self._outputs(*outputs)

    def _feeds(self, inputs: Any) -> dict[str, Any]:
        if isinstance(inputs, Mapping):
            return dict(inputs)
        if isinstance(inputs, np.ndarray):
            inputs = [inputs]
        inputs = list(inputs)
        if len(inputs) != len(self.input_names):
            raise InputError(f"the model takes {len(self.input_names)} input(s) "
                             f"({', '.join(map(repr, self.input_names))}), got {len(inputs)}")
        return dict(zip(self.input_names, inputs, strict=True))


class KilnBackend(Backend):
    """ONNX's backend interface on kiln: CPU only, every model compiled ahead of running."""

    @classmethod
    def supports_device(cls, device: str) -> bool:
        """Only ``"CPU"``: kiln's ONNX backend compiles for this machine's x86 CPU."""
        try:
            return Device(device).type == DeviceType.CPU
        except (AttributeError, ValueError):   # a device name onnx does not know
            return False

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> KilnRep:
        """Compile ``model`` for ``kwargs.get("target", "x86")``; ``input_shapes`` (a dict)
        fixes dims the model leaves symbolic. Raises ``KilnError`` (``ModelError`` for what
        kiln cannot import). A model that feeds kiln's compile-time values (shapes, axes) as
        inputs compiles at ``run``, bound to their values (see ``KilnRep``)."""
        if not cls.supports_device(device):
            raise KilnError(f"kiln's ONNX backend runs on CPU only, not on {device!r}")
        options = {"target": "x86", "input_shapes": None}
        unknown = sorted(set(kwargs) - set(options))
        if unknown:
            raise KilnError(f"KilnBackend.prepare: unknown option(s) {unknown} (it takes "
                            f"{sorted(options)})")
        options.update(kwargs)
        return KilnRep(model, options["target"], options["input_shapes"])

    @classmethod
    def run_model(cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU",
                  **kwargs: Any) -> tuple[np.ndarray, ...]:
        """Compile ``model`` and run it once on ``inputs``."""
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs: Any, device: str = "CPU",
                 outputs_info: Sequence[tuple[np.dtype, tuple[int, ...]]] | None = None,
                 **kwargs: Any) -> tuple[np.ndarray, ...]:
        """Run one node on NumPy ``inputs`` (in the node's input order) by compiling a model
        of that node alone; ``opset_version`` picks the opset (default: onnx's newest)."""
        opset = kwargs.pop("opset_version", onnx.defs.onnx_opset_version())
        arrays = [np.asarray(a) for a in inputs]
        names = [n for n in node.input if n]
        if len(names) != len(arrays):
            raise InputError(f"node {node.name or node.op_type} takes {len(names)} input(s), "
                             f"got {len(arrays)}")
        graph_inputs = [onnx.helper.make_tensor_value_info(
            n, onnx.helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
            for n, a in zip(names, arrays, strict=True)]
        graph_outputs = [onnx.helper.make_empty_tensor_value_info(n) for n in node.output if n]
        if outputs_info is not None:
            graph_outputs = [onnx.helper.make_tensor_value_info(
                n, onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dt)), shape)
                for n, (dt, shape) in zip(node.output, outputs_info, strict=True)]
        graph = onnx.helper.make_graph([node], "node", graph_inputs, graph_outputs)
        model = onnx.helper.make_model(graph, opset_imports=[
            onnx.helper.make_opsetid(node.domain, opset)])
        return cls.prepare(model, device, **kwargs).run(arrays)


# -- running ONNX's node tests ------------------------------------------------------------------
# The categories issue 3 accepts as out of scope ("excluded"); decided from the ops a case uses
# and the types of its inputs and outputs. Everything else that does not pass "fails".
_TRAINING_OPS = {"SoftmaxCrossEntropyLoss", "NegativeLogLikelihoodLoss"}
_TRAINING_DOMAINS = {"ai.onnx.preview.training"}
_RANDOM_OPS = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
               "Bernoulli", "Multinomial"}
_STRING_OPS = {"StringNormalizer", "StringConcat", "StringSplit", "RegexFullMatch"}
_SEQUENCE_OPS = {"SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase",
                 "SequenceInsert", "SequenceLength", "SequenceMap", "SplitToSequence",
                 "ConcatFromSequence"}
_OPTIONAL_OPS = {"Optional", "OptionalGetElement", "OptionalHasElement"}
# a case whose reason starts so must run in a subprocess: in-process it would end the run
ISOLATE_PREFIXES = ("crash:", "timeout:")
EXPECTATIONS_HEADER = """\
# ONNX backend node tests (onnx.backend.test, onnx {onnx}) that kiln does not pass.
# One line per case: NAME  excluded|fails  REASON. Cases not listed must pass.
# excluded: out of scope for issue 3 (training, random, string, sequence, optional); skipped.
# fails:    not supported yet; xfail(strict=True): a case that starts passing fails the suite
#           until this file is regenerated:
#   python -m kiln.frontend.onnx_backend --write-expectations {path}
# At the last regeneration: {passed} passed, {fails} fail, {excluded} excluded of {total}
# ({percent:.1f}% pass). Reasons starting with crash: or timeout: run in a subprocess.
"""


@dataclass(frozen=True)
class Verdict:
    """How one node test went: ``status`` is passed, fails or excluded; ``seconds`` to compile
    and run it (nearly all of it compiling); ``bound``: inputs compiled in as constants."""
    name: str
    status: str
    reason: str = ""
    seconds: float = 0.0
    bound: tuple[str, ...] = ()


def node_test_cases() -> dict[str, Any]:
    """ONNX's node test cases (``onnx.backend.test.case.test_case.TestCase``) by name."""
    from onnx.backend.test.loader import load_node_model_tests  # generates the cases: seconds
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the case generators overflow casts on purpose
        return {case.name: case for case in load_node_model_tests()}


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            subgraphs = [attr.g] if attr.HasField("g") else list(attr.graphs)
            for sub in subgraphs:
                yield from _graphs(sub)


def excluded_category(model: onnx.ModelProto) -> str | None:
    """The out-of-scope category of ``model`` (and the ops or types that put it there), or
    None when it is in scope."""
    nodes = [n for g in _graphs(model.graph) for n in g.node]
    ops = {n.op_type for n in nodes}

    def named(kind: str, found: set[str]) -> str:
        return f"{kind}: {', '.join(sorted(found))}"

    training = {f"{n.domain}.{n.op_type}" for n in nodes if n.domain in _TRAINING_DOMAINS}
    training |= ops & _TRAINING_OPS
    training |= {"BatchNormalization(training_mode=1)" for n in nodes
                 if n.op_type == "BatchNormalization"
                 and any(a.name == "training_mode" and a.i for a in n.attribute)}
    if training:
        return named("training", training)
    random = ops & _RANDOM_OPS
    random |= {"Dropout(training_mode)" for n in nodes
               if n.op_type == "Dropout" and len(n.input) > 2 and n.input[2]}
    if random:
        return named("random", random)
    values = [*model.graph.input, *model.graph.output]
    kinds = {vi.type.WhichOneof("value") for vi in values}
    if ops & _SEQUENCE_OPS or "sequence_type" in kinds:
        return named("sequence", (ops & _SEQUENCE_OPS) or {"sequence-typed inputs/outputs"})
    if ops & _OPTIONAL_OPS or "optional_type" in kinds:
        return named("optional", (ops & _OPTIONAL_OPS) or {"optional-typed inputs/outputs"})
    strings = {vi.name for vi in values if vi.type.HasField("tensor_type")
               and vi.type.tensor_type.elem_type == onnx.TensorProto.STRING}
    if ops & _STRING_OPS or strings:
        return named("string", (ops & _STRING_OPS) or {"string tensors"})
    return None


def _as_array(x: Any) -> Any:
    return onnx.numpy_helper.to_array(x) if isinstance(x, onnx.TensorProto) else x


def _mismatch(expected: Sequence[Any], got: Sequence[Any], rtol: float, atol: float) -> str:
    """One line on how ``got`` differs from ``expected`` (after onnx's comparison failed)."""
    if len(got) != len(expected):
        return f"wrong output count: {len(got)}, expected {len(expected)}"
    for i, (out, ref) in enumerate(zip(got, expected, strict=True)):
        out, ref = np.asarray(out), np.asarray(ref)
        if out.shape != ref.shape:
            return f"wrong shape of output {i}: {list(out.shape)}, expected {list(ref.shape)}"
        if out.dtype != ref.dtype:
            return f"wrong dtype of output {i}: {out.dtype}, expected {ref.dtype}"
        if ref.dtype == object or ref.dtype.kind in "SUV":
            if not np.array_equal(out, ref):
                return f"wrong values in output {i}"
            continue
        a, b = out.astype(np.float64), ref.astype(np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            close = np.isclose(a, b, rtol=rtol, atol=atol, equal_nan=True)
            if close.all():
                continue
            err = np.abs(a - b)[~close]
        worst = float(np.nan_to_num(err, nan=np.inf).max())
        return (f"wrong values: max error {worst:.3g} in output {i} ({int((~close).sum())} of "
                f"{close.size} elements off; rtol {rtol:g}, atol {atol:g})")
    return "wrong outputs"


def _error_reason(e: BaseException) -> str:
    line = first_line(e)
    return line if isinstance(e, KilnError) else f"{type(e).__name__}: {line}"


def run_case(case: Any) -> Verdict:
    """Compile and run one node test case as onnx's own runner does (compile once, every data
    set, ``Runner.assert_similar_outputs`` with the case's rtol/atol) and say how it went."""
    from onnx.backend.test.runner import Runner
    start = time.perf_counter()

    def verdict(status: str, reason: str = "", rep: KilnRep | None = None) -> Verdict:
        bound = tuple(rep.bound) if rep is not None else ()
        return Verdict(case.name, status, reason, time.perf_counter() - start, bound)

    try:
        rep = KilnBackend.prepare(case.model)
    except Exception as e:   # kiln's errors, and kiln's bugs: both are the case's reason
        return verdict("fails", _error_reason(e))
    for inputs, expected in case.data_sets:
        expected = [_as_array(x) for x in expected]
        try:
            got = rep.run([_as_array(x) for x in inputs])
        except Exception as e:
            return verdict("fails", _error_reason(e), rep)
        try:
            Runner.assert_similar_outputs(expected, got, rtol=case.rtol, atol=case.atol)
        except (AssertionError, TypeError):
            return verdict("fails", _mismatch(expected, got, case.rtol, case.atol), rep)
    return verdict("passed", "", rep)


def _one_line(text: str, limit: int = 240) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[:limit - 3] + "..."


# -- the parallel runner ------------------------------------------------------------------------
def _worker(conn: Connection) -> None:
    """A worker process: load the cases, then run the ones the parent sends, one at a time."""
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)   # TVM's and the case generators' chatter would interleave across workers
    os.dup2(null, 2)
    set_num_threads(1)  # one worker per core already keeps every core busy
    warnings.simplefilter("ignore")
    cases = node_test_cases()
    conn.send("ready")
    while (name := conn.recv()) is not None:
        conn.send(run_case(cases[name]))


@dataclass
class _Slot:
    process: Any
    conn: Connection
    case: str | None = None
    started: float = 0.0
    ready: bool = False


def _start(ctx: Any) -> _Slot:
    parent, child = ctx.Pipe()
    process = ctx.Process(target=_worker, args=(child,), daemon=True)
    process.start()
    child.close()
    return _Slot(process, parent)


def _death(process: Any) -> str:
    process.join(5)
    code = process.exitcode
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"crash: killed by {signal.Signals(-code).name}"
        return f"crash: killed by signal {-code}"
    return f"crash: the process exited with status {code}"


def run_all(names: Sequence[str], jobs: int, timeout_s: float,
            progress: bool = True) -> list[Verdict]:
    """Run the named node tests in ``jobs`` worker processes; a case that crashes its worker
    or runs past ``timeout_s`` gets a crash:/timeout: verdict and a fresh worker."""
    ctx = mp.get_context("spawn")   # no fork of a process whose TVM may hold threads
    pending, verdicts = deque(names), []
    shown, tty, begun = 0, sys.stderr.isatty(), time.monotonic()
    slots = [_start(ctx) for _ in range(min(jobs, len(names)))]
    try:
        while pending or any(s.case for s in slots):
            for s in slots:
                if s.ready and s.case is None and pending:
                    s.case, s.started = pending.popleft(), time.monotonic()
                    s.conn.send(s.case)
            for conn in wait([s.conn for s in slots], timeout=1.0):
                s = next(s for s in slots if s.conn is conn)
                try:
                    msg = conn.recv()
                except EOFError:    # the worker died: blame its case, start another
                    if s.case is None:
                        raise KilnError(f"a node-test worker died while starting: "
                                        f"{_death(s.process)}") from None
                    verdicts.append(Verdict(s.case, "fails", _death(s.process)))
                    slots[slots.index(s)] = _start(ctx)
                    continue
                if msg == "ready":
                    s.ready = True
                    continue
                verdicts.append(msg)
                s.case = None
            now = time.monotonic()
            for i, s in enumerate(slots):
                if s.case is not None and now - s.started > timeout_s:
                    s.process.kill()
                    s.process.join()
                    verdicts.append(Verdict(s.case, "fails", f"timeout: over {timeout_s:g} s"))
                    slots[i] = _start(ctx)
            if progress and len(verdicts) != shown and (tty or len(verdicts) % 100 == 0):
                shown = len(verdicts)
                print(f"{shown}/{len(names)} cases run in {now - begun:.0f} s",
                      end="\r" if tty else "\n", file=sys.stderr, flush=True)
    finally:
        for s in slots:
            with contextlib.suppress(OSError, BrokenPipeError):
                s.conn.send(None)
        for s in slots:
            s.process.join(5)
            if s.process.is_alive():
                s.process.kill()
    if progress and tty:
        print(file=sys.stderr)
    return verdicts


# -- the expectations file ----------------------------------------------------------------------
def read_expectations(path: str | os.PathLike) -> dict[str, tuple[str, str]]:
    """``{case name: (excluded|fails, reason)}`` from an expectations file."""
    out: dict[str, tuple[str, str]] = {}
    for lineno, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 2)
        if len(parts) < 2 or parts[1] not in ("excluded", "fails"):
            raise KilnError(f"{path}: line {lineno}: expected NAME excluded|fails REASON")
        out[parts[0]] = (parts[1], parts[2] if len(parts) > 2 else "")
    return out


def classify(verdicts: Sequence[Verdict], cases: Mapping[str, Any]) -> list[Verdict]:
    """Failing cases of an out-of-scope category become excluded, with that category."""
    out = []
    for v in verdicts:
        category = excluded_category(cases[v.name].model) if v.status == "fails" else None
        out.append(Verdict(v.name, "excluded", category, v.seconds) if category else v)
    return out


def write_expectations(path: str | os.PathLike, verdicts: Sequence[Verdict]) -> str:
    """Write the file; returns its summary line."""
    listed = sorted((v for v in verdicts if v.status != "passed"), key=lambda v: v.name)
    counts = {s: sum(v.status == s for v in verdicts) for s in ("passed", "fails", "excluded")}
    total = len(verdicts)
    percent = 100.0 * counts["passed"] / total if total else 0.0
    width = max((len(v.name) for v in listed), default=0)
    lines = [EXPECTATIONS_HEADER.format(onnx=onnx.__version__, path=path, total=total,
                                        percent=percent, **counts)]
    lines += [f"{v.name:<{width}}  {v.status:<8}  {_one_line(v.reason)}\n" for v in listed]
    Path(path).write_text("".join(lines))
    return (f"{counts['passed']} passed, {counts['fails']} fail, {counts['excluded']} excluded "
            f"of {total} ({percent:.1f}% pass)")


def save_case(case: Any, directory: str | os.PathLike) -> None:
    """Write a node test case to ``directory`` (model.onnx, data.npz, case.json)."""
    directory = Path(directory)
    directory.joinpath("model.onnx").write_bytes(case.model.SerializeToString())
    arrays, sets = {}, []
    for k, (inputs, expected) in enumerate(case.data_sets):
        arrays.update({f"{k}.in.{i}": _as_array(x) for i, x in enumerate(inputs)})
        arrays.update({f"{k}.out.{i}": _as_array(x) for i, x in enumerate(expected)})
        sets.append([len(inputs), len(expected)])
    np.savez(directory / "data.npz", **arrays)
    meta = {"name": case.name, "rtol": case.rtol, "atol": case.atol, "sets": sets}
    directory.joinpath("case.json").write_text(json.dumps(meta))


def load_case(directory: str | os.PathLike) -> Any:
    """A case written by ``save_case``, with the fields ``run_case`` reads."""
    from onnx.backend.test.case.test_case import TestCase
    directory = Path(directory)
    meta = json.loads(directory.joinpath("case.json").read_text())
    with np.load(directory / "data.npz") as data:
        sets = [([data[f"{k}.in.{i}"] for i in range(n_in)],
                 [data[f"{k}.out.{i}"] for i in range(n_out)])
                for k, (n_in, n_out) in enumerate(meta["sets"])]
    model = onnx.load(str(directory / "model.onnx"))
    return TestCase(name=meta["name"], model_name=meta["name"], url=None, model_dir=None,
                    model=model, data_sets=sets, kind="node", rtol=meta["rtol"],
                    atol=meta["atol"])


def run_case_isolated(case: Any, timeout_s: float = 60.0) -> Verdict:
    """Run one node test case in a subprocess, for cases that crash or hang kiln: a crash
    or running past ``timeout_s`` is the verdict, not the end of the calling process."""
    with tempfile.TemporaryDirectory(prefix="kiln-node-case-") as tmp:
        save_case(case, tmp)
        cmd = [sys.executable, "-m", "kiln.frontend.onnx_backend", "--run-case-dir", tmp]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return Verdict(case.name, "fails", f"timeout: over {timeout_s:g} s")
    lines = proc.stdout.strip().splitlines()
    if proc.returncode < 0:
        return Verdict(case.name, "fails",
                       f"crash: killed by {signal.Signals(-proc.returncode).name}")
    if proc.returncode == 0 and lines and lines[-1] == "passed":
        return Verdict(case.name, "passed")
    reason = lines[-1] if lines else first_line(Exception(proc.stderr.strip()[-500:]))
    return Verdict(case.name, "fails", reason)


def _summary(verdicts: Sequence[Verdict], wall_s: float) -> str:
    ran = sorted(verdicts, key=lambda v: -v.seconds)
    total = sum(v.seconds for v in ran)
    passed = [v for v in ran if v.status == "passed"]
    slowest = ", ".join(f"{v.name} {v.seconds:.1f} s" for v in ran[:8])
    mean = sum(v.seconds for v in passed) / len(passed) if passed else 0.0
    bound = sum(bool(v.bound) for v in passed)
    return (f"ran {len(verdicts)} cases in {wall_s:.0f} s; {total:.0f} s compiling and running "
            f"in all, {mean:.2f} s per passing case; {bound} passed with inputs compiled in as "
            f"constants; slowest: {slowest}")


def _broken(verdicts: Sequence[Verdict]) -> str:
    """Why the run says more about the checkout than about kiln's op coverage (the same
    internal error in most cases: a file half-edited, an import cycle), or ""."""
    internal = Counter(v.reason for v in verdicts if v.status == "fails" and ": " in v.reason
                       and v.reason.split(":")[0].endswith(("Error", "Exception")))
    if internal:
        reason, n = internal.most_common(1)[0]
        if n > len(verdicts) // 4:
            return f"{n} of {len(verdicts)} cases fail with {reason!r}; fix that first"
    return ""


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m kiln.frontend.onnx_backend``: regenerate the expectations, or run one case."""
    p = argparse.ArgumentParser(prog="python -m kiln.frontend.onnx_backend",
                                description="Run ONNX's node tests through kiln.")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--write-expectations", metavar="FILE",
                      help="run every node test and rewrite FILE with the ones that do not pass")
    what.add_argument("--run-case", metavar="NAME", help="run one node test, print its verdict")
    what.add_argument("--check", metavar="SUBSTRING",
                      help="run the node tests whose name holds SUBSTRING, print each verdict")
    what.add_argument("--run-case-dir", metavar="DIR", help=argparse.SUPPRESS)  # isolated runs
    p.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1,
                   help="worker processes (default: one per core)")
    p.add_argument("--timeout", type=float, default=120.0, metavar="S",
                   help="seconds one case may take (default: 120)")
    args = p.parse_args(argv)
    if args.run_case_dir:
        v = run_case(load_case(args.run_case_dir))
        print("passed" if v.status == "passed" else _one_line(v.reason))
        return 0 if v.status == "passed" else 1
    cases = node_test_cases()
    if args.run_case:
        if args.run_case not in cases:
            print(f"no node test named {args.run_case!r}", file=sys.stderr)
            return 2
        v = run_case(cases[args.run_case])
        print("passed" if v.status == "passed" else _one_line(v.reason))
        return 0 if v.status == "passed" else 1
    names = sorted(n for n in cases if args.check is None or args.check in n)
    start = time.perf_counter()
    verdicts = classify(run_all(names, max(1, args.jobs), args.timeout), cases)
    print(_summary(verdicts, time.perf_counter() - start))
    if args.check is not None:
        for v in sorted(verdicts, key=lambda v: v.name):
            bound = f"  (bound: {', '.join(v.bound)})" if v.bound else ""
            print(f"{v.name}  {v.status}  {v.seconds:.2f}s  {_one_line(v.reason)}{bound}")
        return 0
    broken = _broken(verdicts)
    if broken:
        print(f"not writing {args.write_expectations}: {broken}", file=sys.stderr)
        return 1
    print(f"{args.write_expectations}: {write_expectations(args.write_expectations, verdicts)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
