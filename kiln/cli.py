"""The ``kiln`` command line: compile a model, run a compiled library, print any compile stage,
write an HTML report, bisect a numerics bug, tune.

    kiln compile model.onnx -o model.so --input-shape input_ids=1,128
    kiln run model.so --input input_ids=ids.npy --bench --profile
    kiln inspect model.onnx --stage scheduled --group fused_dense_add_gelu
    kiln report model.onnx -o report.html
    kiln debug model.onnx

A model is an ONNX file or a Python file defining ``build() -> kiln.Graph``. A user error (any
``KilnError``, a missing or unreadable file, a malformed argument) prints one line,
``kiln: error: ...``, and exits with status 2. Any other exception is a bug in kiln: it prints
one line too, ``kiln: internal error: ...`` with a request to report it, and exits with status
1 (``KILN_TRACEBACK=1`` shows the traceback instead).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NoReturn

import numpy as np
import tvm

import kiln
from kiln.codegen.library import KernelTime, Library, median_ms
from kiln.debug import TOLERANCE, bisect
from kiln.errors import KilnError, first_line, shorten
from kiln.ir.graph import Graph
from kiln.ir.verify import human_bytes
from kiln.stages import STAGES, highlight, inspect
from kiln.target import TARGET_NAMES, get_target
from kiln.testing import random_inputs

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1
TRACEBACK_ENV = "KILN_TRACEBACK"


class UsageError(KilnError):
    """A mistake on the command line or in a file named on it."""


# -- argument parsing ---------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """Raises instead of printing usage and exiting, so that a usage error ends like every
    other user error: one line on stderr, status 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _shape_arg(text: str) -> tuple[str, tuple[int, ...]]:
    name, sep, dims = text.partition("=")
    try:
        shape = tuple(int(d) for d in dims.split(","))
    except ValueError:
        shape = ()
    if not sep or not name or not shape or any(d <= 0 for d in shape):
        raise argparse.ArgumentTypeError(
            f"expected NAME=D1,D2,... with positive integer dims, got {text!r}")
    return name, shape


