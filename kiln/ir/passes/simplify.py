"""Simplification: rewrite exporters' spellings into kiln ops and drop nodes that do nothing.

Real ONNX exports write LayerNorm, RMSNorm and GELU out of primitive ops and leave chains of
transposes, reshapes and casts behind. Each rule below matches one family of spellings at one
node and rewrites it without changing any result:

- no-ops: a cast to the same dtype, a reshape or broadcast to the same shape, an identity
  transpose, a slice of everything, a concat of one tensor, ``x * 1``, ``x / 1``, ``x + 0``,
  ``x - 0``, ``x ** 1`` (when broadcasting leaves the type alone), ``where`` on a constant
  condition;
- chains: ``transpose(transpose(x))`` is one transpose (or none), ``reshape(reshape(x))`` one
  reshape, ``cast(cast(x))`` one cast when the first is exact for every value of ``x``'s dtype
  (int32 -> int64 -> float32, never float -> int -> float); casts of constants fold;
- fusions: written-out LayerNorm (PyTorch's ``(x - mean) / sqrt(var + eps)`` and TF's
  ``x * inv + (beta - mean * inv)``) -> ``layer_norm``; T5/LLaMA's ``x * rsqrt(mean(x^2) +
  eps) * w`` -> ``rms_norm``; the Erf and tanh GELU formulas -> ``gelu``. Constants match the
  textbook values within ``RTOL``; every intermediate value of a pattern must be read only
  inside it, or the pattern is left alone.

A fused node is named after its pattern's scope (``/enc/block.0/layer.0/layer_norm/rms_norm``
for ONNX node names) and its output keeps the name of the value it replaces, so graph outputs
keep theirs. Nodes a rewrite leaves dead are removed at once. Run after constant folding (shape
subgraphs and parameters must be constants by then) and before fusion.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from kiln.ir.dtype import DType
from kiln.ir.graph import Graph, Node, Value
from kiln.ir.ops.reduce import reduce_axes
from kiln.ir.types import normalize_axis

RTOL = 1e-4
"""Relative tolerance when matching a pattern's constants (0.5, sqrt(2), 0.044715, ...)."""

SQRT2 = math.sqrt(2.0)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
GELU_CUBIC = 0.044715

# dtype -> the dtypes that hold each of its values exactly (a cast through one is lossless)
_EXACT_IN: dict[DType, set[DType]] = {
    DType.bool: set(DType),
    DType.int8: {DType.int16, DType.int32, DType.int64,
                 DType.float16, DType.float32, DType.float64},
    DType.uint8: {DType.int16, DType.int32, DType.int64,
                  DType.float16, DType.float32, DType.float64},
    DType.int16: {DType.int32, DType.int64, DType.float32, DType.float64},
    DType.int32: {DType.int64, DType.float64},
    DType.float16: {DType.float32, DType.float64},
    DType.float32: {DType.float64},
}


