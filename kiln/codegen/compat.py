"""Whether a library may run here: checked by ``kiln.load`` from the build facts the library
records (``assemble.signature``), before any of its kernels runs.

- Its format: a library written by a newer kiln may describe itself in ways this one does not
  read.
- Its TVM: the library calls the runtime it was built against (the VM's instruction set and
  builtins); another minor release of TVM may not have them.
- Its instructions: a library built for a CPU with instructions this one lacks (AVX-512 VNNI,
  VBMI, AMX; an ARM core's dotprod) would die of SIGILL in the middle of a run. The CPU it was
  built for (LLVM's ``-mcpu``, plus ``-mattr``) names the instruction-set extensions its code
  may use; each must be one this machine's CPU has.
- Its GPU architecture: a CUDA library carries code for one compute capability.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import tvm

from kiln.errors import KilnError
from kiln.version import __version__

READS_FORMATS = 3        # the newest kiln_meta format this kiln reads
# LLVM feature names that are instruction-set extensions (what a CPU may lack), not tuning
# hints ("fast-...", "slow-...", "false-deps-...") that only steer code generation
_ISA = re.compile(r"^(avx|sse|ssse|fma|f16c|bmi|amx|vaes|vpclmulqdq|gfni|sha|aes|pclmul|popcnt|"
                  r"lzcnt|movbe|adx|cx16|xop|tbm|clzero|mwaitx|rdpru|prefetchi|cmpccxadd|"
                  r"raoint|sm3|sm4|evex512|neon|dotprod|fullfp16|i8mm|bf16|sve|crypto|fp-armv8|"
                  r"crc|lse|rdm)")


def check_compatible(meta: dict, where: str) -> None:
    """Refuse, with a message that says what to do, a library this machine or runtime cannot
    run (see the module docstring). Libraries that record no build (kiln before format 3) are
    taken as they are."""
    fmt = int(meta.get("format", 1))
    if fmt > READS_FORMATS:
        raise KilnError(f"{where} was written by a newer kiln (library format {fmt}; kiln "
                        f"{__version__} reads formats up to {READS_FORMATS}): upgrade kiln")
    build = meta.get("build")
    if not build:
        return
    built_with, here = build.get("tvm", "?"), tvm.__version__
    if _release(built_with) != _release(here):
        raise KilnError(f"{where} was built with TVM {built_with} (kiln {build.get('kiln')}) "
                        f"and this runtime is TVM {here}: rebuild it with this kiln")
    if build.get("arch"):
        _check_gpu(build["arch"], where, build.get("target", "cuda"))
        return
    # the vector extensions first: what a reader looks for (avx512f, amx-int8, dotprod)
    missing = sorted(required_features(build.get("mcpu", ""), tuple(build.get("mattr", ())))
                     - host_features(), key=lambda f: (not f.startswith(("avx", "amx")), f))
    if missing:
        shown = ", ".join(missing[:8]) + (", ..." if len(missing) > 8 else "")
        raise KilnError(f"{where} was built for {build.get('target')} ({build.get('mcpu')}), "
                        f"whose instructions this CPU lacks ({shown}): compile it for this "
                        "machine (target x86) or a CPU class it has (x86-avx2, x86-avx512)")


def _release(version: str) -> tuple[str, ...]:
    """major.minor: TVM's runtime ABI follows its minor releases."""
    return tuple(version.split(".")[:2])


@cache
def required_features(mcpu: str, mattr: tuple[str, ...] = ()) -> frozenset[str]:
    """The instruction-set extensions code built for ``mcpu`` (plus ``mattr``) may use."""
    feats = set(_llvm_features(mcpu)) if mcpu else set()
    feats |= {a[1:] for a in mattr if a.startswith("+")}
    return frozenset(f for f in feats if _ISA.match(f))


@cache
def host_features() -> frozenset[str]:
    """The instruction-set extensions of this machine's CPU (as LLVM detects it)."""
    from tvm.target import codegen
    return frozenset(f for f in _llvm_features(str(codegen.llvm_get_system_cpu()))
                     if _ISA.match(f))


def _llvm_features(mcpu: str) -> list[str]:
    from tvm.target import codegen
    try:
        target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu})
        return [str(f) for f in codegen.llvm_get_cpu_features(target)]
    except Exception as e:                  # an -mcpu this LLVM does not know
        raise KilnError(f"the library was built for a CPU this LLVM does not know ({mcpu!r}): "
                        f"{e}") from None


def _check_gpu(arch: str, where: str, target: str) -> None:
    """A CUDA library for ``sm_XY`` needs compute capability X.Y or newer; ``sm_XYa`` (arch-
    specific features: wgmma) exactly X.Y. Without a GPU the library loads for export only."""
    from kiln.codegen import cuda
    m = re.fullmatch(r"sm_(\d+)(\d)(a?)", arch)
    if m is None or not cuda.has_gpu():
        return
    want = (int(m.group(1)), int(m.group(2)))
    have = _compute_capability(tvm.cuda(0))
    if have < want or (m.group(3) and have != want):
        raise KilnError(f"{where} was built for {target} ({arch}) and this GPU is compute "
                        f"capability {have[0]}.{have[1]}: compile it for this GPU")


def _compute_capability(device: Any) -> tuple[int, int]:
    major, minor = str(device.compute_version).split(".")
    return int(major), int(minor)
