"""The two kernels of a decoder's key/value cache (ops in kiln/ir/ops/kv_cache.py), written as
TIR loop nests that are their own schedule: both walk a runtime number of positions.

``kv_attention``: flash-style attention over the cache, one parallel task per (batch, head,
query), an online softmax over blocks of ``KEY_BLOCK`` keys, so the scores never exist beyond
one block and the cost is linear in the position::

    parallel for b, h, t:                       # query t sits at position pos + t
      q = Q[b, h, t] * scale;  m = -huge;  l = 0;  acc[0:D] = 0
      for block in ceil((pos + t + 1) / KEY_BLOCK):      # only the keys it may see
        s[jj] = q . K[j]               for the block's keys j (vectors of D, then one sum)
        m' = max(m, max s);  c = e^(m - m')
        l = l c;  acc *= c
        for jj: p = e^(s[jj] - m');  l += p;  acc += p V[j]        # vectors of D
        m = m'
      O[b, h, t] = acc / l

``kv_cache_write``: the in-place store of T new keys and values: ``T * D`` floats per (batch,
head) move, never the whole cache. The position is checked first: past the capacity the call
fails with a message and writes nothing.
"""

from __future__ import annotations

from typing import Any

from tvm import te, tirx
from tvm.script.ir_builder import IRBuilder
from tvm.script.ir_builder import tirx as T

from kiln.ir.ops.kv_cache import KVWriteAttrs
from kiln.ir.types import TensorType
from kiln.schedules.compute import fastmath
from kiln.schedules.compute.indexing import copy_buffer
from kiln.schedules.compute.registry import NodeInfo, compute, shape_of, te_shape
from kiln.schedules.compute.rnn import vector_loop

KEY_BLOCK = 16      # keys per online-softmax step: one rescale of acc per 16 keys, not per key
VECTOR = 16         # float32 lanes of the head-dim loops (one zmm; LLVM splits it for AVX2)
LOWEST = -3.4028234663852886e38     # the running max's start: finite, so m - m' is never NaN


def _head_dim_loop(d: int, body: Any) -> None:
    """``body(i)`` for i in [0, d), in unrolled vectors: the task's small buffers (q, acc)
    then stay in registers."""
    vector_loop(d, VECTOR, body, outer=T.unroll)


def _tree_sum(terms: list[tirx.PrimExpr]) -> tirx.PrimExpr:
    """A balanced sum: the lanes of a partial-sum vector add in log2(n) dependent steps."""
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i]
                 for i in range(0, len(terms), 2)]
    return terms[0]


