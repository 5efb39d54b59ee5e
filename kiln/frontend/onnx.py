"""The ONNX frontend: ``import_onnx`` turns an ONNX model into a kiln ``Graph``.

The model goes through ONNX shape inference (which fills in output shapes that some exporters
leave out) and ``onnx.checker``; then every node goes through the converter registered for its
op type with ``@onnx_op("OpType")``, which reads the node's attributes with the defaults of the
model's opset and emits kiln ops.

Inputs that kiln needs while building (Reshape's shape, Slice's starts, Split's sizes, ...) must
be constants: initializers, Constant nodes, or what the importer folds from them. Nodes whose
inputs are all constants are evaluated right away with the ops' NumPy references, so shape
arithmetic such as ``Shape -> Gather -> Concat -> Reshape`` on static shapes imports as plain
constants.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from kiln.errors import ModelError, first_line
from kiln.ir.dtype import DType
from kiln.ir.graph import Graph, Value
from kiln.ir.ops.registry import get_op
from kiln.ir.types import Dim, TensorType, broadcast_shapes, format_shape, normalize_axis

__all__ = ["CONVERTERS", "Context", "import_onnx", "onnx_op"]

DTYPES: dict[int, DType] = {
    TensorProto.FLOAT: DType.float32,
    TensorProto.FLOAT16: DType.float16,
    TensorProto.DOUBLE: DType.float64,
    TensorProto.INT8: DType.int8,
    TensorProto.UINT8: DType.uint8,
    TensorProto.INT16: DType.int16,
    TensorProto.INT32: DType.int32,
    TensorProto.INT64: DType.int64,
    TensorProto.BOOL: DType.bool,
}
_DEFAULT_DOMAINS = ("", "ai.onnx")
_FOLD_MAX_BYTES = 64 << 20     # the same bound as the fold_constants pass


def _dtype(elem_type: int, what: str) -> DType:
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
            raise ModelError(f"input {i} (%{v.name}) must be a constant (an initializer, a "
                             "Constant node or a value folded from them): kiln needs it while "
                             "importing, but here it is computed at run time")
        return v.data

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
        if inputs and all(v.is_constant for v in inputs):
            if sum(t.numel * t.dtype.np.itemsize for t in types) <= _FOLD_MAX_BYTES:
                arrays = opdef.run_reference(at, [v.data for v in inputs])
                return [self.constant(a, dtype=t.dtype) for a, t in zip(arrays, types,
                                                                       strict=True)]
        outs = self.graph.add(opdef, inputs, name=self._hint, **attrs)
        self.created.update((id(o), o) for o in outs)
        return outs

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


def onnx_op(*op_types: str) -> Callable[[Converter], Converter]:
    """Register a converter for ONNX op types of the default domain."""
    def deco(fn: Converter) -> Converter:
        for t in op_types:
            if t in CONVERTERS:
                raise ValueError(f"ONNX op {t} registered twice")
            CONVERTERS[t] = fn
        return fn
    return deco


def _op_key(node: onnx.NodeProto) -> str:
    return node.op_type if node.domain in _DEFAULT_DOMAINS else f"{node.domain}.{node.op_type}"


# -- shape helpers ----------------------------------------------------------------------------
def _prod(dims: Sequence[Dim], what: str) -> Dim:
    """The product of ``dims``; a lone symbolic dim among 1s stays symbolic."""
    syms = [d for d in dims if isinstance(d, str)]
    ints = [d for d in dims if isinstance(d, int)]
    if not syms:
        return math.prod(ints)
    if len(syms) == 1 and math.prod(ints) == 1:
        return syms[0]
    raise ModelError(f"{what} needs static dims, got {format_shape(dims)}")


def _static_dim(x: Value, axis: int, what: str) -> int:
    d = x.shape[axis]
    if not isinstance(d, int):
        raise ModelError(f"{what} needs a static dim {axis}, got {format_shape(x.shape)}")
    return d


def _resolve_minus_one(in_shape: Sequence[Dim], shape: list[Dim]) -> list[Dim]:
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


def _reshape(ctx: Context, x: Value, shape: Sequence[Dim]) -> Value:
    shape = tuple(shape)
    if shape == x.shape:
        return x
    return ctx.emit("reshape", [x], shape=shape)


def _axes_list(values: object, rank: int) -> list[int]:
    axes = [normalize_axis(int(a), rank) for a in np.asarray(values).reshape(-1)]
    if len(set(axes)) != len(axes):
        raise ModelError(f"axes {axes} repeat an axis")
    return axes


# -- constants ----------------------------------------------------------------------------------
@onnx_op("Constant")
def _constant(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    for name, dtype in (("value", None), ("value_float", np.float32),
                        ("value_floats", np.float32), ("value_int", np.int64),
                        ("value_ints", np.int64)):
        if ctx.has_attr(name):
            data = np.asarray(ctx.attr(name), dtype=dtype)
            return [ctx.constant(data, dtype=data.dtype)]
    kinds = ", ".join(a.name for a in node.attribute) or "none"
    raise ModelError(f"Constant with attribute {kinds} is not supported "
                     "(kiln takes value, value_float(s) and value_int(s))")


@onnx_op("Identity")
def _identity(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    return [ctx.required(0)]


@onnx_op("Shape")
def _shape(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x = ctx.required(0)
    rank = x.type.rank
    # start/end arrived in opset 15; they clamp rather than fail
    start, end = ctx.attr("start", 0), ctx.attr("end", rank)
    start = min(max(start + rank if start < 0 else start, 0), rank)
    end = min(max(end + rank if end < 0 else end, 0), rank)
    dims = x.shape[start:end]
    if not all(isinstance(d, int) for d in dims):
        raise ModelError(f"Shape of %{x.name} ({x.type}) has symbolic dims; kiln folds Shape "
                         "to a constant, so fix them with import_onnx(..., input_shapes=...)")
    return [ctx.constant(np.array(dims, dtype=np.int64))]


@onnx_op("ConstantOfShape")
def _constant_of_shape(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    shape = ctx.const_input(0, required=True)
    fill = ctx.attr("value")
    fill = np.zeros(1, np.float32) if fill is None else np.asarray(fill).reshape(-1)
    return [ctx.constant(np.full(tuple(int(d) for d in shape), fill[0], dtype=fill.dtype),
                         dtype=fill.dtype)]


@onnx_op("Expand")
def _expand(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x, shape = ctx.required(0), ctx.const_input(1, required=True)
    target = tuple(int(d) for d in np.asarray(shape).reshape(-1))
    if x.data is not None:
        out_shape = broadcast_shapes(x.shape, target)
        return [ctx.constant(np.broadcast_to(x.data, out_shape).copy(), dtype=x.dtype)]
    # kiln has no broadcast op; where() broadcasts all three operands and copies x exactly
    ones = ctx.constant(np.ones(target, dtype=bool))
    return [ctx.emit("where", [ones, x, x])]


# -- elementwise --------------------------------------------------------------------------------
_UNARY = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Exp": "exp", "Log": "log",
          "Sqrt": "sqrt", "Erf": "erf", "Neg": "neg", "Abs": "abs", "Reciprocal": "reciprocal"}
_BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div",
           "Equal": "equal", "Less": "less", "Greater": "greater"}


def _unary(kiln_op: str) -> Converter:
    def convert(node: onnx.NodeProto, ctx: Context) -> list[Value]:
        return [ctx.emit(kiln_op, [ctx.required(0)])]
    return convert


def _binary(kiln_op: str) -> Converter:
    def convert(node: onnx.NodeProto, ctx: Context) -> list[Value]:
        if ctx.opset < 7 and ctx.attr("broadcast", 0):
            raise ModelError("legacy broadcasting (the broadcast/axis attributes before "
                             "opset 7) is not supported")
        return [ctx.emit(kiln_op, [ctx.required(0), ctx.required(1)])]
    return convert


for _onnx_name, _kiln_name in _UNARY.items():
    onnx_op(_onnx_name)(_unary(_kiln_name))
for _onnx_name, _kiln_name in _BINARY.items():
    onnx_op(_onnx_name)(_binary(_kiln_name))


@onnx_op("Pow")
def _pow(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x, y = ctx.required(0), ctx.required(1)
    if y.dtype == x.dtype:
        return [ctx.emit("pow", [x, y])]
    # ONNX lets the exponent's dtype differ (opset 12+), kiln does not: an integer exponent
    # is cast to the base's dtype; an integer base with a float exponent is raised in floats
    # and truncated back, as onnxruntime does
    if x.dtype.is_float or not y.dtype.is_float:
        return [ctx.emit("pow", [x, ctx.emit("cast", [y], dtype=x.dtype)])]
    p = ctx.emit("pow", [ctx.emit("cast", [x], dtype=y.dtype), y])
    return [ctx.emit("cast", [p], dtype=x.dtype)]


def _variadic(kiln_op: str) -> Converter:
    def convert(node: onnx.NodeProto, ctx: Context) -> list[Value]:
        xs = ctx.inputs()
        out = xs[0]
        for x in xs[1:]:
            out = ctx.emit(kiln_op, [out, x])
        return [out]
    return convert


onnx_op("Max")(_variadic("maximum"))
onnx_op("Min")(_variadic("minimum"))


@onnx_op("Gelu")
def _gelu(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    approximate = ctx.attr("approximate", "none")
    if approximate not in ("none", "tanh"):
        raise ModelError(f"approximate={approximate!r} is not supported (none or tanh)")
    return [ctx.emit("gelu", [ctx.required(0)], approximate=approximate)]


@onnx_op("Cast")
def _cast(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x = ctx.required(0)
    dtype = _dtype(ctx.attr("to"), f"the Cast target of %{x.name}")
    return [x if dtype == x.dtype else ctx.emit("cast", [x], dtype=dtype)]


@onnx_op("Where")
def _where(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    return [ctx.emit("where", ctx.inputs())]


# -- GEMM ---------------------------------------------------------------------------------------
@onnx_op("MatMul")
def _matmul(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    a, b = ctx.required(0), ctx.required(1)
    # kiln's matmul wants rank >= 2; ONNX follows numpy.matmul's promotion of 1-D operands
    a2 = _reshape(ctx, a, (1, *a.shape)) if a.type.rank == 1 else a
    b2 = _reshape(ctx, b, (*b.shape, 1)) if b.type.rank == 1 else b
    y = ctx.emit("matmul", [a2, b2])
    if a.type.rank == 1 or b.type.rank == 1:
        shape = list(y.shape)
        if b.type.rank == 1:
            shape.pop(-1)
        if a.type.rank == 1:
            shape.pop(-1 if b.type.rank == 1 else -2)
        y = _reshape(ctx, y, shape)
    return [y]


@onnx_op("Gemm")
def _gemm(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    a, b, c = ctx.required(0), ctx.required(1), ctx.input(2)
    alpha, beta = ctx.attr("alpha", 1.0), ctx.attr("beta", 1.0)
    if a.type.rank != 2 or b.type.rank != 2:
        raise ModelError(f"Gemm needs 2-D A and B, got {a.type} and {b.type}")
    if ctx.attr("transA", 0):
        a = ctx.emit("transpose", [a], perm=(1, 0))
    if ctx.attr("transB", 0):
        y = ctx.emit("dense", [a, b])              # dense takes W as [N, K]: B as given
    elif b.is_constant:
        y = ctx.emit("dense", [a, ctx.emit("transpose", [b], perm=(1, 0))])  # folds
    else:
        y = ctx.emit("matmul", [a, b])
    if alpha != 1.0:
        y = ctx.emit("mul", [y, ctx.scalar(alpha, y)])
    if c is None or beta == 0.0:
        return [y]
    try:
        ok = broadcast_shapes(c.shape, y.shape) == y.shape
    except ModelError:
        ok = False
    if not ok:
        raise ModelError(f"C {c.type} does not broadcast to the result {y.type}")
    if beta != 1.0:
        c = ctx.emit("mul", [c, ctx.scalar(beta, c)])   # folds when C is an initializer
    return [ctx.emit("add", [y, c])]


@onnx_op("Conv")
def _conv(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x, w, b = ctx.required(0), ctx.required(1), ctx.input(2)
    if x.type.rank != 4 or w.type.rank != 4:
        raise ModelError(f"only 2-D convolution (NCHW input) is supported, got {x.type}")
    strides = tuple(ctx.attr("strides", (1, 1)))
    dilations = tuple(ctx.attr("dilations", (1, 1)))
    kernel = w.type.static_shape[2:]
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads_lo, pads_hi = [], []
        for size, k, s, d in zip(x.shape[2:], kernel, strides, dilations, strict=True):
            if not isinstance(size, int):
                raise ModelError("auto_pad SAME needs static spatial dims")
            total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small, big = total // 2, total - total // 2
            pads_lo.append(small if auto_pad == "SAME_UPPER" else big)
            pads_hi.append(big if auto_pad == "SAME_UPPER" else small)
        pads = (*pads_lo, *pads_hi)
    elif auto_pad in ("NOTSET", "VALID"):
        pads = tuple(ctx.attr("pads", (0, 0, 0, 0))) if auto_pad == "NOTSET" else (0, 0, 0, 0)
    else:
        raise ModelError(f"unknown auto_pad {auto_pad!r}")
    y = ctx.emit("conv2d", [x, w], strides=strides, padding=pads, dilations=dilations,
                 groups=int(ctx.attr("group", 1)))
    if b is None:
        return [y]
    return [ctx.emit("add", [y, _reshape(ctx, b, (b.shape[0], 1, 1))])]


# -- normalisation ------------------------------------------------------------------------------
@onnx_op("Softmax")
def _softmax(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x = ctx.required(0)
    rank = x.type.rank
    if ctx.opset >= 13:
        return [ctx.emit("softmax", [x], axis=normalize_axis(ctx.attr("axis", -1), rank))]
    # before opset 13, Softmax flattens x to 2-D [prod(dims[:axis]), prod(dims[axis:])] and
    # normalises each row; it only matches a per-axis softmax when axis is the last one
    axis = normalize_axis(ctx.attr("axis", 1), rank)
    if axis == rank - 1:
        return [ctx.emit("softmax", [x], axis=-1)]
    rows = (_prod(x.shape[:axis], "Softmax"), _prod(x.shape[axis:], "Softmax"))
    y = ctx.emit("softmax", [_reshape(ctx, x, rows)], axis=-1)
    return [_reshape(ctx, y, x.shape)]


@onnx_op("LayerNormalization")
def _layer_norm(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x, scale, bias = ctx.required(0), ctx.required(1), ctx.input(2)
    axis = normalize_axis(ctx.attr("axis", -1), x.type.rank)
    eps = float(ctx.attr("epsilon", 1e-5))
    norm_shape = x.shape[axis:]

    def fitted(v: Value | None, fill: float) -> Value | None:
        """``v`` in the exact [x.shape[axis:]] layout kiln's layer_norm takes, if possible."""
        if v is not None and v.shape == norm_shape:
            return v
        if not all(isinstance(d, int) for d in norm_shape):
            return None
        data = np.full(norm_shape, fill, x.dtype.np) if v is None else v.data
        if data is None:
            return None
        try:
            return ctx.constant(np.broadcast_to(data, norm_shape).copy(), dtype=x.dtype)
        except ValueError:
            raise ModelError(f"scale/bias of shape {format_shape(data.shape)} does not "
                             f"broadcast to {format_shape(norm_shape)}") from None

    gamma, beta = fitted(scale, 1.0), fitted(bias, 0.0)
    if gamma is not None and beta is not None:
        return [ctx.emit("layer_norm", [x, gamma, beta], axis=axis, epsilon=eps)]
    # a run-time scale or bias of a broadcastable shape: normalise, then apply them
    ones, zeros = fitted(None, 1.0), fitted(None, 0.0)
    if ones is None or zeros is None:
        raise ModelError(f"normalised dims {format_shape(norm_shape)} must be static")
    y = ctx.emit("layer_norm", [x, ones, zeros], axis=axis, epsilon=eps)
    y = ctx.emit("mul", [y, scale])
    return [y if bias is None else ctx.emit("add", [y, bias])]


