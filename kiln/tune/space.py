"""Config spaces: every valid setting of a template's named knobs for one workload.

Each knob ranges over values that make sense for the problem (a register tile no wider than
the padded output, a cache tile of whole register tiles, an unroll that divides K); the
template's own check then prunes what would not compile well (a register tile whose
accumulators and operands spill past the vector registers). The default comes first.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import fields
from typing import Any

from kiln.codegen.lower import Template, gemm_dims
from kiln.errors import KnobError
from kiln.schedules import arm, x86
from kiln.schedules.x86.attention import check_attention_knobs
from kiln.schedules.x86.conv import check_knobs as check_conv_knobs
from kiln.schedules.x86.gemm import check_knobs as check_gemm_knobs
from kiln.schedules.x86.gemm import check_tile_knobs, round_up
from kiln.schedules.x86.int_gemm import VPDPBUSD, DotGemmKnobs
from kiln.schedules.x86.reduce import RowReductionKnobs, check_row_knobs
from kiln.tune.workload import Workload

KNOB_TYPES = {cls.__name__: cls for cls in (
    x86.CpuGemmKnobs, DotGemmKnobs, x86.CpuConvKnobs, x86.CpuDepthwiseKnobs,
    x86.AttentionKnobs, RowReductionKnobs)}


def knobs_to_dict(knobs: Any) -> dict[str, Any]:
    return {f.name: getattr(knobs, f.name) for f in fields(knobs)}


def knobs_from_dict(type_name: str, values: dict[str, Any]) -> Any:
    if type_name not in KNOB_TYPES:
        raise KnobError(f"unknown knob type {type_name!r}")
    return KNOB_TYPES[type_name](**values)


def config_space(w: Workload) -> list[Any]:
    """All valid knob settings of ``w``'s template, the default first, no duplicates."""
    gen = {Template.GEMM: _gemm, Template.DOT_GEMM: _dot_gemm, Template.CONV2D: _conv,
           Template.ATTENTION: _attention, Template.ROW_REDUCTION: _row_reduction}
    out, seen = [w.default], {w.default}
    for cfg in gen[w.plan.template](w):
        if cfg not in seen:
            seen.add(cfg)
            out.append(cfg)
    return out


def _valid(configs: Iterable[Any], check) -> Iterator[Any]:
    for cfg in configs:
        try:
            check(cfg)
        except KnobError:
            continue
        yield cfg


def _divisors(n: int, most: int | None = None) -> list[int]:
    return [d for d in range(1, (most or n) + 1) if n % d == 0]


def _tiles(w: Workload, lanes: int, m: int, n: int, k_steps: int, cls: type,
           widths: int = 4) -> Iterator[Any]:
    """Register tile mr x nr (nr whole vectors, at most ``widths`` of them), cache tile of
    1 to 16 register tiles of rows and a divisor of the panel count of columns, unroll
    dividing the k steps."""
    for mr in range(1, min(m, 16) + 1):
        for nv in range(1, widths + 1):
            nr = nv * lanes
            if nr > round_up(n, lanes):
                continue
            tiles_m = -(-m // mr)
            panels = -(-n // nr)
            for t in (1, 2, 3, 4, 6, 8, 12, 16):
                if t > tiles_m:
                    continue
                for d in (1, 2, 3, 4, 6, 8):
                    if d > panels or panels % d:
                        continue
                    for ku in (1, 2, 4, 8, 16):
                        if k_steps % ku == 0:
                            yield cls(mr=mr, nr=nr, mc=mr * t, nc=nr * d, ku=ku)


def _gemm(w: Workload) -> Iterator[Any]:
    isa = w.target.isa
    m, n, k = gemm_dims(w.group.anchor)
    return _valid(_tiles(w, isa.lanes("float32"), m, n, k, x86.CpuGemmKnobs),
                  lambda c: check_gemm_knobs(c, isa))


def _dot_gemm(w: Workload) -> Iterator[Any]:
    dot = arm.SDOT if w.target.is_arm else VPDPBUSD
    m, n, k = gemm_dims(w.group.anchor)
    return _valid(_tiles(w, dot.lanes, m, n, -(-k // 4), DotGemmKnobs),
                  lambda c: check_tile_knobs(c, "dot gemm", dot.lanes, dot.registers))


def _conv(w: Workload) -> Iterator[Any]:
    isa, d = w.target.isa, w.default
    _, oc, oh, ow = w.group.anchor.outputs[0].type.static_shape
    lanes = isa.lanes(w.plan.dtype)
    # vector widths: the full vector, and divisors of the row at least half a vector (or half
    # the row) wide: a narrower one does under half the work per instruction
    widths = sorted({*(d for d in _divisors(ow, lanes) if 2 * d >= min(lanes, ow)), lanes})
    if isinstance(d, x86.CpuDepthwiseKnobs):
        gen = (x86.CpuDepthwiseKnobs(ohr=ohr, owv=owv, owl=owl, ohc=ohc, pad_in_task=pad)
               for owl in widths for owv in _divisors(max(ow // owl, 1), 8)
               for ohr in _divisors(oh, 16) for ohc in _divisors(oh) if ohc % ohr == 0
               for pad in (True, False))
    else:
        gen = (x86.CpuConvKnobs(ocr=ocr, owv=owv, owl=owl, occ=occ, ohc=ohc, pad_in_task=pad)
               for owl in widths for owv in _divisors(max(ow // owl, 1), 8)
               for ocr in _divisors(oc, 32) for occ in (ocr * f for f in _divisors(oc // ocr))
               for ohc in _divisors(oh) for pad in (False, True))
    return _valid(gen, lambda c: check_conv_knobs(c, isa, w.plan.dtype))


def _attention(w: Workload) -> Iterator[Any]:
    isa = w.target.isa
    lanes = isa.lanes("float32")
    t, dv = w.group.anchor.inputs[0].shape[-2], w.group.outputs[0].shape[-1]
    gen = (x86.AttentionKnobs(bq=bq, nv=nv * lanes)
           for bq in range(1, min(t, 16) + 1) for nv in (1, 2, 3, 4)
           if nv * lanes <= round_up(dv, lanes))
    return _valid(gen, lambda c: check_attention_knobs(c, isa))


def _row_reduction(w: Workload) -> Iterator[Any]:
    gen = (RowReductionKnobs(chains=c, fold_min=f, prefetch=p)
           for c, f, p in itertools.product((1, 2, 4, 8), (2, 4, 8, 16), (True, False)))
    return _valid(gen, check_row_knobs)
