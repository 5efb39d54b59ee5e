"""torch converters, one module per op family. Importing this package registers them all."""

from kiln.frontend.torch.ops import (  # noqa: F401  (registration)
    creation,
    elementwise,
    gemm,
    movement,
    nn,
    reduce,
)
