"""The x86 direct-convolution templates (NCHW input, OIHW weight, no layout change).

    y[n, o, oh, ow] = sum_{c, kh, kw} xp[n, c, oh*sh + kh*dh, ow*sw + kw*dw] * w[o, c, kh, kw]

Vectors run along the output width: it is the contiguous axis of the NCHW output, and, thanks
to the stride-phase split of the padding stage (see ``kiln.schedules.compute.conv``), the input
a tap reads for consecutive output columns is contiguous too, whatever the stride. So each FMA
is ``acc[o, ow : ow + owl] += w[o, c, kh, kw] * xp[c, row, col : col + owl]``: one unaligned
input load shared by ``ocr`` output channels, the weight folded into the FMA as an embedded
broadcast (``vfmadd231ps mem{1to16}``). The weight stays OIHW; vectorising along output channels
instead would need the weight packed at compile time and a transposing store of the output.

A vector holds ``owl`` <= lanes columns, chosen to divide the output width (56 columns: vectors
of 14, 12.5% of the lanes idle). A vector wider than a register but not a multiple of it (56 at
once, say) is legal TIR, but LLVM splits such loop-carried accumulators badly: it spills them
and rebuilds them lane by lane, 3-10x slower. A tile that overhangs its extent is predicated
inside the reduction (3x slower); defaults never overhang.

General convolution (``schedule_conv2d``)::

    parallel for n, c, row:                 # the padding stage, once, before the convolution
      xp[n, c, row, :, :] = pad(x)          # vectorised along the row
    parallel for n, oct, oht:               # one task: occ output channels x ohc output rows
      for ocb, ohi, owo:                    # one ocr x (owv x owl) register tile of y
        acc[ocr, owv * owl] = 0             # ocr * owv vector registers
        for c, kh:                          # the whole reduction runs in registers
          for kw, oi, vi (unrolled):        # broadcast w[o, c, kh, kw], FMA into each vector
            acc[oi, vi, :] += w[o, c, kh, kw] * xp[c, row, col : col + owl]   (vectorised)
        y[tile] = epilogue(acc)             # bias, relu... applied once, stored once

Depthwise convolution (``schedule_depthwise_conv2d``): each output channel reads one input
channel, so there is nothing to share across channels and the tile runs along rows instead;
there is little arithmetic per byte, so the padded plane is made inside the task, in cache::

    parallel for n, o, oht:                 # one task: ohc rows of one channel plane
      xp[rows the task reads] = pad(x[n, o // multiplier])
      for ohb, owo:                         # one ohr x (owv x owl) register tile
        acc[ohr, owv * owl] = 0
        for kh, kw, oi, vi (unrolled):
          acc[oi, vi, :] += w[o, 0, kh, kw] * xp[row(oi, kh), col : col + owl]  (vectorised)
        y[tile] = epilogue(acc)

Where the padding stage runs is the ``pad_in_task`` knob: inside each task it stays in cache
but is redone for the rows tasks share (kh / sh times, and once per channel block). Measured
on one core: a stride-2 3x3 convolution ran 20-30% faster with it hoisted, a depthwise one on a
112 x 112 plane about 40% slower.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir

from kiln.errors import KnobError
from kiln.schedules.x86.common import (
    MIN_PARALLEL_ELEMS,
    block_name,
    extent,
    inline_pointwise,
    output_blocks,
    total_extent,
)
from kiln.target import Isa

# Enough parallel tasks to balance a many-core CPU; fewer rows or channels per task past that.
TARGET_TASKS = 32
# The padding stage is vectorised along whole input rows up to this many vectors wide.
MAX_PAD_VECTORS = 16


@dataclass(frozen=True)
class CpuConvKnobs:
    """General direct convolution. Register tile: ``ocr`` output channels x ``owv`` vectors of
    ``owl`` output columns. One parallel task: ``occ`` output channels x ``ohc`` output rows.
    ``pad_in_task``: pad the rows a task reads inside it, rather than all rows up front."""

    ocr: int
    owv: int
    owl: int
    occ: int
    ohc: int
    pad_in_task: bool = False


@dataclass(frozen=True)
class CpuDepthwiseKnobs:
    """Depthwise convolution. Register tile: ``ohr`` output rows x ``owv`` vectors of ``owl``
    output columns. One parallel task: ``ohc`` rows of one output channel. ``pad_in_task`` as
    for ``CpuConvKnobs``."""

    ohr: int
    owv: int
    owl: int
    ohc: int
    pad_in_task: bool = True


ConvKnobs = CpuConvKnobs | CpuDepthwiseKnobs


def vector_width(ow: int, lanes: int) -> int:
    """Columns per vector: the divisor of the output width, at most one register wide, that
    fills its register best (56 columns: 4 vectors of 14; 7 columns: one of 7). A prime width
    wider than a register gets full vectors and a predicated tail instead."""
    best = max((d for d in range(1, min(ow, lanes) + 1) if ow % d == 0),
               key=lambda d: (d / lanes, d))
    return lanes if 2 * best < lanes < ow else best


def _divisor_at_most(n: int, bound: int) -> int:
    return max(d for d in range(1, max(1, min(n, bound)) + 1) if n % d == 0)


def default_conv_knobs(out_shape: tuple[int, int, int, int],
                       weight_shape: tuple[int, int, int, int], groups: int, isa: Isa,
                       dtype: str = "float32") -> ConvKnobs:
    """Untuned defaults from the vector width, the register count and the problem size;
    depthwise knobs when each output channel reads a single input channel.

    Every tile size divides its extent: a tile that overhangs is predicated, and the predicate
    sits inside the reduction (3x slower on the 64-channel 3x3 conv). Vectors hold ``owl``
    columns (``vector_width``). The register tile aims at half the registers as accumulators
    (16 of 32 zmm, 8 of 16 ymm: enough independent FMA chains to cover FMA latency x issue
    width, and room left for the input vectors): first as many output channels as divide the
    channel count (each input vector loaded feeds them all), then more vectors along the row
    when the channels run out. A 64-channel 56 x 56 output on AVX-512: 16 channels x 1 vector
    of 14 columns.
    """
    n, oc, oh, ow = out_shape
    lanes, regs = isa.lanes(dtype), isa.vector_registers
    owl = vector_width(ow, lanes)
    row_vectors = max(ow // owl, 1)     # whole vectors: a tile never overhangs the row
    accumulators = regs // 2
    if weight_shape[1] == 1 and groups > 1:
        ohr = _divisor_at_most(oh, accumulators // 2)
        owv = _divisor_at_most(row_vectors, accumulators // ohr)
        blocks = oh // ohr
        per_plane = -(-TARGET_TASKS // (n * oc))         # tasks wanted per channel plane
        ohc = ohr * _divisor_at_most(blocks, -(-blocks // per_plane))
        return CpuDepthwiseKnobs(ohr=ohr, owv=owv, owl=owl, ohc=ohc)

    ocr = _divisor_at_most(oc, accumulators)
    owv = _divisor_at_most(row_vectors, min(4, accumulators // ocr))
    ohc = _divisor_at_most(oh, n * oh // TARGET_TASKS)
    blocks = oc // ocr
    chunks = -(-TARGET_TASKS // (n * oh // ohc))       # split channels only when rows run out
    occ = ocr * _divisor_at_most(blocks, -(-blocks // chunks))
    return CpuConvKnobs(ocr=ocr, owv=owv, owl=owl, occ=occ, ohc=ohc)


def check_knobs(cfg: ConvKnobs, isa: Isa, dtype: str = "float32") -> None:
    lanes, regs = isa.lanes(dtype), isa.vector_registers
    for name, value in vars(cfg).items():
        if not isinstance(value, bool) and value < 1:
            raise KnobError(f"conv knob {name}={value} must be >= 1")
    if cfg.owl > lanes and cfg.owl % lanes:
        # LLVM widens such a vector to whole registers and splits it badly in loop-carried
        # values: the accumulators end up spilled and rebuilt lane by lane.
        raise KnobError(f"conv knob owl={cfg.owl} must be at most the vector width {lanes} "
                        "or a multiple of it")
    v = cfg.owv * -(-cfg.owl // lanes)
    rows = cfg.ocr if isinstance(cfg, CpuConvKnobs) else cfg.ohr
    if rows * v + v + 1 > regs:
        raise KnobError(f"conv register tile {rows} x {cfg.owv} x {cfg.owl} needs {rows * v} "
                        f"accumulators and {v} input vectors: more than the {regs} registers")
    if isinstance(cfg, CpuConvKnobs) and cfg.occ % cfg.ocr:
        raise KnobError(f"conv knob occ={cfg.occ} must be a multiple of ocr={cfg.ocr}")
    if isinstance(cfg, CpuDepthwiseKnobs) and cfg.ohc % cfg.ohr:
        raise KnobError(f"conv knob ohc={cfg.ohc} must be a multiple of ohr={cfg.ohr}")


def _check_fits(cfg: ConvKnobs, sch: s_tir.Schedule, loops: list) -> None:
    _, oc, oh, ow = (extent(sch, lp) for lp in loops[:4])
    if cfg.owv * cfg.owl > ow:
        raise KnobError(f"conv tile row {cfg.owv} x {cfg.owl} exceeds the output width {ow}")
    if isinstance(cfg, CpuDepthwiseKnobs) and cfg.ohc > oh:
        raise KnobError(f"conv knob ohc={cfg.ohc} exceeds the output height {oh}")
    if isinstance(cfg, CpuConvKnobs) and cfg.occ >= oc + cfg.ocr:
        raise KnobError(f"conv knob occ={cfg.occ} exceeds the output channels {oc} by a "
                        f"whole register tile (ocr={cfg.ocr})")


def _vectorize_inner(sch: s_tir.Schedule, block, lanes: int, most: int) -> None:
    """Vectorise the innermost loop of ``block`` whole when at most ``most`` lanes, else in
    the widest dividing chunk of at least one vector (else leave it to LLVM)."""
    inner = sch.get_loops(block)[-1]
    e = extent(sch, inner)
    if e <= 1:
        return
    if e > most:
        d = max(d for d in range(1, most + 1) if e % d == 0)
        if d < lanes:
            return
        _, inner = sch.split(inner, [None, d])
    sch.vectorize(inner)


def _prepare(sch: s_tir.Schedule, conv: str, cfg: ConvKnobs,
             isa: Isa) -> tuple[object, list[str], bool, list, str]:
    """Check the knobs and inline the epilogue into one block. Returns the conv block, its
    padding stage (kept a stage of its own: zero or one name), whether the conv block is itself
    an output, its loops (n, o, oh, ow, c, kh, kw) and its dtype."""
    pads = [block_name(sch, p) for p in sch.get_producers(sch.get_sblock(conv))]
    is_output = conv in {block_name(sch, b) for b in output_blocks(sch)}
    inline_pointwise(sch, keep={conv, *pads})
    block = sch.get_sblock(conv)
    dtype = str(sch.get(block).writes[0].source.dtype)
    check_knobs(cfg, isa, dtype)
    loops = sch.get_loops(block)
    _check_fits(cfg, sch, loops)
    return block, pads, is_output, loops, dtype


def _finish(sch: s_tir.Schedule, block, pads: list[str], is_output: bool, task, tile, init_at,
            cfg: ConvKnobs, lanes: int) -> None:
    """The tail both templates share: accumulate in registers, apply the epilogue and store once
    per tile, place the padding stage, zero the accumulators before the reduction."""
    write_back = sch.cache_write(block, 0, "local")
    if is_output:
        out = write_back
    else:
        sch.compute_inline(write_back)          # the epilogue reads the accumulators
        (out,) = output_blocks(sch)
    sch.reverse_compute_at(out, tile)
    _vectorize_inner(sch, out, cfg.owl, cfg.owl)
    for pad in pads:
        p = sch.get_sblock(pad)
        if cfg.pad_in_task:                     # only the rows this task reads
            sch.compute_at(p, task)
            # the guarded copy as zeros, then the inside unguarded (as below, in the task)
            # (at a loop inside the task's: at the task loop itself, which happens when the
            # row loops have extent 1, TVM's decompose_padding loses the conv block)
            parts = [p]
            loops = sch.get_loops(p)
            inside = [i for i, lp in enumerate(loops) if sch.get(lp).same_as(sch.get(task))]
            first = loops[-2]
            if len(loops) - 2 > inside[0] and sch.can_decompose_padding(p, first):
                parts.insert(0, sch.decompose_padding(p, first))
            for part in parts:
                _vectorize_inner(sch, part, lanes, MAX_PAD_VECTORS * lanes)
            continue
        # every padded row once, rows in parallel. A guarded copy vectorises badly (a scalar
        # load per lane); with one stride phase the guard is a rectangle: fill the zeros, then
        # copy the inside unguarded
        parts = [p]
        if sch.can_decompose_padding(p, sch.get_loops(p)[0]):
            parts.insert(0, sch.decompose_padding(p, sch.get_loops(p)[0]))
        for part in parts:
            n, c, row = sch.get_loops(part)[:3]
            rows = total_extent(sch, [n, c, row])     # None: a symbolic batch, taken as many
            if rows is None or rows * lanes >= MIN_PARALLEL_ELEMS:
                sch.parallel(sch.fuse(n, c, row))
            _vectorize_inner(sch, part, lanes, MAX_PAD_VECTORS * lanes)
    sch.decompose_reduction(block, init_at)


def schedule_conv2d(sch: s_tir.Schedule, conv: str, cfg: ConvKnobs, isa: Isa) -> None:
    """Schedule the kernel whose convolution block is named ``conv``; its other blocks are the
    padding stage and a pointwise epilogue (see the module docstring for the loop nest).
    Depthwise knobs select ``schedule_depthwise_conv2d``."""
    if isinstance(cfg, CpuDepthwiseKnobs):
        schedule_depthwise_conv2d(sch, conv, cfg, isa)
        return
    block, pads, is_output, loops, dtype = _prepare(sch, conv, cfg, isa)
    n, o, oh, ow, c, kh, kw = loops
    # occ channels per task: split only when there are too few rows to keep every core busy.
    # ocr channels per register tile: each input vector loaded feeds ocr FMAs.
    oct_, ocb, oci = sch.split(o, [None, cfg.occ // cfg.ocr, cfg.ocr])
    # ohc rows per task: more rows reuse the task's weights longer, fewer make more tasks.
    oht, ohi = sch.split(oh, [None, cfg.ohc])
    # owv vectors of owl columns per register tile, along the contiguous output row.
    owo, owv, owl = sch.split(ow, [None, cfg.owv, cfg.owl])
    sch.reorder(n, oct_, oht, ocb, ohi, owo, c, kh, kw, oci, owv, owl)
    task = sch.fuse(n, oct_, oht)
    sch.parallel(task)                          # tasks write disjoint output blocks: no locks
    sch.unroll(kw)
    sch.unroll(oci)
    sch.unroll(owv)
    sch.vectorize(owl)
    _finish(sch, block, pads, is_output, task, owo, c, cfg, isa.lanes(dtype))


def schedule_depthwise_conv2d(sch: s_tir.Schedule, conv: str, cfg: CpuDepthwiseKnobs,
                              isa: Isa) -> None:
    """The depthwise template (see the module docstring); correct for any conv2d, efficient
    when each output channel reads one input channel."""
    block, pads, is_output, loops, dtype = _prepare(sch, conv, cfg, isa)
    n, o, oh, ow, c, kh, kw = loops
    # ohc rows per task (a channel plane, or a slice of it when planes are too few to share
    # out); ohr rows per register tile: each weight broadcast feeds ohr FMAs.
    oht, ohb, ohi = sch.split(oh, [None, cfg.ohc // cfg.ohr, cfg.ohr])
    # owv vectors of owl columns per register tile, along the contiguous output row.
    owo, owv, owl = sch.split(ow, [None, cfg.owv, cfg.owl])
    sch.reorder(n, o, oht, ohb, owo, c, kh, kw, ohi, owv, owl)
    task = sch.fuse(n, o, oht)
    sch.parallel(task)
    sch.unroll(kh)
    sch.unroll(kw)
    sch.unroll(ohi)
    sch.unroll(owv)
    sch.vectorize(owl)
    _finish(sch, block, pads, is_output, task, owo, c, cfg, isa.lanes(dtype))
