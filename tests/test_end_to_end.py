"""End to end: a Python-built transformer encoder compiled, exported, reloaded in a fresh
process (with kiln, and with the plain TVM runtime), and compared with the reference."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import kiln
from kiln.testing import relative_error

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from encoder import build_encoder  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def encoder_lib(tmp_path_factory):
    g = build_encoder(layers=2, hidden=256, heads=4, ffn=1024, seq=128, batch=1)
    lib = kiln.compile(g, target="x86")
    path = lib.export(tmp_path_factory.mktemp("lib") / "encoder.so")
    x = np.random.default_rng(3).standard_normal((1, 128, 256)).astype(np.float32)
    (ref,) = kiln.run_reference(g, x=x)
    return g, lib, path, x, ref


def test_encoder_matches_reference_in_process(encoder_lib) -> None:
    _, lib, _, x, ref = encoder_lib
    (out,) = lib(x=x)
    assert relative_error(out, ref) < 1e-4


def _run_fresh(code: str, tmp_path: Path, x: np.ndarray) -> np.ndarray:
    np.save(tmp_path / "x.npy", x)
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(code))
    subprocess.run([sys.executable, str(script)], check=True, cwd=tmp_path, timeout=300)
    return np.load(tmp_path / "y.npy")


def test_exported_library_reloads_in_a_fresh_process(encoder_lib, tmp_path) -> None:
    _, _, path, x, ref = encoder_lib
    out = _run_fresh(f"""
        import numpy as np, kiln
        lib = kiln.load({str(path)!r})
        assert [s.name for s in lib.inputs] == ["x"], lib.inputs
        (y,) = lib(x=np.load("x.npy"))
        np.save("y.npy", y)
    """, tmp_path, x)
    assert relative_error(out, ref) < 1e-4


def test_exported_library_runs_on_the_plain_tvm_runtime(encoder_lib, tmp_path) -> None:
    _, _, path, x, ref = encoder_lib
    out = _run_fresh(f"""
        import json, numpy as np, tvm
        from tvm import relax
        vm = relax.VirtualMachine(tvm.runtime.load_module({str(path)!r}), tvm.cpu())
        meta = json.loads(bytes(vm["kiln_meta"]().numpy()))
        assert meta["inputs"][0]["shape"] == [1, 128, 256], meta
        y = vm["main"](tvm.runtime.tensor(np.load("x.npy")))
        np.save("y.npy", y.numpy())
    """, tmp_path, x)
    assert relative_error(out, ref) < 1e-4


def test_library_signature_and_input_errors(encoder_lib) -> None:
    _, lib, _, x, _ = encoder_lib
    assert lib.inputs[0].shape == (1, 128, 256) and lib.outputs[0].dtype == "float32"
    with pytest.raises(kiln.InputError, match="'x'.*shape"):
        lib(x=x[:, :64])
    with pytest.raises(kiln.InputError, match="'x'.*dtype"):
        lib(x=x.astype(np.float64))
    with pytest.raises(kiln.InputError, match="unknown input.*'y'"):
        lib(x=x, y=x)
    with pytest.raises(kiln.InputError, match="missing input.*'x'"):
        lib()
    assert np.array_equal(lib(x)[0], lib(x=x)[0])           # positional works too


def test_every_kernel_is_scheduled(encoder_lib) -> None:
    _, lib, _, _, _ = encoder_lib
    c = lib.compilation
    assert len(c.kernels) == len(c.fused.groups) == 30
    for k in c.kernels:
        script = k.func.script()
        assert "T.vectorized" in script, k.name                 # inner loops are vectorised
        if k.group.kind.value in ("out-fusable", "reduction"):
            assert "T.parallel" in script, k.name


@pytest.mark.parametrize("stage,needles", [
    ("graph", ["graph encoder(%x: f32[1, 128, 256])", "= layer_norm(", "= softmax("]),
    ("fused", ["group fused_dense_add_gelu [out-fusable]", "group fused_softmax [reduction]",
               "group fused_layer_norm [reduction]"]),
    ("scheduled", ["# gemm M=128 N=1024 K=256", "T.parallel",
             "T.vectorized", 'scope="local"']),
])
def test_inspect_shows_every_stage_of_the_encoder(stage: str, needles: list[str]) -> None:
    example = Path(__file__).resolve().parents[1] / "examples" / "encoder.py"
    out = subprocess.run([sys.executable, "-m", "kiln", "inspect", str(example), "--stage", stage],
                         check=True, capture_output=True, text=True, timeout=300).stdout
    for needle in needles:
        assert needle in out, needle
