"""Edits to a scheduled PrimFunc that TVM's schedule primitives cannot express, made after the
schedule: an intermediate stored in the output's memory, and software prefetches.

Each edit rebuilds only the statements on the path from the root block to the node it changes
(loops, sequences, blocks); everything else is shared with the input function.
"""

from __future__ import annotations

from tvm import ir, s_tir, sym, tirx

CACHE_LINE = 64      # bytes


def alias_to_output(func: tirx.PrimFunc, buffer: tirx.Buffer, output: tirx.Buffer
                    ) -> tirx.PrimFunc:
    """Store the root-allocated ``buffer`` in ``output``'s memory: it becomes a match buffer
    of the whole output, so no scratch is allocated for it (on x86, a per-row allocation from
    TVM's workspace pool, and a second copy of the row in L1).

    Correct when ``output``'s only writer reads ``buffer`` at the index it writes and runs
    after every other reader of ``buffer`` (the caller checks): each element of ``buffer`` is
    then read for the last time just before it is overwritten."""
    realize = func.body
    root = realize.block
    whole = tirx.BufferRegion(output, [ir.Range.from_min_extent(0, d) for d in output.shape])
    block = s_tir.stmt.SBlock(
        root.iter_vars, root.reads, root.writes, root.name_hint, root.body, root.init,
        [b for b in root.alloc_buffers if not b.same_as(buffer)],
        [*root.match_buffers, s_tir.stmt.MatchBufferRegion(buffer, whole)], root.annotations)
    return func.with_body(s_tir.stmt.SBlockRealize(realize.iter_values, realize.predicate,
                                                   block))


def prefetch(buffer: tirx.Buffer, flat_index: tirx.PrimExpr) -> tirx.Stmt:
    """Prefetch (for reading, into L1) the cache line holding ``buffer``'s element at
    ``flat_index`` in row-major order."""
    indices = []
    for d in reversed(buffer.shape):        # unravel: innermost dimension first
        indices.append(tirx.floormod(flat_index, d))
        flat_index = tirx.floordiv(flat_index, d)
    address = tirx.address_of(tirx.BufferLoad(buffer, list(reversed(indices))))
    i32 = "int32"
    # llvm.prefetch(address, rw = 0 read, locality = 3 keep in L1, cache = 1 data)
    return tirx.Evaluate(tirx.call_llvm_intrin("void", "llvm.prefetch.p0", address,
                                               tirx.const(0, i32), tirx.const(3, i32),
                                               tirx.const(1, i32)))


def prepend_to_loop(func: tirx.PrimFunc, loop_var: tirx.Var, stmts: list[tirx.Stmt]
                    ) -> tirx.PrimFunc:
    """Put ``stmts`` at the start of the body of the loop over ``loop_var``."""
    def visit(s: tirx.Stmt) -> tirx.Stmt:
        if isinstance(s, tirx.For):
            body = (tirx.SeqStmt([*stmts, s.body]) if s.loop_var.same_as(loop_var)
                    else visit(s.body))
            if body.same_as(s.body):
                return s
            return tirx.For(s.loop_var, s.min, s.extent, s.kind, body, s.thread_binding,
                            s.annotations, s.step)
        if isinstance(s, tirx.SeqStmt):
            seq = [visit(x) for x in s.seq]
            return s if all(a.same_as(b) for a, b in zip(seq, s.seq, strict=True)) \
                else tirx.SeqStmt(seq)
        if isinstance(s, s_tir.stmt.SBlockRealize):
            b = s.block
            body = visit(b.body)
            if body.same_as(b.body):
                return s
            block = s_tir.stmt.SBlock(b.iter_vars, b.reads, b.writes, b.name_hint, body,
                                      b.init, b.alloc_buffers, b.match_buffers, b.annotations)
            return s_tir.stmt.SBlockRealize(s.iter_values, s.predicate, block)
        return s

    body = visit(func.body)
    if body.same_as(func.body):
        raise ValueError(f"no loop over {loop_var} in {func}")
    return func.with_body(body)


def equal(a: tirx.PrimExpr, b: tirx.PrimExpr) -> bool:
    """Whether two sizes are provably equal (symbolic dims included)."""
    return bool(sym.Analyzer().can_prove_equal(a, b))


def same_region(a: list[ir.Range], b: list[ir.Range]) -> bool:
    """Whether two buffer regions provably cover the same indices."""
    return len(a) == len(b) and all(equal(x.min, y.min) and equal(x.extent, y.extent)
                                    for x, y in zip(a, b, strict=True))
