"""What a library does with the arrays it is given, as the README documents it: a wrong name,
count, rank, shape or dtype is an ``InputError`` naming the input (kiln never casts or
reshapes silently); non-contiguous and read-only arrays are taken as they are (copied where
needed); NaN and Inf are values like any other and come out where the reference puts them."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln import ops


@pytest.fixture(scope="module")
def lib() -> kiln.Library:
    g = kiln.Graph("inputs")
    x = g.input("x", (4, "n"), "float32")
    b = g.input("b", ("n",), "float32")
    g.output(ops.softmax(ops.add(ops.mul(x, 2.0), b), axis=-1), ops.sum(ops.exp(x), axes=[1]))
    return kiln.compile(g)


def _reference(x: np.ndarray, b: np.ndarray) -> list[np.ndarray]:
    g = kiln.Graph("inputs")
    xv = g.input("x", x.shape, "float32")
    bv = g.input("b", b.shape, "float32")
    g.output(ops.softmax(ops.add(ops.mul(xv, 2.0), bv), axis=-1), ops.sum(ops.exp(xv), axes=[1]))
    return kiln.run_reference(g, {"x": x, "b": b})


@pytest.mark.parametrize("call, message", [
    (lambda lib, x, b: lib(x=x), "missing input(s) 'b'"),
    (lambda lib, x, b: lib(x=x, b=b, c=b), "unknown input(s) 'c'"),
    (lambda lib, x, b: lib(x, b, b), "takes 2 input(s), got 3"),
    (lambda lib, x, b: lib(x, b=b, x=x), "input 'x' given twice"),
    (lambda lib, x, b: lib(x=x.astype(np.float64), b=b), "input 'x': expected dtype float32"),
    (lambda lib, x, b: lib(x=x[None], b=b), "input 'x': expected shape [4, 'n']"),
    (lambda lib, x, b: lib(x=x[:3], b=b), "input 'x': expected shape [4, 'n']"),
    (lambda lib, x, b: lib(x=x, b=b[:-1]), "dim 'n' is 6 here but 7 in another input"),
    (lambda lib, x, b: lib(x=x.tolist(), b=b), "input 'x': expected dtype float32, got float64"),
])
def test_wrong_inputs_are_named(lib: kiln.Library, call, message: str) -> None:
    x = np.ones((4, 7), np.float32)
    b = np.zeros(7, np.float32)
    with pytest.raises(kiln.InputError) as e:
        call(lib, x, b)
    assert message in str(e.value)


def test_non_contiguous_and_read_only_arrays(lib: kiln.Library) -> None:
    rng = np.random.default_rng(0)
    big = rng.standard_normal((7, 8)).astype(np.float32)
    x = big.T[:4]                       # a strided view: [4, 7] of a transposed array
    b = rng.standard_normal(14).astype(np.float32)[::2]
    b.flags.writeable = False
    assert not x.flags.c_contiguous and not b.flags.c_contiguous
    for got, want in zip(lib(x=x, b=b), _reference(np.ascontiguousarray(x), b.copy()),
                         strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_nan_and_inf_propagate_like_the_reference(lib: kiln.Library) -> None:
    x = np.random.default_rng(1).standard_normal((4, 5)).astype(np.float32)
    x[0, 1] = np.nan                    # a row with a NaN: softmax all NaN, sum NaN
    x[1, 2] = np.inf                    # exp(inf) = inf; softmax: inf - inf = NaN
    x[2, 3] = -np.inf                   # exp(-inf) = 0: an ordinary row
    b = np.zeros(5, np.float32)
    with np.errstate(invalid="ignore"):               # the reference's inf - inf
        got, want = lib(x=x, b=b), _reference(x, b)
    for g_, w_ in zip(got, want, strict=True):
        np.testing.assert_array_equal(np.isnan(g_), np.isnan(w_))
        np.testing.assert_array_equal(np.isinf(g_), np.isinf(w_))
        finite = np.isfinite(w_)
        np.testing.assert_allclose(g_[finite], w_[finite], rtol=1e-5, atol=1e-6)
    assert np.isnan(got[0][0]).all() and np.isfinite(got[0][2]).all()
