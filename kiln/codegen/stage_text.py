"""A kernel at the stages after scheduling, as text: its tensor expressions, its TIR after TVM's
lowering pipeline, and the code the target's backend emits (LLVM IR, assembly, CUDA C).

    te_text(kernel.te_outputs)              # C[i, j] = sum(A[i, k] * B[k, j], k < 64)
    lowered_tir(kernel.func, target)        # what codegen sees
    kernel_sources([k.func for k in kernels], target, "asm")    # {kernel name: its assembly}
"""

from __future__ import annotations

import re
from typing import Any

import tvm
from tvm import te, tirx

from kiln.codegen import cuda
from kiln.target import Target


def te_text(outputs: list[te.Tensor]) -> str:
    """Every compute of the TE graph ending in ``outputs``, inputs first, one statement each:
    ``name[axes] = expression``, reductions as ``sum(..., k < 64)``. A subexpression used more
    than once (an exp's range reduction, say) is named once (``t3 = ...``) and used by name."""
    order: list[te.Tensor] = []
    seen: set[str] = set()

    def visit(t: te.Tensor) -> None:
        if t.op.name in seen:
            return
        seen.add(t.op.name)
        for src in t.op.input_tensors:
            visit(src)
        order.append(t)

    for t in outputs:
        visit(t)
    lines = []
    for t in order:
        kind = f"{t.dtype}{_shape(t.shape)}"
        if isinstance(t.op, te.PlaceholderOp):
            lines.append(f"{t.op.name}: {kind}   # input")
        elif isinstance(t.op, te.ComputeOp):
            axes = ", ".join(iv.var.name for iv in t.op.axis)
            lhs = f"{t.op.name}[{axes}]" if axes else t.op.name
            printer = _Printer(t.op.body[t.value_index])
            lines += [f"    {name} = {text}" for name, text in printer.temps]
            lines.append(f"{lhs} = {printer.text}   # {kind}")
        else:                       # an extern op: a loop nest its compute writes itself
            srcs = ", ".join(s.op.name for s in t.op.input_tensors)
            lines.append(f"{t.op.name} = {type(t.op).__name__}({srcs})   # {kind}")
    return "\n".join(lines)


def _shape(shape: Any) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


_BINARY = {"Add": "+", "Sub": "-", "Mul": "*", "Div": "/", "Mod": "%", "FloorDiv": "//",
           "FloorMod": "%", "EQ": "==", "NE": "!=", "LT": "<", "LE": "<=", "GT": ">",
           "GE": ">=", "And": "and", "Or": "or", "LShift": "<<", "RShift": ">>",
           "BitwiseAnd": "&", "BitwiseOr": "|", "BitwiseXor": "^"}
_LEAVES = ("IntImm", "FloatImm", "Var", "SizeVar", "StringImm")


class _Printer:
    """One TE expression as text, with its shared subexpressions named (``temps``)."""

    def __init__(self, e: Any) -> None:
        self.uses: dict[Any, int] = {}
        self._count(e)
        self.names: dict[Any, str] = {}
        self.temps: list[tuple[str, str]] = []
        self.text = self._expr(e)

    @staticmethod
    def _children(e: Any) -> list[Any]:
        kind = type(e).__name__
        if kind == "Call":
            return [] if _call_name(e) == "te.tensor_load" else list(e.args)
        if kind == "Reduce":
            return list(e.source)
        return [getattr(e, f) for f in ("a", "b", "value", "condition", "true_value",
                                        "false_value", "body") if hasattr(e, f)
                and hasattr(getattr(e, f), "same_as")]

    def _count(self, e: Any) -> None:
        if type(e).__name__ in _LEAVES:
            return
        self.uses[e] = self.uses.get(e, 0) + 1
        if self.uses[e] == 1:
            for c in self._children(e):
                self._count(c)

    def _expr(self, e: Any) -> str:
        if e in self.names:
            return self.names[e]
        text = self._format(e)
        if self.uses.get(e, 0) > 1 and not _is_load(e):
            name = f"t{len(self.temps)}"
            self.temps.append((name, text))
            self.names[e] = name
            return name
        return text

    def _format(self, e: Any) -> str:        # one case per node kind
        kind, ex = type(e).__name__, self._expr
        if kind in _BINARY:
            return f"({ex(e.a)} {_BINARY[kind]} {ex(e.b)})"
        if kind in ("Min", "Max"):
            return f"{kind.lower()}({ex(e.a)}, {ex(e.b)})"
        if kind == "Not":
            return f"not {ex(e.a)}"
        if kind in ("IntImm", "FloatImm"):
            dtype = str(e.ty)
            return repr(e.value) if dtype in ("int32", "float32") else f"{dtype}({e.value!r})"
        if kind in ("Var", "SizeVar"):
            return e.name
        if kind == "Cast":
            return f"{e.ty}({ex(e.value)})"
        if kind == "Select":
            return f"select({ex(e.condition)}, {ex(e.true_value)}, {ex(e.false_value)})"
        if kind == "Let":
            return f"(let {e.var.name} = {ex(e.value)} in {ex(e.body)})"
        if kind == "Reduce":
            ranges = ", ".join(
                f"{iv.var.name} < {ex(iv.dom.extent)}" if _is_int(iv.dom.min, 0) else
                f"{ex(iv.dom.min)} <= {iv.var.name} < {ex(iv.dom.min + iv.dom.extent)}"
                for iv in e.axis)
            cond = "" if _is_int(e.condition, 1) else f", where {ex(e.condition)}"
            return (f"{_reducer_name(e.combiner)}({', '.join(ex(s) for s in e.source)}, "
                    f"{ranges}{cond})")
        if kind == "Call":
            name = _call_name(e)
            if name == "te.tensor_load":
                producer, *index = e.args
                return f"{producer.op.name}[{', '.join(ex(i) for i in index)}]"
            args = ", ".join(ex(a) for a in e.args)
            return f"{name.removeprefix('tirx.')}({args})"
        return str(e)


