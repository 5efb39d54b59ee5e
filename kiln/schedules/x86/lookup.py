"""``table_lookup`` on AVX-512 VBMI: 64 bytes looked up in a 256-entry table per 5 instructions.

``vpermi2b`` picks, for each of 64 byte lanes, one of 128 table bytes held in two zmm registers
(the index's low 7 bits). The 256-entry table is four registers, loaded once per task; two
permutes cover its halves and the index's top bit picks between them (``vpmovb2m`` +
``vpblendmb``)::

    t0..t3 = table[0:64], table[64:128], table[128:192], table[192:256]
    parallel for task:                        # whole vectors, split evenly over the threads
      for v in task's vectors:
        i = x[v*64 : v*64+64]                 # 64 byte indices
        lo = vpermi2b(t0, i, t1)              # table[i]        where i < 128
        hi = vpermi2b(t2, i, t3)              # table[i]        where i >= 128
        y[v*64 : v*64+64] = i >= 128 ? hi : lo
    y[tail] = table[x[tail]]                  # the last n % 64 elements, one at a time

A gather (``vpgatherdd``) moves 16 lanes per instruction and is microcoded; the permutes stay in
registers. The tensor is addressed flat: the lookup is elementwise.
"""

from __future__ import annotations

import math

from tvm import tirx
from tvm.script.ir_builder import IRBuilder
from tvm.script.ir_builder import tirx as T

from kiln.ir.types import TensorType

VECTOR = 64                       # bytes per zmm register
TASK_VECTORS = 64                 # vectors per parallel task: 4 KiB of input
_PERMUTE = "llvm.x86.avx512.vpermi2var.qi.512"


def table_lookup_func(x: TensorType, y: TensorType) -> tirx.PrimFunc:
    """The written kernel: parameters ``x`` (int8 / uint8), ``table`` [256] and ``y``."""
    shape, n = x.static_shape, x.numel
    bytes_x8 = f"int8x{VECTOR}"
    with IRBuilder() as ib:
        with T.prim_func():
            T.func_name("table_lookup")
            xb = T.arg("x", T.buffer(shape, x.dtype.tvm))
            tb = T.arg("table", T.buffer((256,), y.dtype.tvm))
            yb = T.arg("y", T.buffer(shape, y.dtype.tvm))
            T.func_attr({"tirx.noalias": True})
            xf = T.decl_buffer((n,), "int8", data=xb.data)
            tf = T.decl_buffer((256,), "int8", data=tb.data)
            yf = T.decl_buffer((n,), "int8", data=yb.data)
            vectors, tail = divmod(n, VECTOR)
            tasks = math.ceil(vectors / TASK_VECTORS)
            if vectors:
                with T.parallel(0, tasks) as task:
                    quarter = [tf.vload([q * VECTOR], bytes_x8) for q in range(4)]
                    with T.serial(0, tirx.min(TASK_VECTORS, vectors - task * TASK_VECTORS)) as v:
                        at = (task * TASK_VECTORS + v) * VECTOR
                        idx = xf.vload([at], bytes_x8)
                        lo = _permute(quarter[0], idx, quarter[1])
                        hi = _permute(quarter[2], idx, quarter[3])
                        zero = tirx.Broadcast(tirx.const(0, "int8"), VECTOR)
                        T.buffer_store(yf, tirx.Select(idx < zero, hi, lo),
                                       [tirx.Ramp(at, 1, VECTOR)])
            if tail:
                with T.serial(0, tail) as j:
                    at = vectors * VECTOR + j
                    T.buffer_store(yf, tf[xf[at].astype("uint8").astype("int32")], [at])
            if not n:
                T.evaluate(0)
    return ib.get()


def _permute(table_lo: tirx.PrimExpr, idx: tirx.PrimExpr, table_hi: tirx.PrimExpr
             ) -> tirx.PrimExpr:
    return tirx.call_llvm_pure_intrin(f"int8x{VECTOR}", _PERMUTE, table_lo, idx, table_hi)
