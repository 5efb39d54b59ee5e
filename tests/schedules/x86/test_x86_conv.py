"""conv2d: the NumPy reference against independent computations, the compiled x86 kernels
(direct and depthwise templates, fused bias + relu) against the reference, and the schedule."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import te, tirx

import kiln
from kiln import ops
from kiln.errors import KnobError, ModelError
from kiln.ir.ops import get_op
from kiln.ir.ops.conv import Conv2dAttrs
from kiln.ir.types import TensorType
from kiln.schedules import x86
from kiln.schedules.compute import COMPUTE, NodeInfo
from kiln.target import Isa, get_target, host_target

RNG = np.random.default_rng(0)


def conv_graph(x_shape, w_shape, bias: bool = True, relu: bool = True, seed: int = 0,
               **conv_kw) -> kiln.Graph:
    rng = np.random.default_rng(seed)
    fan_in = int(np.prod(w_shape[1:]))
    w = (rng.uniform(-1, 1, w_shape) / np.sqrt(fan_in)).astype(np.float32)
    g = kiln.Graph("conv")
    y = ops.conv2d(g.input("x", x_shape), w, **conv_kw)
    if bias:
        y = ops.add(y, rng.standard_normal((w_shape[0], 1, 1)).astype(np.float32))
    if relu:
        y = ops.relu(y)
    g.output(y)
    return g


def naive_conv(x, w, stride, padding, dilation, groups) -> np.ndarray:
    """Seven nested loops, straight from the definition."""
    (sh, sw), (dh, dw) = stride, dilation
    pt, pl, pb, pr = padding
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    n, _, hp, wp = xp.shape
    o, cg, kh, kw = w.shape
    oh, ow = (hp - (kh - 1) * dh - 1) // sh + 1, (wp - (kw - 1) * dw - 1) // sw + 1
    y = np.zeros((n, o, oh, ow))
    for b in range(n):
        for oc in range(o):
            g = oc // (o // groups)
            for i in range(oh):
                for j in range(ow):
                    acc = 0.0
                    for c in range(cg):
                        for p in range(kh):
                            for q in range(kw):
                                row, col = i * sh + p * dh, j * sw + q * dw
                                acc += xp[b, g * cg + c, row, col] * w[oc, c, p, q]
                    y[b, oc, i, j] = acc
    return y


REF_CASES = [  # x, w, stride, padding (t, l, b, r), dilation, groups
    ((1, 3, 7, 9), (5, 3, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1),
    ((2, 4, 6, 7), (6, 2, 2, 3), (1, 2), (0, 1, 2, 0), (2, 1), 2),
    ((1, 4, 5, 5), (8, 1, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 4),   # depthwise, multiplier 2
    ((1, 2, 4, 4), (3, 2, 4, 4), (1, 1), (0, 0, 0, 0), (1, 1), 1),   # kernel = whole input
]


@pytest.mark.parametrize("x_shape,w_shape,stride,padding,dilation,groups", REF_CASES)
def test_reference_matches_naive_loops(x_shape, w_shape, stride, padding, dilation,
                                       groups) -> None:
    x = RNG.standard_normal(x_shape)
    w = RNG.standard_normal(w_shape)
    op = get_op("conv2d")
    got = op.reference(Conv2dAttrs(stride, padding, dilation, groups), x, w)
    np.testing.assert_allclose(got, naive_conv(x, w, stride, padding, dilation, groups),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("x_shape,w_shape,stride,padding,dilation,groups", REF_CASES)
def test_reference_matches_onnxruntime(x_shape, w_shape, stride, padding, dilation,
                                       groups) -> None:
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper
    node = helper.make_node("Conv", ["x", "w"], ["y"], strides=list(stride), pads=list(padding),
                            dilations=list(dilation), group=groups)
    graph = helper.make_graph(
        [node], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape),
         helper.make_tensor_value_info("w", TensorProto.FLOAT, w_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = RNG.standard_normal(x_shape).astype(np.float32)
    w = RNG.standard_normal(w_shape).astype(np.float32)
    (want,) = sess.run(None, {"x": x, "w": w})
    g = kiln.Graph("conv")
    g.output(ops.conv2d(g.input("x", x_shape), w, stride=stride, padding=padding,
                        dilation=dilation, groups=groups))
    (got,) = kiln.run_reference(g, x=x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


COMPILED_CASES = [  # x, w, conv kwargs
    ((1, 3, 17, 19), (5, 3, 3, 3), dict(stride=2, padding=1)),
    ((1, 8, 7, 7), (8, 1, 3, 3), dict(padding=1, groups=8)),               # depthwise
    ((1, 16, 14, 14), (32, 16, 1, 1), {}),                                 # 1x1, no padding
    ((1, 6, 12, 13), (10, 6, 3, 3), dict(padding=2, dilation=2)),
    ((2, 5, 11, 10), (7, 5, 3, 3), dict(padding=1)),                       # batch 2
    ((1, 19, 9, 12), (37, 19, 2, 3), dict(padding=(1, 0, 2, 1), stride=(1, 2))),
    ((2, 12, 9, 11), (9, 4, 3, 2), dict(padding=(1, 0), groups=3)),        # grouped
    ((1, 6, 13, 21), (12, 1, 5, 5), dict(padding=2, stride=2, groups=6)),  # depthwise x2, s2
    ((1, 4, 6, 35), (8, 4, 3, 3), dict(padding=1)),                        # width 35 = 5 x 7
]


@pytest.mark.parametrize("x_shape,w_shape,kw", COMPILED_CASES)
def test_compiled_matches_reference(x_shape, w_shape, kw) -> None:
    g = conv_graph(x_shape, w_shape, **kw)
    x = RNG.standard_normal(x_shape).astype(np.float32)
    (got,) = kiln.compile(g)(x=x)
    (want,) = kiln.run_reference(g, x=x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("w_shape,groups", [((16, 8, 3, 3), 1), ((8, 1, 3, 3), 8)])
def test_conv_as_graph_output_without_epilogue(w_shape, groups) -> None:
    g = conv_graph((1, 8, 10, 16), w_shape, bias=False, relu=False, padding=1, groups=groups)
    x = RNG.standard_normal((1, 8, 10, 16)).astype(np.float32)
    np.testing.assert_allclose(kiln.compile(g)(x=x)[0], kiln.run_reference(g, x=x)[0],
                               rtol=1e-4, atol=1e-4)


def test_avx2_target_runs() -> None:
    g = conv_graph((1, 8, 9, 20), (12, 8, 3, 3), padding=1)
    x = RNG.standard_normal((1, 8, 9, 20)).astype(np.float32)
    np.testing.assert_allclose(kiln.compile(g, target="x86-avx2")(x=x)[0],
                               kiln.run_reference(g, x=x)[0], rtol=1e-4, atol=1e-4)


def build_kernel(x_shape, w_shape, knobs, isa: Isa, **conv_kw):
    """conv2d + bias + relu as one PrimFunc, scheduled by ``x86.schedule_conv2d`` with
    ``knobs``; returns a callable ``(x, w, b) -> y`` and the graph for the reference."""
    g = kiln.Graph("conv")
    y = ops.conv2d(g.input("x", x_shape), g.input("w", w_shape), **conv_kw)
    node = g.nodes[-1]
    out_shape = y.type.static_shape
    xt = te.placeholder(x_shape, "float32", name="x")
    wt = te.placeholder(w_shape, "float32", name="w")
    bt = te.placeholder((w_shape[0], 1, 1), "float32", name="b")
    conv = COMPUTE["conv2d"](NodeInfo(node.attrs, (TensorType.of(out_shape, "float32"),),
                                      "conv"), xt, wt)
    out = te.compute(out_shape, lambda n, o, i, j: tirx.max(
        conv[n, o, i, j] + bt[o, 0, 0], tirx.const(0, "float32")), name="bias_relu")
    sch = tvm.s_tir.Schedule(te.create_prim_func([xt, wt, bt, out]))
    x86.schedule_conv2d(sch, "conv", knobs, isa)
    func = sch.mod["main"].with_attr("global_symbol", "conv")
    target = get_target("x86-avx512" if isa is Isa.AVX512 else "x86-avx2")
    lib = tvm.compile(tvm.IRModule({"conv": func}), target=tvm.target.Target(target.tvm_target))

    def run(x, w, b):
        args = [tvm.runtime.tensor(a) for a in (x, w, b)]
        res = tvm.runtime.empty(out_shape, "float32", tvm.cpu())
        lib["conv"](*args, res)
        return res.numpy()

    return run, func


@pytest.mark.parametrize("x_shape,w_shape,kw,knobs", [
    # 2 channels x 2 vectors of 8 (channel tile 3 does not divide 7: predicated), 2 rows/task,
    # padding inside the task
    ((2, 5, 10, 16), (7, 5, 3, 3), dict(padding=1),
     x86.CpuConvKnobs(ocr=3, owv=2, owl=8, occ=6, ohc=2, pad_in_task=True)),
    # one full vector of a 19-wide row: the predicated tail
    ((1, 4, 9, 19), (8, 4, 3, 3), dict(padding=1),
     x86.CpuConvKnobs(ocr=4, owv=1, owl=16, occ=8, ohc=3)),
    # depthwise with the padding hoisted out of the tasks, 2 rows x 2 vectors of 6
    ((1, 6, 8, 12), (6, 1, 3, 3), dict(padding=1, groups=6),
     x86.CpuDepthwiseKnobs(ohr=2, owv=2, owl=6, ohc=4, pad_in_task=False)),
    # the depthwise template on a general convolution is still correct
    ((1, 4, 8, 12), (6, 4, 3, 3), dict(padding=1, stride=(2, 1)),
     x86.CpuDepthwiseKnobs(ohr=1, owv=1, owl=12, ohc=2)),
])
def test_non_default_knobs(x_shape, w_shape, kw, knobs) -> None:
    isa = host_target().isa
    run, _ = build_kernel(x_shape, w_shape, knobs, isa, **kw)
    x = RNG.standard_normal(x_shape).astype(np.float32)
    w = RNG.standard_normal(w_shape).astype(np.float32)
    b = RNG.standard_normal((w_shape[0], 1, 1)).astype(np.float32)
    g = kiln.Graph("conv")
    g.output(ops.relu(ops.add(ops.conv2d(g.input("x", x_shape), w, **kw), b)))
    np.testing.assert_allclose(run(x, w, b), kiln.run_reference(g, x=x)[0], rtol=1e-4,
                               atol=1e-4)


def test_schedule_took_effect() -> None:
    g = conv_graph((1, 32, 28, 28), (64, 32, 3, 3), padding=1)
    c = kiln.compile_stages(g, target="x86-avx512")
    (kernel,) = c.kernels                       # conv + bias + relu: one kernel
    assert any(n.startswith("conv2d") and "CpuConvKnobs" in n for n in kernel.notes)
    tir = kernel.func.script()
    assert "T.parallel" in tir and "T.vectorized" in tir
    assert "conv2d_local" in tir                # the register-tile accumulators
    asm = tvm.compile(tvm.IRModule({kernel.name: kernel.func}),
                      target=tvm.target.Target(c.target.tvm_target)).mod.inspect_source("asm")
    fmas = [ln for ln in asm.splitlines() if "vfmadd231ps" in ln]
    assert fmas and all("zmm" in ln for ln in fmas)
    assert any("{1to16}" in ln for ln in fmas)  # the weight broadcast folded into the FMA


def test_depthwise_gets_its_template() -> None:
    g = conv_graph((1, 32, 28, 28), (32, 1, 3, 3), padding=1, groups=32)
    (kernel,) = kiln.compile_stages(g, target="x86-avx512").kernels
    assert any("CpuDepthwiseKnobs" in n for n in kernel.notes)
    assert "T.vectorized" in kernel.func.script()


def test_default_knobs() -> None:
    k = x86.default_conv_knobs((1, 64, 56, 56), (64, 64, 3, 3), 1, Isa.AVX512)
    assert k == x86.CpuConvKnobs(ocr=16, owv=1, owl=14, occ=64, ohc=1)
    # AVX2: 10 columns do not fit one ymm, so vectors of 5; 5 channels x 1 vector
    k = x86.default_conv_knobs((1, 5, 9, 10), (5, 3, 3, 3), 1, Isa.AVX2)
    assert k == x86.CpuConvKnobs(ocr=5, owv=1, owl=5, occ=5, ohc=1)
    k = x86.default_conv_knobs((1, 32, 112, 112), (32, 1, 3, 3), 32, Isa.AVX512)
    assert isinstance(k, x86.CpuDepthwiseKnobs) and k.owl == 16 and 112 % k.ohc == 0


@pytest.mark.parametrize("knobs,match", [
    (x86.CpuConvKnobs(ocr=16, owv=2, owl=16, occ=16, ohc=1), "registers"),
    (x86.CpuConvKnobs(ocr=4, owv=1, owl=20, occ=8, ohc=1), "vector width"),
    (x86.CpuConvKnobs(ocr=4, owv=1, owl=8, occ=6, ohc=1), "multiple of ocr"),
    (x86.CpuConvKnobs(ocr=0, owv=1, owl=8, occ=8, ohc=1), ">= 1"),
    (x86.CpuConvKnobs(ocr=4, owv=4, owl=8, occ=8, ohc=1), "exceeds the output width"),
])
def test_invalid_knobs(knobs, match) -> None:
    with pytest.raises(KnobError, match=match):
        build_kernel((1, 4, 8, 16), (8, 4, 3, 3), knobs, Isa.AVX512, padding=1)


@pytest.mark.parametrize("x_shape,w_shape,kw,match", [
    ((1, 3, 8, 8), (4, 2, 3, 3), {}, "channel mismatch"),
    ((1, 3, 8, 8), (4, 1, 3, 3), dict(groups=2), "must divide"),
    ((1, 3, 8, 8), (4, 3, 11, 3), dict(padding=1), "larger than the padded input"),
    ((1, 3, 8, 8), (4, 3, 3, 3), dict(dilation=5), "dilated to 11"),
    ((3, 8, 8), (4, 3, 3, 3), {}, "rank 4"),
    ((1, 3, 8, 8), (4, 3, 3, 3), dict(padding=(1, 2, 3)), "padding"),
    ((1, 3, 8, 8), (4, 3, 3, 3), dict(stride=0), "strides"),
])
def test_shape_errors(x_shape, w_shape, kw, match) -> None:
    g = kiln.Graph("bad")
    with pytest.raises(ModelError, match=match):
        ops.conv2d(g.input("x", x_shape), np.zeros(w_shape, np.float32), **kw)


def test_symbolic_batch() -> None:
    g = kiln.Graph("dyn")
    y = ops.conv2d(g.input("x", ("n", 3, 8, 8)), np.zeros((4, 3, 3, 3), np.float32),
                   padding=1)
    assert y.shape == ("n", 4, 8, 8)


def test_nn_conv2d_module() -> None:
    g = kiln.Graph("net")
    x = g.input("x", (1, 8, 12, 12))
    h = kiln.nn.Conv2d(8, 16, 3, stride=2, padding=1, rng=np.random.default_rng(1))(x)
    y = kiln.nn.Conv2d(16, 16, 3, padding=1, groups=16, rng=np.random.default_rng(2))(
        ops.relu(h))
    g.output(y)
    assert [n.op.name for n in g.nodes].count("conv2d") == 2
    assert y.shape == (1, 16, 6, 6)
    xv = RNG.standard_normal((1, 8, 12, 12)).astype(np.float32)
    c = kiln.compile_stages(g)
    assert len(c.kernels) == 2                  # each conv takes its bias (and relu) along
    np.testing.assert_allclose(kiln.compile(g)(x=xv)[0], kiln.run_reference(g, x=xv)[0],
                               rtol=1e-4, atol=1e-4)
