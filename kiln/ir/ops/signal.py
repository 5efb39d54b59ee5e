"""Signal processing and sampling ops: grid sampling and bit reinterpretation.

``grid_sample`` reads input pixels at coordinates computed from the grid (data-dependent
gathers), so each output element is one expression over a few computed reads: it is injective
and takes the injective schedule. ``bitcast`` reinterprets each element's bits (elementwise).
DFT, windows and the rest of ONNX's signal ops are written in existing kiln ops by the frontend.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from enum import Enum

import numpy as np

from kiln.errors import ModelError
from kiln.ir.dtype import DType
from kiln.ir.ops.registry import OpDef, Pattern, register
from kiln.ir.types import TensorType


# -- grid_sample --------------------------------------------------------------------------------
class SampleMode(Enum):
    NEAREST = "nearest"
    LINEAR = "linear"
    CUBIC = "cubic"


class SamplePadding(Enum):
    ZEROS = "zeros"
    BORDER = "border"
    REFLECTION = "reflection"


@dataclass(frozen=True)
class GridSampleAttrs:
    """ONNX GridSample (opset 20+ names): ``x`` is ``[N, C, D1..Dk]``, ``grid`` is
    ``[N, H1..Hk, k]`` with normalised coordinates in ``[-1, 1]``, its last dim in reverse
    spatial order (``(x, y)`` for a 2-D image); the output is ``[N, C, H1..Hk]``."""

    mode: SampleMode = SampleMode.LINEAR
    padding_mode: SamplePadding = SamplePadding.ZEROS
    align_corners: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", SampleMode(self.mode))
        object.__setattr__(self, "padding_mode", SamplePadding(self.padding_mode))
        object.__setattr__(self, "align_corners", bool(self.align_corners))


CUBIC_ALPHA = -0.75     # Keys' cubic convolution, as PyTorch and ONNX use


def cubic_coeffs(t: np.ndarray) -> list[np.ndarray]:
    """The 4 weights of taps ``floor - 1 .. floor + 2`` at fraction ``t`` in ``[0, 1)``."""
    a = CUBIC_ALPHA
    return [((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,
            ((a + 2) * t - (a + 3)) * t * t + 1,
            ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1,
            ((a * (2 - t) - 5 * a) * (2 - t) + 8 * a) * (2 - t) - 4 * a]


def _infer_grid_sample(at: GridSampleAttrs, x: TensorType, grid: TensorType) -> TensorType:
    k = x.rank - 2
    if k < 1 or grid.rank != k + 2 or grid.shape[-1] != k:
        raise ModelError(f"grid_sample needs x [N, C, D1..Dk] and grid [N, H1..Hk, k], got "
                         f"{x} and {grid}")
    if not x.dtype.is_float or not grid.dtype.is_float:
        raise ModelError(f"grid_sample needs float x and grid, got {x.dtype} and {grid.dtype}")
    if at.mode is SampleMode.CUBIC and k != 2:
        raise ModelError(f"grid_sample: cubic mode takes 4-D inputs only (ONNX), got {x}")
    return TensorType((x.shape[0], x.shape[1], *grid.shape[1:-1]), x.dtype)


def _reflect(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Fold ``x`` back into ``[lo, hi]`` by reflecting at the near border until inside."""
    rng = hi - lo
    if rng <= 0:
        return np.full_like(x, lo)
    below, above = lo - x, x - hi
    out = x.copy()
    for dx, start, end, mask in ((below, lo, hi, x < lo), (above, hi, lo, x > hi)):
        n = np.trunc(dx / rng)
        r = dx - n * rng
        even = np.mod(n, 2) == 0
        sign = 1 if start == lo else -1
        folded = np.where(even, start + sign * r, end - sign * r)
        out = np.where(mask, folded, out)
    return out


