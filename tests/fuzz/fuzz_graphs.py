"""Hypothesis strategies for random, well-typed kiln graphs, and the differential check.

A ``Case`` is a graph, how to feed each of its inputs, and the sizes its symbolic dims take in
each run. ``graphs(families)`` builds one by drawing a short program: start from one or two
inputs, then apply ops of the given families to values already in the graph (the latest value
most often, so chains form; an older one sometimes, so values fan out), and return the last
value and a few intermediate ones as outputs.

The generator keeps every reference computation well-conditioned, so a mismatch is kiln's:

- ops with a restricted domain get a prologue that lands in it (``log(|x| + c)``,
  ``asin(0.9 tanh x)``, a divisor ``|x| + c``);
- discontinuous ops (comparisons, floor, round, sign, arg_max, a float-to-int cast, ``mod``) only
  see *exact* values, which kiln and NumPy compute bit for bit (inputs, and what data
  movement, ``neg``, ``abs``, ``relu``, ``maximum``, ``where`` and ``reduce_max`` make of them);
- integer values carry a bound on their magnitude, so no integer op overflows.

``check_case`` compiles the graph once for x86 and compares every output of every run with
the reference interpreter: integers and bools exactly, floats within 1e-4 of the output's scale.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st

import kiln
from kiln import ops
from kiln.ir.graph import Graph, Value
from kiln.ir.types import Dim

# dims: 1s, primes, small powers of two; symbolic dims take the sizes below at run time
DIMS = (1, 1, 2, 3, 4, 5, 7, 8, 13, 16, 17, 37)
SYMBOLS = ("n", "m")
SYMBOL_SIZES = (1, 2, 7, 13, 37)
MAX_ELEMENTS = 6000        # per value, symbolic dims counted at their largest size
MAX_STEPS = 7

FAMILIES = ("unary", "binary", "compare", "cast", "reduce", "norm", "gemm", "movement", "conv")


@dataclass(frozen=True)
class Feed:
    """How to fill one graph input: ``normal`` floats times ``scale``, integers in
    ``[lo, hi]`` (``ints``; gather indices too) or random ``bool``s."""

    kind: str
    lo: int = 0
    hi: int = 0
    scale: float = 1.0

    def make(self, rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype
             ) -> np.ndarray:
        if self.kind == "normal":
            return (rng.standard_normal(shape) * self.scale).astype(dtype)
        if self.kind == "bool":
            return rng.random(shape) < 0.5
        return rng.integers(self.lo, self.hi + 1, size=shape).astype(dtype)


@dataclass
class Case:
    """A graph to check, its inputs' feeds, and one symbol binding per run."""

    graph: Graph
    feeds: dict[str, Feed]
    bindings: list[dict[str, int]]
    seed: int = 0

    def inputs(self, run: int) -> dict[str, np.ndarray]:
        """The feeds of run ``run``: symbolic dims take ``bindings[run]``."""
        rng = np.random.default_rng(self.seed * 100 + run)
        sizes = self.bindings[run]
        out = {}
        for v in self.graph.inputs:
            shape = tuple(sizes[d] if isinstance(d, str) else d for d in v.shape)
            out[v.name] = self.feeds[v.name].make(rng, shape, v.dtype.np)
        return out

    def __repr__(self) -> str:
        return f"Case(bindings={self.bindings}, seed={self.seed},\n{self.graph})"


@dataclass
class Val:
    """A value of the graph being drawn: ``exact`` when kiln computes it bit for bit as NumPy
    does; ``bound`` bounds an integer value's magnitude."""

    value: Value
    exact: bool = False
    bound: int = 0

    @property
    def shape(self) -> tuple[Dim, ...]:
        return self.value.shape

    @property
    def kind(self) -> str:
        """"f", "i" or "b"."""
        dt = self.value.dtype
        return "f" if dt.is_float else ("b" if dt.np.kind == "b" else "i")


def numel(shape: Sequence[Dim]) -> int:
    """The element count with every symbolic dim at its largest size."""
    return math.prod(d if isinstance(d, int) else max(SYMBOL_SIZES) for d in shape)


class _Skip(Exception):
    """This step does not apply to the values drawn; draw another."""


