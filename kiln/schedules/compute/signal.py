"""TE compute of signal processing and sampling ops: grid_sample and bitcast.

``grid_sample`` is one ``te.compute``: each output element computes its sampling coordinates
from the grid, then sums the taps (1 for nearest, 2 per dim for linear, 4 per dim for cubic)
with reads at computed indices, which are clamped into the input so that no read leaves the
buffer (an out-of-range tap under zeros padding is masked to 0 instead). The injective template
schedules it (parallel outer loops, the innermost one vectorised).
"""

from __future__ import annotations

import itertools
from typing import Any

from tvm import te, tirx

from kiln.ir.ops.signal import CUBIC_ALPHA, RoiPool, SampleMode, SamplePadding
from kiln.schedules.compute.registry import NodeInfo, compute, const, shape_of

COORD = "float32"     # ONNX's reference denormalises coordinates into float32


def _reflect(x: Any, lo: float, hi: float) -> Any:
    """Fold a float32 coordinate outside ``[lo, hi]`` back in by reflecting at the borders:
    the triangle wave ``lo + rng - |((x - lo) mod 2 rng) - rng|``, the closed form of the
    spec's reflect-until-inside loop. ``x`` is read a few times only: the taps read the
    result again, and deeper nesting makes expressions that take minutes to compile."""
    rng = hi - lo
    if rng <= 0:
        return const(lo, COORD)
    z = x - const(lo, COORD)
    y = z - tirx.floor(z / const(2 * rng, COORD)) * const(2 * rng, COORD)   # floored mod
    tri = const(lo + rng, COORD) - tirx.abs(y - const(rng, COORD))
    return tirx.Select(tirx.any(x < const(lo, COORD), x > const(hi, COORD)), tri, x)


def _reflect_index(i: Any, dim: int, align_corners: bool) -> Any:
    """The spec's reflection of an integer tap position, in integer arithmetic: with
    align_corners the borders are pixels 0 and dim - 1 (period 2 (dim - 1)); without, the
    edges -0.5 and dim - 0.5 (period 2 dim, each edge pixel repeated once)."""
    if align_corners:
        if dim <= 1:
            return const(0, "int32")
        period = 2 * (dim - 1)
        y = tirx.floormod(i, const(period, "int32"))
        return tirx.Select(y > const(dim - 1, "int32"), const(period, "int32") - y, y)
    y = tirx.floormod(i, const(2 * dim, "int32"))
    return tirx.Select(y >= const(dim, "int32"), const(2 * dim - 1, "int32") - y, y)


def _cubic(t: Any, dt: str) -> list[Any]:
    """Keys' 4 weights (taps ``floor - 1 .. floor + 2``) at fraction ``t`` of dtype ``dt``."""
    a = CUBIC_ALPHA

    def c(v: float) -> Any:
        return const(v, dt)

    one, two = c(1), c(2)
    return [((c(a) * (t + one) - c(5 * a)) * (t + one) + c(8 * a)) * (t + one) - c(4 * a),
            ((c(a + 2) * t - c(a + 3)) * t) * t + one,
            ((c(a + 2) * (one - t) - c(a + 3)) * (one - t)) * (one - t) + one,
            ((c(a) * (two - t) - c(5 * a)) * (two - t) + c(8 * a)) * (two - t) - c(4 * a)]


@compute("grid_sample")
def grid_sample(n: NodeInfo, x: te.Tensor, grid: te.Tensor) -> te.Tensor:
    at = n.attrs
    dims = shape_of(x)[2:]
    if not all(isinstance(d, int) for d in dims):
        raise ValueError("grid_sample needs static spatial dims of x")
    k = len(dims)
    lo = [0.0 if at.align_corners else -0.5 for _ in dims]
    hi = [d - 1.0 if at.align_corners else d - 0.5 for d in dims]
    dt = n.dtype
    pad = at.padding_mode

    def coord(b: Any, sp: tuple[Any, ...], d: int) -> Any:
        g = grid(b, *sp, k - 1 - d).astype(COORD)
        if at.align_corners:
            v = (g + const(1, COORD)) / const(2, COORD) * const(dims[d] - 1, COORD)
        else:
            v = ((g + const(1, COORD)) * const(dims[d], COORD) - const(1, COORD)) \
                / const(2, COORD)
        if at.mode is SampleMode.NEAREST:
            v = tirx.nearbyint(v)
        if pad is SamplePadding.BORDER:     # only coordinates past the borders move
            outside = tirx.any(v < const(lo[d], COORD), v > const(hi[d], COORD))
            v = tirx.Select(outside, tirx.max(tirx.min(v, const(dims[d] - 1, COORD)),
                                              const(0, COORD)), v)
        elif pad is SamplePadding.REFLECTION:
            v = _reflect(v, lo[d], hi[d])
        return v

    def tap(i: Any, d: int) -> tuple[Any, Any]:
        """The index a tap at integer position ``i`` reads along dim ``d`` (always inside
        the buffer), and under zeros padding whether it counts (None: always)."""
        top = const(dims[d] - 1, "int32")
        zero = const(0, "int32")
        if pad is SamplePadding.REFLECTION:
            i = _reflect_index(i, dims[d], at.align_corners)
        clamped = tirx.max(tirx.min(i, top), zero)
        if pad is SamplePadding.ZEROS:
            return clamped, tirx.all(i >= zero, i <= top)
        return clamped, None

    def f(b: Any, c: Any, *sp: Any) -> Any:
        per_dim: list[list[tuple[Any, Any, Any]]] = []   # per dim: (index, counts, weight)
        for d in range(k):
            v = coord(b, sp, d)
            if at.mode is SampleMode.NEAREST:
                taps = [(v.astype("int32"), None)]
            else:
                fl = tirx.floor(v)
                t = (v - fl).astype(dt)
                base = fl.astype("int32")
                if at.mode is SampleMode.LINEAR:
                    taps = [(base, const(1, dt) - t), (base + 1, t)]
                else:
                    taps = [(base + (j - 1), w) for j, w in enumerate(_cubic(t, dt))]
            per_dim.append([(*tap(i, d), w) for i, w in taps])
        total = None
        for combo in itertools.product(*per_dim):
            ok, w = None, None
            for _, okd, wd in combo:
                if okd is not None:
                    ok = okd if ok is None else tirx.all(ok, okd)
                if wd is not None:
                    w = wd if w is None else w * wd
            px = x(b, c, *[i for i, _, _ in combo])
            term = px if w is None else px * w
            if ok is not None:
                term = tirx.Select(ok, term, const(0, dt))
            total = term if total is None else total + term
        return total

    return te.compute(n.shape, f, name=n.name)


