"""Assemble the kernels into one Relax module: each entry point (``main``, or the named
functions of a multi-entry library such as a decoder's ``prefill`` and ``decode``) calls its
PrimFuncs through ``call_tir`` in dependency order, with the weights as constants, one copy of
each array however many functions use it; ``kiln_meta`` returns the library's signature as
JSON bytes, so a ``.so`` describes itself.

A kernel that stores into one of its inputs (``Kernel.inplace``: the key/value cache write) is
a ``call_tir_inplace``: its result is that input's buffer, so nothing is copied or allocated.
``kiln.codegen.pipeline`` only lowers it so where no later kernel reads the old value."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

import numpy as np
import tvm
from tvm import relax, tirx

from kiln.codegen.lower import Kernel
from kiln.ir.dtype import as_dtype, to_storage
from kiln.ir.graph import Graph, Value
from kiln.target import Target
from kiln.version import __version__

META_FUNC = "kiln_meta"


META_FORMAT = 3       # 2: "functions"; 3: "build"


def signature(graphs: Mapping[str, Graph], target: Target) -> dict:
    """The library's self-description: each entry point's inputs and outputs (the first
    one's also at the top level: format 1, which readers of one-function libraries use), and
    the build that made it: kiln's and TVM's versions and the target, which ``kiln.load``
    checks against the machine and the runtime it loads on."""
    def describe(v: Value) -> dict:   # symbolic dims stay names: "seq"
        return {"name": v.name, "shape": list(v.shape), "dtype": v.dtype.value}

    funcs = {name: {"inputs": [describe(v) for v in g.inputs],
                    "outputs": [describe(v) for v in g.outputs]} for name, g in graphs.items()}
    first = next(iter(graphs))
    build = {"kiln": __version__, "tvm": tvm.__version__, "target": target.name,
             "mcpu": target.mcpu, "mattr": list(target.mattr), "arch": target.arch}
    return {"format": META_FORMAT, "name": graphs[first].name, **funcs[first],
            "functions": funcs, "build": build}


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


class _Constants:
    """Relax constants, one per distinct array: a weight that several entry points (or the
    packed copies of several kernels) use is stored in the library once."""

    def __init__(self) -> None:
        self.made: dict[tuple, relax.Constant] = {}

    def __call__(self, arr: np.ndarray) -> relax.Constant:
        # the dtype must be explicit: relax.const narrows int64 to int32, float64 to float32
        arr = to_storage(arr, as_dtype(arr.dtype))
        arr = arr if arr.flags.c_contiguous else arr.copy(order="C")   # keeps a 0-d one 0-d
        raw = arr.reshape(-1).view(np.uint8)          # bytes of any dtype (bfloat16 too)
        key = (str(arr.dtype), arr.shape, hashlib.blake2b(raw, digest_size=16).digest())
        if key not in self.made:
            self.made[key] = relax.const(arr, str(arr.dtype))
        return self.made[key]


def assemble(functions: Mapping[str, tuple[Graph, list[Kernel]]], target: Target
             ) -> tvm.IRModule:
    """One Relax module with an entry point per ``name: (graph, kernels)`` and ``kiln_meta``
    (``signature``). Kernel names must be unique across the functions."""
    bb = relax.BlockBuilder()
    const = _Constants()
    for name, (g, kernels) in functions.items():
        _entry_point(bb, name, g, kernels, const)
    meta = np.frombuffer(json.dumps(signature({n: g for n, (g, _) in functions.items()},
                                              target)).encode(), dtype=np.uint8)
    with bb.function(META_FUNC, []):
        bb.emit_func_output(relax.const(meta))
    return bb.get()


def _entry_point(bb: relax.BlockBuilder, name: str, g: Graph, kernels: list[Kernel],
                 const: _Constants) -> None:
    _tensor_type = _Types()
    gvars = {k.name: bb.add_func(k.func, k.name) for k in kernels}
    params = [relax.Var(v.name, _tensor_type(v)) for v in g.inputs]
    env: dict[int, relax.Expr] = {id(v): p for v, p in zip(g.inputs, params, strict=True)}

    def get(v: Value | np.ndarray) -> relax.Expr:
        if isinstance(v, np.ndarray):
            return const(v)
        return const(v.data) if v.is_constant else env[id(v)]

    with bb.function(name, params):
        with bb.dataflow():
            for k in kernels:
                types = [_tensor_type(o) for o in k.outputs]
                out = types[0] if len(types) == 1 else types
                args = [get(a) for a in k.args]
                call = (relax.call_tir(gvars[k.name], args, out) if k.inplace is None else
                        relax.call_tir_inplace(gvars[k.name], args, [k.inplace], out))
                result = bb.emit(call, name_hint=k.name)
                if len(types) == 1:
                    env[id(k.outputs[0])] = result
                else:
                    for i, o in enumerate(k.outputs):
                        env[id(o)] = bb.emit(relax.TupleGetItem(result, i))
            outs = [get(v) for v in g.outputs]
            ret = bb.emit_output(outs[0] if len(outs) == 1 else relax.Tuple(outs))
        bb.emit_func_output(ret)