@dataclass
class Builder:
    """Draws one graph: ``draw`` is hypothesis's, the NumPy generator makes constants."""

    draw: Callable
    rng: np.random.Generator
    g: Graph = field(default_factory=lambda: Graph("fuzz"))
    vals: list[Val] = field(default_factory=list)
    feeds: dict[str, Feed] = field(default_factory=dict)
    symbolic: bool = True

    # -- drawing helpers ----------------------------------------------------------------------
    def flag(self) -> bool:
        return self.draw(st.booleans())

    def choice(self, options: Sequence) -> object:
        return self.draw(st.sampled_from(list(options)))

    def pick(self, pred: Callable[[Val], bool] = lambda v: True) -> Val:
        """A value satisfying ``pred``: the latest most often (index 0 shrinks to it)."""
        cands = [v for v in self.vals if pred(v)]
        if not cands:
            raise _Skip
        return cands[-1 - self.draw(st.integers(0, len(cands) - 1))]

    def push(self, value: Value, exact: bool = False, bound: int = 0) -> Val:
        if numel(value.shape) > MAX_ELEMENTS:
            raise _Skip
        v = Val(value, exact, bound)
        self.vals.append(v)
        return v

    def dim(self) -> Dim:
        if self.symbolic and self.draw(st.integers(0, 4)) == 0:
            return self.choice(SYMBOLS)
        return self.choice(DIMS)

    def shape(self, min_rank: int = 1, max_rank: int = 4) -> tuple[Dim, ...]:
        dims = [self.dim() for _ in range(self.draw(st.integers(min_rank, max_rank)))]
        while numel(dims) > MAX_ELEMENTS:
            dims[dims.index(max(dims, key=lambda d: numel([d])))] = 1
        return tuple(dims)

    def input(self, shape: Sequence[Dim], dtype: str = "float32", feed: Feed | None = None,
              exact: bool = True) -> Val:
        name = f"x{len(self.g.inputs)}"
        if feed is None:
            feed = {"float32": Feed("normal"), "bool": Feed("bool")}.get(
                dtype, Feed("ints", 0 if dtype.startswith("u") else -5, 5))
        self.feeds[name] = feed
        bound = max(abs(feed.lo), abs(feed.hi))
        return self.push(self.g.input(name, tuple(shape), dtype), exact, bound)

    def const(self, shape: Sequence[int], dtype: str = "float32", scale: float = 1.0) -> Value:
        if dtype == "float32":
            data = (self.rng.standard_normal(tuple(shape)) * scale).astype(np.float32)
        else:
            data = self.rng.integers(-5, 6, size=tuple(shape)).astype(dtype)
        return self.g.constant(data, name="w")

    def broadcast_shape(self, shape: Sequence[Dim]) -> tuple[Dim, ...]:
        """A shape that broadcasts against ``shape``: a suffix of it, some dims set to 1, and
        sometimes a leading 1 the result gains."""
        out = list(shape[self.draw(st.integers(0, len(shape))):])
        out = [1 if self.flag() else d for d in out]
        if self.draw(st.integers(0, 3)) == 0:
            out.insert(0, 1)
        return tuple(out)

    def operand(self, like: Val, kind: str = "f") -> Val:
        """A second operand broadcasting against ``like``: a value already in the graph, a new
        input, a constant or a scalar."""
        how = self.draw(st.integers(0, 3))
        if how == 0:
            try:
                return self.pick(lambda v: v is not like and v.kind == kind
                                 and v.value.dtype == like.value.dtype
                                 and _broadcasts(v.shape, like.shape))
            except _Skip:
                pass
        shape = self.broadcast_shape(like.shape)
        dtype = like.value.dtype.value
        if how == 1 or not all(isinstance(d, int) for d in shape):
            return self.input(shape, dtype)
        if how == 2 and kind == "f":
            return Val(self.const(shape), exact=True)
        if kind == "b":
            return Val(self.g.constant(np.array(self.flag()), "s"), exact=True)
        low = 0 if dtype.startswith("u") else -3
        scalar = self.rng.integers(low, 4) if kind == "i" else self.rng.standard_normal()
        return Val(self.g.constant(np.array(scalar, dtype), "s"), exact=True, bound=3)

    # -- domain prologues ---------------------------------------------------------------------
    def positive(self, x: Val, low: float = 0.5) -> Value:
        """A value >= ``low`` computed from ``x``."""
        how = self.draw(st.integers(0, 2))
        if how == 0:
            return ops.add(ops.abs(x.value), low)
        if how == 1:
            return ops.add(ops.mul(x.value, x.value), low)
        return ops.add(ops.sigmoid(x.value), low)

    def unit(self, x: Val) -> Value:
        """A value in (-0.95, 0.95) computed from ``x``."""
        if self.flag():
            return ops.mul(ops.tanh(x.value), 0.95)
        return ops.mul(self.g.add("softsign", [x.value])[0], 0.95)

    # -- families -----------------------------------------------------------------------------
    def unary(self) -> None:
        x = self.pick()
        if x.kind == "b":
            self.push(self.g.add("logical_not", [x.value])[0], x.exact)
            return
        if x.kind == "i":
            op = self.choice(["neg", "abs", "relu", "sign", "bitwise_not"])
            if op in ("neg", "bitwise_not") and x.value.dtype.np.kind == "u":
                op = "relu"
            self.push(self.g.add(op, [x.value])[0], True, x.bound + 1)
            return
        plain = ["exp", "tanh", "sigmoid", "erf", "gelu", "gelu_tanh", "sin", "cos", "atan",
                 "asinh", "softplus", "softsign", "mish", "hard_swish", "leaky_relu", "elu",
                 "celu", "selu", "hard_sigmoid", "swish", "sinh", "cosh"]
        exact = ["neg", "abs", "relu"]
        domain = ["log", "sqrt", "rsqrt", "reciprocal", "asin", "acos", "atanh", "acosh", "tan"]
        jumps = ["floor", "ceil", "round", "sign"]
        op = self.choice(plain + exact + domain + (jumps if x.exact else []))
        v = x.value
        if op in ("log", "sqrt", "rsqrt", "reciprocal"):
            v = self.positive(x)
        elif op in ("asin", "acos", "atanh"):
            v = self.unit(x)
        elif op == "acosh":
            v = self.positive(x, 1.0)
        elif op == "tan":
            v = ops.mul(ops.tanh(x.value), 1.4)
        elif op in ("exp", "sinh", "cosh"):
            v = ops.minimum(v, 20.0)                      # no overflow
        if op == "gelu_tanh":
            out = ops.gelu(v, approximate="tanh")
        elif op in ("leaky_relu", "elu", "celu", "swish"):
            out = self.g.add(op, [v], alpha=self.choice([0.1, 0.5, 1.0, 1.7]))[0]
        else:
            out = self.g.add(op, [v])[0]
        self.push(out, x.exact and op in exact + jumps, x.bound)

    def binary(self) -> None:
        x = self.pick()
        if x.kind == "b":
            y = self.operand(x, "b")
            op = self.choice(["logical_and", "logical_or", "logical_xor"])
            self.push(self.g.add(op, self.order(x.value, y.value))[0], x.exact and y.exact)
            return
        if x.kind == "i":
            self.int_binary(x)
            return
        op = self.choice(["add", "sub", "mul", "div", "maximum", "minimum", "pow", "prelu",
                          "mod"])
        if op == "mod" and not x.exact:
            op = "maximum"
        y = self.operand(x)
        if op == "div":
            self.push(ops.div(x.value, self.positive(y)) if self.flag()
                      else ops.div(y.value, self.positive(x)))
        elif op == "pow":
            e = self.choice([2.0, 3.0, 0.5, -1.0, 1.5])
            self.push(ops.pow(self.positive(x), np.array(e, np.float32)))
        elif op == "mod":
            d = self.choice([0.75, -1.5, 2.0, 3.0])
            self.push(self.g.add("mod", [x.value, self.g.constant(np.float32(d), "d")],
                                 fmod=self.flag())[0], False)
        else:
            exact = op in ("maximum", "minimum") and x.exact and y.exact
            self.push(self.g.add(op, self.order(x.value, y.value))[0], exact)

    def order(self, a: Value, b: Value) -> list[Value]:
        return [a, b] if self.flag() else [b, a]

    def int_binary(self, x: Val) -> None:
        op = self.choice(["add", "sub", "mul", "maximum", "minimum", "div", "mod",
                          "bitwise_and", "bitwise_or", "bitwise_xor", "shift_left",
                          "shift_right"])
        if op in ("shift_left", "shift_right"):
            bits = x.value.dtype.np.itemsize * 8
            lo, hi = (0, 3) if op == "shift_left" else (-2, bits + 2)
            count = self.input(self.broadcast_shape(x.shape), x.value.dtype.value,
                               Feed("ints", lo, hi))
            bound = x.bound * 8 if op == "shift_left" else x.bound
            if bound > _limit(x.value):
                raise _Skip
            self.push(self.g.add(op, [x.value, count.value])[0], True, bound)
            return
        y = self.operand(x, "i")
        unsigned = x.value.dtype.np.kind == "u"
        bound = {"add": x.bound + y.bound, "sub": x.bound + y.bound, "mul": x.bound * y.bound,
                 "bitwise_and": 2 * max(x.bound, y.bound) + 1, "bitwise_or": 2 * max(x.bound,
                 y.bound) + 1, "bitwise_xor": 2 * max(x.bound, y.bound) + 1,
                 }.get(op, max(x.bound, y.bound))
        if bound > _limit(x.value) or (unsigned and op in ("sub", "bitwise_xor")):
            op, bound = "maximum", max(x.bound, y.bound)
        attrs = {"fmod": self.flag()} if op == "mod" else {}
        self.push(self.g.add(op, self.order(x.value, y.value), **attrs)[0], True, bound)

    def compare(self) -> None:
        x = self.pick(lambda v: v.exact and v.kind != "b")
        y = self.operand(x, x.kind)
        if not y.exact:
            y = x
        op = self.choice(["equal", "less", "less_equal", "greater", "greater_equal"])
        cond = self.push(self.g.add(op, self.order(x.value, y.value))[0], True)
        if self.draw(st.integers(0, 3)) == 0:
            return                                        # a bool output, or logical ops next
        a = self.pick(lambda v: v.kind == "f" and _broadcasts(v.shape, cond.shape))
        b = self.operand(a)
        self.push(ops.where(cond.value, *self.order(a.value, b.value)), a.exact and b.exact)

    def cast(self) -> None:
        x = self.pick()
        if x.kind == "f":
            to = self.choice(["int32", "int64", "float16", "bool"] if x.exact else ["float16"])
        elif x.kind == "i":
            to = self.choice(["float32", "int32", "int64", "bool"]
                             + (["int8"] if x.bound <= 127 else []))
        else:
            to = self.choice(["float32", "int32", "uint8"])
        y = ops.cast(x.value, to)
        if to == "float16":               # and back: a rounding to half precision
            y = ops.cast(y, "float32")
        self.push(y, x.exact, max(x.bound, 8))

    def reduce(self) -> None:
        x = self.pick(lambda v: v.kind != "b" and len(v.shape) >= 1)
        rank = len(x.shape)
        if x.kind == "i":
            ops_ = ["reduce_sum", "reduce_max", "reduce_min"]
        else:
            ops_ = ["reduce_sum", "reduce_mean", "reduce_max", "reduce_min", "reduce_log_sum_exp",
                    "reduce_prod"]
        ops_ += ["arg_max", "arg_min"] if x.exact else []
        op = self.choice(ops_)
        keep = self.flag()
        if op in ("arg_max", "arg_min"):
            axis = self.draw(st.integers(-rank, rank - 1))
            self.push(self.g.add(op, [x.value], axis=axis, keepdims=keep,
                                 select_last_index=self.flag())[0], True, 2**16)
            return
        axes: tuple[int, ...] | None = None
        if self.draw(st.integers(0, 3)):
            axes = tuple(self.draw(st.sets(st.integers(0, rank - 1), min_size=1)))
            axes = tuple(a - rank if self.flag() else a for a in axes)
        reduced = numel([d for i, d in enumerate(x.shape) if axes is None or i in
                         {a % rank for a in axes}])
        if op == "reduce_prod" and reduced > 16:
            op = "reduce_max"
        bound = x.bound * reduced if op == "reduce_sum" else x.bound
        if x.kind == "i" and bound > _limit(x.value):
            op, bound = "reduce_max", x.bound
        exact = x.exact and op in ("reduce_max", "reduce_min") or x.kind == "i"
        self.push(self.g.add(op, [x.value], axes=axes, keepdims=keep)[0], exact, bound)

    def norm(self) -> None:
        x = self.pick(lambda v: v.kind == "f" and len(v.shape) >= 1)
        rank = len(x.shape)
        op = self.choice(["softmax", "log_softmax", "layer_norm", "rms_norm"])
        axis = self.draw(st.integers(-rank, rank - 1))
        if op in ("softmax", "log_softmax"):
            self.push(self.g.add(op, [x.value], axis=axis)[0])
            return
        tail = x.shape[axis % rank:]
        if all(isinstance(d, int) for d in tail) and self.flag():
            params = [self.const(tail) for _ in range(2 if op == "layer_norm" else 1)]
        else:
            params = [self.input(tail).value for _ in range(2 if op == "layer_norm" else 1)]
        eps = self.choice([1e-5, 1e-3])
        self.push(self.g.add(op, [x.value, *params], axis=axis, epsilon=eps)[0])

    def gemm(self) -> None:
        x = self.pick(lambda v: v.kind == "f" and len(v.shape) >= 1)
        k = x.shape[-1]
        n = self.dim()
        how = self.draw(st.integers(0, 3))
        scale = 1 / math.sqrt(numel([k]))
        if how == 0 and isinstance(k, int):                  # dense, constant weight
            y = ops.dense(x.value, self.const((n if isinstance(n, int) else 16, k), scale=scale))
        elif how == 1 or len(x.shape) < 2:                   # dense, runtime weight
            y = ops.dense(x.value, self.input((n, k)).value)
        elif how == 2:                                       # matmul, constant or runtime b
            batch = self.broadcast_shape(x.shape[:-2]) if self.flag() else ()
            shape = (*batch, k, n)
            if all(isinstance(d, int) for d in shape) and self.flag():
                b = self.const(shape, scale=scale)
            else:
                b = self.input(shape).value
            y = ops.matmul(x.value, b)
        else:                                                # x @ x^T: fan-out
            perm = list(range(len(x.shape)))
            perm[-1], perm[-2] = perm[-2], perm[-1]
            y = ops.matmul(x.value, ops.transpose(x.value, perm))
        self.push(y)

    def movement(self) -> None:
        x = self.pick()
        rank = len(x.shape)
        static = [i for i, d in enumerate(x.shape) if isinstance(d, int)]
        op = self.choice(["transpose", "reshape", "concat", "slice", "gather", "broadcast_to",
                          "split"])
        keep = dict(exact=x.exact, bound=x.bound)
        if op == "transpose" and rank >= 2:
            perm = self.draw(st.permutations(list(range(rank))))
            self.push(ops.transpose(x.value, perm), **keep)
        elif op == "reshape":
            self.push(ops.reshape(x.value, self.reshaped(x.shape)), **keep)
        elif op == "concat" and static:
            axis = self.choice(static)
            parts = [x.value]
            for _ in range(self.draw(st.integers(1, 2))):
                if self.flag():
                    parts.append(x.value if self.flag() else self.g.add(
                        "neg" if x.kind != "b" else "logical_not", [x.value])[0])
                else:
                    shape = list(x.shape)
                    shape[axis] = self.choice(DIMS)
                    parts.append(self.input(shape, x.value.dtype.value).value)
                    keep["bound"] = max(x.bound, 5)
            self.push(ops.concat(parts, axis - rank if self.flag() else axis), **keep)
        elif op == "slice" and static:
            axes = self.draw(st.lists(st.sampled_from(static), min_size=1, max_size=2,
                                      unique=True))
            starts, ends, steps = [], [], []
            for a in axes:
                d = x.shape[a]
                step = self.choice([1, 1, 2, 3, -1, -2])
                b = self.draw(st.integers(-d - 2, d + 1))
                e = self.draw(st.integers(-d - 2, d + 2))
                if len(range(*slice(b, e, step).indices(d))) == 0:
                    b, e = (0, d) if step > 0 else (d - 1, -d - 1)
                starts.append(b), ends.append(e), steps.append(step)
            self.push(ops.slice(x.value, starts, ends, axes, steps), **keep)
        elif op == "gather" and static:
            axis = self.choice(static)
            d = x.shape[axis]
            ishape = self.shape(0, 2)
            dtype = self.choice(["int64", "int32"])
            if self.flag() and all(isinstance(s, int) for s in ishape):
                idx = self.g.constant(self.rng.integers(-d, d, size=ishape).astype(dtype), "idx")
            else:
                idx = self.input(ishape, dtype, Feed("ints", -d, d - 1)).value
            self.push(ops.gather(x.value, idx, axis - rank if self.flag() else axis), **keep)
        elif op == "broadcast_to":
            shape = [self.choice(DIMS) if d == 1 and self.flag() else d for d in x.shape]
            if self.flag():
                shape.insert(0, self.choice([2, 3]))
            out = self.g.add("broadcast_to", [x.value], shape=tuple(shape))[0]
            self.push(out, **keep)
        elif op == "split" and [a for a in static if x.shape[a] >= 2]:
            axis = self.choice([a for a in static if x.shape[a] >= 2])
            d = x.shape[axis]
            cut = self.draw(st.integers(1, d - 1))
            sizes = (cut, d - cut)
            parts = ops.split(x.value, sizes, axis)
            for p in parts[: self.draw(st.integers(1, 2))]:
                self.push(p, **keep)
        else:
            raise _Skip

    def reshaped(self, shape: tuple[Dim, ...]) -> tuple[Dim, ...]:
        """A new shape for the same elements: adjacent static dims merged, a static dim split
        into two factors, 1s inserted or dropped; symbolic dims stay where they are."""
        dims = list(shape)
        how = self.draw(st.integers(0, 3))
        if how == 0 and len(dims) >= 2:
            i = self.draw(st.integers(0, len(dims) - 2))
            if isinstance(dims[i], int) and isinstance(dims[i + 1], int):
                dims[i: i + 2] = [dims[i] * dims[i + 1]]
        elif how == 1 and dims:
            i = self.draw(st.integers(0, len(dims) - 1))
            if isinstance(dims[i], int):
                f = self.choice([f for f in range(1, dims[i] + 1) if dims[i] % f == 0])
                dims[i: i + 1] = [f, dims[i] // f]
        elif how == 2:
            dims.insert(self.draw(st.integers(0, len(dims))), 1)
        elif 1 in dims:
            dims.remove(1)
        if all(isinstance(d, int) for d in dims) and dims and self.flag():
            dims[self.draw(st.integers(0, len(dims) - 1))] = -1
        return tuple(dims)

    def conv(self) -> None:
        try:
            x = self.pick(lambda v: v.kind == "f" and len(v.shape) == 4 and all(
                isinstance(d, int) for d in v.shape[1:]))
        except _Skip:
            n = self.choice([1, 2, "n"] if self.symbolic else [1, 2])
            x = self.input((n, self.choice([1, 2, 3, 4, 8]), self.choice([1, 3, 5, 7, 13]),
                            self.choice([1, 2, 5, 7, 13, 16])))
        _, c, h, w = x.shape
        if self.flag():
            self.pool(x)
            return
        groups = self.choice([g for g in (1, 2, c) if c % g == 0])
        o = groups * self.choice([1, 2, 3] if groups > 1 else [1, 2, 3, 4, 7, 8, 16])
        kh, kw = self.choice([1, 2, 3]), self.choice([1, 2, 3])
        stride = (self.choice([1, 1, 2]), self.choice([1, 1, 2]))
        dil = (self.choice([1, 1, 2]), self.choice([1, 1, 2]))
        pad = tuple(self.choice([0, 0, 1, 2]) for _ in range(4))
        if (kh - 1) * dil[0] + 1 > h + pad[0] + pad[2] or (kw - 1) * dil[1] + 1 > w + pad[1] \
                + pad[3]:
            kh = kw = 1
            dil = (1, 1)
        wt = self.const((o, c // groups, kh, kw), scale=1 / math.sqrt(c // groups * kh * kw))
        self.push(ops.conv2d(x.value, wt, stride, pad, dil, groups))

    def pool(self, x: Val) -> None:
        _, _, h, w = x.shape
        mode = self.choice(["max", "avg"])
        k = (self.choice([1, 2, 3]), self.choice([1, 2, 3]))
        k = (min(k[0], h), min(k[1], w))
        strides = (self.choice([1, 2]), self.choice([1, 2]))
        pads = tuple(self.draw(st.integers(0, k[i % 2] - 1)) for i in range(4))
        out = ops.pool(x.value, mode, k, strides, pads, ceil_mode=self.flag(),
                       count_include_pad=self.flag())
        self.push(out, x.exact and mode == "max")


def _limit(v: Value) -> int:
    """The largest magnitude an integer value of ``v``'s dtype may take here (no overflow)."""
    return min(int(np.iinfo(v.dtype.np).max), 2**24)


def _broadcasts(a: Sequence[Dim], b: Sequence[Dim]) -> bool:
    """``a`` broadcasts against ``b`` without growing ``b``."""
    if len(a) > len(b):
        return False
    return all(da == 1 or da == db for da, db in zip(reversed(a), reversed(b), strict=False))


@st.composite
def graphs(draw: Callable, families: Sequence[str] = FAMILIES, symbolic: bool = True) -> Case:
    """A random graph of ops from ``families`` (a family listed twice is drawn twice as often),
    its feeds and one or two bindings of its symbolic dims."""
    seed = draw(st.integers(0, 2**16))
    b = Builder(draw, np.random.default_rng(seed), symbolic=symbolic)
    first = draw(st.sampled_from(["float32", "float32", "float32", "int32", "int64"]))
    b.input(b.shape())
    if first != "float32" or draw(st.booleans()):
        b.input(b.shape(), first)
    steps = draw(st.integers(1, MAX_STEPS))
    done = 0
    for _ in range(4 * steps):
        if done == steps:
            break
        family = draw(st.sampled_from(list(families)))
        try:
            getattr(b, family)()
            done += 1
        except _Skip:
            continue
    computed = [v for v in b.vals if v.value.producer is not None]
    if not computed:
        b.unary()
        computed = [v for v in b.vals if v.value.producer is not None]
    outs = [computed[-1].value]
    for v in computed[:-1] + b.vals[:1]:
        if draw(st.integers(0, 4)) == 0 and v.value not in outs:
            outs.append(v.value)              # mid-chain values (and rarely an input) out too
    b.g.output(*outs)
    used = {d for v in b.g.inputs for d in v.shape if isinstance(d, str)}
    bindings = [{s: draw(st.sampled_from(SYMBOL_SIZES)) for s in sorted(used)}
                for _ in range(2 if used else 1)]
    return Case(b.g, b.feeds, bindings, seed)


def assert_close(got: Sequence[np.ndarray], want: Sequence[np.ndarray], what: str = "") -> None:
    """Same count, shapes and dtypes; integers and bools equal; floats within 1e-4 of the
    output's scale (``max |want|``) plus 1e-4 relative, NaN and inf where the reference has
    them."""
    assert len(got) == len(want), (what, len(got), len(want))
    for i, (out, ref) in enumerate(zip(got, want, strict=True)):
        where = f"{what} output {i}"
        assert out.shape == ref.shape, (where, out.shape, ref.shape)
        assert out.dtype == ref.dtype, (where, out.dtype, ref.dtype)
        if ref.dtype.kind != "f":
            np.testing.assert_array_equal(out, ref, err_msg=where)
            continue
        finite = np.isfinite(ref)
        np.testing.assert_array_equal(np.isnan(out), np.isnan(ref), err_msg=where + " (NaNs)")
        np.testing.assert_array_equal(out[~finite & ~np.isnan(ref)], ref[~finite & ~np.isnan(ref)],
                                      err_msg=where + " (infs)")
        scale = float(np.abs(ref[finite]).max()) if finite.any() else 0.0
        np.testing.assert_allclose(out[finite], ref[finite], rtol=1e-4, atol=1e-4 * scale + 1e-6,
                                   err_msg=where)


def check_case(case: Case) -> None:
    """Compile ``case.graph`` for x86 once; every run's outputs must match the reference."""
    lib = kiln.compile(case.graph, "x86")
    for run, sizes in enumerate(case.bindings):
        feeds = case.inputs(run)
        want = kiln.run_reference(case.graph, feeds)
        got = lib(**feeds)
        assert_close(got, want, f"run {run} {sizes}")
