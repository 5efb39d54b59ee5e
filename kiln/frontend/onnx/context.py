"""What every ONNX converter uses: the conversion ``Context``, the ``@onnx_op`` registry, the
ONNX dtype table and shape helpers.

Inputs that kiln needs while building (Reshape's shape, Slice's starts, Split's sizes, ...) must
be constants: initializers, Constant nodes, or what the importer folds from them. Nodes whose
inputs are all constants are evaluated right away with the ops' NumPy references, so shape
arithmetic such as ``Shape -> Gather -> Concat -> Reshape`` on static shapes imports as plain
constants.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from kiln.errors import ConstantInputError, ModelError
from kiln.frontend.onnx import symbolic
from kiln.ir.dtype import DType
from kiln.ir.graph import Graph, Value
from kiln.ir.ops.registry import get_op
from kiln.ir.passes.fold import evaluate_constant
from kiln.ir.types import Dim, format_shape, normalize_axis

DTYPES: dict[int, DType] = {
    TensorProto.FLOAT: DType.float32,
    TensorProto.FLOAT16: DType.float16,
    TensorProto.DOUBLE: DType.float64,
    TensorProto.INT8: DType.int8,
    TensorProto.UINT8: DType.uint8,
    TensorProto.INT16: DType.int16,
    TensorProto.INT32: DType.int32,
    TensorProto.INT64: DType.int64,
    TensorProto.UINT16: DType.uint16,
    TensorProto.UINT32: DType.uint32,
    TensorProto.UINT64: DType.uint64,
    TensorProto.BOOL: DType.bool,
    TensorProto.BFLOAT16: DType.bfloat16,
    TensorProto.FLOAT8E4M3FN: DType.float8_e4m3fn,
    TensorProto.FLOAT8E4M3FNUZ: DType.float8_e4m3fnuz,
    TensorProto.FLOAT8E5M2: DType.float8_e5m2,
    TensorProto.FLOAT8E5M2FNUZ: DType.float8_e5m2fnuz,
    TensorProto.FLOAT4E2M1: DType.float4_e2m1fn,
    TensorProto.INT4: DType.int4,
    TensorProto.UINT4: DType.uint4,
    TensorProto.INT2: DType.int2,
    TensorProto.UINT2: DType.uint2,
}
DEFAULT_DOMAINS = ("", "ai.onnx")


def onnx_dtype(elem_type: int, what: str) -> DType:
    if elem_type not in DTYPES:
        known = elem_type in TensorProto.DataType.values()
        name = TensorProto.DataType.Name(elem_type) if known else str(elem_type)
        raise ModelError(f"{what} has ONNX dtype {name}, which kiln does not support")
    return DTYPES[elem_type]


# -- conversion context -----------------------------------------------------------------------
class Context:
    """What a converter sees: the kiln graph being built, the ONNX tensors converted so far,
    the model's opset and the node being converted (with its attributes decoded)."""

    def __init__(self, graph: Graph, opset: int) -> None:
        self.graph = graph
        self.opset = opset
        self.values: dict[str, Value] = {}
        self.unusable: dict[str, str] = {}   # tensor name -> why kiln cannot take it
        self.node: onnx.NodeProto | None = None
        self._attrs: dict[str, Any] = {}
        self._hint = "v"
        self.created: dict[int, Value] = {}   # values made while converting self.node
        # import-time elements of runtime shape tensors (object arrays of ints and dim names)
        self.known: dict[int, np.ndarray] = {}

    def begin(self, node: onnx.NodeProto) -> None:
        self.node = node
        self._attrs = {a.name: _attribute(a) for a in node.attribute}
        self._hint = node.name or next((o for o in node.output if o), node.op_type)
        self.created = {}

    # -- reading the node ----------------------------------------------------------------------
    def attr(self, name: str, default: Any = None) -> Any:
        """The decoded attribute (ints, floats, str, lists, arrays), or ``default``."""
        return self._attrs.get(name, default)

    def has_attr(self, name: str) -> bool:
        return name in self._attrs

    def input(self, i: int) -> Value | None:
        """The ``i``-th input, or None when it is absent or left empty (optional inputs)."""
        assert self.node is not None
        if i >= len(self.node.input) or not self.node.input[i]:
            return None
        return self.value(self.node.input[i])

    def required(self, i: int) -> Value:
        v = self.input(i)
        if v is None:
            raise ModelError(f"input {i} is required")
        return v

    def inputs(self) -> list[Value]:
        assert self.node is not None
        return [self.required(i) for i in range(len(self.node.input))]

    def const_input(self, i: int, required: bool = False) -> np.ndarray | None:
        """The data of the ``i``-th input, which must be a constant; None when absent."""
        v = self.required(i) if required else self.input(i)
        if v is None:
            return None
        if v.data is None:
            if any(v is x for x in self.graph.inputs):
                raise ConstantInputError(
                    f"input {i} is the graph input {v.name!r}, whose value kiln needs while "
                    f"compiling: bind it with constants={{{v.name!r}: ...}}", v.name)
            raise ModelError(f"input {i} (%{v.name}) must be a constant (an initializer, a "
                             "Constant node or a value folded from them): kiln needs it while "
                             "importing, but here it is computed at run time")
        return v.data

    def known_values(self, v: Value) -> np.ndarray | None:
        """``v``'s elements when known at import: a constant's data, or a shape computation's
        ints and symbolic dims (``[1, "seq", 384]``)."""
        if v.data is not None:
            return v.data if v.dtype.is_int or v.dtype.value == "bool" else None
        return self.known.get(id(v))

    def dims_input(self, i: int, required: bool = False) -> list[Dim] | None:
        """The ``i``-th input as a list of dims (ints and symbolic names): a shape operand
        (Reshape's shape, Expand's, ConstantOfShape's, Slice's ends); None when absent."""
        v = self.required(i) if required else self.input(i)
        if v is None:
            return None
        values = self.known_values(v)
        if values is None:
            self.const_input(i, required)      # raises the "must be a constant" error
            raise ModelError(f"input {i} (%{v.name}) must hold integers")
        return [d if isinstance(d, str) else int(d) for d in np.asarray(values).reshape(-1)]

    def value(self, name: str) -> Value:
        if name in self.values:
            return self.values[name]
        raise ModelError(self.unusable.get(name, f"tensor {name!r} is used before it is defined"))

    # -- building ------------------------------------------------------------------------------
    def add(self, op: str, inputs: Sequence[Value], **attrs: Any) -> list[Value]:
        """Emit kiln ``op``; evaluated at once into constants when every input is constant."""
        opdef = get_op(op)
        at = opdef.make_attrs(**attrs)
        try:   # checked here too so that errors name the kiln op once, not the node twice
            types = opdef.infer_types(at, [v.type for v in inputs])
        except ModelError as e:
            raise ModelError(f"kiln {op}: {e}") from None
        arrays = evaluate_constant(opdef, at, inputs, types)
        if arrays is not None:
            return [self.constant(a, dtype=t.dtype) for a, t in zip(arrays, types, strict=True)]
        outs = self.graph.add(opdef, inputs, name=self._hint, **attrs)
        self.created.update((id(o), o) for o in outs)
        self._track_symbolic(op, at, inputs, outs)
        return outs

    def _track_symbolic(self, op: str, at: Any, inputs: Sequence[Value],
                        outs: list[Value]) -> None:
        """Record ``outs[0]``'s elements when the inputs' are known at import (shape
        arithmetic on symbolic dims); the runtime node stays, for readers that need data."""
        if len(outs) != 1 or not any(id(v) in self.known for v in inputs):
            return
        values = [self.known_values(v) for v in inputs]
        if any(x is None for x in values):
            return
        result = symbolic.evaluate(op, at, [np.asarray(x, dtype=object) for x in values])
        if result is not None:
            self.known[id(outs[0])] = result

    def emit(self, op: str, inputs: Sequence[Value], **attrs: Any) -> Value:
        """``add`` for single-output ops."""
        return self.add(op, inputs, **attrs)[0]

    def constant(self, data: object, dtype: object | None = None,
                 name: str | None = None) -> Value:
        v = self.graph.constant(data, name=name or self._hint, dtype=dtype)
        self.created[id(v)] = v
        return v

    def scalar(self, value: float | int | bool, like: Value) -> Value:
        """A 0-d constant of ``like``'s dtype."""
        return self.constant(np.array(value, dtype=like.dtype.np))


