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
from google.protobuf.message import DecodeError, Message
from onnx import TensorProto, numpy_helper

from kiln.errors import ConstantInputError, ModelError, first_line, shorten
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
from kiln.ir.verify import check_tensor_bytes, max_tensor_bytes

# -- the importer -------------------------------------------------------------------------------
# the domains ONNX itself defines; any other is a custom one (com.microsoft: onnxruntime's)
_ONNX_DOMAINS = ("ai.onnx", "ai.onnx.ml", "ai.onnx.preview", "ai.onnx.preview.training")
PROTOBUF_MAX_DEPTH = 100      # upb's default recursion limit when parsing


def _load(model: str | os.PathLike | onnx.ModelProto) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        proto, what = model, "the ModelProto"
    else:
        what = os.fspath(model)
        try:
            proto = onnx.load(what)
        except DecodeError as e:
            if "MaxDepth" in str(e):
                raise ModelError(f"cannot read ONNX model {what}: its messages are nested more "
                                 f"than {PROTOBUF_MAX_DEPTH} levels deep (subgraphs within "
                                 "subgraphs), past protobuf's limit") from e
            raise ModelError(f"cannot read ONNX model {what}: not an ONNX model, or a truncated "
                             f"one ({first_line(e)})") from e
        except Exception as e:  # I/O errors, external data that cannot be read
            raise ModelError(f"cannot read ONNX model {what}: {first_line(e)}") from e
    # protobuf parses an empty file, and some other bytes, as a model with no graph
    if not proto.HasField("graph"):
        why = "it is empty" if not proto.ByteSize() else "it holds no graph"
        raise ModelError(f"{what} is not an ONNX model, or a truncated one: {why}")
    _check_strings(proto, "model")
    return proto


def _check_strings(msg: Message, path: str) -> None:
    """Raise ``ModelError`` for a string field that is not valid UTF-8 (protobuf hands such
    proto2 strings to Python as ``bytes``, which would break every name kiln builds). Only
    string and message fields are read: a tensor's data is never copied out."""
    for fd in msg.DESCRIPTOR.fields:
        if fd.type not in (fd.TYPE_STRING, fd.TYPE_MESSAGE):
            continue
        if fd.is_repeated:
            items = list(getattr(msg, fd.name))
        elif msg.HasField(fd.name):
            items = [getattr(msg, fd.name)]
        else:
            continue
        for k, item in enumerate(items):
            where = f"{path}.{fd.name}" + (f"[{k}]" if fd.is_repeated else "")
            if fd.type == fd.TYPE_MESSAGE:
                _check_strings(item, where)
            elif isinstance(item, bytes):
                raise ModelError(f"{where} is not valid UTF-8: {item[:40]!r}")


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
        reason = first_line(e)
        if "'shape' of 'type' is required" in reason:
            # a graph output whose shape inference gave up on: say why, or which output
            raise ModelError(_missing_shape(model, inferred)) from e
        raise ModelError(f"invalid ONNX model: {reason}") from e
    return inferred


def _missing_shape(model: onnx.ModelProto, inferred: onnx.ModelProto) -> str:
    """Why a value has no shape after shape inference: the error strict inference stops at
    (the node it cannot infer), else the outputs left without a shape."""
    try:
        onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except Exception as e:
        return f"ONNX shape inference failed: {first_line(e)}"
    names = [vi.name for vi in inferred.graph.output
             if vi.type.HasField("tensor_type") and not vi.type.tensor_type.HasField("shape")]
    return (f"invalid ONNX model: graph output(s) {names} have no shape, and ONNX shape "
            "inference cannot infer one")


