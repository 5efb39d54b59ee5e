"""Run prepared kiln CUDA libraries on a GPU host with the runtime-only TVM and compare each
output with the reference interpreter's (computed where the library was built).

    python tests/gpu/run_cases.py DIR        # DIR from tests/gpu/prepare_cases.py

Needs only numpy and the TVM runtime (``source .device/setup.sh``): no compiler, no kiln
compiler stack, no nvcc on PATH. Exits 1 if any case is off by more than its tolerance.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def load_cuda_runtime() -> None:
    """TVM's CUDA module loader (RTLD_GLOBAL), before any library that holds CUDA code."""
    import tvm
    ctypes.CDLL("libcuda.so.1", mode=ctypes.RTLD_GLOBAL)
    ctypes.CDLL(str(Path(tvm.__file__).parent / "lib" / "libtvm_runtime_cuda.so"),
                mode=ctypes.RTLD_GLOBAL)


def run_case(case: Path) -> tuple[bool, str]:
    import tvm
    from tvm.runtime.vm import VirtualMachine
    spec = json.loads((case / "case.json").read_text())
    dev = tvm.cuda(0)
    vm = VirtualMachine(tvm.runtime.load_module(str(case / "model.so")), dev)
    args = [tvm.runtime.tensor(np.load(case / f"in_{i}.npy"), dev)
            for i in range(spec["inputs"])]
    out = vm["main"](*args)
    outs = [out] if spec["outputs"] == 1 else [out[i] for i in range(spec["outputs"])]
    worst = 0.0
    for i, o in enumerate(outs):
        want = np.load(case / f"want_{i}.npy")
        got = o.numpy()
        if got.shape != want.shape:
            return False, f"output {i}: shape {got.shape}, want {want.shape}"
        err = float(np.max(np.abs(got.astype(np.float64) - want) /
                           (spec["atol"] + spec["rtol"] * np.abs(want)))) if want.size else 0
        worst = max(worst, err)
    vm["main"](*args)
    dev.sync()
    t = time.perf_counter()
    for _ in range(20):
        vm["main"](*args)
    dev.sync()
    ms = (time.perf_counter() - t) / 20 * 1e3
    return worst <= 1.0, f"worst error {worst:.2f} of tolerance, {ms:.3f} ms"


def main() -> int:
    root = Path(sys.argv[1])
    load_cuda_runtime()
    failed = 0
    for case in sorted(p for p in root.iterdir() if (p / "case.json").is_file()):
        try:
            ok, note = run_case(case)
        except Exception as e:            # report every case, then fail
            ok, note = False, f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {case.name}: {note}", flush=True)
    print(f"{failed} failed" if failed else "all passed", "on", os.uname().nodename)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
