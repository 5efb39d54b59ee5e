"""The README's Python example runs as written (so the README stays true)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest


def test_readme_python_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = re.search(r"```python\n(import numpy as np\nimport kiln.*?)```", readme, re.S)
    assert code, "README has no kiln Python example"
    monkeypatch.chdir(tmp_path)
    exec(compile(code.group(1), "README.md", "exec"), {})
    assert (tmp_path / "mlp.so").is_file()
