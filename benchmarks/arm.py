"""fp32 GEMM under qemu-aarch64: kiln's arm-neon kernel against the unscheduled loop nest of
the same TE computation (TVM's default CPU build), alternating in one run.

    python -m benchmarks.arm [--n 256] [--count 64] [--rounds 5] [--threads 1]

Needs what ``make test-arm`` sets up: qemu-aarch64, g++-aarch64-linux-gnu and the aarch64 TVM
runtime (``KILN_ARM_RUNTIME``, default .cache/arm-runtime). Both libraries run in kiln_run
(examples/deploy_cpp) under emulation, on ``--threads`` threads (TVM_NUM_THREADS; the
unscheduled nest is serial); the table gives median milliseconds of one call and the ratio.

A time under qemu is not a CPU's: qemu's TCG runs integer and load/store instructions as a
few host instructions, but every floating-point lane as a call into its softfloat library.
So the table also gives

- what one instruction costs under this qemu (``qemu_costs.c``: fmla .4s against fmadd,
  fmul and fadd on one lane, integer mla and sdot, a load, an add), and from it the floor no
  fp32 GEMM can go under here: N^3 multiply-adds at the cheapest emulated cost per lane;
- the guest instructions of one ``--count``^3 call (``-singlestep -d exec``, qemu 7.2's
  spelling of ``-one-insn-per-tb``, logs one line per executed instruction; the runner's
  start-up cancels out between 1 and 3 calls), what a CPU's time follows.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from deploy import build_runner  # noqa: E402

import kiln  # noqa: E402
from kiln import ops  # noqa: E402
from kiln.target import ARM_CC, get_target  # noqa: E402

ARM_LIBS = Path(os.environ.get("KILN_ARM_RUNTIME", ".cache/arm-runtime")).resolve()
THREADS = 1


def scheduled(n: int, path: Path) -> Path:
    g = kiln.Graph("gemm")
    g.output(ops.matmul(g.input("a", (n, n), "float32"), g.input("b", (n, n), "float32")))
    return kiln.compile(g, "arm-neon").export(path)


def unscheduled(n: int, path: Path) -> Path:
    """The same C = A @ B as one TE compute, through TVM's own default build (no schedule)."""
    import tvm
    from tvm import relax, te
    from tvm.support import cc
    a, b = te.placeholder((n, n), name="a"), te.placeholder((n, n), name="b")
    k = te.reduce_axis((0, n), name="k")
    c = te.compute((n, n), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="c")
    bb = relax.BlockBuilder()
    x, y = (relax.Var(v, relax.TensorType((n, n), "float32")) for v in "ab")
    with bb.function("main", [x, y]):
        gv = bb.add_func(te.create_prim_func([a, b, c]).with_attr("global_symbol", "gemm"),
                         "gemm")
        out = bb.emit(relax.call_tir(gv, [x, y], relax.TensorType((n, n), "float32")))
        bb.emit_func_output(out)
    ex = tvm.compile(bb.get(), target=get_target("arm-neon").tvm())
    ex.export_library(str(path), fcompile=cc.cross_compiler(ARM_CC))
    return path


def qemu(runner: Path, lib: Path, inputs: list[Path], work: Path, repeat: int,
         *qemu_args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, QEMU_LD_PREFIX="/usr/aarch64-linux-gnu",
               LD_LIBRARY_PATH=str(ARM_LIBS), TVM_NUM_THREADS=str(THREADS))
    cmd = ["qemu-aarch64", *qemu_args, str(runner), "--repeat", str(repeat), str(lib),
           str(work), *map(str, inputs)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)


def median_ms(runner: Path, lib: Path, inputs: list[Path], work: Path, repeat: int) -> float:
    out = qemu(runner, lib, inputs, work, repeat).stdout
    return float(re.search(r"median_ms (\S+)", out).group(1))


def instructions(runner: Path, lib: Path, inputs: list[Path], work: Path) -> int:
    """Guest instructions of one call: (3 calls - 1 call) / 2, each counted by qemu's exec log
    (one line per translation block of one instruction)."""
    counts = []
    for repeat in (0, 2):
        log = qemu(runner, lib, inputs, work, repeat, "-singlestep", "-d", "exec",
                   "-D", "/dev/stderr").stderr
        counts.append(log.count("Trace "))
    return (counts[1] - counts[0]) // 2


def instruction_costs(work: Path) -> dict[str, float]:
    """ns per lane of each probe in qemu_costs.c, run under qemu-aarch64."""
    exe = work / "qemu_costs"
    subprocess.run([ARM_CC, "-O2", "-march=armv8.2-a+dotprod", "-static",
                    str(Path(__file__).with_name("qemu_costs.c")), "-o", str(exe)], check=True)
    out = subprocess.run(["qemu-aarch64", str(exe)], capture_output=True, text=True,
                         check=True).stdout
    rows = [line.split() for line in out.splitlines()]
    return {name: float(ns) / int(lanes) for name, ns, lanes in rows}


def main() -> None:
    global THREADS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--count", type=int, default=64, help="count instructions at this size")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    THREADS = args.threads
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runner = build_runner(tmp / "build", ARM_LIBS, aarch64=True)
        rows = []
        for n, counting in ((args.n, False), (args.count, True)):
            rng = np.random.default_rng(0)
            inputs = []
            for name in "ab":
                inputs.append(tmp / f"{name}{n}.npy")
                np.save(inputs[-1], rng.standard_normal((n, n)).astype(np.float32))
            libs = {"kiln": scheduled(n, tmp / f"kiln{n}.so"),
                    "unscheduled": unscheduled(n, tmp / f"plain{n}.so")}
            if counting:
                got = {k: instructions(runner, v, inputs, tmp) for k, v in libs.items()}
                u, s = got["unscheduled"], got["kiln"]
                rows.append(f"{n}^3 guest instructions per call | unscheduled {u:,} | "
                            f"kiln {s:,} | {u / s:.1f}x fewer")
                continue
            times = {k: [] for k in libs}
            for _ in range(args.rounds):                 # alternating: unscheduled, then kiln
                for k in ("unscheduled", "kiln"):
                    times[k].append(median_ms(runner, libs[k], inputs, tmp, 3))
            u, s = statistics.median(times["unscheduled"]), statistics.median(times["kiln"])
            rows.append(f"{n}^3 under qemu, median of {args.rounds} rounds | unscheduled "
                        f"{u:.1f} ms | kiln {s:.1f} ms | speedup {u / s:.2f}x")
            costs = instruction_costs(tmp)
            lane = min(costs["fmla_4s"], costs["fmadd_s"], costs["fmul_s"] + costs["fadd_s"])
            floor = n ** 3 * lane * 1e-6
            rows.append(f"{n}^3 floor: {n}^3 fp32 multiply-adds at {lane:.2f} ns | "
                        f"{floor:.1f} ms | unscheduled {u / floor:.2f}x it | "
                        f"kiln {s / floor:.2f}x it")
        print(f"fp32 GEMM, arm-neon (cortex-a72) libraries in kiln_run under qemu-aarch64, "
              f"{THREADS} thread(s)")
        print("\n".join(rows))
        print("\nns per lane under this qemu (qemu_costs.c):")
        print("  ".join(f"{k} {v:.2f}" for k, v in costs.items()))


if __name__ == "__main__":
    main()
