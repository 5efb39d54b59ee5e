"""A stable, readable text form of graphs: what ``print(graph)`` and ``kiln inspect`` show."""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from kiln.ir.graph import Graph, Node, Value


def format_attrs(attrs: Any) -> str:
    parts = []
    for f in fields(attrs):
        v = getattr(attrs, f.name)
        if isinstance(v, tuple):
            v = "[" + ", ".join(str(x) for x in v) + "]"
        parts.append(f"{f.name}={v}")
    return " {" + ", ".join(parts) + "}" if parts else ""


def format_constant(v: Value) -> str:
    data = v.data
    assert data is not None
    if data.size <= 4:
        body = np.array2string(data.reshape(-1), separator=", ", precision=6)
        return f"const %{v.name}: {v.type} = {body}"
    return f"const %{v.name}: {v.type}"


def format_node(n: Node) -> str:
    outs = ", ".join(f"%{o.name}" for o in n.outputs)
    args = ", ".join(f"%{v.name}" for v in n.inputs)
    types = ", ".join(str(o.type) for o in n.outputs)
    return f"{outs} = {n.op.name}({args}){format_attrs(n.attrs)} : {types}"


def print_graph(g: Graph) -> str:
    params = ", ".join(f"%{v.name}: {v.type}" for v in g.inputs)
    lines = [f"graph {g.name}({params}) {{"]
    lines += ["  " + format_constant(c) for c in g.constants()]
    lines += ["  " + format_node(n) for n in g.nodes]
    lines.append("  return " + ", ".join(f"%{v.name}" for v in g.outputs))
    lines.append("}")
    return "\n".join(lines)
