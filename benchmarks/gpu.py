"""kiln's CUDA kernels against torch on the GPU host, in one table.

Built here (no GPU needed), run there (torch and the runtime-only TVM, no compiler):

    python -m benchmarks.gpu prepare DIR          # on this machine: compile the cases
    python benchmarks/gpu.py run DIR [--json P]   # on the GPU host, after source .device/setup.sh

Cases: fp32 GEMM 4096^3 against torch.matmul with TF32 off (cuBLAS), fp16 GEMM 4096^3 (tensor
cores, float32 accumulation, as cuBLAS), flash attention in float16 (batch 8, 16 heads,
seq 4096, head dim 64, causal and not) against F.scaled_dot_product_attention, LayerNorm and softmax
over 8192x4096 fp32 against F.layer_norm and torch.softmax, and a copy (y = -x) that gives the
bandwidth. Each pair runs alternately (torch, then kiln) for ``--rounds`` rounds; the table
gives medians, TFLOP/s or GB/s, and kiln time / torch time (below 1.00x kiln is faster).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

GEMM = 4096
ROWS, COLS = 8192, 4096
ATT_B, ATT_H, ATT_T, ATT_D = 8, 16, 4096, 64     # flash attention, float16


def prepare(out: Path, target: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import kiln
    from kiln import ops
    rng = np.random.default_rng(0)
    cases = {}
    for name, dtype in (("gemm", "float32"), ("gemm_fp16", "float16")):
        g = kiln.Graph(name)
        g.output(ops.matmul(g.input("a", (GEMM, GEMM), dtype), g.input("b", (GEMM, GEMM), dtype)))
        cases[name] = g
    for name in ("layer_norm", "softmax", "neg_copy"):
        g = kiln.Graph(name)
        x = g.input("x", (ROWS, COLS), "float32")
        if name == "layer_norm":
            y = ops.layer_norm(x, rng.standard_normal(COLS).astype(np.float32),
                               rng.standard_normal(COLS).astype(np.float32))
        elif name == "softmax":
            y = ops.softmax(x, axis=-1)
        else:
            y = ops.neg(x)
        g.output(y)
        cases[name] = g
    for causal in (False, True):
        name = "attention_causal" if causal else "attention"
        g = kiln.Graph(name)
        q, k, v = (g.input(n, (ATT_B, ATT_H, ATT_T, ATT_D), "float16") for n in "qkv")
        scores = ops.mul(ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))),
                         np.float16(ATT_D ** -0.5))
        if causal:
            scores = ops.add(scores, np.triu(np.full((ATT_T, ATT_T), -np.inf, np.float16), 1))
        g.output(ops.matmul(ops.softmax(scores, axis=-1), v))
        cases[name] = g
    out.mkdir(parents=True, exist_ok=True)
    for name, g in cases.items():
        lib = kiln.compile(g, target)
        lib.export(out / f"{name}.so")
        if name == "layer_norm":
            params = [c.data for c in g.constants()]
            np.save(out / "ln_gamma.npy", params[0])
            np.save(out / "ln_beta.npy", params[1])
        print("prepared", name, [k.notes for k in lib.compilation.kernels], flush=True)


def _timer(fn, sync, min_seconds: float = 0.2):
    fn()
    sync()
    t = time.perf_counter()
    fn()
    sync()
    once = max(time.perf_counter() - t, 1e-6)
    number = max(1, int(min_seconds / once))

    def run() -> float:
        sync()
        t = time.perf_counter()
        for _ in range(number):
            fn()
        sync()
        return (time.perf_counter() - t) / number
    return run


def run(root: Path, rounds: int, json_path: Path | None) -> None:
    import torch
    import torch.nn.functional as F
    import tvm
    ctypes.CDLL("libcuda.so.1", mode=ctypes.RTLD_GLOBAL)
    ctypes.CDLL(str(Path(tvm.__file__).parent / "lib" / "libtvm_runtime_cuda.so"),
                mode=ctypes.RTLD_GLOBAL)
    from tvm.runtime.vm import VirtualMachine
    torch.backends.cuda.matmul.allow_tf32 = False
    dev = tvm.cuda(0)

    def kiln_fn(name: str, *arrays: torch.Tensor):
        vm = VirtualMachine(tvm.runtime.load_module(str(root / f"{name}.so")), dev)
        args = [tvm.runtime.tensor(a.cpu().numpy(), dev) for a in arrays]
        out = vm["main"](*args)
        return (lambda: vm["main"](*args)), out

    def sync() -> None:
        torch.cuda.synchronize()
        dev.sync()

    g = torch.Generator(device="cuda").manual_seed(0)
    rows = []

    def pair(case: str, torch_fn, kiln_call, want, got, work: float, unit: str) -> None:
        got = torch.from_numpy(got.numpy()).to(want.device)
        err = float((got - want).abs().max() / want.abs().max())
        t_t, t_k = _timer(torch_fn, sync), _timer(kiln_call, sync)
        ts, ks = [], []
        for _ in range(rounds):
            ts.append(t_t())
            ks.append(t_k())
        mt, mk = statistics.median(ts), statistics.median(ks)
        rows.append({"case": case, "torch_ms": mt * 1e3, "kiln_ms": mk * 1e3,
                     "ratio": mk / mt, f"kiln_{unit}": work / mk / 1e12,
                     f"torch_{unit}": work / mt / 1e12, "rel_err": err})
        print(f"{case:26} | {mt * 1e3:9.3f} | {mk * 1e3:9.3f} | {mk / mt:6.2f}x | "
              f"{work / mt / 1e12:7.2f} vs {work / mk / 1e12:7.2f} {unit} | err {err:.0e}",
              flush=True)

    print(f"kiln vs torch {torch.__version__} on {torch.cuda.get_device_name()}, medians of "
          f"{rounds} alternating rounds; kiln/torch below 1.00x: kiln faster")
    print(f"{'case':26} | {'torch ms':>9} | {'kiln ms':>9} | {'k/t':>7} | "
          "throughput (torch vs kiln)")
    a = torch.randn(GEMM, GEMM, device="cuda", generator=g)
    b = torch.randn(GEMM, GEMM, device="cuda", generator=g)
    call, out = kiln_fn("gemm", a, b)
    pair("fp32 GEMM 4096^3 (no TF32)", lambda: torch.matmul(a, b), call, torch.matmul(a, b),
         out, 2.0 * GEMM ** 3, "TFLOP/s")
    a, b = a.half(), b.half()
    call, out = kiln_fn("gemm_fp16", a, b)
    pair("fp16 GEMM 4096^3", lambda: torch.matmul(a, b), call, torch.matmul(a, b), out,
         2.0 * GEMM ** 3, "TFLOP/s")
    shape = (ATT_B, ATT_H, ATT_T, ATT_D)
    q, k, v = (torch.randn(shape, device="cuda", generator=g, dtype=torch.float16)
               for _ in range(3))
    for causal in (False, True):
        call, out = kiln_fn("attention_causal" if causal else "attention", q, k, v)
        sdpa = lambda c=causal: F.scaled_dot_product_attention(q, k, v, is_causal=c)  # noqa: E731
        flops = 4.0 * ATT_B * ATT_H * ATT_T * ATT_T * ATT_D / (2 if causal else 1)
        pair(f"attention{' causal' if causal else ''} fp16", sdpa, call, sdpa(), out, flops,
             "TFLOP/s")
    x = torch.randn(ROWS, COLS, device="cuda", generator=g)
    moved = 2.0 * x.numel() * 4                # bytes: one read and one write
    call, out = kiln_fn("neg_copy", x)
    pair("copy 8192x4096 (y = -x)", lambda: torch.neg(x), call, torch.neg(x), out, moved,
         "TB/s")
    gamma = torch.from_numpy(np.load(root / "ln_gamma.npy")).cuda()
    beta = torch.from_numpy(np.load(root / "ln_beta.npy")).cuda()
    call, out = kiln_fn("layer_norm", x)
    ln = lambda: F.layer_norm(x, (COLS,), gamma, beta, 1e-5)  # noqa: E731
    pair("LayerNorm 8192x4096", ln, call, ln(), out, moved, "TB/s")
    call, out = kiln_fn("softmax", x)
    pair("softmax 8192x4096", lambda: torch.softmax(x, -1), call, torch.softmax(x, -1), out,
         moved, "TB/s")
    if json_path:
        json_path.write_text(json.dumps(rows, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("dir", type=Path)
    p.add_argument("--target", default="cuda")
    r = sub.add_parser("run")
    r.add_argument("dir", type=Path)
    r.add_argument("--rounds", type=int, default=7)
    r.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.cmd == "prepare":
        prepare(args.dir, args.target)
    else:
        run(args.dir, args.rounds, args.json)


if __name__ == "__main__":
    main()
