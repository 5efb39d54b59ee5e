"""A compiled model at run time: load, check inputs, run, benchmark, export."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import statistics
import struct
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tvm
from tvm import relax

from kiln.codegen import cuda
from kiln.codegen.assemble import META_FUNC, signature
from kiln.codegen.compat import check_compatible
from kiln.errors import InputError, KilnError, first_line
from kiln.ir.dtype import DType, from_storage, to_storage
from kiln.ir.interpreter import check_inputs
from kiln.ir.types import TensorType
from kiln.target import ARM_CC


def use_all_cores() -> None:
    """Give TVM's thread pool every core this process may run on, unless the user chose
    (``TVM_NUM_THREADS``). TVM's default halves the CPU count on x86 to skip hyper-threads,
    which on a 2-vCPU machine means one thread, with the main thread pinned to core 0. The pool
    reads the variable once, when it starts, so this runs when kiln is imported."""
    if "TVM_NUM_THREADS" not in os.environ:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else os.cpu_count() or 1
        os.environ["TVM_NUM_THREADS"] = str(cores)


use_all_cores()


def set_num_threads(n: int) -> None:
    """Run kiln libraries on ``n`` threads: parallel loops split into ``n`` tasks, the calling
    thread running one and ``n - 1`` pool workers the rest.

    ``n`` may be at most the pool's size, fixed when the pool starts: every core this process
    may run on, or ``TVM_NUM_THREADS`` if set before kiln is imported. TVM keeps one pool per
    Python thread, so the setting holds for libraries called from the thread that made it."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise KilnError(f"num_threads must be an integer >= 1, got {n!r}")
    before = num_threads()
    _config_threadpool(int(n))
    if num_threads() < n:
        # the pool clamps silently to its size; asking for more is a mistake worth naming
        size = num_threads()
        _config_threadpool(before)
        raise KilnError(f"num_threads={n} exceeds kiln's thread pool of {size} threads; set "
                        f"TVM_NUM_THREADS={n} before importing kiln for a larger pool")


def _config_threadpool(n: int) -> None:
    # mode 1 ("big cores"): on x86 every core; TVM pins worker i to core i + 1 and lets the
    # calling thread, which runs task 0, move over the pool's cores
    tvm.get_global_func("runtime.config_threadpool")(1, n)


def num_threads() -> int:
    """Threads kiln libraries called from this thread run on (``set_num_threads``)."""
    return int(tvm.runtime.num_threads())


@contextlib.contextmanager
def _quiet_native_stderr():
    """TVM 0.27's VM logs one "Warning: Scope Saving/Loaded" line per constant tensor when a
    library is written or read; those lines carry no information, so hide the C++ side of
    stderr for the duration (errors still arrive as Python exceptions)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str

    def __str__(self) -> str:
        return f"{self.name}: {self.dtype}{list(self.shape)}"


@dataclass
class KernelTime:
    """One kernel's time in a run of the model."""

    name: str
    calls: int            # per run of the model
    ms: float             # per call, median


