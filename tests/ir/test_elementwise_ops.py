"""Elementwise ops compiled for x86 against their NumPy references: math and activations on
odd shapes (one multi-output kernel per input domain, to keep compiles few), the fastmath
polynomials' accuracy over wide ranges and at special values, integer semantics (division,
mod, shifts, bitwise ops) on every integer dtype, casts between every pair of dtypes, and
activations fused as GEMM epilogues."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln.errors import ModelError
from kiln.ir.dtype import DType
from kiln.ir.passes.fuse import fuse_groups
from kiln.testing import assert_matches_reference

ODD = (3, 5, 37)     # 37: not a multiple of 8 or 16 lanes
INTS = ["int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"]
ALL = ["float16", "float32", "float64", "bool", *INTS]


def graph_of(ops: list[tuple[str, dict]], shape, dtype: str = "float32") -> kiln.Graph:
    """One input x, one output per (op, attrs), all computed from x."""
    g = kiln.Graph("t")
    x = g.input("x", shape, dtype)
    g.output(*(g.add(op, [x], **attrs)[0] for op, attrs in ops))
    return g


def compiled(g: kiln.Graph, **feeds: np.ndarray) -> list[np.ndarray]:
    return kiln.compile(g)(**feeds)


# -- unary math on odd shapes, each op on its domain ---------------------------------------------
DOMAINS = {
    "real": ([("relu", {}), ("neg", {}), ("abs", {}), ("sign", {}), ("exp", {}), ("tanh", {}),
              ("sigmoid", {}), ("erf", {}), ("floor", {}), ("ceil", {}), ("round", {}),
              ("sin", {}), ("cos", {}), ("tan", {}), ("atan", {}), ("sinh", {}), ("cosh", {}),
              ("asinh", {}), ("softplus", {}), ("softsign", {}), ("mish", {}),
              ("hard_swish", {}), ("leaky_relu", {"alpha": 0.1}), ("elu", {"alpha": 0.7}),
              ("celu", {"alpha": 1.3}), ("selu", {}), ("thresholded_relu", {"alpha": 0.5}),
              ("hard_sigmoid", {"alpha": 0.3, "beta": 0.4}), ("swish", {"alpha": 1.5}),
              ("shrink", {"bias": 0.25, "lambd": 0.6})], (-4.0, 4.0)),
    "unit": ([("asin", {}), ("acos", {}), ("atanh", {})], (-0.999, 0.999)),
    "positive": ([("log", {}), ("sqrt", {}), ("rsqrt", {}), ("reciprocal", {})], (0.01, 50.0)),
    "above_one": ([("acosh", {})], (1.0, 60.0)),
}


@pytest.mark.parametrize("domain", DOMAINS)
def test_unary_math_odd_shape(domain: str) -> None:
    ops, (lo, hi) = DOMAINS[domain]
    x = np.random.default_rng(0).uniform(lo, hi, ODD).astype(np.float32)
    x.flat[:4] = [lo, hi, 0.5 * (lo + hi), 2.5 if hi > 2.5 else lo]   # round's half-to-even
    assert_matches_reference(graph_of(ops, ODD), {"x": x}, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype,rtol", [("float16", 1e-3), ("float64", 1e-12)])
def test_unary_math_other_float_dtypes(dtype: str, rtol: float) -> None:
    ops = [("exp", {}), ("log", {}), ("sin", {}), ("atan", {}), ("tanh", {}), ("erf", {}),
           ("softplus", {}), ("mish", {}), ("elu", {"alpha": 1.0}), ("is_nan", {})]
    x = np.random.default_rng(1).uniform(0.05, 4, (7, 9)).astype(dtype)
    assert_matches_reference(graph_of(ops, (7, 9), dtype), {"x": x}, rtol=rtol, atol=rtol)


# -- fastmath accuracy ----------------------------------------------------------------------------
def _logu(lo: float, hi: float, n: int) -> np.ndarray:
    return np.exp(np.random.default_rng(2).uniform(np.log(lo), np.log(hi), n))


WIDE = {   # op -> (inputs, float64 reference)
    "exp": (np.linspace(-103, 88.7, 4096), np.exp),
    "log": (np.concatenate([_logu(1e-44, 3e38, 4000), np.linspace(0.5, 2, 96)]), np.log),
    "sin": (np.linspace(-1e4, 1e4, 4096), np.sin),
    "cos": (np.linspace(-1e4, 1e4, 4096), np.cos),
    "tan": (np.linspace(-10, 10, 4096), np.tan),
    "asin": (np.linspace(-1, 1, 4096), np.arcsin),
    "acos": (np.linspace(-1, 1, 4096), np.arccos),
    "atan": (np.concatenate([_logu(1e-6, 1e8, 2048), -_logu(1e-6, 1e8, 2048)]), np.arctan),
    "sinh": (np.concatenate([np.linspace(-89, 89, 4000), _logu(1e-7, 1, 96)]), np.sinh),
    "cosh": (np.linspace(-89, 89, 4096), np.cosh),
    "asinh": (np.concatenate([_logu(1e-7, 1e30, 2048), -_logu(1e-7, 1e30, 2048)]), np.arcsinh),
    "acosh": (1 + _logu(1e-7, 1e30, 4096), np.arccosh),
    "atanh": (np.concatenate([_logu(1e-7, 0.9999, 2048), -_logu(1e-7, 0.9999, 2048)]),
              np.arctanh),
    "tanh": (np.linspace(-12, 12, 4096), np.tanh),
    "softplus": (np.linspace(-100, 100, 4096), lambda x: np.logaddexp(0, x)),
    "mish": (np.linspace(-60, 60, 4096), lambda x: x * np.tanh(np.logaddexp(0, x))),
}


@pytest.mark.parametrize("op", WIDE)
def test_fastmath_relative_error_over_wide_ranges(op: str) -> None:
    """Within 5e-7 of the float64 value, relative (absolute for results below 1 in sin, cos:
    their zeros make any relative bound meaningless), over the whole range each function is
    used on: a few float32 ulps."""
    xs, ref = WIDE[op]
    x = xs.astype(np.float32)
    got = compiled(graph_of([(op, {})], x.shape), x=x)[0].astype(np.float64)
    want = ref(x.astype(np.float64))
    floor = 1.0 if op in ("sin", "cos") else 1e-30
    err = np.abs(got - want) / np.maximum(np.abs(want), floor)
    assert err.max() < 5e-7, (op, float(x[np.argmax(err)]), float(err.max()))


def test_fastmath_special_values() -> None:
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, 88.8, -103.0, -110.0, 1.0, -1.0,
                  0.5, 3e38], np.float32)
    ops = ["exp", "log", "sinh", "cosh", "asinh", "acosh", "atanh", "atan", "asin", "acos",
           "softplus", "sin", "cos", "round", "sign", "relu"]
    got = compiled(graph_of([(op, {}) for op in ops], x.shape), x=x)
    with np.errstate(all="ignore"):
        want = kiln.run_reference(graph_of([(op, {}) for op in ops], x.shape), {"x": x})
    for op, out, ref in zip(ops, got, want, strict=True):
        keep = np.abs(x) < 1e30 if op in ("sin", "cos") else slice(None)   # no reduction there
        np.testing.assert_allclose(out[keep], ref[keep], rtol=1e-6, atol=1e-37,
                                   equal_nan=True, err_msg=op)


def test_is_inf_detects_each_sign() -> None:
    x = np.array([np.inf, -np.inf, np.nan, 0.0, 3e38, -3e38, 1.0], np.float32)
    ops = [("is_inf", {"detect_positive": p, "detect_negative": n})
           for p in (True, False) for n in (True, False)] + [("is_nan", {})]
    assert_matches_reference(graph_of(ops, x.shape), {"x": x})


# -- integer semantics ----------------------------------------------------------------------------
def binary_graph(op: str, dtype: str, shapes=((4, 19), (19,)), **attrs) -> kiln.Graph:
    g = kiln.Graph("t")
    a, b = g.input("a", shapes[0], dtype), g.input("b", shapes[1], dtype)
    g.output(g.add(op, [a, b], **attrs)[0])
    return g


def int_values(dtype: str, shape, lo: int = -9, hi: int = 10, seed: int = 0) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.random.default_rng(seed).integers(max(lo, info.min), min(hi, info.max), shape,
                                                dtype=dtype)


@pytest.mark.parametrize("dtype", INTS)
def test_integer_arithmetic_every_int_dtype(dtype: str) -> None:
    """add/sub/mul wrap, div truncates (x / 0 = 0), both mods (x mod 0 = 0), max/min,
    comparisons and bitwise ops, on 0-3 ints against the extremes of the dtype."""
    info = np.iinfo(dtype)
    a = int_values(dtype, (4, 19), seed=1)
    a[0, :4] = [info.min, info.max, info.max - 1, 0]
    b = int_values(dtype, (19,), seed=2)
    b[:3] = [0, 1, 0]
    g = kiln.Graph("t")
    x, y = g.input("a", a.shape, dtype), g.input("b", b.shape, dtype)
    ops = [("add", {}), ("sub", {}), ("mul", {}), ("div", {}), ("maximum", {}),
           ("minimum", {}), ("mod", {"fmod": False}), ("mod", {"fmod": True}), ("equal", {}),
           ("less", {}), ("less_equal", {}), ("greater", {}), ("greater_equal", {}),
           ("bitwise_and", {}), ("bitwise_or", {}), ("bitwise_xor", {}), ("prelu", {})]
    outs = [g.add(op, [x, y], **at)[0] for op, at in ops]
    outs += [g.add(op, [x])[0] for op in ("bitwise_not", "abs", "sign", "relu")]
    g.output(*outs)
    assert_matches_reference(g, {"a": a, "b": b})


@pytest.mark.parametrize("dtype", INTS)
def test_shifts_every_int_dtype(dtype: str) -> None:
    """In-range counts shift; counts past the width (or negative) give 0 left and the sign
    fill right, instead of LLVM's poison."""
    bits = np.dtype(dtype).itemsize * 8
    a = int_values(dtype, (3, 37), -100, 100, seed=3)
    b = np.resize(np.arange(-2, bits + 3), 37)
    b = b.astype(dtype) if dtype.startswith("int") else np.clip(b, 0, None).astype(dtype)
    for op in ("shift_left", "shift_right"):
        assert_matches_reference(binary_graph(op, dtype, (a.shape, b.shape)), {"a": a, "b": b})


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("fmod", [False, True])
def test_float_mod(dtype: str, fmod: bool) -> None:
    """C's fmod (dividend's sign) and Python's mod (divisor's sign), with quotients that
    round up to an integer, infinite divisors and zero divisors."""
    a = np.array([-4.3, 7.2, 5.0, 4.3, -7.2, 8.0, 0.3, -3.0, 3.0, 1.0, np.inf, 1e6, 5.5],
                 dtype)
    b = np.array([2.1, -3.4, 8.0, -2.1, 3.4, 5.0, 0.1, np.inf, -np.inf, 0.0, 2.0, 0.7, -1.25],
                 dtype)
    g = binary_graph("mod", dtype, (a.shape, b.shape), fmod=fmod)
    tol = 1e-3 if dtype == "float16" else 1e-6
    with np.errstate(all="ignore"):
        got = compiled(g, a=a, b=b)[0]
        want = kiln.run_reference(g, {"a": a, "b": b})[0]
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol, equal_nan=True)


