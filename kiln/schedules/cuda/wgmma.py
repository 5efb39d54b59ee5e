"""The Hopper GEMM template for float16: warpgroup MMA (wgmma, sm_90a), tiles in swizzled
shared memory, float32 accumulators.

    C[b] = A[b] @ B[b]        A [M, K]; B [K, N] (or a dense layer's W [N, K]); C float16

One thread block per bm x bn tile of C, bm / 64 warpgroups (128 threads each), each owning
64 rows and all bn columns: per k step of 16 it issues one asynchronous
``wgmma.m64n{bn}k16`` that reads both operands straight from shared memory (no ldmatrix, no
fragments: a 64-bit descriptor names each tile) and accumulates bn / 2 floats per thread::

    prologue: tiles 0 .. stages-3 -> shared            # cp.async, one group per tile
    for kt:
      wait for tile kt; fence (generic -> async proxy); barrier
      4 x wgmma on tile kt (k 0..63), commit            # runs while the loads below land
      tile kt + stages - 2 -> the buffer of tile kt - 2  # its wgmma finished: see below
      wait until only this group is in flight          # tile kt - 1's wgmma is done

One barrier per k step: past it, every warpgroup has waited for tile kt - 2's wgmma.

Shared tiles use the 128-byte swizzle that wgmma reads: a 64-element (128-byte) row's 16-byte
chunk c of row r sits at chunk c ^ (r % 8), so the 8 rows one access touches hit 8 different
bank groups. A is K-major (rows of k); B is N-major ([K, N] as stored: tiles of 64 columns,
``trans-b``) or K-major (W [N, K]).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tvm import tirx
from tvm.script import tirx as T

from kiln.errors import KnobError

BK = 64                # one 128-byte swizzle atom of float16 along k
SWIZZLE_128B = 3       # the descriptor's (and CUtensorMap's) code for it


@dataclass(frozen=True)
class WgmmaKnobs:
    """``bm`` rows (64 per warpgroup) x ``bn`` columns per block; ``stages`` shared buffers;
    ``group`` block rows that walk the columns together (their A tiles and B columns stay
    in L2)."""

    bm: int = 128
    bn: int = 256
    stages: int = 4
    group: int = 8


@dataclass(frozen=True)
class WgmmaGemm:
    """The problem: ``batch`` independent [m, k] x [k, n] products; ``b_kmajor``: B is given
    as [n, k] (a dense layer's weight, shared by the batch)."""

    batch: int
    m: int
    n: int
    k: int
    b_kmajor: bool


def wgmma_fits(g: WgmmaGemm, knobs: WgmmaKnobs = WgmmaKnobs()) -> bool:
    """Whole tiles only (the template has no predicated edge)."""
    return g.m % knobs.bm == 0 and g.n % knobs.bn == 0 and g.k % BK == 0


def check_knobs(knobs: WgmmaKnobs) -> None:
    if (knobs.bm % 64 or knobs.bm > 256 or knobs.bn % 64 or not 64 <= knobs.bn <= 256
            or knobs.stages < 3 or knobs.group < 1):
        raise KnobError(f"wgmma knobs {knobs}: bm a multiple of 64 up to 256, bn of 64 up to "
                        "256, at least 3 stages")


def wgmma_gemm_func(g: WgmmaGemm, knobs: WgmmaKnobs, shapes: list[tuple[int, ...]]
                    ) -> tirx.PrimFunc:
    """The kernel: parameters A, B, C with the graph's ``shapes``."""
    check_knobs(knobs)
    bm, bn, st = knobs.bm, knobs.bn, knobs.stages
    m, n, k, batch = g.m, g.n, g.k, g.batch
    wgs = bm // 64
    threads = 128 * wgs
    a_tile, b_tile = bm * BK, BK * bn                 # halves per stage
    stage = a_tile + b_tile
    a_copies, b_copies = a_tile // 8 // threads, b_tile // 8 // threads
    if a_copies * 8 * threads != a_tile or b_copies * 8 * threads != b_tile:
        raise KnobError(f"wgmma knobs {knobs}: tiles must split evenly into 16-byte copies")
    nm, nn, nk = m // bm, n // bn, k // BK
    grp = min(knobs.group, nm)
    while nm % grp:
        grp -= 1
    acc_n = bn // 2                                   # floats per thread
    chain = f"wgmma.mma_async.sync.aligned.m64n{bn}k16.f32.f16.f16"
    b_kmajor = g.b_kmajor
    b_batched = len(shapes[1]) > 2
    # descriptors (16-byte units): rows 128 bytes apart, 8-row groups 1024 apart; N-major B's
    # 64-column atoms lie 64 * 128 bytes apart
    b_lbo = 1 if b_kmajor else BK * 128 // 16
    trans_b = 0 if b_kmajor else 1
    b_elems = n * k
    b_k16 = 16 if b_kmajor else 16 * 64              # 16 k: 32 bytes along a row, or 16 rows

    # fmt: off
    @T.macro
    def load(S, A, B, tx, a0, b0, bj, kt):
        """Tile ``kt`` of A and B into buffer kt % stages, swizzled; one cp.async group."""
        for i in T.unroll(a_copies):
            q = i * threads + tx
            T.s_tir.cp_async_raw.legacy(
                S.data, kt % st * stage + q // 8 * BK + (q % 8 ^ q // 8 % 8) * 8,
                A.data, a0 + q // 8 * k + kt * BK + q % 8 * 8, 16,
                dtype="float16")
        for i in T.unroll(b_copies):
            q = i * threads + tx
            if b_kmajor:                               # W [n, k]: rows of k, as A
                T.s_tir.cp_async_raw.legacy(
                    S.data,
                    kt % st * stage + a_tile + q // 8 * BK + (q % 8 ^ q // 8 % 8) * 8,
                    B.data, b0 + (bj * bn + q // 8) * k + kt * BK + q % 8 * 8,
                    16, dtype="float16")
            else:                                      # [k, n]: atoms of 64 k x 64 n
                T.s_tir.cp_async_raw.legacy(
                    S.data,
                    kt % st * stage + a_tile + q // 512 * 4096 + q % 512 // 8 * 64
                    + (q % 8 ^ q % 512 // 8 % 8) * 8,
                    B.data,
                    b0 + (kt * BK + q % 512 // 8) * n + bj * bn + q // 512 * 64
                    + q % 8 * 8, 16, dtype="float16")
        T.ptx["cp.async.commit_group"]()

    @T.prim_func
    def gemm(a_h: T.handle, b_h: T.handle, c_h: T.handle):
        T.func_attr({"tirx.noalias": True})
        Ab = T.match_buffer(a_h, shapes[0], "float16")
        Bb = T.match_buffer(b_h, shapes[1], "float16")
        Cb = T.match_buffer(c_h, shapes[2], "float16")
        A = T.decl_buffer((batch * m * k,), "float16", data=Ab.data)
        B = T.decl_buffer((math.prod(shapes[1]),), "float16", data=Bb.data)
        C = T.decl_buffer((batch * m * n,), "float16", data=Cb.data)
        bx = T.launch_thread("blockIdx.x", nm * nn)
        bz = T.launch_thread("blockIdx.y", batch)
        tx = T.launch_thread("threadIdx.x", threads)
        S = T.decl_buffer((st * stage,), "float16", scope="shared.dyn")
        acc = T.alloc_buffer((acc_n,), "float32", scope="local")
        da = T.alloc_buffer((1,), "uint64", scope="local")
        db = T.alloc_buffer((1,), "uint64", scope="local")
        # grouped order: `grp` block rows sweep the columns together
        bi = bx // (grp * nn) * grp + bx % grp
        bj = bx % (grp * nn) // grp
        wg = tx // 128
        a0 = bz * m * k + bi * bm * k
        b0 = bz * b_elems if b_batched else 0
        for i in T.unroll(acc_n):
            acc[i] = T.float32(0)
        for kt in T.unroll(st - 2):                    # prologue: tiles 0 .. stages - 3
            load(S, A, B, tx, a0, b0, bj, kt)
        for kt in T.serial(nk):
            T.ptx["cp.async.wait_group"](st - 3)      # tile kt has landed (this thread's part)
            T.ptx.fence.proxy.async_.shared__cta()     # cp.async wrote it; wgmma reads it
            T.tvm_storage_sync("shared.dyn")           # everyone's parts
            T.ptx.wgmma.fence.sync.aligned()
            for kk in T.unroll(BK // 16):
                T.cuda.wgmma.encode_matrix_descriptor(
                    T.address_of(da[0]), T.tvm_access_ptr(
                        T.type_annotation("float16"), S.data,
                        kt % st * stage + wg * 64 * BK + kk * 16, 64 * BK, 1),
                    1, 64, SWIZZLE_128B)
                T.cuda.wgmma.encode_matrix_descriptor(
                    T.address_of(db[0]), T.tvm_access_ptr(
                        T.type_annotation("float16"), S.data,
                        kt % st * stage + a_tile + kk * b_k16, b_tile, 1),
                    b_lbo, 64, SWIZZLE_128B)
                T.ptx[chain](*[acc[i] for i in range(acc_n)], da[0], db[0], T.bool(True),
                             1, 1, 0, trans_b)
            T.ptx.wgmma.commit_group.sync.aligned()
            if kt + st - 2 < nk:                       # into tile kt - 2's buffer: every
                load(S, A, B, tx, a0, b0, bj, kt + st - 2)   # warpgroup passed the wait below
            else:                                      # for it before the barrier above
                T.ptx["cp.async.commit_group"]()       # an empty group keeps the count
            T.ptx.wgmma.wait_group.sync.aligned(1)     # tile kt - 1's wgmma is done
        T.ptx.wgmma.wait_group.sync.aligned(0)
        # acc: per 8 columns j, rows (16 * warp + lane / 4) and + 8, columns 2 * (lane % 4) + 0, 1
        for j in T.unroll(bn // 8):
            for h in T.unroll(2):
                for c in T.unroll(2):
                    C[bz * m * n + (bi * bm + wg * 64 + tx % 128 // 32 * 16 + tx % 32 // 4
                                    + h * 8) * n + bj * bn + j * 8 + tx % 4 * 2 + c] = T.Cast(
                        "float16", acc[j * 4 + h * 2 + c])
    # fmt: on
    return gemm
