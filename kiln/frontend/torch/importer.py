"""The torch importer: ``from_torch`` turns a ``torch.export`` program into a kiln ``Graph``.

1. Export: an ``nn.Module`` goes through ``torch.export.export`` with the example inputs (and
   ``dynamic_shapes``); an ``ExportedProgram`` is taken as it is.
2. Decompose to core ATen (``run_decompositions``), which leaves ~180 ops however the model was
   written, except for the ops kiln maps better whole (``PRESERVED``: ``linear`` stays a
   ``dense`` on [batch, seq, K] instead of a flattened ``addmm``, attention stays the
   matmul -> softmax -> matmul chain kiln's attention kernel recognises).
3. Check: every op without a converter is reported at once, with the nodes using it.
4. Convert: parameters, buffers and lifted constants become kiln constants (named after their
   module path), user inputs become graph inputs, each call through its ``@aten`` converter;
   each result is checked against the dtype and shape torch traced.
"""

from __future__ import annotations

import inspect
import operator
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind, TensorArgument

from kiln.errors import InternalError, ModelError, first_line
from kiln.frontend.torch.context import CONVERTERS, Context, kiln_dtype, tensor_to_numpy
from kiln.ir.graph import Graph, Value
from kiln.ir.verify import verify

PRESERVED = (
    torch.ops.aten.linear.default,
    torch.ops.aten.matmul.default,
    torch.ops.aten.scaled_dot_product_attention.default,
    # kiln has these activations as ops: one vectorised function instead of a chain
    torch.ops.aten.softplus.default,
    torch.ops.aten.mish.default,
    torch.ops.aten.hardswish.default,
    torch.ops.aten.hardsigmoid.default,
)
"""Ops kept whole through the decomposition: each converts to fewer kiln ops whole."""

# sizes torch computes on the side (sym_size, and Python arithmetic on SymInts): kiln reads
# every result shape from the traced FakeTensors instead, so these need no converter
_SIZE_OPS = frozenset({"aten.sym_size.int", "aten.sym_numel.default", "aten.sym_stride.int",
                       "aten.sym_storage_offset.default"})
# run-time checks torch.export inserts (dtypes, ranges of symbolic dims): nothing to compute
_CHECKS = frozenset({"aten._assert_scalar.default", "aten._assert_tensor_metadata.default",
                     "aten.sym_constrain_range.default",
                     "aten.sym_constrain_range_for_size.default",
                     "aten._assert_async.default", "aten._assert_async.msg",
                     "aten._functional_assert_async.msg"})
_SIZE_TYPES = (torch.SymInt, torch.SymFloat, torch.SymBool, int, float, bool)


def from_torch(model: torch.nn.Module | ExportedProgram, example_inputs: Sequence[Any] = (),
               dynamic_shapes: Mapping[str, Any] | Sequence[Any] | None = None, *,
               example_kwargs: Mapping[str, Any] | None = None,
               name: str | None = None) -> Graph:
    """A kiln ``Graph`` of a torch model.

    ``model`` is an ``nn.Module``, exported here with ``torch.export.export(model,
    example_inputs, kwargs=example_kwargs, dynamic_shapes=dynamic_shapes)``, or a program
    already exported. Call ``model.eval()`` first: the module is exported in the mode it is in,
    and training-mode dropout or batch statistics have no kiln equivalent.

    ``dynamic_shapes`` (torch's format, by argument name or position) makes dims symbolic:
    ``{"x": {0: Dim("batch"), 1: Dim("seq")}}`` gives kiln inputs of shape ``("batch", "seq",
    ...)``; a symbolic dim without a name (``Dim.AUTO``, or an ``ExportedProgram`` passed in)
    is named after the first input that has it (``x_dim1``). Parameters and buffers become
    constants named after their module path (``encoder.qkv.weight``).

    Raises ``ModelError`` naming every op kiln has no converter for, with the nodes using it
    (``supported_ops()`` lists those it has), or naming the node whose arguments it cannot take.
    """
    if isinstance(model, ExportedProgram):
        if example_inputs or example_kwargs or dynamic_shapes is not None:
            raise ModelError("an ExportedProgram carries its inputs and dynamic shapes: pass "
                             "example_inputs and dynamic_shapes only with an nn.Module")
        ep, graph_name = model, name or "main"
    elif isinstance(model, torch.nn.Module):
        ep, graph_name = _export(model, example_inputs, example_kwargs, dynamic_shapes), \
            name or type(model).__name__
    else:
        raise ModelError(f"from_torch takes an nn.Module or a torch.export.ExportedProgram, "
                         f"not a {type(model).__name__}")
    ep = ep.run_decompositions(_decompositions())
    _check_stateless(ep)
    try:
        _check_supported(ep, graph_name)
    except ModelError as e:
        if isinstance(model, torch.nn.Module) and model.training:
            raise ModelError(f"{e} (the module is in training mode: where these ops come "
                             "from dropout or batch norm, call model.eval() first)") from None
        raise
    return _Importer(ep, Graph(graph_name), dynamic_shapes).run()