class Library:
    """A compiled kiln model.

    ``lib(x=array)`` or ``lib(array)`` runs it and returns the outputs, in graph-output order,
    as NumPy arrays. A library of several entry points (``kiln.compile({"prefill": g1,
    "decode": g2})``) runs each as ``lib["decode"](...)``. ``lib.export(path)`` writes a shared
    library that ``kiln.load`` (or the plain TVM runtime) loads again.
    """

    def __init__(self, module: Any, compilation: Any = None,
                 entry_points: Sequence[Any] | None = None) -> None:
        self._module = module                    # relax Executable, or a loaded runtime Module
        self.compilation = compilation           # the stages, when compiled in this process
        self.source: Path | None = None          # the file it was loaded from (kiln.load)
        cuda_lib = compilation.target.is_cuda if compilation is not None else _has_cuda(module)
        self._device = tvm.cuda(0) if cuda_lib else tvm.cpu()
        self._vms = threading.local()            # one VM per calling thread (_machine)
        self._elsewhere = None                   # why it cannot run here, when it cannot
        if cuda_lib and not cuda.has_gpu():
            self._elsewhere = ("is compiled for CUDA and this machine has no CUDA device: "
                               "export it (lib.export) and run it on a GPU host")
        elif compilation is not None and not compilation.target.runs_here:
            self._elsewhere = (f"is compiled for {compilation.target.name} (aarch64): export it "
                               "(lib.export) and run it there, or under qemu-aarch64")
        if self._elsewhere:                      # compiled here to run elsewhere: export only
            meta = signature({c.entry: c.graph for c in entry_points or [compilation]},
                             compilation.target)
        else:
            meta = json.loads(bytes(self._machine()[META_FUNC]().numpy()).decode())
        self.meta: dict = meta                   # kiln_meta: signature and build (see assemble)
        self.name: str = meta["name"]
        funcs = meta.get("functions") or {"main": meta}      # format 1: main only
        self.functions = {name: Function(self, name, _specs(f["inputs"]), _specs(f["outputs"]))
                          for name, f in funcs.items()}
        first = next(iter(self.functions.values()))
        self.inputs, self.outputs = first.inputs, first.outputs

    def _machine(self) -> relax.VirtualMachine:
        """This thread's VM. A VM keeps the registers of the call in flight, so calls from
        several threads at once each run on their own; they share the library's code and
        its constants (on the CPU a VM takes the executable's weights as they are)."""
        if self._elsewhere:
            raise KilnError(f"{self.name} {self._elsewhere}")
        vm = getattr(self._vms, "vm", None)
        if vm is None:
            vm = self._vms.vm = relax.VirtualMachine(self._module, self._device)
        return vm

    def __repr__(self) -> str:
        return f"Library({'; '.join(map(str, self.functions.values()))})"

    def __getitem__(self, name: str) -> Function:
        """The entry point ``name`` (``lib["decode"]``)."""
        if name not in self.functions:
            raise KilnError(f"{self.name} has no function {name!r}; it has "
                            + ", ".join(self.functions))
        return self.functions[name]

    def _entry(self, name: str | None) -> Function:
        if name is not None:
            return self[name]
        if len(self.functions) > 1:
            names = list(self.functions)
            raise KilnError(f"{self.name} has {len(names)} entry points ({', '.join(names)}): "
                            f"call one, as lib[{names[0]!r}](...)")
        return next(iter(self.functions.values()))

    def __call__(self, /, *args: Any, **kwargs: Any) -> list[np.ndarray]:
        return self._entry(None)(*args, **kwargs)

    def benchmark(self, inputs: Mapping[str, Any] | Sequence[Any], number: int = 10,
                  repeat: int = 20, entry: str | None = None) -> list[float]:
        """Per-run latencies in seconds: ``repeat`` means, each over ``number`` runs.
        ``inputs`` maps input names to arrays, or lists them in input order; ``entry`` names
        the function of a library that has several."""
        vm, fn = self._machine(), self._entry(entry)
        if isinstance(inputs, Mapping):
            tensors = fn.arguments((), inputs)
        else:
            tensors = fn.arguments(tuple(inputs), {})
        vm[fn.name](*tensors)                    # warm-up: first-touch allocation, thread pool
        timer = vm.time_evaluator(fn.name, self._device, number=number, repeat=repeat)
        return list(timer(*tensors).results)

    def profile(self, inputs: Mapping[str, Any] | Sequence[Any], repeat: int = 7,
                min_repeat_ms: int = 10, entry: str | None = None) -> list[KernelTime]:
        """Time each kernel: one run of the model records every kernel call and its arguments
        (the VM's instrument hook), then each kernel runs again alone on those arguments
        (``time_evaluator``: ``repeat`` repeats of at least ``min_repeat_ms``, the median).
        Returns them slowest first."""
        vm, fn = self._machine(), self._entry(entry)
        tensors = (fn.arguments((), inputs) if isinstance(inputs, Mapping)
                   else fn.arguments(tuple(inputs), {}))
        calls: dict[str, list] = {}

        def record(func: Any, name: str, before: bool, ret: Any, *args: Any) -> int:
            if before and not name.startswith("vm.builtin."):
                calls.setdefault(name, [0, args])[0] += 1
            return 0                                  # VMInstrumentReturnKind.NO_OP

        vm[fn.name](*tensors)                         # warm-up
        vm.set_instrument(record)
        try:
            vm[fn.name](*tensors)
        finally:
            vm.set_instrument(None)
        root = getattr(self._module, "mod", self._module)
        times = []
        for name, (count, args) in calls.items():
            mod = find_module(root, lambda m, name=name: m.implements_function(name))
            timer = mod.time_evaluator(
                name, self._device, number=1, repeat=repeat, min_repeat_ms=min_repeat_ms)
            times.append(KernelTime(name, count, median_ms(timer(*args).results)))
        return sorted(times, key=lambda t: -t.ms * t.calls)

    def export(self, path: str | os.PathLike) -> Path:
        """Write the model as a shared library (``.so``) that ``kiln.load`` reads back."""
        path = Path(path)
        if path.suffix != ".so":
            raise KilnError(f"export path {str(path)!r} must end in .so")
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.compilation is None and self.source is not None:
            # a loaded library is a linked .so already (TVM cannot serialise it again): copy it
            if path.resolve() != self.source.resolve():
                try:
                    shutil.copyfile(self.source, path)
                except OSError as e:
                    raise KilnError(f"cannot export {self.source} (where this library was "
                                    f"loaded from) to {path}: {e.strerror}") from None
            return path
        target = self.compilation.target if self.compilation is not None else None
        with _quiet_native_stderr():
            if target is not None and target.is_arm:
                self._module.export_library(str(path), fcompile=_arm_linker())
            else:
                self._module.export_library(str(path))
        return path


