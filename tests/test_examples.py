"""The runnable examples in examples/: each runs as a user would run it, in a fresh process,
and its output says what it should."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kiln.target import ARM_CC, get_target

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str) -> str:
    proc = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_custom_model() -> None:
    out = run_example("custom_model.py")
    assert re.search(r"^keyword spotter: .* 12 kernels for x86", out, re.M), out
    m = re.search(r"sum to (\S+); the likeliest is #(\d+) \((\S+)\); error vs the reference "
                  r"interpreter (\S+)$", out, re.M)
    assert m, out
    total, best, p, err = float(m[1]), int(m[2]), float(m[3]), float(m[4])
    assert abs(total - 1) < 1e-5 and 0 <= best < 12 and 1 / 12 <= p <= 1 and err < 1e-4
    assert float(re.search(r"x86 latency: median (\S+) ms", out)[1]) > 0
    if shutil.which(ARM_CC):
        assert re.search(r"arm-neon: exported keyword_spotter_arm\.so, \d+ kB, an ELF for "
                         r"machine 183", out), out
    else:
        assert f"exporting needs {ARM_CC}" in out
    assert out.rstrip().endswith("custom_model OK")


# The examples on real models (sentence_embedding, image_classification, voice_activity) need
# the models that `make test` fetches into $KILN_MODELS; where that is unset (a developer's
# plain pytest run) and the model was never fetched, their tests skip.
REAL_MODELS = {"sentence_embedding.py": "paraphrase_minilm_l3",
               "image_classification.py": "ppocr_mobile_v2_cls",
               "voice_activity.py": "silero_vad_16k_sequence",
               "int8_model.py": "paraphrase_minilm_l3"}


def run_real_model_example(name: str) -> str:
    models = Path(os.environ.get("KILN_MODELS") or EXAMPLES.parent / ".cache" / "models")
    if not (models / f"{REAL_MODELS[name]}.onnx").is_file():
        if "KILN_MODELS" in os.environ:
            pytest.fail(f"{REAL_MODELS[name]} is missing from $KILN_MODELS={models}")
        pytest.skip(f"{REAL_MODELS[name]} not fetched (make test fetches it)")
    return run_example(name)


def latencies(out: str) -> tuple[float, float]:
    m = re.search(r"^latency \(.*\): kiln (\S+) ms, ONNX Runtime (\S+) ms", out, re.M)
    assert m, out
    return float(m[1]), float(m[2])


def test_real_model_example_without_its_model(tmp_path: Path) -> None:
    """One line saying how to fetch the model, exit status 2 (the three examples share the
    code: one of them is run, as importing kiln takes a few seconds of CPU)."""
    name = "voice_activity.py"
    proc = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "KILN_MODELS": str(tmp_path)})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"model {REAL_MODELS[name]} not found" in lines[0]
    assert re.search(rf"fetch it with: python \S*tests/models/fetch\.py \S+ {REAL_MODELS[name]}$",
                     lines[0]), lines[0]


def test_sentence_embedding() -> None:
    out = run_real_model_example("sentence_embedding.py")
    assert re.search(r"^sentence_embedding: paraphrase-MiniLM-L3-v2, batch 4 x 14 tokens; \d+ "
                     r"kernels for x86", out, re.M), out
    assert "tokens: fixed token-id sequences, not text" in out
    pool = re.search(r"masked mean of kiln's token vectors: max abs difference (\S+)$", out, re.M)
    assert pool and float(pool[1]) < 1e-5, out
    cos = {(m[1], m[2]): (float(m[3]), float(m[4]))
           for m in re.finditer(r"^  cos\((\w), (\w)\) = (\S+) \((\S+)\)$", out, re.M)}
    assert len(cos) == 6, out
    for got, want in cos.values():
        assert -1 <= got <= 1 and abs(got - want) < 1e-4, out
    for engine in (0, 1):       # a 3-id edit and a prefix stay closer to A than unrelated ids
        assert cos["A", "B"][engine] > cos["A", "D"][engine] + 0.2, out
        assert cos["A", "C"][engine] > cos["A", "D"][engine] + 0.2, out
    m = re.search(r"vs ONNX Runtime: normalised embeddings (\S+), cosines (\S+)$", out, re.M)
    assert m and float(m[1]) < 1e-4 and float(m[2]) < 1e-4, out
    assert min(latencies(out)) > 0
    assert out.rstrip().endswith("sentence_embedding OK")


def test_sentence_embedding_wordpiece(tmp_path: Path) -> None:
    """--vocab's tokenizer, on a small vocabulary: the ids Hugging Face's
    BertWordPieceTokenizer(lowercase=True) gives for the same vocab.txt and texts."""
    spec = importlib.util.spec_from_file_location("sentence_embedding",
                                                  EXAMPLES / "sentence_embedding.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "man", "play", "##ing", "guitar", ".",
             "un", "aff", "##able", "-", "hello", ",", "!", "caf", "##e", "\u4e2d"]
    vocab = {w: i for i, w in enumerate(words)}
    assert example.wordpiece("A man is playing a guitar.", vocab) == [2, 4, 5, 1, 6, 7, 4, 8,
                                                                       9, 3]
    assert example.wordpiece("H\u00e9llo, un-affable CAF\u00c9!\u4e2d\u56fd", vocab) == [
        2, 14, 15, 10, 13, 11, 12, 17, 18, 16, 19, 1, 3]


def test_image_classification() -> None:
    out = run_real_model_example("image_classification.py")
    assert re.search(r"^image_classification: .* batch 4x3x48x192; \d+ kernels for x86", out,
                     re.M), out
    rows = {(m[1], m[2], m[3]): (float(m[4]), float(m[5]), m[6]) for m in re.finditer(
        r'^  "(.+)" (upright|rotated)\s+(kiln|ORT)\s+(\S+)\s+(\S+)\s+(0|180)$', out, re.M)}
    assert len(rows) == 8, out
    for (text, way, engine), (p0, p180, cls) in rows.items():
        assert abs(p0 + p180 - 1) < 3e-6, out
        other = rows[text, way, "ORT" if engine == "kiln" else "kiln"]
        assert abs(p0 - other[0]) < 1e-4 and abs(p180 - other[1]) < 1e-4, out
        if text == "kiln compiles ONNX":
            assert cls == ("0" if way == "upright" else "180"), out
        else:                   # "NOON" reads the same both ways up: the model is unsure
            assert 0.05 < p0 < 0.95, out
    m = re.search(r"^max abs difference vs ONNX Runtime: (\S+); kiln's probabilities sum to "
                  r"(\S+)-(\S+)$", out, re.M)
    assert m and float(m[1]) < 1e-4, out
    assert abs(float(m[2]) - 1) < 1e-5 and abs(float(m[3]) - 1) < 1e-5, out
    assert min(latencies(out)) > 0
    assert out.rstrip().endswith("image_classification OK")


def test_voice_activity() -> None:
    out = run_real_model_example("voice_activity.py")
    assert re.search(r"^voice_activity: silero VAD .* \d+ kernels for x86", out, re.M), out
    frames = [float(p) for m in re.finditer(r"^  \d\.\d{3}-\d\.\d{3} s  (.*)$", out, re.M)
              for p in m[1].split()]
    assert len(frames) == 96 and all(0 <= p <= 1 for p in frames), out
    means = {m[1]: (float(m[2]), float(m[3])) for m in re.finditer(
        r"^  (silence|noise|speech)\s+\(\s*\d+ frames\): kiln (\S+)\s+ONNX Runtime (\S+)$",
        out, re.M)}
    assert set(means) == {"silence", "noise", "speech"}, out
    for engine in (0, 1):       # kiln, then ONNX Runtime: voice scores high, noise does not
        assert means["speech"][engine] > 0.5 > max(means["silence"][engine],
                                                    means["noise"][engine]), out
    for got, want in means.values():
        assert abs(got - want) < 1e-4, out
    m = re.search(r"vs ONNX Runtime: probabilities (\S+), final LSTM state (\S+)$", out, re.M)
    assert m and float(m[1]) < 1e-4 and float(m[2]) < 1e-4, out
    assert min(latencies(out)) > 0
    assert out.rstrip().endswith("voice_activity OK")


def test_gpt_decode() -> None:
    """6 layers, dim 512, 8 heads, vocabulary 8192: 64 greedy tokens, every logit checked
    against the reference interpreter on the whole sequence (the example's own check, whose
    numbers are checked again here), and the decode step timed at positions 16 and 512."""
    out = run_example("gpt_decode.py")
    assert re.search(r"^gpt: 6 layers, dim 512, 8 heads, vocabulary 8192", out, re.M), out
    m = re.search(r"max error (\S+) \(relative to the largest logit\); same greedy tokens: "
                  r"(\w+)", out)
    assert m and float(m[1]) < 1e-4 and m[2] == "True", out
    assert re.search(r"^generated 64 tokens: \[(\d+, ){11}\d+\]", out, re.M), out
    m = re.search(r"decode step: (\S+) ms at position 16, (\S+) ms at position 512; prefill "
                  r"of 8 tokens: (\S+) ms", out)
    assert m and all(float(x) > 0 for x in m.groups()), out
    assert out.rstrip().endswith("gpt_decode OK")


def test_int8_model() -> None:
    """MiniLM-L3 by quantize_dynamic: its int8 GEMMs on the dot instruction, the first uint8
    activation equal to onnxruntime's, the embedding far closer to onnxruntime's int8 one than
    int8 is to float32, and three positive latencies."""
    out = run_real_model_example("int8_model.py")
    m = re.search(r"^MiniLM-L3, int8 by quantize_dynamic: (\d+) int8 GEMMs on the dot", out, re.M)
    # 18 where the CPU has an int8 dot instruction (VNNI); the widening template elsewhere
    assert m and int(m[1]) == (18 if get_target("x86").int8_dot else 0), out
    assert re.search(r"^12 int8 activations vs ONNX Runtime's: the first equal;", out, re.M), out
    m = re.search(r"embedding vs ONNX Runtime int8: (\S+) .* int8 vs float32 model: (\S+)$",
                  out, re.M)
    assert m and float(m[1]) < float(m[2]) / 20, out
    m = re.search(r"kiln int8 (\S+) ms, kiln float32 (\S+) ms, ONNX Runtime int8 (\S+) ms", out)
    assert m and all(float(x) > 0 for x in m.groups()), out
    assert out.rstrip().endswith("int8_model OK")
