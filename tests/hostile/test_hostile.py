"""Hostile model files: every broken ONNX file of ``hostile_corpus`` gets one clear line.

Each case runs ``kiln compile FILE -o OUT.so`` in a process of its own (forked from a warm
``python -m kiln``, see ``warm_cli.py``; a few also as a fresh ``python -m kiln``) and must end
with exit status 2, one ``kiln: error:`` line on stderr naming the problem, no traceback, no
signal, no output file, within the timeout. ``kiln.compile`` must raise a ``KilnError`` with
the same message. The memory budget (``KILN_MAX_TENSOR_BYTES``) has tests of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from hostile_corpus import CASES, Case, model, relu_model, vi, write_corpus
from onnx import helper

import kiln
from kiln.cli import main
from kiln.errors import ConfigError, ModelError, shorten
from kiln.ir.verify import DEFAULT_MAX_TENSOR_BYTES, human_bytes, max_tensor_bytes

TIMEOUT = 60.0             # seconds per case; each takes about one
WARM_CLI = Path(__file__).with_name("warm_cli.py")
BY_NAME = {case.name: case for case in CASES}
# one case of each category also runs as a fresh `python -m kiln` (4 s each: TVM's imports)
FRESH = [next(c.name for c in CASES if c.category == cat)
         for cat in dict.fromkeys(c.category for c in CASES)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_corpus(tmp_path_factory.mktemp("hostile"))


class WarmCli:
    """A ``warm_cli.py`` server: runs ``kiln`` command lines in forked processes."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, str(WARM_CLI)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def run(self, argv: list[str], env: dict[str, str], out_dir: Path) -> tuple[dict, str, str]:
        """The end of ``kiln ARGV`` (status, signal, timed_out, seconds), its stdout, stderr."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        request = {"argv": argv, "env": env, "timeout": TIMEOUT,
                   "stdout": str(out_dir / "stdout.txt"), "stderr": str(out_dir / "stderr.txt")}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        result = json.loads(self.proc.stdout.readline())
        return (result, (out_dir / "stdout.txt").read_text(errors="replace"),
                (out_dir / "stderr.txt").read_text(errors="replace"))

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def warm_cli() -> Iterator[WarmCli]:
    server = WarmCli()
    yield server
    server.close()


def assert_one_clear_line(case: Case, status: int | None, err: str) -> None:
    """Status 2 and exactly one ``kiln: error:`` line holding each expected substring."""
    assert status == 2, (case.name, status, err[-2000:])
    assert "Traceback" not in err, err[-2000:]
    assert err.count("\n") == 1 and err.endswith("\n"), err[-2000:]
    assert err.startswith("kiln: error: "), err
    for needle in case.expect:
        assert needle in err, (case.name, needle, err)


@pytest.mark.parametrize("name", [c.name for c in CASES])
def test_cli_refuses_hostile_model(name: str, corpus: dict[str, Path], warm_cli: WarmCli,
                                   tmp_path: Path) -> None:
    case, path = BY_NAME[name], corpus[name]
    out = tmp_path / "out.so"
    result, stdout, err = warm_cli.run(["compile", str(path), "-o", str(out)], dict(case.env),
                                       tmp_path)
    assert not result["timed_out"], f"{name}: still running after {TIMEOUT} s"
    assert result["signal"] is None, f"{name}: killed by signal {result['signal']}: {err}"
    assert result["seconds"] < TIMEOUT
    assert_one_clear_line(case, result["status"], err)
    assert stdout == ""
    assert not out.exists()


@pytest.mark.parametrize("name", FRESH)
def test_fresh_process_refuses_hostile_model(name: str, corpus: dict[str, Path],
                                             tmp_path: Path) -> None:
    """The real entry point, as a user runs it: ``python -m kiln compile FILE -o OUT.so``."""
    case, out = BY_NAME[name], tmp_path / "out.so"
    proc = subprocess.run([sys.executable, "-m", "kiln", "compile", str(corpus[name]), "-o",
                           str(out)], capture_output=True, text=True, timeout=TIMEOUT + 30,
                          env={**os.environ, **dict(case.env)})
    assert proc.returncode >= 0, f"{name}: killed by signal {-proc.returncode}"
    assert_one_clear_line(case, proc.returncode, proc.stderr)
    assert proc.stdout == ""
    assert not out.exists()


@pytest.mark.parametrize("name", [c.name for c in CASES])
def test_api_raises_kiln_error(name: str, corpus: dict[str, Path],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    case = BY_NAME[name]
    for key, value in case.env:
        monkeypatch.setenv(key, value)
    with pytest.raises(kiln.KilnError) as info:   # any other exception type fails the test
        kiln.compile(corpus[name])
    message = str(info.value)
    for needle in case.expect:
        assert needle in message, (name, needle, message[:2000])


def test_corpus_is_large_and_varied() -> None:
    assert len(CASES) >= 50
    assert len({c.category for c in CASES}) >= 10
    assert all(c.expect for c in CASES)


def test_corpus_is_deterministic(tmp_path: Path) -> None:
    first, second = write_corpus(tmp_path / "a"), write_corpus(tmp_path / "b")
    for name in first:
        assert first[name].read_bytes() == second[name].read_bytes(), name


# -- the memory budget --------------------------------------------------------------------------
def symbolic_relu(path: Path) -> Path:
    m = model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", ["n", "m"])],
              [vi("y", ["n", "m"])])
    path.write_bytes(m.SerializeToString())
    return path


def test_budget_default_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KILN_MAX_TENSOR_BYTES", raising=False)
    assert max_tensor_bytes() == DEFAULT_MAX_TENSOR_BYTES == 2**40
    monkeypatch.setenv("KILN_MAX_TENSOR_BYTES", "4096")
    assert max_tensor_bytes() == 4096
    for bad in ("-1", "0", "1e9", "lots"):
        monkeypatch.setenv("KILN_MAX_TENSOR_BYTES", bad)
        with pytest.raises(ConfigError, match=f"KILN_MAX_TENSOR_BYTES='{bad}' is not a "
                                              "positive integer"):
            max_tensor_bytes()


def test_budget_refuses_input_shapes(tmp_path: Path) -> None:
    """A symbolic input fixed to an absurd shape is refused where it is declared."""
    path = symbolic_relu(tmp_path / "relu.onnx")
    with pytest.raises(ModelError, match=r"input 'x' \(\[1000000, 1000000\], 32-bit elements\) "
                                         r"would need 4000000000000 bytes \(3\.6 TiB\)"):
        kiln.compile(path, input_shapes={"x": (10**6, 10**6)})


def test_budget_refuses_python_graph_intermediate(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kiln.Graph is checked by the verifier: here an intermediate over a lowered budget."""
    from kiln import ops
    g = kiln.Graph("outer")
    x = g.input("x", (64,), "float32")
    y = g.input("y", (64,), "float32")
    g.output(ops.reshape(ops.mul(ops.reshape(x, (64, 1)), ops.reshape(y, (1, 64))), (4096,)))
    monkeypatch.setenv("KILN_MAX_TENSOR_BYTES", "8192")
    with pytest.raises(ModelError, match=r"output %\S+ \(\[64, 64\], 32-bit elements\) would "
                                         r"need 16384 bytes \(16\.0 KiB\), over kiln's limit "
                                         r"of 8192 bytes"):
        kiln.compile(g)


