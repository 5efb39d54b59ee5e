"""Fix symbolic dims to concrete sizes and re-infer every type downstream."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from kiln.errors import ModelError
from kiln.ir.graph import Graph
from kiln.ir.types import Dim, TensorType, format_shape


def _bind_attrs(attrs: object, symbols: Mapping[str, int]) -> object:
    """Substitute bound symbols in tuple-valued attributes (a reshape's target shape)."""
    changes = {}
    for f in dataclasses.fields(attrs):
        v = getattr(attrs, f.name)
        if isinstance(v, tuple) and any(isinstance(x, str) and x in symbols for x in v):
            changes[f.name] = tuple(symbols.get(x, x) if isinstance(x, str) else x for x in v)
    return dataclasses.replace(attrs, **changes) if changes else attrs


def specialize(g: Graph, input_shapes: Mapping[str, Sequence[int]]) -> Graph:
    """A copy of ``g`` whose inputs have the given shapes (symbolic dims bound to sizes)."""
    names = {v.name for v in g.inputs}
    unknown = sorted(set(input_shapes) - names)
    if unknown:
        raise ModelError(f"input_shapes names unknown input(s) {unknown}; "
                         f"the model's inputs are {sorted(names)}")
    g = g.copy()
    symbols: dict[str, int] = {}
    for v in g.inputs:
        if v.name not in input_shapes:
            continue
        shape = tuple(int(d) for d in input_shapes[v.name])
        if len(shape) != v.type.rank:
            raise ModelError(f"input {v.name!r} has rank {v.type.rank} "
                             f"({format_shape(v.shape)}), but input_shapes gives "
                             f"{format_shape(shape)}")
        for want, got in zip(v.shape, shape, strict=True):
            if isinstance(want, str):
                if symbols.setdefault(want, got) != got:
                    raise ModelError(f"dim {want!r} is bound to both {symbols[want]} and {got}")
            elif want != got:
                raise ModelError(f"input {v.name!r} has fixed shape {format_shape(v.shape)}; "
                                 f"input_shapes gives {format_shape(shape)}")
        v.type = TensorType(shape, v.dtype)
    for v in g.inputs:   # inputs not named in input_shapes may share bound symbols
        v.type = TensorType(_bind(v.shape, symbols), v.dtype)
    for n in g.nodes:
        n.attrs = _bind_attrs(n.attrs, symbols)
        try:
            types = n.op.infer_types(n.attrs, [v.type for v in n.inputs])
        except ModelError as e:
            raise ModelError(f"node {n.name} ({n.op.name}): {e}") from None
        for o, t in zip(n.outputs, types, strict=True):
            o.type = t
    return g


def _bind(shape: Sequence[Dim], symbols: Mapping[str, int]) -> tuple[Dim, ...]:
    return tuple(symbols.get(d, d) if isinstance(d, str) else d for d in shape)
