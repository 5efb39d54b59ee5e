"""The machine's roofs, measured in the same run as the kernels they bound: peak fp32
arithmetic (independent FMA chains in registers), memory bandwidth (a streaming read of a
buffer twice the last-level cache) and cache bandwidth (the same read of 1 MiB per thread,
which the L2 of current x86 cores holds), all on the library's thread count.

    p = measure_peaks(target)     # Peaks(gflops=349.4, gbps=21.3, cache_gbps=160.2, threads=2)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tvm
from tvm.script import tirx as T

from kiln.codegen.library import num_threads
from kiln.target import Target

CHAINS = 16            # independent accumulators: enough to cover the FMA latency x 2 ports
STREAM_LANES = 64      # floats summed per step: four 512-bit (eight 256-bit) accumulators
CACHE_FLOATS = 1 << 18  # 1 MiB per thread


@dataclass
class Peaks:
    """Peak fp32 GFLOP/s and memory GB/s on ``threads`` threads."""

    gflops: float
    gbps: float                 # memory (DRAM)
    cache_gbps: float           # a working set in each core's L2
    threads: int

    def bound(self, flops: float, nbytes: float) -> float:
        """The roofline's bound (GFLOP/s) for a kernel of this arithmetic intensity, under
        the cache roof: the working sets of the kernels kiln profiles (one model run, batch
        1 or a few) mostly stay in cache, and a bound they can pass would say nothing."""
        return min(self.gflops, flops / nbytes * self.cache_gbps) if nbytes else self.gflops


def measure_peaks(target: Target, repeat: int = 10) -> Peaks:
    """Both roofs on this machine (an x86 ``target``), each the best of ``repeat`` runs."""
    threads = num_threads()
    lanes = target.isa.lanes("float32")
    dev = tvm.cpu()

    fma = _build(_fma_kernel(threads, lanes), target)
    acc = tvm.runtime.tensor(np.ones((threads, CHAINS * lanes), np.float32), dev)
    steps = 200_000
    t = min(fma.time_evaluator("fma_peak", dev, number=1, repeat=repeat)(acc, steps).results)
    gflops = threads * steps * CHAINS * lanes * 2 / t / 1e9

    gbps = _read_gbps(_stream_floats() // threads, 1, threads, target, repeat)
    # the L2 working set swept 200 times in one call: ~1 ms, so the thread pool's start and
    # join (a few microseconds) do not count
    cache_gbps = _read_gbps(CACHE_FLOATS, 200, threads, target, repeat)
    return Peaks(gflops, gbps, cache_gbps, threads)


def _read_gbps(floats: int, sweeps: int, threads: int, target: Target, repeat: int) -> float:
    """GB/s of ``threads`` threads each summing ``floats`` floats of its own ``sweeps`` times."""
    per_thread = floats // STREAM_LANES * STREAM_LANES
    dev = tvm.cpu()
    stream = _build(_stream_kernel(threads, per_thread, sweeps), target)
    src = tvm.runtime.tensor(np.ones((threads, per_thread), np.float32), dev)
    out = tvm.runtime.empty((threads, STREAM_LANES), "float32", dev)
    stream["stream_read"](src, out)                       # first touch: pages mapped
    timer = stream.time_evaluator("stream_read", dev, number=1, repeat=repeat)
    return threads * sweeps * per_thread * 4 / min(timer(src, out).results) / 1e9


def _build(func: tvm.tirx.PrimFunc, target: Target) -> tvm.runtime.Module:
    name = func.attrs["global_symbol"]
    return tvm.compile(tvm.IRModule({name: func}), target=target.tvm()).mod


def _stream_floats() -> int:
    """Floats to stream: twice the last-level cache (at least 512 MiB), so none of it is
    cached when it is read again."""
    llc = 0
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            size = (index / "size").read_text().strip()
        except OSError:
            continue
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(size[-1:], 1)
        llc = max(llc, int(size.rstrip("KMG")) * scale)
    return max(2 * llc, 512 << 20) // 4


def _fma_kernel(threads: int, lanes: int) -> tvm.tirx.PrimFunc:
    width = CHAINS * lanes

    @T.prim_func
    def fma_peak(acc_io: T.Buffer((threads, width), "float32"), steps: T.int32):
        T.func_attr({"global_symbol": "fma_peak", "tirx.noalias": True})
        for p in T.parallel(threads):
            acc = T.decl_buffer((width,), "float32", scope="local")     # registers
            for j in T.vectorized(width):
                acc[j] = acc_io[p, j]
            for _ in range(steps):
                for c in T.unroll(CHAINS):               # independent chains: no FMA waits
                    for v in T.vectorized(lanes):
                        acc[c * lanes + v] = acc[c * lanes + v] * T.float32(0.99999) \
                            + T.float32(1e-5)
            for j in T.vectorized(width):
                acc_io[p, j] = acc[j]

    return fma_peak


def _stream_kernel(threads: int, per_thread: int, sweeps: int) -> tvm.tirx.PrimFunc:
    @T.prim_func
    def stream_read(src: T.Buffer((threads, per_thread), "float32"),
                    out: T.Buffer((threads, STREAM_LANES), "float32")):
        T.func_attr({"global_symbol": "stream_read", "tirx.noalias": True})
        for p in T.parallel(threads):
            acc = T.decl_buffer((STREAM_LANES,), "float32", scope="local")
            for j in T.vectorized(STREAM_LANES):
                acc[j] = T.float32(0)
            for _, i in T.grid(sweeps, per_thread // STREAM_LANES):
                for j in T.vectorized(STREAM_LANES):
                    acc[j] = acc[j] + src[p, i * STREAM_LANES + j]
            for j in T.vectorized(STREAM_LANES):
                out[p, j] = acc[j]

    return stream_read
