"""The recurrence kernel of ``lstm``, ``gru`` and ``rnn``: one loop over time, written as TIR.

A time recurrence is not a tensor expression (step t reads what step t - 1 wrote), so these ops
are ``te.extern`` kernels whose loop nest is written here, scheduled as it is written::

    parallel for task in D * ceil(B / R):        # directions and blocks of R batch rows
      pack rt[d] into panels [G*H / 32, H, 32]   # once per call (below)
      h, c = h0[d, rows], c0[d, rows]            # the states live in stack buffers [R, H]
      for s in 0 .. T:
        g[0:R, 0:G*H] = h @ rt[d]                # the recurrent product for all R rows
        for each row r:                          # the gate math, vectorised over units
          if s < lens[b]:
            t = lens[b] - 1 - s if direction d is reversed else s
            h[r], c[r] = cell(g[r] + xp[t, b]);  y[t, d, b] = h[r]
          else:
            y[s, d, b, :] = 0                    # past the sequence's end
      y_h[d, rows], y_c[d, rows] = h, c          # zero where lens is 0

The product runs over chunks of gates; for each chunk and each k, one weight vector serves
all R rows::

    for chunk:                                   # acc [R, W] in registers
      acc = 0
      for k in 0 .. H: acc[r, 0:W] += h[r, k] * panel[chunk, k, 0:W]   for r < R (unrolled)
      g[:, chunk] = acc

``R`` = 8 rows of ``W`` = 32 gates are 16 zmm accumulators on AVX-512: 16 FMAs per k for two
weight loads, where one row per task loaded the whole of rt[d] (1 MiB for H = 256) for every
row and step, and ran at the speed of L2. Packing rt[d] into panels puts each chunk's weights
in one contiguous run; read in place, rt's rows are G*H*4 bytes (4 KiB and more) apart, a
stride the L1 prefetcher does not follow. Measured on a 2-layer bidirectional LSTM (H = 256,
T = 100, B = 8), the whole model alternately: blocking 1.2x faster (on AVX2, where the
accumulators spill, too), packing a further 1.17x on one thread and 1.11x on two. A symbolic
batch, or a batch of one, steps one row per task with chunks of 64 gates read in place.
"""

from __future__ import annotations

from collections.abc import Callable

from tvm import te, tirx
from tvm.script.ir_builder import IRBuilder
from tvm.script.ir_builder import tirx as T

from kiln.ir.ops.rnn import GATES, Activation, ActivationFn, RecurrentAttrs, split_inputs
from kiln.schedules.compute import fastmath
from kiln.schedules.compute.registry import NodeInfo, compute, te_shape

MATVEC_WIDTH = 64    # gates per matvec chunk, one row (see the module docstring)
ROW_BLOCK = 8        # batch rows stepped together: a weight vector loaded once for 8 rows
BLOCK_WIDTH = 32     # gates per chunk for a block of rows: 4 rows x 2 zmm = 8 accumulators
GATE_WIDTH = 16      # hidden units per vector of the gate math: one zmm of float32


def _c(v: float, x: tirx.PrimExpr) -> tirx.PrimExpr:
    return tirx.const(v, fastmath.dtype_of(x))


def activation(f: ActivationFn, x: tirx.PrimExpr) -> tirx.PrimExpr:
    """One of ONNX's recurrent activations on a TIR expression (vectorisable forms)."""
    k, a, b = f.kind, f.alpha, f.beta
    zero, one = _c(0.0, x), _c(1.0, x)
    if k is Activation.SIGMOID:
        return fastmath.sigmoid(x)
    if k is Activation.TANH:
        return fastmath.tanh(x)
    if k is Activation.RELU:
        return tirx.max(x, zero)
    if k is Activation.HARD_SIGMOID:
        return tirx.max(zero, tirx.min(one, _c(a, x) * x + _c(b, x)))
    if k is Activation.LEAKY_RELU:
        return tirx.Select(x >= zero, x, _c(a, x) * x)
    if k is Activation.THRESHOLDED_RELU:
        return tirx.Select(x > _c(a, x), x, zero)
    if k is Activation.SCALED_TANH:
        return _c(a, x) * fastmath.tanh(_c(b, x) * x)
    if k is Activation.AFFINE:
        return _c(a, x) * x + _c(b, x)
    if k is Activation.ELU:
        return tirx.Select(x >= zero, x, _c(a, x) * (fastmath.exp(tirx.min(x, zero)) - one))
    if k is Activation.SOFTSIGN:
        return x / (one + tirx.abs(x))
    # softplus: log(1 + e^x) = max(x, 0) + log(1 + e^-|x|), which cannot overflow
    return tirx.max(x, zero) + tirx.log(one + fastmath.exp(-tirx.abs(x)))


