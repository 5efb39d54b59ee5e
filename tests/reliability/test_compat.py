"""Every library records the kiln and TVM versions, the target and its input signature, and
``kiln.load`` refuses, with a message saying what to do, one it cannot run: written by a newer
kiln, built against another TVM release, or built for instructions this CPU lacks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tvm

import kiln
from kiln import ops
from kiln.codegen import compat
from kiln.target import get_target


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    g = kiln.Graph("compat")
    x = g.input("x", ("n", 8), "float32")
    g.output(ops.relu(ops.add(x, 1.0)))
    return kiln.compile(g, "x86").export(tmp_path_factory.mktemp("lib") / "compat.so")


def test_a_library_records_its_build_and_signature(exported: Path) -> None:
    lib = kiln.load(exported)
    build = lib.meta["build"]
    assert build["kiln"] == kiln.__version__ and build["tvm"] == tvm.__version__
    assert build["target"] == "x86" and build["mcpu"] == get_target("x86").mcpu
    assert lib.meta["format"] == compat.READS_FORMATS
    assert lib.meta["inputs"] == [{"name": "x", "shape": ["n", 8], "dtype": "float32"}]
    (y,) = lib(x=np.full((3, 8), -2.0, np.float32))
    np.testing.assert_array_equal(y, np.zeros((3, 8), np.float32))


def test_a_newer_format_is_refused() -> None:
    with pytest.raises(kiln.KilnError, match="newer kiln .*format 4.*upgrade kiln"):
        compat.check_compatible({"format": 4}, "lib.so")


def test_another_tvm_release_is_refused(exported: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built = tvm.__version__
    major, minor = built.split(".")[:2]
    monkeypatch.setattr(tvm, "__version__", f"{major}.{int(minor) + 1}.0")
    with pytest.raises(kiln.KilnError) as e:
        kiln.load(exported)
    assert (f"built with TVM {built} (kiln {kiln.__version__}) and this runtime is TVM "
            f"{major}.{int(minor) + 1}.0: rebuild it with this kiln") in str(e.value)


def test_a_patch_release_of_tvm_is_accepted(exported: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    major, minor = tvm.__version__.split(".")[:2]
    monkeypatch.setattr(tvm, "__version__", f"{major}.{minor}.9")
    assert kiln.load(exported).name == "compat"


def test_missing_instructions_are_refused(exported: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Libraries for the AVX-512 class and for the AVX2 class, loaded where the CPU has AVX2
    but no AVX-512: the first is refused, naming the instructions, the second loads."""
    haswell = compat.required_features("haswell")
    assert {"avx2", "fma"} <= haswell and "avx512f" not in haswell
    g = kiln.Graph("isa")
    g.output(ops.neg(g.input("x", (4,), "float32")))
    avx512 = kiln.compile(g, "x86-avx512").export(exported.parent / "avx512.so")
    avx2 = kiln.compile(g, "x86-avx2").export(exported.parent / "avx2.so")
    monkeypatch.setattr(compat, "host_features", lambda: haswell)
    with pytest.raises(kiln.KilnError, match=r"built for x86-avx512 \(skylake-avx512\), whose "
                                             r"instructions this CPU lacks \(avx512.*\): "
                                             "compile it for this machine"):
        kiln.load(avx512)
    assert kiln.load(avx2).meta["build"]["mcpu"] == "haswell"


def test_libraries_without_a_build_record_still_load() -> None:
    compat.check_compatible({"format": 2, "name": "old"}, "old.so")      # no exception
