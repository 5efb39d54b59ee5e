"""``kiln debug``: a numerics bisector. Which fused kernel first computes something other
than the reference interpreter, and which of its ops?

    report = kiln.debug.bisect(kiln.compile_stages(model), feeds)
    print(report)                       # every kernel's error; the first bad one's TIR

Each kernel runs alone, compiled for this machine, on the reference interpreter's values of
its inputs, and its outputs are compared with the reference's: an error in one kernel does not
spill into the next, so the first kernel over tolerance is the culprit, not a victim. Then:

- the kernel's TIR before scheduling runs the same way: right there, the schedule is to blame;
- each op of the kernel is compiled alone (unfused): one wrong alone names the op; a kernel
  whose TE is wrong while each of its ops is right names the fusion.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import tirx

from kiln.codegen.lower import Kernel, lower_group
from kiln.codegen.pipeline import Compilation
from kiln.errors import KilnError
from kiln.ir.graph import Node, Value
from kiln.ir.interpreter import reference_values
from kiln.ir.ops.registry import Pattern
from kiln.ir.passes.fuse import Group

TOLERANCE = 1e-3    # of the output's scale: room for another summation order, not for a bug


@dataclass
class Check:
    """One kernel (or one op of it) against the reference."""

    name: str                 # the kernel's, or the node's
    what: str                 # the kernel's template, or the op
    error: float              # max |got - want| / max(1, max |want|) over its outputs
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.error <= self.tolerance

    def __str__(self) -> str:
        return (f"{self.name:<40} {self.what:<20} {self.error:10.2e}  "
                f"{'ok' if self.ok else 'DIVERGES'}")


@dataclass
class DebugReport:
    """Every kernel's check in run order, the first that diverges, and its ops alone."""

    kernels: list[Check]
    tolerance: float = TOLERANCE
    first_bad: Kernel | None = None
    unscheduled: Check | None = None     # the first bad kernel's TIR before scheduling
    ops: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.first_bad is None

    def __str__(self) -> str:
        head = (f"{'kernel':<40} {'template':<20} {'max error':>10}  "
                f"(tolerance {self.tolerance:g})")
        lines = [head, *map(str, self.kernels)]
        if self.first_bad is None:
            lines.append(f"\nevery kernel matches the reference ({len(self.kernels)} kernels)")
            return "\n".join(lines)
        bad = next(c for c in self.kernels if not c.ok)
        lines += ["", f"first divergent kernel: {bad.name} (max error {bad.error:.3g})",
                  f"  {self.unscheduled}"]
        if self.ops:
            lines += ["its ops compiled alone:", *("  " + str(c) for c in self.ops)]
        lines += [f"-> {self.verdict}", "",
                  f"# its scheduled TIR ({'; '.join(self.first_bad.notes)})",
                  self.first_bad.func.script()]
        return "\n".join(lines)

    @property
    def verdict(self) -> str:
        """Which part of the first divergent kernel is wrong, as far as the checks tell."""
        if self.first_bad is None or self.unscheduled is None:
            return "every kernel matches the reference"
        k = self.first_bad
        # an op that could not be compiled alone (error nan) is unknown, not wrong
        wrong = [c for c in self.ops if not c.ok and not math.isnan(c.error)]
        if self.unscheduled.ok:
            return (f"its TIR before scheduling is right: the {k.template.value} schedule "
                    f"(knobs {k.knobs}) makes it wrong")
        if wrong:
            return (f"op {wrong[0].name} ({wrong[0].what}) is wrong compiled alone: its TE "
                    "compute (kiln/schedules/compute)")
        if self.ops:
            return "each op is right alone but the fused TE is wrong: the fusion"
        return "its TIR is wrong before scheduling: the TE of its ops or their fusion"


def bisect(c: Compilation, feeds: Mapping[str, np.ndarray], tolerance: float = TOLERANCE,
           unfuse: bool = True) -> DebugReport:
    """Run every kernel of ``c`` alone on the reference's values of its inputs (from
    ``feeds``); stop at the first whose outputs diverge and, with ``unfuse``, check each of
    its ops compiled alone."""
    if c.target.is_cuda or not c.target.runs_here:
        raise KilnError(f"kiln debug runs the kernels on this machine's CPU; {c.target.name} "
                        "kernels do not run there (pick an x86 target)")
    env = reference_values(c.optimized, feeds)
    report = DebugReport([], tolerance)
    for k in c.kernels:
        check = Check(k.name, k.template.value if k.template else "",
                      _error(k, k.func, c, env), tolerance)
        report.kernels.append(check)
        if not check.ok:
            report.first_bad = k
            report.unscheduled = Check("before scheduling", "the same kernel",
                                       _error(k, k.te_func, c, env), tolerance)
            if unfuse:
                report.ops = [_check_op(n, k.name, c, env, tolerance) for n in k.group.nodes]
            break
    return report


def _error(k: Kernel, func: tirx.PrimFunc, c: Compilation, env: dict[int, np.ndarray]
           ) -> float:
    """``func`` (``k``'s, scheduled or not) run on the reference's inputs: its error."""
    lib = tvm.compile(tvm.IRModule({k.name: func}), target=c.target.tvm())
    dev = tvm.cpu()
    args = [tvm.runtime.tensor(np.ascontiguousarray(_value(a, env)), dev) for a in k.args]
    want = [_value(v, env) for v in k.outputs]
    outs = [tvm.runtime.empty(w.shape, w.dtype, dev) for w in want]
    lib.mod[k.name](*args, *outs)
    return max((_max_error(o.numpy(), w) for o, w in zip(outs, want, strict=True)),
               default=0.0)


def _check_op(n: Node, kernel: str, c: Compilation, env: dict[int, np.ndarray],
              tolerance: float) -> Check:
    """``n`` as a group of its own (as the fuser would make it), lowered and checked."""
    ins: list[Value] = []
    for v in n.inputs:
        if all(v is not x for x in ins):
            ins.append(v)
    anchored = n.op.pattern in (Pattern.OUT_FUSABLE, Pattern.REDUCTION, Pattern.OPAQUE)
    group = Group(f"{kernel}__{n.name}", [n], n if anchored else None, ins, list(n.outputs))
    try:
        k = lower_group(group, c.target)
        error = _error(k, k.func, c, env)
    except Exception as e:            # an op that cannot stand alone: say so, go on
        return Check(n.name, f"{n.op.name}: {type(e).__name__}", float("nan"), tolerance)
    return Check(n.name, n.op.name, error, tolerance)


def _value(a: Value | np.ndarray, env: dict[int, np.ndarray]) -> np.ndarray:
    if isinstance(a, np.ndarray):
        return a
    return a.data if a.is_constant else np.asarray(env[id(a)])


def _max_error(got: np.ndarray, want: np.ndarray) -> float:
    if got.shape != want.shape:
        return float("inf")
    if want.size == 0:
        return 0.0
    if want.dtype == bool or np.issubdtype(want.dtype, np.integer):
        return float(np.abs(got.astype(np.int64) - want.astype(np.int64)).max())
    want64 = want.astype(np.float64)
    scale = max(float(np.abs(want64[np.isfinite(want64)]).max(initial=0.0)), 1.0)
    diff = np.abs(got.astype(np.float64) - want64)
    same = (got == want) | (np.isnan(got) & np.isnan(want))       # inf == inf, nan "==" nan
    return float(np.where(same, 0.0, diff).max()) / scale