def vector_loop(n: int, width: int, body: Callable[[tirx.PrimExpr], None],
                outer: Callable = T.serial) -> None:
    """``body(j)`` for j in [0, n): whole vectors of ``width`` (an ``outer`` loop over them:
    ``T.unroll`` gives every access a constant offset, so LLVM keeps small buffers in
    registers), then one narrower tail vector (static sizes, so no lane is ever predicated)."""
    full, tail = divmod(n, width)
    if full:
        with outer(0, full) as jo, T.vectorized(0, width) as ji:
            body(jo * width + ji)
    if tail:
        with T.vectorized(0, tail) as ji:
            body(full * width + ji)


def _matmul(src, weight: Callable, col0: int, cols: int, dst, dtype: str, hidden: int,
            rows: int, width: int) -> None:
    """``dst[r, col0 + j] = sum_k src[r, k] * W[k, col0 + j]`` for r < rows, j < cols, in
    chunks of ``width`` gates, each weight vector loaded once for all ``rows`` rows.
    ``weight(k, chunk, start, ji)`` loads ``W[k, col0 + start + ji]`` of chunk ``chunk``."""
    def chunk(c: tirx.PrimExpr, start: tirx.PrimExpr, width: int) -> None:
        acc = T.alloc_buffer((rows, width), dtype, scope="local")     # registers
        with T.unroll(0, rows) as r, T.vectorized(0, width) as ji:
            T.buffer_store(acc, tirx.const(0, dtype), [r, ji])
        with T.serial(0, hidden) as k, T.unroll(0, rows) as r, T.vectorized(0, width) as ji:
            T.buffer_store(acc, acc[r, ji] + src[r, k] * weight(k, c, start, ji), [r, ji])
        with T.unroll(0, rows) as r, T.vectorized(0, width) as ji:
            T.buffer_store(dst, acc[r, ji], [r, col0 + start + ji])

    full, tail = divmod(cols, width)
    if full:
        with T.serial(0, full) as jo:
            chunk(jo, jo * width, width)
    if tail:
        chunk(tirx.const(full, "int32"), tirx.const(full * width, "int32"), tail)


def _extent(d: tirx.PrimExpr) -> int | tirx.PrimExpr:
    """A buffer dim as a Python int where static (T and B may be symbolic)."""
    return int(d) if isinstance(d, tirx.IntImm) else d


