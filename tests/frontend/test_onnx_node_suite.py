"""ONNX's own backend node tests (``onnx.backend.test``, every node case) through kiln.

onnx's ``BackendTest`` builds one unittest method per case and device; each compiles the case's
model once with ``KilnBackend.prepare`` (``kiln.compile(model, target="x86")``), runs every
data set and compares with onnx's ``Runner.assert_similar_outputs`` (shapes, dtypes, values
within the case's rtol/atol). Only the node-test class is kept, CPU methods only.

``onnx_node_expectations.txt`` lists each case that does not pass: ``excluded`` ones (training,
random, string, sequence, optional) are skipped; ``fails`` ones are ``xfail(strict=True)``, so
a case that starts passing fails here until the file is regenerated with

    python -m kiln.frontend.onnx_backend \\
        --write-expectations tests/frontend/onnx_node_expectations.txt

A ``fails`` case whose reason starts with ``crash:`` or ``timeout:`` runs in a subprocess, so
that it cannot take the test process down. ``conftest.py`` prints the counts at the end.
"""

from __future__ import annotations

import functools
import unittest
import warnings
from collections.abc import Callable
from pathlib import Path

import onnx.backend.test
import pytest

from kiln.errors import first_line
from kiln.frontend.onnx_backend import (
    ISOLATE_PREFIXES,
    KilnBackend,
    node_test_cases,
    read_expectations,
    run_case_isolated,
)

EXPECTATIONS = Path(__file__).with_name("onnx_node_expectations.txt")
ISOLATED_TIMEOUT_S = 30
REGENERATE = ("python -m kiln.frontend.onnx_backend --write-expectations "
              "tests/frontend/onnx_node_expectations.txt")


def _short_failure(func: Callable[[unittest.TestCase], None]
                   ) -> Callable[[unittest.TestCase], None]:
    """The test, failing with a one-line AssertionError: for an expected failure pytest would
    otherwise spend ~0.2 s formatting a long traceback through kiln and onnx nobody reads."""
    @functools.wraps(func)
    def test(self: unittest.TestCase) -> None:
        try:
            func(self)
        except unittest.SkipTest:
            raise
        except Exception as e:
            raise AssertionError(f"{type(e).__name__}: {first_line(e)}") from None
    return test


def _isolated(name: str) -> Callable[[unittest.TestCase], None]:
    def test(self: unittest.TestCase) -> None:
        # a case that hangs costs this much of a worker: what it needs when it works
        verdict = run_case_isolated(node_test_cases()[name], timeout_s=ISOLATED_TIMEOUT_S)
        assert verdict.status == "passed", verdict.reason
    test.__name__ = f"{name}_cpu"
    test.__doc__ = f"{name}, in a subprocess: in this process it crashes or hangs"
    return test


def _node_tests() -> type[unittest.TestCase]:
    """onnx's node-test class for kiln, with each listed case marked as the file says."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # onnx's case generators overflow casts on purpose
        cls = onnx.backend.test.BackendTest(KilnBackend, __name__).test_cases[
            "OnnxBackendNodeModelTest"]
    expectations = read_expectations(EXPECTATIONS)
    for attr, func in list(vars(cls).items()):
        if not attr.startswith("test_"):
            continue
        if not attr.endswith("_cpu"):   # CUDA: KilnBackend.supports_device says no
            delattr(cls, attr)
            continue
        name = attr.removesuffix("_cpu")
        if name not in expectations:
            continue
        status, reason = expectations[name]
        if status == "excluded":
            func = pytest.mark.skip(reason=f"excluded: {reason}")(func)
        else:
            isolate = reason.startswith(ISOLATE_PREFIXES)
            func = _isolated(name) if isolate else _short_failure(func)
            func = pytest.mark.xfail(strict=True, reason=f"{reason} (once it passes: "
                                                         f"{REGENERATE})")(func)
        setattr(cls, attr, func)
    return cls


OnnxBackendNodeModelTest = _node_tests()


def test_expectations_name_node_tests() -> None:
    """Every case the file lists exists in this onnx, so no stale line hides anything."""
    listed = set(read_expectations(EXPECTATIONS))
    stale = sorted(listed - set(node_test_cases()))
    assert not stale, f"not node tests of this onnx: {stale}; regenerate: {REGENERATE}"
