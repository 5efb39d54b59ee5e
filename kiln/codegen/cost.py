"""What a kernel must do, counted from its unscheduled TIR: the floating-point operations it
executes (a GEMM padded to whole register tiles counts its padding: the work the hardware
does), and the bytes it must move at least (each input read once, each output written once):
the two axes of a roofline.

    flops(kernel.te_func)       # 2 M N K for a GEMM, plus its epilogue's arithmetic
    min_bytes(kernel)           # A, B and C once
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tvm_ffi
from tvm import tirx

from kiln.codegen.lower import Kernel
from kiln.errors import KilnError

_ARITH = ("Add", "Sub", "Mul", "Div", "Min", "Max", "FloorDiv", "FloorMod", "Mod", "Select")


def flops(func: tirx.PrimFunc) -> int:
    """Floating-point operations of one run of ``func`` (unscheduled: each block once per
    trip of the loops around it). Each +, -, *, /, min, max, select and call (sqrt, ...) with
    a float result counts one, a subexpression used twice once (as the code computes it);
    integer index arithmetic and a block's init count none."""
    total = 0

    def walk(stmt: Any, trip: int) -> None:
        nonlocal total
        kind = type(stmt).__name__
        if kind == "For":
            if type(stmt.extent).__name__ != "IntImm":
                raise KilnError("counting FLOPs needs static shapes: give the input shapes")
            walk(stmt.body, trip * int(stmt.extent.value))
        elif kind == "SeqStmt":
            for s in stmt.seq:
                walk(s, trip)
        elif kind == "SBlockRealize":
            block = stmt.block
            if block.name_hint == "root" or type(block.body).__name__ != "BufferStore":
                walk(block.body, trip)
            else:
                total += trip * _float_ops(block.body.value)
        elif hasattr(stmt, "body"):
            walk(stmt.body, trip)

    walk(func.body, 1)
    return total


def _float_ops(expr: Any) -> int:
    count, seen = 0, set()

    def visit(node: Any, visitor: Any) -> None:
        nonlocal count
        kind = type(node).__name__
        if kind in _ARITH or kind == "Call":
            key = tvm_ffi.structural_hash(node)    # a repeated subexpression: computed once
            if key in seen:
                return
            seen.add(key)
            if str(getattr(node, "ty", "")).startswith(("float", "bfloat")):
                count += 1
        visitor.default_visit(node)

    tvm_ffi.structural_visit(expr, visit)
    return count


def min_bytes(k: Kernel) -> int:
    """Bytes the kernel must move at the least: every input read once (constants included:
    packed weights at their packed size), every output written once."""
    total = 0
    for a in k.args:
        if isinstance(a, np.ndarray):
            total += a.nbytes
        else:
            total += _value_bytes(a)
    return total + sum(_value_bytes(v) for v in k.outputs)


def _value_bytes(v: Any) -> int:
    shape = v.type.static_shape
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(v.dtype.np).itemsize
