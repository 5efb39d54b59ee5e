"""The int8 1x1 convolution on AVX-512 VNNI (``vpdpbusd``), NCHW, no layout change, no packing.

A 1x1 convolution is a GEMM ``y[o, p] = sum_c w[o, c] * x[c, p]`` over the pixels ``p`` of a
plane. Pixels are the contiguous axis of NCHW, so the vectors run along them (16 int32 lanes:
16 pixels of one output channel, stored as they are computed). vpdpbusd sums, per int32 lane,
4 byte products along the reduction; here those are 4 channels of one pixel, which NCHW keeps
a plane apart. The intrinsic reads them as they lie: 4 loads of 16 bytes (4 channels x 16
pixels), one byte shuffle that interleaves them into 16 lanes x 4 channels, and the weight's
4 bytes ``w[o, c:c+4]`` broadcast to every lane (the constant weight is laid out [O, C] so
they are contiguous)::

    parallel for b, ot, h:                 # one task: occ output channels x one image row
      for wo, oo:                          # one mr x nr register tile (mr channels, nr pixels)
        acc[mr, nr] = 0
        for cq:                            # groups of 4 input channels
          for oi, wv (unrolled):           # x interleaved once per wv (LLVM shares it over oi)
            acc[oi, wv*16 : wv*16+16] += dot(shuffle(x[b, 4cq:4cq+4, h, wv*16 : wv*16+16]),
                                             broadcast(w[o, 4cq:4cq+4]))
        y[tile] = epilogue(acc - xz * wsum[o])   # zero point, requantization: once, stored once

A 1x1 convolution in the int8 models we run has 8 to 200 channels: the 6 weight broadcasts
and 1 shuffle per 4 channels x 16 pixels cost less than interleaving the whole input ahead
(a pass of scalar byte stores), and no buffer is written between layers.

Taken when: stride 1, no padding, one group, uint8 activations (vpdpbusd's unsigned operand),
a constant weight whose centred values fit int8, the width a multiple of 16 (a vector never
straddles two rows) and the channels a multiple of 4 (no load past the input). Other int8
convolutions use the direct template (``kiln.schedules.x86.conv``) on int32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from tvm import s_tir, te
from tvm.script import tirx as T

from kiln.errors import KnobError
from kiln.schedules.common import inline_pointwise
from kiln.schedules.compute.quant import DOT_GROUP
from kiln.schedules.x86.common import block_name, blocks, output_blocks

VNNI_NCHW_INTRIN = "kiln_vnni_nchw_16x4_u8i8i32"
LANES = 16
REGISTERS = 32


# C[i] += sum_k A[k, 0, i] * B[k]: A is 4 channels x 1 row x 16 pixels of NCHW (a plane apart;
# the row axis lets the region match x's trailing [C, H, W] dims).
@T.prim_func(s_tir=True)
def _desc(a: T.handle, b: T.handle, c: T.handle) -> None:
    s0, s1 = T.int32(), T.int32()
    A = T.match_buffer(a, (4, 1, 16), "uint8", offset_factor=1, strides=[s0, s1, 1])
    B = T.match_buffer(b, (4,), "int8", offset_factor=1)
    C = T.match_buffer(c, (16,), "int32", offset_factor=1, scope="local")
    with T.sblock("root"):
        T.reads(C[0:16], A[0:4, 0, 0:16], B[0:4])
        T.writes(C[0:16])
        for i, k in T.grid(16, 4):
            with T.sblock("update"):
                vi, vk = T.axis.remap("SR", [i, k])
                C[vi] = C[vi] + T.Cast("int32", A[vk, 0, vi]) * T.Cast("int32", B[vk])


@T.prim_func(s_tir=True)
def _impl(a: T.handle, b: T.handle, c: T.handle) -> None:
    s0, s1 = T.int32(), T.int32()
    A = T.match_buffer(a, (4, 1, 16), "uint8", offset_factor=1, strides=[s0, s1, 1])
    B = T.match_buffer(b, (4,), "int8", offset_factor=1)
    C = T.match_buffer(c, (16,), "int32", offset_factor=1, scope="local")
    with T.sblock("root"):
        T.reads(C[0:16], A[0:4, 0, 0:16], B[0:4])
        T.writes(C[0:16])
        interleaved = T.Shuffle(
            [A.vload([0, 0, 0], "uint8x16"), A.vload([1, 0, 0], "uint8x16"),
             A.vload([2, 0, 0], "uint8x16"), A.vload([3, 0, 0], "uint8x16")],
            [g * 16 + r for r in range(16) for g in range(4)])
        w_i32 = T.reinterpret(B.vload([0], "int8x4"), dtype="int32")
        w_i8x64 = T.reinterpret(T.broadcast(w_i32, 16), dtype="int8x64")
        C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
            C.vload([0], dtype="int32x16"), interleaved, w_i8x64, dtype="int32x16")


s_tir.TensorIntrin.register(VNNI_NCHW_INTRIN, _desc, _impl, override=True)


@dataclass(frozen=True)
class DotConvKnobs:
    """``mr`` output channels x ``nr`` pixels (of one row) per register tile, ``occ`` output
    channels per parallel task (one image row each)."""

    mr: int
    nr: int
    occ: int


def dot_conv1x1_fits(x_shape: tuple, w: np.ndarray | None, x_dtype: str, attrs: Any) -> bool:
    """Whether the template takes this ``conv2d_integer`` (see the module docstring)."""
    if w is None or x_dtype != "uint8" or len(x_shape) != 4:
        return False
    if w.shape[2:] != (1, 1) or attrs.groups != 1 or any(attrs.padding) \
            or tuple(attrs.strides) != (1, 1):
        return False
    _, c, _, width = x_shape
    return (isinstance(width, int) and width % LANES == 0 and c % DOT_GROUP == 0
            and int(w.min()) >= -128 and int(w.max()) <= 127)


def default_dot_conv_knobs(out_channels: int, width: int) -> DotConvKnobs:
    """Up to 24 accumulators: nr the widest of 64 / 48 / 32 / 16 pixels dividing the row, mr
    the channels that fill 24 registers with it (24 + nr/16 shuffled inputs + 1 broadcast
    + 4 loads <= 32 zmm); a task takes whole register tiles of up to 4 x mr channels."""
    nr = next(n for n in (64, 48, 32, 16) if width % n == 0)
    mr = max(1, min(24 // (nr // LANES), out_channels))
    tiles = -(-out_channels // mr)
    occ = mr * min(tiles, 4)
    return DotConvKnobs(mr=mr, nr=nr, occ=occ)


def dot_conv1x1(name: str, out_shape: tuple, x: te.Tensor, xz: te.Tensor, w8: te.Tensor,
                wsum: te.Tensor, o_pad: int) -> te.Tensor:
    """The TE: ``<name>_gemm`` [B, o_pad, H, W] = sum_c x * w8 (w8 [o_pad, C] int8, zero past
    O), and ``<name>`` [B, O, H, W] = gemm - xz * wsum[o] (wsum: the weight's row sums)."""
    b, o, h, w = out_shape
    c = te.reduce_axis((0, w8.shape[1]), name="rc")
    gemm = te.compute((b, o_pad, h, w), lambda n, m, i, j: te.sum(
        x[n, c, i, j].astype("int32") * w8[m, c].astype("int32"), axis=c),
        name=f"{name}_gemm")
    return te.compute(out_shape, lambda n, m, i, j: gemm[n, m, i, j]
                      - xz().astype("int32") * wsum[m], name=name)


def pack_dot_conv_weight(w: np.ndarray, o_pad: int) -> tuple[np.ndarray, np.ndarray]:
    """The centred [O, C, 1, 1] int32 weight as [o_pad, C] int8 (zero rows past O) and its row
    sums [o_pad] int32."""
    o, c = w.shape[:2]
    w8 = np.zeros((o_pad, c), np.int8)
    w8[:o] = w.reshape(o, c)
    return w8, w8.astype(np.int32).sum(axis=1, dtype=np.int32)


def schedule_dot_conv1x1(sch: s_tir.Schedule, gemm: str, cfg: DotConvKnobs) -> None:
    """Schedule the kernel ``dot_conv1x1`` built, with its pointwise epilogue (see the module
    docstring for the loop nest)."""
    if cfg.nr % LANES or cfg.occ % cfg.mr or cfg.mr * cfg.nr // LANES > 24:
        raise KnobError(f"int8 conv knobs {cfg}: nr a multiple of {LANES}, occ of mr, and at "
                        "most 24 accumulators")
    # A value the epilogue reads twice stays a block of its own (only_single_use), computed
    # on the tile. KNOWN ISSUE: a chain of fixed_point_multiply (which reads its input twice)
    # inlined still copies the accumulator 2^depth times: a conv + hardswish in QDQ form took
    # LLVM 84 s to compile
    inline_pointwise(sch, keep={gemm}, only_single_use=True)
    block = sch.get_sblock(gemm)
    n, m, h, w, c = sch.get_loops(block)
    # occ channels per task (weights of occ x C bytes stay in L1), mr per register tile
    mt, mo, mi = sch.split(m, [None, cfg.occ // cfg.mr, cfg.mr])
    # nr pixels of the row per register tile: nr / 16 vectors
    wo, wv, wi = sch.split(w, [None, cfg.nr // LANES, LANES])
    # 4 channels per dot instruction
    cq, ci = sch.split(c, [None, DOT_GROUP])
    sch.reorder(n, mt, h, wo, mo, cq, mi, wv, wi, ci)
    sch.parallel(sch.fuse(n, mt, h))        # tasks write disjoint output rows: no locks
    sch.unroll(mi)
    sch.unroll(wv)
    # the stages after the GEMM (0-d constants read by several stages stay where they are)
    epilogue = [b for b in blocks(sch) if block_name(sch, b) != gemm and sch.get_loops(b)]
    write_back = sch.cache_write(block, 0, "local")
    if len(epilogue) == 1:
        sch.compute_inline(write_back)          # the epilogue reads the registers, stores once
        stages = output_blocks(sch)
    else:                                       # the tile stored, each stage a pass over it
        stages = [write_back, *epilogue]
    for stage in stages:                        # in order: each reads the tile the last wrote
        sch.reverse_compute_at(stage, mo)
        vectors, inner = sch.split(sch.get_loops(stage)[-1], [None, LANES])
        sch.unroll(vectors)
        sch.vectorize(inner)
    init = sch.decompose_reduction(block, cq)
    *_, i_mi, i_wv, i_wi = sch.get_loops(init)
    sch.unroll(i_mi)
    sch.unroll(i_wv)
    sch.vectorize(i_wi)
    sch.tensorize(wi, VNNI_NCHW_INTRIN)      # 16 pixels x 4 channels: one vpdpbusd
