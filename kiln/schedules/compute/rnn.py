"""The recurrence kernel of ``lstm``, ``gru`` and ``rnn``: one loop over time, written as TIR.

A time recurrence is not a tensor expression (step t reads what step t - 1 wrote), so these ops
are ``te.extern`` kernels whose loop nest is written here, scheduled as it is written::

    parallel for task in D * B:                  # directions and batch rows are independent
      h, c = h0[d, b], c0[d, b]                  # the state lives in stack buffers
      n = lens[b]
      for s in 0 .. T:
        if s < n:
          t = n - 1 - s if direction d is reversed else s
          g[0 : G*H] = h @ rt[d]                 # matvec, vectorised over gates (below)
          for j in 0 .. H (vectorised):          # the gate math on g + xp[t, b]
            h[j], c[j] = cell(...)
            y[t, d, b, j] = h[j]
        else:
          y[s, d, b, :] = 0                      # past the sequence's end
      y_h[d, b], y_c[d, b] = h, c                # zero if n == 0

The matvec ``g[j] = sum_k h[k] * rt[d, k, j]`` runs over chunks of ``MATVEC_WIDTH`` gates::

    for chunk:                                   # acc: 4 zmm (AVX-512) or 8 ymm (AVX2)
      acc[0:W] = 0
      for k in 0 .. H: acc[0:W] += h[k] * rt[d, k, chunk : chunk + W]   (unit stride)
      g[chunk : chunk + W] = acc

``W`` = 64 floats gives 4 independent FMA chains per k on AVX-512, enough to hide most of the
FMA latency, and the chunk's accumulators stay in registers. The per-step work is too small
to split across threads (a pool launch per step costs more than a 128 x 512 matvec), so the
parallel loop is over independent sequences only.

Measured (LSTM, H = 128, T = 32, one thread, CPU time): 2.4 us per step for one sequence and
1.2 us per sequence-step at batch 16, which is Zen 4's FMA bound (4096 512-bit FMAs per
128 x 512 matvec at one per cycle). Stepping several batch rows together so that each weight
vector is loaded once for all of them was tried: no faster (the FMAs, not the loads, bound
it), and fewer tasks to run in parallel.
"""

from __future__ import annotations

from collections.abc import Callable

from tvm import te, tirx
from tvm.script.ir_builder import IRBuilder
from tvm.script.ir_builder import tirx as T

from kiln.ir.ops.rnn import GATES, Activation, ActivationFn, RecurrentAttrs, split_inputs
from kiln.schedules.compute import fastmath
from kiln.schedules.compute.registry import NodeInfo, compute, te_shape

MATVEC_WIDTH = 64    # gates per matvec chunk (see the module docstring)
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


def _vector_loop(n: int, width: int, body: Callable[[tirx.PrimExpr], None]) -> None:
    """``body(j)`` for j in [0, n): whole vectors of ``width``, then one narrower tail vector
    (static sizes, so no lane is ever predicated)."""
    full, tail = divmod(n, width)
    if full:
        with T.serial(0, full) as jo, T.vectorized(0, width) as ji:
            body(jo * width + ji)
    if tail:
        with T.vectorized(0, tail) as ji:
            body(full * width + ji)


def _matvec(src, rt, d, col0: int, cols: int, dst, dtype: str, hidden: int) -> None:
    """``dst[col0 + j] = sum_k src[k] * rt[d, k, col0 + j]`` for j in [0, cols)."""
    def chunk(start: tirx.PrimExpr, width: int) -> None:
        acc = T.alloc_buffer((width,), dtype, scope="local")
        with T.vectorized(0, width) as ji:
            T.buffer_store(acc, tirx.const(0, dtype), [ji])
        with T.serial(0, hidden) as k, T.vectorized(0, width) as ji:
            T.buffer_store(acc, acc[ji] + src[k] * rt[d, k, col0 + start + ji], [ji])
        with T.vectorized(0, width) as ji:
            T.buffer_store(dst, acc[ji], [col0 + start + ji])

    full, tail = divmod(cols, MATVEC_WIDTH)
    if full:
        with T.serial(0, full) as jo:
            chunk(jo * MATVEC_WIDTH, MATVEC_WIDTH)
    if tail:
        chunk(tirx.const(full * MATVEC_WIDTH, "int32"), tail)