class Function:
    """One entry point of a library: ``fn(*arrays, **named)`` returns NumPy outputs;
    ``fn.on_device(...)`` returns them as TVM tensors, left where they are, to be fed to the
    next call without a copy (a decoder's cache). Inputs may be NumPy arrays or such tensors.
    A kernel that updates an input in place (``kv_cache_write``) updates the tensor passed."""

    def __init__(self, lib: Library, name: str, inputs: list[TensorSpec],
                 outputs: list[TensorSpec]) -> None:
        self.lib, self.name, self.inputs, self.outputs = lib, name, inputs, outputs

    def __repr__(self) -> str:
        return (f"{self.name}({', '.join(map(str, self.inputs))}) -> "
                f"({', '.join(map(str, self.outputs))})")

    def __call__(self, /, *args: Any, **kwargs: Any) -> list[np.ndarray]:
        return [from_storage(r.numpy(), DType(s.dtype))
                for r, s in zip(self.on_device(*args, **kwargs), self.outputs, strict=True)]

    def on_device(self, /, *args: Any, **kwargs: Any) -> list[tvm.runtime.Tensor]:
        """Run, and return the outputs as TVM tensors on the library's device."""
        vm = self.lib._machine()
        tensors = self.arguments(args, kwargs)
        try:
            result = vm[self.name](*tensors)
        except Exception as e:    # a kernel's own check (a cache position out of range)
            message = str(e)
            if "kiln: " not in message:
                raise
            raise InputError(message[message.index("kiln: ") + 6:].splitlines()[0]) from None
        return [result] if len(self.outputs) == 1 else [result[i]
                                                        for i in range(len(self.outputs))]

    def arguments(self, args: tuple, kwargs: Mapping[str, Any]) -> list[tvm.runtime.Tensor]:
        if len(args) > len(self.inputs):
            raise InputError(f"{self.name} takes {len(self.inputs)} input(s), got {len(args)}")
        feeds = dict(zip((s.name for s in self.inputs), args, strict=False))
        for k, v in kwargs.items():
            if k in feeds:
                raise InputError(f"input {k!r} given twice")
            feeds[k] = v
        device = {k: feeds.pop(k) for k in list(feeds)
                  if isinstance(feeds[k], tvm.runtime.Tensor)}
        specs = {s.name: s for s in self.inputs}
        for k, t in device.items():
            spec = specs.get(k)
            if spec is None:
                continue                 # check_inputs names it with the other unknowns
            if str(t.dtype) != spec.dtype or len(t.shape) != len(spec.shape) or any(
                    isinstance(w, int) and w != g
                    for w, g in zip(spec.shape, t.shape, strict=True)):
                raise InputError(f"input {k!r}: expected {spec.dtype}{list(spec.shape)}, got "
                                 f"a tensor of {t.dtype}{list(t.shape)}")
            if t.device != self.lib._device:
                raise InputError(f"input {k!r} is on {t.device}; the library runs on "
                                 f"{self.lib._device}")
        arrays = check_inputs([(s.name, TensorType.of(s.shape, s.dtype)) for s in self.inputs
                               if s.name not in device], feeds)
        out = []
        for spec in self.inputs:
            if spec.name in device:
                out.append(device[spec.name])
                continue
            arr = arrays[spec.name]
            # np.ascontiguousarray would turn a 0-d array into a 1-d one
            arr = arr if arr.flags.c_contiguous else arr.copy(order="C")
            out.append(tvm.runtime.tensor(to_storage(arr, DType(spec.dtype)), self.lib._device))
        return out


