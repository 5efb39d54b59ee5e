"""Real pretrained models (``tests/models/MANIFEST.json``) compiled for x86 and compared with
onnxruntime on the same inputs. Run with ``make test-models``, which fetches them first.

Tolerances follow the issue: float paths within 1e-4 of the output's scale (max |kiln - ort| /
max |ort|); int8 paths within one quantisation step of the output (its range / 255).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from fetch import example_feeds, manifest  # tests/models/fetch.py (on sys.path in pytest)

import kiln

ort = pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.models

CACHE = Path(os.environ.get("KILN_MODELS", Path(__file__).parents[2] / ".cache" / "models"))
MODELS = manifest()
INT8 = {"t5_span_encoder_int8"}
FLOAT_RTOL = 1e-4


def model_path(name: str) -> Path:
    path = CACHE / f"{name}.onnx"
    if not path.is_file():
        pytest.fail(f"{path} is missing: `make test-models` fetches the models into {CACHE}")
    return path


def run_ort(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), sess_options=opts,
                                providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def assert_close(name: str, got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g.shape == w.shape and g.dtype == w.dtype, (i, g.shape, w.shape, g.dtype)
        if not np.issubdtype(w.dtype, np.floating):
            np.testing.assert_array_equal(g, w)
            continue
        err = float(np.max(np.abs(g.astype(np.float64) - w)))
        scale = float(np.max(np.abs(w))) or 1.0
        if name in INT8:
            step = float(w.max() - w.min()) / 255 or 1.0
            assert err <= step, f"output {i}: max error {err:.3g} > one step {step:.3g}"
        else:
            assert err <= FLOAT_RTOL * scale, f"output {i}: max error {err:.3g}, scale {scale:.3g}"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_matches_onnxruntime(name: str) -> None:
    path = model_path(name)
    feeds = example_feeds(name)
    lib = kiln.compile(path, "x86", input_shapes={k: v.shape for k, v in feeds.items()})
    assert_close(name, lib(**feeds), run_ort(path, feeds))


def test_minilm_one_library_for_every_sequence_length() -> None:
    """MiniLM-L3 compiled once with a symbolic sequence length, run at 16, 77 and 128."""
    name = "paraphrase_minilm_l3"
    path = model_path(name)
    lib = kiln.compile(path, "x86", input_shapes={"input_ids": (1, "seq"),
                                                 "attention_mask": (1, "seq")})
    assert lib.inputs[0].shape == (1, "seq")
    for seq in (16, 77, 128):
        feeds = example_feeds(name, seed=seq, input_ids=(1, seq), attention_mask=(1, seq))
        assert_close(name, lib(**feeds), run_ort(path, feeds))