class _Kernel:
    """The buffers and sizes of one recurrent kernel, and the pieces of its loop nest. A task
    steps ``rows`` batch rows of one direction together (``ROW_BLOCK`` where the batch is
    static and at least 2, else one)."""

    def __init__(self, op: str, at: RecurrentAttrs, ins: dict, outs: list) -> None:
        self.op, self.at, self.ins, self.outs = op, at, ins, outs
        xp = ins["xp"]
        self.steps, self.batch = _extent(xp.shape[0]), _extent(xp.shape[1])
        self.h = at.hidden_size
        self.gh = GATES[op] * self.h
        self.dtype = str(xp.dtype)
        static = isinstance(self.batch, int)
        self.rows = min(ROW_BLOCK, self.batch) if static and self.batch >= 2 else 1
        self.blocks = -(-self.batch // self.rows) if static else self.batch

    def clip(self, x: tirx.PrimExpr) -> tirx.PrimExpr:
        if self.at.clip is None:
            return x
        return tirx.max(tirx.min(x, _c(self.at.clip, x)), _c(-self.at.clip, x))

    def body(self) -> None:
        at, d_count, rows, h = self.at, self.at.direction.count, self.rows, self.h
        tasks = d_count * self.blocks
        loop = T.serial if isinstance(tasks, int) and tasks == 1 else T.parallel
        with loop(0, tasks) as task:
            d, blk = task // self.blocks, task % self.blocks
            self.d = d
            hbuf = T.alloc_buffer((rows, h), self.dtype, scope="local")
            cbuf = T.alloc_buffer((rows, h), self.dtype, scope="local")
            self.gbuf = T.alloc_buffer((rows, self.gh), self.dtype, scope="local")
            self.hbuf, self.cbuf = hbuf, cbuf
            self.rh = (T.alloc_buffer((rows, h), self.dtype, scope="local")
                       if self.op == "gru" and not at.linear_before_reset else None)
            self.packed = {col0: self.pack(d, col0, cols) for col0, cols in self.regions()
                           } if rows > 1 else {}
            # rows past the batch (its last block may be short) compute on row batch - 1's
            # inputs and are never written out
            self.b = [blk * rows + r for r in range(rows)]
            ragged = isinstance(self.batch, int) and self.batch % rows != 0
            self.valid = [self.b[r] < self.batch if ragged else None for r in range(rows)]
            safe = [tirx.min(b, self.batch - 1) if ragged else b for b in self.b]
            for r in range(rows):
                for buf, name in ((hbuf, "h0"), (cbuf, "c0")):
                    init = self.ins.get(name)
                    vector_loop(h, GATE_WIDTH, lambda j, buf=buf, init=init, r=r: T.buffer_store(
                        buf, init[d, safe[r], j] if init is not None
                        else tirx.const(0, self.dtype), [r, j]))
            if "lens" in self.ins:
                self.n = [tirx.max(tirx.min(self.ins["lens"][b], self.steps), 0) for b in safe]
            else:
                steps = (tirx.const(self.steps, "int32") if isinstance(self.steps, int)
                         else self.steps)
                self.n = [steps] * rows
            with T.serial(0, self.steps) as s:
                self.step_all_directions(s)
            zero = tirx.const(0, self.dtype)
            for k, buf in enumerate((hbuf, cbuf)[:len(self.outs) - 1]):
                out = self.outs[1 + k]     # an empty sequence leaves zero states (as onnxruntime)
                for r in range(rows):
                    self.if_valid(r, lambda buf=buf, out=out, r=r: vector_loop(
                        h, GATE_WIDTH, lambda j: T.buffer_store(
                            out, tirx.Select(self.n[r] > 0, buf[r, j], zero),
                            [d, self.b[r], j])))

    def regions(self) -> list[tuple[int, int]]:
        """The gate columns each recurrent product covers: all of them, or for a GRU that
        resets before its product, the z and r gates and then the h gate."""
        if self.op == "gru" and not self.at.linear_before_reset:
            return [(0, 2 * self.h), (2 * self.h, self.h)]
        return [(0, self.gh)]

    def pack(self, d, col0: int, cols: int):
        """Direction ``d``'s weights of gate columns [col0, col0 + cols) as panels
        [chunk, k, BLOCK_WIDTH]: the product then reads each chunk's 32 KiB (H = 256) in
        order, where ``rt`` [D, H, G*H] would put its rows 4 KiB or more apart, a stride the
        L1 prefetcher does not follow. Once per call, against the product's T times."""
        chunks = -(-cols // BLOCK_WIDTH)
        buf = T.alloc_buffer((chunks, self.h, BLOCK_WIDTH), self.dtype)
        rt = self.ins["rt"]
        full, tail = divmod(cols, BLOCK_WIDTH)
        with T.serial(0, full) as c, T.serial(0, self.h) as k, \
                T.vectorized(0, BLOCK_WIDTH) as ji:
            T.buffer_store(buf, rt[d, k, col0 + c * BLOCK_WIDTH + ji], [c, k, ji])
        if tail:
            with T.serial(0, self.h) as k, T.vectorized(0, tail) as ji:
                T.buffer_store(buf, rt[d, k, col0 + full * BLOCK_WIDTH + ji], [full, k, ji])
        return buf

    def matmul(self, src, col0: int, cols: int) -> None:
        """``gbuf[:, col0 : col0 + cols] = src @ rt[d][:, col0 : col0 + cols]``."""
        if self.rows == 1:
            rt, d = self.ins["rt"], self.d
            _matmul(src, lambda k, c, start, ji: rt[d, k, col0 + start + ji], col0, cols,
                    self.gbuf, self.dtype, self.h, 1, MATVEC_WIDTH)
            return
        buf = self.packed[col0]
        _matmul(src, lambda k, c, start, ji: buf[c, k, ji], col0, cols, self.gbuf,
                self.dtype, self.h, self.rows, BLOCK_WIDTH)

    def if_valid(self, r: int, body: Callable[[], None]) -> None:
        if self.valid[r] is None:
            body()
            return
        with T.If(self.valid[r]):
            with T.Then():
                body()

    def per_row(self, s, cell: Callable[[int], None], zero_past_end: bool = True) -> None:
        """``cell(r)`` for each row still in its sequence at step ``s``; past its end, its
        output at ``s`` is zero."""
        y = self.outs[0]
        for r in range(self.rows):
            def run(r: int = r) -> None:
                with T.If(s < self.n[r]):
                    with T.Then():
                        cell(r)
                    if zero_past_end:
                        with T.Else():
                            vector_loop(self.h, GATE_WIDTH, lambda j: T.buffer_store(
                                y, tirx.const(0, self.dtype), [s, self.d, self.b[r], j]))
            self.if_valid(r, run)

    def step_all_directions(self, s) -> None:
        """One step; a bidirectional op whose directions differ in activations gets one
        body per direction."""
        direction, d = self.at.direction, self.d
        if direction.count == 1:
            rev = direction.reversed(0)
            self.t = [n - 1 - s if rev else s for n in self.n]
            self.step(0, s)
            return
        self.t = [tirx.Select(d == 1, n - 1 - s, s) for n in self.n]
        per = len(self.at.activations) // 2
        if self.at.activations[:per] == self.at.activations[per:]:
            self.step(0, s)
            return
        with T.If(d == 0):
            with T.Then():
                self.step(0, s)
            with T.Else():
                self.step(1, s)

    def step(self, acts: int, s) -> None:
        """One time step of every row of the block, with the activations of direction
        ``acts``: the recurrent product for all rows, then each row's gate math."""
        xp, h, y, d = self.ins["xp"], self.h, self.outs[0], self.d
        hbuf, cbuf, g = self.hbuf, self.cbuf, self.gbuf
        f = [self.at.activation(acts, i) for i in range(len(self.at.activations)
                                                         // self.at.direction.count)]

        def x(r: int, gate: int, j) -> tirx.PrimExpr:
            return xp[self.t[r], self.b[r], d * self.gh + gate * h + j]

        def out(r: int, j) -> None:
            T.buffer_store(y, hbuf[r, j], [self.t[r], d, self.b[r], j])

        def act(buf, r: int, i, fn: ActivationFn, pre: tirx.PrimExpr) -> None:
            """``buf[r, i] = fn(clip(pre))``, through ``buf[r, i]``: the activation's
            polynomial reads its argument many times, and a load keeps the expression small."""
            T.buffer_store(buf, self.clip(pre), [r, i])
            T.buffer_store(buf, activation(fn, buf[r, i]), [r, i])

        if self.op == "lstm":
            self.matmul(hbuf, 0, self.gh)
            p = self.ins.get("p")

            def peep(q: int, j, c) -> tirx.PrimExpr:
                return p[d, q * h + j] * c if p is not None else tirx.const(0, self.dtype)

            def cell(r: int) -> None:
                def unit(j) -> None:
                    c = cbuf[r, j]
                    act(g, r, j, f[0], x(r, 0, j) + g[r, j] + peep(0, j, c))              # i
                    if self.at.input_forget:
                        T.buffer_store(g, _c(1.0, c) - g[r, j], [r, 2 * h + j])
                    else:
                        act(g, r, 2 * h + j, f[0],
                            x(r, 2, j) + g[r, 2 * h + j] + peep(2, j, c))                   # f
                    act(g, r, 3 * h + j, f[1], x(r, 3, j) + g[r, 3 * h + j])              # c~
                    T.buffer_store(cbuf, g[r, 2 * h + j] * c + g[r, j] * g[r, 3 * h + j],
                                   [r, j])                                                 # c_t
                    act(g, r, h + j, f[0], x(r, 1, j) + g[r, h + j] + peep(1, j, cbuf[r, j]))
                    T.buffer_store(hbuf, g[r, h + j] * activation(f[2], cbuf[r, j]), [r, j])
                    out(r, j)
                vector_loop(h, GATE_WIDTH, unit)
            self.per_row(s, cell)
        elif self.op == "gru":
            lbr = self.at.linear_before_reset
            self.matmul(hbuf, 0, self.gh if lbr else 2 * h)

            def update(r: int, j, rec) -> None:
                act(g, r, 2 * h + j, f[1], x(r, 2, j) + rec)                             # h~
                z = g[r, j]
                T.buffer_store(hbuf, (_c(1.0, z) - z) * g[r, 2 * h + j] + z * hbuf[r, j],
                               [r, j])
                out(r, j)

            def zr(r: int, j) -> None:
                act(g, r, j, f[0], x(r, 0, j) + g[r, j])                                 # z
                act(g, r, h + j, f[0], x(r, 1, j) + g[r, h + j])                         # r

            if lbr:
                rbh = self.ins["rbh"]

                def cell(r: int) -> None:
                    def unit(j) -> None:
                        zr(r, j)
                        update(r, j, g[r, h + j] * (g[r, 2 * h + j] + rbh[d, j]))
                    vector_loop(h, GATE_WIDTH, unit)
                self.per_row(s, cell)
            else:
                rh = self.rh

                def reset(r: int) -> None:
                    def unit(j) -> None:
                        zr(r, j)
                        T.buffer_store(rh, g[r, h + j] * hbuf[r, j], [r, j])
                    vector_loop(h, GATE_WIDTH, unit)
                self.per_row(s, reset, zero_past_end=False)
                self.matmul(rh, 2 * h, h)
                self.per_row(s, lambda r: vector_loop(
                    h, GATE_WIDTH, lambda j: update(r, j, g[r, 2 * h + j])))
        else:
            self.matmul(hbuf, 0, h)

            def cell(r: int) -> None:
                def unit(j) -> None:
                    act(hbuf, r, j, f[0], x(r, 0, j) + g[r, j])
                    out(r, j)
                vector_loop(h, GATE_WIDTH, unit)
            self.per_row(s, cell)


def _recurrent(op: str):
    def lower(n: NodeInfo, *inputs: te.Tensor) -> tuple[te.Tensor, ...]:
        names = list(split_inputs(op, n.attrs, list(inputs)))

        def fcompute(ins, outs):
            with IRBuilder() as ib:
                _Kernel(op, n.attrs, dict(zip(names, ins, strict=True)), list(outs)).body()
            return ib.get()

        outs = te.extern([te_shape(o.shape, n.syms) for o in n.outs], list(inputs), fcompute,
                         name=n.name, dtype=[o.dtype.value for o in n.outs])
        return tuple(outs) if isinstance(outs, list) else (outs,)
    return lower


for _op in GATES:
    compute(_op)(_recurrent(_op))
