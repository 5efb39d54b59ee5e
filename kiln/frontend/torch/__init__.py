"""The torch frontend: ``from_torch`` turns a ``torch.export`` program into a kiln ``Graph``.

    import kiln, torch
    from kiln.frontend.torch import from_torch
    g = from_torch(model.eval(), (torch.randn(2, 16, 64),))
    lib = kiln.compile(g, target="x86")

torch is an optional dependency (``pip install 'kiln[torch]'``); importing this package
imports it. ``context`` holds what converters share (the ``Context``, the ``@aten``
registry, dtypes); ``ops/`` holds the converters, one module per op family; ``importer``
exports, decomposes and drives them.
"""

from kiln.frontend.torch import ops  # noqa: F401  (registers the converters)
from kiln.frontend.torch.context import CONVERTERS, Context, aten
from kiln.frontend.torch.importer import from_torch, supported_ops

__all__ = ["CONVERTERS", "Context", "aten", "from_torch", "supported_ops"]
