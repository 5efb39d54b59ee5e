"""ONNX converters, one module per op family. Importing this package registers them all."""

from kiln.frontend.onnx.ops import (  # noqa: F401  (registration)
    attention,
    control,
    core,
    elementwise,
    gemm,
    indexing,
    loss,
    movement,
    nn,
    quant,
    reduce,
    rnn,
    signal,
)
