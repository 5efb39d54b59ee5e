"""Image classification with a real MobileNetV3: PP-OCR's text-direction classifier.

    python examples/image_classification.py [--text "some words"]

The model (``ppocr_mobile_v2_cls``, from the rapidocr-onnxruntime wheel) tells whether a
cropped line of text is upright (class 0) or upside down (class 180), before OCR reads it.
The example renders a line of text with Pillow, preprocesses it as PP-OCR does (height 48,
width in proportion up to 192, right-padded; pixels scaled to [-1, 1]) and classifies it and
its 180-degree rotation, with kiln and with ONNX Runtime. In the same batch goes "NOON", a
word that reads the same upside down: there the classifier is unsure (P(0) near 0.3 both
ways up), so kiln and ONNX Runtime are compared on probabilities away from 0 and 1.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_models import compare_latency, latency_line, model_path, ort_session  # noqa: E402

import kiln  # noqa: E402

NAME, HEIGHT, WIDTH, CLASSES = "ppocr_mobile_v2_cls", 48, 192, ("0", "180")
SYMMETRIC = "NOON"                                # the same string when turned upside down


def render(text: str) -> Image.Image:
    """Dark text on a light page, cropped to the line with a small margin, as a detector's
    crop would be."""
    font = ImageFont.load_default(size=32)       # Pillow's bundled TrueType font
    left, top, right, bottom = font.getbbox(text)
    img = Image.new("RGB", (right - left + 16, bottom - top + 12), (250, 248, 240))
    ImageDraw.Draw(img).text((8 - left, 6 - top), text, font=font, fill=(20, 20, 30))
    return img


def preprocess(img: Image.Image) -> np.ndarray:
    """PP-OCR's classifier input: [3, 48, 192], the line resized to height 48 keeping its
    aspect ratio (at most 192 wide), scaled to [-1, 1] and zero-padded on the right."""
    w, h = img.size
    width = min(WIDTH, int(np.ceil(HEIGHT * w / h)))
    pixels = np.asarray(img.resize((width, HEIGHT), Image.BILINEAR), np.float32) / 255
    out = np.zeros((3, HEIGHT, WIDTH), np.float32)
    out[:, :, :width] = (pixels.transpose(2, 0, 1) - 0.5) / 0.5
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--text", default="kiln compiles ONNX")
    args = ap.parse_args()
    path = model_path("image_classification", NAME)

    img = render(args.text)
    rows = [(f'"{text}" {way}', image) for text in (args.text, SYMMETRIC)
            for way, image in (("upright", render(text)), ("rotated", render(text).rotate(180)))]
    x = np.stack([preprocess(image) for _, image in rows])
    t0 = time.perf_counter()
    lib = kiln.compile(path, "x86", input_shapes={"x": x.shape})
    print(f"image_classification: PP-OCR text-direction classifier (MobileNetV3), batch "
          f"{'x'.join(map(str, x.shape))}; {len(lib.compilation.kernels)} kernels for "
          f"{lib.compilation.target}, compiled in {time.perf_counter() - t0:.1f} s")
    print(f'input: "{args.text}" rendered with Pillow ({img.size[0]}x{img.size[1]} px), '
          f"resized to {HEIGHT} px high and padded to {WIDTH}; the same rotated 180 degrees; "
          f'and "{SYMMETRIC}", both ways up')

    (probs,) = lib(x=x)
    sess = ort_session(path)
    (want,) = sess.run(None, {"x": x})
    err = float(np.abs(probs - want).max())
    width = max(len(label) for label, _ in rows)
    print(f"  {'':{width}}  engine  P(0 deg)  P(180 deg)  class")
    for i, (label, _) in enumerate(rows):
        for engine, p in (("kiln", probs[i]), ("ORT", want[i])):
            print(f"  {label:{width}}  {engine:6}  {p[0]:.6f}  {p[1]:.6f}    {CLASSES[p.argmax()]}")
    sums = probs.sum(axis=1)
    print(f"max abs difference vs ONNX Runtime: {err:.1e}; kiln's probabilities sum to "
          f"{sums.min():.6f}-{sums.max():.6f}")
    if err > 1e-4 or np.abs(sums - 1).max() > 1e-5:
        sys.exit(f"image_classification FAILED: difference {err:.1e}, sums {sums}")

    t_kiln, t_ort = compare_latency(lib, sess, {"x": x})
    print(latency_line(f"batch {x.shape[0]}", t_kiln, t_ort))
    print("image_classification OK")


if __name__ == "__main__":
    main()