def _attribute(a: onnx.AttributeProto) -> Any:
    value = helper.get_attribute_value(a)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, list):
        return [v.decode() if isinstance(v, bytes) else v for v in value]
    return value


# -- the converter registry -------------------------------------------------------------------
Converter = Callable[[onnx.NodeProto, Context], list[Value]]
CONVERTERS: dict[str, Converter] = {}


def onnx_op(*op_types: str, domain: str = "") -> Callable[[Converter], Converter]:
    """Register a converter for ONNX op types of ``domain`` (the default one unless given:
    ``@onnx_op("QLinearAdd", domain="com.microsoft")`` for onnxruntime's contrib ops)."""
    def deco(fn: Converter) -> Converter:
        for t in op_types:
            key = t if domain in DEFAULT_DOMAINS else f"{domain}.{t}"
            if key in CONVERTERS:
                raise ValueError(f"ONNX op {key} registered twice")
            CONVERTERS[key] = fn
        return fn
    return deco


def op_key(node: onnx.NodeProto) -> str:
    return node.op_type if node.domain in DEFAULT_DOMAINS else f"{node.domain}.{node.op_type}"


# -- shape helpers ----------------------------------------------------------------------------
def prod_dims(dims: Sequence[Dim], what: str) -> Dim:
    """The product of ``dims``; a lone symbolic dim among 1s stays symbolic."""
    syms = [d for d in dims if isinstance(d, str)]
    ints = [d for d in dims if isinstance(d, int)]
    if not syms:
        return math.prod(ints)
    if len(syms) == 1 and math.prod(ints) == 1:
        return syms[0]
    raise ModelError(f"{what} needs static dims, got {format_shape(dims)}")


