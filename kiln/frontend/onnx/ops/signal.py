"""Signal processing, sampling grids and other less common ops.

Most are written in existing kiln ops: DFT is a matmul with a constant cos/sin matrix (dft_length
padding and truncation are zero rows of that matrix), the windows and EyeLike are constants,
LpNormalization is a reduction and a division, CenterCropPad a pad (negative pads crop),
AffineGrid a matmul with a constant base grid, Col2Im a matmul with a constant 0/1 scatter
matrix, ReverseSequence a gather_elements at computed indices, Det a sum over permutations of
gathered products, MaxUnpool a scatter. GridSample and BitCast have their own kiln ops.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import onnx

from kiln.errors import ModelError
from kiln.frontend.onnx.context import (
    Context,
    Converter,
    onnx_dtype,
    onnx_op,
    reshape,
    static_dim,
)
from kiln.ir.dtype import DType
from kiln.ir.graph import Value
from kiln.ir.types import normalize_axis


def _static_shape(x: Value, what: str) -> tuple[int, ...]:
    if not x.type.is_static:
        raise ModelError(f"{what} needs static dims, got {x.type}")
    return tuple(int(d) for d in x.shape)


def _int_list(ctx: Context, i: int, what: str) -> list[int] | None:
    data = ctx.const_input(i)
    if data is None:
        return None
    try:
        return [int(v) for v in np.asarray(data).reshape(-1)]
    except (TypeError, ValueError):
        raise ModelError(f"{what} must hold integers") from None


def _int_scalar(ctx: Context, i: int, what: str) -> int | None:
    vals = _int_list(ctx, i, what)
    if vals is None:
        return None
    if len(vals) != 1:
        raise ModelError(f"{what} must hold one value, got {len(vals)}")
    return vals[0]


# -- GridSample, AffineGrid ---------------------------------------------------------------------
# opset 16 spelled the modes bilinear / bicubic; opset 20 renamed them and allowed N-D inputs
_GRID_MODES = {"bilinear": "linear", "bicubic": "cubic", "linear": "linear", "cubic": "cubic",
               "nearest": "nearest"}


@onnx_op("GridSample")
def _grid_sample(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x, grid = ctx.required(0), ctx.required(1)
    mode = ctx.attr("mode", "bilinear" if ctx.opset < 20 else "linear")
    if mode not in _GRID_MODES:
        raise ModelError(f"GridSample mode={mode!r} is not one of {sorted(_GRID_MODES)}")
    padding = ctx.attr("padding_mode", "zeros")
    if padding not in ("zeros", "border", "reflection"):
        raise ModelError(f"GridSample padding_mode={padding!r} is not zeros, border or "
                         "reflection")
    for i in range(2, x.type.rank):
        static_dim(x, i, "GridSample")
    if grid.dtype != x.dtype:
        grid = ctx.emit("cast", [grid], dtype=x.dtype)
    return [ctx.emit("grid_sample", [x, grid], mode=_GRID_MODES[mode], padding_mode=padding,
                     align_corners=bool(ctx.attr("align_corners", 0)))]


def _base_grid(sizes: list[int], align_corners: bool) -> np.ndarray:
    """``[prod(sizes), k + 1]``: each output position's normalised coordinates in reverse
    spatial order (x first), then a 1 for the translation column."""
    axes = []
    for s in sizes:
        if align_corners:
            a = np.linspace(-1.0, 1.0, s) if s > 1 else np.zeros(1)
        else:
            a = (np.arange(s) * 2.0 + 1.0) / s - 1.0
        axes.append(a)
    mesh = np.meshgrid(*axes, indexing="ij")
    cols = [m.reshape(-1) for m in reversed(mesh)]
    return np.stack([*cols, np.ones(math.prod(sizes))], axis=-1)


@onnx_op("AffineGrid")
def _affine_grid(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    """``grid[n, p] = theta[n] @ [base(p), 1]``: one batched matmul with a constant base."""
    theta = ctx.required(0)
    size = _int_list(ctx, 1, "AffineGrid size")
    if size is None:
        raise ModelError("AffineGrid needs its size input")
    k = len(size) - 2
    if k not in (2, 3) or theta.type.rank != 3 or theta.shape[1:] != (k, k + 1):
        raise ModelError(f"AffineGrid needs theta [N, {k}, {k + 1}] for size {size}, got "
                         f"{theta.type}")
    base = _base_grid(size[2:], bool(ctx.attr("align_corners", 0))).astype(theta.dtype.np)
    theta_t = ctx.emit("transpose", [theta], perm=(0, 2, 1))           # [N, k + 1, k]
    out = ctx.emit("matmul", [ctx.constant(base[None]), theta_t])      # [N, P, k]
    return [reshape(ctx, out, (theta.shape[0], *size[2:], k))]


# -- DFT, STFT ----------------------------------------------------------------------------------
def _dft_matrix(n_in: int, comps: int, length: int, inverse: bool, onesided: bool) -> np.ndarray:
    """``[n_in * comps, bins * out_comps]``: input (position, re/im) to output (bin, re/im),
    rows past the transform's input length zero (truncation; padding needs no rows)."""
    if inverse and onesided:        # irfft: length // 2 + 1 bins in, length real samples out
        used, bins, out_comps = min(n_in, length // 2 + 1), length, 1
    else:
        used, out_comps = min(n_in, length), 2
        bins = length // 2 + 1 if (onesided and not inverse) else length
    m = np.zeros((n_in, comps, bins, out_comps))
    j = np.arange(used)[:, None]
    k = np.arange(bins)[None, :]
    angle = 2 * np.pi * ((j * k) % length) / length       # reduced mod length: exact phases
    c, s = np.cos(angle), np.sin(angle)
    if inverse and onesided:
        # the bins above the Nyquist one mirror those below: count the inner bins twice
        w = np.full((used, 1), 2.0)
        w[0] = 1.0
        if length % 2 == 0 and used > length // 2:
            w[length // 2] = 1.0
        m[:used, 0, :, 0] = w * c / length
        if comps == 2:
            m[:used, 1, :, 0] = -w * s / length
    elif inverse:                   # e^{+i angle} / length
        m[:used, 0, :, 0], m[:used, 0, :, 1] = c / length, s / length
        if comps == 2:
            m[:used, 1, :, 0], m[:used, 1, :, 1] = -s / length, c / length
    else:                           # e^{-i angle}
        m[:used, 0, :, 0], m[:used, 0, :, 1] = c, -s
        if comps == 2:
            m[:used, 1, :, 0], m[:used, 1, :, 1] = s, c
    return m.reshape(n_in * comps, bins * out_comps)


_DFT_MAX = 1 << 24     # elements of the constant DFT matrix (64 MiB of float32)


def _dft(ctx: Context, x: Value, axis: int, length: int | None, inverse: bool,
         onesided: bool) -> Value:
    rank = x.type.rank
    comps = static_dim(x, rank - 1, "DFT")
    if comps not in (1, 2):
        raise ModelError(f"DFT input's last dim must be 1 (real) or 2 (complex), got {comps}")
    if not 0 <= axis < rank - 1:
        raise ModelError(f"DFT axis {axis} must not be the last (complex) dim of {x.type}")
    n_in = static_dim(x, axis, "DFT")
    if length is None:
        length = 2 * (n_in - 1) if (inverse and onesided) else n_in
    if length < 1:
        raise ModelError(f"DFT length must be positive, got {length}")
    cols = (length if inverse and onesided else
            (length // 2 + 1 if onesided else length) * 2)
    if n_in * comps * cols > _DFT_MAX:
        raise ModelError(f"DFT of length {length} over {n_in} inputs: kiln multiplies by a "
                         f"constant {n_in * comps}x{cols} matrix, more than {_DFT_MAX} elements")
    m = _dft_matrix(n_in, comps, length, inverse, onesided).astype(x.dtype.np)
    # move the transformed axis next to the complex dim, flatten both, multiply
    perm = [d for d in range(rank - 1) if d != axis] + [axis, rank - 1]
    xt = x if perm == list(range(rank)) else ctx.emit("transpose", [x], perm=tuple(perm))
    lead = xt.shape[:-2]
    rows = reshape(ctx, xt, (*lead, n_in * comps) if lead else (1, n_in * comps))
    y = ctx.emit("matmul", [rows, ctx.constant(m)])
    out_comps = 1 if (inverse and onesided) else 2
    bins = m.shape[1] // out_comps
    y = reshape(ctx, y, (*lead, bins, out_comps))
    back = [0] * rank       # where each output dim comes from in the transposed order
    for pos, d in enumerate(perm):
        back[d] = pos
    return y if back == list(range(rank)) else ctx.emit("transpose", [y], perm=tuple(back))


@onnx_op("DFT")
def _dft_op(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x = ctx.required(0)
    length = _int_scalar(ctx, 1, "DFT dft_length")
    if ctx.opset >= 20:      # axis became an input (default -2) in opset 20
        axis_in = _int_scalar(ctx, 2, "DFT axis")
        axis = -2 if axis_in is None else axis_in
    else:
        axis = ctx.attr("axis", 1)
    axis = normalize_axis(axis, x.type.rank)
    return [_dft(ctx, x, axis, length, bool(ctx.attr("inverse", 0)),
                 bool(ctx.attr("onesided", 0)))]


@onnx_op("STFT")
def _stft(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    """Frames ``[B, frames, frame_length, C]`` gathered from the signal, windowed, then a DFT
    along the frame axis: ``[B, frames, bins, 2]``."""
    sig = ctx.required(0)
    step = _int_scalar(ctx, 1, "STFT frame_step")
    if step is None or step < 1:
        raise ModelError("STFT needs a positive constant frame_step")
    window = ctx.input(2)
    flen = _int_scalar(ctx, 3, "STFT frame_length")
    if flen is None:
        if window is None:
            raise ModelError("STFT needs a window or a frame_length")
        flen = static_dim(window, 0, "STFT window")
    if sig.type.rank != 3:
        raise ModelError(f"STFT signal must be [batch, length, 1 or 2], got {sig.type}")
    n = static_dim(sig, 1, "STFT")
    frames = (n - flen) // step + 1
    if frames < 1:
        raise ModelError(f"STFT frame_length {flen} is longer than the signal ({n})")
    idx = (np.arange(frames)[:, None] * step + np.arange(flen)[None, :]).reshape(-1)
    fr = ctx.emit("gather", [sig, ctx.constant(idx.astype(np.int64))], axis=1)
    fr = reshape(ctx, fr, (sig.shape[0], frames, flen, sig.shape[2]))
    if window is not None:
        win = window if window.dtype == sig.dtype else ctx.emit("cast", [window],
                                                                 dtype=sig.dtype)
        fr = ctx.emit("mul", [fr, reshape(ctx, win, (flen, 1))])
    return [_dft(ctx, fr, 2, flen, False, bool(ctx.attr("onesided", 1)))]


# -- windows, MelWeightMatrix -------------------------------------------------------------------
def _window(kind: str) -> Converter:
    def convert(node: onnx.NodeProto, ctx: Context) -> list[Value]:
        size = _int_scalar(ctx, 0, f"{kind} size")
        if size is None:
            raise ModelError(f"{kind} needs its size input")
        dtype = onnx_dtype(ctx.attr("output_datatype", onnx.TensorProto.FLOAT),
                           f"{kind} output_datatype")
        denom = size if ctx.attr("periodic", 1) else size - 1
        n = np.arange(size, dtype=np.float64)
        if kind == "HannWindow":
            w = np.sin(n * np.pi / denom) ** 2
        elif kind == "HammingWindow":
            alpha = 25.0 / 46.0
            w = alpha - np.cos(n * np.pi * 2 / denom) * (1 - alpha)
        else:
            w = 0.42 - 0.5 * np.cos(n * 2 * np.pi / denom) + 0.08 * np.cos(n * 4 * np.pi / denom)
        return [ctx.constant(w.astype(dtype.np), dtype=dtype)]
    return convert


for _kind in ("HannWindow", "HammingWindow", "BlackmanWindow"):
    onnx_op(_kind)(_window(_kind))


@onnx_op("MelWeightMatrix")
def _mel_weight_matrix(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    """A constant ``[dft_length // 2 + 1, num_mel_bins]`` of triangular filters, computed as
    ONNX's reference does (the edge frequencies keep their dtype, so bin edges round alike)."""
    bins = _int_scalar(ctx, 0, "MelWeightMatrix num_mel_bins")
    dft_length = _int_scalar(ctx, 1, "MelWeightMatrix dft_length")
    rate = _int_scalar(ctx, 2, "MelWeightMatrix sample_rate")
    lo_hz, hi_hz = ctx.const_input(3), ctx.const_input(4)
    if bins is None or dft_length is None or rate is None or lo_hz is None or hi_hz is None:
        raise ModelError("MelWeightMatrix needs all five inputs")
    dtype = onnx_dtype(ctx.attr("output_datatype", onnx.TensorProto.FLOAT),
                       "MelWeightMatrix output_datatype")
    lo_hz, hi_hz = np.asarray(lo_hz).reshape(()), np.asarray(hi_hz).reshape(())
    n_spec = dft_length // 2 + 1
    lo_mel = 2595 * np.log1p(lo_hz / 700) / np.log(10)
    hi_mel = 2595 * np.log1p(hi_hz / 700) / np.log(10)
    mel_step = (hi_mel - lo_mel) / (bins + 2)
    hz = 700 * np.expm1((np.arange(bins + 2) * mel_step + lo_mel) / 2595 * np.log(10))
    points = (((dft_length + 1) * hz) // rate).astype(np.int64)
    out = np.zeros((n_spec, bins))
    for i in range(bins):
        lo, center, hi = (int(v) for v in points[i:i + 3])
        if center == lo:
            out[center, i] = 1
        else:
            out[lo:center + 1, i] = (np.arange(lo, center + 1) - lo) / (center - lo)
        if hi > center:
            out[center:hi, i] = (hi - np.arange(center, hi)) / (hi - center)
    return [ctx.constant(out.astype(dtype.np), dtype=dtype)]


# -- LpNormalization ----------------------------------------------------------------------------
@onnx_op("LpNormalization")
def _lp_normalization(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    """``x / ||x||_p`` along the axis; a zero norm gives 0 (ONNX: 0/0 = 0)."""
    x = ctx.required(0)
    axis = normalize_axis(ctx.attr("axis", -1), x.type.rank)
    p = ctx.attr("p", 2)
    if p == 1:
        norm = ctx.emit("reduce_sum", [ctx.emit("abs", [x])], axes=(axis,), keepdims=True)
    elif p == 2:
        norm = ctx.emit("sqrt", [ctx.emit("reduce_sum", [ctx.emit("mul", [x, x])],
                                          axes=(axis,), keepdims=True)])
    else:
        raise ModelError(f"LpNormalization p={p} is not 1 or 2")
    zero = ctx.scalar(0, x)
    y = ctx.emit("div", [x, norm])
    return [ctx.emit("where", [ctx.emit("equal", [norm, zero]), zero, y])]


# -- CenterCropPad, Col2Im ----------------------------------------------------------------------
@onnx_op("CenterCropPad")
def _center_crop_pad(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    """One pad op: negative pads crop. Crops take the extra element from the end, pads put
    it at the end (ONNX's reference)."""
    x = ctx.required(0)
    shape = _int_list(ctx, 1, "CenterCropPad shape")
    if shape is None:
        raise ModelError("CenterCropPad needs its shape input")
    rank = x.type.rank
    axes = ctx.attr("axes")
    axes = list(range(rank)) if axes is None else [normalize_axis(a, rank) for a in axes]
    if len(axes) != len(shape):
        raise ModelError(f"CenterCropPad shape {shape} does not match axes {axes}")
    begin, end = [0] * rank, [0] * rank
    for a, target in zip(axes, shape, strict=True):
        dim = static_dim(x, a, "CenterCropPad")
        if target < dim:
            begin[a] = -((dim - target) // 2)
            end[a] = -(dim - target) - begin[a]
        elif target > dim:
            begin[a] = (target - dim) // 2
            end[a] = target - dim - begin[a]
    if not any(begin) and not any(end):
        return [x]
    return [ctx.emit("pad", [x], pads=tuple(begin + end))]


_COL2IM_MAX = 1 << 24       # elements of the constant scatter matrix kiln will build


@onnx_op("Col2Im")
def _col2im(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    """``[N, C * prod(block), L] -> [N, C, *image]``: summing overlapping blocks is linear, so
    it is a matmul with a constant 0/1 matrix from (block offset, block position) to pixel."""
    x = ctx.required(0)
    image = _int_list(ctx, 1, "Col2Im image_shape")
    block = _int_list(ctx, 2, "Col2Im block_shape")
    if image is None or block is None:
        raise ModelError("Col2Im needs image_shape and block_shape")
    k = len(image)
    dil = list(ctx.attr("dilations", [1] * k))
    strides = list(ctx.attr("strides", [1] * k))
    pads = list(ctx.attr("pads", [0] * 2 * k))
    n, cb, length = _static_shape(x, "Col2Im")
    kb = math.prod(block)
    if cb % kb:
        raise ModelError(f"Col2Im input dim 1 ({cb}) is not a multiple of prod(block_shape) "
                         f"({kb})")
    counts = [(image[d] + pads[d] + pads[k + d] - dil[d] * (block[d] - 1) - 1) // strides[d] + 1
              for d in range(k)]
    if math.prod(counts) != length:
        raise ModelError(f"Col2Im: {counts} blocks fit the image, but the input has {length}")
    pixels = math.prod(image)
    if kb * length * pixels > _COL2IM_MAX:
        raise ModelError(f"Col2Im of {kb * length} columns into {pixels} pixels is too large "
                         "for kiln's scatter-matrix lowering")
    m = np.zeros((kb, length, pixels), dtype=x.dtype.np)
    for bi, off in enumerate(itertools.product(*[range(b) for b in block])):
        for li, pos in enumerate(itertools.product(*[range(c) for c in counts])):
            pix = [pos[d] * strides[d] - pads[d] + off[d] * dil[d] for d in range(k)]
            if all(0 <= pix[d] < image[d] for d in range(k)):
                m[bi, li, int(np.ravel_multi_index(pix, image))] += 1
    c = cb // kb
    y = ctx.emit("matmul", [reshape(ctx, x, (n, c, kb * length)),
                            ctx.constant(m.reshape(kb * length, pixels))])
    return [reshape(ctx, y, (n, c, *image))]


# -- EyeLike, BitCast ---------------------------------------------------------------------------
@onnx_op("EyeLike")
def _eye_like(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x = ctx.required(0)
    rows, cols = _static_shape(x, "EyeLike") if x.type.rank == 2 else (None, None)
    if rows is None:
        raise ModelError(f"EyeLike needs a 2-D input, got {x.type}")
    dt = ctx.attr("dtype")
    dtype = x.dtype if dt is None else onnx_dtype(dt, "EyeLike dtype")
    eye = np.eye(rows, cols, k=int(ctx.attr("k", 0)), dtype=dtype.np)
    return [ctx.constant(eye, dtype=dtype)]


@onnx_op("BitCast")
def _bitcast(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x = ctx.required(0)
    to = onnx_dtype(ctx.attr("to"), "BitCast to")
    if to == x.dtype:
        return [x]
    if to.np.itemsize != x.dtype.np.itemsize:
        raise ModelError(f"BitCast needs types of one width, got {x.dtype} -> {to}")
    return [ctx.emit("bitcast", [x], dtype=to)]


# -- ReverseSequence, Det, MaxUnpool ------------------------------------------------------------
@onnx_op("ReverseSequence")
def _reverse_sequence(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    """``y[.., t, .., b, ..] = x[.., lens[b] - 1 - t, .., b, ..]`` for ``t < lens[b]``: a
    gather_elements along the time axis at indices computed from the lengths."""
    x, lens = ctx.required(0), ctx.required(1)
    shape = _static_shape(x, "ReverseSequence")
    rank = len(shape)
    taxis = normalize_axis(ctx.attr("time_axis", 0), rank)
    baxis = normalize_axis(ctx.attr("batch_axis", 1), rank)
    if {taxis, baxis} != {0, 1}:
        raise ModelError(f"ReverseSequence needs time_axis and batch_axis 0 and 1, got "
                         f"{taxis} and {baxis}")
    lens = ctx.emit("cast", [lens], dtype=DType.int64) if lens.dtype != DType.int64 else lens
    view = [1] * rank
    view[baxis] = shape[baxis]
    lens = reshape(ctx, lens, tuple(view))
    tview = [1] * rank
    tview[taxis] = shape[taxis]
    t = ctx.constant(np.arange(shape[taxis], dtype=np.int64).reshape(tview))
    rev = ctx.emit("sub", [ctx.emit("sub", [lens, ctx.constant(np.array(1, np.int64))]), t])
    idx = ctx.emit("where", [ctx.emit("less", [t, lens]), rev, t])
    idx = ctx.emit("broadcast_to", [idx], shape=shape)
    return [ctx.emit("gather_elements", [x, idx], axis=taxis)]


_DET_MAX = 5     # n! products of n gathered elements: beyond 5x5 the permutation sum is too big


@onnx_op("Det")
def _det(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    """The Leibniz formula: ``sum_p sign(p) prod_i x[i, p(i)]`` over the n! permutations,
    as one gather, a product over the last axis and a weighted sum."""
    x = ctx.required(0)
    n = static_dim(x, -1, "Det")
    if x.type.rank < 2 or x.shape[-2] != n:
        raise ModelError(f"Det needs square matrices [..., n, n], got {x.type}")
    if n > _DET_MAX:
        raise ModelError(f"Det of {n}x{n} matrices: kiln expands the determinant over "
                         f"permutations, up to {_DET_MAX}x{_DET_MAX}")
    perms = list(itertools.permutations(range(n)))
    idx = np.array([[i * n + p[i] for i in range(n)] for p in perms], dtype=np.int64)
    sign = np.array([(-1) ** sum(a > b for a, b in itertools.combinations(p, 2))
                     for p in perms], dtype=x.dtype.np)
    flat = reshape(ctx, x, (*x.shape[:-2], n * n))
    terms = ctx.emit("gather", [flat, ctx.constant(idx)], axis=x.type.rank - 2)  # [..., P, n]
    prods = ctx.emit("reduce_prod", [terms], axes=(x.type.rank - 1,), keepdims=False)
    return [ctx.emit("reduce_sum", [ctx.emit("mul", [prods, ctx.constant(sign)])],
                     axes=(x.type.rank - 2,), keepdims=False)]


@onnx_op("MaxUnpool")
def _max_unpool(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    """Scatter each value to its flat index in a zero tensor of the inferred shape, then pad
    to ``output_shape`` when that is larger (ONNX's reference)."""
    x, ind = ctx.required(0), ctx.required(1)
    shape = _static_shape(x, "MaxUnpool")
    kernel = list(ctx.attr("kernel_shape"))
    k = len(kernel)
    strides = list(ctx.attr("strides", [1] * k))
    pads = list(ctx.attr("pads", [0] * 2 * k))
    inferred = [shape[0], shape[1]] + [(shape[d + 2] - 1) * strides[d] - pads[d] - pads[k + d]
                                       + kernel[d] for d in range(k)]
    out_shape = _int_list(ctx, 2, "MaxUnpool output_shape") or inferred
    total = math.prod(inferred)
    zeros = ctx.constant(np.zeros(total, dtype=x.dtype.np), dtype=x.dtype)
    ind = ctx.emit("cast", [ind], dtype=DType.int64) if ind.dtype != DType.int64 else ind
    y = ctx.emit("scatter_elements", [zeros, reshape(ctx, ind, (math.prod(shape),)),
                                      reshape(ctx, x, (math.prod(shape),))], axis=0)
    y = reshape(ctx, y, tuple(inferred))
    if list(out_shape) == inferred:
        return [y]
    if len(out_shape) != len(inferred) or any(o < i for o, i in zip(out_shape, inferred,
                                                                      strict=True)):
        raise ModelError(f"MaxUnpool output_shape {out_shape} is smaller than the inferred "
                         f"{inferred}")
    return [ctx.emit("pad", [y], pads=tuple([0] * len(inferred) + [o - i for o, i in zip(
        out_shape, inferred, strict=True)]))]


@onnx_op("RoiAlign")
def _roi_align(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    x, rois, batch = ctx.required(0), ctx.required(1), ctx.required(2)
    sr = int(ctx.attr("sampling_ratio", 0))
    if sr <= 0:
        raise ModelError("RoiAlign sampling_ratio=0 (adaptive: the sample count follows each "
                         "ROI's size at run time) is not supported; kiln needs a fixed count")
    # coordinate_transformation_mode arrived in opset 16 (default half_pixel); before, the
    # boxes were not shifted (output_half_pixel)
    ctm = ctx.attr("coordinate_transformation_mode",
                   "half_pixel" if ctx.opset >= 16 else "output_half_pixel")
    if ctm not in ("half_pixel", "output_half_pixel"):
        raise ModelError(f"RoiAlign coordinate_transformation_mode={ctm!r} is not half_pixel "
                         "or output_half_pixel")
    if rois.dtype != x.dtype:
        rois = ctx.emit("cast", [rois], dtype=x.dtype)
    if batch.dtype not in (DType.int32, DType.int64):
        batch = ctx.emit("cast", [batch], dtype=DType.int64)
    return [ctx.emit("roi_align", [x, rois, batch], output_height=int(
        ctx.attr("output_height", 1)), output_width=int(ctx.attr("output_width", 1)),
        sampling_ratio=sr, spatial_scale=float(ctx.attr("spatial_scale", 1.0)),
        mode=ctx.attr("mode", "avg"), half_pixel=ctm == "half_pixel")]


@onnx_op("DeformConv")
def _deform_conv(node: onnx.NodeProto, ctx: Context) -> list[Value]:
    """2-D deformable convolution as ONNX's reference computes it: each (offset group, kernel
    tap) samples the input bilinearly at its shifted positions (grid_sample, align_corners,
    zeros padding), the samples are scaled by the mask, and a (grouped) matmul with the
    weights sums them: ``[N, C * K, OH * OW]`` columns, im2col with moving taps."""
    x, wt, off = ctx.required(0), ctx.required(1), ctx.required(2)
    bias, mask = ctx.input(3), ctx.input(4)
    n, c, h, w = _static_shape(x, "DeformConv") if x.type.rank == 4 else (0, 0, 0, 0)
    if not c:
        raise ModelError(f"DeformConv takes 4-D inputs only, got {x.type}")
    oc, cg, kh, kw = _static_shape(wt, "DeformConv weight")
    _, _, oh, ow = _static_shape(off, "DeformConv offset")
    if h < 2 or w < 2:
        raise ModelError(f"DeformConv samples with align_corners, which needs H and W >= 2, "
                         f"got {x.type}")
    group, og = int(ctx.attr("group", 1)), int(ctx.attr("offset_group", 1))
    sh, sw = ctx.attr("strides", [1, 1])
    dh, dw = ctx.attr("dilations", [1, 1])
    pads = ctx.attr("pads", [0, 0, 0, 0])
    k, p = kh * kw, oh * ow
    if c != cg * group or oc % group or c % og or off.shape[1] != 2 * og * k:
        raise ModelError(f"DeformConv shapes disagree: x {x.type}, weight {wt.type}, offset "
                         f"{off.type}, group {group}, offset_group {og}")
    want = ((h + pads[0] + pads[2] - (kh - 1) * dh - 1) // sh + 1,
            (w + pads[1] + pads[3] - (kw - 1) * dw - 1) // sw + 1)
    if (oh, ow) != want:
        raise ModelError(f"DeformConv offset's spatial dims {(oh, ow)} are not the output's "
                         f"{want}")
    # base sampling positions per tap and output pixel, as (x, y) for grid_sample
    ky, kx = np.meshgrid(np.arange(kh) * dh, np.arange(kw) * dw, indexing="ij")
    py, px = np.meshgrid(np.arange(oh) * sh - pads[0], np.arange(ow) * sw - pads[1],
                         indexing="ij")
    base = np.stack([kx.reshape(k, 1) + px.reshape(1, p), ky.reshape(k, 1) + py.reshape(1, p)],
                    axis=-1).astype(np.float64)                           # [K, P, 2]
    scale = np.array([2.0 / (w - 1), 2.0 / (h - 1)])
    dt = x.dtype.np
    o = ctx.emit("transpose", [reshape(ctx, off, (n, og, k, 2, p))], perm=(0, 1, 2, 4, 3))
    # reverse (dy, dx) to (dx, dy): -3 is "past index 0" in kiln's Python-style slicing
    o = ctx.emit("slice", [o], axes=(4,), starts=(1,), ends=(-3,), steps=(-1,))
    grid = ctx.emit("add", [ctx.emit("mul", [o, ctx.constant(scale.astype(dt))]),
                            ctx.constant((base * scale - 1).astype(dt))])
    grid = reshape(ctx, grid, (n * og, k, p, 2))
    cols = ctx.emit("grid_sample", [reshape(ctx, x, (n * og, c // og, h, w)), grid],
                    mode="linear", padding_mode="zeros", align_corners=True)  # [N*og, c/og, K, P]
    cols = reshape(ctx, cols, (n, og, c // og, k, p))
    if mask is not None:
        cols = ctx.emit("mul", [cols, reshape(ctx, mask, (n, og, 1, k, p))])
    cols = reshape(ctx, cols, (n, group, cg * k, p))
    wm = reshape(ctx, wt, (group, oc // group, cg * k))
    y = reshape(ctx, ctx.emit("matmul", [wm, cols]), (n, oc, oh, ow))
    if bias is not None:
        y = ctx.emit("add", [y, reshape(ctx, bias, (oc, 1, 1))])
    return [y]
