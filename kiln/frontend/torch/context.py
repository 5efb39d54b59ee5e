"""What every torch converter uses: the conversion ``Context``, the ``@aten`` registry, dtypes.

A converter takes the node's arguments as the ATen schema orders them (positional arguments
positionally, keyword-only ones by keyword, defaults filled in from the schema); fx nodes among
them are already replaced by what they converted to: a kiln ``Value`` for a tensor, a list for a
tuple of tensors, a ``Dim`` (an int or a symbolic dim name) for a size. It returns a ``Value``,
or a tuple of them (``None`` where kiln does not compute that output) for multi-output ops.

Shapes come from torch, not from the arguments: every fx node carries its output's FakeTensor
(``node.meta["val"]``), so ``view``, ``expand``, ``full`` and friends read the result shape from
``cx.out_shape()`` and never evaluate torch's size arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from kiln.errors import ModelError
from kiln.ir.dtype import DType, as_dtype
from kiln.ir.graph import Graph, Value
from kiln.ir.ops.registry import get_op
from kiln.ir.passes.fold import evaluate_constant
from kiln.ir.types import Dim, broadcast_shapes, normalize_axis

Scalar = int | float | bool


def kiln_dtype(dtype: torch.dtype) -> DType:
    """The kiln dtype of a torch dtype (``torch.float32`` -> ``float32``)."""
    name = str(dtype).removeprefix("torch.")
    try:
        return as_dtype(name)
    except ModelError:
        raise ModelError(f"torch dtype {name} has no kiln equivalent") from None


def tensor_to_numpy(t: torch.Tensor) -> np.ndarray:
    """A copy of ``t``'s data; bfloat16 and float8 go through their bits (NumPy has no such
    types: kiln holds them as ml_dtypes arrays)."""
    t = t.detach().cpu().contiguous()
    dt = kiln_dtype(t.dtype)
    if dt.np.kind == "V" or dt.value.startswith("float8"):   # float8_e5m2 is kind "f"
        bits = {1: torch.uint8, 2: torch.int16}[t.element_size()]
        return t.view(bits).numpy().view(dt.np).copy()
    return t.numpy().copy()


class Context:
    """The kiln graph being built and the torch node being converted.

    ``dim_names`` maps torch's size symbols (``s0``) to kiln's symbolic dim names; a symbol not
    in it is a size torch only learns at run time (``nonzero``'s), which kiln cannot take.
    """

    def __init__(self, graph: Graph, dim_names: dict[Any, str]) -> None:
        self.graph = graph
        self.dim_names = dim_names
        self.node: torch.fx.Node | None = None
        self._emitted = 0

    def begin(self, node: torch.fx.Node) -> None:
        """Start converting ``node``: its first kiln op takes its name (``linear``), the
        others and its constants are named after it (``linear.add``, ``linear.const``)."""
        self.node = node
        self._emitted = 0

    def _hint(self, what: str) -> str:
        if self.node is None:
            return what
        if what == "const":
            return f"{self.node.name}.const"
        self._emitted += 1
        return self.node.name if self._emitted == 1 else f"{self.node.name}.{what}"

    # -- the node's result, as torch traced it -----------------------------------------------
    def meta(self, node: torch.fx.Node | None = None) -> Any:
        """``node``'s (the current node's) traced result: a FakeTensor, a tuple, a SymInt."""
        node = node if node is not None else self.node
        assert node is not None
        return node.meta.get("val")

    def out_shape(self) -> tuple[Dim, ...]:
        """The current node's output shape in kiln dims."""
        return self.dims(self.meta().shape)

    def out_dtype(self) -> DType:
        return kiln_dtype(self.meta().dtype)

    def dim(self, size: object) -> Dim:
        """An int, or the kiln name of a symbolic size (a SymInt that is one size symbol)."""
        if isinstance(size, torch.SymInt):
            expr = size.node.expr
            if expr.is_number:
                return int(expr)
            if expr.is_Symbol and expr in self.dim_names:
                return self.dim_names[expr]
            if expr.is_Symbol:
                raise ModelError(f"the size {expr} is known only at run time (it depends on "
                                 "the data, as nonzero's does); kiln needs sizes that follow "
                                 "from the input shapes")
            shown = expr.xreplace({s: type(s)(n) for s, n in self.dim_names.items()})
            raise ModelError(f"the size {shown} is an expression of symbolic dims; kiln's "
                             "symbolic dims are single names: keep such dims apart (no "
                             "flatten of two symbolic dims) or export them as static")
        if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
            return int(size)
        raise ModelError(f"expected a size, got {size!r}")

    def dims(self, sizes: Sequence[object]) -> tuple[Dim, ...]:
        return tuple(self.dim(s) for s in sizes)

    # -- building ------------------------------------------------------------------------------
    def add(self, op: str, inputs: Sequence[Value], **attrs: Any) -> list[Value]:
        """Emit kiln ``op`` named after the torch node; evaluated at once into constants when
        every input is constant (a parameter's permute, an arange's cast)."""
        opdef = get_op(op)
        at = opdef.make_attrs(**attrs)
        try:
            types = opdef.infer_types(at, [v.type for v in inputs])
        except ModelError as e:
            raise ModelError(f"kiln {op}: {e}") from None
        arrays = evaluate_constant(opdef, at, inputs, types)
        if arrays is not None:
            return [self.constant(a, t.dtype) for a, t in zip(arrays, types, strict=True)]
        return self.graph.add(opdef, inputs, name=self._hint(op), **attrs)

    def emit(self, op: str, inputs: Sequence[Value], **attrs: Any) -> Value:
        """``add`` for single-output ops."""
        return self.add(op, inputs, **attrs)[0]

    def constant(self, data: object, dtype: object | None = None,
                 name: str | None = None) -> Value:
        return self.graph.constant(data, name=name or self._hint("const"), dtype=dtype)

    def scalar(self, value: Scalar, dtype: DType) -> Value:
        """A 0-d constant of ``dtype``."""
        return self.constant(np.array(value, dtype=dtype.np))

    def cast(self, x: Value, dtype: DType) -> Value:
        return x if x.dtype is dtype else self.emit("cast", [x], dtype=dtype)

    def operand(self, x: Value | Scalar, dtype: DType) -> Value:
        """A tensor operand cast to ``dtype``, or a Python (or symbolic) number as a scalar
        constant of it."""
        if isinstance(x, Value):
            return self.cast(x, dtype)
        if isinstance(x, torch.SymInt | torch.SymFloat | torch.SymBool):
            raise ModelError(f"the number {x} is known only at run time; kiln takes sizes as "
                             "numbers only where they are static")
        if isinstance(x, str):
            raise ModelError(f"the size {x!r} is symbolic; kiln takes it here only when it is "
                             "static")
        return self.scalar(x, dtype)

    def reshape(self, x: Value, shape: Sequence[Dim]) -> Value:
        shape = tuple(shape)
        return x if shape == x.shape else self.emit("reshape", [x], shape=shape)

    def broadcast(self, x: Value, shape: Sequence[Dim]) -> Value:
        shape = tuple(shape)
        if broadcast_shapes(x.shape, shape) == x.shape:
            return x
        return self.emit("broadcast_to", [x], shape=shape)