def _specs(described: list[dict]) -> list[TensorSpec]:
    return [TensorSpec(d["name"], tuple(d["shape"]), d["dtype"]) for d in described]


def _arm_linker() -> Any:
    """The cross linker for aarch64 libraries, or a clear error where it is missing."""
    if shutil.which(ARM_CC) is None:
        raise KilnError(f"exporting an aarch64 library needs {ARM_CC} (Debian/Ubuntu: apt-get "
                        "install gcc-aarch64-linux-gnu)")
    from tvm.support import cc
    return cc.cross_compiler(ARM_CC)


def load(path: str | os.PathLike) -> Library:
    """Load a library written by ``Library.export`` (or ``kiln compile``)."""
    path = Path(path)
    if not path.is_file():
        raise KilnError(f"no such library: {path}")
    _check_not_truncated(path)
    try:
        with _quiet_native_stderr():
            module = _load_module(path)
            lib = Library(module)
            lib.source = path
    except KilnError:
        raise
    except Exception as e:   # TVM raises its own error types for bad files
        raise KilnError(f"{path} is not a loadable kiln library: {first_line(e)}") from None
    check_compatible(lib.meta, str(path))       # before any of its kernels runs
    return lib


def find_module(root: Any, match: Callable[[Any], bool]) -> Any:
    """The first module in ``root``'s import tree (``root`` included) that ``match``es."""
    stack, seen = [root], 0
    while stack and seen < 256:
        m = stack.pop()
        seen += 1
        if match(m):
            return m
        stack.extend(m.imports)
    return None


def _has_cuda(module: Any) -> bool:
    """Whether a loaded library carries CUDA kernels (an imported module of kind cuda)."""
    return find_module(getattr(module, "mod", module), lambda m: m.kind == "cuda") is not None


def _load_module(path: Path) -> Any:
    """``tvm.runtime.load_module``; a library that holds CUDA code needs TVM's CUDA module
    loader, which only the CUDA runtime registers: load that (it needs the GPU driver) and try
    once more."""
    try:
        return tvm.runtime.load_module(str(path))
    except RuntimeError as e:
        if "load_from_bytes.cuda" not in str(e):
            raise
    cuda.load_cuda_runtime(allow_stub=False)
    return tvm.runtime.load_module(str(path))


ELF_AARCH64 = 183      # e_machine


def _check_not_truncated(path: Path) -> None:
    """Refuse a truncated shared library before dlopen maps it: reading a mapped page past the
    end of the file kills the process with SIGBUS instead of raising. Every part that the ELF
    headers locate (program segments, the section header table) must lie inside the file."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(64)
        if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2:
            return   # not a 64-bit ELF file: dlopen's own message says what it is not
        order = "<" if head[5] == 1 else ">"
        (machine,) = struct.unpack_from(order + "H", head, 0x12)
        if machine == ELF_AARCH64 and platform.machine() not in ("aarch64", "arm64"):
            raise KilnError(f"{path} is an aarch64 library (kiln's arm targets): run it on an "
                            "aarch64 machine, or under qemu-aarch64")
        phoff, shoff = struct.unpack_from(order + "QQ", head, 0x20)
        phentsize, phnum, shentsize, shnum = struct.unpack_from(order + "HHHH", head, 0x36)
        ends = [phoff + phentsize * phnum, shoff + shentsize * shnum]
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    for i in range(len(table) // phentsize if phentsize >= 40 else 0):
        offset, = struct.unpack_from(order + "Q", table, i * phentsize + 8)
        filesz, = struct.unpack_from(order + "Q", table, i * phentsize + 32)
        ends.append(offset + filesz)
    if max(ends) > size:
        raise KilnError(f"{path} is not a loadable kiln library: it is truncated ({size} bytes, "
                        f"its ELF headers locate data up to byte {max(ends)})")


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3