def _grid_sample_ref(at: GridSampleAttrs, x: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Vectorised over output positions; the same arithmetic as ONNX's reference (float32
    coordinates, weights in the data's dtype)."""
    dims = x.shape[2:]
    k = len(dims)
    n_, c_ = x.shape[:2]
    out_sp = grid.shape[1:-1]
    lo = [0.0 if at.align_corners else -0.5 for _ in dims]
    hi = [d - 1.0 if at.align_corners else d - 0.5 for d in dims]
    coords = []
    for d in range(k):
        g = grid[..., k - 1 - d].astype(np.float32)
        if at.align_corners:
            v = (g + 1) / np.float32(2) * np.float32(dims[d] - 1)
        else:
            v = ((g + 1) * np.float32(dims[d]) - 1) / np.float32(2)
        v = v.astype(np.float32)
        if at.mode is SampleMode.NEAREST:
            v = np.rint(v)
        outside = (v < lo[d]) | (v > hi[d])
        if at.padding_mode is SamplePadding.BORDER:
            v = np.where(outside, np.clip(v, 0, dims[d] - 1), v)
        elif at.padding_mode is SamplePadding.REFLECTION:
            v = np.where(outside, _reflect(v, lo[d], hi[d]), v)
        coords.append(v.astype(np.float32))          # [N, H1..Hk]

    def tap_index(i: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray]:
        """The pixel index along dim d that tap position ``i`` reads, and whether it counts."""
        if at.padding_mode is SamplePadding.ZEROS:
            ok = (i >= 0) & (i < dims[d])
            return np.clip(i, 0, dims[d] - 1), ok
        if at.padding_mode is SamplePadding.BORDER:
            return np.clip(i, 0, dims[d] - 1), np.ones(i.shape, bool)
        r = np.trunc(_reflect(i.astype(np.float64), lo[d], hi[d])).astype(np.int64)
        return np.clip(r, 0, dims[d] - 1), np.ones(i.shape, bool)

    taps: list[list[tuple[np.ndarray, np.ndarray]]] = []   # per dim: (index, weight) pairs
    for v in coords:
        if at.mode is SampleMode.NEAREST:
            taps.append([(v.astype(np.int32).astype(np.int64), np.ones(v.shape, x.dtype))])
            continue
        f = np.floor(v)
        t = (v - f).astype(x.dtype)
        base = f.astype(np.int64)
        if at.mode is SampleMode.LINEAR:
            taps.append([(base, 1 - t), (base + 1, t)])
        else:
            w = cubic_coeffs(t)
            taps.append([(base + j - 1, w[j].astype(x.dtype)) for j in range(4)])
    batch = np.arange(n_).reshape((n_,) + (1,) * len(out_sp))
    out = np.zeros((n_, c_, *out_sp), dtype=x.dtype)
    xs = np.moveaxis(x, 1, -1)      # [N, D1..Dk, C]: one gather reads every channel
    for combo in itertools.product(*taps):
        idx, ok, w = [], np.ones(coords[0].shape, bool), np.ones(coords[0].shape, x.dtype)
        for d, (i, wd) in enumerate(combo):
            j, okd = tap_index(i, d)
            idx.append(j)
            ok &= okd
            w = (w * wd).astype(x.dtype)
        px = xs[(batch, *idx)]                              # [N, H1..Hk, C]
        px = np.where(ok[..., None], px, 0).astype(x.dtype)
        out += np.moveaxis(px * w[..., None], -1, 1).astype(x.dtype)
    return out


register(OpDef("grid_sample", GridSampleAttrs, Pattern.INJECTIVE, _infer_grid_sample,
               _grid_sample_ref, num_inputs=(2, 2)))


# -- bitcast ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BitcastAttrs:
    """Reinterpret each element's bits as ``dtype`` (of the same width)."""

    dtype: DType

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", DType(self.dtype))


def _infer_bitcast(at: BitcastAttrs, x: TensorType) -> TensorType:
    if x.dtype.np.itemsize != at.dtype.np.itemsize:
        raise ModelError(f"bitcast needs types of one width, got {x.dtype} -> {at.dtype}")
    return TensorType(x.shape, at.dtype)


def _bitcast_ref(at: BitcastAttrs, x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x).view(at.dtype.np)


register(OpDef("bitcast", BitcastAttrs, Pattern.ELEMENTWISE, _infer_bitcast, _bitcast_ref))


# -- roi_align ----------------------------------------------------------------------------------
class RoiPool(Enum):
    AVG = "avg"
    MAX = "max"


@dataclass(frozen=True)
class RoiAlignAttrs:
    """ONNX RoiAlign with a fixed ``sampling_ratio`` (sample points per bin and dim): ``x`` is
    ``[N, C, H, W]``, ``rois`` ``[R, 4]`` (x1, y1, x2, y2), ``batch`` ``[R]``; the output is
    ``[R, C, output_height, output_width]``. ``half_pixel`` shifts the scaled box by -0.5."""

    output_height: int = 1
    output_width: int = 1
    sampling_ratio: int = 1
    spatial_scale: float = 1.0
    mode: RoiPool = RoiPool.AVG
    half_pixel: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", RoiPool(self.mode))
        for f in ("output_height", "output_width", "sampling_ratio"):
            if int(getattr(self, f)) < 1:
                raise ModelError(f"roi_align {f} must be positive, got {getattr(self, f)}")


def _infer_roi_align(at: RoiAlignAttrs, x: TensorType, rois: TensorType,
                     batch: TensorType) -> TensorType:
    if x.rank != 4 or rois.rank != 2 or rois.shape[1] != 4 or batch.rank != 1:
        raise ModelError(f"roi_align needs x [N, C, H, W], rois [R, 4] and batch [R], got {x}, "
                         f"{rois} and {batch}")
    if not x.dtype.is_float or rois.dtype != x.dtype or batch.dtype not in (DType.int32,
                                                                            DType.int64):
        raise ModelError(f"roi_align needs float x and rois of one dtype and int batch indices, "
                         f"got {x.dtype}, {rois.dtype} and {batch.dtype}")
    return TensorType((rois.shape[0], x.shape[1], at.output_height, at.output_width), x.dtype)


def roi_sample_axis(start: np.ndarray, bin_size: np.ndarray, pooled: int, sr: int,
                    dim: int) -> tuple[np.ndarray, ...]:
    """Per ROI, output bin and sample point along one spatial axis (``[R, pooled, sr]``): the
    low and high pixel, the weight of the high one, and whether the point is off the map."""
    dt = start.dtype.type
    p = np.arange(pooled, dtype=start.dtype)[None, :, None]
    i = np.arange(sr, dtype=start.dtype)[None, None, :]
    s, b = start[:, None, None], bin_size[:, None, None]
    v = (s + p * b + (i + dt(0.5)) * b / dt(sr)).astype(start.dtype)
    off = (v < -1.0) | (v > dim)
    v = np.maximum(v, dt(0))
    low = v.astype(np.int64)
    edge = low >= dim - 1
    low = np.where(edge, dim - 1, low)
    high = np.where(edge, dim - 1, low + 1)
    v = np.where(edge, dt(dim - 1), v)
    frac = (v - low).astype(start.dtype)
    return low, high, frac, off


def _roi_align_ref(at: RoiAlignAttrs, x: np.ndarray, rois: np.ndarray,
                   batch: np.ndarray) -> np.ndarray:
    dt = x.dtype.type
    h, w = x.shape[2:]
    off = dt(0.5) if at.half_pixel else dt(0)
    box = (rois * dt(at.spatial_scale) - off).astype(x.dtype)
    rw, rh = box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]
    if not at.half_pixel:            # malformed boxes become 1x1
        rw, rh = np.maximum(rw, dt(1)), np.maximum(rh, dt(1))
    sr = at.sampling_ratio
    ylo, yhi, ly, yoff = roi_sample_axis(box[:, 1], rh / dt(at.output_height),
                                         at.output_height, sr, h)
    xlo, xhi, lx, xoff = roi_sample_axis(box[:, 0], rw / dt(at.output_width),
                                         at.output_width, sr, w)
    # broadcast to [R, ph, iy, pw, ix]
    ylo, yhi, ly, yoff = (a[:, :, :, None, None] for a in (ylo, yhi, ly, yoff))
    xlo, xhi, lx, xoff = (a[:, None, None, :, :] for a in (xlo, xhi, lx, xoff))
    hy, hx = dt(1) - ly, dt(1) - lx
    valid = ~(yoff | xoff)
    b = np.clip(batch.astype(np.int64), 0, x.shape[0] - 1)[:, None, None, None, None]
    xs = np.moveaxis(x, 1, -1)                                      # [N, H, W, C]
    taps = [(ylo, xlo, hy * hx), (ylo, xhi, hy * lx), (yhi, xlo, ly * hx), (yhi, xhi, ly * lx)]
    vals = [xs[b, yy, xx] * np.where(valid, ww, dt(0))[..., None] for yy, xx, ww in taps]
    if at.mode is RoiPool.AVG:
        out = (vals[0] + vals[1] + vals[2] + vals[3]).sum(axis=(2, 4)) / dt(sr * sr)
    else:
        out = np.maximum(np.maximum(vals[0], vals[1]), np.maximum(vals[2], vals[3]))
        out = out.max(axis=(2, 4))
    return np.moveaxis(out, -1, 1).astype(x.dtype)                  # [R, C, ph, pw]


register(OpDef("roi_align", RoiAlignAttrs, Pattern.INJECTIVE, _infer_roi_align,
               _roi_align_ref, num_inputs=(3, 3)))