# -- the rewriter -------------------------------------------------------------------------------
class _Rewriter:
    """The graph plus who reads each value, kept current across rewrites."""

    def __init__(self, g: Graph) -> None:
        self.g = g
        self.removed: set[int] = set()
        self.refresh()

    def refresh(self) -> None:
        self.uses = self.g.consumers()
        self.graph_outputs = {id(v) for v in self.g.outputs}

    def used(self, v: Value) -> bool:
        return bool(self.uses.get(id(v))) or id(v) in self.graph_outputs

    def sole_user(self, v: Value) -> Node | None:
        """The one node that reads ``v``, when ``v`` has exactly one reader and is no output."""
        readers = self.uses.get(id(v), [])
        return readers[0] if len(readers) == 1 and id(v) not in self.graph_outputs else None

    def private(self, nodes: Sequence[Node], root: Node) -> bool:
        """Is every value the pattern ``nodes`` computes, but ``root``'s, read only inside it?"""
        ids = {id(n) for n in nodes}
        return all(id(o) not in self.graph_outputs
                   and all(id(c) in ids for c in self.uses.get(id(o), []))
                   for n in nodes if n is not root for o in n.outputs)

    def replace(self, root: Node, op: str, inputs: list[Value], pattern: Sequence[Node],
                **attrs: object) -> None:
        """Put ``op(inputs)`` where ``root`` is; it takes over ``root``'s output and its name,
        and the pattern's nodes left unread are removed."""
        g = self.g
        (new,) = g.add(op, inputs, name=_scope(pattern) + op, **attrs)
        node = g.nodes.pop()
        g.nodes.insert(g.nodes.index(root), node)   # its inputs all come before the root
        old = root.outputs[0]
        new.name, old.name = old.name, new.name
        g.replace_uses(old, new)
        self.refresh()
        self.drop_dead([root, *pattern])

    def forward(self, n: Node, v: Value) -> bool:
        """Make the readers of ``n``'s output read ``v`` instead (``n`` does nothing). A graph
        output keeps its name, passed to ``v``; when ``v`` is a graph input, a constant or
        another output (whose name must stay), ``n`` is kept."""
        out = n.outputs[0]
        if id(out) in self.graph_outputs:
            if v.producer is None or id(v) in self.graph_outputs:
                return False
            v.name, out.name = out.name, v.name
        self.g.replace_uses(out, v)
        self.refresh()
        self.drop_dead([n])
        return True

    def drop_dead(self, candidates: Sequence[Node]) -> None:
        """Remove the candidates nothing reads any more, readers before their producers."""
        pos = {id(n): i for i, n in enumerate(self.g.nodes)}
        dead: set[int] = set()
        for n in sorted({id(n): n for n in candidates}.values(), key=lambda n: -pos[id(n)]):
            if any(self.used(o) for o in n.outputs):
                continue
            dead.add(id(n))
            for v in n.inputs:
                readers = self.uses.get(id(v), [])
                if n in readers:
                    readers.remove(n)
        self.g.nodes = [n for n in self.g.nodes if id(n) not in dead]
        self.removed |= dead


def _scope(nodes: Sequence[Node]) -> str:
    """The ONNX scope the nodes share ("/enc/block.0/layer.0/layer_norm/"), or ""."""
    prefix = os.path.commonprefix([n.name for n in nodes])
    return prefix[:prefix.rfind("/") + 1]


# -- matching helpers ---------------------------------------------------------------------------
def _producer(v: Value, *ops: str) -> Node | None:
    p = v.producer
    return p if p is not None and p.op.name in ops else None


def _scalar(v: Value) -> float | None:
    """The value of a one-element floating-point constant."""
    if v.is_constant and v.data.size == 1 and v.dtype.is_float:
        return float(v.data.reshape(()))
    return None


def _near(v: Value | float | None, want: float) -> bool:
    got = _scalar(v) if isinstance(v, Value) else v
    return got is not None and abs(got - want) <= RTOL * abs(want)


def _all_equal(v: Value, value: float | bool) -> bool:
    return v.is_constant and v.data.size > 0 and bool(np.all(v.data == value))


def _pairs(n: Node) -> list[tuple[Value, Value]]:
    """``n``'s two operands in order, and swapped when the op commutes."""
    a, b = n.inputs
    return [(a, b), (b, a)] if n.op.name in ("add", "mul") else [(a, b)]


def _unique(nodes: Sequence[Node]) -> list[Node]:
    return list({id(n): n for n in nodes}.values())


# -- no-ops, chains and casts -------------------------------------------------------------------
def _fold_cast(rw: _Rewriter, n: Node) -> str | None:
    """A cast of a constant becomes a constant (so later patterns see a plain value)."""
    if n.op.name != "cast" or not n.inputs[0].is_constant:
        return None
    out = n.outputs[0]
    (data,) = n.op.run_reference(n.attrs, [n.inputs[0].data])
    rw.g.replace_uses(out, Value(rw.g, out.name, out.type, data=data))
    rw.refresh()
    rw.drop_dead([n])
    return "fold cast"


