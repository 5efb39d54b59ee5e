"""kiln's op vocabulary. Importing this package registers every op family."""

from kiln.ir.ops import conv, elementwise, matmul, movement, reduce  # noqa: F401  (registration)
from kiln.ir.ops.registry import OPS, NoAttrs, OpDef, Pattern, get_op, register

__all__ = ["OPS", "NoAttrs", "OpDef", "Pattern", "get_op", "register"]
