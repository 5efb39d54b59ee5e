"""The ONNX frontend: ``import_onnx`` turns an ONNX model into a kiln ``Graph``.

``context`` holds what converters share (the ``Context``, the ``@onnx_op`` registry, dtypes);
``ops/`` holds the converters, one module per op family; ``importer`` drives them.
"""

from kiln.frontend.onnx import ops  # noqa: F401  (registers the converters)
from kiln.frontend.onnx.context import CONVERTERS, Context, onnx_op
from kiln.frontend.onnx.importer import import_onnx

__all__ = ["CONVERTERS", "Context", "import_onnx", "onnx_op"]
