"""Frontends: the Python builder (``builder``, exported as ``kiln.ops``), nn modules, ONNX."""