def _check_graph(graph: onnx.GraphProto, scope: str, limit: int,
                 outer: frozenset[str] = frozenset()) -> None:
    """What onnx's checker lets through, or reports without naming the node or tensor:
    nodes without an op type, attributes without a (known) type, node inputs that nothing
    defines or that are defined only later (a cycle), initializers with negative dims or
    that disagree with the graph input of their name, and initializers and inputs that would
    need more memory than ``limit``. ``scope`` names a subgraph (``""``: the main graph);
    ``outer`` are the names its enclosing graphs define. Subgraphs are checked too."""
    of = f" of subgraph {scope}" if scope else ""
    inputs = {vi.name: vi for vi in graph.input}
    for t in graph.initializer:
        what = f"initializer {t.name!r}{of}"
        if any(d < 0 for d in t.dims):
            raise ModelError(f"{what} has a negative dim in its shape {list(t.dims)}")
        _check_size(what, list(t.dims), t.data_type, limit)
        vi = inputs.get(t.name)
        if vi is not None and vi.type.HasField("tensor_type"):
            declared = vi.type.tensor_type.elem_type
            if declared and declared != t.data_type:
                raise ModelError(f"{what} holds {_dtype_name(t.data_type)} but the graph input "
                                 f"of that name is declared {_dtype_name(declared)}")
    for vi in graph.input:
        _check_value_info(vi, f"input {vi.name!r}{of}", limit)
    defined = set(outer) | set(inputs) | {t.name for t in graph.initializer}
    defined |= {t.values.name for t in graph.sparse_initializer}
    producer = {o: i for i, node in enumerate(graph.node) for o in node.output if o}
    for i, node in enumerate(graph.node):
        label = _label(node, i)
        where = f"ONNX node {label}{of}"
        if not node.op_type:
            raise ModelError(f"{where} has an empty op type")
        where = f"{where} ({node.op_type})"
        for a in node.attribute:
            if a.type == onnx.AttributeProto.UNDEFINED:
                raise ModelError(f"{where}: attribute {a.name!r} has no type, or one this "
                                 "version of onnx does not know")
        for name in node.input:
            if not name or name in defined:
                continue
            if name in producer:
                later = _label(graph.node[producer[name]], producer[name])
                raise ModelError(f"{where} reads {name!r}, which node {later} computes only "
                                 "later: the nodes form a cycle or are not in topological order")
            raise ModelError(f"{where} reads {name!r}, which no node, graph input or "
                             "initializer defines")
        for attr, sub in _subgraphs(node):
            _check_graph(sub, f"{scope}{label}/{attr}" if not scope
                         else f"{scope}/{label}/{attr}", limit, frozenset(defined))
        defined.update(o for o in node.output if o)


def _check_inputs_shaped(graph: onnx.GraphProto) -> None:
    """Every graph input (not an initializer) has a rank: kiln needs one, and without it ONNX
    shape inference leaves the outputs without a shape and the checker fails on those."""
    initializers = {t.name for t in graph.initializer}
    for vi in graph.input:
        if (vi.name not in initializers and vi.type.HasField("tensor_type")
                and not vi.type.tensor_type.HasField("shape")):
            raise ModelError(f"input {vi.name!r} has no shape (its rank is unknown)")


def _check_value_info(vi: onnx.ValueInfoProto, what: str, limit: int) -> None:
    """``_check_size`` for a declared tensor type with static dims (the others are skipped:
    unknown dims, negative ones meaning "any")."""
    if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
        return
    tt = vi.type.tensor_type
    dims: list[Dim] = [d.dim_value if d.HasField("dim_value") and d.dim_value >= 0
                       else "?" for d in tt.shape.dim]
    _check_size(what, dims, tt.elem_type, limit)


def _check_size(what: str, dims: Sequence[Dim], elem_type: int, limit: int) -> None:
    """Refuse a tensor over the memory budget before anything of its size is allocated."""
    if elem_type in DTYPES:
        bits = DTYPES[elem_type].bits
    else:
        try:
            bits = 8 * onnx.helper.tensor_dtype_to_np_dtype(elem_type).itemsize
        except Exception:     # an unknown dtype: reported where the tensor is read
            return
    check_tensor_bytes(what, dims, bits, limit)


def _check_inferred(graph: onnx.GraphProto, prefix: str, limit: int) -> None:
    """The memory budget for every value whose shape ONNX shape inference knows (the
    intermediates of ``graph`` and its subgraphs, and the outputs)."""
    for vi in [*graph.value_info, *graph.output]:
        _check_value_info(vi, f"{prefix}value {vi.name!r}", limit)
    for i, node in enumerate(graph.node):
        for attr, sub in _subgraphs(node):
            _check_inferred(sub, f"{prefix}{_label(node, i)}/{attr}/", limit)


