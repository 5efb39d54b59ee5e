"""A GPT decode step with a key/value cache: kiln against PyTorch (eager, inference mode).

    python -m benchmarks.gpt [--layers 6] [--dim 512] [--heads 8] [--vocab 8192]
                             [--rounds 21] [--threads N]

The model is examples/gpt_decode.py's (random weights); PyTorch runs the same weights with its
own cache (``scaled_dot_product_attention`` over positions 0 .. pos). One decode step at
position 16 and at 512, each engine alternately (rounds of at least 0.2 s), medians; the two
engines' logits are checked against each other first. Needs torch (``pip install
'kiln[torch]'``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import kiln
from benchmarks.timing import all_cores, alternate, kiln_timer, per_call

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from gpt_decode import GPT, Config  # noqa: E402


class TorchGPT:
    """``model``'s weights as torch tensors, and its decode step on a torch cache."""

    def __init__(self, model: GPT) -> None:
        import torch
        self.torch, self.cfg = torch, model.cfg
        t = torch.from_numpy
        self.tok, self.pos, self.head = t(model.tok), t(model.pos), t(model.head)
        self.blocks = [{k: tuple(t(a) for a in v) for k, v in p.items()} for p in model.blocks]
        self.ln_f = tuple(t(a) for a in model.ln_f)
        c = model.cfg
        self.cache = torch.zeros(c.layers, 2, c.heads, c.capacity, c.head_dim)

    def step(self, token: int, pos: int):  # noqa: ANN201 - a torch.Tensor
        torch, c = self.torch, self.cfg
        f = torch.nn.functional
        with torch.inference_mode():
            x = self.tok[token] + self.pos[pos]                           # [dim]
            for layer, p in enumerate(self.blocks):
                h = f.layer_norm(x, (c.dim,), *p["ln1"])
                q, k, v = (h @ p["qkv"][0] + p["qkv"][1]).view(3, c.heads, 1, c.head_dim)
                self.cache[layer, 0, :, pos] = k[:, 0]
                self.cache[layer, 1, :, pos] = v[:, 0]
                a = f.scaled_dot_product_attention(q, self.cache[layer, 0, :, :pos + 1],
                                                   self.cache[layer, 1, :, :pos + 1])
                x = x + a.reshape(c.dim) @ p["out"][0] + p["out"][1]
                h = f.layer_norm(x, (c.dim,), *p["ln2"])
                x = x + f.gelu(h @ p["up"][0] + p["up"][1]) @ p["down"][0] + p["down"][1]
            return f.layer_norm(x, (c.dim,), *self.ln_f) @ self.head


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--threads", type=int, default=all_cores())
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        print("benchmarks.gpt compares with PyTorch: pip install 'kiln[torch]'")
        return 2
    torch.set_num_threads(args.threads)
    kiln.set_num_threads(args.threads)
    model = GPT(Config(args.layers, args.dim, args.heads, args.vocab))
    lib = kiln.compile({"prefill": model.prefill_graph(), "decode": model.decode_graph()})
    ref = TorchGPT(model)

    # the same 520 tokens through both caches, checking the logits on the way
    tokens = np.random.default_rng(2).integers(0, args.vocab, 520)
    _, cache = lib["prefill"].on_device(tokens=tokens[None, :1])
    ref.step(int(tokens[0]), 0)
    err = 0.0
    for p in range(1, len(tokens)):
        (logits, cache) = lib["decode"].on_device(token=tokens[None, p:p + 1], cache=cache,
                                                  pos=np.array(p, np.int64))
        want = ref.step(int(tokens[p]), p).numpy()
        err = max(err, float(np.abs(logits.numpy()[0, 0] - want).max() / np.abs(want).max()))
    assert err < 1e-4, f"kiln and PyTorch differ: {err:.2e}"

    print(f"GPT decode step: {args.layers} layers, dim {args.dim}, {args.heads} heads, "
          f"vocabulary {args.vocab}; {args.threads} thread(s), {args.rounds} alternating "
          f"rounds (medians); logits agree to {err:.1e} over {len(tokens)} positions")
    print(f"{'position':>8} {'torch ms':>9} {'kiln ms':>8} {'kiln vs torch':>14}")
    for p in (16, 512):
        feeds = dict(token=tokens[None, :1], cache=cache, pos=np.array(p, np.int64))
        t_kiln, t_torch = alternate(kiln_timer(lib, feeds, entry="decode"),
                                    lambda p=p: per_call(lambda: ref.step(5, p)), args.rounds)
        print(f"{p:>8} {t_torch * 1e3:9.3f} {t_kiln * 1e3:8.3f} {t_kiln / t_torch:13.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
