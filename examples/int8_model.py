"""An int8 model: MiniLM-L3 quantised by ONNX Runtime's ``quantize_dynamic``, compiled by kiln.

    python examples/int8_model.py

``quantize_dynamic`` stores every MatMul weight as int8 and quantises the activations at run
time: each MatMul becomes DynamicQuantizeLinear (a min/max reduction and a uint8 rounding),
MatMulInteger (uint8 x int8, int32 sums) and a float rescale. kiln runs each MatMulInteger
with a constant weight on the int8 dot instruction (``vpdpbusd`` on AVX-512 VNNI / AVX-VNNI,
``sdot`` on ARM), its weight packed at compile time.

The check is made where int8 happens: the uint8 activations the model's DynamicQuantizeLinear
nodes produce, exposed as extra outputs in kiln and in ONNX Runtime. The first (the embedding
LayerNorm's, before any arithmetic whose float rounding differs) must equal ORT's exactly.
Later ones move: a softmax summed in another order changes a run-time scale by an ulp, which
flips the rounding of some values by one step, and the flips propagate through the layers.
The example prints those counts, how far kiln's sentence embedding is from ORT's int8 one
(which must be far less than int8's own effect, the distance to the float model's), and the
latencies of kiln int8, kiln float32 and ORT int8.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_models import compare_latency, model_path, ort_session  # noqa: E402

import kiln  # noqa: E402

NAME, SEQ = "paraphrase_minilm_l3", 128
POOLED = -1          # the graph's last output: the mean-pooled sentence embedding [1, 384]


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def expose_activations(path: Path, out: Path) -> Path:
    """A copy of the model whose outputs also include every DynamicQuantizeLinear's uint8
    result (after the original outputs)."""
    model = onnx.load(str(path))
    for node in model.graph.node:
        if node.op_type == "DynamicQuantizeLinear":
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(node.output[0]))
    onnx.save(model, str(out))
    return out


def main() -> int:
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32_path = model_path("int8_model", NAME)
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30000, (1, SEQ), dtype=np.int64)
    ids[0, 0], ids[0, -1] = 101, 102                       # [CLS] ... [SEP]
    feeds = {"input_ids": ids, "attention_mask": np.ones((1, SEQ), np.int64)}
    shapes = {k: v.shape for k, v in feeds.items()}

    with tempfile.TemporaryDirectory() as tmp:
        int8_path = Path(tmp) / "minilm_int8.onnx"
        quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8)
        activations = expose_activations(int8_path, Path(tmp) / "minilm_int8_exposed.onnx")
        start = time.perf_counter()
        lib8 = kiln.compile(int8_path, input_shapes=shapes)
        seconds = time.perf_counter() - start
        sess8 = ort_session(int8_path)
        plain = ort.SessionOptions()
        plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        unoptimised = ort.InferenceSession(str(int8_path), plain,
                                           providers=["CPUExecutionProvider"])
        want = sess8.run(None, feeds)[POOLED]
        spread = relative(unoptimised.run(None, feeds)[POOLED], want)
        exposed = activations.with_name("minilm_int8_exposed.onnx")
        q_kiln = kiln.compile(exposed, input_shapes=shapes)(**feeds)
        q_ort = ort.InferenceSession(str(exposed), providers=["CPUExecutionProvider"]).run(
            None, feeds)
    n_act = len(q_kiln) - len(lib8.outputs)
    steps = [np.abs(a.astype(np.int32) - b.astype(np.int32))
             for a, b in zip(q_kiln[-n_act:], q_ort[-n_act:], strict=True)]
    worst = max(int(d.max()) for d in steps)
    first_exact = not steps[0].any()
    flipped = sum(int((d > 0).sum()) for d in steps)
    total = sum(d.size for d in steps)
    lib32 = kiln.compile(fp32_path, input_shapes=shapes)

    dot = [k for k in lib8.compilation.kernels
           if k.template is not None and k.template.value == "int8 dot gemm"]
    print(f"MiniLM-L3, int8 by quantize_dynamic: {len(dot)} int8 GEMMs on the dot instruction, "
          f"{len(lib8.compilation.kernels)} kernels, compiled in {seconds:.1f} s")
    got = lib8(**feeds)[POOLED]
    err = relative(got, want)
    drift = relative(lib32(**feeds)[POOLED], want)
    print(f"{n_act} int8 activations vs ONNX Runtime's: the first "
          f"{'equal' if first_exact else 'DIFFERENT'}; over all, at most {worst} quantisation "
          f"step(s) apart, {flipped} of {total} values ({flipped / total:.1%}) differ")
    print(f"embedding vs ONNX Runtime int8: {err:.2e} (ORT's optimised and unoptimised builds: "
          f"{spread:.2e} apart); int8 vs float32 model: {drift:.2e}")

    t8, t_ort = compare_latency(lib8, sess8, feeds)
    t32, _ = compare_latency(lib32, sess8, feeds, rounds=5)
    print(f"latency (1 x {SEQ} tokens, {kiln.num_threads()} threads, medians of alternating "
          f"rounds): kiln int8 {t8 * 1e3:.3f} ms, kiln float32 {t32 * 1e3:.3f} ms, "
          f"ONNX Runtime int8 {t_ort * 1e3:.3f} ms")
    ok = first_exact and err < drift / 20
    print("int8_model OK" if ok else "int8_model FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
