"""``kiln.compile``: any supported model in, a runnable ``Library`` out."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kiln.codegen.assemble import META_FUNC
from kiln.codegen.library import Library
from kiln.codegen.pipeline import Clock, Compilation, build, lower_graph
from kiln.errors import KilnError
from kiln.ir.graph import Graph
from kiln.ir.specialize import specialize
from kiln.target import Target, get_target

Shapes = Mapping[str, Sequence[int | str]]


def to_graph(model: object, input_shapes: Shapes | None = None,
             constants: Mapping[str, np.ndarray] | None = None) -> Graph:
    """A kiln ``Graph`` from a Graph, an ONNX path or an ``onnx.ModelProto``, with
    ``input_shapes`` fixing the dims the model leaves symbolic and ``constants`` binding
    ONNX graph inputs to values."""
    if isinstance(model, Graph):
        if constants:
            raise KilnError("constants= binds inputs of ONNX models; a kiln.Graph takes "
                            "constants as g.constant(...)")
        return specialize(model, input_shapes) if input_shapes else model
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_file():
            raise KilnError(f"no such model file: {path}")
        if path.suffix.lower() != ".onnx":
            raise KilnError(f"{path}: kiln reads ONNX models (.onnx)")
        model = path
    elif type(model).__name__ != "ModelProto":
        raise KilnError(f"cannot compile a {type(model).__name__}: pass a kiln.Graph, "
                        "an ONNX file path or an onnx.ModelProto")
    from kiln.frontend.onnx import import_onnx  # imports onnx only when a model needs it
    # shapes go in before conversion, so shape computations in the model fold to constants
    return import_onnx(model, input_shapes, constants)


def _tuned(tuning_db: str | os.PathLike | None, tgt: Target) -> Any:
    """A ``kiln tune`` database's best knobs per group (``lower_graph``'s ``knobs_for``), or
    None for the templates' defaults."""
    if tuning_db is None:
        return None
    from kiln.tune.tuner import tuned_knobs
    return tuned_knobs(tuning_db, tgt)


def compile_stages(model: object, target: str | Target = "x86",
                   input_shapes: Shapes | None = None,
                   constants: Mapping[str, np.ndarray] | None = None,
                   tuning_db: str | os.PathLike | None = None) -> Compilation:
    """Every stage of compiling ``model``, before code generation (for ``kiln inspect``)."""
    tgt = get_target(target)
    knobs_for = _tuned(tuning_db, tgt)
    clock = Clock()
    c = lower_graph(clock("import", to_graph, model, input_shapes, constants), tgt, knobs_for)
    c.seconds = {**clock.seconds, **c.seconds}
    return c


def compile(model: object, target: str | Target = "x86",  # noqa: A001
            input_shapes: Shapes | None = None,
            constants: Mapping[str, np.ndarray] | None = None,
            tuning_db: str | os.PathLike | None = None,
            cache: bool | str | os.PathLike = False) -> Library:
    """Compile ``model`` for ``target`` ("x86", "x86-avx2", "x86-avx512", "arm-neon",
    "arm-neon-dotprod", "cuda", "cuda-sm80").

    ``model`` is a ``kiln.Graph``, a path to an ONNX file or an ``onnx.ModelProto``, or a
    dict of named graphs, one library function each (``{"prefill": g1, "decode": g2}``,
    called as ``lib["decode"](...)``; weights they share are stored once);
    ``input_shapes`` maps input names to shapes: an int fixes a dim, a str names a symbolic
    one (``{"input_ids": (1, "seq")}``). ``constants`` binds ONNX graph inputs to values
    (inputs kiln needs while compiling, such as a Resize's scales fed as an input); they
    are no longer inputs of the library. ``tuning_db``: a ``kiln tune`` database whose best
    knobs replace the defaults for the workloads it has measured (others keep them).
    ``cache``: ``True`` (or a directory) keeps the library in kiln's compile cache and loads
    it from there the next time the same model is compiled for the same target by the same
    kiln and TVM (``kiln.cache``); such a library has no ``compilation``.
    """
    tgt = get_target(target)
    if cache is not False and tgt.runs_here and not tgt.is_cuda:
        from kiln.cache import cache_key, compile_cached
        key = cache_key(model, tgt, input_shapes, constants, tuning_db)
        return compile_cached(key, cache, lambda: compile(model, tgt, input_shapes, constants,
                                                          tuning_db))
    if isinstance(model, Mapping):
        return _compile_entry_points(model, tgt, tuning_db)
    c = build(compile_stages(model, tgt, input_shapes, constants, tuning_db))
    return Library(c.executable, compilation=c)


def _compile_entry_points(graphs: Mapping[str, object], target: str | Target,
                          tuning_db: str | os.PathLike | None) -> Library:
    if not graphs:
        raise KilnError("compile: the dict of entry points is empty")
    for name, g in graphs.items():
        if not isinstance(name, str) or not name.isidentifier() or name == META_FUNC:
            raise KilnError(f"entry point name {name!r} must be a Python identifier other "
                            f"than {META_FUNC!r}")
        if not isinstance(g, Graph):
            raise KilnError(f"entry point {name!r}: expected a kiln.Graph, got "
                            f"{type(g).__name__}")
    tgt = get_target(target)
    knobs_for = _tuned(tuning_db, tgt)
    stages = [lower_graph(g, tgt, knobs_for, entry=name) for name, g in graphs.items()]
    build(*stages)
    return Library(stages[0].executable, compilation=stages[0], entry_points=stages)
