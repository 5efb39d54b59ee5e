"""kiln against its anchors on this CPU, in one table: fp32 GEMM vs NumPy (OpenBLAS), int8 GEMM,
LayerNorm and softmax vs ONNX Runtime single-op models (with the memory bandwidth a copy
reaches in the same run), long-sequence attention vs ONNX Runtime, and the shared real models
end to end vs ONNX Runtime.

    python -m benchmarks.cpu [--threads N] [--only gemm,int8,norm,attention,models] [--quick]
                             [--json PATH] [--models DIR]

Every pair runs alternately in this process (anchor, then kiln, ``--rounds`` times) with both
engines on the same ``--threads`` (default: every core); the table gives per-engine medians
and kiln time / anchor time (below 1.00 kiln is faster). Shapes of GEMMs are M x K x N.

Where other processes hold cores, engines whose idle workers sleep wake late: on this shared
2-core machine numpy's 2-thread OpenBLAS took 15 ms for a 256^3 GEMM that it does in 0.15 ms
when the cores are free (and ORT was 1.4-1.8x slower with spinning workers, so its sessions do
not spin). Read a loaded machine's GEMM rows at ``--threads 1`` too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import kiln
import kiln.target
from benchmarks import models as real_models
from benchmarks.timing import (
    Timer,
    all_cores,
    alternate_runs,
    geomean,
    kiln_timer,
    limit_threads,
    ort_session,
    ort_timer,
    per_call,
)

SECTIONS = ("gemm", "int8", "norm", "attention", "models")
FP32_GEMMS = [(256, 256, 256), (512, 512, 512), (1024, 1024, 1024), (2048, 2048, 2048),
              (128, 384, 1536), (128, 1536, 384), (128, 384, 384)]     # BERT/MiniLM: FFN, proj
INT8_GEMMS = [(64, 384, 512), (128, 384, 384), (128, 384, 1536), (128, 1536, 384)]
NORM_SHAPES = [(128, 384), (4096, 1024)]
ATTENTION_SHAPES = [(8, 1024, 32), (8, 2048, 32)]    # heads, sequence, head dim
COPY_SHAPE = (4096, 1024)      # 16 MiB of float32: the size of the largest norm row set
OPSET = 17


@dataclass
class Row:
    """One line of the table; times in milliseconds (None where the engine failed)."""
    section: str
    case: str
    anchor: str
    kiln_ms: float | None
    anchor_ms: float | None
    note: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    ratio: float | None = None
    best_ratio: float | None = None              # of the fastest round of each engine

    def __post_init__(self) -> None:
        if self.ratio is None and self.kiln_ms and self.anchor_ms:
            self.ratio = self.kiln_ms / self.anchor_ms


@dataclass
class Config:
    threads: int
    rounds: int
    min_seconds: float
    models_dir: Path

    best: dict[str, float] = field(default_factory=dict)

    def pair(self, kiln_time: Timer, anchor_time: Timer) -> tuple[float, float]:
        """Median ms of kiln and of its anchor, alternating; their fastest rounds are kept in
        ``best`` for the row being measured (the fastest is the least disturbed by others'
        load)."""
        k, a = alternate_runs(kiln_time, anchor_time, self.rounds)
        self.best.update(kiln_best_ms=min(k) * 1e3, anchor_best_ms=min(a) * 1e3)
        return statistics.median(k) * 1e3, statistics.median(a) * 1e3


def _rel_error(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| / max |want| (0 for empty outputs)."""
    if not want.size:
        return 0.0
    scale = float(np.max(np.abs(want))) or 1.0
    return float(np.max(np.abs(got.astype(np.float64) - want))) / scale


def _one_op_model(op: str, x: tuple[str, int, tuple[int, ...]],
                  y: tuple[int, tuple[int, ...]], inits: list[np.ndarray],
                  **attrs: object) -> bytes:
    """A single-node ONNX model: input ``x`` (name, elem type, shape), then ``inits`` as
    constant initializers; one output ``y`` (elem type, shape)."""
    name, elem, shape = x
    init_names = [f"w{i}" for i in range(len(inits))]
    graph = helper.make_graph(
        [helper.make_node(op, [name, *init_names], ["y"], **attrs)], op.lower(),
        [helper.make_tensor_value_info(name, elem, list(shape))],
        [helper.make_tensor_value_info("y", *y)],
        [numpy_helper.from_array(w, n) for w, n in zip(inits, init_names, strict=True)])
    return _model_bytes(graph)


