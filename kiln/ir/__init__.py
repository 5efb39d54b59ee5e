"""kiln's graph IR: types, graphs, the op registry, the reference interpreter and passes."""

from kiln.ir.dtype import DType, as_dtype
from kiln.ir.graph import Graph, Node, Value
from kiln.ir.interpreter import run_reference
from kiln.ir.ops import OPS, OpDef, Pattern, get_op
from kiln.ir.types import Dim, TensorType
from kiln.ir.verify import verify

__all__ = ["OPS", "DType", "Dim", "Graph", "Node", "OpDef", "Pattern", "TensorType", "Value",
           "as_dtype", "get_op", "run_reference", "verify"]
