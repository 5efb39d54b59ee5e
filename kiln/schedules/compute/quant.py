"""TE for the quantization ops (see ``kiln.ir.ops.quant`` for their semantics).

quantize / dequantize / fixed_point_multiply are one expression per element, so they inline
into the injective template or a GEMM / conv epilogue. ``matmul_integer`` is kiln's GEMM with
an int32 accumulator: ``integer_product`` widens each operand and subtracts its zero point
inside the reduction, so the x86 GEMM template tiles it like a float GEMM (the product is
``vpmulld`` + ``vpaddd`` instead of an FMA).

With an int8 dot-product instruction (AVX-512 VNNI's ``vpdpbusd``: uint8 x int8; NEON
dotprod's ``sdot``: int8 x int8) and a constant weight, ``dot_matmul_integer`` instead computes
the raw ``sum_k a * b`` (one instruction multiplies 4 k steps of 16 or 4 columns) and applies
the zero points once per output element, outside the reduction:

    sum_k (a - az)(b - bz) = sum_k a*b - az * colsum(b) - bz * rowsum(a) + K * az * bz

``colsum(b)`` is computed at compile time; ``rowsum(a)`` is a small reduction, built only when
``bz`` may be nonzero. An activation of the other signedness is shifted by 128 (``a + 128``
to uint8, ``a - 128`` to int8) and its zero point with it: the difference ``a - az`` is
unchanged; likewise a uint8 weight becomes int8 as ``b - 128``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from tvm import te, tirx

from kiln.ir.dtype import DType
from kiln.ir.ops.quant import calc_dtype, quant_range
from kiln.ir.types import normalize_axis
from kiln.schedules.compute.conv import padded_input
from kiln.schedules.compute.matmul import gemm_padded, matmul_operand
from kiln.schedules.compute.narrow import convert
from kiln.schedules.compute.registry import (
    NodeInfo,
    broadcast_index,
    compute,
    const,
    shape_of,
)


def _param(p: te.Tensor, shape: Sequence[int], idx: Sequence[Any], at: Any) -> Any:
    """A scale or zero point at output position ``idx``: broadcast, or blocked on an axis."""
    if not at.block_size or not shape_of(p):
        return p(*broadcast_index(p, shape, idx))
    axis = normalize_axis(at.axis, len(shape))
    return p(*(i // at.block_size if a == axis else i for a, i in enumerate(idx)))


@compute("quantize")
def quantize(n: NodeInfo, x: te.Tensor, scale: te.Tensor, zp: te.Tensor) -> te.Tensor:
    """Divide (not multiply by a reciprocal, which rounds differently), round half to even
    (``nearbyint`` in the default rounding mode), add the zero point, saturate; in float, as
    onnxruntime's MLAS does, so values past the integer range clamp instead of wrapping."""
    at, shape, out = n.attrs, n.shape, n.outs[0].dtype
    calc = calc_dtype(n.ins[0].dtype, n.ins[1].dtype)

    def narrow_float(*i: Any) -> Any:     # float8: x / scale; float4 adds its zero point
        q = x(*i).astype(calc) / _param(scale, shape, i, at).astype(calc)
        if out is DType.float4_e2m1fn:
            q = q + convert(_param(zp, shape, i, at), out, DType.float32).astype(calc)
        return convert(q, DType(calc), out, at.saturate)

    if out.is_float:
        return te.compute(shape, narrow_float, name=n.name)
    lo, hi = (const(v, calc) for v in quant_range(out))

    def f(*i: Any) -> Any:
        s = _param(scale, shape, i, at).astype(calc)
        z = _param(zp, shape, i, at).astype(calc)
        q = tirx.nearbyint(x(*i).astype(calc) / s) + z
        return tirx.max(tirx.min(q, hi), lo).astype(n.dtype)

    return te.compute(shape, f, name=n.name)


@compute("dequantize")
def dequantize(n: NodeInfo, x: te.Tensor, scale: te.Tensor, zp: te.Tensor) -> te.Tensor:
    at, shape, src = n.attrs, n.shape, n.ins[0].dtype
    calc = calc_dtype(n.ins[1].dtype)

    def f(*i: Any) -> Any:     # convert: a narrow float input decodes, an integer widens
        z = convert(_param(zp, shape, i, at), src, DType(calc))
        s = _param(scale, shape, i, at).astype(calc)
        return ((convert(x(*i), src, DType(calc)) - z) * s).astype(n.dtype)

    return te.compute(shape, f, name=n.name)


