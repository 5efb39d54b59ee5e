"""The CUDA flash-attention template (forward, float16, tensor cores).

    O[b] = softmax(scale * Q[b] @ K^T[b] + causal mask) @ V[b]      (per batch x head b)

One thread block per (b, tile of Br = 16 * frags * warps query rows); each warp owns
16 * frags rows (each K and V fragment it loads serves all of them) and keeps everything about
them in registers: its Q fragments, the running row max m and sum l, and the output
accumulator. The block walks the keys in tiles of Bc, once::

    Qs <- Q[b, rows]                                   # shared, then ldmatrix to registers
    Ks, Vs[0] <- K^T[b, :, 0:Bc], V[b, 0:Bc, :]       # cp.async, double-buffered
    for kt:                                             # (causal: up to the diagonal)
      Ks, Vs[next] <- tile kt + 1                      # in flight during this tile's math
      S = Q @ K^T tile                 (mma.sync)      # 16 frags x Bc per warp, float32
      S = S * scale * log2(e), masked                  # exp2 below: one multiply; only
                                                       # diagonal tiles mask
      m' = max(m, rowmax S); P = exp2(S - m'); l = l * exp2(m - m') + rowsum P
      O = O * exp2(m - m') + P @ V tile  (mma.sync)    # P: S's registers, cast to float16
    O[b, rows] = O / l

The T x S scores never leave registers. Row maxima and sums combine the 4 threads that share
a row (two shuffles). P needs no shuffle at all: the accumulator layout of two adjacent
m16n8 tiles is the A-operand layout of one m16n8k16 step. Every shared tile has rows 16 bytes
longer than the data, so ldmatrix's eight rows fall in different banks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from tvm import tirx
from tvm.script import tirx as T

from kiln.errors import KnobError
from kiln.ir.graph import Node

LOG2E = 1.4426950408889634
MASKED = -1e4        # a mask value at or below this is "masked out" (-inf, finfo.min, -1e9)


@dataclass(frozen=True)
class FlashKnobs:
    """``warps`` per block, each ``frags`` tiles of 16 query rows; ``bc`` keys per tile;
    ``group``: blocks of that many batches (heads) run together, their K, V sharing L2."""

    warps: int = 4
    frags: int = 2
    bc: int = 64
    group: int = 8       # batches (heads) whose blocks run together, longest rows first

    @property
    def rows(self) -> int:
        """Query rows per block."""
        return 16 * self.warps * self.frags


@dataclass(frozen=True)
class FlashAttention:
    """What the kernel computes: ``batch`` = the product of the batch dims, ``t`` queries,
    ``s`` keys, head dims ``d`` (Q, K) and ``dv`` (V); ``scale`` multiplies the scores;
    ``causal``: key j is masked out for query i when j > i + s - t."""

    batch: int
    t: int
    s: int
    d: int
    dv: int
    scale: float
    causal: bool


def default_flash_knobs(t: int, d: int, dv: int) -> FlashKnobs:
    """4 warps of 32 rows (two 16-row tiles share each K and V fragment) where T allows and
    the head dims are at most 64 (on the H200, batch 8 x 16 heads, seq 4096, d 64: 282 and 268
    TFLOP/s without and with the causal mask, 0.62x and 0.66x SDPA; 16 rows per warp: 244 and
    241; 8 warps of 16: 266 and 249; keys in tiles of 128: slower); else 16 rows per warp (32
    with d = 128 would need more than 255 registers)."""
    return FlashKnobs(frags=2 if t % 128 == 0 and max(d, dv) <= 64 else 1)


def flash_attention_of(chain: list[Node]) -> FlashAttention | None:
    """The attention ``chain`` (matmul, pointwise..., softmax, matmul) as the flash kernel
    takes it, or None: float16; Q [.., T, d] @ K^T [.., d, S], then multiplications and
    divisions by scalar constants, at most one causal mask added (a constant, 0 on and below
    the diagonal, at most -1e4 above), softmax, @ V [.., S, dv]; the same batch dims everywhere,
    d and dv multiples of 16 up to 128, T and S whole tiles."""
    mm, *mid, softmax, mm2 = chain
    q, kt = mm.inputs
    v = mm2.inputs[1]
    if any(x.dtype.value != "float16" for x in (q, kt, v)):
        return None
    (*qb, t, d), (*kb, _, s), (*vb, _, dv) = q.shape, kt.shape, v.shape
    if not (qb == kb == vb and all(isinstance(x, int) for x in (*qb, t, d, s, dv))):
        return None
    knobs = default_flash_knobs(t, d, dv)
    if d % 16 or dv % 16 or max(d, dv) > 128 or t % knobs.rows or s % knobs.bc:
        return None
    scale, causal = 1.0, False
    for n in mid:
        const = next((x for x in n.inputs if x.is_constant), None)
        if const is None or n.inputs[0].is_constant and n.op.name != "mul":
            return None
        if n.op.name in ("mul", "div") and const.data.size == 1:
            c = float(const.data.reshape(()))
            scale = scale * c if n.op.name == "mul" else scale / c
        elif n.op.name == "add" and not causal and s >= t and _is_causal(const.data, t, s):
            causal = True
        else:
            return None
    if not scale > 0:
        return None
    return FlashAttention(math.prod(qb), t, s, d, dv, scale, causal)


def _is_causal(mask: np.ndarray, t: int, s: int) -> bool:
    """0 where key j <= query i + s - t, masked (<= -1e4) elsewhere; broadcast over batch."""
    if mask.ndim < 2 or mask.shape[-2:] != (t, s) or mask.size != t * s:
        return False
    m = mask.reshape(t, s).astype(np.float32)
    above = np.triu(np.ones((t, s), bool), k=1 + s - t)
    return bool(np.all(m[~above] == 0) and np.all(m[above] <= MASKED))


def check_knobs(knobs: FlashKnobs) -> None:
    if min(knobs.warps, knobs.frags) < 1 or knobs.bc % 16 or knobs.bc < 16:
        raise KnobError(f"flash attention knobs {knobs}: at least one warp and fragment, bc a "
                        "multiple of 16")


def flash_attention_func(fa: FlashAttention, knobs: FlashKnobs, shapes: list[tuple[int, ...]]
                         ) -> tirx.PrimFunc:
    """The kernel for ``fa``: parameters Q, K^T, V, O with the graph's ``shapes``."""
    check_knobs(knobs)
    w, fm, bc, d, dv = knobs.warps, knobs.frags, knobs.bc, fa.d, fa.dv
    br = knobs.rows                      # query rows per block, 16 * fm per warp
    nq, nk = fa.t // br, fa.s // bc
    threads = 32 * w
    qs, ks, vs = d + 8, bc + 8, dv + 8   # shared rows, 16 bytes longer than the data
    q_copies, k_copies, v_copies = br * d // 8 // threads, d * bc // 8 // threads, \
        bc * dv // 8 // threads
    if min(q_copies, k_copies, v_copies) < 1 or any(
            n * 8 * threads != size for n, size in
            ((q_copies, br * d), (k_copies, d * bc), (v_copies, bc * dv))):
        raise KnobError(f"flash attention knobs {knobs}: a tile's 16-byte copies must share "
                        f"evenly among {threads} threads")
    scale = float(fa.scale * LOG2E)
    offset = fa.s - fa.t                 # causal: key j visible to query i when j <= i + offset
    causal = fa.causal
    batch, t, s = fa.batch, fa.t, fa.s
    last = offset if causal else s       # a query row's last key, less the row
    g = math.gcd(batch, knobs.group)
    neg_inf = float("-inf")

    # fmt: off
    @T.macro
    def mma_tiles(A, a_tile, Bs, b_base, b_row, B, C, c_tile, ksteps, nsteps, tx):
        """C[fm row tiles] += A (fragments, a_tile halves per row tile) @ the shared tile at
        b_base (rows of b_row halves, k-major: loaded transposed), 16 x 16 at a time; each B
        fragment serves all fm row tiles."""
        for kk in T.unroll(ksteps):
            for nb in T.unroll(nsteps):
                T.ptx_legacy.ldmatrix(True, 4, ".b16", B.data, 0,
                                      T.tvm_access_ptr(T.type_annotation("float16"), Bs.data,
                                                       b_base + kk * 16 * b_row + nb * 16,
                                                       16 * b_row, 1),
                                      tx % 16 * b_row + 8 * (tx // 16), dtype="float16")
                for mi in T.unroll(fm):
                    for h in T.unroll(2):
                        T.ptx_legacy.mma("m16n8k16", "row", "col", "fp16", "fp16", "fp32",
                                         A.data, mi * a_tile + kk * 8, B.data, h * 4,
                                         C.data, mi * c_tile + nb * 8 + h * 4, False,
                                         dtype="float32")

    @T.prim_func
    def flash(q_h: T.handle, kt_h: T.handle, v_h: T.handle, o_h: T.handle):
        T.func_attr({"tirx.noalias": True})
        Qb = T.match_buffer(q_h, shapes[0], "float16")
        Kb = T.match_buffer(kt_h, shapes[1], "float16")
        Vb = T.match_buffer(v_h, shapes[2], "float16")
        Ob = T.match_buffer(o_h, shapes[3], "float16")
        Q = T.decl_buffer((batch * t * d,), "float16", data=Qb.data)
        Kt = T.decl_buffer((batch * d * s,), "float16", data=Kb.data)
        V = T.decl_buffer((batch * s * dv,), "float16", data=Vb.data)
        Out = T.decl_buffer((batch * t * dv,), "float16", data=Ob.data)
        bx = T.launch_thread("blockIdx.x", batch * nq)
        ty = T.launch_thread("threadIdx.y", w)
        tx = T.launch_thread("threadIdx.x", 32)
        Qs = T.decl_buffer((br * qs,), "float16", scope="shared.dyn")
        Ks = T.decl_buffer((2 * d * ks,), "float16", scope="shared.dyn")
        Vs = T.decl_buffer((2 * bc * vs,), "float16", scope="shared.dyn")
        qf = T.decl_buffer((fm * d // 2,), "float16", scope="local")   # Q as A fragments
        kf = T.decl_buffer((8,), "float16", scope="local")
        vf = T.decl_buffer((8,), "float16", scope="local")
        sc = T.decl_buffer((fm * bc // 2,), "float32", scope="local")  # S: m16n8 tiles
        p = T.decl_buffer((fm * bc // 2,), "float16", scope="local")   # P as A fragments
        acc = T.decl_buffer((fm * dv // 2,), "float32", scope="local")  # O: m16n8 tiles
        m = T.decl_buffer((fm * 2,), "float32", scope="local")   # per tile: rows g, g + 8
        lsum = T.decl_buffer((fm * 2,), "float32", scope="local")
        corr = T.decl_buffer((fm * 2,), "float32", scope="local")
        mx = T.decl_buffer((1,), "float32", scope="local")
        rs = T.decl_buffer((1,), "float32", scope="local")
        tid = ty * 32 + tx
        # blocks run in groups of g batches (whose K, V stay in L2 together), the longest
        # (causal) row tiles of a group first: the short ones then fill the last wave's gaps
        qt = nq - 1 - bx % (g * nq) // g
        b = bx // (g * nq) * g + bx % g
        row0 = qt * br
        wrow = ty * 16 * fm                    # the warp's first row in the tile
        nkt = T.min((row0 + br - 1 + last) // bc + 1, nk)    # key tiles this block needs
        nfree = T.max(T.min((row0 + last + 1) // bc, nk), 0)  # tiles no row of it masks
        # Q's tile, and the first K^T, V tiles: cp.async, one group
        for i in T.unroll(q_copies):
            e = (i * threads + tid) * 8
            T.s_tir.cp_async_raw.legacy(Qs.data, e // d * qs + e % d, Q.data,
                                        (b * t + row0 + e // d) * d + e % d, 16, dtype="float16")
        for i in T.unroll(k_copies):
            e = (i * threads + tid) * 8
            T.s_tir.cp_async_raw.legacy(Ks.data, e // bc * ks + e % bc, Kt.data,
                                        (b * d + e // bc) * s + e % bc, 16, dtype="float16")
        for i in T.unroll(v_copies):
            e = (i * threads + tid) * 8
            T.s_tir.cp_async_raw.legacy(Vs.data, e // dv * vs + e % dv, V.data,
                                        (b * s + e // dv) * dv + e % dv, 16, dtype="float16")
        T.ptx["cp.async.commit_group"]()
        for r in T.unroll(fm * 2):
            m[r] = T.float32(neg_inf)
            lsum[r] = T.float32(0)
        for i in T.unroll(fm * dv // 2):
            acc[i] = T.float32(0)
        for kt in T.serial(nkt):
            cur = kt % 2
            if kt + 1 < nkt:                   # the next tiles, into the other buffers
                for i in T.unroll(k_copies):
                    e = (i * threads + tid) * 8
                    T.s_tir.cp_async_raw.legacy(
                        Ks.data, (1 - cur) * d * ks + e // bc * ks + e % bc, Kt.data,
                        (b * d + e // bc) * s + (kt + 1) * bc + e % bc, 16, dtype="float16")
                for i in T.unroll(v_copies):
                    e = (i * threads + tid) * 8
                    T.s_tir.cp_async_raw.legacy(
                        Vs.data, (1 - cur) * bc * vs + e // dv * vs + e % dv, V.data,
                        (b * s + (kt + 1) * bc + e // dv) * dv + e % dv, 16, dtype="float16")
            T.ptx["cp.async.commit_group"]()
            T.ptx["cp.async.wait_group"](1)    # all but the newest group: tile kt is in
            T.tvm_storage_sync("shared.dyn")
            if kt == 0:
                for mi in T.unroll(fm):
                    for kk in T.unroll(d // 16):
                        T.ptx_legacy.ldmatrix(
                            False, 4, ".b16", qf.data, (mi * (d // 16) + kk) * 8,
                            T.tvm_access_ptr(T.type_annotation("float16"), Qs.data,
                                             (wrow + mi * 16) * qs + kk * 16, 16 * qs, 1),
                            tx % 16 * qs + 8 * (tx // 16), dtype="float16")
            # S = Q K^T: K^T's tile is [d, bc], k-major rows, so B comes transposed; each B
            # fragment serves all fm row tiles
            for i in T.unroll(fm * bc // 2):
                sc[i] = T.float32(0)
            mma_tiles(qf, d // 2, Ks, cur * d * ks, ks, kf, sc, bc // 2, d // 16, bc // 16, tx)
            # a thread holds, per row tile, rows g and g + 8, columns 2c and 2c + 1
            if causal:
                if kt >= nfree:                # a diagonal tile: keys past a row masked
                    for mi in T.unroll(fm):
                        for r in T.unroll(2):
                            for nt in T.unroll(bc // 8):
                                for c in T.unroll(2):
                                    sc[mi * bc // 2 + nt * 4 + r * 2 + c] = T.if_then_else(
                                        kt * bc + nt * 8 + tx % 4 * 2 + c
                                        > row0 + wrow + mi * 16 + tx // 4 + r * 8 + offset,
                                        T.float32(neg_inf), sc[mi * bc // 2 + nt * 4 + r * 2 + c])
            # online softmax
            for mi in T.unroll(fm):
                for r in T.unroll(2):
                    mx[0] = T.float32(neg_inf)
                    for nt in T.unroll(bc // 8):
                        for c in T.unroll(2):
                            sc[mi * bc // 2 + nt * 4 + r * 2 + c] = (
                                sc[mi * bc // 2 + nt * 4 + r * 2 + c] * T.float32(scale))
                            mx[0] = T.max(mx[0], sc[mi * bc // 2 + nt * 4 + r * 2 + c])
                    for lane in T.unroll(2):       # the 4 threads of a row: xor 1, xor 2
                        mx[0] = T.max(mx[0], T.tvm_warp_shuffle_xor(
                            T.uint32(0xFFFFFFFF), mx[0], lane + 1, 32, 32))
                    mx[0] = T.max(m[mi * 2 + r], mx[0])
                    corr[mi * 2 + r] = T.exp2(m[mi * 2 + r] - mx[0])
                    m[mi * 2 + r] = mx[0]
                    rs[0] = T.float32(0)
                    for nt in T.unroll(bc // 8):
                        for c in T.unroll(2):
                            e2 = T.exp2(sc[mi * bc // 2 + nt * 4 + r * 2 + c] - mx[0])
                            p[mi * bc // 2 + nt * 4 + r * 2 + c] = T.Cast("float16", e2)
                            rs[0] = rs[0] + e2
                    lsum[mi * 2 + r] = lsum[mi * 2 + r] * corr[mi * 2 + r] + rs[0]
                for nt in T.unroll(dv // 8):
                    for i in T.unroll(4):
                        acc[mi * dv // 2 + nt * 4 + i] = (acc[mi * dv // 2 + nt * 4 + i]
                                                          * corr[mi * 2 + i // 2])
            # O += P V: V's tile is [bc, dv], k-major rows: B transposed again
            mma_tiles(p, bc // 2, Vs, cur * bc * vs, vs, vf, acc, dv // 2, bc // 16, dv // 16, tx)
            T.tvm_storage_sync("shared.dyn")   # this tile's buffers are the next copies'
        for r in T.unroll(fm * 2):
            for lane in T.unroll(2):
                lsum[r] = lsum[r] + T.tvm_warp_shuffle_xor(T.uint32(0xFFFFFFFF), lsum[r],
                                                           lane + 1, 32, 32)
        for mi in T.unroll(fm):
            for nt in T.unroll(dv // 8):
                for i in T.unroll(4):
                    Out[(b * t + row0 + wrow + mi * 16 + tx // 4 + i // 2 * 8) * dv + nt * 8
                        + tx % 4 * 2 + i % 2] = T.Cast(
                            "float16", acc[mi * dv // 2 + nt * 4 + i] / lsum[mi * 2 + i // 2])
    # fmt: on
    return flash