def _extent(d: tirx.PrimExpr) -> int | tirx.PrimExpr:
    """A buffer dim as a Python int where static (T and B may be symbolic)."""
    return int(d) if isinstance(d, tirx.IntImm) else d


class _Kernel:
    """The buffers and sizes of one recurrent kernel, and the pieces of its loop nest."""

    def __init__(self, op: str, at: RecurrentAttrs, ins: dict, outs: list) -> None:
        self.op, self.at, self.ins, self.outs = op, at, ins, outs
        xp = ins["xp"]
        self.steps, self.batch = _extent(xp.shape[0]), _extent(xp.shape[1])
        self.h = at.hidden_size
        self.gh = GATES[op] * self.h
        self.dtype = str(xp.dtype)

    def clip(self, x: tirx.PrimExpr) -> tirx.PrimExpr:
        if self.at.clip is None:
            return x
        return tirx.max(tirx.min(x, _c(self.at.clip, x)), _c(-self.at.clip, x))

    def body(self) -> None:
        at, d_count = self.at, self.at.direction.count
        tasks = d_count * self.batch
        loop = T.serial if isinstance(tasks, int) and tasks == 1 else T.parallel
        with loop(0, tasks) as task:
            d, b = task // self.batch, task % self.batch
            hbuf = T.alloc_buffer((self.h,), self.dtype, scope="local")
            cbuf = T.alloc_buffer((self.h,), self.dtype, scope="local")
            gbuf = T.alloc_buffer((self.gh,), self.dtype, scope="local")
            self.hbuf, self.cbuf, self.gbuf = hbuf, cbuf, gbuf
            self.rh = (T.alloc_buffer((self.h,), self.dtype, scope="local")
                       if self.op == "gru" and not at.linear_before_reset else None)
            for buf, name in ((hbuf, "h0"), (cbuf, "c0")):
                init = self.ins.get(name)
                _vector_loop(self.h, GATE_WIDTH, lambda j, buf=buf, init=init: T.buffer_store(
                    buf, init[d, b, j] if init is not None else tirx.const(0, self.dtype), [j]))
            if "lens" in self.ins:
                n = tirx.max(tirx.min(self.ins["lens"][b], self.steps), 0)
            else:
                n = tirx.const(self.steps, "int32") if isinstance(self.steps, int) else self.steps
            with T.serial(0, self.steps) as s:
                with T.If(s < n):
                    with T.Then():
                        self.step_all_directions(d, b, s, n)
                    with T.Else():
                        y = self.outs[0]
                        _vector_loop(self.h, GATE_WIDTH, lambda j: T.buffer_store(
                            y, tirx.const(0, self.dtype), [s, d, b, j]))
            zero = tirx.const(0, self.dtype)
            for k, buf in enumerate((hbuf, cbuf)[:len(self.outs) - 1]):
                out = self.outs[1 + k]     # an empty sequence leaves zero states (as onnxruntime)
                _vector_loop(self.h, GATE_WIDTH, lambda j, buf=buf, out=out: T.buffer_store(
                    out, tirx.Select(n > 0, buf[j], zero), [d, b, j]))

    def step_all_directions(self, d, b, s, n) -> None:
        """One step; a bidirectional op whose directions differ in activations gets one
        body per direction."""
        direction = self.at.direction
        if direction.count == 1:
            t = n - 1 - s if direction.reversed(0) else s
            self.step(0, d, b, t)
            return
        t = tirx.Select(d == 1, n - 1 - s, s)
        per = len(self.at.activations) // 2
        if self.at.activations[:per] == self.at.activations[per:]:
            self.step(0, d, b, t)
            return
        with T.If(d == 0):
            with T.Then():
                self.step(0, d, b, t)
            with T.Else():
                self.step(1, d, b, t)

    def step(self, acts: int, d, b, t) -> None:
        """One time step of direction ``d`` with the activations of direction ``acts``."""
        xp, rt, h, y = self.ins["xp"], self.ins["rt"], self.h, self.outs[0]
        hbuf, cbuf, g = self.hbuf, self.cbuf, self.gbuf
        f = [self.at.activation(acts, i) for i in range(len(self.at.activations)
                                                         // self.at.direction.count)]

        def x(gate: int, j) -> tirx.PrimExpr:
            return xp[t, b, d * self.gh + gate * h + j]

        def act(buf, i, fn: ActivationFn, pre: tirx.PrimExpr) -> None:
            """``buf[i] = fn(clip(pre))``, through ``buf[i]``: the activation's polynomial
            reads its argument many times, and a load keeps the expression small."""
            T.buffer_store(buf, self.clip(pre), [i])
            T.buffer_store(buf, activation(fn, buf[i]), [i])

        if self.op == "lstm":
            _matvec(hbuf, rt, d, 0, self.gh, g, self.dtype, h)
            p = self.ins.get("p")

            def peep(q: int, j, c) -> tirx.PrimExpr:
                return p[d, q * h + j] * c if p is not None else tirx.const(0, self.dtype)

            def cell(j) -> None:
                c = cbuf[j]
                act(g, j, f[0], x(0, j) + g[j] + peep(0, j, c))                       # i
                if self.at.input_forget:
                    T.buffer_store(g, _c(1.0, c) - g[j], [2 * h + j])
                else:
                    act(g, 2 * h + j, f[0], x(2, j) + g[2 * h + j] + peep(2, j, c))  # f
                act(g, 3 * h + j, f[1], x(3, j) + g[3 * h + j])                     # c~
                T.buffer_store(cbuf, g[2 * h + j] * c + g[j] * g[3 * h + j], [j])   # c_t
                act(g, h + j, f[0], x(1, j) + g[h + j] + peep(1, j, cbuf[j]))       # o
                T.buffer_store(hbuf, g[h + j] * activation(f[2], cbuf[j]), [j])
                T.buffer_store(y, hbuf[j], [t, d, b, j])
            _vector_loop(h, GATE_WIDTH, cell)
        elif self.op == "gru":
            lbr = self.at.linear_before_reset
            _matvec(hbuf, rt, d, 0, self.gh if lbr else 2 * h, g, self.dtype, h)

            def update(j, rec) -> None:
                act(g, 2 * h + j, f[1], x(2, j) + rec)                              # h~
                z = g[j]
                T.buffer_store(hbuf, (_c(1.0, z) - z) * g[2 * h + j] + z * hbuf[j], [j])
                T.buffer_store(y, hbuf[j], [t, d, b, j])

            def zr(j) -> None:
                act(g, j, f[0], x(0, j) + g[j])                                     # z
                act(g, h + j, f[0], x(1, j) + g[h + j])                             # r

            if lbr:
                rbh = self.ins["rbh"]

                def cell(j) -> None:
                    zr(j)
                    update(j, g[h + j] * (g[2 * h + j] + rbh[d, j]))
                _vector_loop(h, GATE_WIDTH, cell)
            else:
                rh = self.rh

                def reset(j) -> None:
                    zr(j)
                    T.buffer_store(rh, g[h + j] * hbuf[j], [j])
                _vector_loop(h, GATE_WIDTH, reset)
                _matvec(rh, rt, d, 2 * h, h, g, self.dtype, h)
                _vector_loop(h, GATE_WIDTH, lambda j: update(j, g[2 * h + j]))
        else:
            _matvec(hbuf, rt, d, 0, h, g, self.dtype, h)

            def cell(j) -> None:
                act(hbuf, j, f[0], x(0, j) + g[j])
                T.buffer_store(y, hbuf[j], [t, d, b, j])
            _vector_loop(h, GATE_WIDTH, cell)


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