def integer_product(out_shape: Sequence[int], a: te.Tensor, az: te.Tensor,
                    bz: te.Tensor) -> Any:
    """The term ``(int32(a) - az[row]) * (int32(b) - bz[col])`` of an integer GEMM, for
    ``gemm_reduce``. ``lead`` is the output position without its column (its row already
    clamped below M), ``col`` may run past N on a padded grid: a per-column zero point
    re-reads its last element there (the padded columns are never stored)."""
    a_rows = (*out_shape[:-1], 1)                      # az broadcasts over [..., M, 1]
    b_cols = (*out_shape[:-2], 1, out_shape[-1])       # bz over [..., 1, N]
    n_cols = out_shape[-1]

    def product(lead: Sequence[Any], col: Any, av: Any, bv: Any) -> Any:
        za = az(*broadcast_index(az, a_rows, (*lead, 0)))
        per_column = shape_of(bz) and not (isinstance(shape_of(bz)[-1], int)
                                           and shape_of(bz)[-1] == 1)
        if per_column:
            col = tirx.min(col, n_cols - 1)
        zb = bz(*broadcast_index(bz, b_cols, (*lead[:-1], 0, col)))
        return ((av.astype("int32") - za.astype("int32"))
                * (bv.astype("int32") - zb.astype("int32")))

    return product


# one vpdpbusd: 16 int32 lanes (columns of C), each the sum of 4 u8 x s8 products (k steps)
DOT_GROUP = 4      # the k steps one int32 lane of vpdpbusd / sdot sums


