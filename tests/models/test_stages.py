"""Every stage of ``kiln inspect`` prints for MiniLM-L3: on x86 all but cuda, then the CUDA C
of a cuda build and the assembly of an aarch64 one (make test-models)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

import kiln
from kiln.stages import STAGES, stage_texts

pytestmark = pytest.mark.models
CACHE = Path(os.environ.get("KILN_MODELS", Path(__file__).parents[2] / ".cache" / "models"))
SHAPES = {"input_ids": (1, 128), "attention_mask": (1, 128)}

# what each stage shows of a kernel (a transformer's GEMMs on x86)
KERNEL_NEEDLES = {"te": r"_gemm\[i0, i1(, i2)?\] = sum\(", "tir": r"T\.prim_func",
                  "scheduled": r"def apply_trace\(sch", "lowered": r"__tvm_ffi_fused_matmul",
                  "llvm": r"fmul.*<16 x float>|@llvm\.fmuladd\.v16f32", "asm": r"vfmadd\S+\s.*%zmm"}


@pytest.fixture(scope="module")
def minilm() -> kiln.codegen.pipeline.Compilation:
    path = CACHE / "paraphrase_minilm_l3.onnx"
    if not path.is_file():
        pytest.fail(f"{path} is missing: `make test-models` fetches the models into {CACHE}")
    return kiln.compile_stages(path, "x86-avx512", SHAPES)


@pytest.mark.parametrize("stage", [s for s in STAGES if s != "cuda"])
def test_every_stage_prints_on_x86(minilm, stage: str) -> None:
    texts = stage_texts(minilm, stage)
    if stage in ("graph", "simplified", "fused"):
        (text,) = texts
        needle = {"graph": "%input_ids: i64[1, 128]", "simplified": "= layer_norm(",
                  "fused": "group fused_layer_norm"}[stage]
        assert needle in text.text, text.text[:2000]
        return
    assert [t.title.split(",")[0] for t in texts] == [f"kernel {k.name}" for k in minilm.kernels]
    gemms = [t for t in texts if "matmul" in t.title]
    assert len(gemms) >= 18 and all(t.text.strip() for t in texts)
    assert all(re.search(KERNEL_NEEDLES[stage], t.text) for t in gemms[:3]), gemms[0].text[:3000]


@pytest.mark.parametrize(("target", "stage", "needle"), [
    ("cuda", "cuda", r'extern "C" __global__ void'),
    ("arm-neon", "asm", r"fmla\s+v\d+\.4s"),
])
def test_other_targets_print(target: str, stage: str, needle: str) -> None:
    c = kiln.compile_stages(CACHE / "paraphrase_minilm_l3.onnx", target, SHAPES)
    texts = stage_texts(c, stage, op="matmul")
    assert texts and all(re.search(needle, t.text) for t in texts), texts[0].text[:2000]