def test_logical_ops_and_bool_equality() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.random((5, 37)) < 0.5, rng.random((37,)) < 0.5
    g = kiln.Graph("t")
    x, y = g.input("a", a.shape, "bool"), g.input("b", b.shape, "bool")
    g.output(*(g.add(op, [x, y])[0] for op in ("logical_and", "logical_or", "logical_xor",
                                                "equal")), g.add("logical_not", [x])[0])
    assert_matches_reference(g, {"a": a, "b": b})


def test_dtype_checks_name_the_op() -> None:
    g = kiln.Graph("t")
    f, i = g.input("f", (3,), "float32"), g.input("i", (3,), "int32")
    with pytest.raises(ModelError, match="sin needs a floating-point input, got int32"):
        g.add("sin", [i])
    with pytest.raises(ModelError, match="bitwise_and needs an integer input"):
        g.add("bitwise_and", [f, f])
    with pytest.raises(ModelError, match="logical_or needs a bool input"):
        g.add("logical_or", [i, i])


# -- casts ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("src", ALL)
def test_cast_every_pair(src: str) -> None:
    """One kernel casting ``src`` to every dtype, on values every dtype holds (0..100, with
    fractions for float sources: they truncate toward zero)."""
    rng = np.random.default_rng(5)
    x = rng.uniform(0, 100, (3, 37))
    x = (x > 50) if src == "bool" else x.astype(src)
    g = graph_of([("cast", {"dtype": dst}) for dst in ALL], x.shape, src)
    assert_matches_reference(g, {"x": x}, rtol=1e-3, atol=1e-3)


