"""Fusion by pattern kind: partition the graph's nodes into groups, one kernel each.

Rules, applied greedily in topological order:
- A GEMM (out-fusable) or reduction node claims its epilogue when it starts a group: the
  pointwise nodes reached from its output through same-shape pointwise ops, cut to the longest
  prefix (in program order) whose only value read outside the group is its last one. So
  ``x * sigmoid(x)`` or an Erf-spelled GELU fuses whole; a value needed elsewhere ends it.
- An elementwise or broadcast node otherwise joins an elementwise/injective producer group
  (any fan-out); an injective node (reshape, transpose, ...) likewise.
- A reduction absorbs, as its prologue, an elementwise group whose only output it alone reads.
- Attention: a matmul whose scores flow, each value used once, through pointwise nodes (scale,
  mask) into a softmax over the last axis that is the left operand of a second matmul, is one
  group (``Group.is_attention``) when the target's rule takes it (on CPUs, ``cpu_attention``:
  float32 scores of ``ATTENTION_SCORES_BYTES`` or more): its kernel keeps a block of score rows,
  never the T x S matrix. Static shapes.
- Nothing joins a group it is also reachable from through another group (that would be a cycle).
- A pointwise node joins a group (as an epilogue or a chain) only while the group's inlined
  expression stays under ``MAX_INLINE_SIZE`` nodes (given ``inline_size``, each op's own size and
  how many times it reads each input): a transcendental op reads its input tens to thousands
  of times, so a chain of them grows as the product (``gelu(erf(asinh(x)))`` is 200 million
  nodes); past the limit the node starts a group of its own, reading the value from memory.
Run after constant folding and dead-code elimination: constants are group inputs, never nodes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from kiln.ir.graph import Graph, Node, Value
from kiln.ir.ops.registry import Pattern
from kiln.ir.printer import format_constant, format_node
from kiln.ir.types import normalize_axis

_CHAIN = (Pattern.ELEMENTWISE, Pattern.BROADCAST, Pattern.INJECTIVE)
# Scores (all batches and heads) from this size up run as one attention kernel, which never
# stores them. Measured on one core, 8 heads of d 32, the fused kernel against three: as fast
# at 128^2 to 1024^2 (1-32 MiB of scores, within the machine's noise), 1.46x faster at 2048^2
# (128 MiB). Below the threshold the three kernels stay: their GEMMs are tiled for any shape
# (ragged ones included) and take symbolic dims.
ATTENTION_SCORES_BYTES = 32 << 20
_POINTWISE = (Pattern.ELEMENTWISE, Pattern.BROADCAST)
# The largest inlined expression a group may build, in TIR nodes: ``erf(exp(x))`` (52,000) takes
# 1.6 s to compile, ``sin(exp(x))`` (240,000) 18 s.
MAX_INLINE_SIZE = 60_000

InlineSize = Callable[[Node], tuple[int, tuple[int, ...]]]
"""A node's expression size with its inputs as leaves, and its reads of each input."""


@dataclass
class Group:
    """A fused group: its nodes in topological order, the values it reads from outside
    (graph inputs, constants, other groups' outputs) and the values it produces for others."""

    name: str
    nodes: list[Node]
    anchor: Node | None                      # the GEMM or reduction, if any
    inputs: list[Value] = field(default_factory=list)
    outputs: list[Value] = field(default_factory=list)

    @property
    def is_attention(self) -> bool:
        """matmul -> pointwise... -> softmax -> matmul, fused by the attention rule."""
        return (self.anchor is not None and self.anchor.op.name == "matmul"
                and any(n.op.name == "softmax" for n in self.nodes))

    @property
    def kind(self) -> Pattern:
        if self.anchor is not None:
            return self.anchor.op.pattern
        pats = {n.op.pattern for n in self.nodes}
        for p in (Pattern.INJECTIVE, Pattern.BROADCAST):
            if p in pats:
                return p
        return Pattern.ELEMENTWISE

    def __str__(self) -> str:
        ins = ", ".join(f"%{v.name}" for v in self.inputs)
        outs = ", ".join(f"%{v.name}" for v in self.outputs)
        lines = [f"group {self.name} [{self.kind}] ({ins}) -> ({outs}) {{"]
        lines += ["  " + format_node(n) for n in self.nodes]
        return "\n".join(lines + ["}"])