def _passthrough(n: Node) -> Value | None:
    """The input ``n`` returns unchanged, if it does nothing."""
    op, at, out = n.op.name, n.attrs, n.outputs[0]
    if not n.inputs:
        return None
    x = n.inputs[0]
    if op == "cast":
        return x if x.dtype == at.dtype else None
    if op == "reshape":
        return x if x.shape == out.shape else None
    if op == "transpose":
        return x if at.perm == tuple(range(len(at.perm))) else None
    if op in ("broadcast_to", "concat"):    # to its own shape; a concat of one tensor
        return x if len(n.inputs) == 1 and x.type == out.type else None
    if op == "slice":
        for a, b, e, s in zip(at.axes, at.starts, at.ends, at.steps, strict=True):
            d = x.shape[normalize_axis(a, x.type.rank)]
            if (not isinstance(d, int) or isinstance(e, str)
                    or range(*slice(b, e, s).indices(d)) != range(d)):
                return None
        return x
    if op == "where":
        cond, a, b = n.inputs
        pick = a if _all_equal(cond, True) else b if _all_equal(cond, False) else None
        return pick if pick is not None and pick.type == out.type else None
    identity = {"add": 0, "sub": 0, "mul": 1, "div": 1, "pow": 1}.get(op)
    if identity is None or out.dtype is DType.bool:
        return None
    for v, c in _pairs(n):
        if _all_equal(c, identity) and v.type == out.type:
            return v
    return None


def _no_op(rw: _Rewriter, n: Node) -> str | None:
    x = _passthrough(n)
    return f"no-op {n.op.name}" if x is not None and rw.forward(n, x) else None


def _chain(rw: _Rewriter, n: Node) -> str | None:
    """transpose(transpose(x)), reshape(reshape(x)) and exact cast(cast(x)) read ``x`` directly:
    the outer node is changed in place (its name and output stay), the inner one goes if
    nothing else reads it."""
    op = n.op.name
    inner = _producer(n.inputs[0], op) if op in ("transpose", "reshape", "cast") else None
    if inner is None:
        return None
    x = inner.inputs[0]
    if op == "transpose":
        perm = tuple(inner.attrs.perm[q] for q in n.attrs.perm)
        if perm == tuple(range(len(perm))) and rw.forward(n, x):
            rw.drop_dead([inner])
            return "transpose pair"
        attrs = n.op.make_attrs(perm=perm)
    elif op == "reshape":
        attrs = n.op.make_attrs(shape=n.outputs[0].shape)
    else:
        if inner.attrs.dtype not in _EXACT_IN.get(x.dtype, set()):
            return None
        attrs = n.attrs
    n.inputs, n.attrs = [x], attrs
    rw.refresh()
    rw.drop_dead([inner])
    return f"{op} pair"


# -- LayerNorm and RMSNorm ----------------------------------------------------------------------
Match = tuple[Value, list[Node]]


def _sqrt_of(v: Value) -> Match | None:
    """``v = sqrt(e)`` or ``pow(e, 0.5)``: (e, nodes)."""
    p = v.producer
    if p is not None and (p.op.name == "sqrt" or p.op.name == "pow" and _near(p.inputs[1], 0.5)):
        return p.inputs[0], [p]
    return None


def _rsqrt_of(v: Value) -> Match | None:
    """``v = 1 / sqrt(e)``: rsqrt(e), reciprocal(sqrt(e)), 1 / sqrt(e) or pow(e, -0.5)."""
    p = v.producer
    if p is None:
        return None
    if p.op.name == "rsqrt" or p.op.name == "pow" and _near(p.inputs[1], -0.5):
        return p.inputs[0], [p]
    if p.op.name == "reciprocal":
        s = p.inputs[0]
    elif p.op.name == "div" and _near(p.inputs[0], 1.0):
        s = p.inputs[1]
    else:
        return None
    found = _sqrt_of(s)
    return None if found is None else (found[0], [p, *found[1]])


