"""The ONNX importer: ``import_onnx`` turns an ONNX model into a kiln ``Graph``.

The model goes through ONNX shape inference (which fills in output shapes that some exporters
leave out) and ``onnx.checker``; then every node goes through the converter registered for its
op type with ``@onnx_op("OpType")`` (in ``kiln.frontend.onnx.ops``), which reads the node's
attributes with the defaults of the model's opset and emits kiln ops.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto, numpy_helper

from kiln.errors import ConstantInputError, ModelError, first_line
from kiln.frontend.onnx.context import (
    CONVERTERS,
    DEFAULT_DOMAINS,
    DTYPES,
    Context,
    onnx_dtype,
    op_key,
)
from kiln.frontend.onnx.qdq import fuse_qdq
from kiln.ir.graph import Graph, Value
from kiln.ir.types import Dim, TensorType, format_shape

# -- the importer -------------------------------------------------------------------------------
# the domains ONNX itself defines; any other is a custom one (com.microsoft: onnxruntime's)
_ONNX_DOMAINS = ("ai.onnx", "ai.onnx.ml", "ai.onnx.preview", "ai.onnx.preview.training")


def _load(model: str | os.PathLike | onnx.ModelProto) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        proto, what = model, "the ModelProto"
    else:
        what = os.fspath(model)
        try:
            proto = onnx.load(what)
        except DecodeError as e:
            raise ModelError(f"cannot read ONNX model {what}: not an ONNX model, or a truncated "
                             f"one ({first_line(e)})") from e
        except Exception as e:  # I/O errors, external data that cannot be read
            raise ModelError(f"cannot read ONNX model {what}: {first_line(e)}") from e
    # protobuf parses an empty file, and some other bytes, as a model with no graph
    if not proto.HasField("graph"):
        why = "it is empty" if not proto.ByteSize() else "it holds no graph"
        raise ModelError(f"{what} is not an ONNX model, or a truncated one: {why}")
    return proto


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
        if imp.domain in DEFAULT_DOMAINS:
            # onnx's schemas, which kiln validates against, stop at the newest opset it knows
            if imp.version > onnx.defs.onnx_opset_version():
                raise ModelError(f"the model imports ONNX opset {imp.version}; kiln supports "
                                 f"opsets up to {onnx.defs.onnx_opset_version()} (those of "
                                 f"onnx {onnx.__version__})")
            return imp.version
    raise ModelError("the model imports no opset of the default ONNX domain")


def _subgraphs(node: onnx.NodeProto) -> list[tuple[str, onnx.GraphProto]]:
    """The graphs held in ``node``'s attributes (If branches, Loop and Scan bodies)."""
    return [(a.name, g) for a in node.attribute
            for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else a.graphs)]


def _find_unsupported(graph: onnx.GraphProto, prefix: str,
                      missing: dict[tuple[str, str], list[str]]) -> None:
    for i, node in enumerate(graph.node):
        label = prefix + _label(node, i)
        if op_key(node) not in CONVERTERS:
            domain = "ai.onnx" if node.domain in DEFAULT_DOMAINS else node.domain
            missing.setdefault((domain, node.op_type), []).append(label)
        for attr, sub in _subgraphs(node):     # nested nodes are named outer/attr/inner
            _find_unsupported(sub, f"{label}/{attr}/", missing)


def _used_names(graph: onnx.GraphProto) -> set[str]:
    """Tensor names that ``graph``'s nodes, its subgraphs' nodes and its outputs read."""
    used = {o.name for o in graph.output}
    for node in graph.node:
        used.update(node.input)
        for _, sub in _subgraphs(node):
            used |= _used_names(sub)
    return used