@dataclass
class FusedGraph:
    """The graph partitioned into groups, in an order that respects dependencies."""

    graph: Graph
    groups: list[Group]

    def group(self, name: str) -> Group:
        for grp in self.groups:
            if grp.name == name:
                return grp
        from kiln.errors import ModelError
        raise ModelError(f"no group named {name!r}; groups: "
                         + ", ".join(grp.name for grp in self.groups))

    def __str__(self) -> str:
        g = self.graph
        params = ", ".join(f"%{v.name}: {v.type}" for v in g.inputs)
        lines = [f"fused graph {g.name}({params}) {{"]
        lines += ["  " + format_constant(c) for c in g.constants()]
        for grp in self.groups:
            lines += ["  " + line for line in str(grp).splitlines()]
        lines.append("  return " + ", ".join(f"%{v.name}" for v in g.outputs))
        return "\n".join(lines + ["}"])


AttentionRule = Callable[[list[Node]], bool]


def cpu_attention(chain: list[Node]) -> bool:
    """The CPU rule: float32 scores of ``ATTENTION_SCORES_BYTES`` or more (``chain``: the two
    matmuls and what lies between them)."""
    scores = chain[0].outputs[0]
    return (scores.dtype.value == "float32"
            and 4 * math.prod(scores.shape) >= ATTENTION_SCORES_BYTES)


