"""Constant folding: a node whose inputs are all constants is run once, with its reference."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from kiln.ir.graph import Graph, Value
from kiln.ir.ops.registry import OpDef
from kiln.ir.types import TensorType

# A fold may grow the constants by this much over its inputs (a broadcast of one zero to a
# 25 MB key/value cache is cheaper to fill at run time than to store in the library).
MAX_GROWTH_BYTES = 1 << 20


FOLD_MAX_BYTES = 64 << 20


def evaluate_constant(op: OpDef, attrs: Any, inputs: Sequence[Value],
                      types: Sequence[TensorType]) -> list[np.ndarray] | None:
    """The results of ``op`` on ``inputs`` when all are constants and the (static) results
    fit ``FOLD_MAX_BYTES``, computed by the reference; else None. How the frontends fold as
    they import (a weight's transpose becomes a constant)."""
    if not inputs or not all(v.is_constant for v in inputs) or not all(
            t.is_static for t in types):
        return None
    if sum(t.numel * t.dtype.np.itemsize for t in types) > FOLD_MAX_BYTES:
        return None
    return op.run_reference(attrs, [v.data for v in inputs])


def fold_constants(g: Graph, max_bytes: int = FOLD_MAX_BYTES) -> int:
    """Replace nodes with all-constant inputs by constants, in place. Results larger than
    ``max_bytes``, or more than ``MAX_GROWTH_BYTES`` larger than the inputs, stay computed at
    run time. Returns the number of nodes folded."""
    kept, folded = [], 0
    for n in g.nodes:
        if (not n.inputs or not all(v.is_constant for v in n.inputs)
                or not all(o.type.is_static for o in n.outputs)):   # sized at run time
            kept.append(n)
            continue
        out_bytes = sum(o.type.numel * o.dtype.np.itemsize for o in n.outputs)
        if out_bytes - sum(v.data.nbytes for v in n.inputs) > MAX_GROWTH_BYTES:
            kept.append(n)
            continue
        results = n.op.run_reference(n.attrs, [v.data for v in n.inputs])
        if sum(r.nbytes for r in results) > max_bytes:
            kept.append(n)
            continue
        for out, arr in zip(n.outputs, results, strict=True):
            g.replace_uses(out, Value(g, out.name, out.type, data=arr))
        folded += 1
    g.nodes = kept
    return folded