def _unsupported(model: onnx.ModelProto) -> None:
    """Every op kiln has no converter for, at once: op type, domain (custom domains named so),
    the opset the model imports for that domain, and the nodes."""
    missing: dict[tuple[str, str], list[str]] = {}
    _find_unsupported(model.graph, "", missing)
    if not missing:
        return
    opsets = {imp.domain or "ai.onnx": imp.version for imp in model.opset_import}
    parts = []
    for (domain, op), names in missing.items():
        where = f"domain {domain}" if domain in _ONNX_DOMAINS else f"custom domain {domain}"
        opset = f"opset {opsets[domain]}" if domain in opsets else "no opset imported"
        nodes = f"node{'s' if len(names) > 1 else ''} {', '.join(names)}"
        parts.append(f"{op} ({where}, {opset}; {nodes})")
    raise ModelError("unsupported ONNX ops: " + "; ".join(parts))


def _label(node: onnx.NodeProto, index: int) -> str:
    return node.name or f"#{index}"


def _input_type(vi: onnx.ValueInfoProto, fixed: Sequence[int] | None) -> TensorType:
    if not vi.type.HasField("tensor_type"):
        raise ModelError(f"input {vi.name!r} is not a tensor; kiln takes tensor inputs only")
    tt = vi.type.tensor_type
    dtype = onnx_dtype(tt.elem_type, f"input {vi.name!r}")
    if not tt.HasField("shape"):
        raise ModelError(f"input {vi.name!r} has no shape (its rank is unknown)")
    shape: list[Dim] = []
    for axis, d in enumerate(tt.shape.dim):
        if d.HasField("dim_value") and d.dim_value >= 0:   # some exporters write -1 for "any"
            shape.append(d.dim_value)
        else:   # a named symbolic dim, or an anonymous one that gets a name of its own
            shape.append(d.dim_param or f"{vi.name}_dim{axis}")
    if fixed is not None:
        fixed = tuple(d if isinstance(d, str) else int(d) for d in fixed)   # str: symbolic
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
        # a negative dim_value (Paddle's -1) means "any size", as in _input_type
        dims: list[Dim] = [d.dim_value if d.HasField("dim_value") and d.dim_value >= 0
                           else (d.dim_param or "?") for d in tt.shape.dim]
        declared = format_shape(dims)
        shape_ok = len(dims) == v.type.rank and not any(
            isinstance(a, int) and isinstance(b, int) and a != b
            for a, b in zip(dims, v.shape, strict=True))
    if not (dtype_ok and shape_ok):
        dt = TensorProto.DataType.Name(tt.elem_type) if tt.elem_type else "?"
        warnings.warn(f"ONNX output {vi.name!r}: the model declares {dt}{declared} but kiln "
                      f"infers {v.type}; using kiln's", stacklevel=3)


def _declare(ctx: Context, onnx_graph: onnx.GraphProto,
             input_shapes: Mapping[str, Sequence[int]],
             constants: Mapping[str, np.ndarray]) -> None:
    """Graph inputs (those that are not initializers), inputs bound to ``constants``, and
    initializers, as kiln values."""
    g, fixed, bound = ctx.graph, dict(input_shapes), dict(constants)
    initializers = {t.name: t for t in onnx_graph.initializer}
    for vi in onnx_graph.input:
        if vi.name in initializers:
            continue
        if vi.name in bound:
            data = np.asarray(bound.pop(vi.name))
            t = _input_type(vi, data.shape)
            if data.dtype != t.dtype.np:
                raise ModelError(f"constants[{vi.name!r}] has dtype {data.dtype}; the input "
                                 f"is {t.dtype}")
            ctx.values[vi.name] = g.constant(data, name=vi.name, dtype=t.dtype)
            continue
        t = _input_type(vi, fixed.pop(vi.name, None))
        ctx.values[vi.name] = g.input(vi.name, t.shape, t.dtype)
    if fixed or bound:
        raise ModelError(f"input_shapes/constants name unknown input(s) "
                         f"{sorted({*fixed, *bound})}")
    for name, t in initializers.items():
        try:
            dtype = onnx_dtype(t.data_type, f"initializer {name!r}")
        except ModelError as e:    # only an error if some node reads it
            ctx.unusable[name] = str(e)
            continue
        ctx.values[name] = g.constant(numpy_helper.to_array(t), name=name, dtype=dtype)
    for t in onnx_graph.sparse_initializer:
        ctx.unusable[t.values.name] = f"sparse initializer {t.values.name!r} is not supported"


