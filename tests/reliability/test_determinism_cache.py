"""The same model, target and kiln version give a byte-identical library, whatever the process
(Python's hash seed differs between processes) and however often it is compiled; the compile
cache serves that library again without compiling, and rebuilds an entry that was damaged."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import kiln
from kiln import ops

MODELS = Path(os.environ.get("KILN_MODELS", Path(__file__).parents[2] / ".cache" / "models"))


def _graph() -> kiln.Graph:
    rng = np.random.default_rng(0)
    g = kiln.Graph("det")
    x = g.input("x", (6, 64), "float32")
    h = ops.relu(ops.matmul(x, rng.standard_normal((64, 48)).astype(np.float32)))
    g.output(ops.softmax(h, axis=-1), ops.conv2d(ops.reshape(h, (1, 6, 6, 8)),
                                                 rng.standard_normal((4, 6, 3, 3))
                                                 .astype(np.float32), padding=(1, 1, 1, 1)))
    return g


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_two_compiles_in_one_process_are_byte_identical(tmp_path: Path) -> None:
    a = kiln.compile(_graph()).export(tmp_path / "a.so")
    b = kiln.compile(_graph()).export(tmp_path / "b.so")
    assert _digest(a) == _digest(b)


def test_compiles_in_processes_with_other_hash_seeds_are_byte_identical(tmp_path: Path) -> None:
    """An ONNX model (MobileNetV3) compiled by two fresh processes whose string hashing (set
    and dict order) differs."""
    model = MODELS / "ppocr_mobile_v2_cls.onnx"
    if not model.is_file():
        pytest.fail(f"{model} is missing: make test fetches it")
    script = textwrap.dedent("""
        import sys, kiln
        kiln.compile(sys.argv[1], input_shapes={"x": (1, 3, 48, 192)}).export(sys.argv[2])
    """)
    paths = []
    for seed in ("1", "2"):
        paths.append(tmp_path / f"cls_{seed}.so")
        subprocess.run([sys.executable, "-c", script, str(model), str(paths[-1])], check=True,
                       env={**os.environ, "PYTHONHASHSEED": seed}, timeout=600)
    assert _digest(paths[0]) == _digest(paths[1])


def test_the_cache_serves_the_library_it_stored(tmp_path: Path) -> None:
    x = np.random.default_rng(1).standard_normal((6, 64)).astype(np.float32)
    first = kiln.compile(_graph(), cache=tmp_path)
    assert first.compilation is not None
    (entry,) = tmp_path.glob("*.so")
    record = json.loads(entry.with_suffix(".json").read_text())
    assert record["sha256"] == _digest(entry) and record["kiln"] == kiln.__version__
    again = kiln.compile(_graph(), cache=tmp_path)
    assert again.compilation is None                   # loaded, not compiled
    for a, b in zip(first(x=x), again(x=x), strict=True):
        np.testing.assert_array_equal(a, b)
    # another target, other shapes: other entries
    kiln.compile(_graph(), "x86-avx2", cache=tmp_path)
    g = kiln.Graph("det")
    g.output(ops.neg(g.input("x", (6, 64), "float32")))
    kiln.compile(g, cache=tmp_path)
    assert len(list(tmp_path.glob("*.so"))) == 3 and not list(tmp_path.glob("tmp*"))


@pytest.mark.parametrize("damage", ["truncated", "overwritten", "record garbled",
                                    "record missing"])
def test_a_damaged_entry_is_rebuilt(tmp_path: Path, damage: str) -> None:
    kiln.compile(_graph(), cache=tmp_path)
    (entry,) = tmp_path.glob("*.so")
    record = entry.with_suffix(".json")
    good = _digest(entry)
    if damage == "truncated":
        entry.write_bytes(entry.read_bytes()[:4096])
    elif damage == "overwritten":
        data = bytearray(entry.read_bytes())
        data[len(data) // 2] ^= 0xFF
        entry.write_bytes(bytes(data))
    elif damage == "record garbled":
        record.write_text("{not json")
    else:
        record.unlink()
    lib = kiln.compile(_graph(), cache=tmp_path)
    assert lib.compilation is not None                 # compiled again
    assert _digest(entry) == good and json.loads(record.read_text())["sha256"] == good
    assert kiln.compile(_graph(), cache=tmp_path).compilation is None


def test_kiln_cache_dir_is_the_default_location(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KILN_CACHE_DIR", str(tmp_path / "from_env"))
    kiln.compile(_graph(), cache=True)
    assert len(list((tmp_path / "from_env").glob("*.so"))) == 1