def test_budget_refuses_python_graph_input() -> None:
    g = kiln.Graph("huge")
    g.output(kiln.ops.relu(g.input("x", (1 << 20, 1 << 20), "float64")))
    with pytest.raises(ModelError, match=r"input %x .* would need 8796093022208 bytes "
                                         r"\(8\.0 TiB\)"):
        kiln.compile(g)


def test_budget_cli_input_shape(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    path = symbolic_relu(tmp_path / "relu.onnx")
    status = main(["compile", str(path), "-o", str(tmp_path / "r.so"),
                   "--input-shape", "x=1000000,1000000"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1
    assert "input 'x'" in err and "4000000000000 bytes" in err


def test_budget_lets_ordinary_models_through(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    monkeypatch.setenv("KILN_MAX_TENSOR_BYTES", "24")    # X and Y: 2x3 float32, 24 bytes
    path = tmp_path / "relu.onnx"
    path.write_bytes(relu_model().SerializeToString())
    lib = kiln.compile(path)
    x = np.array([[-1, 2, -3], [4, -5, 6]], np.float32)
    (y,) = lib(X=x)
    np.testing.assert_array_equal(y, np.maximum(x, 0))


def test_human_bytes() -> None:
    assert [human_bytes(n) for n in (0, 1023, 1024, 3 << 20, 2**40, 2**70)] == [
        "0 B", "1023 B", "1.0 KiB", "3.0 MiB", "1.0 TiB", "1024.0 EiB"]


# -- one line, whatever the error ---------------------------------------------------------------
def test_shorten_keeps_both_ends() -> None:
    text = "perm [" + ", ".join(map(str, range(100_000))) + "] is not a permutation"
    short = shorten(text)
    assert len(short) <= 2000
    assert short.startswith("perm [0, 1, 2") and short.endswith("is not a permutation")
    assert "characters] ..." in short
    assert shorten("short") == "short"


def test_internal_error_is_one_line(capsys: pytest.CaptureFixture,
                                    monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An exception kiln did not mean to raise is a kiln bug: one line, status 1, a request
    to report it; KILN_TRACEBACK=1 lets the traceback through."""
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("invariant broken\nsecond line")

    path = tmp_path / "relu.onnx"
    path.write_bytes(relu_model().SerializeToString())
    monkeypatch.setattr(kiln, "compile", broken)
    status = main(["compile", str(path), "-o", str(tmp_path / "r.so")])
    err = capsys.readouterr().err
    assert status == 1
    assert err == ("kiln: internal error: RuntimeError: invariant broken (a bug in kiln: "
                   "please report it, with the traceback that KILN_TRACEBACK=1 prints)\n")
    monkeypatch.setenv("KILN_TRACEBACK", "1")
    with pytest.raises(RuntimeError, match="invariant broken"):
        main(["compile", str(path), "-o", str(tmp_path / "r.so")])


def test_model_proto_with_bytes_name() -> None:
    """A ModelProto handed to the API directly is checked like a file (invalid UTF-8)."""
    data = relu_model().SerializeToString().replace(b"relu", b"\xff\xfe\xfd\xfc")
    with pytest.raises(ModelError, match=r"model\.graph\.node\[0\]\.name is not valid UTF-8"):
        kiln.compile(onnx.ModelProto.FromString(data))


def test_converter_out_of_memory_is_a_model_error(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    """A converter that folds a constant too large for this machine (under the budget) names
    its node instead of escaping as a MemoryError."""
    from kiln.frontend.onnx.context import CONVERTERS

    def greedy(node: onnx.NodeProto, ctx: object) -> list:
        raise MemoryError

    monkeypatch.setitem(CONVERTERS, "Relu", greedy)
    path = tmp_path / "relu.onnx"
    path.write_bytes(relu_model().SerializeToString())
    with pytest.raises(ModelError, match=r"ONNX node relu \(Relu, opset 17\): out of memory "
                                         "building its result at import"):
        kiln.compile(path)