def pack_weight_dot(b_kn: np.ndarray, nr: int) -> np.ndarray:
    """Pack a [K, N] int8 weight into panels [ceil(N / nr), ceil(K / 4), nr, 4]:
    ``Bp[p, q, r, g] = B[4 q + g, p * nr + r]``, zero past K and N. For one panel and one
    group of 4 k steps, the ``nr x 4`` bytes are contiguous: each vector of them (64 bytes
    for a zmm, 16 for a q register) is the int8 operand of one dot-product instruction."""
    k, n = b_kn.shape
    kq, panels = -(-k // DOT_GROUP), -(-n // nr)
    padded = np.zeros((kq * DOT_GROUP, panels * nr), dtype=np.int8)
    padded[:k, :n] = b_kn
    return np.ascontiguousarray(
        padded.reshape(kq, DOT_GROUP, panels, nr).transpose(2, 0, 3, 1))


def dot_matmul_integer(n: NodeInfo, a: te.Tensor, az: te.Tensor, bz: te.Tensor,
                       bp: te.Tensor, colsum: te.Tensor | None, k_extent: int, m_pad: Any,
                       bz_zero: bool, a8: str) -> te.Tensor:
    """``matmul_integer`` with the weight packed by ``pack_weight_dot`` into ``bp``, for a dot
    instruction whose activation bytes are ``a8`` ("uint8": vpdpbusd; "int8": sdot):

    - ``<name>_a8`` [..., m_pad, K4]: A as ``a8`` (shifted by 128 when of the other
      signedness), rows past M re-read the last row, k past K is 0 (a whole group of 4,
      matching Bp's zero padding); A itself when it is ``a8`` already on that grid;
    - ``<name>_rowsum`` [..., m_pad]: ``sum_k a8`` (only when ``bz`` may be nonzero);
    - ``<name>_gemm`` [..., m_pad, n_pad]: ``sum_k int32(a8) * int32(b)``, the plain body
      the dot tensor intrinsic matches (no zero point, no select inside);
    - ``<name>`` [..., M, N]: the GEMM's real part plus ``K za zb - za colsum - zb rowsum``,
      once per output element (the schedule's epilogue, with whatever follows).

    ``colsum`` [N] is ``sum_k b`` (None when ``a - az`` is ``a8`` as is: a constant zero
    ``az`` of type ``a8``); ``bz_zero``: ``bz`` is a constant zero, so no rowsum. A uint8
    weight is packed as ``b - 128`` (int8), and its zero point taken as ``bz - 128``."""
    shape, a_shape = n.shape, shape_of(a)
    batch, m, n_cols = shape[:-2], shape[-2], shape[-1]
    panels, kq, nr, _ = shape_of(bp)
    k_pad, n_pad = kq * DOT_GROUP, panels * nr
    clamp_rows = not isinstance(m, int) or m_pad > m     # rows past M re-read row M - 1
    shift = 0 if a.dtype == a8 else (128 if a8 == "uint8" else -128)
    to_a8 = (lambda v: (v.astype("int32") + shift).astype(a8)) if shift else (lambda v: v)

    def a8_fn(*i: Any) -> Any:
        *b, r, kk = i
        row = tirx.min(r, m - 1) if clamp_rows else r
        a_dims = (*batch, m, a_shape[-1])
        if k_pad == k_extent:
            return to_a8(a(*broadcast_index(a, a_dims, (*b, row, kk))))
        inside = a(*broadcast_index(a, a_dims, (*b, row, tirx.min(kk, k_extent - 1))))
        return tirx.if_then_else(kk < k_extent, to_a8(inside), tirx.const(0, a8))

    if shift or clamp_rows or k_pad != k_extent or tuple(a_shape) != (*batch, m, k_extent):
        a_8 = te.compute((*batch, m_pad, k_pad), a8_fn, name=f"{n.name}_a8")
    else:
        a_8 = a        # already a8 on the grid: no copy
    rowsum = None
    if not bz_zero:
        kr = te.reduce_axis((0, k_pad), name="k")
        rowsum = te.compute((*batch, m_pad), lambda *i: te.sum(
            a_8(*i, kr).astype("int32"), axis=kr), name=f"{n.name}_rowsum")
    k = te.reduce_axis((0, k_pad), name="k")
    c = te.compute((*batch, m_pad, n_pad), lambda *i: te.sum(
        a_8(*i[:-1], k).astype("int32")
        * bp(i[-1] // nr, k // DOT_GROUP, i[-1] % nr, k % DOT_GROUP).astype("int32"),
        axis=k), name=f"{n.name}_gemm")
    a_rows, b_cols = (*shape[:-1], 1), (*batch, 1, n_cols)

    def out_fn(*i: Any) -> Any:
        *lead, col = i
        acc = c(*i)
        za = az(*broadcast_index(az, a_rows, (*lead, 0))).astype("int32")
        if shift:
            za = za + shift
        zb = bz(*broadcast_index(bz, b_cols, (*lead[:-1], 0, col))).astype("int32")
        if bz.dtype == "uint8":         # the weight was shifted by -128 when packed
            zb = zb - 128
        if colsum is not None:
            acc = acc - za * colsum(col)
        if rowsum is not None:
            acc = acc + tirx.const(k_extent, "int32") * za * zb - zb * rowsum(*lead)
        return acc

    return te.compute(shape, out_fn, name=n.name)


@compute("matmul_integer")
def matmul_integer(n: NodeInfo, a: te.Tensor, b: te.Tensor, az: te.Tensor,
                   bz: te.Tensor) -> te.Tensor:
    """``y[..., m, j] = sum_k (a[..., m, k] - az) * (b[..., k, j] - bz)`` in int32."""
    shape = n.shape
    return gemm_padded(n, a, matmul_operand(shape, b), shape_of(a)[-1], shape[-2], shape[-1],
                       product=integer_product(shape, a, az, bz))


@compute("fixed_point_multiply")
def fixed_point_multiply(n: NodeInfo, x: te.Tensor, m: te.Tensor, s: te.Tensor) -> te.Tensor:
    """gemmlowp's ``MultiplyByQuantizedMultiplier`` for a multiplier in [0, 2^31): a saturating
    left shift by ``max(s, 0)``, the rounding doubling high multiply, a rounding right shift by
    ``r = max(-s, 0)`` (half away from zero). Integer arithmetic only, in a form that reads
    ``x`` twice (chained rescales and a conv epilogue unroll into one expression; no let
    bindings in TE): with ``m >= 0`` the high multiply's nudge and truncating division are
    ``(x * m + 2^30) >> 31``, and the right shift's rounding is ``(h + 2^(r-1) - [x < 0]) >> r``
    (``h`` has the sign of ``x``, or is 0). The NumPy reference spells out gemmlowp's steps."""
    shape = n.shape

    def f(*i: Any) -> Any:
        x64 = x(*broadcast_index(x, shape, i)).astype("int64")
        m64 = m(*broadcast_index(m, shape, i)).astype("int64")
        s64 = s(*broadcast_index(s, shape, i)).astype("int64")
        zero, one = const(0, "int64"), const(1, "int64")
        left, right = tirx.max(s64, zero), tirx.max(-s64, zero)
        xs = tirx.max(tirx.min(tirx.shift_left(x64, left), const((1 << 31) - 1, "int64")),
                      const(-(1 << 31), "int64"))       # a saturating left shift
        high = tirx.shift_right(xs * m64 + const(1 << 30, "int64"), const(31, "int64"))
        half = tirx.shift_right(tirx.shift_left(one, right), one)      # 2^(r-1), 0 at r = 0
        bias = half - tirx.Select(x64 < zero, tirx.min(right, one), zero)
        return tirx.shift_right(high + bias, right).astype("int32")

    return te.compute(shape, f, name=n.name)


@compute("conv2d_integer")
def conv2d_integer(n: NodeInfo, x: te.Tensor, w: te.Tensor, xz: te.Tensor,
                   acc_dtype: str = "int32") -> te.Tensor:
    """The direct convolution of ``conv2d`` on ``x - xz``: the padding stage (``<name>_pad``,
    which the conv templates place) centres the bytes as it copies them, so padding is the
    zero point's 0 and the reduction is ``xp * w`` with no zero point inside it.

    ``acc_dtype="float32"`` (``w`` then float32) runs the products and sums on the FMA units,
    for a weight whose ``255 * sum |w[o]|`` stays below 2^24 (``float_exact_conv``): every
    partial sum is then an integer float32 holds exactly, in any order, so the int32 result
    (``<name>``, cast from the reduction ``<name>_acc``) is the integer one bit for bit. x86
    multiplies int32 lanes at a quarter of the FMA rate (``vpmulld``)."""
    at = n.attrs
    oc, cg, kh, kw = shape_of(w)
    (sh, sw), (dh, dw) = at.strides, at.dilations
    ocg = oc // at.groups
    centred = te.compute(shape_of(x), lambda *i: (x(*i).astype("int32") - xz().astype("int32"))
                         .astype(acc_dtype), name=f"{n.name}_centred")
    xp = padded_input(n.name, centred, at.padding, sw)
    rc = te.reduce_axis((0, cg), name="rc")
    rh = te.reduce_axis((0, kh), name="rh")
    rw = te.reduce_axis((0, kw), name="rw")

    def f(b: Any, o: Any, oh: Any, ow: Any) -> Any:
        ch = rc if at.groups == 1 else (o // ocg) * cg + rc
        q = rw * dw
        return te.sum(xp[b, ch, oh * sh + rh * dh, q % sw, ow + q // sw] * w[o, rc, rh, rw],
                      axis=[rc, rh, rw])

    if acc_dtype == "int32":
        return te.compute(n.shape, f, name=n.name)
    acc = te.compute(n.shape, f, name=f"{n.name}_acc")
    return te.compute(n.shape, lambda *i: acc(*i).astype("int32"), name=n.name)


FLOAT_EXACT = 1 << 24          # integers up to 2^24 are exact in float32


def float_exact_conv(w: np.ndarray, x_dtype: str) -> bool:
    """Whether ``conv2d_integer`` of 8-bit ``x`` with the centred int32 weight ``w`` may
    accumulate in float32 exactly: ``|x - xz| <= 255``, so ``|partial sum| <= 255 * sum
    |w[o]|`` for every output channel ``o``."""
    if x_dtype not in ("int8", "uint8"):
        return False
    per_channel = np.abs(w.astype(np.int64)).reshape(w.shape[0], -1).sum(axis=1)
    return int(per_channel.max(initial=0)) * 255 < FLOAT_EXACT


@compute("table_lookup")
def table_lookup(n: NodeInfo, x: te.Tensor, table: te.Tensor) -> te.Tensor:
    """``y = table[x]``, the index being ``x``'s bits (an int8 reinterpreted as uint8): a
    gather, which the injective template vectorises where the target gathers (x86 with VBMI
    runs ``kiln.schedules.x86.lookup`` instead: two byte permutes per 64 elements)."""
    return te.compute(n.shape, lambda *i: table[x(*i).astype("uint8").astype("int32")],
                      name=n.name)