def _call_name(e: Any) -> str:
    return e.op.name if hasattr(e.op, "name") else str(e.op)


def _is_load(e: Any) -> bool:
    return type(e).__name__ == "Call" and _call_name(e) == "te.tensor_load"


def _reducer_name(combiner: Any) -> str:
    kinds = {type(r).__name__ for r in combiner.result}
    return {"Add": "sum", "Max": "max", "Min": "min", "Mul": "prod"}.get(
        next(iter(kinds)) if len(kinds) == 1 else "", "reduce")


def _is_int(e: Any, value: int) -> bool:
    return type(e).__name__ == "IntImm" and e.value == value


def lowered_tir(func: tirx.PrimFunc, target: Target) -> tvm.IRModule:
    """``func`` after TVM's default TIR lowering pipeline: what the code generator sees."""
    tgt = target.tvm()
    pipe, _, _ = tirx.get_tir_pipeline("default")
    # bound to a target with a host, as tirx.build does: else MakePackedAPI is skipped
    host = tgt if tgt.host is not None else tgt.with_host(tgt)
    if target.is_cuda and tgt.host is None:
        host = tvm.target.Target(tgt, host="llvm")
    return pipe(tirx.transform.BindTarget(host)(tvm.IRModule({"main": func})))


def kernel_sources(funcs: list[tirx.PrimFunc], target: Target, fmt: str) -> dict[str, str]:
    """The code the target's backend makes of each of ``funcs`` (by kernel name), compiled
    together as one module, as a library is: ``ll`` (LLVM IR) or ``asm`` for the host (x86
    or aarch64: LLVM writes the assembly itself, no cross toolchain needed), ``cu`` for the
    CUDA C of a cuda target's kernels."""
    if target.is_cuda:
        # as build() does: once TVM's CUDA runtime is loaded (by any cuda library in this
        # process), tvm.compile compiles the CUDA C, with NVRTC unless told to use nvcc
        cuda.prepare_build()
    tgt = target.tvm()
    names = [f.attrs["global_symbol"] for f in funcs]
    with tgt:                         # nvcc reads the architecture off the current target
        lib = tvm.compile(tvm.IRModule(dict(zip(names, funcs, strict=True))), target=tgt)
    mod = lib.mod
    if fmt == "cu":
        (device,) = [m for m in mod.imports if m.kind == "cuda"]
        return split_by_kernel(device.inspect_source("cuda"), names, "cu")
    return split_by_kernel(mod.inspect_source(fmt), names, fmt)


# where a function starts, and its symbol, in each kind of source
_FUNCTION_START = {
    "asm": re.compile(r"\s*\.type\s+([\w.$]+),[@%]function"),     # x86 @, aarch64 %
    "ll": re.compile(r'define\b.*?@"?([\w.$]+)"?\('),
    "cu": re.compile(r'extern "C" __global__ void (?:__launch_bounds__\(\d+\) )?(\w+)\('),
}


def split_by_kernel(source: str, names: list[str], fmt: str) -> dict[str, str]:
    """``source`` (a whole module's ``asm``, ``ll`` or ``cu``) cut into each kernel's part: the
    functions whose symbol is the kernel's (``NAME``, ``__tvm_ffi_NAME``) or one of its
    bodies or device kernels (``NAME_compute_``, ``NAME_kernel...``), and the parallel loops
    LLVM outlines after a kernel's body (``__tvm_parallel_lambda.N``). What comes before the
    first function (module headers, TVM's CUDA preamble) belongs to none."""
    start = _FUNCTION_START[fmt]
    known = set(names)
    parts: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in source.splitlines():
        m = start.match(line)
        symbol = m.group(1).removeprefix(".L") if m else ""      # .L: a local symbol (asm)
        if m and not symbol.startswith("__tvm_parallel_lambda"):      # else: the same owner
            owner = _kernel_of(symbol, known)
            current = parts.setdefault(owner, []) if owner else None
        elif fmt == "ll" and line.startswith(("declare ", "attributes ", "!")):
            current = None                    # LLVM's module trailer
        if current is not None:
            current.append(line)
    return {name: "\n".join(parts.get(name, [])) for name in names}


def _kernel_of(symbol: str, names: set[str]) -> str | None:
    symbol = symbol.removeprefix("__tvm_ffi_")
    if symbol in names:
        return symbol
    for marker in ("_compute_", "_kernel"):
        head = symbol.split(marker)[0]
        if head in names:
            return head
    return None
