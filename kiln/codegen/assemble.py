"""Assemble the kernels into one Relax module: ``main`` calls each PrimFunc through
``call_tir`` in dependency order, with the weights as constants; ``kiln_meta`` returns the
library's signature as JSON bytes, so a ``.so`` describes itself."""

from __future__ import annotations

import json

import numpy as np
import tvm
from tvm import relax, tirx

from kiln.codegen.lower import Kernel
from kiln.ir.dtype import as_dtype, to_storage
from kiln.ir.graph import Graph, Value

META_FUNC = "kiln_meta"


def signature(g: Graph) -> dict:
    def describe(v: Value) -> dict:   # symbolic dims stay names: "seq"
        return {"name": v.name, "shape": list(v.shape), "dtype": v.dtype.value}
    return {"format": 1, "name": g.name, "inputs": [describe(v) for v in g.inputs],
            "outputs": [describe(v) for v in g.outputs]}


class _Types:
    """Relax tensor types of the graph's values; a symbolic dim is one int64 shape variable
    across the whole function, so the VM checks that inputs agree on it and sizes each
    intermediate from it."""

    def __init__(self) -> None:
        self.syms: dict[str, tirx.Var] = {}

    def __call__(self, v: Value) -> relax.TensorType:
        shape = [d if isinstance(d, int) else self.syms.setdefault(d, tirx.Var(d, "int64"))
                 for d in v.shape]
        return relax.TensorType(shape, v.dtype.tvm)


def _const(arr: np.ndarray) -> relax.Constant:
    # the dtype must be explicit: relax.const narrows int64 to int32 and float64 to float32
    arr = to_storage(arr, as_dtype(arr.dtype))
    return relax.const(arr, str(arr.dtype))


def assemble(g: Graph, kernels: list[Kernel]) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    _tensor_type = _Types()
    gvars = {k.name: bb.add_func(k.func, k.name) for k in kernels}
    params = [relax.Var(v.name, _tensor_type(v)) for v in g.inputs]
    env: dict[int, relax.Expr] = {id(v): p for v, p in zip(g.inputs, params, strict=True)}

    def get(v: Value | np.ndarray) -> relax.Expr:
        if isinstance(v, np.ndarray):
            return _const(v)
        return _const(v.data) if v.is_constant else env[id(v)]

    with bb.function("main", params):
        with bb.dataflow():
            for k in kernels:
                types = [_tensor_type(o) for o in k.outputs]
                call = relax.call_tir(gvars[k.name], [get(a) for a in k.args],
                                      types[0] if len(types) == 1 else types)
                result = bb.emit(call, name_hint=k.name)
                if len(types) == 1:
                    env[id(k.outputs[0])] = result
                else:
                    for i, o in enumerate(k.outputs):
                        env[id(o)] = bb.emit(relax.TupleGetItem(result, i))
            outs = [get(v) for v in g.outputs]
            ret = bb.emit_output(outs[0] if len(outs) == 1 else relax.Tuple(outs))
        bb.emit_func_output(ret)
    meta = np.frombuffer(json.dumps(signature(g)).encode(), dtype=np.uint8)
    with bb.function(META_FUNC, []):
        bb.emit_func_output(relax.const(meta))
    return bb.get()