def _normalised(n: Node) -> tuple[Value, Value, list[Node]] | None:
    """``n = num / sqrt(e)`` or ``num * (1 / sqrt(e))``: (num, e, nodes)."""
    if n.op.name == "div" and (found := _sqrt_of(n.inputs[1])) is not None:
        return n.inputs[0], found[0], [n, *found[1]]
    if n.op.name == "mul":
        for num, r in _pairs(n):
            if (found := _rsqrt_of(r)) is not None:
                return num, found[0], [n, *found[1]]
    return None


def _trailing(mean: Node) -> int | None:
    """How many trailing axes a keepdims reduce_mean reduces (None: other axes, or no keepdims)."""
    rank = mean.inputs[0].type.rank
    axes = reduce_axes(mean.attrs, rank)
    if not mean.attrs.keepdims or not axes or axes != tuple(range(rank - len(axes), rank)):
        return None
    return len(axes)


def _square_of(v: Value) -> Match | None:
    """``v = b * b`` or ``pow(b, 2)``: (b, nodes)."""
    p = _producer(v, "mul", "pow")
    if p is not None and (p.op.name == "mul" and p.inputs[0] is p.inputs[1]
                          or p.op.name == "pow" and _near(p.inputs[1], 2.0)):
        return p.inputs[0], [p]
    return None


def _mean_square(e: Value) -> tuple[Value, float, int, list[Node]] | None:
    """``e = mean(b^2) + eps`` (or no eps) over trailing axes: (b, eps, axis count, nodes)."""
    nodes: list[Node] = []
    eps = 0.0
    if (add := _producer(e, "add")) is not None:
        for v, c in _pairs(add):
            if _scalar(c) is not None and v.type == e.type:
                nodes, eps, e = [add], _scalar(c), v
                break
        else:
            return None
    mean = _producer(e, "reduce_mean")
    if mean is None or (k := _trailing(mean)) is None:
        return None
    found = _square_of(mean.inputs[0])
    if found is None:
        return None
    return found[0], eps, k, [*nodes, mean, *found[1]]


def _centred(num: Value, k: int) -> tuple[Value, Value, list[Node]] | None:
    """``num = x - mean(x)`` over ``k`` trailing axes: (x, the mean, nodes)."""
    d = _producer(num, "sub")
    if d is None:
        return None
    x, m = d.inputs
    mean = _producer(m, "reduce_mean")
    if mean is None or mean.inputs[0] is not x or _trailing(mean) != k or num.type != x.type:
        return None
    return x, m, [d, mean]


def _same_centring(a: Value, b: Value, k: int) -> list[Node] | None:
    """``a`` and ``b`` both ``x - mean(x)`` of one ``x`` (the same node, or twin nodes as a
    traced ``(x - u).pow(2)`` and ``(x - u) / s`` give): the nodes, or None."""
    ca, cb = _centred(a, k), _centred(b, k)
    if ca is None or cb is None or ca[0] is not cb[0]:
        return None
    return _unique([*ca[2], *cb[2]])


def _param(rw: _Rewriter, v: Value, x: Value, axis: int) -> Value | None:
    """``v`` as a gamma/beta of shape ``x.shape[axis:]``: itself, or a constant that only
    varies along the normalised axes, materialised at that shape."""
    want = x.shape[axis:]
    if v.shape == want:
        return v
    lead = x.type.rank - v.type.rank
    if not v.is_constant or lead < 0 or not all(isinstance(d, int) for d in want):
        return None
    padded = (1,) * lead + tuple(v.shape)
    if any(d != 1 for d in padded[:axis]):
        return None                       # it varies across rows: no per-row-position param
    data = np.broadcast_to(v.data.reshape(padded[axis:]), want)
    return rw.g.constant(np.ascontiguousarray(data), name=v.name)


