"""Import-time values of shape tensors whose elements may be symbolic dims.

Exporters compute reshape targets from the input's own shape: ``Shape -> Gather -> Unsqueeze
-> Concat -> Reshape``. With static input shapes all of that folds to constants. With a
symbolic ``seq`` it cannot, but the *elements* are still known: ``[1, "seq", 12, 32]``. The
importer tracks such values (NumPy object arrays of ints and dim names) next to the runtime
graph, so that Reshape, Expand, ConstantOfShape and Slice get symbolic shapes instead of
needing the tensor's data at run time.

``evaluate(op, attrs, inputs)`` runs one kiln op on known values; it returns ``None`` when the
result is not known at import (``seq * 2``, or ``seq == 1``): the runtime node then stays.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from kiln.ir.types import normalize_axis

MAX_ELEMENTS = 64     # shape vectors are short; anything longer is data, not a shape


class Unknown(Exception):
    """The result depends on a symbolic dim's size."""


def _binary(fn: Callable[[int, int], int]) -> Callable[[object, object], object]:
    def apply(a: object, b: object) -> object:
        if isinstance(a, str) or isinstance(b, str):
            return _symbolic_arith(fn, a, b)
        return fn(a, b)
    return apply


def _symbolic_arith(fn: Callable, a: object, b: object) -> object:
    """The identities shape arithmetic uses; anything else depends on the dim's size."""
    if fn is operator.mul and (a == 1 or b == 1):
        return b if a == 1 else a
    if fn in (operator.add, operator.sub) and b == 0:
        return a
    if fn is operator.add and a == 0:
        return b
    if fn is operator.floordiv and b == 1:
        return a
    if fn is operator.eq:
        if a == b:
            return True
        if isinstance(a, int) or isinstance(b, int):   # a dim is >= 1: never 0 or negative
            k = a if isinstance(a, int) else b
            if k < 1:
                return False
    if fn in (max, min) and a == b:
        return a
    raise Unknown


_ELEMENTWISE: dict[str, Callable[[object, object], object]] = {
    "add": _binary(operator.add),
    "sub": _binary(operator.sub),
    "mul": _binary(operator.mul),
    "div": _binary(operator.floordiv),
    "equal": _binary(operator.eq),
    "maximum": _binary(max),
    "minimum": _binary(min),
}


def _broadcast(fn: Callable[[object, object], object], a: np.ndarray,
               b: np.ndarray) -> np.ndarray:
    a2, b2 = np.broadcast_arrays(a, b)
    out = np.empty(a2.shape, dtype=object)
    for idx in np.ndindex(a2.shape):
        out[idx] = fn(a2[idx], b2[idx])
    return out


def _where(c: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if any(isinstance(v, str) for v in c.reshape(-1)):
        raise Unknown
    return np.where(c.astype(bool), a, b)


def _slice(at: Any, x: np.ndarray) -> np.ndarray:
    if any(isinstance(v, str) for v in (*at.starts, *at.ends)):
        raise Unknown
    index = [slice(None)] * x.ndim
    for a, b, e, s in zip(at.axes, at.starts, at.ends, at.steps, strict=True):
        index[normalize_axis(a, x.ndim)] = slice(b, e, s)
    return x[tuple(index)]


def _cast(at: Any, x: np.ndarray) -> np.ndarray:
    if at.dtype.is_float or at.dtype.value == "bool":
        if any(isinstance(v, str) for v in x.reshape(-1)):
            raise Unknown
        return x.astype(at.dtype.np)
    return x


_OPS: dict[str, Callable[..., np.ndarray]] = {
    "reshape": lambda at, x: x.reshape([d for d in at.shape]),
    "concat": lambda at, *xs: np.concatenate(xs, axis=at.axis),
    "gather": lambda at, x, i: np.take(x, i.astype(np.int64), axis=at.axis),
    "slice": _slice,
    "cast": _cast,
    "where": lambda at, c, a, b: _where(c, a, b),
    "broadcast_to": lambda at, x: np.broadcast_to(x, at.shape).copy(),
}


def evaluate(op: str, attrs: Any, inputs: Sequence[np.ndarray]) -> np.ndarray | None:
    """Op ``op`` on known values, or ``None`` when its result is not known at import."""
    try:
        if op in _ELEMENTWISE and len(inputs) == 2:
            out = _broadcast(_ELEMENTWISE[op], *inputs)
        elif op in _OPS:
            out = _OPS[op](attrs, *inputs)
        else:
            return None
    except (Unknown, ValueError, TypeError, IndexError):
        return None
    out = np.asarray(out, dtype=object)
    return out if out.size <= MAX_ELEMENTS else None


def is_symbolic(values: np.ndarray) -> bool:
    return any(isinstance(v, str) for v in values.reshape(-1))
