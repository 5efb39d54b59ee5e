"""Schedule tuning: search the named knobs of each kernel's template, measured in isolated
workers (here or over TVM RPC), recorded in a crash-safe JSON Lines database.

    kiln tune model.onnx --target x86 --trials 64 --time-budget 10m --db tuning.jsonl
    kiln compile model.onnx -o model.so --tuning-db tuning.jsonl

Modules: ``workload`` (the tunable groups of a model, keyed), ``space`` (each template's
valid configs), ``measure`` (build, time in a worker, check), ``search`` (default, random,
then a cost model), ``database`` (the JSON Lines file), ``tuner`` (a whole model).
"""

from kiln.tune.database import TuningDB
from kiln.tune.search import Result, Search
from kiln.tune.tuner import format_results, tune, tuned_knobs

__all__ = ["Result", "Search", "TuningDB", "format_results", "tune", "tuned_knobs"]
