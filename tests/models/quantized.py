"""Statically quantized versions of the shared image models, made as a user makes them: fixed
at the manifest's input shape, opset 13 (per-channel QDQ needs it), onnxruntime's
``quant_pre_process``, then ``quantize_static`` in QDQ format with per-channel int8 weights and
uint8 activations, calibrated on seeded document pages. Used by the models tests and
``benchmarks/int8.py``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from fetch import document_image, manifest
from onnx import version_converter

QDQ_OPSET = 13
CALIBRATION_PAGES = 8


def quantize_static_qdq(src: Path, name: str, out_dir: Path,
                        pages: int = CALIBRATION_PAGES, seed: int = 0) -> tuple[Path, Path]:
    """``src`` (the manifest's model ``name``, one image input) quantized statically. Returns
    the float model it was quantized from (fixed shape, opset 13, pre-processed) and the int8
    QDQ model, both written to ``out_dir``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    ((input_name, (_, shape)),) = manifest()[name]["example_feeds"].items()
    model = onnx.load(src)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for d, size in zip(dims, shape, strict=True):
        d.ClearField("dim_param")
        d.dim_value = size
    fixed, floats, int8 = (out_dir / f"{name}_{s}.onnx" for s in ("fixed", "float", "int8"))
    onnx.save(version_converter.convert_version(model, QDQ_OPSET), fixed)
    quant_pre_process(str(fixed), str(floats), skip_symbolic_shape=True)

    class Pages(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(seed)
            self.feeds = iter([{input_name: document_image(tuple(shape), rng)}
                               for _ in range(pages)])

        def get_next(self) -> dict | None:
            return next(self.feeds, None)

    quantize_static(str(floats), str(int8), Pages(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)
    return floats, int8
