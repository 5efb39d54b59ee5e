"""Tensors made from sizes: ``full``, ``full_like``, ``scalar_tensor``, ``arange``.

With static sizes each is a constant (``arange`` computed by torch itself, so the values and
the dtype are torch's); with a symbolic size a scalar is broadcast, and ``arange`` is kiln's
``range`` op, which takes a symbolic length (``torch.arange(x.shape[1])``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from kiln.errors import ModelError
from kiln.frontend.torch.context import Context, Scalar, aten
from kiln.ir.dtype import DType
from kiln.ir.graph import Value
from kiln.ir.types import Dim


def _filled(cx: Context, value: Scalar) -> Value:
    """The current node's output, every element ``value``."""
    shape, dtype = cx.out_shape(), cx.out_dtype()
    if all(isinstance(d, int) for d in shape):
        return cx.constant(np.full(shape, value, dtype=dtype.np))
    return cx.broadcast(cx.operand(value, dtype), shape)


@aten("full.default")
def _full(cx: Context, size: Sequence[Dim], fill_value: Scalar) -> Value:
    return _filled(cx, fill_value)


@aten("full_like.default")
def _full_like(cx: Context, x: Value, fill_value: Scalar) -> Value:
    return _filled(cx, fill_value)


@aten("fill.Scalar")
def _fill(cx: Context, x: Value, value: Scalar) -> Value:
    return _filled(cx, value)


@aten("scalar_tensor.default")
def _scalar_tensor(cx: Context, s: Scalar) -> Value:
    return cx.scalar(s, cx.out_dtype())


@aten("arange.default")
def _arange_end(cx: Context, end: Dim | Scalar) -> Value:
    return _arange(cx, 0, end, 1)


@aten("arange.start")
def _arange_start(cx: Context, start: Scalar, end: Dim | Scalar) -> Value:
    return _arange(cx, start, end, 1)


@aten("arange.start_step")
def _arange(cx: Context, start: Scalar, end: Dim | Scalar, step: Scalar = 1) -> Value:
    dtype = cx.out_dtype()
    (length,) = cx.out_shape()
    if isinstance(length, int):
        if any(isinstance(v, str) for v in (start, end, step)):
            raise ModelError(f"arange({start}, {end}, {step}) mixes static and symbolic sizes")
        values = torch.arange(start, end, step, dtype=getattr(torch, dtype.value))
        return cx.constant(values.numpy())
    if isinstance(start, str) or isinstance(step, str):
        raise ModelError(f"arange({start}, {end}, {step}): kiln takes a symbolic end only")
    if dtype is DType.bool or not (isinstance(start, int) and isinstance(step, int)):
        raise ModelError(f"arange with a symbolic length takes integer start and step, got "
                         f"{start} and {step}")
    return cx.emit("range", [cx.scalar(start, dtype), cx.scalar(step, dtype)], shape=(length,))
