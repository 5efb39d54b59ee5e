"""The int8 GEMM on NEON dotprod's ``sdot``: x86's dot-product template
(``kiln.schedules.x86.int_gemm``) with this intrinsic and these register tiles.

``sdot v.4s, a.16b, b.16b`` adds to each of 4 int32 lanes the products of 4 int8 pairs: with
the weight packed as [N/nr, K/4, nr, 4], 16 contiguous bytes of a panel are 4 columns x 4 k
steps, and the activation's 4 bytes of one row are broadcast to all lanes. sdot takes int8 x
int8, so a uint8 activation is shifted to int8 (``a - 128``, zero point with it) and the
column sums of the weight fold the zero points in outside the dot product, as on VNNI.
"""

from __future__ import annotations

from tvm import s_tir
from tvm.script import tirx as T

from kiln.schedules.x86.int_gemm import DotGemmKnobs, DotInstruction, default_dot_knobs

SDOT_INTRIN = "kiln_sdot_4x4_i8i8i32"
SDOT_LANES = 4


# C[i] += sum_k A[k] * B[i, k] for 4 lanes i and 4 bytes k, C a register tile ("local")
@T.prim_func(s_tir=True)
def _sdot_desc(A: T.Buffer((4,), "int8", offset_factor=1),
               B: T.Buffer((4, 4), "int8", offset_factor=1),
               C: T.Buffer((4,), "int32", offset_factor=1, scope="local")) -> None:
    with T.sblock("root"):
        T.reads(C[0:4], A[0:4], B[0:4, 0:4])
        T.writes(C[0:4])
        for i, k in T.grid(4, 4):
            with T.sblock("update"):
                vi, vk = T.axis.remap("SR", [i, k])
                C[vi] = C[vi] + T.Cast("int32", A[vk]) * T.Cast("int32", B[vi, vk])


# A's 4 bytes loaded as one int32 and broadcast (ld1r), B's 16 bytes as one q register
@T.prim_func(s_tir=True)
def _sdot_impl(A: T.Buffer((4,), "int8", offset_factor=1),
               B: T.Buffer((4, 4), "int8", offset_factor=1),
               C: T.Buffer((4,), "int32", offset_factor=1, scope="local")) -> None:
    with T.sblock("root"):
        T.reads(C[0:4], A[0:4], B[0:4, 0:4])
        T.writes(C[0:4])
        a_i32 = T.reinterpret(A.vload([0], "int8x4"), dtype="int32")
        a_i8x16 = T.reinterpret(T.broadcast(a_i32, 4), dtype="int8x16")
        C[T.ramp(T.int32(0), 1, 4)] = T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.sdot.v4i32.v16i8"),
            C.vload([0], dtype="int32x4"), B.vload([0, 0], dtype="int8x16"), a_i8x16,
            dtype="int32x4")


s_tir.TensorIntrin.register(SDOT_INTRIN, _sdot_desc, _sdot_impl, override=True)

SDOT = DotInstruction(SDOT_INTRIN, "sdot", SDOT_LANES, 32, "int8")

# (mr, nr) register tiles of 24 accumulator q registers (16 for one column vector): with
# nr / 4 q of B and one broadcast of A live, at most 24 + 4 + 1 of the 32. Per group of 4 k
# steps 6 x 16 loads 6 + 4 q for 24 sdot, 8 x 12 8 + 3, 12 x 8 12 + 2.
REGISTER_TILES = ((6, 16), (8, 12), (12, 8), (16, 4))


def default_sdot_knobs(m: int, n: int, k: int) -> DotGemmKnobs:
    """Untuned defaults for sdot (the rules of ``default_dot_knobs``)."""
    return default_dot_knobs(m, n, k, REGISTER_TILES, SDOT_LANES)