def _check_inferred_sizes(inferred: onnx.ModelProto, limit: int) -> None:
    """The memory budget for the values ONNX shape inference sized. Where it left a shape
    unknown, inference again with data propagation: it follows small constant shape tensors
    (``Add(shape, 0) -> ConstantOfShape``) as kiln's converters do when they fold them, and
    a converter would allocate such a constant before kiln's own checks could see it."""
    _check_inferred(inferred.graph, "", limit)
    if all(_is_static(vi) for vi in [*inferred.graph.value_info, *inferred.graph.output]):
        return
    try:
        propagated = onnx.shape_inference.infer_shapes(inferred, data_prop=True)
    except Exception:    # best effort: plain inference already passed
        return
    _check_inferred(propagated.graph, "", limit)


def _is_static(vi: onnx.ValueInfoProto) -> bool:
    if not vi.type.HasField("tensor_type"):
        return True
    tt = vi.type.tensor_type
    return tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim)


def _dtype_name(elem_type: int) -> str:
    if elem_type in TensorProto.DataType.values():
        return TensorProto.DataType.Name(elem_type)
    return f"dtype {elem_type}"


def _opset(model: onnx.ModelProto) -> int:
    versions = [imp.version for imp in model.opset_import if imp.domain in DEFAULT_DOMAINS]
    if not versions:
        raise ModelError("the model imports no opset of the default ONNX domain")
    if len(versions) > 1:
        raise ModelError(f"the model imports the default ONNX domain twice (opsets "
                         f"{', '.join(map(str, versions))}); it must name one opset")
    version = versions[0]
    # onnx's schemas, which kiln validates against, stop at the newest opset it knows
    if version < 1:
        raise ModelError(f"the model imports ONNX opset {version}, which does not exist "
                         "(opsets count from 1)")
    if version > onnx.defs.onnx_opset_version():
        raise ModelError(f"the model imports ONNX opset {version}; kiln supports opsets up to "
                         f"{onnx.defs.onnx_opset_version()} (those of onnx {onnx.__version__})")
    return version


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
        # input_shapes may fix a symbolic dim to an absurd size
        check_tensor_bytes(f"input {vi.name!r}", t.shape, t.dtype.bits)
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
        ctx.values[name] = g.constant(initializer_array(t), name=name, dtype=dtype)
    for t in onnx_graph.sparse_initializer:
        ctx.unusable[t.values.name] = f"sparse initializer {t.values.name!r} is not supported"


def initializer_array(t: onnx.TensorProto) -> np.ndarray:
    """An initializer's data, or ``ModelError`` naming it when its data do not decode to its
    dims and dtype (onnx's checker lets some such tensors through)."""
    try:
        return numpy_helper.to_array(t)
    except Exception as e:     # ValueError from reshape, and the like
        raise ModelError(f"initializer {t.name!r} (dims {list(t.dims)}, "
                         f"{_dtype_name(t.data_type)}): its data do not decode: "
                         f"{first_line(e)}") from None


def _convert(ctx: Context, node: onnx.NodeProto, used: set[str]) -> None:
    """Run ``node``'s converter and bind its ONNX outputs to the kiln values it returns."""
    ctx.begin(node)
    try:
        outs = CONVERTERS[op_key(node)](node, ctx)
    except MemoryError:   # a converter folding a constant larger than this machine's memory
        raise ModelError("out of memory building its result at import (a constant larger "
                         "than this machine's memory)") from None
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
            ctx.values[t.name] = ctx.graph.constant(initializer_array(t), name=t.name,
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
    limit = max_tensor_bytes()
    _check_graph(proto.graph, "", limit)
    _check_inputs_shaped(proto.graph)
    _unsupported(proto)   # before onnx's checker, which stops at the first op it does not know
    opset = _opset(proto)
    proto = _validate(proto)
    _check_inferred_sizes(proto, limit)   # before a converter folds a huge constant
    proto = fuse_qdq(proto)     # QDQ groups -> quantized ops (integer kernels)
    onnx_graph = proto.graph

    ctx = Context(Graph(onnx_graph.name or "main"), opset)
    _declare(ctx, onnx_graph, input_shapes or {}, constants or {})
    used = _used_names(onnx_graph)
    for i, node in enumerate(onnx_graph.node):
        try:
            _convert(ctx, node, used)
        except ModelError as e:
            where = shorten(f"ONNX node {_label(node, i)} ({node.op_type}, opset {opset}): {e}")
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