class _Partition:
    def __init__(self, g: Graph, attention: AttentionRule | None = cpu_attention,
                 inline_size: InlineSize | None = None) -> None:
        self.g = g
        self.attention = attention
        self.inline_size = inline_size
        self.expr_size: dict[int, int] = {}           # node id -> its inlined expression's size
        self.uses = g.consumers()
        self.graph_outputs = {id(v) for v in g.outputs}
        self.group_of: dict[int, list[Node]] = {}     # node id -> its group's node list
        self.anchor: dict[int, Node | None] = {}      # id(group list) -> anchor
        self.claimed: dict[int, list[Node]] = {}      # node id -> the epilogue it belongs to
        self.position = {id(n): i for i, n in enumerate(g.nodes)}

    def single_use(self, v: Value) -> bool:
        return len(self.uses.get(id(v), [])) == 1 and id(v) not in self.graph_outputs

    def reaches(self, v: Value, members: list[Node]) -> bool:
        """Does ``v`` depend on any node of ``members``? Groups run as units, so a group that
        produces ``v`` depends on everything any of its nodes reads (its other nodes may read
        from ``members`` even where ``v``'s own producer does not)."""
        member_ids = {id(n) for n in members}
        stack, seen = [v], set()
        while stack:
            cur = stack.pop()
            p = cur.producer
            if p is None or id(p) in seen:
                continue
            if id(p) in member_ids:
                return True
            for q in self.group_of.get(id(p), [p]):
                if id(q) in member_ids:
                    return True
                seen.add(id(q))
                stack.extend(q.inputs)
        return False

    def inlined_size(self, n: Node, inside: dict[int, int]) -> int:
        """The size of ``n``'s expression with the producers in ``inside`` (node id -> their
        own inlined size) inlined into it; 1 without ``inline_size``."""
        if self.inline_size is None:
            return 1
        size, reads = self.inline_size(n)
        for v, r in zip(n.inputs, reads, strict=False):
            if v.producer is not None and not v.is_constant and id(v.producer) in inside:
                size += r * (inside[id(v.producer)] - 1)
        return size

    def member_sizes(self, members: list[Node]) -> dict[int, int]:
        return {id(m): self.expr_size.get(id(m), 1) for m in members}

    def can_join(self, n: Node, via: Value, members: list[Node]) -> bool:
        """May ``n`` join the anchor-less group ``members`` through its input ``via``?"""
        if self.anchor[id(members)] is not None or n.op.pattern not in _CHAIN:
            return False                  # anchored groups take only their claimed epilogue
        if self.inlined_size(n, self.member_sizes(members)) > MAX_INLINE_SIZE:
            return False
        member_ids = {id(m) for m in members}
        others = [v for v in n.inputs if v is not via and not v.is_constant
                  and (v.producer is None or id(v.producer) not in member_ids)]
        return not any(self.reaches(v, members) for v in others)

    def run(self) -> list[list[Node]]:
        order: list[list[Node]] = []
        for n in self.g.nodes:
            target = self.claimed.get(id(n))
            if target is None and n.op.pattern in _CHAIN:
                for v in n.inputs:
                    if v.producer is None or v.is_constant:
                        continue
                    members = self.group_of[id(v.producer)]
                    if self.can_join(n, v, members):
                        target = members
                        break
            if target is None:
                target = []
                anchored = n.op.pattern in (Pattern.OUT_FUSABLE, Pattern.REDUCTION,
                                            Pattern.OPAQUE)
                self.anchor[id(target)] = n if anchored else None
                order.append(target)
                if n.op.pattern is Pattern.REDUCTION:
                    self.absorb_prologue(n, target, order)
                chain = (self.attention_chain(n) if self.attention and n.op.name == "matmul"
                         else None)
                if chain:
                    for c in chain:
                        self.claimed[id(c)] = target
                elif n.op.pattern in (Pattern.OUT_FUSABLE, Pattern.REDUCTION):
                    self.claim_epilogue(n, target)
            target.append(n)
            self.group_of[id(n)] = target
            self.expr_size[id(n)] = (1 if n is self.anchor.get(id(target))
                                     else self.inlined_size(n, self.member_sizes(target)))
        return _sort_groups([m for m in order if m])

    def attention_chain(self, mm: Node) -> list[Node] | None:
        """The nodes after ``mm`` that make it attention (see the module docstring), or None."""
        scores = mm.outputs[0]
        shape, chain, v = scores.shape, [], scores
        if len(shape) < 2 or not all(isinstance(d, int) for d in shape):
            return None
        while True:
            if not self.single_use(v):
                return None
            (c,) = self.uses[id(v)]
            if not (c.op.pattern in _POINTWISE and c.outputs[0].shape == shape
                    and c.outputs[0].dtype == scores.dtype):
                break
            chain.append(c)
            v = c.outputs[0]
        if c.op.name != "softmax" or normalize_axis(c.attrs.axis, len(shape)) != len(shape) - 1:
            return None
        chain.append(c)
        probs = c.outputs[0]
        if not self.single_use(probs):
            return None
        (mm2,) = self.uses[id(probs)]
        values = mm2.inputs[1]
        if (mm2.op.name != "matmul" or mm2.inputs[0] is not probs or values is probs
                or not all(isinstance(d, int) for d in mm2.outputs[0].shape)):
            return None
        chain.append(mm2)
        inside = {id(scores), *(id(x.outputs[0]) for x in chain)}
        outside = [x for c in chain for x in c.inputs if id(x) not in inside and not x.is_constant]
        if any(self.reaches(x, [mm, *chain]) for x in outside) or not self.attention([mm, *chain]):
            return None
        return chain

    def claim_epilogue(self, anchor: Node, target: list[Node]) -> None:
        """Reserve ``anchor``'s epilogue for ``target`` (see the module docstring)."""
        if len(anchor.outputs) != 1:
            return
        out = anchor.outputs[0]
        reached, stack = {}, [out]
        while stack:                      # same-shape pointwise nodes reachable from out
            for c in self.uses.get(id(stack.pop()), []):
                if (id(c) not in reached and id(c) not in self.claimed
                        and c.op.pattern in _POINTWISE and c.outputs[0].shape == out.shape):
                    reached[id(c)] = c
                    stack.append(c.outputs[0])
        region: list[Node] = []
        inside = {id(out)}
        sizes = {id(anchor): 1}           # the epilogue reads the anchor's result as a leaf
        for c in sorted(reached.values(), key=lambda c: self.position[id(c)]):
            if not any(id(v) in inside for v in c.inputs):
                continue
            others = [v for v in c.inputs if id(v) not in inside and not v.is_constant]
            if any(self.reaches(v, [anchor, *region]) for v in others):
                continue                  # it also needs something computed from the group
            size = self.inlined_size(c, sizes)
            if size > MAX_INLINE_SIZE:
                continue                  # its expression would explode: a kernel of its own
            region.append(c)
            sizes[id(c)] = size
            inside.add(id(c.outputs[0]))
        for k in range(len(region), 0, -1):
            part = region[:k]
            ids = {id(anchor)} | {id(c) for c in part}
            exits = [v for v in [out, *(c.outputs[0] for c in part)]
                     if id(v) in self.graph_outputs
                     or any(id(c) not in ids for c in self.uses.get(id(v), []))]
            if exits == [part[-1].outputs[0]]:
                for c in part:
                    self.claimed[id(c)] = target
                return

    def absorb_prologue(self, n: Node, target: list[Node], order: list[list[Node]]) -> None:
        for v in n.inputs:
            if v.producer is None or v.is_constant or not self.single_use(v):
                continue
            members = self.group_of[id(v.producer)]
            if self.anchor[id(members)] is not None or members is target:
                continue
            if any(m.op.pattern not in _POINTWISE for m in members):
                continue
            outs = [o for m in members for o in m.outputs
                    if id(o) in self.graph_outputs
                    or any(id(c) not in {id(x) for x in members}
                           for c in self.uses.get(id(o), []))]
            if outs != [v]:
                continue
            target.extend(members)
            for m in members:
                self.group_of[id(m)] = target
            order.remove(members)