def _filled(rw: _Rewriter, x: Value, axis: int, value: float, name: str) -> Value | None:
    """A constant gamma (ones) or beta (zeros) for a norm written without one."""
    want = x.shape[axis:]
    if not all(isinstance(d, int) for d in want):
        return None
    return rw.g.constant(np.full(want, value, dtype=x.dtype.np), name=name)


def _affine_tail(rw: _Rewriter, root: Node, x: Value, axis: int, with_beta: bool
                 ) -> tuple[Node, Value | None, Value | None, list[Node]]:
    """Follow ``root``'s output through ``* gamma`` and then ``+ beta`` while each is its only
    reader: (the new root, gamma, beta, the nodes taken)."""
    gamma = beta = None
    taken: list[Node] = []
    c = rw.sole_user(root.outputs[0])
    if c is not None and c.op.name == "mul" and c.outputs[0].type == x.type:
        other = next(b for a, b in _pairs(c) if a is root.outputs[0])
        if other is not root.outputs[0] and (gamma := _param(rw, other, x, axis)) is not None:
            root, c = c, rw.sole_user(c.outputs[0])
            taken.append(root)
    if with_beta and c is not None and c.op.name == "add" and c.outputs[0].type == x.type:
        other = next(b for a, b in _pairs(c) if a is root.outputs[0])
        if other is not root.outputs[0] and (beta := _param(rw, other, x, axis)) is not None:
            root = c
            taken.append(root)
    return root, gamma, beta, taken


def _emit_norm(rw: _Rewriter, op: str, root: Node, pattern: list[Node], x: Value, k: int,
               eps: float, gamma: Value | None, beta: Value | None) -> str | None:
    axis = x.type.rank - k
    name = _scope(pattern) + op
    if gamma is None:
        gamma = _filled(rw, x, axis, 1.0, f"{name}_gamma")
    if beta is None and op == "layer_norm":
        beta = _filled(rw, x, axis, 0.0, f"{name}_beta")
    inputs = [x, gamma] if op == "rms_norm" else [x, gamma, beta]
    if any(v is None for v in inputs):
        return None                       # a symbolic row and nothing to take the shape from
    inside = {id(n) for n in pattern}
    if any(v.producer is not None and id(v.producer) in inside for v in inputs):
        return None                       # a parameter computed by the pattern itself
    rw.replace(root, op, inputs, pattern, axis=axis, epsilon=eps)
    return op


def _fuse_norm(rw: _Rewriter, n: Node) -> str | None:
    """``num / sqrt(mean(sq) + eps)`` (or ``num * rsqrt(...)``) then ``* gamma + beta``:
    layer_norm when num and sq's base are ``x - mean(x)``, rms_norm when both are ``x``."""
    found = _normalised(n)
    if found is None:
        return None
    num, e, nodes = found
    stats = _mean_square(e)
    if stats is None:
        return None
    base, eps, k, more = stats
    centring = _same_centring(num, base, k)
    if centring is not None:
        op, x = "layer_norm", _producer(num, "sub").inputs[0]
    elif base is num:
        op, x, centring = "rms_norm", num, []
    else:
        return None
    if not x.dtype.is_float or n.outputs[0].type != x.type:
        return None
    pattern = _unique([*nodes, *more, *centring])
    root, gamma, beta, tail = _affine_tail(rw, n, x, x.type.rank - k, op == "layer_norm")
    pattern += tail
    if not rw.private(pattern, root):
        return None
    return _emit_norm(rw, op, root, pattern, x, k, eps, gamma, beta)