@compute("bitcast")
def bitcast(n: NodeInfo, x: te.Tensor) -> te.Tensor:
    if x.dtype == "bool" or n.dtype == "bool":    # bool is one byte holding 0 or 1
        return te.compute(n.shape, lambda *i: x(*i).astype(n.dtype), name=n.name)
    return te.compute(n.shape, lambda *i: tirx.reinterpret(n.dtype, x(*i)), name=n.name)


@compute("roi_align")
def roi_align(n: NodeInfo, x: te.Tensor, rois: te.Tensor, batch: te.Tensor) -> te.Tensor:
    """Each output bin: ``sampling_ratio**2`` bilinear samples (4 reads each) averaged, or
    the maximum of the weighted corner values (ONNX's max mode)."""
    at = n.attrs
    nb, _, h, w = shape_of(x)
    dt = n.dtype
    sr = at.sampling_ratio

    def c(v: float) -> Any:
        return const(v, dt)

    def axis(start: Any, size: Any, p: Any, i: int, dim: int) -> tuple[Any, ...]:
        """One sample's (low, high, high weight, off the map) along one axis."""
        v = start + p.astype(dt) * size + c(i + 0.5) * size / c(sr)
        off = tirx.any(v < c(-1.0), v > c(dim))
        v = tirx.max(v, c(0))
        raw = v.astype("int32")
        edge = raw >= const(dim - 1, "int32")
        low = tirx.Select(edge, const(dim - 1, "int32"), raw)
        high = tirx.Select(edge, const(dim - 1, "int32"), raw + 1)
        frac = tirx.Select(edge, c(dim - 1), v) - low.astype(dt)
        return low, high, frac, off

    def f(r: Any, ch: Any, ph: Any, pw: Any) -> Any:
        shift = c(0.5) if at.half_pixel else c(0)
        box = [rois(r, j) * c(at.spatial_scale) - shift for j in range(4)]
        rw, rh = box[2] - box[0], box[3] - box[1]
        if not at.half_pixel:
            rw, rh = tirx.max(rw, c(1)), tirx.max(rh, c(1))
        bh, bw = rh / c(at.output_height), rw / c(at.output_width)
        b = batch(r).astype("int32")
        b = tirx.max(tirx.min(b, const(nb - 1, "int32")), const(0, "int32"))
        total = None
        ys = [axis(box[1], bh, ph, i, h) for i in range(sr)]    # shared by every sample row
        xs = [axis(box[0], bw, pw, i, w) for i in range(sr)]
        for ylo, yhi, ly, yoff in ys:
            for xlo, xhi, lx, xoff in xs:
                ok = tirx.all(tirx.Not(yoff), tirx.Not(xoff))
                hy, hx = c(1) - ly, c(1) - lx
                vals = [tirx.Select(ok, ww, c(0)) * x(b, ch, yy, xx) for yy, xx, ww in
                        ((ylo, xlo, hy * hx), (ylo, xhi, hy * lx), (yhi, xlo, ly * hx),
                         (yhi, xhi, ly * lx))]
                if at.mode is RoiPool.AVG:
                    v = vals[0] + vals[1] + vals[2] + vals[3]
                    total = v if total is None else total + v
                else:
                    v = tirx.max(tirx.max(vals[0], vals[1]), tirx.max(vals[2], vals[3]))
                    total = v if total is None else tirx.max(total, v)
        return total / c(sr * sr) if at.mode is RoiPool.AVG else total

    return te.compute(n.shape, f, name=n.name)
