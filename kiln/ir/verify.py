"""The IR verifier: checks the invariants every pass relies on; each error names the node.

It also holds kiln's memory budget: no tensor of a model (input, constant or intermediate)
may need more than ``max_tensor_bytes()`` bytes, ``2**40`` unless the environment variable
``KILN_MAX_TENSOR_BYTES`` says otherwise. A model over it is refused while it is imported or
verified, before anything of that size is allocated.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from kiln.errors import ConfigError, InternalError, ModelError
from kiln.ir.graph import Graph, Value
from kiln.ir.types import Dim, format_shape

MAX_TENSOR_BYTES_ENV = "KILN_MAX_TENSOR_BYTES"
DEFAULT_MAX_TENSOR_BYTES = 1 << 40     # 1 TiB: far beyond any real model's tensor


def max_tensor_bytes() -> int:
    """The largest tensor, in bytes, that kiln accepts: ``$KILN_MAX_TENSOR_BYTES`` (a positive
    integer; ``_`` separators allowed) or ``DEFAULT_MAX_TENSOR_BYTES``."""
    text = os.environ.get(MAX_TENSOR_BYTES_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_TENSOR_BYTES
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if limit <= 0:
        raise ConfigError(f"{MAX_TENSOR_BYTES_ENV}={text!r} is not a positive integer "
                          "(the largest tensor kiln accepts, in bytes)")
    return limit


def human_bytes(n: int) -> str:
    """``n`` bytes in binary units: ``"4.0 TiB"``."""
    size, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if size < 1024 or unit == "EiB":
            break
        size /= 1024
    return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"


def tensor_bytes(shape: Sequence[int], bits: int) -> int:
    """The bytes a dense tensor of ``shape`` and ``bits``-wide elements occupies."""
    return (math.prod(shape) * bits + 7) // 8


def check_tensor_bytes(what: str, shape: Sequence[Dim], bits: int,
                       limit: int | None = None) -> None:
    """Raise ``ModelError`` when a tensor of ``shape`` (symbolic dims are not counted) with
    ``bits``-wide elements needs more than ``limit`` (default ``max_tensor_bytes()``) bytes;
    ``what`` names it (``"input 'x'"``)."""
    static = [d for d in shape if isinstance(d, int)]
    if not static:
        return
    limit = max_tensor_bytes() if limit is None else limit
    n = tensor_bytes(static, bits)
    if n > limit:
        dims = format_shape(shape)
        raise ModelError(f"{what} ({dims}, {bits}-bit elements) would need {n} bytes "
                         f"({human_bytes(n)}), over kiln's limit of {limit} bytes per tensor "
                         f"(set {MAX_TENSOR_BYTES_ENV} to change it)")


def check_value_bytes(v: Value, what: str, limit: int | None = None) -> None:
    """``check_tensor_bytes`` for a kiln value."""
    check_tensor_bytes(what, v.shape, v.dtype.bits, limit)


def verify(g: Graph) -> None:
    """Raise ``InternalError`` naming the first node that breaks an invariant:
    inputs defined before use, recorded output types equal to re-inferred ones, unique names,
    outputs defined. Raise ``ModelError`` when the graph has no outputs, or when one of its
    tensors needs more than ``max_tensor_bytes()`` bytes."""
    limit = max_tensor_bytes()
    defined: set[int] = {id(v) for v in g.inputs}
    names: set[str] = set()
    for v in g.inputs:
        if v.name in names:
            raise InternalError(f"graph {g.name}: input name {v.name!r} repeats")
        names.add(v.name)
        check_value_bytes(v, f"graph {g.name}: input %{v.name}", limit)
    for n in g.nodes:
        where = f"node {n.name} ({n.op.name})"
        for v in n.inputs:
            if v.graph is not g:
                raise InternalError(f"{where}: input %{v.name} belongs to another graph")
            if not v.is_constant and id(v) not in defined:
                raise InternalError(f"{where}: input %{v.name} is used before it is defined")
        try:
            types = n.op.infer_types(n.attrs, [v.type for v in n.inputs])
        except ModelError as e:
            raise InternalError(f"{where}: {e}") from None
        if types != [o.type for o in n.outputs]:
            raise InternalError(f"{where}: outputs are typed "
                                f"{[str(o.type) for o in n.outputs]} but infer to "
                                f"{[str(t) for t in types]}")
        for o in n.outputs:
            if o.producer is not n:
                raise InternalError(f"{where}: output %{o.name} has the wrong producer")
            if o.name in names:
                raise InternalError(f"{where}: value name %{o.name} repeats")
            names.add(o.name)
            defined.add(id(o))
            check_value_bytes(o, f"{where}: output %{o.name}", limit)
    if not g.outputs:
        raise ModelError(f"graph {g.name} has no outputs (call graph.output(...))")
    for v in g.outputs:
        if not v.is_constant and id(v) not in defined:
            raise InternalError(f"graph {g.name}: output %{v.name} is never defined")
