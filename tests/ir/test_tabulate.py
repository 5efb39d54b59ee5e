"""Byte functions tabulated: a QDQ activation chain from one int8 / uint8 tensor to another
becomes one ``table_lookup`` whose 256 entries the ops' references computed, so the optimized
graph gives the same bytes as the chain, on every byte value; and the lookup kernels (AVX-512
VBMI permutes, the gather elsewhere) give the table's entries, on odd sizes."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln import ops
from kiln.codegen.lower import Template
from kiln.ir.passes import optimize
from kiln.target import get_target

DTYPES = ("uint8", "int8")


def _scalar(g: kiln.Graph, value: float | int, dtype: str) -> kiln.Value:
    return g.constant(np.array(value, dtype))


def _q(g: kiln.Graph, v: kiln.Value, scale: float, zp: int, dtype: str) -> kiln.Value:
    (out,) = g.add("quantize", [v, _scalar(g, scale, "float32"), _scalar(g, zp, dtype)],
                   dtype=dtype)
    return out


def _dq(g: kiln.Graph, v: kiln.Value, scale: float, zp: int) -> kiln.Value:
    (out,) = g.add("dequantize", [v, _scalar(g, scale, "float32"), _scalar(g, zp, v.dtype.np)],
                   dtype="float32")
    return out


def hardswish_qdq(g: kiln.Graph, x: kiln.Value, dtype: str) -> tuple[kiln.Value, kiln.Value]:
    """HardSwish as a QDQ model spells it: x + 3 quantized, x times that quantized, divided by
    6 quantized; every step at its own scale. Returns (the float x, the result)."""
    z = 0 if dtype == "uint8" else -3
    t = _dq(g, x, 0.0557, z + 125 if dtype == "uint8" else z)
    c = _q(g, ops.add(t, 3.0), 0.0235, z, dtype)
    m = _q(g, ops.mul(t, _dq(g, c, 0.0235, z)), 0.1793, z + 13, dtype)
    return t, _q(g, ops.div(_dq(g, m, 0.1793, z + 13), 6.0), 0.0299, z + 13, dtype)


def every_byte(shape: tuple[int, ...], dtype: str, seed: int = 0) -> np.ndarray:
    """A tensor holding each of the 256 byte values at least once, shuffled."""
    n = int(np.prod(shape))
    bits = np.random.default_rng(seed).permutation(np.arange(n) % 256).astype(np.uint8)
    return bits.view(dtype).reshape(shape)


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_qdq_hardswish_becomes_one_lookup_with_the_chains_bytes(dtype: str) -> None:
    g = kiln.Graph()
    x = g.input("x", (1, 5, 7, 9), dtype)
    g.output(hardswish_qdq(g, x, dtype)[1])
    opt = optimize(g)
    assert [n.op.name for n in opt.nodes] == ["table_lookup"]
    feeds = {"x": every_byte((1, 5, 7, 9), dtype)}
    want = kiln.run_reference(g, feeds)[0]
    np.testing.assert_array_equal(kiln.run_reference(opt, feeds)[0], want)
    for target in ("x86", "x86-avx512"):       # VBMI permutes (where the CPU has them), gather
        np.testing.assert_array_equal(kiln.compile(g, target)(**feeds)[0], want)


def test_a_chain_whose_float_value_is_read_elsewhere_stays() -> None:
    """The dequantized x is also a graph output: the chain through it stays as written; only
    its tail (divide by 6, from the last bytes on) becomes a table."""
    g = kiln.Graph()
    x = g.input("x", (4, 96), "uint8")
    t, y = hardswish_qdq(g, x, "uint8")
    g.output(y, t)
    opt = optimize(g)
    assert {"add", "mul"} <= {n.op.name for n in opt.nodes}
    (lookup,) = [n for n in opt.nodes if n.op.name == "table_lookup"]
    assert lookup.inputs[0].producer.op.name == "quantize"
    feeds = {"x": every_byte((4, 96), "uint8")}
    got = kiln.compile(g)(**feeds)
    for a, b in zip(got, kiln.run_reference(g, feeds), strict=True):
        np.testing.assert_array_equal(a, b)


def test_what_is_not_a_byte_function_is_left_alone() -> None:
    """A second tensor input, a tensor under 256 elements, a single op: no lookup."""
    g = kiln.Graph()
    x = g.input("x", (16, 20), "uint8")
    other = g.input("other", (16, 20), "float32")
    small = g.input("small", (3, 80), "uint8")
    y1 = _q(g, ops.mul(_dq(g, x, 0.1, 3), other), 0.2, 0, "uint8")
    y2 = hardswish_qdq(g, small, "uint8")[1]
    (y3,) = g.add("cast", [x], dtype="int32")
    g.output(y1, y2, y3)
    assert "table_lookup" not in {n.op.name for n in optimize(g).nodes}


@pytest.mark.parametrize("shape", [(3, 37), (1, 200, 2, 96), (4161,)])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("out", DTYPES)
def test_table_lookup_kernels(shape: tuple[int, ...], dtype: str, out: str) -> None:
    """A tail only (111 bytes), whole 64-byte vectors, several tasks and a tail: every entry
    of a random table read through the index's bits, on both kernels."""
    g = kiln.Graph()
    x = g.input("x", shape, dtype)
    table = g.constant(np.random.default_rng(1).integers(0, 256, 256).astype(np.uint8)
                       .view(out))
    (y,) = g.add("table_lookup", [x, table])
    g.output(y)
    feeds = {"x": every_byte(shape, dtype, seed=2)}
    want = table.data[feeds["x"].astype(np.uint8)]
    np.testing.assert_array_equal(kiln.run_reference(g, feeds)[0], want)
    c = kiln.compile_stages(g, "x86")
    assert c.kernels[0].template is (Template.TABLE_LOOKUP if c.target.vbmi
                                     else Template.INJECTIVE)
    for target in ("x86", "x86-avx512"):
        np.testing.assert_array_equal(kiln.compile(g, target)(**feeds)[0], want)
    assert not get_target("x86-avx512").vbmi


def test_table_lookup_checks_its_operands() -> None:
    g = kiln.Graph()
    with pytest.raises(kiln.ModelError, match="int8 or uint8 index"):
        g.add("table_lookup", [g.input("f", (4,), "float32"),
                               g.constant(np.zeros(256, np.uint8))])
    with pytest.raises(kiln.ModelError, match="256 entries"):
        g.add("table_lookup", [g.input("b", (4,), "uint8"), g.constant(np.zeros(16, np.uint8))])
