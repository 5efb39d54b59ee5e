"""The runnable examples in examples/: each runs as a user would run it, in a fresh process,
and its output says what it should."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from kiln.target import ARM_CC

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str) -> str:
    proc = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_custom_model() -> None:
    out = run_example("custom_model.py")
    assert re.search(r"^keyword spotter: .* 12 kernels for x86", out, re.M), out
    m = re.search(r"sum to (\S+); the likeliest is #(\d+) \((\S+)\); error vs the reference "
                  r"interpreter (\S+)$", out, re.M)
    assert m, out
    total, best, p, err = float(m[1]), int(m[2]), float(m[3]), float(m[4])
    assert abs(total - 1) < 1e-5 and 0 <= best < 12 and 1 / 12 <= p <= 1 and err < 1e-4
    assert float(re.search(r"x86 latency: median (\S+) ms", out)[1]) > 0
    if shutil.which(ARM_CC):
        assert re.search(r"arm-neon: exported keyword_spotter_arm\.so, \d+ kB, an ELF for "
                         r"machine 183", out), out
    else:
        assert f"exporting needs {ARM_CC}" in out
    assert out.rstrip().endswith("custom_model OK")
