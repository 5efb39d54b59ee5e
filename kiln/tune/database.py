"""The tuning database: an append-only JSON Lines file, one record per measured trial.

    {"workload": "c13a9bc357dfd484", "summary": "gemm M=128 N=384 K=384",
     "target": "x86:emeraldrapids:avx512", "knobs_type": "CpuGemmKnobs",
     "knobs": {"mr": 8, "nr": 32, "mc": 64, "nc": 128, "ku": 8}, "time_ms": 0.0412,
     "vs_default": 0.93, "error": null, "default": false, "kiln": "0.1.0", "tvm": "0.27.0",
     "at": "2026-11-22T04:10:00Z"}

``time_ms`` is the config's time against the default kernel timed alongside it
(``vs_default``), in the units of the default's first measurement.

Each record is one ``write`` of one whole line on a file opened for appending, then fsync'd:
a ``kill -9`` lands before or after it, so a killed run loses at most the trial it was
measuring, and rerunning skips every config already in the file. A line torn by a power
cut (only the last can be) is skipped when reading, and the next record starts on a fresh
line.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln.errors import KilnError
from kiln.tune.space import knobs_from_dict, knobs_to_dict


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for key, dist in (("kiln", "kiln"), ("tvm", "apache-tvm")):
        try:
            out[key] = version(dist)
        except PackageNotFoundError:
            out[key] = "unknown"
    return out


@dataclass
class Record:
    workload: str
    target: str
    knobs: Any
    time_ms: float | None
    error: str | None
    summary: str = ""
    default: bool = False           # the template's default knobs


class TuningDB:
    """Records of one JSON Lines file; ``append`` writes through at once."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.records: list[Record] = []
        self.skipped = 0                # unreadable lines (a torn last line)
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        try:
            text = self.path.read_text()
        except OSError as e:
            raise KilnError(f"cannot read the tuning database {self.path}: {e.strerror}") from None
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                self.records.append(Record(r["workload"], r["target"],
                                           knobs_from_dict(r["knobs_type"], r["knobs"]),
                                           r.get("time_ms"), r.get("error"),
                                           r.get("summary", ""), bool(r.get("default"))))
            except (ValueError, KeyError, TypeError, KilnError):
                self.skipped += 1

    def append(self, workload: str, target: str, knobs: Any, time_ms: float | None,
               error: str | None, summary: str = "", vs_default: float | None = None,
               default: bool = False) -> None:
        line = json.dumps({"workload": workload, "summary": summary, "target": target,
                           "knobs_type": type(knobs).__name__, "knobs": knobs_to_dict(knobs),
                           "time_ms": time_ms, "vs_default": vs_default, "error": error,
                           "default": default,
                           **_versions(),
                           "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size and not self._ends_with_newline():
                line = "\n" + line          # after a torn line: start a fresh one
            os.write(fd, (line + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        self.records.append(Record(workload, target, knobs, time_ms, error, summary, default))

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def trials(self, workload: str, target: str) -> list[Record]:
        return [r for r in self.records if r.workload == workload and r.target == target]

    def best(self, workload: str, target: str) -> Record | None:
        """The config with the lowest ``estimates`` time, as a record of that time."""
        samples: dict[Any, list[float]] = {}
        defaults = set()
        for r in self.trials(workload, target):
            samples.setdefault(r.knobs, [])
            if r.time_ms is not None:
                samples[r.knobs].append(r.time_ms)
            if r.default:
                defaults.add(r.knobs)
        times = estimates(samples, defaults)
        if not times:
            return None
        knobs = min(times, key=times.get)
        return Record(workload, target, knobs, times[knobs], None)


CONFIRM_SAMPLES = 2     # trials of a config measured again to confirm it


def estimates(samples: dict[Any, list[float]], defaults: Any = ()) -> dict[Any, float]:
    """Each config's time from its trials' times, in the order measured (an empty list: it
    failed). The fastest of a hundred single measurements is, by a few percent, the
    luckiest one, and is slower when timed again. So a config measured again (the search
    confirms its leaders at the end of a budget) counts the median of its later trials
    only (its first is what made it a leader), and once some configs have been confirmed,
    only those can win, and the default (in ``defaults``: every trial is timed against it).
    """
    ok = {c: t for c, t in samples.items() if t}
    least = min(CONFIRM_SAMPLES, max((len(t) for t in ok.values()), default=0))
    return {c: estimate(t) for c, t in ok.items() if len(t) >= least or c in defaults}


def estimate(times: list[float]) -> float:
    """One config's time from its trials' times (at least one), in the order measured: the
    median of those after the first, if any (the first is what made it a leader)."""
    return float(statistics.median(times[1:] or times))
