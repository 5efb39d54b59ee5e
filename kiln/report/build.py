"""What a report holds, measured: compile the model (timing each stage), profile each kernel,
count its FLOPs and bytes, and measure the machine's roofs."""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kiln.codegen.cost import flops, min_bytes
from kiln.codegen.library import Library, find_module, median_ms, num_threads
from kiln.codegen.pipeline import Compilation, build
from kiln.codegen.stage_text import kernel_sources, split_by_kernel
from kiln.compiler import Shapes, compile_stages
from kiln.errors import KilnError
from kiln.report.peaks import Peaks, measure_peaks
from kiln.target import Target, get_target
from kiln.testing import random_inputs

ASM_LINES = 3000        # per kernel in the report: the hot loop is in the first screenfuls


@dataclass
class KernelRow:
    """One kernel: what it must do, and (where it ran here) how fast it did it."""

    name: str
    template: str
    knobs: str
    flops: int
    bytes: int
    ms: float | None = None          # per call, profiled; None where the target is elsewhere
    calls: int = 1
    tir: str = ""
    code: str = ""                   # assembly (CPU) or CUDA C

    @property
    def gflops(self) -> float | None:
        return self.flops / self.ms / 1e6 if self.ms and self.calls else None

    @property
    def gbps(self) -> float | None:
        return self.bytes / self.ms / 1e6 if self.ms and self.calls else None

    @property
    def intensity(self) -> float:
        """FLOPs per byte moved."""
        return self.flops / self.bytes if self.bytes else 0.0


@dataclass
class Report:
    model: str
    target: Target
    compilation: Compilation
    rows: list[KernelRow]                    # slowest first (by total time), when profiled
    peaks: Peaks | None
    seconds: dict[str, float]                # compile time per stage
    library_bytes: int | None
    latency_ms: float | None                 # the whole model, median
    machine: str = ""
    notes: list[str] = field(default_factory=list)

    def bound_share(self, row: KernelRow) -> float | None:
        """The kernel's GFLOP/s (or GB/s, for a kernel without arithmetic) as a share of
        the roofline's bound for its intensity (``Peaks.bound``)."""
        if self.peaks is None or not row.calls or row.gbps is None:
            return None
        if row.flops == 0:
            return row.gbps / self.peaks.cache_gbps
        return row.gflops / self.peaks.bound(row.flops, row.bytes)


def build_report(model: object, target: str | Target = "x86",
                 input_shapes: Shapes | None = None,
                 inputs: Mapping[str, np.ndarray] | None = None,
                 tuning_db: str | os.PathLike | None = None) -> Report:
    """Compile ``model`` and measure everything a report shows (see the package docstring).
    ``inputs``: the arrays to profile with (default: random ones)."""
    tgt = get_target(target)
    c = build(compile_stages(model, tgt, input_shapes, tuning_db=tuning_db))
    lib = Library(c.executable, compilation=c)
    name = getattr(model, "name", None) or Path(str(model)).name
    library_bytes, notes = _library_size(lib)
    rows = [_row(k) for k in c.kernels]
    code = _kernel_code(c)
    for r in rows:
        r.code = code.get(r.name, "")
    peaks = latency = None
    if tgt.runs_here and not tgt.is_cuda:
        feeds = {**random_inputs(c.optimized), **(inputs or {})}
        latency = median_ms(lib.benchmark(feeds, number=5, repeat=15))
        by_name = {r.name: r for r in rows}
        for r in rows:
            r.ms, r.calls = 0.0, 0      # never called: Relax made the reshape a view
        for t in lib.profile(feeds):
            by_name[t.name].ms, by_name[t.name].calls = t.ms, t.calls
        views = [r.name for r in rows if not r.calls]
        if views:
            notes.append(f"never called (Relax runs them as views of their input): "
                         f"{', '.join(views)}")
        rows.sort(key=lambda r: -r.ms * r.calls)
        peaks = measure_peaks(tgt)
    else:
        notes.append(f"{tgt.name} kernels do not run on this machine: no times, no roofline")
    return Report(name, tgt, c, rows, peaks, dict(c.seconds), library_bytes, latency,
                  _machine(), notes)


def _row(k: Any) -> KernelRow:
    knobs = str(k.knobs) if k.knobs is not None else ""
    return KernelRow(k.name, k.template.value if k.template else "", knobs,
                     flops(k.te_func), min_bytes(k), tir=k.func.script())


def _library_size(lib: Library) -> tuple[int | None, list[str]]:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = lib.export(Path(tmp) / "model.so")
        except KilnError as e:               # an arm library without the cross linker
            return None, [f"library size unknown: {e}"]
        return path.stat().st_size, []


def _kernel_code(c: Compilation) -> dict[str, str]:
    """Each kernel's code: its part of the library's assembly (CPU targets: one LLVM module
    holds every kernel), or its CUDA C."""
    funcs = [k.func for k in c.kernels]
    if c.target.is_cuda:
        code = kernel_sources(funcs, c.target, "cu")
    else:
        llvm = find_module(c.executable.mod, lambda m: m.kind == "llvm")
        asm = llvm.inspect_source("asm") if llvm is not None else ""
        code = split_by_kernel(asm, [k.name for k in c.kernels], "asm")
    return {name: _clip(text, ASM_LINES) for name, text in code.items()}


def _clip(text: str, lines: int) -> str:
    parts = text.splitlines()
    if len(parts) <= lines:
        return text
    return "\n".join(parts[:lines]) + f"\n# ... {len(parts) - lines} more lines (kiln inspect " \
                                      "--stage asm prints them all)"


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, kernels on {num_threads()} thread(s), "
            f"{time.strftime('%Y-%m-%d %H:%M')}")
