"""kiln: a model compiler on top of Apache TVM.

    import kiln, numpy as np
    from kiln import ops
    g = kiln.Graph("mlp")
    x = g.input("x", (4, 64), "float32")
    g.output(ops.relu(ops.dense(x, np.random.randn(32, 64).astype("float32"))))
    lib = kiln.compile(g, target="x86")
    (y,) = lib(x=np.ones((4, 64), "float32"))
"""

from kiln.codegen.library import Library, load, num_threads, set_num_threads
from kiln.compiler import compile, compile_stages, to_graph
from kiln.errors import (
    ConstantInputError,
    InputError,
    InternalError,
    KilnError,
    KnobError,
    ModelError,
)
from kiln.frontend import builder as ops
from kiln.frontend import nn
from kiln.ir import DType, Graph, TensorType, Value, run_reference
from kiln.stages import STAGES, inspect
from kiln.version import __version__  # noqa: F401 (kiln.__version__)

__all__ = ["STAGES", "ConstantInputError", "DType", "Graph", "InputError", "InternalError",
           "KilnError", "KnobError", "Library", "ModelError", "TensorType", "Value", "compile",
           "compile_stages", "inspect", "load", "nn", "num_threads", "ops", "run_reference",
           "set_num_threads", "to_graph"]
