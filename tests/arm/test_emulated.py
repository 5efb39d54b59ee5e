"""aarch64 libraries, cross-compiled here, run under qemu-aarch64 by the cross-built C++
runner with the aarch64 TVM runtime, and compared with the reference interpreter. Marker
``arm``: ``make test-arm`` installs qemu-user and the cross compiler where missing and
fetches the runtime first."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

import kiln
from kiln import ops

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from deploy import arm_tools_missing, build_runner, run  # noqa: E402
from int_gemm_graphs import const_weight_gemm  # noqa: E402

ARM_LIBS = Path(os.environ["KILN_ARM_RUNTIME"]) if os.environ.get("KILN_ARM_RUNTIME") else None
pytestmark = [pytest.mark.arm,
              pytest.mark.skipif(arm_tools_missing(ARM_LIBS) is not None,
                                 reason=str(arm_tools_missing(ARM_LIBS)))]


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_runner(tmp_path_factory.mktemp("kiln_run_arm"), ARM_LIBS, aarch64=True)


def _graphs() -> dict[str, kiln.Graph]:
    """The CPU templates on ragged shapes: GEMM with its epilogue, batched matmul, conv2d,
    depthwise conv, pooling, row reductions, an injective chain."""
    rng = np.random.default_rng(0)
    out = {}
    g = kiln.Graph("gemm_epilogue")
    x = g.input("x", (37, 96), "float32")
    h = ops.gelu(ops.add(ops.matmul(x, rng.standard_normal((96, 70)).astype(np.float32)),
                         rng.standard_normal(70).astype(np.float32)))
    g.output(ops.softmax(h, axis=-1), ops.layer_norm(h, np.ones(70, np.float32),
                                                     np.zeros(70, np.float32)))
    out[g.name] = g
    g = kiln.Graph("batched_matmul")
    g.output(ops.matmul(g.input("a", (3, 17, 33), "float32"), g.input("b", (3, 33, 29),
                                                                        "float32")))
    out[g.name] = g
    g = kiln.Graph("conv2d")
    x = g.input("x", (1, 8, 15, 13), "float32")
    y = ops.relu(ops.conv2d(x, rng.standard_normal((16, 8, 3, 3)).astype(np.float32),
                            padding=(1, 1, 1, 1)))
    g.output(ops.pool(y, "max", (2, 2), stride=(2, 2)))
    out[g.name] = g
    g = kiln.Graph("depthwise")
    x = g.input("x", (1, 16, 12, 10), "float32")
    g.output(ops.conv2d(x, rng.standard_normal((16, 1, 3, 3)).astype(np.float32),
                        padding=(1, 1, 1, 1), groups=16))
    out[g.name] = g
    g = kiln.Graph("injective")
    x = g.input("x", (5, 7, 9), "float32")
    g.output(ops.transpose(ops.exp(x), (2, 0, 1)), ops.sum(x, axes=[1]))
    out[g.name] = g
    return out


@pytest.mark.parametrize("name", sorted(_graphs()))
def test_matches_the_reference_under_qemu(name: str, runner: Path, tmp_path: Path) -> None:
    g = _graphs()[name]
    rng = np.random.default_rng(1)
    feeds = [rng.uniform(-3, 3, v.shape).astype(np.float32) for v in g.inputs]
    want = kiln.run_reference(g, dict(zip((v.name for v in g.inputs), feeds, strict=True)))
    path = kiln.compile(g, "arm-neon").export(tmp_path / f"{name}.so")
    got = run(runner, path, feeds, tmp_path / "run", arm_libs=ARM_LIBS)
    assert len(got) == len(want)
    for g_, w_ in zip(got, want, strict=True):
        np.testing.assert_allclose(g_, w_, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(w_).max()))


INT8_GEMMS = {     # M, K, N, activation, its zero point, the weight's, epilogue, weight type
    "u8_runtime_az": dict(m=33, k=130, n=41, adt="uint8"),
    "s8_rows_columns": dict(m=19, k=45, n=37, adt="int8", az="rows", bz="columns"),
    "u8_weight": dict(m=23, k=70, n=41, adt="int8", bz="scalar", bdt="uint8"),
    "batched_dequantize": dict(m=9, k=40, n=33, batch=(2,), bz="columns",
                               epilogue="dequantize"),
    "requantize": dict(m=21, k=100, n=50, adt="int8", bz="columns", epilogue="requantize"),
}


@pytest.mark.parametrize("target", ["arm-neon-dotprod", "arm-neon"])
@pytest.mark.parametrize("case", sorted(INT8_GEMMS))
def test_int8_gemm_matches_the_reference_under_qemu(case: str, target: str, runner: Path,
                                                    tmp_path: Path) -> None:
    """matmul_integer with a constant weight: on sdot (dotprod; a uint8 activation shifted to
    int8, zero points folded outside the dot product) and on the widening template (plain
    NEON), exactly equal to the reference (the dequantized one to float rounding)."""
    g, feeds = const_weight_gemm(**INT8_GEMMS[case])
    want = kiln.run_reference(g, feeds)
    lib = kiln.compile(g, target)
    got = run(runner, lib.export(tmp_path / f"{case}.so"), [feeds[s.name] for s in lib.inputs],
              tmp_path / "run", arm_libs=ARM_LIBS)
    (got,), (want,) = got, want
    assert got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=1e-6 if got.dtype == np.float32 else 0, atol=0)


def test_int8_gemm_extreme_values_under_qemu(runner: Path, tmp_path: Path) -> None:
    """255 x -128 over K = 1000 on sdot (as int8: 127 x -128, plus the shift's terms)."""
    g, _ = const_weight_gemm(5, 1000, 20, "uint8", az="scalar", bz="scalar")
    feeds = {"a": np.full((5, 1000), 255, np.uint8)}
    want = kiln.run_reference(g, feeds)
    lib = kiln.compile(g, "arm-neon-dotprod")
    got = run(runner, lib.export(tmp_path / "extreme.so"), [feeds["a"]], tmp_path / "run",
              arm_libs=ARM_LIBS)
    np.testing.assert_array_equal(got[0], want[0])


MODELS = Path(os.environ.get("KILN_MODELS", Path(__file__).parents[2] / ".cache" / "models"))


@pytest.mark.parametrize("name", ["ppocr_mobile_v2_cls", "silero_vad_16k_sequence"])
def test_real_models_match_onnxruntime_under_qemu(name: str, runner: Path,
                                                  tmp_path: Path) -> None:
    """MobileNetV3 (the OCR direction classifier) and the LSTM voice detector, cross-compiled
    and run under emulation, against onnxruntime on this machine."""
    ort = pytest.importorskip("onnxruntime")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
    from fetch import example_feeds

    from kiln.testing import relative_error
    path = MODELS / f"{name}.onnx"
    if not path.is_file():
        pytest.fail(f"{path} is missing: make test-arm fetches it")
    feeds = example_feeds(name)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    lib = kiln.compile(str(path), "arm-neon", input_shapes={k: v.shape for k, v in feeds.items()})
    got = run(runner, lib.export(tmp_path / f"{name}.so"), [feeds[s.name] for s in lib.inputs],
              tmp_path / "run", arm_libs=ARM_LIBS)
    assert len(got) == len(want)
    for g_, w_ in zip(got, want, strict=True):
        assert g_.shape == w_.shape and relative_error(g_, w_) < 1e-4


def test_static_int8_mobilenetv3_under_qemu(runner: Path, tmp_path: Path) -> None:
    """The QDQ MobileNetV3 of ``quantize_static`` on NEON dotprod: its byte tables as gathers,
    its integer convs in int32; within one quantisation step of onnxruntime's as-written run
    of the int8 model on this machine."""
    ort = pytest.importorskip("onnxruntime")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
    from fetch import document_image
    from quantized import quantize_static_qdq
    name = "ppocr_mobile_v2_cls"
    path = MODELS / f"{name}.onnx"
    if not path.is_file():
        pytest.fail(f"{path} is missing: make test-arm fetches it")
    _, int8 = quantize_static_qdq(path, name, tmp_path)
    feeds = {"x": document_image((1, 3, 48, 192), np.random.default_rng(5))}
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    (want,) = ort.InferenceSession(str(int8), opts, providers=["CPUExecutionProvider"]).run(
        None, feeds)
    lib = kiln.compile(str(int8), "arm-neon-dotprod")
    assert "table_lookup" in {n.op.name for n in lib.compilation.optimized.nodes}
    (got,) = run(runner, lib.export(tmp_path / "int8.so"), [feeds["x"]], tmp_path / "run",
                 arm_libs=ARM_LIBS)
    assert np.abs(got - want).max() * 255 <= 1.0001, (got, want)


def test_table_lookup_and_kv_cache_under_qemu(runner: Path, tmp_path: Path) -> None:
    """A byte table over a tail-ragged tensor, and one decode step of a KV cache (the write in
    place, then attention up to the runtime position), exactly / to float rounding."""
    rng = np.random.default_rng(3)
    g = kiln.Graph("lookup_kv")
    x = g.input("x", (3, 7, 37), "int8")
    (y,) = g.add("table_lookup", [x, g.constant(rng.integers(0, 256, 256).astype(np.uint8))])
    cache = g.input("cache", (2, 2, 1, 4, 16, 8), "float32")
    q, k, v = (g.input(n, (1, 4, 1, 8), "float32") for n in "qkv")
    pos = g.input("pos", (), "int64")
    new = ops.kv_cache_write(cache, k, v, pos, layer=1)
    g.output(y, ops.kv_attention(q, new, pos, layer=1), new)
    feeds = {"x": rng.integers(-128, 128, (3, 7, 37)).astype(np.int8),
             "cache": rng.standard_normal((2, 2, 1, 4, 16, 8)).astype(np.float32),
             **{n: rng.standard_normal((1, 4, 1, 8)).astype(np.float32) for n in "qkv"},
             "pos": np.array(9, np.int64)}
    want = kiln.run_reference(g, feeds)
    lib = kiln.compile(g, "arm-neon")
    got = run(runner, lib.export(tmp_path / "lookup_kv.so"), [feeds[s.name] for s in lib.inputs],
              tmp_path / "run", arm_libs=ARM_LIBS)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got[2], want[2])
