"""Corrupt and unsupported ONNX models, broken libraries and bad run-time inputs.

Every corpus file is made here, in tmp_path, from a small real model (a CNN: Conv, Relu,
MaxPool, Flatten, Gemm, Softmax): cuts of its bytes, random bytes, an empty file, protobufs that
are not models, models kiln cannot compile. For each, the Python API raises a ``KilnError``
subclass whose first line says what is wrong, and the CLI (``kiln compile``, ``kiln inspect``,
``kiln run``), run as a subprocess, prints that one line and exits with status 2: no
traceback, no crash.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
import onnx.reference
import pytest
from google.protobuf.message import DecodeError
from onnx import TensorProto, helper, numpy_helper

import kiln
from kiln.errors import InputError, KilnError, ModelError
from kiln.frontend.onnx_backend import KilnBackend

F32 = TensorProto.FLOAT


# -- the corpus ---------------------------------------------------------------------------------
def small_cnn() -> onnx.ModelProto:
    """A small image classifier: x[1, 3, 12, 12] -> probs[1, 5]."""
    rng = np.random.default_rng(0)

    def init(name: str, *shape: int) -> TensorProto:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "conv.w", "conv.b"], ["c"], name="conv",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2],
                         strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["logits"], name="fc", transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1),
    ]
    graph = helper.make_graph(
        nodes, "small_cnn", [helper.make_tensor_value_info("x", F32, [1, 3, 12, 12])],
        [helper.make_tensor_value_info("probs", F32, [1, 5])],
        [init("conv.w", 4, 3, 3, 3), init("conv.b", 4), init("fc.w", 5, 4 * 6 * 6),
         init("fc.b", 5)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                             ir_version=10, producer_name="kiln-tests")


def one_node_model(nodes: list[onnx.NodeProto], opsets: dict[str, int],
                   inputs: list[onnx.ValueInfoProto] | None = None,
                   outputs: list[onnx.ValueInfoProto] | None = None) -> onnx.ModelProto:
    """Nodes reading x (float32[2, 3] unless given) and writing y."""
    graph = helper.make_graph(
        nodes, "g", inputs or [helper.make_tensor_value_info("x", F32, [2, 3])],
        outputs or [helper.make_tensor_value_info("y", F32, None)])
    return helper.make_model(graph, ir_version=10, opset_imports=[
        helper.make_opsetid(domain, version) for domain, version in opsets.items()])


def unsupported_ops() -> onnx.ModelProto:
    """An op no domain has, and ops of two custom domains (one imported, one not)."""
    nodes = [
        helper.make_node("NoSuchOp", ["x"], ["a"], name="mystery"),
        helper.make_node("NoSuchOp", ["a"], ["b"], name="mystery_2"),
        helper.make_node("FusedThing", ["b"], ["c"], name="contrib", domain="com.microsoft"),
        helper.make_node("Frobnicate", ["c"], ["y"], name="frob", domain="com.example"),
    ]
    return one_node_model(nodes, {"": 17, "com.microsoft": 1})


def serialized(model: onnx.ModelProto) -> bytes:
    return model.SerializeToString()


CNN = serialized(small_cnn())
# what each corpus file holds, and what its error message must say
BAD_MODELS: dict[str, tuple[Callable[[], bytes], tuple[str, ...]]] = {
    **{f"cut_{k}": (lambda k=k: CNN[:len(CNN) * k // 8], ("truncated",)) for k in range(1, 8)},
    "cut_first_byte": (lambda: CNN[:1], ("truncated",)),
    "cut_last_byte": (lambda: CNN[:-1], ("truncated",)),
    **{f"random_{seed}": (lambda seed=seed: np.random.default_rng(seed).bytes(512),
                          ("not an ONNX model",)) for seed in range(3)},
    "empty": (lambda: b"", ("is empty",)),
    "text": (lambda: b"name: not a model\n", ("not an ONNX model",)),
    "tensor_proto": (lambda: serialized(numpy_helper.from_array(np.ones(4, np.float32), "t")),
                     ("not an ONNX model",)),
    "graph_proto": (lambda: serialized(small_cnn().graph), ("not an ONNX model",)),
    "unsupported_ops": (lambda: serialized(unsupported_ops()), (
        "unsupported ONNX ops: NoSuchOp (domain ai.onnx, opset 17; nodes mystery, mystery_2); "
        "FusedThing (custom domain com.microsoft, opset 1; node contrib); "
        "Frobnicate (custom domain com.example, no opset imported; node frob)",)),
    "opset_99": (lambda: serialized(one_node_model([helper.make_node("Relu", ["x"], ["y"])],
                                                   {"": 99})), ("opset 99", "up to")),
    "no_default_opset": (lambda: serialized(one_node_model(
        [helper.make_node("Relu", ["x"], ["y"])], {"ai.onnx.ml": 3})), ("no opset",)),
    "string_input": (lambda: serialized(one_node_model(
        [helper.make_node("Identity", ["x"], ["y"])], {"": 17},
        [helper.make_tensor_value_info("x", TensorProto.STRING, [2])],
        [helper.make_tensor_value_info("y", TensorProto.STRING, [2])])),
                     ("input 'x'", "STRING")),
}


@pytest.fixture
def corpus(tmp_path: Path) -> Callable[[str], Path]:
    def write(name: str) -> Path:
        path = tmp_path / f"{name}.onnx"
        path.write_bytes(BAD_MODELS[name][0]())
        return path
    return write


# Each CLI run below is a process of its own, with its own exit status, stdout and stderr; so
# that ~40 of them do not each pay ~1 s to import TVM, one driver process per test worker imports
# kiln once and forks a child per command, which runs ``kiln.cli.main`` as ``python -m kiln``
# would (an uncaught exception prints its traceback, status 1). A crash kills only the child and
# shows as a negative status. test_python_m_kiln checks the real entry point the same way.
DRIVER = r"""
import json, os, sys, tempfile, traceback
import kiln.cli
for line in sys.stdin:
    argv = json.loads(line)
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    pid = os.fork()
    if pid == 0:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        try:
            status = kiln.cli.main(argv)
        except SystemExit as e:
            status = e.code if isinstance(e.code, int) else 1
        except BaseException:
            traceback.print_exc()
            status = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    _, wait = os.waitpid(pid, 0)
    code = -os.WTERMSIG(wait) if os.WIFSIGNALED(wait) else os.WEXITSTATUS(wait)
    texts = []
    for f in (out, err):
        f.seek(0)
        texts.append(f.read().decode(errors="replace"))
        f.close()
    print(json.dumps([code, *texts]), flush=True)