@compute("kv_attention")
def kv_attention(n: NodeInfo, q: te.Tensor, cache: te.Tensor, pos: te.Tensor) -> te.Tensor:
    batch, heads, steps, d = shape_of(q)
    layer, scale, f32 = n.attrs.layer, n.attrs.scale, "float32"

    def body(qb: tirx.Buffer, cb: tirx.Buffer, pb: tirx.Buffer, ob: tirx.Buffer) -> None:
        tasks = batch * heads * steps
        p0 = pb[()].astype("int32")
        loop = T.serial if isinstance(tasks, int) and tasks == 1 else T.parallel
        capacity = int(cache.shape[4])
        with T.Assert(_fits(pb[()], steps, capacity), "kiln: kv_attention: a position is "
                      f"outside the cache's capacity of {capacity}", error_kind="ValueError"), \
                loop(0, tasks) as task:
            b, h, t = task // (heads * steps), task // steps % heads, task % steps
            qs = T.alloc_buffer((d,), f32, scope="local")
            acc = T.alloc_buffer((d,), f32, scope="local")
            part = T.alloc_buffer((VECTOR,), f32, scope="local")
            s = T.alloc_buffer((KEY_BLOCK,), f32, scope="local")
            ml = T.alloc_buffer((3,), f32, scope="local")      # m, l, the block's new max
            _head_dim_loop(d, lambda i: T.buffer_store(
                qs, qb[b, h, t, i] * tirx.const(scale, f32), [i]))
            _head_dim_loop(d, lambda i: T.buffer_store(acc, tirx.const(0, f32), [i]))
            T.buffer_store(ml, tirx.const(LOWEST, f32), [0])
            T.buffer_store(ml, tirx.const(0, f32), [1])
            keys = p0 + t + 1
            with T.serial(0, (keys + KEY_BLOCK - 1) // KEY_BLOCK) as kb:
                j0 = kb * KEY_BLOCK
                count = tirx.min(KEY_BLOCK, keys - j0)
                with T.serial(0, count) as jj:                 # the block's scores
                    _dot(qs, cb, (layer, 0, b, h, j0 + jj), d, part)
                    T.buffer_store(s, _tree_sum([part[i] for i in range(VECTOR)]), [jj])
                T.buffer_store(ml, ml[0], [2])
                with T.serial(0, count) as jj:
                    T.buffer_store(ml, tirx.max(ml[2], s[jj]), [2])
                corr = fastmath.exp_nonpositive(ml[0] - ml[2])
                T.buffer_store(ml, ml[1] * corr, [1])
                _head_dim_loop(d, lambda i: T.buffer_store(acc, acc[i] * corr, [i]))
                with T.serial(0, count) as jj:
                    T.buffer_store(s, fastmath.exp_nonpositive(s[jj] - ml[2]), [jj])
                    T.buffer_store(ml, ml[1] + s[jj], [1])
                    _head_dim_loop(d, lambda i: T.buffer_store(
                        acc, acc[i] + s[jj] * cb[layer, 1, b, h, j0 + jj, i], [i]))
                T.buffer_store(ml, ml[2], [0])
            _head_dim_loop(d, lambda i: T.buffer_store(
                ob, acc[i] / ml[1], [b, h, t, i]))

    def fcompute(ins: list[tirx.Buffer], outs: list[tirx.Buffer]) -> tirx.Stmt:
        with IRBuilder() as ib:
            body(*ins, *outs)
        return ib.get()

    return te.extern([te_shape(n.outs[0].shape, n.syms)], [q, cache, pos], fcompute,
                     name=n.name, dtype=[f32])


def _dot(qs: tirx.Buffer, cb: tirx.Buffer, row: tuple, d: int, part: tirx.Buffer) -> None:
    """``part[0:VECTOR]`` = lane-wise partial sums of ``qs . cache[row]``: whole vectors of
    the head dim, then its tail added into the first lanes."""
    zero = tirx.const(0, "float32")
    with T.vectorized(0, VECTOR) as i:
        T.buffer_store(part, zero, [i])
    full, tail = divmod(d, VECTOR)
    with T.unroll(0, full) as c, T.vectorized(0, VECTOR) as i:
        T.buffer_store(part, part[i] + qs[c * VECTOR + i] * cb[(*row, c * VECTOR + i)], [i])
    if tail:
        with T.vectorized(0, tail) as i:
            x = full * VECTOR + i
            T.buffer_store(part, part[i] + qs[x] * cb[(*row, x)], [i])


def kv_cache_write_func(at: KVWriteAttrs, cache: TensorType, kv: TensorType,
                        in_place: bool = True) -> tirx.PrimFunc:
    """``kv_cache_write`` in place: parameters (cache, k, v, pos) and no output buffer (the
    caller's ``call_tir_inplace`` makes ``cache`` the result); else (where the old cache is
    read again, or is a weight) an output ``out`` that gets a copy of the cache first. A
    symbolic T is the kernel's variable, bound from k's shape."""
    syms = {s: tirx.Var(s, "int32") for s in kv.shape if isinstance(s, str)}
    kv_shape = te_shape(kv.shape, syms)
    batch, heads, steps, d = kv_shape
    capacity = cache.shape[4]
    with IRBuilder() as ib:
        with T.prim_func():
            T.func_name("kv_cache_write")
            cb = T.arg("cache", T.buffer(cache.static_shape, "float32"))
            kb = T.arg("k", T.buffer(kv_shape, "float32"))
            vb = T.arg("v", T.buffer(kv_shape, "float32"))
            pb = T.arg("pos", T.buffer((), "int64"))
            ob = cb if in_place else T.arg("out", T.buffer(cache.static_shape, "float32"))
            T.func_attr({"tirx.noalias": True})
            p = pb[()]
            with T.Assert(_fits(p, steps, capacity), "kiln: kv_cache_write: a position is "
                          f"outside the cache's capacity of {capacity}", error_kind="ValueError"):
                if not in_place:
                    copy_buffer(cb, ob, cache.static_shape)
                _store(ob, kb, vb, p.astype("int32"), at.layer, batch, heads, steps, d)
    return ib.get()


def _fits(p: Any, steps: Any, capacity: int) -> Any:
    """``0 <= p`` and ``p + steps <= capacity``, in int64 (``p`` is the caller's int64)."""
    end = p + (steps.astype("int64") if not isinstance(steps, int) else steps)
    return tirx.all(p >= tirx.const(0, "int64"), end <= tirx.const(capacity, "int64"))


def _store(cb: tirx.Buffer, kb: tirx.Buffer, vb: tirx.Buffer, p: Any, layer: int, batch: int,
           heads: int, steps: Any, d: int) -> None:
    rows = batch * heads
    loop = T.parallel if rows > 1 else T.serial
    with loop(0, rows) as r, T.serial(0, steps) as t:
        b, h = r // heads, r % heads
        for kv, src in ((0, kb), (1, vb)):
            vector_loop(d, VECTOR, lambda i, kv=kv, src=src: T.buffer_store(
                cb, src[b, h, t, i], [layer, kv, b, h, p + t, i]))