def _decompositions() -> Any:
    """torch's core ATen decomposition table less ``PRESERVED``."""
    if hasattr(torch.export, "default_decompositions"):      # torch >= 2.6
        table = torch.export.default_decompositions()
    else:
        from torch._decomp import core_aten_decompositions
        table = core_aten_decompositions()
    for op in PRESERVED:
        table.pop(op, None)
    return table


def supported_ops() -> list[str]:
    """The ATen ops kiln converts (after ``run_decompositions``), sorted."""
    return sorted(CONVERTERS)


def _export(model: torch.nn.Module, args: Sequence[Any], kwargs: Mapping[str, Any] | None,
            dynamic_shapes: object) -> ExportedProgram:
    try:
        return torch.export.export(model, tuple(args), kwargs=dict(kwargs or {}),
                                   dynamic_shapes=dynamic_shapes)
    except Exception as e:  # torch's export errors: graph breaks, data-dependent control flow
        raise ModelError(f"torch.export could not export {type(model).__name__}: "
                         f"{first_line(e)}") from e


def _key(target: object) -> str:
    """``aten.add.Tensor`` for an OpOverload; the Python name for anything else."""
    if isinstance(target, torch._ops.OpOverload):
        return str(target)
    return getattr(target, "__qualname__", None) or str(target)


def _is_size(node: torch.fx.Node) -> bool:
    """A node computing a size or a number, not a tensor (``sym_size``, ``s0 * 2``)."""
    if isinstance(node.target, torch._ops.OpOverload) and _key(node.target) not in _SIZE_OPS:
        return False
    return isinstance(node.meta.get("val"), _SIZE_TYPES)


def _check_stateless(ep: ExportedProgram) -> None:
    """Outputs other than the user's are updates of buffers or inputs (batch norm's running
    statistics in training mode, in-place ops on inputs): a compiled library keeps no state."""
    updates = [f"{s.kind.name.lower()} of {s.target or s.arg.name}"
               for s in ep.graph_signature.output_specs if s.kind is not OutputKind.USER_OUTPUT]
    if updates:
        raise ModelError("the model updates state while it runs, which a compiled library "
                         f"cannot: {', '.join(updates)}. Call model.eval() before exporting, "
                         "and leave buffers and inputs unmodified")


def _check_supported(ep: ExportedProgram, graph_name: str) -> None:
    missing: dict[str, list[str]] = {}
    for node in ep.graph.nodes:
        if node.op != "call_function" or node.target is operator.getitem or _is_size(node):
            continue
        key = _key(node.target)
        if key not in CONVERTERS and key not in _CHECKS:
            missing.setdefault(key, []).append(node.name)
    if missing:
        ops = "; ".join(f"{op} (node{'s' if len(nodes) > 1 else ''} {', '.join(nodes)})"
                        for op, nodes in sorted(missing.items()))
        raise ModelError(f"{graph_name}: kiln has no converter for {len(missing)} torch "
                         f"op{'s' if len(missing) > 1 else ''}: {ops}. "
                         "kiln.frontend.torch.supported_ops() lists the ops it converts; "
                         "rewrite the model with those, or add a converter with @aten "
                         "(kiln/frontend/torch/ops/)")


class _NotASize:
    """A number torch knows only at run time, or a size kiln cannot name; using it raises."""

    def __init__(self, why: str) -> None:
        self.why = why