def _input_arg(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=FILE.npy, got {text!r}")
    return name, path


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _duration(text: str) -> float:
    """Seconds from "90", "90s", "10m" or "1h"."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not m or float(m.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (90s, 10m, 1h)")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL",
                   help="an ONNX model (.onnx) or a Python file defining build() -> kiln.Graph")
    p.add_argument("--target", default="x86",
                   help=f"one of {', '.join(TARGET_NAMES)} (default: x86, this CPU)")
    p.add_argument("--input-shape", action="append", type=_shape_arg, default=[],
                   metavar="NAME=D1,D2,...",
                   help="fix the shape of an input whose dims the model leaves symbolic "
                        "(repeatable)")


def _add_inputs(p: argparse.ArgumentParser, what: str, random_default: bool = False) -> None:
    default = "; default: random" if random_default else ""
    p.add_argument("-i", "--input", action="append", type=_input_arg, default=[],
                   metavar="NAME=FILE.npy",
                   help=f"{what}, read from a .npy file (repeatable{default})")


def _add_tuning_db(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tuning-db", metavar="FILE.jsonl",
                   help="apply the best knobs 'kiln tune' recorded here (defaults elsewhere)")


def build_parser() -> argparse.ArgumentParser:
    """The ``kiln`` argument parser, with one subparser per command."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(prog="kiln", formatter_class=fmt,
                     description="kiln, a model compiler on Apache TVM: compile a model (an "
                                 ".onnx file, or a\n.py file defining build() -> kiln.Graph) to "
                                 "a shared library, run it, or print\nany stage of its "
                                 "compilation. Run 'kiln COMMAND --help' for its options.")
    parser.add_argument("--version", action="version",
                        version=f"kiln {kiln.__version__} (TVM {tvm.__version__})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("compile", formatter_class=fmt, help="compile a model to a .so library",
                       description="Compile MODEL for a target and write it as a shared "
                                   "library that 'kiln run'\nand kiln.load() read.",
                       epilog="example:\n  kiln compile bert.onnx -o bert.so "
                              "--input-shape input_ids=1,128")
    _add_model_args(p)
    p.add_argument("-o", "--output", required=True, metavar="LIB.so",
                   help="where to write the library")
    _add_tuning_db(p)
    p.add_argument("--cache", nargs="?", const=True, default=False, metavar="DIR",
                   help="reuse the library from kiln's compile cache when model, target and "
                        "versions match, else compile and keep it there (DIR, default: "
                        "$KILN_CACHE_DIR or ~/.cache/kiln)")
    p.set_defaults(run=_cmd_compile)

    p = sub.add_parser("tune", formatter_class=fmt, help="tune the schedule knobs of a model",
                       description="Search the schedule knobs of each distinct kernel of "
                                   "MODEL, measuring every\ntrial in a worker process (here, or "
                                   "on a device over TVM RPC) and appending it\nto the database "
                                   "at once; rerunning resumes. Prints default vs tuned time\n"
                                   "per workload.",
                       epilog="example:\n  kiln tune bert.onnx --trials 64 --time-budget 10m "
                              "--db bert.jsonl\n  kiln compile bert.onnx -o bert.so "
                              "--tuning-db bert.jsonl")
    _add_model_args(p)
    p.add_argument("--trials", type=_positive_int, default=64, metavar="N",
                   help="trials per workload, those already in the database included "
                        "(default: 64)")
    p.add_argument("--time-budget", type=_duration, metavar="T",
                   help="stop after this long in all (90s, 10m, 1h; default: no limit)")
    p.add_argument("--db", required=True, metavar="FILE.jsonl", help="the tuning database")
    p.add_argument("--rpc", metavar="HOST:PORT[,...]",
                   help="measure on the device behind this TVM RPC server "
                        "(python -m tvm.exec.rpc_server there); several: one trial on each "
                        "at once")
    p.add_argument("--timeout", type=_duration, default=60.0, metavar="T",
                   help="a trial's build and run past this is killed (default: 60s)")
    p.add_argument("--threads", type=_positive_int, metavar="N",
                   help="time kernels on N threads (default: every core; the library runs "
                        "on what kiln.set_num_threads / TVM_NUM_THREADS say)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_cmd_tune)

    p = sub.add_parser("run", formatter_class=fmt, help="run a compiled library on .npy inputs",
                       description="Run a library written by 'kiln compile' on inputs read "
                                   "from .npy files and\nsummarize each output.",
                       epilog="example:\n  kiln run bert.so --input input_ids=ids.npy "
                              "--output-dir out/ --bench")
    p.add_argument("library", metavar="LIB.so", help="a library written by 'kiln compile'")
    _add_inputs(p, "an input")
    p.add_argument("--output-dir", metavar="DIR", help="write each output to DIR/NAME.npy")
    p.add_argument("--bench", action="store_true",
                   help="also time the model and print the median latency")
    p.add_argument("--number", type=_positive_int, default=10, metavar="N",
                   help="--bench: runs averaged per sample (default: 10)")
    p.add_argument("--repeat", type=_positive_int, default=20, metavar="N",
                   help="--bench: samples the median is taken over (default: 20)")
    p.add_argument("--profile", action="store_true",
                   help="also time each kernel alone on the arguments it gets in a run, "
                        "and print them slowest first")
    p.set_defaults(run=_cmd_run)

    p = sub.add_parser("inspect", formatter_class=fmt, help="print one stage of compiling a model",
                       description="Print one stage of compiling MODEL: the imported graph "
                                   "(graph), after the graph\npasses (simplified), the fused "
                                   "groups (fused); per kernel its tensor\nexpressions (te), "
                                   "its TIR before scheduling (tir), after the schedule\n"
                                   "(scheduled: with the knobs and the schedule's trace), after "
                                   "TVM's lowering\n(lowered), its LLVM IR (llvm), assembly "
                                   "(asm) or CUDA C (cuda). Coloured on\na terminal, plain "
                                   "when piped.",
                       epilog="example:\n  kiln inspect bert.onnx --stage fused"
                              "            # lists the group names\n"
                              "  kiln inspect bert.onnx --stage asm --group fused_softmax\n"
                              "  kiln inspect bert.onnx --stage scheduled --op matmul")
    _add_model_args(p)
    p.add_argument("--stage", required=True, choices=STAGES, help="the stage to print")
    p.add_argument("--group", metavar="NAME",
                   help="print only this fused group / kernel (stages fused to cuda)")
    p.add_argument("--op", metavar="TYPE",
                   help="print only the groups holding an op of this type (stages fused to cuda)")
    _add_tuning_db(p)
    p.set_defaults(run=_cmd_inspect)

    p = sub.add_parser("report", formatter_class=fmt,
                       help="write an HTML report: graph, per-kernel roofline, compile stats",
                       description="Compile MODEL, profile each kernel on this machine, and "
                                   "write one self-contained\nHTML file: the fused graph (a "
                                   "click shows a group's TIR and assembly), a\ntable of "
                                   "kernels (time, FLOPs, bytes, GFLOP/s, GB/s, share of the "
                                   "roofline),\na roofline chart against peaks measured in the "
                                   "same run, and compile\nstatistics. Needs Graphviz (dot).",
                       epilog="example:\n  kiln report bert.onnx -o bert.html --input-shape "
                              "input_ids=1,128")
    _add_model_args(p)
    p.add_argument("-o", "--output", required=True, metavar="REPORT.html",
                   help="where to write the report")
    _add_inputs(p, "an input to profile with", random_default=True)
    _add_tuning_db(p)
    p.set_defaults(run=_cmd_report)

    p = sub.add_parser("debug", formatter_class=fmt,
                       help="find the first kernel whose numbers differ from the reference",
                       description="A numerics bisector: run each compiled kernel of MODEL "
                                   "alone, on the reference\ninterpreter's values of its "
                                   "inputs, and compare its outputs with the reference.\nThe "
                                   "first kernel over tolerance is printed with its TIR; each "
                                   "of its ops is\nthen compiled alone to tell a wrong op from "
                                   "a wrong fusion or schedule.\nExit status: 0 when every "
                                   "kernel matches, 1 when one diverges.",
                       epilog="example:\n  kiln debug bert.onnx --input-shape input_ids=1,128"
                              "\n  kiln debug model.py -i x=x.npy --tolerance 1e-4")
    _add_model_args(p)
    _add_inputs(p, "an input", random_default=True)
    p.add_argument("--tolerance", type=float, default=TOLERANCE, metavar="E",
                   help="the largest error allowed, as a share of the output's largest "
                        f"value (at least 1) (default: {TOLERANCE:g})")
    p.add_argument("--no-unfuse", action="store_true",
                   help="do not check the divergent kernel's ops one by one")
    p.add_argument("--seed", type=int, default=0, help="for the random inputs (default: 0)")
    _add_tuning_db(p)
    p.set_defaults(run=_cmd_debug)
    return parser


# -- models and files ---------------------------------------------------------------------------
def _input_shapes(pairs: Sequence[tuple[str, tuple[int, ...]]]) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for name, shape in pairs:
        if name in shapes:
            raise UsageError(f"--input-shape gives input {name!r} twice")
        shapes[name] = shape
    return shapes


def _location(e: BaseException, path: Path) -> str:
    """``"line N: "`` of the innermost frame in ``path`` that ``e`` passed through."""
    lines = [f.lineno for f in traceback.extract_tb(e.__traceback__)
             if Path(f.filename).resolve() == path.resolve()]
    return f"line {lines[-1]}: " if lines else ""


def graph_from_python(path: Path) -> Graph:
    """Import the Python file ``path`` and return what its ``build()`` returns."""
    module_name = "_kiln_model_" + re.sub(r"\W", "_", path.stem)
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"{path}: cannot import it as a Python file")
    module = importlib.util.module_from_spec(spec)
    # registered while it runs: dataclasses and pickling look the module up by name
    sys.modules[module_name] = module
    # like `python MODEL.py`: the model's own directory is importable, for its helper modules
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
        build = getattr(module, "build", None)
        if not callable(build):
            raise UsageError(f"{path} defines no build() function returning a kiln.Graph")
        graph = build()
    except (UsageError, OSError):
        raise
    except SyntaxError as e:
        raise UsageError(f"{e.filename or path}: line {e.lineno}: SyntaxError: {e.msg}") from None
    except Exception as e:   # the model file's own bug: say where, as one line
        kind = "" if isinstance(e, KilnError) else f"{type(e).__name__}: "
        raise UsageError(f"{path}: {_location(e, path)}{kind}{e}") from None
    finally:
        sys.path.remove(str(path.parent))
        sys.modules.pop(module_name, None)
    if not isinstance(graph, Graph):
        raise UsageError(f"{path}: build() returned {type(graph).__name__}, not a kiln.Graph")
    return graph


