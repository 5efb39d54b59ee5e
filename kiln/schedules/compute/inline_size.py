"""How large a pointwise op's expression grows when its producer is inlined into it.

Every schedule inlines a fused group's pointwise chain into one expression, and TIR
expressions are trees: an op that reads its input ``r`` times (``fastmath``'s polynomials read
it tens to thousands of times: range reductions, selects) holds ``r`` copies of whatever
computes that input. A chain of transcendental ops therefore grows as the product of their
reads: ``sin(exp(x))`` is about 240,000 nodes (18 s to compile), ``gelu(erf(asinh(x)))``
about 200 million (TVM runs out of memory inlining it). ``pointwise_size`` gives the fusion
pass each op's size and reads, so it can end a group before its expression explodes
(``kiln.ir.passes.fuse``).
"""

from __future__ import annotations

import functools
from typing import Any

from tvm import te
from tvm.ir.expr import Call, Expr

from kiln.ir.graph import Node
from kiln.ir.ops.registry import Pattern
from kiln.ir.types import TensorType
from kiln.schedules.compute.registry import COMPUTE, NodeInfo

# the fields that hold a TIR expression's operands
_OPERANDS = ("a", "b", "value", "condition", "true_value", "false_value", "args", "body")


def pointwise_size(n: Node) -> tuple[int, tuple[int, ...]]:
    """The tree size of ``n``'s expression with its inputs as leaves, and how many times it
    reads each input. Non-pointwise ops count as (1, one read each): the fusion pass starts a
    new expression at them."""
    if n.op.pattern not in (Pattern.ELEMENTWISE, Pattern.BROADCAST) or n.op.name not in COMPUTE \
            or len(n.outputs) != 1:
        return 1, (1,) * len(n.inputs)
    return _size(n.op.name, n.attrs, tuple(v.dtype for v in n.inputs), n.outputs[0].dtype)


@functools.cache
def _size(op: str, attrs: Any, in_dtypes: tuple, out_dtype: Any) -> tuple[int, tuple[int, ...]]:
    """``pointwise_size`` of one op on rank-0 operands (the shapes change the indexing only)."""
    info = NodeInfo(attrs, (TensorType((), out_dtype),), "size", {},
                    tuple(TensorType((), dt) for dt in in_dtypes))
    ins = [te.placeholder((), dt.tvm, name=f"in{i}") for i, dt in enumerate(in_dtypes)]
    out = COMPUTE[op](info, *ins)
    body = out.op.body[0]
    names = [t.op.name for t in ins]
    memo: dict[int, tuple[int, list[int]]] = {}

    def count(e: Any) -> tuple[int, list[int]]:
        """(tree size, reads of each input) of ``e``, each shared subexpression counted once
        per use, as the tree the schedules build holds it."""
        if hasattr(e, "asobject"):          # a lazy == / != comparison
            e = e.asobject()
        key = e.__hash__()
        if key in memo:
            return memo[key]
        size, reads = 1, [0] * len(ins)
        if isinstance(e, Call) and str(getattr(e.op, "name", "")) == "te.tensor_load":
            name = e.args[0].op.name          # a read of an input tensor: a leaf
            if name in names:
                reads[names.index(name)] += 1
            memo[key] = (size, reads)
            return memo[key]
        for field in _OPERANDS:
            child = getattr(e, field, None)
            if child is None or isinstance(child, str | int | float):
                continue
            for c in (list(child) if field == "args" else [child]):
                if isinstance(c, Expr):
                    s, r = count(c)
                    size += s
                    reads = [x + y for x, y in zip(reads, r, strict=True)]
        memo[key] = (size, reads)
        return memo[key]

    size, reads = count(body)
    return size, tuple(reads)
