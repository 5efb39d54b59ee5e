"""Every GPU case of ``prepare_cases.py`` compiled here and checked against the reference
interpreter on this machine's GPU, in one process. Skipped without a GPU: the usual route is
``prepare_cases.py`` on the build machine and ``run_cases.py`` on the GPU host."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from kiln.codegen.cuda import has_gpu

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare_cases import graphs, prepare_case  # noqa: E402
from run_cases import run_case  # noqa: E402

pytestmark = pytest.mark.skipif(not has_gpu(), reason="needs an NVIDIA GPU and its driver")


@pytest.mark.parametrize("name", sorted(graphs()))
def test_case_matches_the_reference_on_the_gpu(name: str, tmp_path: Path) -> None:
    ok, message = run_case(prepare_case(tmp_path, name, graphs()[name]))
    assert ok, message
