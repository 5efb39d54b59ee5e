"""Named targets: each compiles, runs on this CPU (an AVX-512 machine runs AVX2 code too) and
uses its ISA's vector registers; reserved and unknown names are clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import tvm

import kiln
from kiln import nn
from kiln.codegen.compat import host_features, required_features
from kiln.target import PREFER_256_BIT, Isa, Target, get_target, host_target
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


def rotary_embedding() -> kiln.Graph:
    """What the ONNX importer makes of RotaryEmbedding on a [2, 3, 32] input with 4 heads:
    ``x * [cos, cos] + rotate_half(x) * [-sin, sin]``, the caches gathered by position."""
    rng = np.random.default_rng(0)
    g = kiln.Graph("rotary")
    x = g.input("x", (2, 3, 32), "float32")
    pos = g.input("pos", (2, 3), "int64")
    heads = g.add("reshape", [x], shape=[2, 3, 4, 8])[0]
    tables = []
    for name, sign in (("cos", 1), ("sin", -1)):
        cache = g.constant(rng.standard_normal((50, 4)).astype(np.float32), name=name)
        half = g.add("reshape", [g.add("gather", [cache, pos], axis=0)[0]],
                     shape=[2, 3, 1, 4])[0]
        first = half if sign > 0 else g.add("neg", [half])[0]
        tables.append(g.add("concat", [first, half], axis=3)[0])
    lo, hi = (g.add("slice", [heads], axes=[3], starts=[s], ends=[s + 4], steps=[1])[0]
              for s in (0, 4))
    rotated = g.add("concat", [hi, lo], axis=3)[0]
    y = g.add("add", [g.add("mul", [heads, tables[0]])[0],
                      g.add("mul", [rotated, tables[1]])[0]])[0]
    g.output(g.add("reshape", [y], shape=[2, 3, 32])[0])
    return g


def test_avx512_targets_prefer_256_bit_vectors_where_llvm_vectorises() -> None:
    """With 512-bit vectors preferred (znver4's LLVM tuning), LLVM vectorised the rotary
    embedding's scalar loop into gathers with a select and read the wrong lanes (NaNs); kiln
    sets prefer-256-bit on every AVX-512 target. Run where this CPU can run znver4 code."""
    zen4 = Target("x86", Isa.AVX512, "znver4")
    assert PREFER_256_BIT in zen4.tvm_target["mattr"]
    assert PREFER_256_BIT in get_target("x86-avx512").tvm_target["mattr"]
    if required_features("znver4") - host_features():
        pytest.skip("this CPU cannot run znver4 code")
    g = rotary_embedding()
    feeds = {"x": np.random.default_rng(1).standard_normal((2, 3, 32)).astype(np.float32),
             "pos": np.random.default_rng(2).integers(0, 50, (2, 3))}
    (got,) = kiln.compile(g, zen4)(**feeds)
    np.testing.assert_allclose(got, kiln.run_reference(g, feeds)[0], rtol=1e-5, atol=1e-5)
