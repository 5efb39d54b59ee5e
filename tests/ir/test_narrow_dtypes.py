"""The narrow types: bfloat16, float8 (e4m3fn, e4m3fnuz, e5m2, e5m2fnuz), float4_e2m1fn,
int4/uint4 and int2/uint2. Casts to and from them compiled for x86 must match ml_dtypes bit for
bit (the reference interpreter's conversion) on values that hit every rounding case: ties,
subnormals, overflow, infinities, NaN and signed zeros; quantize / dequantize use them as ONNX
does; other ops refuse bit types by name."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import kiln
from kiln.errors import ModelError
from kiln.ir.dtype import DType
from kiln.ir.interpreter import run_reference

FLOAT8 = ["float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz"]
NARROW_FLOATS = [*FLOAT8, "float4_e2m1fn"]
NARROW_INTS = ["int4", "uint4", "int2", "uint2"]


def _cast_graph(src: str, dst: str, n: int, saturate: bool = True) -> kiln.Graph:
    g = kiln.Graph("cast")
    (y,) = g.add("cast", [g.input("x", (n,), src)], dtype=dst, saturate=saturate)
    g.output(y)
    return g


def _bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint8) if a.dtype.itemsize == 1 else a.view(np.uint16)


def _hard_floats(dtype: str) -> np.ndarray:
    """Every finite value of ``dtype``, the midpoints between neighbours (ties), values just
    either side of them, far out-of-range and tiny values, infinities, NaN and -0 (an odd
    count: 2 * codes + 14 elements)."""
    codes = np.arange(256 if dtype in FLOAT8 else 16, dtype=np.uint8)
    vals = codes.view(getattr(ml_dtypes, dtype)) if dtype in FLOAT8 else \
        np.array(codes, np.uint8).view(ml_dtypes.float4_e2m1fn)
    f = np.unique(vals.astype(np.float32)[np.isfinite(vals.astype(np.float32))])
    mids = (f[:-1].astype(np.float64) + f[1:]) / 2
    extra = [np.inf, -np.inf, np.nan, -0.0, 1e30, -1e30, 1e-30, -1e-30, 3e-7, 1e5, -7e4,
             float(f.max()) * 1.06, float(f.min()) * 1.06, 0.2]
    out = np.concatenate([f, mids, np.nextafter(mids, np.inf), np.nextafter(mids, -np.inf),
                          extra]).astype(np.float32)
    return out


@pytest.mark.parametrize("saturate", [True, False])
@pytest.mark.parametrize("dtype", NARROW_FLOATS)
def test_float32_to_narrow_float_matches_ml_dtypes_bit_for_bit(dtype: str,
                                                                saturate: bool) -> None:
    x = _hard_floats(dtype)
    g = _cast_graph("float32", dtype, x.size, saturate)
    (want,) = run_reference(g, {"x": x})
    (got,) = kiln.compile(g, "x86")(x=x)
    assert got.dtype == want.dtype == np.dtype(getattr(ml_dtypes, dtype))
    mismatch = np.flatnonzero(_bits(got) != _bits(want))
    assert mismatch.size == 0, [(x[i], _bits(got)[i], _bits(want)[i]) for i in mismatch[:5]]


def test_saturate_clamps_and_its_absence_overflows() -> None:
    x = np.array([1e4, -1e4, np.inf], np.float32)
    sat = run_reference(_cast_graph("float32", "float8_e4m3fn", 3, True), {"x": x})[0]
    raw = run_reference(_cast_graph("float32", "float8_e4m3fn", 3, False), {"x": x})[0]
    np.testing.assert_array_equal(sat.astype(np.float32), [448, -448, 448])
    assert np.isnan(raw.astype(np.float32)).all()


@pytest.mark.parametrize("dtype", NARROW_FLOATS)
def test_narrow_float_to_float32_and_float16_is_exact(dtype: str) -> None:
    n = 256 if dtype in FLOAT8 else 16
    x = np.arange(n, dtype=np.uint8).view(getattr(ml_dtypes, dtype))
    for to in ("float32", "float16"):
        g = _cast_graph(dtype, to, n)
        (got,) = kiln.compile(g, "x86")(x=x)
        want = x.astype(to)
        np.testing.assert_array_equal(got, want)   # NaNs in the same places
        finite = ~np.isnan(want)                     # and zeros of the same sign
        np.testing.assert_array_equal(np.signbit(got)[finite], np.signbit(want)[finite])


@pytest.mark.parametrize("dtype", NARROW_INTS)
def test_narrow_int_casts_wrap_like_ml_dtypes(dtype: str) -> None:
    x = np.array([-9.5, -8.6, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 6.7, 7.5, 8, 9, 15, 17, 100],
                 np.float32)
    g = _cast_graph("float32", dtype, x.size)
    (got,) = kiln.compile(g, "x86")(x=x)
    np.testing.assert_array_equal(got, x.astype(getattr(ml_dtypes, dtype)))
    ints = np.arange(-40, 41, dtype=np.int64)
    g = _cast_graph("int64", dtype, ints.size)
    (got,) = kiln.compile(g, "x86")(x=ints)
    np.testing.assert_array_equal(got, ints.astype(getattr(ml_dtypes, dtype)))
    back = got
    g = _cast_graph(dtype, "float32", back.size)
    np.testing.assert_array_equal(kiln.compile(g, "x86")(x=back)[0], back.astype(np.float32))


def test_bfloat16_rounds_half_to_even_and_computes() -> None:
    x = np.array([1.00390625, 1.01171875, -3.3, 1e38, np.inf, np.nan, 0.1, 7.0, 65504.0],
                 np.float32)
    g = kiln.Graph("bf16")
    b = g.add("cast", [g.input("x", (9,), "float32")], dtype="bfloat16")[0]
    y = g.add("mul", [b, b])[0]
    g.output(b)
    g.output(y)
    got = kiln.compile(g, "x86")(x=x)
    want = run_reference(g, {"x": x})
    np.testing.assert_array_equal(_bits(got[0]), _bits(want[0]))
    np.testing.assert_allclose(got[1].astype(np.float32), want[1].astype(np.float32),
                               rtol=2**-7)


@pytest.mark.parametrize("dtype", ["float8_e4m3fn", "float8_e5m2", "int4", "uint4"])
def test_quantize_dequantize_round_trip(dtype: str) -> None:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((5, 13)) * 4).astype(np.float32)
    dt = DType(dtype)
    g = kiln.Graph("q")
    xv = g.input("x", (5, 13), "float32")
    scale = g.constant(np.array(0.5, np.float32), name="s")
    zp = g.constant(np.zeros((), dt.np), name="z", dtype=dt)
    (q,) = g.add("quantize", [xv, scale, zp], dtype=dtype)
    (d,) = g.add("dequantize", [q, scale, zp], dtype="float32")
    g.output(q)
    g.output(d)
    got = kiln.compile(g, "x86")(x=x)
    want = run_reference(g, {"x": x})
    np.testing.assert_array_equal(_bits(got[0]) if dt.is_float else got[0], _bits(want[0])
                                  if dt.is_float else want[0])
    np.testing.assert_array_equal(got[1], want[1])
    if not dt.is_float:                  # saturated to the type's range, in steps of 0.5
        lo, hi = ml_dtypes.iinfo(dt.np).min, ml_dtypes.iinfo(dt.np).max
        np.testing.assert_array_equal(got[1], np.clip(np.rint(x / 0.5), lo, hi) * 0.5)


def test_arithmetic_on_a_bit_type_is_refused_by_name() -> None:
    g = kiln.Graph("bad")
    x = g.input("x", (4,), "float8_e4m3fn")
    with pytest.raises(ModelError, match=r"op add does not take float8_e4m3fn.*Cast"):
        g.add("add", [x, x])


def test_library_checks_narrow_input_dtypes_by_name() -> None:
    lib = kiln.compile(_cast_graph("float8_e5m2", "float32", 3), "x86")
    with pytest.raises(kiln.InputError, match="input 'x'.*float8_e5m2"):
        lib(x=np.zeros(3, np.uint8))
