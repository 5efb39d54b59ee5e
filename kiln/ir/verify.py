"""The IR verifier: checks the invariants every pass relies on; each error names the node."""

from __future__ import annotations

from kiln.errors import InternalError, ModelError
from kiln.ir.graph import Graph


def verify(g: Graph) -> None:
    """Raise ``InternalError`` naming the first node that breaks an invariant:
    inputs defined before use, recorded output types equal to re-inferred ones, unique names,
    outputs defined."""
    defined: set[int] = {id(v) for v in g.inputs}
    names: set[str] = set()
    for v in g.inputs:
        if v.name in names:
            raise InternalError(f"graph {g.name}: input name {v.name!r} repeats")
        names.add(v.name)
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
    if not g.outputs:
        raise ModelError(f"graph {g.name} has no outputs (call graph.output(...))")
    for v in g.outputs:
        if not v.is_constant and id(v) not in defined:
            raise InternalError(f"graph {g.name}: output %{v.name} is never defined")
