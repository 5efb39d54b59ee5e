"""The ``kiln`` command line, as a subprocess (the real exit status and stderr) and in-process
through ``kiln.cli.main`` (faster, for the many error paths)."""

from __future__ import annotations

import importlib.util
import re
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kiln
from kiln.cli import main

MODEL = '''\
import numpy as np

import kiln
from kiln import ops


def build() -> kiln.Graph:
    rng = np.random.default_rng(0)
    g = kiln.Graph("tiny")
    x = g.input("x", ("batch", 32), "float32")
    h = ops.dense(x, rng.standard_normal((16, 32)).astype("float32"))
    h = ops.gelu(ops.add(h, rng.standard_normal(16).astype("float32")))
    g.output(ops.softmax(h))
    return g
'''
SHAPE = ["--input-shape", "x=4,32"]    # the model leaves the batch dim symbolic
GROUPS = ("fused_dense_add_gelu", "fused_softmax")


def cli(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kiln", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def call(capsys: pytest.CaptureFixture, *args: str | Path) -> tuple[int, str, str]:
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def assert_user_error(status: int, err: str, *needles: str) -> None:
    assert status == 2, err
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("kiln: error: "), err
    for needle in needles:
        assert needle in err, (needle, err)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cli")
    (d / "model.py").write_text(MODEL)
    x = np.random.default_rng(1).standard_normal((4, 32)).astype(np.float32)
    np.save(d / "x.npy", x)
    np.save(d / "x64.npy", x.astype(np.float64))
    np.save(d / "x_short.npy", x[:3])
    (d / "junk.npy").write_text("not an array\n")
    (d / "junk.so").write_text("not a library\n")
    (d / "model.txt").write_text(MODEL)
    return d


@pytest.fixture(scope="module")
def compiled(work: Path) -> tuple[Path, subprocess.CompletedProcess]:
    lib = work / "out" / "tiny.so"
    return lib, cli("compile", work / "model.py", "-o", lib, *SHAPE)


@pytest.fixture(scope="module")
def library(compiled: tuple[Path, subprocess.CompletedProcess]) -> Path:
    lib, proc = compiled
    assert proc.returncode == 0, proc.stderr
    return lib


# -- help ---------------------------------------------------------------------------------------
def test_top_level_help_as_module() -> None:
    proc = cli("--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: kiln")
    for command in ("compile", "run", "inspect"):
        assert command in proc.stdout


def test_console_script() -> None:
    script = Path(sys.executable).parent / "kiln"
    if not script.exists():
        pytest.skip("kiln is not installed as a console script in this environment")
    proc = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"kiln {kiln.__version__}")


@pytest.mark.parametrize("command", ["compile", "run", "inspect"])
def test_command_help(capsys: pytest.CaptureFixture, command: str) -> None:
    status, out, _ = call(capsys, command, "--help")
    assert status == 0
    assert out.startswith(f"usage: kiln {command}")
    assert "example:" in out


# -- compile and run ----------------------------------------------------------------------------
def test_compile_prints_one_summary_line(compiled: tuple[Path, subprocess.CompletedProcess]
                                         ) -> None:
    lib, proc = compiled
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.count("\n") == 1
    assert str(lib) in proc.stdout
    assert "2 kernels" in proc.stdout
    assert re.search(r"\d+(\.\d)? (B|KiB|MiB)", proc.stdout)
    assert re.search(r"compiled in \d+\.\d\d s", proc.stdout)
    assert lib.is_file()


def test_compile_cache_reuses_the_library(work: Path) -> None:
    """--cache DIR: the first compile fills the cache, the second loads the same bytes from it
    (and says so), and its library runs."""
    cache = work / "cache"
    first, second = work / "cached1.so", work / "cached2.so"
    p1 = cli("compile", work / "model.py", "-o", first, *SHAPE, "--cache", cache)
    assert p1.returncode == 0, p1.stderr
    assert "2 kernels" in p1.stdout and "compile cache" not in p1.stdout
    assert len(list(cache.glob("*.so"))) == 1
    p2 = cli("compile", work / "model.py", "-o", second, *SHAPE, "--cache", cache)
    assert p2.returncode == 0, p2.stderr
    assert re.search(r"from the compile cache in \d+\.\d\d s", p2.stdout), p2.stdout
    assert first.read_bytes() == second.read_bytes()
    x = np.load(work / "x.npy")
    graph = runpy.run_path(str(work / "model.py"))["build"]()
    (want,) = kiln.run_reference(graph, x=x)
    np.testing.assert_allclose(kiln.load(second)(x=x)[0], want, rtol=1e-4, atol=1e-7)


