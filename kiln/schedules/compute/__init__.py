"""TE definitions of kiln's ops: the math only, no splits and no target checks.

``COMPUTE[op_name](node, *inputs) -> te.Tensor | tuple[te.Tensor, ...]`` where ``node`` is a
``NodeInfo`` (attributes, output types, a block name) and inputs are ``te.Tensor``s.
"""

from kiln.schedules.compute import (  # noqa: F401  (registration)
    conv,
    elementwise,
    indexing,
    kv_cache,
    matmul,
    movement,
    nn,
    norm,
    quant,
    reduce,
    rnn,
    signal,
)
from kiln.schedules.compute.registry import COMPUTE, NodeInfo

__all__ = ["COMPUTE", "NodeInfo"]