def load_model(name: str) -> Graph | Path:
    """What ``kiln.compile`` takes for the MODEL argument: a Graph from a .py, an .onnx path."""
    path = Path(name)
    if not path.exists():
        raise UsageError(f"no such model file: {path}")
    if path.is_dir():
        raise UsageError(f"{path} is a directory, not a model file")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return path
    if suffix == ".py":
        return graph_from_python(path)
    raise UsageError(f"{path}: expected an ONNX model (.onnx) or a Python file defining build() "
                     "(.py)")


def _load_npy(name: str) -> np.ndarray:
    path = Path(name)
    if not path.is_file():
        raise UsageError(f"no such input file: {path}")
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, EOFError):   # numpy's messages suggest unpickling: not for inputs
        raise UsageError(f"{path} is not a .npy file holding an array") from None
    if not isinstance(data, np.ndarray):
        data.close()
        raise UsageError(f"{path} is an .npz archive; save each input as its own .npy file")
    return data


def _probe_writable(path: Path) -> None:
    """Fail now, with an OSError, if ``path`` cannot be written, rather than after compiling
    (where the linker would report it as a compilation error)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    existed = path.exists()
    with open(path, "ab"):
        pass
    if not existed:
        path.unlink()


def _file_name(name: str, taken: set[str]) -> str:
    """A safe, unique file name for an output (ONNX names may hold '/' or ':')."""
    base = re.sub(r"[^\w.-]", "_", name).lstrip(".") or "output"
    out, k = base, 1
    while out in taken:
        out, k = f"{base}_{k}", k + 1
    taken.add(out)
    return out + ".npy"


def summarize(name: str, arr: np.ndarray) -> str:
    """One line for an output: its name, dtype, shape and value range."""
    head = f"{name}: {arr.dtype}{list(arr.shape)}"
    if arr.size == 0:
        return f"{head}  (empty)"
    if arr.dtype == np.bool_:
        return f"{head}  true={int(arr.sum())}/{arr.size}"
    values = arr.astype(np.float64)
    finite = np.isfinite(values)
    bad = "" if finite.all() else \
        f"  nan={int(np.isnan(values).sum())} inf={int(np.isinf(values).sum())}"
    if not finite.any():
        return head + bad
    values = values[finite]
    return f"{head}  min={values.min():.6g} max={values.max():.6g} mean={values.mean():.6g}{bad}"


# -- commands -----------------------------------------------------------------------------------
def _cmd_compile(args: argparse.Namespace) -> int:
    out = Path(args.output)
    if out.suffix != ".so":
        raise UsageError(f"-o {out}: the library name must end in .so")
    target = get_target(args.target)
    shapes = _input_shapes(args.input_shape)
    model = load_model(args.model)
    _probe_writable(out)
    start = time.perf_counter()
    lib = kiln.compile(model, target, shapes or None, tuning_db=_tuning_db(args),
                       cache=args.cache)
    seconds = time.perf_counter() - start
    lib.export(out)
    if lib.compilation is None:       # a compile cache hit
        how = f"from the compile cache in {seconds:.2f} s"
    else:
        n = len(lib.compilation.kernels)
        how = f"{n} kernel{'s' * (n != 1)}, compiled in {seconds:.2f} s"
    print(f"wrote {out}: {human_bytes(out.stat().st_size)} for {target}, {how}")
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from kiln.tune import format_results, tune
    target = get_target(args.target)
    if target.is_cuda:
        raise UsageError("kiln tune covers the CPU targets (x86, arm-neon); the cuda templates "
                         "take their defaults")
    rpc = None if args.rpc is None else args.rpc.split(",")
    for address in rpc or []:
        if not re.fullmatch(r"[^:\s,]+:\d+", address):
            raise UsageError(f"--rpc {args.rpc}: expected HOST:PORT[,HOST:PORT...]")
    if target.is_arm and args.rpc is None:
        raise UsageError(f"{target.name} libraries do not run here: measure them on the "
                         "board with --rpc HOST:PORT")
    _probe_writable(Path(args.db))
    results = tune(load_model(args.model), target, args.trials, args.time_budget, args.db,
                   rpc, _input_shapes(args.input_shape) or None,
                   progress=not args.quiet, timeout=args.timeout, threads=args.threads)
    print(format_results(results))
    print(f"records in {args.db}; apply them with: kiln compile ... --tuning-db {args.db}")
    return 0


def _positional(lib: Library, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray] | None:
    """The feeds in input order, when they name exactly the library's inputs."""
    names = [s.name for s in lib.inputs]
    return [feeds[n] for n in names] if sorted(names) == sorted(feeds) else None


