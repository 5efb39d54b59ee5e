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

from kiln.ir.ops.signal import CUBIC_ALPHA, SampleMode, SamplePadding
from kiln.schedules.compute.registry import NodeInfo, compute, const, shape_of

COORD = "float32"     # ONNX's reference denormalises coordinates into float32


def _reflect(x: Any, lo: float, hi: float) -> Any:
    """Fold ``x`` (float32) back into ``[lo, hi]`` by reflecting at the near border."""
    rng = hi - lo
    if rng <= 0:
        return const(lo, COORD)

    def fold(dx: Any, start: float, end: float, sign: float) -> Any:
        n = tirx.trunc(dx / const(rng, COORD))
        r = dx - n * const(rng, COORD)
        even = tirx.floormod(n.astype("int64"), 2) == 0
        return tirx.Select(even, const(start, COORD) + const(sign, COORD) * r,
                           const(end, COORD) - const(sign, COORD) * r)

    below = fold(const(lo, COORD) - x, lo, hi, 1.0)
    above = fold(x - const(hi, COORD), hi, lo, -1.0)
    return tirx.Select(x < const(lo, COORD), below, tirx.Select(x > const(hi, COORD), above, x))


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
            i = tirx.trunc(_reflect(i.astype(COORD), lo[d], hi[d])).astype("int32")
        clamped = tirx.max(tirx.min(i, top), zero)
        if pad is SamplePadding.ZEROS:
            return clamped, tirx.all(i >= zero, i <= top)
        return clamped, None

    def f(b: Any, c: Any, *sp: Any) -> Any:
        per_dim: list[list[tuple[Any, Any]]] = []
        for d in range(k):
            v = coord(b, sp, d)
            if at.mode is SampleMode.NEAREST:
                per_dim.append([(v.astype("int32"), None)])
                continue
            fl = tirx.floor(v)
            t = (v - fl).astype(dt)
            base = fl.astype("int32")
            if at.mode is SampleMode.LINEAR:
                per_dim.append([(base, const(1, dt) - t), (base + 1, t)])
            else:
                per_dim.append([(base + (j - 1), w) for j, w in enumerate(_cubic(t, dt))])
        total = None
        for combo in itertools.product(*per_dim):
            idx, ok, w = [], None, None
            for d, (i, wd) in enumerate(combo):
                j, okd = tap(i, d)
                idx.append(j)
                if okd is not None:
                    ok = okd if ok is None else tirx.all(ok, okd)
                if wd is not None:
                    w = wd if w is None else w * wd
            px = x(b, c, *idx)
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