def test_run_matches_reference(work: Path, library: Path) -> None:
    out_dir = work / "outputs"
    proc = cli("run", library, "--input", f"x={work / 'x.npy'}", "--output-dir", out_dir)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^softmax: float32\[4, 16\]  min=\S+ max=\S+ mean=0\.06\d*$",
                     proc.stdout, re.M), proc.stdout
    got = np.load(out_dir / "softmax.npy")
    graph = runpy.run_path(str(work / "model.py"))["build"]()
    (want,) = kiln.run_reference(graph, x=np.load(work / "x.npy"))
    assert got.shape == want.shape == (4, 16)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)


def test_run_bench_prints_latency(capsys: pytest.CaptureFixture, work: Path,
                                  library: Path) -> None:
    status, out, err = call(capsys, "run", library, "-i", f"x={work / 'x.npy'}", "--bench",
                            "--number", "2", "--repeat", "3")
    assert status == 0, err
    assert "softmax: float32[4, 16]" in out
    ms = re.search(r"^latency: (\S+) ms median over 6 runs", out, re.M)
    assert ms is not None, out
    assert float(ms.group(1)) > 0


def test_run_profile_lists_every_kernel(capsys: pytest.CaptureFixture, work: Path,
                                        library: Path) -> None:
    status, out, err = call(capsys, "run", library, "-i", f"x={work / 'x.npy'}", "--profile")
    assert status == 0, err
    rows = re.findall(r"^(fused_\w+)\s+1\s+(\S+)\s+(\S+)%$", out, re.M)
    assert sorted(r[0] for r in rows) == sorted(GROUPS), out
    assert all(float(r[1]) > 0 for r in rows)
    assert abs(sum(float(r[2]) for r in rows) - 100) < 0.5


def test_profile_ranks_the_heavy_kernel_first() -> None:
    """A 192^3 GEMM takes far longer than a ReLU over 192 values: it heads the profile."""
    rng = np.random.default_rng(0)
    g = kiln.Graph("two")
    x = g.input("x", (192, 192), "float32")
    h = kiln.ops.matmul(x, rng.standard_normal((192, 192)).astype(np.float32))
    g.output(kiln.ops.relu(kiln.ops.sum(h, axes=[0])))
    lib = kiln.compile(g)
    times = lib.profile({"x": rng.standard_normal((192, 192)).astype(np.float32)})
    assert len(times) == 2 and times[0].name.startswith("fused_matmul")
    assert times[0].ms > 3 * times[1].ms > 0


# -- inspect ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("stage", "pattern"), [
    ("graph", r"graph tiny\(%x: f32\[4, 32\]\)"),
    ("simplified", r"= gelu\("),
    ("fused", r"group fused_dense_add_gelu \[out-fusable\]"),
    ("te", r"(?m)^dense_gemm\[i0, i1\] = sum\(\(x\[i0, k\] \* const_packed\[.+\]\), k < 32\)"),
    ("tir", r"T\.prim_func"),
    ("scheduled", r"# gemm M=4 N=16 K=32: CpuGemmKnobs\(mr=4, nr=16"),
    ("lowered", r"__tvm_ffi_fused_softmax"),
    ("llvm", r"define .*fused_softmax"),
    ("asm", r"vfmadd\S*\s.*%ymm"),   # x86-avx2: FMA on 256-bit registers
])
def test_inspect_stage(capsys: pytest.CaptureFixture, work: Path, stage: str,
                       pattern: str) -> None:
    status, out, err = call(capsys, "inspect", work / "model.py", "--stage", stage,
                            "--target", "x86-avx2", *SHAPE)
    assert status == 0, err
    assert re.search(pattern, out), out[:2000]
    if stage not in ("graph", "simplified", "fused"):
        for group in GROUPS:   # every kernel, headed by its name
            assert re.search(rf"^[#;] kernel {group}\b", out, re.M)


