"""Voice activity detection with a real LSTM model: silero VAD (16 kHz).

    python examples/voice_activity.py

The model (``silero_vad_16k_sequence``, from the silero-vad wheel) scores 32 ms frames of 16
kHz audio: each row of its input is a frame's 512 new samples after the last 64 samples of the
frame before (zeros before the first), and its LSTM state (h, c: [1, 1, 128]) carries from one
call to the next, so audio streams through it in blocks of frames. This example compiles it
for blocks of 8 frames (256 ms), streams 3 s of synthetic audio through kiln and through ONNX
Runtime, and prints each frame's speech probability.

The audio: near-silence (noise at -60 dBFS), a burst of loud white noise, and a voiced,
speech-like signal: 40 harmonics of a pitch that glides between about 100 and 160 Hz with
vibrato, weighted by the formants of five vowels in turn, at a syllable rate of 4 Hz.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_models import compare_latency, latency_line, model_path, ort_session  # noqa: E402

import kiln  # noqa: E402

NAME, RATE, FRAME, CONTEXT, BLOCK, STATE = "silero_vad_16k_sequence", 16000, 512, 64, 8, 128
BLOCKS = 12                                       # 96 frames: 3.07 s
SEGMENTS = (("silence", 0.0, 0.5), ("noise", 0.5, 1.0), ("silence", 1.0, 1.25),
            ("speech", 1.25, 2.5), ("silence", 2.5, BLOCKS * BLOCK * FRAME / RATE))
VOWELS = np.array([[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240],   # a i u e o:
                   [530, 1840, 2480], [570, 840, 2410]], np.float64)         # F1 F2 F3 (Hz)


def voiced(n: int, rng: np.random.Generator) -> np.ndarray:
    """A speech-like vowel sequence: harmonics k * f0(t), each weighted by how close it lies
    to the current vowel's three formants, under a 4 Hz syllable envelope, plus a little
    breath noise; peak 0.5."""
    t = np.arange(n) / RATE
    f0 = 130 + 25 * np.sin(2 * np.pi * 0.7 * t) + 8 * np.sin(2 * np.pi * 5.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    formants = VOWELS[(t * 4).astype(int) % len(VOWELS)]
    sig = np.zeros(n)
    for k in range(1, 41):
        fk = k * f0
        weight = 0.02 + sum(np.exp(-0.5 * ((fk - formants[:, j]) / (80 + 40 * j)) ** 2) / (j + 1)
                            for j in range(3))
        sig += weight * (fk < RATE / 2) * np.sin(k * phase) / np.sqrt(k)
    sig *= 0.55 - 0.45 * np.cos(2 * np.pi * 4 * t)
    return 0.5 * sig / np.abs(sig).max() + 0.003 * rng.standard_normal(n)


def signal() -> np.ndarray:
    rng = np.random.default_rng(0)
    audio = 0.001 * rng.standard_normal(BLOCKS * BLOCK * FRAME)
    for kind, start, end in SEGMENTS:
        a, b = int(start * RATE), int(end * RATE)
        if kind == "noise":
            audio[a:b] += 0.1 * rng.standard_normal(b - a)
        elif kind == "speech":
            audio[a:b] = voiced(b - a, rng)
    return audio.astype(np.float32)


def frames_of(audio: np.ndarray) -> np.ndarray:
    """[frames, 64 + 512]: each frame after the last 64 samples of the one before."""
    frames = audio.reshape(-1, FRAME)
    context = np.zeros((len(frames), CONTEXT), np.float32)
    context[1:] = frames[:-1, -CONTEXT:]
    return np.concatenate([context, frames], axis=1)


def stream(run, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Speech probabilities of every frame, feeding ``rows`` BLOCK frames a call and carrying
    the LSTM state; and the final state."""
    h = c = np.zeros((1, 1, STATE), np.float32)
    probs = []
    for block in rows.reshape(-1, BLOCK, CONTEXT + FRAME):
        p, h, c = run(input=block, h=h, c=c)
        probs.append(p)
    return np.concatenate(probs), h, c


def segment_of(frame: int) -> str | None:
    """The segment a frame lies wholly inside (None across a boundary)."""
    a, b = frame * FRAME / RATE, (frame + 1) * FRAME / RATE
    return next((kind for kind, start, end in SEGMENTS if start <= a and b <= end), None)


def main() -> None:
    path = model_path("voice_activity", NAME)
    t0 = time.perf_counter()
    shapes = {"input": (BLOCK, CONTEXT + FRAME), "h": (1, 1, STATE), "c": (1, 1, STATE)}
    lib = kiln.compile(path, "x86", input_shapes=shapes)
    print(f"voice_activity: silero VAD (16 kHz, LSTM {STATE}), blocks of {BLOCK} frames x "
          f"({CONTEXT} + {FRAME} samples); {len(lib.compilation.kernels)} kernels for "
          f"{lib.compilation.target}, compiled in {time.perf_counter() - t0:.1f} s")
    audio = signal()
    print(f"signal: {audio.size / RATE:.2f} s at {RATE} Hz: "
          + ", ".join(f"{kind} {start:.2f}-{end:.2f} s" for kind, start, end in SEGMENTS))

    rows = frames_of(audio)
    sess = ort_session(path)
    probs, h, c = stream(lambda **f: lib(**f), rows)
    want, h_ref, c_ref = stream(lambda **f: sess.run(None, f), rows)
    print(f"speech probability per {FRAME * 1000 // RATE} ms frame, kiln (state carried "
          "from block to block):")
    for b in range(BLOCKS):
        frames = range(b * BLOCK, (b + 1) * BLOCK)
        print(f"  {frames[0] * FRAME / RATE:5.3f}-{(frames[-1] + 1) * FRAME / RATE:5.3f} s  "
              + " ".join(f"{probs[f]:.2f}" for f in frames))
    print("mean speech probability over the frames wholly inside each kind of segment:")
    labels = np.array([segment_of(f) or "" for f in range(len(probs))])
    for kind in ("silence", "noise", "speech"):
        sel = labels == kind
        print(f"  {kind:8} ({sel.sum():2} frames): kiln {probs[sel].mean():.4f}  "
              f"ONNX Runtime {want[sel].mean():.4f}")
    err = float(np.abs(probs - want).max())
    state_err = float(max(np.abs(h - h_ref).max(), np.abs(c - c_ref).max()))
    print(f"max abs difference vs ONNX Runtime: probabilities {err:.1e}, final LSTM state "
          f"{state_err:.1e}")
    if err > 1e-4 or state_err > 1e-4:
        sys.exit(f"voice_activity FAILED: differences {err:.1e}, {state_err:.1e}")

    feeds = {"input": rows[:BLOCK], "h": np.zeros((1, 1, STATE), np.float32),
             "c": np.zeros((1, 1, STATE), np.float32)}
    t_kiln, t_ort = compare_latency(lib, sess, feeds)
    print(latency_line(f"one block, {BLOCK * FRAME * 1000 // RATE} ms of audio", t_kiln, t_ort))
    print("voice_activity OK")


if __name__ == "__main__":
    main()