def _model_bytes(graph: onnx.GraphProto) -> bytes:
    """``graph`` as a checked model at ``OPSET``, in an IR version ORT reads."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              ir_version=10)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _onnx_pair(cfg: Config, model: bytes, feeds: dict[str, np.ndarray],
               exact: bool) -> tuple[float, float, str]:
    """Compile ``model`` with kiln, load it into ONNX Runtime, check kiln's output against
    ORT's, time both alternately. Returns kiln ms, ORT ms, a note on the error."""
    lib = kiln.compile(onnx.load_from_string(model), "x86")
    sess = ort_session(model, cfg.threads)
    ort_time, want = ort_timer(sess, feeds, cfg.min_seconds)
    (got,) = lib(**feeds)
    if exact:
        note = "exact" if np.array_equal(got, want[0]) else "MISMATCH"
    else:
        note = f"err {_rel_error(got, want[0]):.0e}"
    k, a = cfg.pair(kiln_timer(lib, feeds, cfg.min_seconds), ort_time)
    return k, a, note


def _attempt(cfg: Config, section: str, case: str, measure: Callable[[], Row]) -> Row:
    """``measure()``, or a row that says why it failed: the checkout is shared, and one broken
    kernel should not hide the other rows (the traceback goes to stderr)."""
    cfg.best.clear()
    try:
        row = measure()
    except Exception as e:   # reported in the table
        traceback.print_exc()
        return Row(section, case, "", None, None, f"FAILED {type(e).__name__}: {str(e)[:100]}")
    if cfg.best:
        row.metrics.update(cfg.best)
        row.best_ratio = cfg.best["kiln_best_ms"] / cfg.best["anchor_best_ms"]
    return row


def _fp32_gemm(cfg: Config, m: int, k: int, n: int) -> Row:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((k, n)).astype(np.float32)
    g = kiln.Graph("gemm")
    g.output(kiln.ops.matmul(g.input("a", (m, k), "float32"), w))
    lib = kiln.compile(g, "x86")
    c = np.empty((m, n), np.float32)
    err = _rel_error(lib(a=a)[0], a.astype(np.float64) @ w)
    t_k, t_a = cfg.pair(kiln_timer(lib, {"a": a}, cfg.min_seconds),
                        lambda: per_call(lambda: np.matmul(a, w, out=c), cfg.min_seconds))
    flop = 2.0 * m * n * k
    gk, ga = flop / t_k / 1e6, flop / t_a / 1e6
    return Row("fp32 GEMM", f"{m}x{k}x{n}", "numpy", t_k, t_a,
               f"{gk:.0f} vs {ga:.0f} GFLOP/s, err {err:.0e}",
               {"kiln_gflops": gk, "anchor_gflops": ga})


def gemm_rows(cfg: Config) -> Iterator[Row]:
    """fp32 ``a @ W`` (W constant, packed at compile time) vs ``numpy.matmul(out=)``."""
    for m, k, n in FP32_GEMMS:
        yield _attempt(cfg, "fp32 GEMM", f"{m}x{k}x{n}", partial(_fp32_gemm, cfg, m, k, n))


def _int8_gemm(cfg: Config, m: int, k: int, n: int) -> Row:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (m, k), dtype=np.uint8)
    b = rng.integers(-128, 128, (k, n), dtype=np.int8)
    model = _one_op_model("MatMulInteger", ("a", TensorProto.UINT8, (m, k)),
                          (TensorProto.INT32, (m, n)), [b])
    t_k, t_a, note = _onnx_pair(cfg, model, {"a": a}, exact=True)
    op = 2.0 * m * n * k
    gk, ga = op / t_k / 1e6, op / t_a / 1e6
    return Row("int8 GEMM", f"{m}x{k}x{n}", "ORT", t_k, t_a,
               f"{gk:.0f} vs {ga:.0f} GOP/s, {note}", {"kiln_gops": gk, "anchor_gops": ga})


def int8_rows(cfg: Config) -> Iterator[Row]:
    """uint8 activations x int8 constant weights -> int32 (ONNX MatMulInteger), both engines
    on the same single-op model."""
    for m, k, n in INT8_GEMMS:
        yield _attempt(cfg, "int8 GEMM", f"{m}x{k}x{n}", partial(_int8_gemm, cfg, m, k, n))