def static_ints(values: Sequence[object], what: str) -> list[int]:
    """Sizes that must be static (kernel sizes, paddings), as ints."""
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ModelError(f"{what} must be static ints, got {list(values)}")
        out.append(int(v))
    return out


def axes_of(dim: object, rank: int) -> tuple[int, ...]:
    """Normalised axes from torch's ``dim`` argument (an int, a list, or None for all)."""
    if dim is None or (isinstance(dim, (list, tuple)) and not dim):
        return tuple(range(rank))
    dims = dim if isinstance(dim, (list, tuple)) else [dim]
    return tuple(sorted({normalize_axis(int(d), rank) for d in dims}))


def prod(dims: Sequence[Dim]) -> Dim:
    """The product of dims; a symbolic one only alone among 1s."""
    syms = [d for d in dims if isinstance(d, str)]
    ints = math.prod(d for d in dims if isinstance(d, int))
    if not syms:
        return ints
    if len(syms) == 1 and ints == 1:
        return syms[0]
    raise ModelError(f"this needs static dims, got {list(dims)}")


# -- the converter registry -------------------------------------------------------------------
Converter = Callable[..., Any]
CONVERTERS: dict[str, Converter] = {}


def aten(*overloads: str) -> Callable[[Converter], Converter]:
    """Register a converter for ATen overloads: ``@aten("add.Tensor", "add.Scalar")``."""
    def deco(fn: Converter) -> Converter:
        for name in overloads:
            key = f"aten.{name}"
            if key in CONVERTERS:
                raise ValueError(f"torch op {key} registered twice")
            CONVERTERS[key] = fn
        return fn
    return deco


def result_type(a: Value | Scalar | str, b: Value | Scalar | str) -> DType:
    """torch's type promotion of two operands, tensors or Python numbers (a 0-d tensor counts
    for less than one with dims, a number for less than both, as in ``torch.result_type``)."""
    return kiln_dtype(torch.result_type(_stand_in(a), _stand_in(b)))


def _stand_in(x: Value | Scalar | str) -> torch.Tensor | Scalar:
    if isinstance(x, Value):
        return torch.empty((0,) if x.shape else (), dtype=getattr(torch, x.dtype.value))
    return 1 if isinstance(x, str) else x        # a symbolic size is an int
