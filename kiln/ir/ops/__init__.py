"""kiln's op vocabulary. Importing this package registers every op family."""

from kiln.ir.ops import (  # noqa: F401  (registration)
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
from kiln.ir.ops.registry import OPS, NoAttrs, OpDef, Pattern, get_op, register

__all__ = ["OPS", "NoAttrs", "OpDef", "Pattern", "get_op", "register"]