class _Importer:
    def __init__(self, ep: ExportedProgram, g: Graph, dynamic_shapes: object) -> None:
        self.ep = ep
        self.g = g
        self.cx = Context(g, {})
        self.env: dict[torch.fx.Node, Any] = {}
        self.dynamic_shapes = dynamic_shapes

    def run(self) -> Graph:
        sig = self.ep.graph_signature
        specs = {s.arg.name: s for s in sig.input_specs if isinstance(s.arg, TensorArgument)}
        inputs = [n for n in self.ep.graph.nodes if n.op == "placeholder" and n.name in specs
                  and specs[n.name].kind is InputKind.USER_INPUT]
        self._name_dims(inputs)
        for node in inputs:           # first: a parameter's name must not take an input's
            val = node.meta["val"]
            self.env[node] = self.g.input(node.name, self.cx.dims(val.shape),
                                          kiln_dtype(val.dtype))
        for node in self.ep.graph.nodes:
            self.cx.begin(node)
            if node.op == "placeholder" and node not in self.env:
                self.env[node] = self._placeholder(node, specs.get(node.name))
            elif node.op == "get_attr":
                self.env[node] = self._attribute(node)
            elif node.op == "call_function":
                self.env[node] = self._call(node)
            elif node.op == "output":
                self._outputs(node)
        verify(self.g)          # a converter that broke an invariant fails here, by node
        return self.g

    # -- inputs ----------------------------------------------------------------------------------
    def _name_dims(self, inputs: list[torch.fx.Node]) -> None:
        """Name torch's size symbols: the dynamic_shapes ``Dim``'s name where it has one,
        else after the first input and axis that carry the symbol."""
        given = self._dim_specs(inputs)
        names = self.cx.dim_names
        for node in inputs:
            for axis, size in enumerate(getattr(node.meta.get("val"), "shape", ())):
                if not isinstance(size, torch.SymInt) or not size.node.expr.is_Symbol:
                    continue
                expr = size.node.expr
                dim_name = getattr(given.get(node.name, {}).get(axis), "__name__", None)
                if isinstance(dim_name, str) and dim_name.isidentifier():
                    names[expr] = dim_name
                else:
                    names.setdefault(expr, f"{node.name}_dim{axis}")

    def _dim_specs(self, inputs: list[torch.fx.Node]) -> dict[str, dict[int, Any]]:
        """``dynamic_shapes`` by input name, each as {axis: Dim}: torch's format is a dict by
        argument name or a sequence by position, each entry a dict or a sequence by axis."""
        spec = self.dynamic_shapes
        if spec is None:
            return {}
        if isinstance(spec, Mapping):
            by_name = dict(spec)
        elif isinstance(spec, Sequence) and len(spec) == len(inputs):
            by_name = {n.name: s for n, s in zip(inputs, spec, strict=True)}
        else:
            return {}
        out: dict[str, dict[int, Any]] = {}
        for key, axes in by_name.items():
            if isinstance(axes, Mapping):
                out[key] = dict(axes)
            elif isinstance(axes, Sequence):
                out[key] = dict(enumerate(axes))
        return out

    def _placeholder(self, node: torch.fx.Node, spec: Any) -> Any:
        if spec is None:                     # a non-tensor user input torch specialised
            return self._size(node)
        if spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
            t = self.ep.state_dict.get(spec.target)
            t = self.ep.constants[spec.target] if t is None else t
            return self.cx.constant(tensor_to_numpy(t), name=spec.target)
        raise ModelError(f"input {node.name} is a {spec.kind.name.lower()}, which kiln cannot "
                         "take")

    def _attribute(self, node: torch.fx.Node) -> Value:
        value = self.ep.graph_module
        for part in str(node.target).split("."):
            value = getattr(value, part)
        if not isinstance(value, torch.Tensor):
            raise ModelError(f"node {node.name} reads a {type(value).__name__} attribute (a "
                             "control-flow body?), which kiln cannot take")
        return self.cx.constant(tensor_to_numpy(value), name=str(node.target))

    # -- calls -----------------------------------------------------------------------------------
    def _call(self, node: torch.fx.Node) -> Any:
        if node.target is operator.getitem:
            return self._getitem(node)
        if _is_size(node):
            return self._size(node)
        key = _key(node.target)
        if key in _CHECKS:
            return None
        args = torch.fx.node.map_arg(node.args, self._use)
        kwargs = torch.fx.node.map_arg(node.kwargs, self._use)
        convert = CONVERTERS[key]
        pos, kw = _bind(node.target, args, kwargs, _keywords(convert))
        try:
            out = convert(self.cx, *pos, **kw)
            return self._settle(node, out)
        except ModelError as e:
            raise ModelError(f"node {node.name} ({key}): {e}") from None

    def _use(self, node: torch.fx.Node) -> Any:
        value = self.env[node]
        if isinstance(value, _NotASize):
            raise ModelError(f"node {self.cx.node.name} reads {node.name}: {value.why}")
        return value

    def _size(self, node: torch.fx.Node) -> Any:
        val = node.meta.get("val")
        if isinstance(val, torch.SymInt):
            try:
                return self.cx.dim(val)
            except ModelError as e:
                return _NotASize(str(e))
        if isinstance(val, (torch.SymFloat, torch.SymBool)):
            return _NotASize(f"the number {val} is known only at run time")
        return val

    def _getitem(self, node: torch.fx.Node) -> Any:
        source, index = node.args
        outs = self._use(source)
        item = outs[index]
        if item is None:
            raise ModelError(f"node {node.name}: output {index} of {source.name} "
                             f"({_key(source.target)}) is not computed by kiln")
        return item

    def _settle(self, node: torch.fx.Node, out: Any) -> Any:
        """Check a converter's results against torch's traced ones; the dtype is cast where
        it differs (a reduction torch accumulates into a wider type), a shape must match."""
        val = node.meta.get("val")
        if isinstance(out, Value):
            return self._match(node, out, val)
        if isinstance(out, (tuple, list)) and isinstance(val, (tuple, list)):
            return [o if o is None else self._match(node, o, v)
                    for o, v in zip(out, val, strict=True)]
        raise InternalError(f"the converter for {_key(node.target)} returned {out!r}")

    def _match(self, node: torch.fx.Node, out: Value, val: Any) -> Value:
        if not isinstance(val, torch.Tensor):
            return out
        want = kiln_dtype(val.dtype)
        try:
            shape = self.cx.dims(val.shape)
        except ModelError:         # a size kiln cannot name: the converter made do without it
            shape = out.shape
        same = len(shape) == len(out.shape) and all(
            a == b or isinstance(a, str) or isinstance(b, str)
            for a, b in zip(shape, out.shape, strict=True))
        if not same:
            raise InternalError(f"node {node.name} ({_key(node.target)}): kiln made {out.type}, "
                                f"torch traced {want.short}{list(shape)}")
        return self.cx.cast(out, want)

    # -- outputs ---------------------------------------------------------------------------------
    def _outputs(self, node: torch.fx.Node) -> None:
        for i, out in enumerate(node.args[0]):
            if not isinstance(out, torch.fx.Node):
                raise ModelError(f"output {i} is {out!r}, not a tensor")
            value = self._use(out)
            if not isinstance(value, Value):
                value = self.cx.constant(value, name=f"output_{i}")
            self.g.output(value)


@cache
def _keywords(convert: Any) -> frozenset[str]:
    """The parameters a converter takes by keyword: the op's keyword-only arguments it does
    not name (``device``, ``layout``, ``pin_memory``) do not change its values."""
    params = inspect.signature(convert).parameters.values()
    by_keyword = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return frozenset(p.name for p in params if p.kind in by_keyword)


def _bind(target: Any, args: tuple, kwargs: dict, keywords: frozenset[str]
          ) -> tuple[list[Any], dict[str, Any]]:
    """``args`` and ``kwargs`` in schema order: every positional argument (defaults filled
    in), and the keyword-only ones the converter names."""
    pos: list[Any] = []
    kw: dict[str, Any] = {}
    for i, a in enumerate(target._schema.arguments):
        if a.kwarg_only:
            if a.name in keywords:
                kw[a.name] = kwargs.get(a.name, a.default_value if a.has_default_value()
                                        else None)
        elif i < len(args):
            pos.append(args[i])
        elif a.name in kwargs:
            pos.append(kwargs[a.name])
        elif a.has_default_value():
            pos.append(a.default_value)
        else:
            raise InternalError(f"{target}: argument {a.name} is missing")
    return pos, kw
