"""Named compile targets, mapped to TVM target dicts in this one place.

x86 schedules read the ``Isa`` (vector width, register count); CUDA schedules the ``arch``;
codegen reads ``tvm_target`` / ``tvm()``.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from enum import Enum
from functools import cache
from typing import Any

from kiln.errors import KilnError


class Isa(Enum):
    AVX2 = "avx2"        # 16 ymm registers of 256 bits
    AVX512 = "avx512"    # 32 zmm registers of 512 bits
    NEON = "neon"        # 32 q registers of 128 bits (aarch64)

    @property
    def vector_bits(self) -> int:
        return {Isa.AVX2: 256, Isa.AVX512: 512, Isa.NEON: 128}[self]

    @property
    def vector_registers(self) -> int:
        return {Isa.AVX2: 16, Isa.AVX512: 32, Isa.NEON: 32}[self]

    def lanes(self, dtype: str = "float32") -> int:
        """Elements of ``dtype`` in one vector register."""
        bits = 8 if dtype in ("bool", "int8", "uint8") else int("".join(c for c in dtype
                                                                     if c.isdigit()))
        return self.vector_bits // bits


@dataclass(frozen=True)
class Target:
    """A kiln target: its name, and either (x86) its ISA class and the LLVM CPU TVM compiles
    for, ``vnni`` when the CPU has AVX-512 VNNI (``vpdpbusd``, the int8 dot product the int8
    GEMM uses), ``vbmi`` when it has AVX-512 VBMI (``vpermi2b``, a byte table lookup), or
    (CUDA) the GPU architecture, ``sm_90``."""

    name: str
    isa: Isa | None
    mcpu: str = ""
    vnni: bool = False
    vbmi: bool = False
    arch: str = ""
    mattr: tuple[str, ...] = ()     # arm: LLVM features ("+neon", "+dotprod")

    @property
    def is_cuda(self) -> bool:
        return bool(self.arch)

    @property
    def is_arm(self) -> bool:
        """aarch64: cross-compiled here (the library links with aarch64-linux-gnu-gcc)."""
        return self.isa is Isa.NEON

    @property
    def int8_dot(self) -> bool:
        """An int8 dot-product instruction the int8 GEMM uses: vpdpbusd (AVX-512 VNNI) or
        sdot (aarch64 dotprod)."""
        return self.vnni or "+dotprod" in self.mattr

    @property
    def runs_here(self) -> bool:
        """Whether this machine can run the target's libraries (a GPU is checked at load)."""
        return not self.is_arm or platform.machine() in ("aarch64", "arm64")

    @property
    def tvm_target(self) -> dict:
        if self.is_cuda:
            return {"kind": "cuda", "arch": self.arch}
        if self.is_arm:
            return {"kind": "llvm", "mtriple": ARM_TRIPLE, "mcpu": self.mcpu,
                    "mattr": list(self.mattr)}
        # LLVM's tuning for Intel's AVX-512 CPUs ("prefer-256-bit") splits 512-bit vectors
        # outside GEMMs into ymm halves. Turning it off made exp over 4096x1024 1.5x faster on
        # one core, but LLVM then miscompiles a loop it vectorises itself into 512-bit gathers
        # with a select (onnx's test_rotary_embedding_3d_input: wrong lanes, NaNs). AMD's
        # znver4 tuning leaves it off, so kiln turns it on for every AVX-512 CPU.
        if self.isa is Isa.AVX512:
            return {"kind": "llvm", "mcpu": self.mcpu, "mattr": [PREFER_256_BIT]}
        return {"kind": "llvm", "mcpu": self.mcpu}

    def tvm(self) -> Any:
        """The TVM target; a CUDA one with its host (the CPU code that launches kernels)."""
        import tvm
        if self.is_cuda:
            return tvm.target.Target(self.tvm_target, host={"kind": "llvm"})
        return tvm.target.Target(self.tvm_target)

    def __str__(self) -> str:
        if self.is_cuda:
            return f"{self.name} ({self.arch})"
        return f"{self.name} ({self.mcpu}, {self.isa.value})"


@cache
def host_target() -> Target:
    """The machine kiln runs on: its CPU name and whether it has AVX-512."""
    import tvm
    from tvm.target import codegen

    cpu = str(codegen.llvm_get_system_cpu())
    feats = {str(f) for f in codegen.llvm_get_cpu_features(
        tvm.target.Target({"kind": "llvm", "mcpu": cpu}))}
    if "avx512f" in feats:
        return Target("x86", Isa.AVX512, cpu, vnni="avx512vnni" in feats,
                      vbmi="avx512vbmi" in feats)
    if "avx2" in feats and "fma" in feats:
        return Target("x86", Isa.AVX2, cpu)
    raise KilnError(f"this CPU ({cpu}) has neither AVX2+FMA nor AVX-512; kiln's x86 schedules "
                    "need one of them")


FIXED_TARGETS = {
    "x86-avx2": Target("x86-avx2", Isa.AVX2, "haswell"),
    "x86-avx512": Target("x86-avx512", Isa.AVX512, "skylake-avx512"),
    # sm_90a: Hopper's arch-specific features (wgmma), which sm_90 code may not use
    "cuda": Target("cuda", None, arch="sm_90a"),           # H100, H200
    "cuda-sm90": Target("cuda-sm90", None, arch="sm_90a"),
    "cuda-sm80": Target("cuda-sm80", None, arch="sm_80"),  # A100
    # any ARMv8-A core (Raspberry Pi 4, Graviton 1); dotprod: ARMv8.2-A+ (Pi 5, Graviton 2)
    "arm-neon": Target("arm-neon", Isa.NEON, "cortex-a72", mattr=("+neon",)),
    "arm-neon-dotprod": Target("arm-neon-dotprod", Isa.NEON, "cortex-a76",
                               mattr=("+neon", "+dotprod")),
}
ARM_TRIPLE = "aarch64-linux-gnu"
PREFER_256_BIT = "+prefer-256-bit"   # see Target.tvm_target
ARM_CC = "aarch64-linux-gnu-gcc"     # Debian's gcc-aarch64-linux-gnu links arm libraries
TARGET_NAMES = ("x86", *FIXED_TARGETS)


def get_target(name: str | Target) -> Target:
    """Resolve a target name: "x86" (this CPU), "x86-avx2", "x86-avx512", "arm-neon",
    "arm-neon-dotprod" (aarch64, cross-compiled), "cuda" (sm_90a),
    "cuda-sm90" or "cuda-sm80"."""
    if isinstance(name, Target):
        return name
    if name == "x86":
        return host_target()
    if name in FIXED_TARGETS:
        return FIXED_TARGETS[name]
    raise KilnError(f"unknown target {name!r}; available targets: {', '.join(TARGET_NAMES)}")