def test_inspect_scheduled_after_tir(capsys: pytest.CaptureFixture, work: Path) -> None:
    """tir is before the schedule, scheduled after it (with the trace of its primitives),
    lowered after TVM's pipeline (the packed-call entry point)."""
    out = {stage: call(capsys, "inspect", work / "model.py", "--stage", stage, *SHAPE)[1]
           for stage in ("tir", "scheduled", "lowered")}
    assert "T.vectorized" in out["scheduled"] and "T.vectorized" not in out["tir"]
    assert "def apply_trace(sch: s_tir.Schedule)" in out["scheduled"]
    assert "sch.vectorize(" in out["scheduled"]
    assert "T.sblock" in out["tir"] and "T.sblock" not in out["lowered"]


def test_inspect_shares_subexpressions(capsys: pytest.CaptureFixture, work: Path) -> None:
    """The softmax's exp uses its argument many times: the te stage names it once."""
    _, out, _ = call(capsys, "inspect", work / "model.py", "--stage", "te", "--group",
                     "fused_softmax", *SHAPE)
    assert re.search(r"(?m)^    t0 = \(gelu\[i0, i1\] - softmax_max\[i0\]\)$", out), out
    assert len(out) < 4000


@pytest.mark.parametrize(("target", "stage", "pattern"), [
    ("arm-neon", "asm", r"fmla\s+v\d+\.4s"),
    ("cuda", "cuda", r"extern \"C\" __global__ void .*fused_dense_add_gelu_kernel"),
])
def test_inspect_other_targets(capsys: pytest.CaptureFixture, work: Path, target: str,
                               stage: str, pattern: str) -> None:
    status, out, err = call(capsys, "inspect", work / "model.py", "--stage", stage,
                            "--target", target, "--op", "gelu", *SHAPE)
    assert status == 0, err
    assert re.search(pattern, out), out[:2000]
    assert "fused_softmax" not in out          # --op gelu: only the group holding the gelu


def test_inspect_op_filter(capsys: pytest.CaptureFixture, work: Path) -> None:
    status, out, err = call(capsys, "inspect", work / "model.py", "--stage", "fused",
                            "--op", "softmax", *SHAPE)
    assert status == 0, err
    assert "# anchor: softmax; epilogue: none" in out and "fused_dense_add_gelu" not in out


def test_inspect_graph_before_binding_shapes(capsys: pytest.CaptureFixture, work: Path) -> None:
    status, out, err = call(capsys, "inspect", work / "model.py", "--stage", "graph")
    assert status == 0, err
    assert "%x: f32[batch, 32]" in out


@pytest.mark.parametrize("stage", ["fused", "te", "tir", "scheduled", "lowered", "llvm",
                                   "asm"])
def test_inspect_one_group(capsys: pytest.CaptureFixture, work: Path, stage: str) -> None:
    status, out, err = call(capsys, "inspect", work / "model.py", "--stage", stage,
                            "--group", "fused_softmax", *SHAPE)
    assert status == 0, err
    assert "fused_softmax" in out
    assert "fused_dense_add_gelu" not in out


# -- the ONNX path, once the importer exists ----------------------------------------------------
@pytest.mark.skipif(importlib.util.find_spec("kiln.frontend.onnx") is None,
                    reason="kiln.frontend.onnx is not written yet")
