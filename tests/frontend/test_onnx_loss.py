"""NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss compiled for x86, against onnxruntime
and onnx's reference implementation: every reduction, weights, ignore_index (negative, past
the last class, and ignoring every target), N-d inputs, the log_prob output, float16/32/64.

Each model holds several loss nodes on the same inputs, so one compile covers many variants."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator
from test_onnx import make_model, run_ort, tensor

import kiln
from kiln.errors import ModelError
from kiln.frontend.onnx import import_onnx
from kiln.testing import assert_outputs_close

I64 = TensorProto.INT64
I32 = TensorProto.INT32
REDUCTIONS = ("none", "sum", "mean")


def targets(shape: tuple[int, ...], classes: int, ignore: int | None = None,
            seed: int = 1, dtype: type = np.int64) -> np.ndarray:
    """Targets in ``[0, classes)``, about a third of them ``ignore`` when given."""
    rng = np.random.default_rng(seed)
    t = rng.integers(0, classes, size=shape)
    if ignore is not None:
        t = np.where(rng.random(shape) < 0.35, ignore, t)
    return t.astype(dtype)


def loss_model(op: str, x_shape: tuple[int | str, ...], elem: int = TensorProto.FLOAT,
               target_elem: int = I64, opset: int = 13, log_prob: bool = False,
               **attrs: object) -> onnx.ModelProto:
    """``op`` with every reduction, with and without the weight input: outputs
    ``{reduction}`` and ``{reduction}_w`` (and ``{reduction}_lp``, the log probabilities)."""
    nodes, outs = [], []
    for r in REDUCTIONS:
        for suffix, ins in (("", ["x", "t"]), ("_w", ["x", "t", "w"])):
            names = [f"{r}{suffix}"] + ([f"{r}{suffix}_lp"] if log_prob else [])
            nodes.append(helper.make_node(op, ins, names, reduction=r, **attrs))
            outs += [tensor(n, None, elem) for n in names]
    inputs = [tensor("x", x_shape, elem),
              tensor("t", (x_shape[0], *x_shape[2:]), target_elem),
              tensor("w", (x_shape[1],), elem)]
    return make_model(nodes, inputs, outs, opset=opset)


def feeds(x_shape: tuple[int, ...], dtype: type = np.float32, ignore: int | None = None,
          target_dtype: type = np.int64) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(dtype)
    classes = x_shape[1]
    return {"x": x, "t": targets((x_shape[0], *x_shape[2:]), classes, ignore,
                                 dtype=target_dtype),
            "w": (rng.random(classes) + 0.25).astype(dtype)}


def compiled(model, data: dict[str, np.ndarray]) -> list[np.ndarray]:
    return kiln.compile(import_onnx(model))(**data)


@pytest.mark.parametrize("x_shape, ignore", [((7, 5), None), ((3, 5, 7), -1),
                                             ((3, 5, 2, 3), 11)])
def test_nll_loss_against_onnxruntime(x_shape, ignore) -> None:
    """Rank 2, 3 and 4; no ignore_index, a negative one and one past the last class."""
    attrs = {} if ignore is None else {"ignore_index": ignore}
    model = loss_model("NegativeLogLikelihoodLoss", x_shape, **attrs)
    data = feeds(x_shape, ignore=ignore)
    got = compiled(model, data)
    assert_outputs_close(got, run_ort(model, data), 1e-5, 1e-6)
    for out in got:
        assert out.dtype == np.float32
    assert got[0].shape == data["t"].shape and got[2].shape == got[4].shape == ()


@pytest.mark.parametrize("x_shape, ignore, opset", [((3, 5, 7), 2, 13),
                                                    ((3, 5, 2, 1, 3), -7, 22)])
def test_softmax_cross_entropy_with_log_prob_float64(x_shape, ignore, opset) -> None:
    model = loss_model("SoftmaxCrossEntropyLoss", x_shape, elem=TensorProto.DOUBLE,
                       opset=opset, log_prob=True, ignore_index=ignore)
    data = feeds(x_shape, np.float64, ignore)
    got = compiled(model, data)
    assert_outputs_close(got, ReferenceEvaluator(model).run(None, data), 1e-10, 1e-12)
    assert all(out.dtype == np.float64 for out in got)


def test_int32_targets_and_reductions_split_into_lanes() -> None:
    """48 losses: the sums split into vector lanes (rfactor), which rank-0 outputs broke."""
    x_shape = (16, 9, 3)
    model = loss_model("NegativeLogLikelihoodLoss", x_shape, target_elem=I32, ignore_index=0)
    data = feeds(x_shape, ignore=0, target_dtype=np.int32)
    assert_outputs_close(compiled(model, data), run_ort(model, data), 1e-5, 1e-6)


def test_float16_and_a_symbolic_batch() -> None:
    model = loss_model("SoftmaxCrossEntropyLoss", ("N", 5, 3), elem=TensorProto.FLOAT16,
                       log_prob=True, ignore_index=4)
    lib = kiln.compile(import_onnx(model))
    for n in (1, 6):
        data = feeds((n, 5, 3), np.float16, ignore=4)
        got = lib(**data)
        assert all(out.dtype == np.float16 for out in got)
        assert_outputs_close(got, ReferenceEvaluator(model).run(None, data), 1e-2, 1e-2)


@pytest.mark.filterwarnings("ignore:invalid value encountered")   # the reference's 0 / 0
def test_every_target_ignored_means_nan_and_inf_log_probs_stay_out() -> None:
    """The mean of nothing is 0 / 0; an ignored target's -inf log probability (class 0's)
    must not leak in as inf * 0."""
    x_shape = (3, 4, 5)
    model = loss_model("NegativeLogLikelihoodLoss", x_shape, ignore_index=3)
    data = feeds(x_shape)
    data["t"][:] = 3
    data["x"][:, 0] = -np.inf
    want = ReferenceEvaluator(model).run(None, data)
    got = compiled(model, data)
    assert_outputs_close(got, want, 0, 0)
    assert np.isnan(got[4]) and np.isnan(got[5])        # mean, weighted mean
    assert not np.isnan(got[0]).any() and not np.isnan(got[1]).any()


def test_constant_inputs_fold_at_import() -> None:
    x = np.log(np.full((2, 3), 1 / 3, np.float32))
    node = helper.make_node("NegativeLogLikelihoodLoss", ["x", "t"], ["y"], reduction="sum")
    model = make_model([node], [], [tensor("y", None)])
    model.graph.initializer.extend([helper.make_tensor("x", TensorProto.FLOAT, (2, 3),
                                                       x.reshape(-1)),
                                    helper.make_tensor("t", I64, (2,), [0, 2])])
    g = import_onnx(model)
    (out,) = g.outputs
    assert out.data is not None
    np.testing.assert_allclose(out.data, 2 * np.log(3), rtol=1e-6)


@pytest.mark.parametrize("inputs, attrs, message", [
    ([("x", (3, 5)), ("t", (3,), I64)], {"reduction": "max"}, "reduction='max'"),
    ([("x", (3, 5)), ("t", (3, 1), I64)], {}, "target must be integers of shape [3]"),
    ([("x", (3, 5)), ("t", (3,), TensorProto.FLOAT)], {}, "target must be integers"),
    ([("x", (3, 5)), ("t", (3,), I64), ("w", (4,))], {}, "weight must be a [C] tensor"),
    ([("x", (5,)), ("t", (), I64)], {}, "must be [N, C] or [N, C, d1, ...]"),
])
def test_malformed_nodes_are_model_errors(inputs, attrs, message) -> None:
    node = helper.make_node("SoftmaxCrossEntropyLoss", [n for n, *_ in inputs], ["y"], **attrs)
    model = make_model([node], [tensor(n, s, *e) for n, s, *e in inputs], ["y"], opset=13)
    with pytest.raises(ModelError, match=message.replace("[", r"\[").replace("(", r"\(")):
        import_onnx(model)


def test_python_api_losses_match_onnx_reference() -> None:
    """``kiln.ops.nll_loss`` / ``cross_entropy`` share the ONNX lowering; checked against
    onnx's reference functions, with a NumPy weight and a negative ignore_index."""
    from onnx.reference.ops.op_negative_log_likelihood_loss import (
        _compute_negative_log_likelihood_loss as nll_ref,
    )
    from onnx.reference.ops.op_softmax_cross_entropy_loss import softmaxcrossentropy as sce_ref

    data = feeds((5, 3, 7), ignore=-2)
    w = data.pop("w")
    g = kiln.Graph("losses")
    x = g.input("x", (5, 3, 7), "float32")
    t = g.input("t", (5, 7), "int64")
    g.output(kiln.ops.nll_loss(x, t, reduction="sum"))
    g.output(kiln.ops.cross_entropy(x, t, w, reduction="mean", ignore_index=-2))
    g.output(kiln.ops.cross_entropy(x, t, reduction="none", ignore_index=-2))
    # -2 is a valid target without ignore_index: class 1 of 3, as NumPy indexes
    want = [nll_ref(data["x"], data["t"], reduction="sum")[0],
            sce_ref(data["x"], data["t"], w, reduction="mean", ignore_index=-2)[0],
            sce_ref(data["x"], data["t"], reduction="none", ignore_index=-2)[0]]
    assert_outputs_close(kiln.compile(g)(**data), want, 1e-5, 1e-6)
    with pytest.raises(ModelError, match="reduction='avg'"):
        kiln.ops.nll_loss(x, t, reduction="avg")
