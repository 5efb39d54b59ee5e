"""Tabulate byte functions: a chain of pointwise ops that computes an 8-bit value from one
8-bit value (and scalar constants) becomes one ``table_lookup`` of 256 entries.

A quantized model spells its activations in QDQ form: HardSwish after an int8 convolution is
``dequantize -> add 3 -> quantize -> dequantize -> multiply -> quantize -> dequantize ->
divide by 6 -> quantize``, every step through a scale of its own. Run per element, that is a
dozen float operations and three divisions; yet its input is a byte, so its output takes at
most 256 values. This pass evaluates the chain once per byte value, with the reference of
each op (so the table holds exactly the bytes the chain computes), and puts a lookup in its
place::

    x: uint8 [1, 88, 3, 96]                    x: uint8 [1, 88, 3, 96]
    t = dequantize(x, 0.0557, 125)       =>    y = table_lookup(x, table[256])
    ...  (pointwise ops of t and scalars)
    y = quantize(u, 0.0299, 13)

The region grows forward from a byte value ``x`` through pointwise ops whose every other
input is a one-element constant, and keeps ``x``'s shape. Its result is the latest 8-bit value
of the region whose computation (from ``x``) nothing outside it reads; at least two ops, or a
lookup would replace a single cheap op. ``x`` has a static shape of at least 256 elements: a
smaller one (a squeeze-excite block's per-channel scales) costs less computed in the kernel
that reads it than as a kernel of its own. Run after constant folding: the scales and zero
points must be constants.
"""

from __future__ import annotations

import numpy as np

from kiln.ir.graph import Graph, Node, Value
from kiln.ir.ops.quant import TABLE_INDEX_DTYPES
from kiln.ir.ops.registry import Pattern

_POINTWISE = (Pattern.ELEMENTWISE, Pattern.BROADCAST)
MIN_OPS = 2
MIN_ELEMENTS = 256


def tabulate_byte_functions(g: Graph) -> int:
    """Replace each byte-to-byte pointwise chain of ``g`` (see the module docstring) by a
    ``table_lookup``, in place. Returns how many were replaced."""
    count = 0
    sources = [*g.inputs, *(o for n in g.nodes for o in n.outputs)]
    for x in sources:
        if (x.dtype.value not in TABLE_INDEX_DTYPES or not x.type.is_static
                or x.type.numel < MIN_ELEMENTS):
            continue
        while x.producer is None or x.producer in g.nodes:     # the source is still there
            chain = _chain(g, x)
            if chain is None:
                break
            _replace(g, x, chain)
            count += 1
    return count


def _region(g: Graph, x: Value) -> list[Node]:
    """The pointwise nodes (in program order) computed from ``x`` and one-element constants
    only, each of ``x``'s shape."""
    inside, region = {id(x)}, []
    for n in g.nodes:
        if (n.op.pattern not in _POINTWISE or len(n.outputs) != 1
                or n.outputs[0].shape != x.shape
                or not any(id(v) in inside for v in n.inputs)):
            continue
        if all(id(v) in inside or (v.is_constant and v.data.size == 1) for v in n.inputs):
            region.append(n)
            inside.add(id(n.outputs[0]))
    return region


def _chain(g: Graph, x: Value) -> list[Node] | None:
    """The nodes computing the region's result from ``x`` (the latest 8-bit value whose
    computation nothing outside reads), or None."""
    region = _region(g, x)
    if len(region) < MIN_OPS:
        return None
    uses = g.consumers()
    outputs = {id(v) for v in g.outputs}
    producer = {id(n.outputs[0]): n for n in region}
    for end in reversed(region):
        y = end.outputs[0]
        if y.dtype.value not in TABLE_INDEX_DTYPES:
            continue
        chain: dict[int, Node] = {}
        stack = [end]
        while stack:                          # the region's nodes y depends on
            n = stack.pop()
            if id(n) not in chain:
                chain[id(n)] = n
                stack.extend(producer[id(v)] for v in n.inputs if id(v) in producer)
        private = all(id(n.outputs[0]) not in outputs
                      and all(id(c) in chain for c in uses.get(id(n.outputs[0]), []))
                      for n in chain.values() if n is not end)
        if private and len(chain) >= MIN_OPS:
            return [n for n in region if id(n) in chain]
    return None


def _table(x: Value, chain: list[Node]) -> np.ndarray:
    """The chain's result for each of the 256 bit patterns of ``x``, by the ops' references."""
    env = {id(x): np.arange(256, dtype=np.uint8).view(x.dtype.np)}
    with np.errstate(all="ignore"):           # as the kernels would: inf / nan stay values
        for n in chain:
            args = [env[id(v)] if id(v) in env else v.data.reshape(()) for v in n.inputs]
            (out,) = n.op.run_reference(n.attrs, args)
            env[id(n.outputs[0])] = np.broadcast_to(out, (256,))
    y = chain[-1].outputs[0]
    return np.ascontiguousarray(env[id(y)]).astype(y.dtype.np)


def _replace(g: Graph, x: Value, chain: list[Node]) -> None:
    end = chain[-1]
    old = end.outputs[0]
    table = g.constant(_table(x, chain), name=f"{old.name}_table", dtype=old.dtype)
    (new,) = g.add("table_lookup", [x, table], name=f"{end.name}_lookup")
    node = g.nodes.pop()
    g.nodes.insert(g.nodes.index(end), node)      # its inputs all come before the chain's end
    new.name, old.name = old.name, new.name
    g.replace_uses(old, new)
    dead = {id(n) for n in chain}
    g.nodes = [n for n in g.nodes if id(n) not in dead]