def _copy_bandwidth(cfg: Config) -> Row:
    """The copy kernel: kiln's y = -x (a streaming elementwise kernel: one read and one write
    per element, parallel over ``--threads``; kiln compiles a plain identity to no kernel at
    all) against ``numpy.copyto`` (memcpy, one thread), at the 4096x1024 norms' size (16 MiB
    each way: both fit the 300 MiB L3, so this is the bandwidth those norms can have). Bytes
    moved count each element read once and written once."""
    x = np.random.default_rng(0).standard_normal(COPY_SHAPE).astype(np.float32)
    g = kiln.Graph("copy")
    g.output(kiln.ops.neg(g.input("x", COPY_SHAPE, "float32")))
    lib = kiln.compile(g, "x86")
    if not np.array_equal(lib(x=x)[0], -x):
        raise AssertionError("kiln's copy kernel computed a wrong result")
    dst = np.empty_like(x)
    t_k, t_a = cfg.pair(kiln_timer(lib, {"x": x}, cfg.min_seconds),
                        lambda: per_call(lambda: np.copyto(dst, x), cfg.min_seconds))
    # the bandwidth is the fastest round's rate (the one least slowed by others' jobs)
    moved = 2 * x.nbytes
    bk, ba = moved / cfg.best["kiln_best_ms"] / 1e6, moved / cfg.best["anchor_best_ms"] / 1e6
    best, who = max((bk, "kiln y=-x"), (ba, "numpy.copyto"))
    return Row("memory", "copy 4096x1024 fp32", "numpy", t_k, t_a,
               f"fastest rounds {bk:.1f} vs {ba:.1f} GB/s: bandwidth = {best:.1f} GB/s ({who})",
               {"kiln_gbs": bk, "anchor_gbs": ba, "bandwidth_gbs": best})


def _norm(cfg: Config, label: str, shape: tuple[int, int], bandwidth: float | None) -> Row:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    io = ("x", TensorProto.FLOAT, shape), (TensorProto.FLOAT, shape)
    if label == "LayerNorm":
        params = [rng.standard_normal(shape[-1]).astype(np.float32) for _ in range(2)]
        model = _one_op_model("LayerNormalization", *io, params, axis=-1, epsilon=1e-5)
    else:
        model = _one_op_model("Softmax", *io, [], axis=-1)
    t_k, t_a, note = _onnx_pair(cfg, model, {"x": x}, exact=False)
    moved = 2 * x.nbytes                          # fastest rounds, as for the copy
    bk, ba = moved / cfg.best["kiln_best_ms"] / 1e6, moved / cfg.best["anchor_best_ms"] / 1e6
    metrics = {"kiln_gbs": bk, "anchor_gbs": ba}
    share = ""
    if bandwidth:
        metrics["kiln_pct_of_copy"] = 100 * bk / bandwidth
        share = f" = {100 * bk / bandwidth:.0f}% of copy"
    return Row(label, f"{shape[0]}x{shape[1]}", "ORT", t_k, t_a,
               f"{bk:.1f} GB/s{share} (ORT {ba:.1f}), {note}", metrics)


def norm_rows(cfg: Config) -> Iterator[Row]:
    """LayerNormalization (opset 17, last axis) and Softmax (opset 13+, last axis), single-op
    models on both engines; GB/s (of each engine's fastest round) counts one read and one
    write of the tensor, and % is of the copy bandwidth measured first."""
    copy = _attempt(cfg, "memory", "copy 4096x1024 fp32", partial(_copy_bandwidth, cfg))
    yield copy
    bandwidth = copy.metrics.get("bandwidth_gbs")
    for shape in NORM_SHAPES:
        for label in ("LayerNorm", "softmax"):
            yield _attempt(cfg, label, f"{shape[0]}x{shape[1]}",
                           partial(_norm, cfg, label, shape, bandwidth))


def _attention(cfg: Config, heads: int, t: int, d: int) -> Row:
    """softmax(q @ kt / sqrt(d)) @ v as exporters write it (MatMul, Div, Softmax, MatMul):
    kiln runs it as one attention kernel; ORT materialises the heads x t x t scores."""
    f = TensorProto.FLOAT
    ins = [helper.make_tensor_value_info(n, f, shape) for n, shape in
           (("q", (1, heads, t, d)), ("kt", (1, heads, d, t)), ("v", (1, heads, t, d)))]
    c = numpy_helper.from_array(np.array(np.sqrt(d), np.float32), "c")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["q", "kt"], ["s"]), helper.make_node("Div", ["s", "c"], ["z"]),
         helper.make_node("Softmax", ["z"], ["p"], axis=-1),
         helper.make_node("MatMul", ["p", "v"], ["y"])], "attention", ins,
        [helper.make_tensor_value_info("y", f, (1, heads, t, d))], [c])
    rng = np.random.default_rng(0)
    feeds = {i.name: rng.standard_normal([x.dim_value for x in i.type.tensor_type.shape.dim]
                                         ).astype(np.float32) for i in ins}
    t_k, t_a, note = _onnx_pair(cfg, _model_bytes(graph), feeds, exact=False)
    return Row("attention", f"{heads} heads x {t}^2, d {d}", "ORT", t_k, t_a,
               f"scores {4 * heads * t * t >> 20} MiB (kiln never stores them), {note}")


def attention_rows(cfg: Config) -> Iterator[Row]:
    """Long-sequence attention, one single-op-chain model on both engines."""
    for heads, t, d in ATTENTION_SHAPES:
        yield _attempt(cfg, "attention", f"{heads} heads x {t}^2",
                       partial(_attention, cfg, heads, t, d))