def test_compile_and_run_onnx(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(2).standard_normal((8, 5)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "mm_relu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 5])],
        [numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              tmp_path / "m.onnx")
    x = np.random.default_rng(3).standard_normal((3, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    proc = cli("compile", tmp_path / "m.onnx", "-o", tmp_path / "m.so")
    assert proc.returncode == 0, proc.stderr
    proc = cli("run", tmp_path / "m.so", "--input", f"x={tmp_path / 'x.npy'}",
               "--output-dir", tmp_path)
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), np.maximum(x @ w, 0), rtol=1e-4,
                               atol=1e-6)


# -- user errors: one line on stderr, status 2 --------------------------------------------------
def test_errors_as_a_real_process(work: Path, library: Path) -> None:
    cases = [
        (["compile", work / "missing.onnx", "-o", work / "m.so"], "no such model file"),
        (["compile", work / "model.py", "-o", work / "m.so", "--target", "sparc"],
         "unknown target"),
        (["run", library, "--input", f"x={work / 'x64.npy'}"], "input 'x'"),
        (["frobnicate"], "invalid choice"),
    ]
    for args, needle in cases:
        proc = cli(*args)
        assert proc.stdout == ""
        assert_user_error(proc.returncode, proc.stderr, needle)


COMPILE_ERRORS = [
    (["missing.onnx"], ["no such model file", "missing.onnx"]),
    (["model.txt"], ["model.txt", "expected an ONNX model (.onnx) or a Python file"]),
    (["model.py", "--target", "sparc"], ["unknown target 'sparc'", "x86-avx512"]),
    (["model.py", "--input-shape", "x=4,a"], ["--input-shape", "x=4,a"]),
    (["model.py", "--input-shape", "x"], ["--input-shape"]),
    (["model.py", "--input-shape", "x=4,32", "--input-shape", "x=4,32"], ["'x' twice"]),
    (["model.py", "--input-shape", "y=4,32"], ["unknown input", "'y'"]),
    (["model.py", "--input-shape", "x=4,32,1"], ["input 'x'", "rank"]),
    (["model.py", "--bogus"], ["unrecognized arguments: --bogus"]),
]


@pytest.mark.parametrize(("args", "needles"), COMPILE_ERRORS)
def test_compile_errors(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
                        work: Path, args: list[str], needles: list[str]) -> None:
    monkeypatch.chdir(work)
    status, _, err = call(capsys, "compile", *args, "-o", "never.so")
    assert_user_error(status, err, *needles)
    assert not (work / "never.so").exists()


def test_compile_needs_output(capsys: pytest.CaptureFixture, work: Path) -> None:
    status, _, err = call(capsys, "compile", work / "model.py")
    assert_user_error(status, err, "required", "-o")
    status, _, err = call(capsys, "compile", work / "model.py", "-o", work / "tiny.dll")
    assert_user_error(status, err, "must end in .so")


@pytest.mark.parametrize(("source", "needles"), [
    ("def build(:\n", ["line 1", "SyntaxError"]),
    ("x = 1\n", ["no build() function"]),
    ("def build():\n    return 1 / 0\n", ["line 2", "ZeroDivisionError"]),
    ("def build():\n    return 42\n", ["returned int, not a kiln.Graph"]),
    ("import kiln\nfrom kiln import ops\ndef build():\n    g = kiln.Graph()\n"
     "    return ops.dense(g.input('x', (2, 3)), g.input('w', (4, 5)))\n", ["line 5", "dense"]),
])
def test_bad_model_file(capsys: pytest.CaptureFixture, tmp_path: Path, source: str,
                        needles: list[str]) -> None:
    (tmp_path / "bad.py").write_text(source)
    status, _, err = call(capsys, "inspect", tmp_path / "bad.py", "--stage", "graph")
    assert_user_error(status, err, "bad.py", *needles)


def test_model_file_with_dataclass_and_helper(capsys: pytest.CaptureFixture,
                                              tmp_path: Path) -> None:
    # a model file is imported like a script: dataclasses work, sibling modules import
    (tmp_path / "helper.py").write_text("WIDTH = 8\n")
    (tmp_path / "m.py").write_text(
        "from __future__ import annotations\nimport dataclasses\nimport kiln\n"
        "from kiln import ops\nfrom helper import WIDTH\n\n"
        "@dataclasses.dataclass\nclass Config:\n    width: int = WIDTH\n\n"
        "def build() -> kiln.Graph:\n    g = kiln.Graph('dc')\n"
        "    g.output(ops.relu(g.input('x', (2, Config().width))))\n    return g\n")
    status, out, err = call(capsys, "inspect", tmp_path / "m.py", "--stage", "graph")
    assert status == 0, err
    assert "%x: f32[2, 8]" in out


@pytest.mark.parametrize(("inputs", "needles"), [
    (["y=x.npy"], ["unknown input(s) 'y'", "missing input(s) 'x'"]),
    ([], ["missing input(s) 'x'"]),
    (["x=x_short.npy"], ["input 'x'", "shape [4, 32]", "[3, 32]"]),
    (["x=x64.npy"], ["input 'x'", "dtype float32", "float64"]),
    (["x=junk.npy"], ["junk.npy", "not a .npy file"]),
    (["x=absent.npy"], ["no such input file"]),
    (["x=x.npy", "x=x.npy"], ["'x' twice"]),
    (["x"], ["--input", "NAME=FILE.npy"]),
])
def test_run_errors(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, work: Path,
                    library: Path, inputs: list[str], needles: list[str]) -> None:
    monkeypatch.chdir(work)
    status, out, err = call(capsys, "run", library, *(a for i in inputs for a in ("-i", i)))
    assert_user_error(status, err, *needles)
    assert out == ""


@pytest.mark.parametrize(("library", "needles"), [
    ("absent.so", ["no such library"]),
    ("junk.so", ["junk.so", "not a loadable"]),
])
def test_run_bad_library(capsys: pytest.CaptureFixture, work: Path, library: str,
                         needles: list[str]) -> None:
    status, _, err = call(capsys, "run", work / library, "--input", f"x={work / 'x.npy'}")
    assert_user_error(status, err, *needles)


def test_bench_needs_positive_counts(capsys: pytest.CaptureFixture, work: Path,
                                    library: Path) -> None:
    status, _, err = call(capsys, "run", library, "-i", f"x={work / 'x.npy'}", "--bench",
                          "--repeat", "0")
    assert_user_error(status, err, "--repeat")


@pytest.mark.parametrize(("args", "needles"), [
    (["--stage", "tir", "--group", "fused_nope"], ["fused_nope", *GROUPS]),
    (["--stage", "fused", "--group", "fused_nope"], ["fused_nope", *GROUPS]),
    (["--stage", "graph", "--group", GROUPS[0]], ["--group"]),
    (["--stage", "fused", "--op", "conv2d"], ["no group holds an op 'conv2d'", "softmax"]),
    (["--stage", "cuda"], ["--stage cuda needs a cuda target"]),
    (["--stage", "tir", "--tuning-db", "nope.jsonl"], ["nope.jsonl: no such file"]),
    (["--stage", "bytecode"], ["invalid choice: 'bytecode'"]),
    ([], ["required", "--stage"]),
])
def test_inspect_errors(capsys: pytest.CaptureFixture, work: Path, args: list[str],
                        needles: list[str]) -> None:
    status, _, err = call(capsys, "inspect", work / "model.py", *SHAPE, *args)
    assert_user_error(status, err, *needles)


def test_inspect_symbolic_model(capsys: pytest.CaptureFixture, work: Path) -> None:
    """Symbolic dims reach the kernels: their TIR binds the dim from a buffer's shape."""
    status, out, _ = call(capsys, "inspect", work / "model.py", "--stage", "tir")
    assert status == 0 and "T.int32()" in out


@pytest.mark.parametrize(("args", "needles"), [
    ([], ["required", "COMMAND"]),
    (["frobnicate"], ["invalid choice: 'frobnicate'"]),
])
def test_bad_command(capsys: pytest.CaptureFixture, args: list[str], needles: list[str]) -> None:
    status, _, err = call(capsys, *args)
    assert_user_error(status, err, *needles)


def test_inspect_colours_a_terminal_only(capsys: pytest.CaptureFixture, work: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    _, piped, _ = call(capsys, "inspect", work / "model.py", "--stage", "scheduled", *SHAPE)
    assert "\x1b[" not in piped
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    _, coloured, _ = call(capsys, "inspect", work / "model.py", "--stage", "scheduled", *SHAPE)
    assert "\x1b[" in coloured
    assert re.sub(r"\x1b\[[0-9;]*m", "", coloured) == piped     # the same text, coloured
    monkeypatch.setenv("NO_COLOR", "1")
    _, plain, _ = call(capsys, "inspect", work / "model.py", "--stage", "scheduled", *SHAPE)
    assert plain == piped