"""


class _Driver:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", DRIVER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def run(self, argv: list[str]) -> subprocess.CompletedProcess:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(argv) + "\n")
        self.proc.stdin.flush()
        code, out, err = json.loads(self.proc.stdout.readline())
        return subprocess.CompletedProcess(["kiln", *argv], code, out, err)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(30)


_driver: _Driver | None = None


@pytest.fixture(scope="module", autouse=True)
def _cli_driver() -> Iterator[None]:
    global _driver
    _driver = _Driver()
    yield
    _driver.close()
    _driver = None


def kiln_cli(*args: str | Path) -> subprocess.CompletedProcess:
    """``kiln ARGS`` in a process of its own (forked by the driver)."""
    assert _driver is not None
    return _driver.run([str(a) for a in args])


def python_m_kiln(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kiln", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit status 2, nothing on stdout, one ``kiln: error:`` line on stderr."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout == "", proc.stdout
    assert proc.stderr.startswith("kiln: error: ") and proc.stderr.count("\n") == 1, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr)


def assert_clear(e: BaseException, *needles: str) -> None:
    message = str(e)
    assert message and "\n" not in message and "Traceback" not in message, message
    for needle in needles:
        assert needle in message, (needle, message)


# -- models kiln cannot compile -----------------------------------------------------------------
def test_the_intact_model_compiles_and_runs(tmp_path: Path) -> None:
    """The corpus is cut from a model kiln compiles: the errors are the cuts' doing."""
    path = tmp_path / "cnn.onnx"
    path.write_bytes(CNN)
    x = np.random.default_rng(1).standard_normal((1, 3, 12, 12)).astype(np.float32)
    (probs,) = kiln.compile(path)(x)
    (want,) = onnx.reference.ReferenceEvaluator(small_cnn()).run(None, {"x": x})
    np.testing.assert_allclose(probs, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", sorted(BAD_MODELS))
def test_bad_model_python_api(corpus: Callable[[str], Path], name: str) -> None:
    path = corpus(name)
    needles = BAD_MODELS[name][1]
    with pytest.raises(ModelError) as e:
        kiln.compile(path)
    assert_clear(e.value, *needles)
    try:
        proto = onnx.load(path)
    except DecodeError:   # no proto to hand to the backend API
        return
    with pytest.raises(ModelError) as e:
        KilnBackend.prepare(proto)
    assert_clear(e.value, *needles)


@pytest.mark.parametrize("name", sorted(BAD_MODELS))
def test_bad_model_cli_compile(corpus: Callable[[str], Path], tmp_path: Path, name: str) -> None:
    out = tmp_path / "out.so"
    assert_one_line_error(kiln_cli("compile", corpus(name), "-o", out), *BAD_MODELS[name][1])
    assert not out.exists()


@pytest.mark.parametrize("name", ["cut_4", "random_0", "empty", "graph_proto",
                                  "unsupported_ops", "opset_99"])
def test_bad_model_cli_inspect(corpus: Callable[[str], Path], name: str) -> None:
    assert_one_line_error(kiln_cli("inspect", corpus(name), "--stage", "graph"),
                          *BAD_MODELS[name][1])


# -- libraries that cannot be loaded, inputs that do not fit ------------------------------------
@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small CNN compiled and exported."""
    return kiln.compile(small_cnn()).export(tmp_path_factory.mktemp("lib") / "cnn.so")


def bad_libraries(good: bytes) -> dict[str, bytes]:
    # cut inside the ELF header, inside the code, and inside the trailing section headers
    return {"empty": b"", "random": np.random.default_rng(0).bytes(4096),
            "text": b"not a library\n", "cut_header": good[:40], "cut_half": good[:len(good) // 2],
            "cut_tail": good[:-8]}


@pytest.mark.parametrize("name", ["empty", "random", "text", "cut_header", "cut_half",
                                  "cut_tail"])
def test_bad_library(library: Path, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.so"
    path.write_bytes(bad_libraries(library.read_bytes())[name])
    with pytest.raises(KilnError) as e:
        kiln.load(path)
    assert_clear(e.value, str(path), "not a loadable kiln library")
    assert_one_line_error(kiln_cli("run", path), "not a loadable kiln library")


GOOD_X = np.zeros((1, 3, 12, 12), np.float32)
BAD_INPUTS = {
    "wrong_rank": (GOOD_X[0], ("input 'x'", "[1, 3, 12, 12]", "[3, 12, 12]")),
    "wrong_dtype": (GOOD_X.astype(np.float64), ("input 'x'", "float32", "float64")),
    "wrong_dims": (np.zeros((1, 3, 12, 11), np.float32), ("input 'x'", "[1, 3, 12, 11]")),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input(library: Path, tmp_path: Path, name: str) -> None:
    array, needles = BAD_INPUTS[name]
    lib = kiln.load(library)
    with pytest.raises(InputError) as e:
        lib(x=array)
    assert_clear(e.value, *needles)
    rep = KilnBackend.prepare(small_cnn())
    with pytest.raises(InputError) as e:
        rep.run([array])
    assert_clear(e.value, *needles)
    np.save(tmp_path / "x.npy", array)
    assert_one_line_error(kiln_cli("run", library, "--input", f"x={tmp_path / 'x.npy'}"),
                          *needles)


def test_missing_and_unknown_inputs(library: Path, tmp_path: Path) -> None:
    lib = kiln.load(library)
    with pytest.raises(InputError) as e:
        lib()
    assert_clear(e.value, "missing input(s) 'x'")
    with pytest.raises(InputError) as e:
        lib(x=GOOD_X, y=GOOD_X)
    assert_clear(e.value, "unknown input(s) 'y'")
    rep = KilnBackend.prepare(small_cnn())
    with pytest.raises(InputError) as e:
        rep.run([])
    assert_clear(e.value, "'x'")
    with pytest.raises(InputError) as e:
        rep.run({})
    assert_clear(e.value, "missing input(s) 'x'")
    assert_one_line_error(kiln_cli("run", library), "missing input(s) 'x'")
    np.save(tmp_path / "y.npy", GOOD_X)
    assert_one_line_error(kiln_cli("run", library, "-i", f"y={tmp_path / 'y.npy'}"),
                          "unknown input(s) 'y'", "missing input(s) 'x'")


@pytest.mark.parametrize("command", ["compile", "inspect", "run"])
def test_python_m_kiln(corpus: Callable[[str], Path], tmp_path: Path, command: str) -> None:
    """The real entry point, once per command: one line, status 2."""
    if command == "run":
        path = tmp_path / "cut.so"
        path.write_bytes(b"\x7fELF" + bytes(60))
        assert_one_line_error(python_m_kiln("run", path), "not a loadable kiln library")
        return
    extra = ["-o", tmp_path / "out.so"] if command == "compile" else ["--stage", "graph"]
    assert_one_line_error(python_m_kiln(command, corpus("cut_4"), *extra), "truncated")