def test_cast_float_to_signed_int_truncates_and_to_bool_is_nonzero() -> None:
    x = np.array([-2.7, -0.5, 0.0, -0.0, 0.5, 2.7, 126.9, -127.9, np.nan, np.inf], np.float32)
    ops = [("cast", {"dtype": d}) for d in ("int8", "int16", "int32", "int64")]
    g = graph_of(ops[:4], x[:8].shape)
    assert_matches_reference(g, {"x": x[:8]})
    out = compiled(graph_of([("cast", {"dtype": "bool"})], x.shape), x=x)[0]
    np.testing.assert_array_equal(out, [True, True, False, False, True, True, True, True,
                                        True, True])


def test_new_unsigned_dtypes_round_trip_through_arithmetic() -> None:
    for dt in ("uint16", "uint32", "uint64"):
        assert DType(dt).is_unsigned and DType(dt).bits == np.dtype(dt).itemsize * 8
        a = int_values(dt, (3, 37), 0, 1000, seed=6)
        assert_matches_reference(binary_graph("mul", dt, (a.shape, (37,))),
                                 {"a": a, "b": a[0]})


# -- fusion: activations are GEMM epilogues --------------------------------------------------------
@pytest.mark.parametrize("op,attrs", [("leaky_relu", {"alpha": 0.2}), ("elu", {"alpha": 1.0}),
                                      ("hard_swish", {}), ("mish", {}), ("clip", None)])
