"""CUDA libraries that run where no compiler is: device code compiled ahead of time.

TVM 0.27 stores a CUDA module as machine code only when its CUDA runtime
(``tvm/lib/libtvm_runtime_cuda.so``) is loaded while compiling; otherwise it keeps CUDA C
source, which the GPU host must then compile at load time (nvcc or NVRTC there). That runtime
links against the driver, ``libcuda.so.1``, which a build machine without a GPU lacks. So on
such a machine kiln loads a stub of the driver (every function the runtime imports, each
returning ``CUDA_ERROR_NO_DEVICE``), built once with the C compiler that nvcc needs anyway,
and compiles with nvcc: the library then carries a fatbin for the target's architecture, and
the GPU host needs only the TVM runtime and the library.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from functools import cache
from pathlib import Path

from kiln.errors import KilnError

# The driver functions libtvm_runtime_cuda.so (TVM 0.27) imports:
# nm -D --undefined-only tvm/lib/libtvm_runtime_cuda.so | grep ' cu[A-Z]'
DRIVER_FUNCTIONS = ("cuDeviceGetName", "cuFuncSetAttribute", "cuGetErrorName",
                    "cuGetErrorString", "cuLaunchKernelEx", "cuModuleGetFunction",
                    "cuModuleLoadData", "cuModuleUnload", "cuTensorMapEncodeTiled")
CUDA_ERROR_NO_DEVICE = 100


def _tvm_lib(name: str) -> Path:
    import tvm
    return Path(tvm.__file__).parent / "lib" / name


def _stub_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kiln" / "cuda-driver-stub"


def _build_driver_stub() -> Path:
    """``libcuda.so.1`` with every function the TVM CUDA runtime imports, each returning
    CUDA_ERROR_NO_DEVICE: enough for that runtime to load on a machine without a GPU."""
    out = _stub_dir() / "libcuda.so.1"
    if out.is_file():
        return out
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise KilnError("compiling for cuda on a machine without a GPU driver needs a C "
                        "compiler (gcc) to build kiln's stand-in for libcuda.so.1")
    out.parent.mkdir(parents=True, exist_ok=True)
    src = out.with_suffix(".c")
    src.write_text("".join(f"int {f}(void) {{ return {CUDA_ERROR_NO_DEVICE}; }}\n"
                           for f in DRIVER_FUNCTIONS))
    tmp = out.with_name(f"libcuda.so.1.{os.getpid()}")
    subprocess.run([cc, "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", str(tmp),
                    str(src)], check=True, capture_output=True)
    tmp.replace(out)                      # atomic: concurrent builds never see half a file
    return out


@cache
def load_cuda_runtime(allow_stub: bool) -> bool:
    """Load TVM's CUDA runtime (RTLD_GLOBAL, so modules find it). With ``allow_stub`` a
    machine without a GPU driver gets the stub driver (compiling only). Returns whether the
    real driver is there."""
    try:
        ctypes.CDLL("libcuda.so.1", mode=ctypes.RTLD_GLOBAL)
        real = True
    except OSError:
        if not allow_stub:
            raise KilnError("this library runs on CUDA, and this machine has no CUDA driver "
                            "(libcuda.so.1): run it on a GPU host") from None
        ctypes.CDLL(str(_build_driver_stub()), mode=ctypes.RTLD_GLOBAL)
        real = False
    ctypes.CDLL(str(_tvm_lib("libtvm_runtime_cuda.so")), mode=ctypes.RTLD_GLOBAL)
    return real


def prepare_build() -> None:
    """Make TVM compile CUDA kernels to machine code with nvcc (see the module docstring)."""
    if shutil.which("nvcc") is None:
        raise KilnError("compiling for cuda needs nvcc (the CUDA toolkit) on PATH; the GPU "
                        "host that runs the library needs no compiler")
    load_cuda_runtime(allow_stub=True)
    os.environ["TVM_CUDA_COMPILE_MODE"] = "nvcc"


def has_gpu() -> bool:
    """Whether a CUDA device can run kernels here (a driver and at least one device)."""
    try:
        if not load_cuda_runtime(allow_stub=True):
            return False
        import tvm
        return bool(tvm.cuda(0).exist)
    except (KilnError, OSError, subprocess.CalledProcessError):
        return False