# -- data movement ------------------------------------------------------------------------------
@onnx_op("Reshape")
def _reshape_op(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x = ctx.required(0)
    # the shape was an attribute before opset 5
    target = ctx.attr("shape") if ctx.opset < 5 else ctx.const_input(1, required=True)
    shape: list[Dim] = [int(d) for d in np.asarray(target).reshape(-1)]
    if not ctx.attr("allowzero", 0):       # 0 copies the input dim unless allowzero (opset 14)
        for i, d in enumerate(shape):
            if d == 0:
                if i >= x.type.rank:
                    raise ModelError(f"shape {shape} copies dim {i} of a rank-{x.type.rank} "
                                     "input")
                shape[i] = x.shape[i]
    return [_reshape(ctx, x, _resolve_minus_one(x.shape, shape))]


@onnx_op("Flatten")
def _flatten(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x = ctx.required(0)
    rank = x.type.rank
    axis = ctx.attr("axis", 1)
    axis = axis + rank if axis < 0 else axis
    if not 0 <= axis <= rank:
        raise ModelError(f"axis {ctx.attr('axis')} is out of range for rank {rank}")
    shape = (_prod(x.shape[:axis], "Flatten"), _prod(x.shape[axis:], "Flatten"))
    return [_reshape(ctx, x, shape)]


def _axes_operand(ctx: Context, input_from: int) -> np.ndarray | None:
    """Axes from the attribute (before opset ``input_from``) or from input 1 (after)."""
    return ctx.const_input(1) if ctx.opset >= input_from else ctx.attr("axes")


@onnx_op("Unsqueeze")
def _unsqueeze(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x = ctx.required(0)
    raw = _axes_operand(ctx, 13)
    if raw is None:
        raise ModelError("Unsqueeze needs axes")
    rank = x.type.rank + np.asarray(raw).size
    axes = _axes_list(raw, rank)
    dims = iter(x.shape)
    return [_reshape(ctx, x, [1 if i in axes else next(dims) for i in range(rank)])]


@onnx_op("Squeeze")
def _squeeze(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x = ctx.required(0)
    raw = _axes_operand(ctx, 13)
    if raw is None:        # every dim known to be 1; a symbolic dim is kept
        axes = [i for i, d in enumerate(x.shape) if d == 1]
    else:
        axes = _axes_list(raw, x.type.rank)
        for a in axes:
            if x.shape[a] != 1:
                raise ModelError(f"cannot squeeze dim {a} of {format_shape(x.shape)}")
    return [_reshape(ctx, x, [d for i, d in enumerate(x.shape) if i not in axes])]


@onnx_op("Transpose")
def _transpose(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x = ctx.required(0)
    perm = ctx.attr("perm") or list(reversed(range(x.type.rank)))
    return [ctx.emit("transpose", [x], perm=tuple(perm))]


@onnx_op("Concat")
def _concat(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    xs = ctx.inputs()
    return [ctx.emit("concat", xs, axis=normalize_axis(ctx.attr("axis"), xs[0].type.rank))]


@onnx_op("Split")
def _split(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x = ctx.required(0)
    axis = normalize_axis(ctx.attr("axis", 0), x.type.rank)
    # sizes: the `split` attribute before opset 13, the optional second input after
    raw = ctx.attr("split") if ctx.opset < 13 else ctx.const_input(1)
    if raw is not None:
        sizes = [int(s) for s in np.asarray(raw).reshape(-1)]
        return ctx.add("split", [x], axis=axis, sizes=tuple(sizes))
    dim = _static_dim(x, axis, "Split")
    n = ctx.attr("num_outputs") if ctx.opset >= 18 else None
    if n is not None:      # opset 18: equal chunks of ceil(dim / n), the last one smaller
        chunk = -(-dim // n)
        sizes = [chunk] * (n - 1) + [dim - chunk * (n - 1)]
        if sizes[-1] < 0:
            raise ModelError(f"cannot split dim {dim} into {n} chunks of {chunk}")
    else:
        n = len(node.output)
        if dim % n:
            raise ModelError(f"cannot split dim {dim} into {n} equal parts")
        sizes = [dim // n] * n
    return ctx.add("split", [x], axis=axis, sizes=tuple(sizes))


def _slice_bound(v: int, dim: int, step: int, is_end: bool) -> int:
    """ONNX's clamping of one start/end, written so Python slicing reads it the same way."""
    v = v + dim if v < 0 else v
    if step > 0:
        return min(max(v, 0), dim)
    v = min(max(v, -1 if is_end else 0), dim - 1)
    return -dim - 1 if v < 0 else v    # -1 means "past index 0", which Python spells -dim-1


@onnx_op("Slice")
def _slice(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x = ctx.required(0)
    if ctx.opset < 10:     # starts/ends/axes were attributes; steps did not exist
        starts, ends, axes, steps = (ctx.attr("starts"), ctx.attr("ends"), ctx.attr("axes"),
                                     None)
    else:
        starts, ends, axes, steps = (ctx.const_input(i, required=i < 3) for i in range(1, 5))
    starts = [int(v) for v in np.asarray(starts).reshape(-1)]
    ends = [int(v) for v in np.asarray(ends).reshape(-1)]
    axes_ = list(range(len(starts))) if axes is None else _axes_list(axes, x.type.rank)
    steps_ = [1] * len(starts) if steps is None else [int(v) for v in
                                                      np.asarray(steps).reshape(-1)]
    if not len(starts) == len(ends) == len(axes_) == len(steps_):
        raise ModelError("starts, ends, axes and steps differ in length")
    if 0 in steps_:
        raise ModelError("a slice step of 0 is not allowed")
    b, e = [], []
    for ax, s0, e0, st in zip(axes_, starts, ends, steps_, strict=True):
        dim = _static_dim(x, ax, "Slice")
        b.append(_slice_bound(s0, dim, st, is_end=False))
        e.append(_slice_bound(e0, dim, st, is_end=True))
    return [ctx.emit("slice", [x], axes=tuple(axes_), starts=tuple(b), ends=tuple(e),
                     steps=tuple(steps_))]


@onnx_op("Gather")
def _gather(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x, idx = ctx.required(0), ctx.required(1)
    return [ctx.emit("gather", [x, idx], axis=normalize_axis(ctx.attr("axis", 0), x.type.rank))]


# -- reductions ---------------------------------------------------------------------------------
def _reduce(kiln_op: str, input_from: int) -> Converter:
    """ReduceX with axes as an attribute before opset ``input_from``, as an input after."""
    def convert(node: onnx.NodeProto, ctx: Context) -> list[Value]:
        x = ctx.required(0)
        raw = _axes_operand(ctx, input_from)
        axes = None if raw is None else _axes_list(raw, x.type.rank)
        if not axes:
            if ctx.attr("noop_with_empty_axes", 0):
                return [x]
            axes = None
        keepdims = bool(ctx.attr("keepdims", 1))
        return [ctx.emit(kiln_op, [x], axes=None if axes is None else tuple(axes),
                         keepdims=keepdims)]
    return convert


onnx_op("ReduceSum")(_reduce("reduce_sum", 13))
onnx_op("ReduceMean")(_reduce("reduce_mean", 18))
onnx_op("ReduceMax")(_reduce("reduce_max", 18))


# -- the importer -------------------------------------------------------------------------------
def _load(model: str | os.PathLike | onnx.ModelProto) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    try:
        return onnx.load(os.fspath(model))
    except Exception as e:  # protobuf and I/O errors alike mean "unreadable"
        raise ModelError(f"cannot read ONNX model {os.fspath(model)}: {first_line(e)}") from e


def _validate(model: onnx.ModelProto) -> onnx.ModelProto:
    """Shape inference first: it fills in output shapes that exporters leave out and that
    onnx's checker requires (onnxruntime accepts such models, so kiln does too)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception as e:  # InferenceError, or protobuf errors
        raise ModelError(f"ONNX shape inference failed: {first_line(e)}") from e
    try:
        onnx.checker.check_model(inferred)
    except Exception as e:  # ValidationError
        raise ModelError(f"invalid ONNX model: {first_line(e)}") from e
    return inferred


def _opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in _DEFAULT_DOMAINS:
            return imp.version
    raise ModelError("the model imports no opset of the default ONNX domain")


def _unsupported(graph: onnx.GraphProto) -> None:
    missing: dict[str, list[str]] = {}
    for i, node in enumerate(graph.node):
        key = _op_key(node)
        if key not in CONVERTERS:
            missing.setdefault(key, []).append(_label(node, i))
    if missing:
        parts = [f"{op} (node{'s' if len(names) > 1 else ''} {', '.join(names)})"
                 for op, names in missing.items()]
        raise ModelError("unsupported ONNX ops: " + "; ".join(parts))


def _label(node: onnx.NodeProto, index: int) -> str:
    return node.name or f"#{index}"


def _input_type(vi: onnx.ValueInfoProto, fixed: Sequence[int] | None) -> TensorType:
    if not vi.type.HasField("tensor_type"):
        raise ModelError(f"input {vi.name!r} is not a tensor; kiln takes tensor inputs only")
    tt = vi.type.tensor_type
    dtype = _dtype(tt.elem_type, f"input {vi.name!r}")
    if not tt.HasField("shape"):
        raise ModelError(f"input {vi.name!r} has no shape (its rank is unknown)")
    shape: list[Dim] = []
    for axis, d in enumerate(tt.shape.dim):
        if d.HasField("dim_value"):
            shape.append(d.dim_value)
        else:   # a named symbolic dim, or an anonymous one that gets a name of its own
            shape.append(d.dim_param or f"{vi.name}_dim{axis}")
    if fixed is not None:
        fixed = tuple(int(d) for d in fixed)
        if len(fixed) != len(shape) or any(isinstance(a, int) and a != b
                                           for a, b in zip(shape, fixed, strict=True)):
            raise ModelError(f"input {vi.name!r} has shape {format_shape(shape)}; input_shapes "
                             f"gives {format_shape(fixed)}")
        shape = list(fixed)
    return TensorType.of(shape, dtype)


def _check_declared(vi: onnx.ValueInfoProto, v: Value) -> None:
    """Warn when the model's declared output type disagrees with what kiln inferred."""
    if not vi.type.HasField("tensor_type"):
        return
    tt = vi.type.tensor_type
    dtype_ok = not tt.elem_type or DTYPES.get(tt.elem_type) == v.dtype
    shape_ok, declared = True, "?"
    if tt.HasField("shape"):
        dims: list[Dim] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                           for d in tt.shape.dim]
        declared = format_shape(dims)
        shape_ok = len(dims) == v.type.rank and not any(
            isinstance(a, int) and isinstance(b, int) and a != b
            for a, b in zip(dims, v.shape, strict=True))
    if not (dtype_ok and shape_ok):
        dt = TensorProto.DataType.Name(tt.elem_type) if tt.elem_type else "?"
        warnings.warn(f"ONNX output {vi.name!r}: the model declares {dt}{declared} but kiln "
                      f"infers {v.type}; using kiln's", stacklevel=3)


def _declare(ctx: Context, onnx_graph: onnx.GraphProto,
             input_shapes: Mapping[str, Sequence[int]]) -> None:
    """Graph inputs (those that are not initializers) and initializers, as kiln values."""
    g, fixed = ctx.graph, dict(input_shapes)
    initializers = {t.name: t for t in onnx_graph.initializer}
    for vi in onnx_graph.input:
        if vi.name in initializers:
            continue
        t = _input_type(vi, fixed.pop(vi.name, None))
        ctx.values[vi.name] = g.input(vi.name, t.shape, t.dtype)
    if fixed:
        raise ModelError(f"input_shapes names unknown input(s) {sorted(fixed)}")
    for name, t in initializers.items():
        try:
            dtype = _dtype(t.data_type, f"initializer {name!r}")
        except ModelError as e:    # only an error if some node reads it
            ctx.unusable[name] = str(e)
            continue
        ctx.values[name] = g.constant(numpy_helper.to_array(t), name=name, dtype=dtype)
    for t in onnx_graph.sparse_initializer:
        ctx.unusable[t.values.name] = f"sparse initializer {t.values.name!r} is not supported"


def _convert(ctx: Context, node: onnx.NodeProto, used: set[str]) -> None:
    """Run ``node``'s converter and bind its ONNX outputs to the kiln values it returns."""
    ctx.begin(node)
    outs = CONVERTERS[_op_key(node)](node, ctx)
    for k, name in enumerate(node.output):
        if not name:
            continue
        if k >= len(outs):
            if name in used:
                raise ModelError(f"output {k} ({name!r}) is not supported")
            continue
        v = outs[k]
        if id(v) in ctx.created and v.name != name:
            _rename(ctx, v, name)
        ctx.values[name] = v


def _rename(ctx: Context, v: Value, name: str) -> None:
    """Give ``v`` the ONNX tensor name, so printed graphs read like the model; a value made
    for the same node that took the name first (Gemm's dense before its bias add) yields it."""
    holder = next((c for c in ctx.created.values() if c.name == name), None)
    if holder is None:
        v.name = ctx.graph.unique_name(name)
        return
    op = holder.producer.op.name if holder.producer is not None else "const"
    holder.name = ctx.graph.unique_name(f"{name}.{op}")
    v.name = name


def import_onnx(model: str | os.PathLike | onnx.ModelProto,
                input_shapes: Mapping[str, Sequence[int]] | None = None) -> Graph:
    """Import an ONNX model (a file path or a ``ModelProto``) as a kiln ``Graph``.

    Graph inputs keep their ONNX names and symbolic dims (``dim_param``); ``input_shapes``
    fixes input shapes before conversion, which models that compute on their own shapes
    (``Shape`` of a symbolic dim) need. Raises ``ModelError`` for invalid models, for every
    unsupported op at once, and for attribute values kiln cannot express.
    """
    proto = _validate(_load(model))
    opset = _opset(proto)
    onnx_graph = proto.graph
    _unsupported(onnx_graph)

    ctx = Context(Graph(onnx_graph.name or "main"), opset)
    _declare(ctx, onnx_graph, input_shapes or {})
    used = {name for n in onnx_graph.node for name in n.input}
    used.update(o.name for o in onnx_graph.output)
    for i, node in enumerate(onnx_graph.node):
        try:
            _convert(ctx, node, used)
        except ModelError as e:
            raise ModelError(f"ONNX node {_label(node, i)} ({node.op_type}, opset {opset}): "
                             f"{e}") from None
    for vi in onnx_graph.output:
        v = ctx.value(vi.name)
        ctx.graph.output(v)
        _check_declared(vi, v)
    return ctx.graph