def test_activation_fuses_into_dense(op: str, attrs: dict | None) -> None:
    g = kiln.Graph("t")
    x = g.input("x", (7, 33), "float32")
    w = np.random.default_rng(7).standard_normal((33, 45)).astype(np.float32)
    y = g.add("matmul", [x, g.constant(w)])[0]
    if attrs is None:    # ONNX Clip: maximum then minimum with scalar constants
        y = g.add("maximum", [y, g.constant(np.array(-0.5, np.float32))])[0]
        y = g.add("minimum", [y, g.constant(np.array(0.5, np.float32))])[0]
    else:
        y = g.add(op, [y], **attrs)[0]
    g.output(y)
    groups = fuse_groups(g).groups
    assert len(groups) == 1 and groups[0].anchor is not None
    assert_matches_reference(g, rtol=1e-5, atol=1e-5)


def test_is_inf_on_float16() -> None:
    """float16 comparisons go through the float32 path (their lazy EqualOp has a dtype too)."""
    g = kiln.Graph("isinf")
    x = g.input("x", (5,), "float16")
    (y,) = g.add("is_inf", [x], detect_positive=True, detect_negative=True)
    g.output(y)
    a = np.array([1, np.inf, -np.inf, np.nan, 0], np.float16)
    np.testing.assert_array_equal(kiln.compile(g)(a)[0], [False, True, True, False, False])
