"""kiln_run (examples/deploy_cpp) for the tests: build it with CMake, for this machine or for
aarch64, and run kiln libraries with it, under qemu-aarch64 for aarch64."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

RUNNER_SRC = Path(__file__).resolve().parents[1] / "examples" / "deploy_cpp"
RUNTIME_LIBS = ("libtvm_ffi.so", "libtvm_runtime.so")
ARM_SYSROOT = "/usr/aarch64-linux-gnu"       # Debian's aarch64 libc, for qemu-aarch64


def ffi_include() -> Path:
    import tvm_ffi
    return Path(tvm_ffi.__file__).parent / "include"


def host_libs(folder: Path) -> Path:
    """This machine's TVM runtime libraries (two wheels' folders), linked into one folder."""
    import tvm
    import tvm_ffi
    folder.mkdir(parents=True, exist_ok=True)
    for src in (Path(tvm_ffi.__file__).parent / "lib" / RUNTIME_LIBS[0],
                Path(tvm.__file__).parent / "lib" / RUNTIME_LIBS[1]):
        link = folder / src.name
        if not link.exists():
            link.symlink_to(src)
    return folder


def build_runner(build: Path, libs: Path, aarch64: bool = False) -> Path:
    """Configure and build kiln_run with CMake; ``aarch64`` cross-builds it."""
    cross = ["-DCMAKE_SYSTEM_NAME=Linux", "-DCMAKE_SYSTEM_PROCESSOR=aarch64",
             "-DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++"] if aarch64 else []
    subprocess.run(["cmake", "-S", str(RUNNER_SRC), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                    f"-DTVM_FFI_INCLUDE={ffi_include()}", f"-DTVM_LIBS={libs}", *cross],
                   check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build)], check=True, capture_output=True)
    return build / "kiln_run"


def run(runner: Path, library: Path, inputs: list[np.ndarray], work: Path,
        arm_libs: Path | None = None) -> list[np.ndarray]:
    """Run ``library`` on ``inputs`` with kiln_run; ``arm_libs``: under qemu-aarch64 with
    that aarch64 runtime. Returns the outputs read back from the .npy files it writes."""
    work.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, a in enumerate(inputs):
        paths.append(work / f"in_{i}.npy")
        np.save(paths[-1], a)
    cmd = [str(runner), str(library), str(work), *map(str, paths)]
    env = dict(os.environ)
    if arm_libs is not None:
        cmd = ["qemu-aarch64", *cmd]
        env |= {"QEMU_LD_PREFIX": ARM_SYSROOT, "LD_LIBRARY_PATH": str(arm_libs)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    return [np.load(p) for p in sorted(work.glob("out_*.npy"), key=lambda p: int(p.stem[4:]))]


def arm_tools_missing(libs: Path | None) -> str | None:
    """Why the aarch64 tests cannot run here, or None."""
    for tool in ("qemu-aarch64", "aarch64-linux-gnu-g++", "cmake"):
        if shutil.which(tool) is None:
            return f"needs {tool} (make test-arm installs it)"
    if libs is None or not all((libs / n).is_file() for n in RUNTIME_LIBS):
        return "needs the aarch64 TVM runtime (make test-arm fetches it: KILN_ARM_RUNTIME)"
    return None
