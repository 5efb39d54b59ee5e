"""Named targets: each compiles, runs on this CPU (an AVX-512 machine runs AVX2 code too) and
uses its ISA's vector registers; reserved and unknown names are clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import tvm

import kiln
from kiln import nn
from kiln.target import Isa, get_target, host_target
from kiln.testing import assert_matches_reference


def mlp() -> kiln.Graph:
    g = kiln.Graph("mlp")
    x = g.input("x", (5, 37), "float32")
    g.output(nn.MLP([37, 64, 10], rng=np.random.default_rng(0))(x))
    return g


@pytest.mark.parametrize("name,register", [("x86-avx2", "ymm"), ("x86-avx512", "zmm")])
def test_fixed_targets(name: str, register: str) -> None:
    if name == "x86-avx512" and host_target().isa is not Isa.AVX512:
        pytest.skip("this CPU cannot run AVX-512 code")
    assert_matches_reference(mlp(), rtol=1e-5, atol=1e-5, target=name)
    c = kiln.compile_stages(mlp(), target=name)
    gemm = next(k for k in c.kernels if "dense" in k.name)
    asm = tvm.compile(tvm.IRModule({gemm.name: gemm.func}),
                      target=tvm.target.Target(c.target.tvm_target)).mod.inspect_source("asm")
    assert any("vfmadd" in line and register in line for line in asm.splitlines())


def test_host_target_is_detected() -> None:
    t = get_target("x86")
    assert t.name == "x86" and t.mcpu and t.isa in (Isa.AVX2, Isa.AVX512)


@pytest.mark.parametrize("name,message", [("riscv", "unknown target"),
                                          ("arm-sve", "unknown target")])
def test_unavailable_targets(name: str, message: str) -> None:
    with pytest.raises(kiln.KilnError, match=message):
        kiln.compile(mlp(), target=name)