def _fuse_tf_layer_norm(rw: _Rewriter, n: Node) -> str | None:
    """TF's batch_normalization spelling (keras LayerNormalization through tf2onnx):
    ``y = x * inv + (beta - mean * inv)`` with ``inv = rsqrt(var + eps) [* gamma]`` and
    ``var = mean((x - mean)^2)``; without beta, ``x * inv - mean * inv``."""
    if n.op.name not in ("add", "sub"):
        return None
    for p_val, q_val in _pairs(n):
        p = _producer(p_val, "mul")
        if p is None:
            continue
        for x, inv in _pairs(p):
            match = _tf_shift(n, q_val, inv)
            if match is None:
                continue
            m, beta, shift_nodes = match
            found = _tf_inv(rw, inv, x, m)
            if found is not None:
                k, eps, gamma, inv_nodes = found
                axis = x.type.rank - k
                if beta is not None and (beta := _param(rw, beta, x, axis)) is None:
                    continue
                pattern = _unique([n, p, *shift_nodes, *inv_nodes])
                types_ok = all(v.type == x.type for v in (n.outputs[0], p.outputs[0]))
                if types_ok and x.dtype.is_float and rw.private(pattern, n):
                    return _emit_norm(rw, "layer_norm", n, pattern, x, k, eps, gamma, beta)
    return None


def _tf_shift(n: Node, q: Value, inv: Value) -> tuple[Value, Value | None, list[Node]] | None:
    """``n`` subtracts ``m * inv`` (as ``- q``, ``+ (beta - q)`` or ``+ neg(q)``): (m, beta,
    nodes)."""
    beta, nodes = None, []
    if n.op.name == "add":
        qn = _producer(q, "sub", "neg")
        if qn is None:
            return None
        nodes = [qn]
        if qn.op.name == "sub":
            beta, q = qn.inputs
        else:
            q = qn.inputs[0]
    mq = _producer(q, "mul")
    if mq is None:
        return None
    for m, other in _pairs(mq):
        if other is inv:
            return m, beta, [*nodes, mq]
    return None


def _tf_inv(rw: _Rewriter, inv: Value, x: Value, m: Value
            ) -> tuple[int, float, Value | None, list[Node]] | None:
    """``inv = rsqrt(mean((x - m)^2) + eps) [* gamma]`` with ``m = mean(x)``: (axis count,
    eps, gamma, nodes)."""
    candidates: list[tuple[Value, Value | None, list[Node]]] = [(inv, None, [])]
    if (g_mul := _producer(inv, "mul")) is not None:
        candidates += [(r, gamma, [g_mul]) for r, gamma in _pairs(g_mul)]
    for r, gamma, nodes in candidates:
        found = _rsqrt_of(r)
        stats = None if found is None else _mean_square(found[0])
        if stats is None:
            continue
        base, eps, k, more = stats
        centring = _centred(base, k)
        if centring is None or centring[0] is not x or centring[1] is not m:
            continue
        if gamma is not None and (gamma := _param(rw, gamma, x, x.type.rank - k)) is None:
            continue
        return k, eps, gamma, [*nodes, *found[1], *more, *centring[2]]
    return None


# -- GELU ---------------------------------------------------------------------------------------
Factor = Value | float


def _two_factors(n: Node) -> list[Factor] | None:
    """``n`` as a product of two factors; scalar constants as floats (a divisor c as 1/c)."""
    if n.op.name == "mul":
        return [_scalar(v) if _scalar(v) is not None else v for v in n.inputs]
    if n.op.name == "div" and (c := _scalar(n.inputs[1])):
        return [n.inputs[0], 1.0 / c]
    return None


def _three_factors(n: Node) -> list[tuple[list[Factor], Node]]:
    """The ways to read ``n`` as a product of three factors through one more mul/div node:
    (factors, that node)."""
    top = _two_factors(n)
    out = []
    for i, f in enumerate(top or []):
        if isinstance(f, Value) and f.producer is not None:
            inner = _two_factors(f.producer)
            if inner is not None:
                out.append(([*inner, top[1 - i]], f.producer))
    return out


