"""ONNX converters, one module per op family. Importing this package registers them all."""

from kiln.frontend.onnx.ops import (  # noqa: F401  (registration)
    control,
    core,
    elementwise,
    gemm,
    indexing,
    movement,
    nn,
    quant,
    reduce,
    rnn,
)