def _convert(ctx: Context, node: onnx.NodeProto, used: set[str]) -> None:
    """Run ``node``'s converter and bind its ONNX outputs to the kiln values it returns."""
    ctx.begin(node)
    outs = CONVERTERS[op_key(node)](node, ctx)
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


def convert_subgraph(ctx: Context, graph: onnx.GraphProto,
                     inputs: Sequence[Value] = ()) -> list[Value]:
    """Convert ``graph`` (an If branch, a Loop or Scan body) into ``ctx``'s kiln graph and
    return the values of its outputs. ``inputs`` bind its formal inputs, in order; its nodes
    read values of the enclosing graphs by name, and the names it defines stay inside it. The
    node being converted (the If calling this) is current again afterwards."""
    if len(inputs) != len(graph.input):
        raise ModelError(f"subgraph {graph.name!r} takes {len(graph.input)} inputs, "
                         f"got {len(inputs)}")
    outer_values = dict(ctx.values)
    outer_node = (ctx.node, ctx._attrs, ctx._hint, ctx.created)
    try:
        ctx.values.update((vi.name, v) for vi, v in zip(graph.input, inputs, strict=True))
        for t in graph.initializer:
            dtype = onnx_dtype(t.data_type, f"initializer {t.name!r}")
            ctx.values[t.name] = ctx.graph.constant(numpy_helper.to_array(t), name=t.name,
                                                    dtype=dtype)
        used = _used_names(graph)
        for i, node in enumerate(graph.node):
            try:
                _convert(ctx, node, used)
            except ModelError as e:
                raise ModelError(f"node {_label(node, i)} ({node.op_type}) of subgraph "
                                 f"{graph.name!r}: {e}") from None
        return [ctx.value(o.name) for o in graph.output]
    finally:
        ctx.values = outer_values
        ctx.node, ctx._attrs, ctx._hint, ctx.created = outer_node


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
                input_shapes: Mapping[str, Sequence[Dim]] | None = None,
                constants: Mapping[str, np.ndarray] | None = None) -> Graph:
    """Import an ONNX model (a file path or a ``ModelProto``) as a kiln ``Graph``.

    Graph inputs keep their ONNX names and symbolic dims (``dim_param``); ``input_shapes``
    fixes input shapes before conversion (an int fixes a dim, a str names a symbolic one);
    ``constants`` binds graph inputs to values, for inputs kiln needs while compiling (a
    Resize's scales fed as an input). Raises ``ModelError`` for invalid models, for every
    unsupported op at once, and for attribute values kiln cannot express;
    ``ConstantInputError`` names a graph input that must be bound with ``constants``.
    """
    proto = _load(model)
    _unsupported(proto)   # before onnx's checker, which stops at the first op it does not know
    opset = _opset(proto)
    proto = fuse_qdq(_validate(proto))     # QDQ groups -> quantized ops (integer kernels)
    onnx_graph = proto.graph

    ctx = Context(Graph(onnx_graph.name or "main"), opset)
    _declare(ctx, onnx_graph, input_shapes or {}, constants or {})
    used = _used_names(onnx_graph)
    for i, node in enumerate(onnx_graph.node):
        try:
            _convert(ctx, node, used)
        except ModelError as e:
            where = f"ONNX node {_label(node, i)} ({node.op_type}, opset {opset}): {e}"
            if isinstance(e, ConstantInputError):
                raise ConstantInputError(where, e.input_name) from None
            raise ModelError(where) from None
    for vi in onnx_graph.output:
        v = ctx.value(vi.name)
        # the library's output keeps the model's name where an Identity (or a rewrite) left
        # the value with another: a node's result, not yet an output, the name still free
        free = vi.name not in ctx.graph._names
        rename = v.producer is not None and v not in ctx.graph.outputs and free
        ctx.graph.output(v, names=(vi.name,) if rename else None)
        _check_declared(vi, v)
    return ctx.graph