def _times_const(v: Value, want: float, ops: tuple[str, ...] = ("mul",)) -> Match | None:
    """``v = a * c`` (or ``a / (1/c)`` when div is allowed) with ``c`` near ``want``."""
    p = _producer(v, *ops)
    if p is None:
        return None
    for a, c in _pairs(p):
        scale = _scalar(c)
        if scale is not None and p.op.name == "div":
            scale = 1.0 / scale if scale else None
        if _near(scale, want):
            return a, [p]
    return None


def _cube(v: Value, x: Value) -> list[Node] | None:
    """``v = x^3``: pow(x, 3), x * x * x, or x * pow(x, 2): the nodes."""
    p = _producer(v, "pow", "mul")
    if p is None:
        return None
    if p.op.name == "pow":
        return [p] if p.inputs[0] is x and _near(p.inputs[1], 3.0) else None
    for a, b in _pairs(p):
        sq = _square_of(b)
        if a is x and sq is not None and sq[0] is x:
            return [p, *sq[1]]
    return None


def _gelu_bracket(v: Value, x: Value) -> tuple[str, list[Node]] | None:
    """``v = 1 + erf(x / sqrt 2)`` or ``1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))``:
    (approximate, nodes)."""
    add = _producer(v, "add")
    if add is None:
        return None
    for u, one in _pairs(add):
        f = _producer(u, "erf", "tanh") if _near(one, 1.0) else None
        if f is None:
            continue
        if f.op.name == "erf":
            t = _times_const(f.inputs[0], 1.0 / SQRT2, ("mul", "div"))
            if t is not None and t[0] is x:
                return "none", [add, f, *t[1]]
            continue
        w = _times_const(f.inputs[0], SQRT_2_OVER_PI)
        inner = None if w is None else _producer(w[0], "add")
        for a, b in _pairs(inner) if inner is not None else []:
            c = _times_const(b, GELU_CUBIC)
            cube = None if c is None else _cube(c[0], x)
            if a is x and cube is not None:
                return "tanh", [add, f, *w[1], inner, *c[1], *cube]
    return None


def _fuse_gelu(rw: _Rewriter, n: Node) -> str | None:
    """``0.5 * x * bracket`` in any order of the three factors (``/ 2`` for ``* 0.5``)."""
    for factors, inner in _three_factors(n):
        consts = [f for f in factors if not isinstance(f, Value)]
        values = [f for f in factors if isinstance(f, Value)]
        if len(consts) != 1 or not _near(consts[0], 0.5):
            continue
        for x, bracket in (values, values[::-1]):
            found = _gelu_bracket(bracket, x)
            if found is None or not x.dtype.is_float or n.outputs[0].type != x.type:
                continue
            approximate, nodes = found
            pattern = _unique([n, inner, *nodes])
            if rw.private(pattern, n):
                rw.replace(n, "gelu", [x], pattern, approximate=approximate)
                return "gelu" if approximate == "none" else "gelu tanh"
    return None


# -- the pass -----------------------------------------------------------------------------------
Rule = Callable[[_Rewriter, Node], str | None]

# the cheap local rules first, so the fusions see patterns without no-ops and casts in them
RULES: list[Rule] = [_fold_cast, _no_op, _chain, _fuse_norm, _fuse_tf_layer_norm, _fuse_gelu]


def simplify_graph(g: Graph) -> Counter[str]:
    """Apply the rules in place until none fires; returns how often each rewrite happened
    (``{"layer_norm": 7, "gelu": 3, "no-op reshape": 2, ...}``)."""
    rw = _Rewriter(g)
    counts: Counter[str] = Counter()
    changed = True
    while changed:
        changed = False
        for rule in RULES:
            for n in list(g.nodes):
                if id(n) in rw.removed:
                    continue
                done = rule(rw, n)
                if done is not None:
                    counts[done] += 1
                    changed = True
    return counts