def static_dim(x: Value, axis: int, what: str) -> int:
    d = x.shape[axis]
    if not isinstance(d, int):
        raise ModelError(f"{what} needs a static dim {axis}, got {format_shape(x.shape)}")
    return d


def resolve_minus_one(in_shape: Sequence[Dim], shape: list[Dim]) -> list[Dim]:
    """Replace a -1 when the element counts allow it, even with symbolic dims: a symbolic dim
    found in both shapes cancels out (``[batch, 4, 4] -> [batch, -1]`` gives 16)."""
    if shape.count(-1) != 1:
        return shape
    rest_in = list(in_shape)
    rest_out: list[Dim] = []
    for d in shape:
        if d == -1:
            continue
        if isinstance(d, str) and d in rest_in:
            rest_in.remove(d)
        else:
            rest_out.append(d)
    if all(isinstance(d, int) for d in rest_in + rest_out):
        num, den = math.prod(rest_in), math.prod(rest_out)  # type: ignore[arg-type]
        if den == 0 or num % den:
            raise ModelError(f"cannot reshape {format_shape(in_shape)} to {format_shape(shape)}")
        shape[shape.index(-1)] = num // den
    return shape


def reshape(ctx: Context, x: Value, shape: Sequence[Dim]) -> Value:
    shape = tuple(shape)
    if shape == x.shape:
        return x
    return ctx.emit("reshape", [x], shape=shape)


def matmul_operands(ctx: Context, a: Value, b: Value) -> tuple[Value, Value]:
    """numpy.matmul's promotion of 1-D operands (kiln's GEMMs want rank >= 2): a [K] ``a``
    becomes [1, K], a [K] ``b`` becomes [K, 1]."""
    return (reshape(ctx, a, (1, *a.shape)) if a.type.rank == 1 else a,
            reshape(ctx, b, (*b.shape, 1)) if b.type.rank == 1 else b)


def matmul_result(ctx: Context, y: Value, a: Value, b: Value) -> Value:
    """``y`` with the dims ``matmul_operands`` added for 1-D ``a`` / ``b`` removed again."""
    if a.type.rank != 1 and b.type.rank != 1:
        return y
    shape = list(y.shape)
    if b.type.rank == 1:
        shape.pop(-1)
    if a.type.rank == 1:
        shape.pop(-1 if b.type.rank == 1 else -2)
    return reshape(ctx, y, shape)


def axes_list(values: object, rank: int) -> list[int]:
    axes = [normalize_axis(int(a), rank) for a in np.asarray(values).reshape(-1)]
    if len(set(axes)) != len(axes):
        raise ModelError(f"axes {axes} repeat an axis")
    return axes


def axes_operand(ctx: Context, input_from: int) -> np.ndarray | None:
    """Axes from the attribute (before opset ``input_from``) or from input 1 (after)."""
    return ctx.const_input(1) if ctx.opset >= input_from else ctx.attr("axes")
