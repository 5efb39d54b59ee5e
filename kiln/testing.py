"""Test utilities: random feeds for a graph, and compiled-vs-reference comparison."""

from __future__ import annotations

import numpy as np

from kiln.compiler import compile as kiln_compile
from kiln.ir.graph import Graph
from kiln.ir.interpreter import run_reference


def random_inputs(g: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    """Random feeds for every graph input: normal floats, small ints, random bools."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for v in g.inputs:
        shape = v.type.static_shape
        dt = v.dtype.np
        if dt.kind == "f":
            feeds[v.name] = rng.standard_normal(shape).astype(dt)
        elif dt.kind == "b":
            feeds[v.name] = rng.random(shape) < 0.5
        else:
            feeds[v.name] = rng.integers(-3, 4, size=shape).astype(dt)
    return feeds


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| / max |want|: the end-to-end accuracy measure."""
    scale = float(np.abs(want).max()) if want.size else 0.0
    err = float(np.abs(got.astype(np.float64) - want).max()) if want.size else 0.0
    return err / scale if scale else err


def assert_matches_reference(g: Graph, feeds: dict[str, np.ndarray] | None = None,
                             rtol: float = 1e-5, atol: float = 1e-5,
                             target: str = "x86") -> list[np.ndarray]:
    """Compile ``g``, run it, and check every output against the reference interpreter."""
    feeds = feeds if feeds is not None else random_inputs(g)
    got = kiln_compile(g, target=target)(**feeds)
    assert_outputs_close(got, run_reference(g, feeds), rtol=rtol, atol=atol)
    return got


def assert_outputs_close(got: list[np.ndarray], want: list[np.ndarray], rtol: float,
                         atol: float) -> None:
    """Same count, shapes and dtypes, and values within ``rtol``/``atol``."""
    assert len(got) == len(want), (len(got), len(want))
    for out, ref in zip(got, want, strict=True):
        assert out.shape == ref.shape, (out.shape, ref.shape)
        assert out.dtype == ref.dtype, (out.dtype, ref.dtype)
        np.testing.assert_allclose(out, ref, rtol=rtol, atol=atol)
