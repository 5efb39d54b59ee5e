"""Compile kiln graphs and real models for CUDA on this machine and write, per case, the
library, its inputs and the reference interpreter's outputs, for ``run_cases.py`` to check on
a GPU host:

    python tests/gpu/prepare_cases.py OUT [--target cuda] [--models DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import kiln  # noqa: E402
from kiln import ops  # noqa: E402


def _domains() -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ir"))
    from test_elementwise_ops import DOMAINS
    return DOMAINS


def graphs() -> dict[str, kiln.Graph]:
    """Each CUDA template on ragged shapes: GEMM with an epilogue, batched matmul, row
    reductions (softmax, layer_norm, reduce over the last axis), a leading-axis reduction, and
    injective chains (transpose, gather, broadcast)."""
    rng = np.random.default_rng(0)
    DOMAINS = _domains()                          # noqa: N806 (the x86 tests' table)
    out = {}
    g = kiln.Graph("gemm_epilogue")
    x = g.input("x", (37, 96), "float32")
    h = ops.gelu(ops.add(ops.matmul(x, rng.standard_normal((96, 70)).astype(np.float32)),
                         rng.standard_normal(70).astype(np.float32)))
    g.output(ops.softmax(h, axis=-1))
    g.output(ops.layer_norm(h, rng.standard_normal(70).astype(np.float32),
                            rng.standard_normal(70).astype(np.float32)))
    out[g.name] = g
    g = kiln.Graph("batched_matmul")
    g.output(ops.matmul(g.input("a", (3, 65, 33), "float32"), g.input("b", (3, 33, 129),
                                                                         "float32")))
    out[g.name] = g
    g = kiln.Graph("gemm_large_tiles")           # the 64 x 128 double-buffered tiles, ragged
    g.output(ops.matmul(g.input("a", (130, 77), "float32"), g.input("b", (77, 200), "float32")))
    out[g.name] = g
    g = kiln.Graph("gemm_interleaved_b")         # N in whole 128-column tiles: B interleaved
    g.output(ops.matmul(g.input("a", (2, 130, 77), "float32"), g.input("b", (77, 256),
                                                                        "float32")))
    out[g.name] = g
    g = kiln.Graph("group_norm")                 # as ONNX GroupNormalization lowers: a
    x = g.input("x", (2, 64, 7, 9), "float32")   # layer_norm over (C / G) x H x W rows
    y = ops.layer_norm(ops.reshape(x, (2, 8, 8 * 7 * 9)), np.ones((8 * 7 * 9,), np.float32),
                       np.zeros((8 * 7 * 9,), np.float32), axis=2)
    y = ops.reshape(y, (2, 64, 7, 9))
    g.output(ops.add(ops.mul(y, rng.standard_normal((64, 1, 1)).astype(np.float32)),
                     rng.standard_normal((64, 1, 1)).astype(np.float32)))
    out[g.name] = g
    g = kiln.Graph("reductions")
    x = g.input("x", (13, 1000), "float32")
    g.output(ops.sum(x, axes=[-1]))
    g.output(ops.max(x, axes=[0]))
    g.output(ops.softmax(x, axis=-1))
    out[g.name] = g
    g = kiln.Graph("injective")
    x = g.input("x", (5, 7, 9), "float32")
    g.output(ops.transpose(ops.exp(x), (2, 0, 1)))
    g.output(ops.add(x, g.input("b", (9,), "float32")))
    out[g.name] = g
    for name, (unary, _) in DOMAINS.items():       # every unary op, on its domain
        g = kiln.Graph(f"unary_{name}")
        x = g.input("x", (3, 5, 37), "float32")
        g.output(*(g.add(op, [x], **attrs)[0] for op, attrs in unary))
        out[g.name] = g
    g = kiln.Graph("more_reductions")
    x = g.input("x", (6, 9, 77), "float32")
    g.output(ops.mean(x, axes=[1, 2]), ops.min(x, axes=[1]), ops.prod(x, axes=[-1]),
             ops.log_softmax(x, axis=-1), ops.argmax(x, axis=-1),
             ops.rms_norm(x, np.linspace(0.5, 1.5, 77).astype(np.float32)),
             ops.logsumexp(x, axes=[0]))
    out[g.name] = g
    g = kiln.Graph("indexing")
    x = g.input("x", (6, 9, 77), "float32")
    idx = np.array([[0, 5], [8, 2]], np.int64)
    g.output(ops.gather(x, idx, axis=1), ops.slice(x, [1, 2], [6, 70], axes=[1, 2]),
             ops.concat([x, x], axis=0), ops.pad(x, [0, 1, 2, 0, 3, 1]),
             ops.reshape(x, (54, 77)), ops.cast(x, "float16"), ops.where(
                 ops.greater(x, np.float32(0)), x, np.float32(-1)))
    out[g.name] = g
    half = rng.standard_normal                   # float16 GEMMs: the tensor-core template
    g = kiln.Graph("half_gemm_epilogue")         # ragged: every copy and store predicated
    x = g.input("x", (37, 96), "float16")
    g.output(ops.gelu(ops.add(ops.matmul(x, half((96, 70)).astype(np.float16)),
                              half(70).astype(np.float16))))
    out[g.name] = g
    g = kiln.Graph("half_dense_residual")        # W as [N, K]; several 64 x 64 tiles
    x = g.input("x", (192, 256), "float16")
    g.output(ops.add(ops.dense(x, half((320, 256)).astype(np.float16)),
                     g.input("r", (192, 320), "float16")))
    out[g.name] = g
    g = kiln.Graph("half_batched_matmul")
    g.output(ops.matmul(g.input("a", (3, 65, 33), "float16"),
                        g.input("b", (3, 33, 129), "float16")))
    out[g.name] = g
    g = kiln.Graph("half_gemm_wgmma_batched")    # whole tiles, no epilogue: the wgmma kernel
    g.output(ops.matmul(g.input("a", (2, 256, 192), "float16"),
                        g.input("b", (2, 192, 512), "float16")))
    out[g.name] = g
    g = kiln.Graph("half_dense_wgmma")           # W [N, K]: K-major B tiles
    g.output(ops.dense(g.input("x", (3, 128, 320), "float16"),
                       half((256, 320)).astype(np.float16)))
    out[g.name] = g
    g = kiln.Graph("half_gemm_large_tiles")      # the 128 x 128 tiles, 3 stages, ragged M
    g.output(ops.matmul(g.input("a", (2050, 512), "float16"),
                        g.input("b", (512, 1152), "float16")))
    out[g.name] = g
    for name, (b, h, t, s, d, causal) in {      # the flash-attention template
            "attention_half": (2, 3, 128, 192, 64, False),
            "attention_half_causal": (1, 2, 256, 256, 64, True),
            "attention_half_d128_offset": (1, 2, 64, 192, 128, True)}.items():
        out[name] = attention(name, b, h, t, s, d, causal)
    g = kiln.Graph("injective_vectors")          # whole vectors of 4: the float4 path
    x = g.input("x", (64, 1000), "float32")
    g.output(ops.sigmoid(ops.add(x, g.input("b", (1000,), "float32"))))
    g.output(ops.transpose(x, (1, 0)))
    out[g.name] = g
    return out


def attention(name: str, b: int, h: int, t: int, s: int, d: int, causal: bool) -> kiln.Graph:
    """softmax(Q K^T / sqrt(d) [+ causal mask]) V in float16, as exporters spell it: K
    transposed, a scalar scale, an additive -inf mask (bottom-right aligned when t < s)."""
    g = kiln.Graph(name)
    q = g.input("q", (b, h, t, d), "float16")
    k = g.input("k", (b, h, s, d), "float16")
    v = g.input("v", (b, h, s, d), "float16")
    scores = ops.mul(ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))), np.float16(d ** -0.5))
    if causal:
        scores = ops.add(scores, np.triu(np.full((t, s), -np.inf, np.float16), 1 + s - t))
    g.output(ops.matmul(ops.softmax(scores, axis=-1), v))
    return g


def prepare_case(root: Path, name: str, g: kiln.Graph, target: str = "cuda") -> Path:
    """Compile ``g``, draw its inputs (on the op's domain for the unary cases) and write the
    case with the reference interpreter's outputs; float16 cases get a float16 tolerance."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    lo, hi = _domains()[name[6:]][1] if name.startswith("unary_") else (-3.0, 3.0)
    feeds = [rng.uniform(lo, hi, v.shape).astype(v.dtype.value) for v in g.inputs]
    want = kiln.run_reference(g, dict(zip([v.name for v in g.inputs], feeds, strict=True)))
    lib = kiln.compile(g, target)
    half = any(v.dtype.value == "float16" for v in g.inputs)
    # absolute error relative to the output's scale: a sum that cancels to near 0 keeps the
    # rounding of its large partial sums
    scale = max([1.0] + [float(np.max(np.abs(w))) for w in want
                         if w.size and np.issubdtype(w.dtype, np.floating)])
    write_case(root, name, lib, feeds, want, *((1e-2, 1e-2) if half else (1e-4, 1e-5 * scale)))
    return root / name


def write_case(root: Path, name: str, lib: kiln.Library, feeds: list[np.ndarray],
               want: list[np.ndarray], rtol: float, atol: float) -> None:
    case = root / name
    shutil.rmtree(case, ignore_errors=True)
    case.mkdir(parents=True)
    lib.export(case / "model.so")
    for i, a in enumerate(feeds):
        np.save(case / f"in_{i}.npy", a)
    for i, a in enumerate(want):
        np.save(case / f"want_{i}.npy", np.asarray(a))
    (case / "case.json").write_text(json.dumps({"inputs": len(feeds), "outputs": len(want),
                                                "rtol": rtol, "atol": atol}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--target", default="cuda")
    ap.add_argument("--models", type=Path, default=None,
                    help="also the real models cached here (their ORT outputs as reference)")
    args = ap.parse_args()
    for name, g in graphs().items():
        try:
            prepare_case(args.out, name, g, args.target)
        except kiln.KilnError as e:
            print("NOT COMPILED", name, str(e).splitlines()[0][:200], flush=True)
            continue
        print("prepared", name, flush=True)
    if args.models:
        import onnxruntime as ort
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
        from fetch import example_feeds
        for name in ("paraphrase_minilm_l3",):
            path = args.models / f"{name}.onnx"
            feeds = example_feeds(name)
            want = ort.InferenceSession(str(path)).run(None, feeds)
            lib = kiln.compile(str(path), args.target,
                               input_shapes={k: v.shape for k, v in feeds.items()})
            write_case(args.out, name, lib, [feeds[s.name] for s in lib.inputs], want,
                       1e-3, 1e-4)
            print("prepared", name, flush=True)


if __name__ == "__main__":
    main()