def _read_inputs(pairs: Sequence[tuple[str, str]]) -> dict[str, np.ndarray]:
    """The ``--input NAME=FILE.npy`` arrays, by name; a name given twice is an error."""
    feeds: dict[str, np.ndarray] = {}
    for name, file in pairs:
        if name in feeds:
            raise UsageError(f"--input gives input {name!r} twice")
        feeds[name] = _load_npy(file)
    return feeds


def _cmd_run(args: argparse.Namespace) -> int:
    lib = kiln.load(args.library)
    feeds = _read_inputs(args.input)
    ordered = _positional(lib, feeds)
    if ordered is None:
        lib(**feeds)          # raises InputError naming the unknown and missing inputs
        raise AssertionError("the library ran with mismatched input names")
    outputs = lib(*ordered)   # positional: an input may be called "number" or "self"
    for spec, arr in zip(lib.outputs, outputs, strict=True):
        print(summarize(spec.name, arr))
    if args.output_dir:
        out_dir = Path(args.output_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        taken: set[str] = set()
        for spec, arr in zip(lib.outputs, outputs, strict=True):
            np.save(out_dir / _file_name(spec.name, taken), arr)
        print(f"wrote {len(outputs)} output(s) to {out_dir}/")
    if args.bench:
        samples = lib.benchmark(ordered, number=args.number, repeat=args.repeat)
        print(f"latency: {median_ms(samples):.4g} ms median over {args.number * args.repeat} "
              f"runs ({args.repeat} samples of {args.number})")
    if args.profile:
        print(format_profile(lib.profile(ordered)))
    return 0


def format_profile(times: list[KernelTime]) -> str:
    """Per-kernel times, slowest first, with each one's share of their sum."""
    total = sum(t.ms * t.calls for t in times) or 1.0
    width = max((len(t.name) for t in times), default=6)
    lines = [f"{'kernel':<{width}}  {'calls':>5}  {'us/call':>9}  {'share':>6}"]
    lines += [f"{t.name:<{width}}  {t.calls:>5}  {t.ms * 1e3:>9.2f}  "
              f"{100 * t.ms * t.calls / total:5.1f}%" for t in times]
    lines.append(f"{'sum of kernels':<{width}}  {'':>5}  {total * 1e3:>9.2f}")
    return "\n".join(lines)


def _tuning_db(args: argparse.Namespace) -> str | None:
    if args.tuning_db is not None and not Path(args.tuning_db).is_file():
        raise UsageError(f"--tuning-db {args.tuning_db}: no such file")
    return args.tuning_db


def _cmd_inspect(args: argparse.Namespace) -> int:
    texts = inspect(load_model(args.model), args.stage, get_target(args.target),
                    _input_shapes(args.input_shape) or None, args.group, args.op,
                    _tuning_db(args))
    color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    for i, s in enumerate(texts):
        if i:
            print()
        print(highlight(s) if color else s)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from kiln.report import build_report, write_html
    from kiln.report.html import require_dot
    require_dot()                     # before compiling, not after
    out = Path(args.output)
    _probe_writable(out)
    feeds = _read_inputs(args.input)
    report = build_report(load_model(args.model), get_target(args.target),
                          _input_shapes(args.input_shape) or None, feeds,
                          _tuning_db(args))
    write_html(report, out)
    print(f"wrote {out} ({human_bytes(out.stat().st_size)}): {len(report.rows)} kernels"
          + (f", model {report.latency_ms:.3f} ms" if report.latency_ms is not None else ""))
    return 0


def _cmd_debug(args: argparse.Namespace) -> int:
    c = kiln.compile_stages(load_model(args.model), get_target(args.target),
                            _input_shapes(args.input_shape) or None,
                            tuning_db=_tuning_db(args))
    feeds = random_inputs(c.optimized, args.seed)
    for name, _ in args.input:               # before reading any file
        if name not in feeds:
            raise UsageError(f"--input {name}: the model has no input {name!r}; its inputs: "
                             + ", ".join(feeds))
    feeds.update(_read_inputs(args.input))
    report = bisect(c, feeds, args.tolerance, unfuse=not args.no_unfuse)
    print(report)
    return 0 if report.ok else 1


# -- entry point --------------------------------------------------------------------------------
def _fail(message: str, status: int = EXIT_USER_ERROR, kind: str = "error") -> int:
    # one line, whatever the message: scripts and CI logs read the first line only; a hostile
    # model's megabyte-long attribute is cut to a readable length
    line = shorten("; ".join(part.strip() for part in message.splitlines() if part.strip()))
    print(f"kiln: {kind}: {line}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line on ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as e:   # --help and --version end through argparse's exit()
            return e.code if isinstance(e.code, int) else 0
        return args.run(args)
    except KilnError as e:
        return _fail(str(e) or type(e).__name__)
    except BrokenPipeError:
        # the reader went away (`kiln inspect ... | head`); keep the interpreter from
        # reporting it again when it flushes stdout at exit
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 1
    except OSError as e:
        if e.filename is not None and e.strerror:
            return _fail(f"{e.filename}: {e.strerror}")
        return _fail(str(e) or type(e).__name__)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Exception as e:    # a bug in kiln, not the user's: one line, and how to report it
        if os.environ.get(TRACEBACK_ENV):
            raise
        return _fail(f"{type(e).__name__}: {first_line(e)} (a bug in kiln: please report it, "
                     f"with the traceback that {TRACEBACK_ENV}=1 prints)",
                     EXIT_INTERNAL_ERROR, "internal error")
