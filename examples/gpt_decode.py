"""GPT decoding with a key/value cache, written with kiln's Python API.

One library holds two entry points, compiled from two graphs that share the weights:

    prefill(tokens[1, T])          -> logits[1, T, V], cache      # the prompt, all at once
    decode(token[1, 1], cache, pos) -> logits[1, 1, V], cache     # one token at position pos

The cache ``[layers, 2, 1, heads, capacity, head_dim]`` is allocated once, by prefill, and
every decode step writes its keys and values into it in place (``kv_cache_write``) and attends
over positions ``0 .. pos`` with one flash-style kernel per layer (``kv_attention``). ``pos``
is a runtime value: one compiled step serves every position.

The example generates tokens greedily from random weights and checks every logit kiln
produced against the reference interpreter run on the whole sequence (no cache, plain
causal attention), then times a decode step at two positions and the prefill.

    python examples/gpt_decode.py [--layers 6 --dim 512 --heads 8 --vocab 8192 --new 64]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np

import kiln
from kiln import ops


@dataclass(frozen=True)
class Config:
    layers: int = 6
    dim: int = 512
    heads: int = 8
    vocab: int = 8192
    capacity: int = 1024        # positions the cache (and the position table) hold

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads


class GPT:
    """A pre-LayerNorm decoder: token and position embeddings, ``layers`` blocks of causal
    multi-head attention and a GELU MLP, a final LayerNorm and the LM head. Random weights,
    scaled so the logits spread over a few units (greedy choices are clear-cut)."""

    def __init__(self, cfg: Config, seed: int = 0) -> None:
        self.cfg = cfg
        rng = np.random.default_rng(seed)
        d = cfg.dim

        def w(*shape: int, scale: float = 1.0) -> np.ndarray:
            return (rng.standard_normal(shape) * scale / np.sqrt(shape[0])).astype(np.float32)

        def b(n: int) -> np.ndarray:
            return (rng.standard_normal(n) * 0.02).astype(np.float32)

        self.tok = rng.standard_normal((cfg.vocab, d)).astype(np.float32)
        self.pos = (rng.standard_normal((cfg.capacity, d)) * 0.5).astype(np.float32)
        self.blocks = [dict(ln1=(1 + b(d), b(d)), qkv=(w(d, 3 * d), b(3 * d)), out=(w(d, d), b(d)),
                            ln2=(1 + b(d), b(d)), up=(w(d, 4 * d), b(4 * d)),
                            down=(w(4 * d, d), b(d))) for _ in range(cfg.layers)]
        self.ln_f = (1 + b(d), b(d))
        self.head = w(d, cfg.vocab, scale=3.0)

    # -- the three graphs ----------------------------------------------------------------
    def prefill_graph(self) -> kiln.Graph:
        g = kiln.Graph("gpt_prefill")
        tokens = g.input("tokens", (1, "T"), "int64")
        # positions 0 .. T-1 whatever T is: a running count of the tokens
        positions = ops.sub(ops.cumsum(ops.add(ops.mul(tokens, 0), 1), axis=1), 1)
        cache = ops.full(g, self._cache_shape())
        pos = g.constant(np.array(0, np.int64), name="pos0")
        logits, cache = self._forward(tokens, positions, cache, pos)
        g.output(logits, cache, names=("logits", "cache_out"))
        return g

    def decode_graph(self) -> kiln.Graph:
        g = kiln.Graph("gpt_decode")
        token = g.input("token", (1, 1), "int64")
        cache = g.input("cache", self._cache_shape())
        pos = g.input("pos", (), "int64")
        logits, cache = self._forward(token, ops.reshape(pos, (1, 1)), cache, pos)
        g.output(logits, cache, names=("logits", "cache_out"))
        return g

    def full_graph(self, t: int) -> kiln.Graph:
        """The same model on a whole sequence with plain causal attention, no cache: what
        the reference interpreter runs to check every logit."""
        g = kiln.Graph("gpt_full")
        tokens = g.input("tokens", (1, t), "int64")
        mask = np.triu(np.full((t, t), -np.inf, np.float32), k=1)
        positions = g.constant(np.arange(t, dtype=np.int64)[None], name="positions")
        logits, _ = self._forward(tokens, positions, None, None, mask)
        g.output(logits, names=("logits",))
        return g

    def _cache_shape(self) -> tuple[int, ...]:
        c = self.cfg
        return (c.layers, 2, 1, c.heads, c.capacity, c.head_dim)

    def _forward(self, tokens: kiln.Value, positions: kiln.Value,
                 cache: kiln.Value | None, pos: kiln.Value | None,
                 mask: np.ndarray | None = None) -> tuple[kiln.Value, kiln.Value | None]:
        c, t = self.cfg, tokens.shape[1]        # t: an int, or "T" (symbolic)
        x = ops.add(ops.gather(self.tok, tokens), ops.gather(self.pos, positions))
        for layer, p in enumerate(self.blocks):
            h = ops.layer_norm(x, *p["ln1"])
            qkv = ops.add(ops.matmul(h, p["qkv"][0]), p["qkv"][1])
            # [1, T, 3 * dim] -> q, k, v as [1, heads, T, head_dim]
            q, k, v = (ops.transpose(ops.reshape(part, (1, t, c.heads, c.head_dim)),
                                     (0, 2, 1, 3)) for part in ops.split(qkv, 3, axis=2))
            if cache is not None:
                cache = ops.kv_cache_write(cache, k, v, pos, layer=layer)
                a = ops.kv_attention(q, cache, pos, layer=layer)
            else:
                s = ops.add(ops.mul(ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))),
                                    1 / np.sqrt(c.head_dim)), mask)
                a = ops.matmul(ops.softmax(s, axis=-1), v)
            a = ops.reshape(ops.transpose(a, (0, 2, 1, 3)), (1, t, c.dim))
            x = ops.add(x, ops.add(ops.matmul(a, p["out"][0]), p["out"][1]))
            h = ops.layer_norm(x, *p["ln2"])
            up = ops.gelu(ops.add(ops.matmul(h, p["up"][0]), p["up"][1]))
            x = ops.add(x, ops.add(ops.matmul(up, p["down"][0]), p["down"][1]))
        return ops.matmul(ops.layer_norm(x, *self.ln_f), self.head), cache


def median_ms(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--prompt", type=int, default=8, help="prompt tokens")
    ap.add_argument("--new", type=int, default=64, help="tokens to generate")
    ap.add_argument("--rounds", type=int, default=20,
                    help="timed rounds of 5 decode steps per position")
    args = ap.parse_args()
    cfg = Config(args.layers, args.dim, args.heads, args.vocab)
    model = GPT(cfg)

    start = time.perf_counter()
    lib = kiln.compile({"prefill": model.prefill_graph(), "decode": model.decode_graph()})
    print(f"gpt: {cfg.layers} layers, dim {cfg.dim}, {cfg.heads} heads, vocabulary {cfg.vocab}, "
          f"cache of {cfg.capacity} positions; compiled in {time.perf_counter() - start:.1f} s")
    for fn in lib.functions.values():
        print(f"  {fn!r}")

    # generate greedily: prefill the prompt, then one decode step per token
    prompt = np.random.default_rng(1).integers(0, cfg.vocab, (1, args.prompt), dtype=np.int64)
    logits, cache = lib["prefill"].on_device(tokens=prompt)
    steps = [logits.numpy()[0]]                                  # [T, V]
    tokens = list(prompt[0])
    for i in range(args.new):
        tokens.append(int(steps[-1][-1].argmax()))
        logits, cache = lib["decode"].on_device(
            token=np.array([[tokens[-1]]], np.int64), cache=cache,
            pos=np.array(args.prompt + i, np.int64))
        steps.append(logits.numpy()[0])
    kiln_logits = np.concatenate(steps)           # positions 0 .. len(tokens) - 1

    # the reference interpreter on the whole sequence, no cache
    seq = np.array([tokens], np.int64)
    (ref,) = kiln.run_reference(model.full_graph(seq.shape[1]), {"tokens": seq})
    err = float(np.abs(kiln_logits - ref[0]).max() / np.abs(ref).max())
    same = all(int(ref[0, t].argmax()) == tokens[t + 1] for t in range(args.prompt - 1,
                                                                       len(tokens) - 1))
    print(f"generated {args.new} tokens: {tokens[args.prompt:args.prompt + 12]} ...")
    print(f"every logit vs the reference interpreter on the full sequence: max error "
          f"{err:.2e} (relative to the largest logit); same greedy tokens: {same}")

    # decode-step latency at two positions, and the prefill
    token = np.array([[tokens[-1]]], np.int64)
    step_ms = {}
    for p in (16, 512):
        if p + 1 > cfg.capacity:
            continue
        # the cache stays on the device: each timed step writes position p again, in place
        feeds = dict(token=token, cache=cache, pos=np.array(p, np.int64))
        step_ms[p] = statistics.median(lib.benchmark(feeds, number=5, repeat=args.rounds,
                                                     entry="decode")) * 1e3
    prefill_ms = median_ms(lambda: lib["prefill"].on_device(tokens=prompt), 10)
    print("decode step: " + ", ".join(f"{ms:.2f} ms at position {p}" for p, ms in step_ms.items())
          + f"; prefill of {args.prompt} tokens: {prefill_ms:.2f} ms")
    ok = err < 1e-4 and same
    print("gpt_decode OK" if ok else "gpt_decode FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
