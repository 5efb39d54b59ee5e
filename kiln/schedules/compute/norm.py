"""TE for rms_norm: one pass for the row's mean square, one for the scaled output.

Its blocks have layer_norm's shape (row reductions, then a pointwise pass over the row), so
it gets the same x86 row-reduction template (``codegen/lower.py``'s ``row_rank``).
"""

from __future__ import annotations

from typing import Any

from tvm import te, tirx

from kiln.ir.types import normalize_axis
from kiln.schedules.compute.registry import NodeInfo, compute, const, extent_as


@compute("rms_norm")
def rms_norm(n: NodeInfo, x: te.Tensor, gamma: te.Tensor) -> te.Tensor:
    """``y[r, i] = x[r, i] / sqrt(sum_i x[r, i]^2 / count + eps) * gamma[i]`` for each row
    ``r`` (the axes before ``axis``) and position ``i`` in the row (the axes from it on)."""
    shape = n.shape
    axis = normalize_axis(n.attrs.axis, len(shape))
    rows, inner = shape[:axis], shape[axis:]
    count: Any = 1                  # a PrimExpr when the row has a symbolic dim
    for d in inner:
        count = count * d
    dt = n.dtype
    mean_div = extent_as(count, dt)
    ks = [te.reduce_axis((0, d), name=f"k{j}") for j, d in enumerate(inner)]

    def square(*i: Any) -> tirx.PrimExpr:
        return x(*i, *ks) * x(*i, *ks)

    sq = te.compute(rows, lambda *i: te.sum(square(*i), axis=ks), name=f"{n.name}_sqsum")
    rstd = te.compute(rows, lambda *i: const(1, dt) / tirx.sqrt(sq(*i) / mean_div
                                                                 + const(n.attrs.epsilon, dt)),
                      name=f"{n.name}_rstd")
    return te.compute(shape, lambda *i: x(*i) * rstd(*i[:axis]) * gamma(*i[axis:]),
                      name=n.name)
