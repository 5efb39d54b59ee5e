"""The graph IR: a ``Graph`` owns ``Value``s (tensors) and ``Node``s (op applications).

Nodes are kept in topological order: ``Graph.add`` appends, and passes that rewrite the graph
keep the order. Every value has a graph-unique name, which the printer and errors use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from kiln.errors import ModelError
from kiln.ir.dtype import as_dtype
from kiln.ir.ops.registry import OpDef, get_op
from kiln.ir.types import Dim, TensorType


class Value:
    """A tensor in a graph: a graph input, a constant (``data`` set) or a node output."""

    def __init__(self, graph: Graph, name: str, ty: TensorType,
                 producer: Node | None = None, data: np.ndarray | None = None) -> None:
        self.graph = graph
        self.name = name
        self.type = ty
        self.producer = producer
        self.data = data

    @property
    def shape(self) -> tuple[Dim, ...]:
        return self.type.shape

    @property
    def dtype(self):  # noqa: ANN201 - DType, kept short for the builder API
        return self.type.dtype

    @property
    def is_constant(self) -> bool:
        return self.data is not None

    def __repr__(self) -> str:
        return f"%{self.name}: {self.type}"


class Node:
    """One application of an op: ``outputs = op(attrs)(*inputs)``."""

    def __init__(self, name: str, op: OpDef, attrs: Any, inputs: list[Value]) -> None:
        self.name = name
        self.op = op
        self.attrs = attrs
        self.inputs = inputs
        self.outputs: list[Value] = []

    def __repr__(self) -> str:
        return f"Node({self.name}: {self.op.name})"


class Graph:
    """A dataflow graph of kiln ops with named inputs, constants and outputs.

    >>> g = Graph("mlp")
    >>> x = g.input("x", (1, 16), "float32")
    """

    def __init__(self, name: str = "main") -> None:
        self.name = name
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self.nodes: list[Node] = []
        self._names: set[str] = set()          # value names
        self._node_names: set[str] = set()

    # -- building ---------------------------------------------------------------------------
    def unique_name(self, hint: str, taken: set[str] | None = None) -> str:
        """``hint`` if free, else ``hint_<n>``; reserves and returns it (value names by
        default)."""
        taken = self._names if taken is None else taken
        hint = hint or "v"
        name, k = hint, 1
        while name in taken:
            name, k = f"{hint}_{k}", k + 1
        taken.add(name)
        return name

    def input(self, name: str, shape: Sequence[Dim], dtype: object = "float32") -> Value:
        """Declare a graph input. Dims may be ints or symbolic names (``"batch"``)."""
        if name in self._names:
            raise ModelError(f"name {name!r} is already used in graph {self.name!r}")
        self._names.add(name)
        v = Value(self, name, TensorType.of(shape, dtype))
        self.inputs.append(v)
        return v

    def constant(self, data: object, name: str = "const", dtype: object | None = None) -> Value:
        """A constant tensor (weights). ``data`` is copied into a NumPy array; an array keeps
        its dtype, Python numbers and lists of floats become float32."""
        arr = np.array(data, dtype=None if dtype is None else as_dtype(dtype).np)
        if arr.dtype == np.float64 and dtype is None and not isinstance(data, np.ndarray):
            arr = arr.astype(np.float32)   # Python floats become float32, the model default
        ty = TensorType.of(arr.shape, arr.dtype)
        return Value(self, self.unique_name(name), ty, data=arr)

    def add(self, op: str | OpDef, inputs: Sequence[Value], name: str | None = None,
            **attrs: Any) -> list[Value]:
        """Append ``op(*inputs, **attrs)``; runs shape inference and returns the outputs."""
        opdef = get_op(op) if isinstance(op, str) else op
        for v in inputs:
            if v.graph is not self:
                raise ModelError(f"op {opdef.name}: input %{v.name} belongs to graph "
                                 f"{v.graph.name!r}, not {self.name!r}")
        node = Node(self.unique_name(name or opdef.name, self._node_names), opdef,
                    opdef.make_attrs(**attrs), list(inputs))
        try:
            types = opdef.infer_types(node.attrs, [v.type for v in inputs])
        except ModelError as e:
            raise ModelError(f"node {node.name} ({opdef.name}): {e}") from None
        for i, t in enumerate(types):
            hint = node.name if len(types) == 1 else f"{node.name}.{i}"
            node.outputs.append(Value(self, self.unique_name(hint), t, producer=node))
        self.nodes.append(node)
        return node.outputs

    def output(self, *values: Value, names: Sequence[str] | None = None) -> None:
        """Mark values as graph outputs, in order; ``names`` renames them (the names a
        compiled library's outputs get)."""
        if names is not None and len(names) != len(values):
            raise ModelError(f"{len(values)} output(s) but {len(names)} name(s)")
        for i, v in enumerate(values):
            if v.graph is not self:
                raise ModelError(f"output %{v.name} belongs to another graph")
            if names is not None and names[i] != v.name:
                if names[i] in self._names:
                    raise ModelError(f"name {names[i]!r} is already used in graph {self.name!r}")
                self._names.discard(v.name)
                self._names.add(names[i])
                v.name = names[i]
            self.outputs.append(v)

    # -- queries ----------------------------------------------------------------------------
    def constants(self) -> list[Value]:
        seen: dict[int, Value] = {}
        for n in self.nodes:
            for v in n.inputs:
                if v.is_constant:
                    seen.setdefault(id(v), v)
        for v in self.outputs:
            if v.is_constant:
                seen.setdefault(id(v), v)
        return list(seen.values())

    def consumers(self) -> dict[int, list[Node]]:
        """Map ``id(value)`` to the nodes that read it, in node order."""
        uses: dict[int, list[Node]] = {}
        for n in self.nodes:
            for v in n.inputs:
                lst = uses.setdefault(id(v), [])
                if not lst or lst[-1] is not n:
                    lst.append(n)
        return uses

    def find_node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise ModelError(f"graph {self.name!r} has no node named {name!r}")

    # -- rewriting --------------------------------------------------------------------------
    def replace_uses(self, old: Value, new: Value) -> None:
        """Make every reader of ``old`` (nodes and graph outputs) read ``new`` instead."""
        for n in self.nodes:
            n.inputs = [new if v is old else v for v in n.inputs]
        self.outputs = [new if v is old else v for v in self.outputs]

    def copy(self) -> Graph:
        """A structural copy: new nodes and values; constant arrays are shared, not copied."""
        g = Graph(self.name)
        g._names = set(self._names)
        g._node_names = set(self._node_names)
        vmap: dict[int, Value] = {}

        def get(v: Value) -> Value:
            if id(v) not in vmap:   # constants are created lazily, on first use
                vmap[id(v)] = Value(g, v.name, v.type, data=v.data)
            return vmap[id(v)]

        for v in self.inputs:
            nv = Value(g, v.name, v.type)
            vmap[id(v)] = nv
            g.inputs.append(nv)
        for n in self.nodes:
            nn = Node(n.name, n.op, n.attrs, [get(v) for v in n.inputs])
            for o in n.outputs:
                no = Value(g, o.name, o.type, producer=nn)
                vmap[id(o)] = no
                nn.outputs.append(no)
            g.nodes.append(nn)
        g.outputs = [get(v) for v in self.outputs]
        return g

    def __str__(self) -> str:
        from kiln.ir.printer import print_graph
        return print_graph(self)

