"""The reference interpreter: runs any graph node by node with each op's NumPy reference.

It is the oracle every kernel, pass and compiled library is tested against.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kiln.errors import InputError, ModelError
from kiln.ir.graph import Graph
from kiln.ir.types import TensorType


def check_inputs(expected: Sequence[tuple[str, TensorType]],
                 inputs: Mapping[str, object]) -> dict[str, np.ndarray]:
    """Validate feeds against ``(name, type)`` pairs: names, dtypes and dims (a symbolic dim
    must have one size across inputs). Errors name the input; returns the arrays by name."""
    names = [name for name, _ in expected]
    unknown = sorted(set(inputs) - set(names))
    missing = [n for n in names if n not in inputs]
    if unknown or missing:
        parts = []
        if missing:
            parts.append("missing input(s) " + ", ".join(repr(n) for n in missing))
        if unknown:
            parts.append("unknown input(s) " + ", ".join(repr(n) for n in unknown))
        raise InputError("; ".join(parts) + " (expected "
                         + ", ".join(f"{n}: {t}" for n, t in expected) + ")")
    out, symbols = {}, bind_symbols(expected, inputs)
    for name, ty in expected:
        arr = np.asarray(inputs[name])
        if arr.dtype != ty.dtype.np:
            raise InputError(f"input {name!r}: expected dtype {ty.dtype}, got {arr.dtype}")
        if arr.ndim != ty.rank:
            raise InputError(f"input {name!r}: expected shape {list(ty.shape)}, "
                             f"got {list(arr.shape)}")
        for want, got in zip(ty.shape, arr.shape, strict=True):
            if isinstance(want, str):
                if symbols[want] != got:
                    raise InputError(f"input {name!r}: dim {want!r} is {got} here but "
                                     f"{symbols[want]} in another input")
            elif want != got:
                raise InputError(f"input {name!r}: expected shape {list(ty.shape)}, "
                                 f"got {list(arr.shape)}")
        out[name] = arr
    return out


def bind_symbols(expected: Sequence[tuple[str, TensorType]],
                 inputs: Mapping[str, object]) -> dict[str, int]:
    """The size of each symbolic dim, from the first input that has it."""
    symbols: dict[str, int] = {}
    for name, ty in expected:
        shape = np.shape(inputs[name])
        if len(shape) == ty.rank:
            for want, got in zip(ty.shape, shape, strict=True):
                if isinstance(want, str):
                    symbols.setdefault(want, got)
    return symbols


def bind_attrs(attrs: Any, symbols: Mapping[str, int]) -> Any:
    """``attrs`` with symbolic dims in its tuple fields (reshape's shape, slice's ends) replaced
    by their sizes in this run."""
    if not dataclasses.is_dataclass(attrs):
        return attrs
    changes = {}
    for f in dataclasses.fields(attrs):
        v = getattr(attrs, f.name)
        if isinstance(v, tuple) and any(isinstance(d, str) for d in v):
            changes[f.name] = tuple(symbols[d] if isinstance(d, str) else d for d in v)
    return dataclasses.replace(attrs, **changes) if changes else attrs


def run_reference(g: Graph, inputs: Mapping[str, np.ndarray] | None = None,
                  **kwargs: np.ndarray) -> list[np.ndarray]:
    """Run ``g`` with NumPy; returns the outputs in graph-output order."""
    env = reference_values(g, {**(inputs or {}), **kwargs})
    return [v.data if v.is_constant else env[id(v)] for v in g.outputs]


def reference_values(g: Graph, inputs: Mapping[str, np.ndarray]) -> dict[int, np.ndarray]:
    """Run ``g`` with NumPy; returns every value it computes (and its inputs), by
    ``id(value)``: what ``kiln debug`` compares each kernel's outputs with."""
    expected = [(v.name, v.type) for v in g.inputs]
    feeds = check_inputs(expected, inputs)
    symbols = bind_symbols(expected, feeds)
    env: dict[int, np.ndarray] = {id(v): feeds[v.name] for v in g.inputs}

    def get(v) -> np.ndarray:
        if v.is_constant:
            return v.data
        return env[id(v)]

    for n in g.nodes:
        try:
            results = n.op.run_reference(bind_attrs(n.attrs, symbols),
                                         [get(v) for v in n.inputs])
        except ModelError as e:
            raise ModelError(f"node {n.name} ({n.op.name}): {e}") from None
        for o, r in zip(n.outputs, results, strict=True):
            env[id(o)] = r
    return env