def _model(cfg: Config, name: str, path: Path) -> Row:
    lib, feeds, compile_s = real_models.compile_at_manifest(name, path)
    ort_time, want = ort_timer(ort_session(path, cfg.threads), feeds, cfg.min_seconds)
    err = real_models.output_error(lib(**feeds), want)
    t_k, t_a = cfg.pair(kiln_timer(lib, feeds, cfg.min_seconds), ort_time)
    return Row("model", name, "ORT", t_k, t_a, f"err {err:.0e}, compiled in {compile_s:.0f} s",
               {"error": err})


def model_rows(cfg: Config) -> Iterator[Row]:
    """The shared real models (tests/models/MANIFEST.json) at the manifest's shapes, and the
    geometric mean of their ratios (over those that ran)."""
    paths = real_models.fetch(cfg.models_dir)
    ran = []
    for name, path in paths.items():
        row = _attempt(cfg, "model", name, partial(_model, cfg, name, path))
        if row.ratio:
            ran.append(row)
        yield row
    if ran:
        yield Row("model", f"geometric mean ({len(ran)} of {len(paths)})", "ORT", None, None,
                  ratio=geomean([r.ratio for r in ran]),
                  best_ratio=geomean([r.best_ratio or r.ratio for r in ran]))


SECTION_ROWS: dict[str, Callable[[Config], Iterator[Row]]] = {
    "gemm": gemm_rows, "int8": int8_rows, "norm": norm_rows, "attention": attention_rows,
    "models": model_rows}


def _fmt(v: float | None, spec: str) -> str:
    return "" if v is None else format(v, spec)


COLUMNS = (f"{'section':10} | {'case':28} | {'anchor':6} | {'kiln ms':>9} | {'anchor ms':>9} | "
           f"{'kiln/anchor':>11} | {'best k/a':>8} | note")


def format_row(r: Row) -> str:
    ratio = f"{r.ratio:10.2f}x" if r.ratio else " " * 11
    best = f"{r.best_ratio:7.2f}x" if r.best_ratio else " " * 8
    return (f"{r.section:10} | {r.case:28} | {r.anchor:6} | {_fmt(r.kiln_ms, '9.3f'):>9} | "
            f"{_fmt(r.anchor_ms, '9.3f'):>9} | {ratio} | {best} | {r.note}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=all_cores(),
                    help="threads for every engine (default: every core, here %(default)s)")
    ap.add_argument("--only", default=",".join(SECTIONS),
                    help=f"comma-separated sections of {','.join(SECTIONS)} (default: all)")
    ap.add_argument("--quick", action="store_true", help="3 rounds of >= 0.05 s per engine")
    ap.add_argument("--rounds", type=int, help="alternating rounds (default 7, quick 3)")
    ap.add_argument("--json", type=Path, help="also write the table here")
    ap.add_argument("--models", type=Path, default=Path(".cache/models"),
                    help="cache of the real models (fetched there if missing)")
    args = ap.parse_args()
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        ap.error(f"unknown section(s) {unknown}; choose from {','.join(SECTIONS)}")
    cfg = Config(threads=args.threads, rounds=args.rounds or (3 if args.quick else 7),
                 min_seconds=0.05 if args.quick else 0.2, models_dir=args.models)
    counts = limit_threads(cfg.threads)
    load = os.getloadavg()
    header = [
        f"kiln vs anchors on {_cpu_name()} ({kiln.target.get_target('x86')}), "
        f"{cfg.threads} thread(s) each: kiln pool {counts['kiln']}, numpy BLAS "
        f"{counts['numpy BLAS'] or 'unknown'}, ORT intra-op {cfg.threads} / inter-op 1 "
        "(not spinning)",
        f"median of {cfg.rounds} alternating rounds (anchor, then kiln), each >= "
        f"{cfg.min_seconds} s of calls; kiln/anchor = kiln time / anchor time: "
        "below 1.00x kiln is faster; best k/a = ratio of each engine's fastest round",
        f"load average at start {load[0]:.2f} on {all_cores()} cores: where other jobs load the "
        "machine, single ratios can be off by 2x; GEMM shapes are M x K x N",
    ]
    print("\n".join(header), COLUMNS, "-" * (len(COLUMNS) + 40), sep="\n", flush=True)
    rows: list[Row] = []
    t0 = time.perf_counter()
    for section in SECTIONS:
        if section in only:
            for row in SECTION_ROWS[section](cfg):
                rows.append(row)
                print(format_row(row), flush=True)   # one table, each row as it is measured
    header.append(f"took {time.perf_counter() - t0:.0f} s")
    print(header[-1])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"header": header, "threads": counts,
                                         "rounds": cfg.rounds, "min_seconds": cfg.min_seconds,
                                         "rows": [asdict(r) for r in rows]}, indent=1))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    main()