def _sort_groups(groups: list[list[Node]]) -> list[list[Node]]:
    """Order groups so that producers come first (a group can grow after later groups
    were started, so creation order is not enough); stable otherwise."""
    owner = {id(n): i for i, members in enumerate(groups) for n in members}
    deps = [{owner[id(v.producer)] for n in members for v in n.inputs
             if v.producer is not None and owner[id(v.producer)] != i}
            for i, members in enumerate(groups)]
    done: set[int] = set()
    out: list[list[Node]] = []
    while len(out) < len(groups):
        ready = next(i for i in range(len(groups)) if i not in done and deps[i] <= done)
        done.add(ready)
        out.append(groups[ready])
    return out


def _op_names(nodes: list[Node], anchor: Node | None, limit: int = 4) -> str:
    names = [n.op.name for n in nodes]
    if anchor is not None:   # the anchor first: "dense_add_gelu", "softmax_mul"
        i = nodes.index(anchor)
        names = [anchor.op.name] + names[i + 1:] + names[:i]
    out: list[str] = []
    for nm in names:
        if nm not in out:
            out.append(nm)
    return "_".join(out[:limit])


def fuse_groups(g: Graph, attention: AttentionRule | None = cpu_attention,
                inline_size: InlineSize | None = None) -> FusedGraph:
    """Partition ``g`` into fused groups (see the module docstring for the rules).
    ``attention`` says which attention chains (matmul, pointwise..., softmax, matmul) the
    target's attention template takes; with None, attention stays three groups.
    ``inline_size`` sizes each node's expression (``kiln.schedules.compute.inline_size``); with
    None, pointwise chains grow without limit."""
    part = _Partition(g, attention, inline_size)
    groups: list[Group] = []
    used: set[str] = set()
    uses = part.uses
    outs = {id(v) for v in g.outputs}
    for members in part.run():
        anchor = part.anchor[id(members)]
        ids = {id(m) for m in members}
        base = "fused_" + _op_names(members, anchor)
        name, k = base, 1
        while name in used:
            name, k = f"{base}_{k}", k + 1
        used.add(name)
        ins: list[Value] = []
        for m in members:
            for v in m.inputs:
                outside = v.producer is None or id(v.producer) not in ids
                if outside and all(v is not x for x in ins):
                    ins.append(v)
        group_outs = [o for m in members for o in m.outputs
                      if id(o) in outs or any(id(c) not in ids for c in uses.get(id(o), []))]
        groups.append(Group(name, members, anchor, ins, group_outs))
    return FusedGraph(g, groups)
