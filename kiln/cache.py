"""The compile cache: ``kiln.compile(model, cache=True)`` builds a library once per model,
target and kiln / TVM version, and afterwards loads it from disk.

The key is a SHA-256 over everything the library depends on: the model's bytes (an ONNX
file's, with any external-data files it names; a ``kiln.Graph``'s printed IR plus the bytes
of its constants), ``input_shapes`` and ``constants``, the target (name, ``-mcpu``, features),
the tuning database's bytes, and kiln's and TVM's versions. A change to any of them is a new
entry; nothing is ever served stale. Each entry is two files in the cache directory
(``cache=<dir>``, else ``$KILN_CACHE_DIR``, else ``$XDG_CACHE_HOME/kiln`` or
``~/.cache/kiln``)::

    <key>.so      the library, as ``Library.export`` writes it
    <key>.json    its SHA-256, size and what it was compiled from

Both are written to temporary names and renamed into place, so a crash or a concurrent
compile never leaves half an entry. A hit re-hashes the ``.so``: an entry that does not match
its record (a truncated or overwritten file) is deleted and rebuilt. A library from the cache
has no ``compilation`` (the stages of a compile that did not happen); compile without the
cache to inspect them. Libraries that do not run on this machine (cross-compiled aarch64,
CUDA) are not cached.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tvm

from kiln.codegen.library import Library, load
from kiln.errors import KilnError
from kiln.ir.graph import Graph
from kiln.target import Target
from kiln.version import __version__

CACHE_FORMAT = 1
_CHUNK = 1 << 22


def cache_dir(where: str | os.PathLike | bool) -> Path:
    """The directory ``cache=where`` names (``True``: the default)."""
    if where is not True:
        return Path(where)
    if os.environ.get("KILN_CACHE_DIR"):
        return Path(os.environ["KILN_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "kiln"


def cache_key(model: object, target: Target, input_shapes: Mapping | None = None,
              constants: Mapping[str, np.ndarray] | None = None,
              tuning_db: str | os.PathLike | None = None) -> str:
    """The entry's name: SHA-256 (hex) of what the library depends on (module docstring)."""
    h = hashlib.sha256()
    _text(h, f"kiln-cache {CACHE_FORMAT} kiln {__version__} tvm {tvm.__version__}")
    _text(h, json.dumps([target.name, target.mcpu, target.arch, list(target.mattr),
                         target.vnni, target.vbmi]))
    if isinstance(model, Mapping):
        for name, g in model.items():
            _text(h, f"entry {name}")
            _model(h, g)
    else:
        _model(h, model)
    _text(h, json.dumps({k: list(v) for k, v in (input_shapes or {}).items()},
                        sort_keys=True))
    for name, arr in sorted((constants or {}).items()):
        _text(h, f"constant {name}")
        _array(h, np.asarray(arr))
    if tuning_db is not None:
        _text(h, "tuning")
        _file(h, Path(tuning_db))
    return h.hexdigest()


def compile_cached(key: str, where: str | os.PathLike | bool, build: Callable[[], Library]
                   ) -> Library:
    """The library of entry ``key`` in the cache ``where``: loaded when present and intact,
    else ``build()``, stored, and returned."""
    folder = cache_dir(where)
    so, record = folder / f"{key}.so", folder / f"{key}.json"
    if so.is_file() and record.is_file():
        lib = _load_entry(so, record)
        if lib is not None:
            return lib
        for stale in (so, record):                 # corrupt: rebuilt below
            stale.unlink(missing_ok=True)
    lib = build()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise KilnError(f"cannot create the compile cache {folder}: {e.strerror}") from None
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=folder)
    os.close(fd)
    try:
        lib.export(tmp)
        info = {"sha256": _sha256(Path(tmp)), "size": Path(tmp).stat().st_size,
                "kiln": __version__, "tvm": tvm.__version__, "name": lib.name}
        os.replace(tmp, so)
        _write_atomic(record, json.dumps(info, indent=1))
    finally:
        Path(tmp).unlink(missing_ok=True)
    return lib


def _load_entry(so: Path, record: Path) -> Library | None:
    """The entry's library, or None when it does not match its record."""
    try:
        info = json.loads(record.read_text())
        if info.get("size") != so.stat().st_size or info.get("sha256") != _sha256(so):
            return None
        return load(so)
    except (OSError, ValueError, KilnError):
        return None


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(suffix=".json", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


# -- hashing ------------------------------------------------------------------------------------
def _text(h: Any, s: str) -> None:
    data = s.encode()
    h.update(len(data).to_bytes(8, "little"))
    h.update(data)


def _array(h: Any, arr: np.ndarray) -> None:
    _text(h, f"{arr.dtype.str} {arr.shape}")
    h.update(np.ascontiguousarray(arr).reshape(-1).view(np.uint8))


def _file(h: Any, path: Path) -> None:
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except OSError as e:
        raise KilnError(f"cannot read {path}: {e.strerror}") from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    _file(h, path)
    return h.hexdigest()


def _model(h: Any, model: object) -> None:
    if isinstance(model, Graph):
        _text(h, "graph\n" + str(model))
        for c in model.constants():
            _array(h, c.data)
    elif isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_file():
            raise KilnError(f"no such model file: {path}")
        try:
            data = path.read_bytes()
        except OSError as e:
            raise KilnError(f"cannot read {path}: {e.strerror}") from None
        _text(h, "onnx file")
        h.update(data)
        for extra in _external_data(path, data):
            _text(h, f"external {extra.name}")
            _file(h, extra)
    elif type(model).__name__ == "ModelProto":
        _text(h, "onnx model")
        h.update(model.SerializeToString())
    else:
        raise KilnError(f"cannot compile a {type(model).__name__}: pass a kiln.Graph, an ONNX "
                        "file path or an onnx.ModelProto")


def _external_data(path: Path, data: bytes) -> list[Path]:
    """The files an ONNX model's external-data tensors name (none for most models: a byte
    search for the key ``location`` decides; only a hit parses the model)."""
    if b"location" not in data:
        return []
    import onnx
    model = onnx.load_from_string(data)
    names = {e.value for t in model.graph.initializer
             if t.data_location == onnx.TensorProto.EXTERNAL
             for e in t.external_data if e.key == "location"}
    return [path.parent / n for n in sorted(names)]
