"""The functional graph-building API, exported as ``kiln.ops``.

    g = kiln.Graph("mlp")
    x = g.input("x", (1, 128, 256), "float32")
    y = ops.gelu(ops.add(ops.matmul(x, w), b))   # w, b: NumPy arrays become constants
    g.output(y)

Every function takes ``Value``s of one graph; NumPy arrays and Python scalars are turned into
constants of that graph (scalars take the dtype of the tensor operand).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from kiln.errors import ModelError
from kiln.ir.dtype import as_dtype
from kiln.ir.graph import Graph, Value
from kiln.ir.types import Dim, format_shape

Operand = Value | np.ndarray | float | int | bool


def _graph_of(*xs: Operand) -> Graph:
    for x in xs:
        if isinstance(x, Value):
            return x.graph
    raise ModelError("at least one operand must be a graph Value (from graph.input(...))")


def _lift(g: Graph, x: Operand, like: Value | None = None, name: str = "const") -> Value:
    if isinstance(x, Value):
        return x
    if isinstance(x, (int, float, bool)) and like is not None:
        return g.constant(np.array(x, dtype=like.dtype.np), name=name)
    return g.constant(x, name=name)


def _apply(op: str, *xs: Operand, **attrs) -> Value:
    g = _graph_of(*xs)
    like = next(x for x in xs if isinstance(x, Value))
    outs = g.add(op, [_lift(g, x, like) for x in xs], **attrs)
    return outs[0]


# -- elementwise (binary ops broadcast as NumPy does) --------------------------------------------
def add(a: Operand, b: Operand) -> Value:
    """``a + b``, elementwise."""
    return _apply("add", a, b)


def sub(a: Operand, b: Operand) -> Value:
    """``a - b``, elementwise."""
    return _apply("sub", a, b)


def mul(a: Operand, b: Operand) -> Value:
    """``a * b``, elementwise."""
    return _apply("mul", a, b)


def div(a: Operand, b: Operand) -> Value:
    """``a / b`` (integers truncate toward zero; x / 0 is 0), elementwise."""
    return _apply("div", a, b)


def pow(a: Operand, b: Operand) -> Value:  # noqa: A001
    """``a ** b``, elementwise."""
    return _apply("pow", a, b)


def maximum(a: Operand, b: Operand) -> Value:
    """``the larger of a and b``, elementwise."""
    return _apply("maximum", a, b)


def minimum(a: Operand, b: Operand) -> Value:
    """``the smaller of a and b``, elementwise."""
    return _apply("minimum", a, b)


def equal(a: Operand, b: Operand) -> Value:
    """``a == b`` (bool), elementwise."""
    return _apply("equal", a, b)


def less(a: Operand, b: Operand) -> Value:
    """``a < b`` (bool), elementwise."""
    return _apply("less", a, b)


def greater(a: Operand, b: Operand) -> Value:
    """``a > b`` (bool), elementwise."""
    return _apply("greater", a, b)


def relu(x: Value) -> Value:
    """``max(x, 0)``, elementwise."""
    return _apply("relu", x)


def neg(x: Value) -> Value:
    """``-x``, elementwise."""
    return _apply("neg", x)


def abs(x: Value) -> Value:  # noqa: A001
    """``|x|``, elementwise."""
    return _apply("abs", x)


def exp(x: Value) -> Value:
    """``e ** x``, elementwise."""
    return _apply("exp", x)


def log(x: Value) -> Value:
    """The natural logarithm of x, elementwise."""
    return _apply("log", x)


def sqrt(x: Value) -> Value:
    """The square root of x, elementwise."""
    return _apply("sqrt", x)


def rsqrt(x: Value) -> Value:
    """``1 / sqrt(x)``, elementwise."""
    return _apply("rsqrt", x)


def reciprocal(x: Value) -> Value:
    """``1 / x``, elementwise."""
    return _apply("reciprocal", x)


def tanh(x: Value) -> Value:
    """The hyperbolic tangent of x, elementwise."""
    return _apply("tanh", x)


def sigmoid(x: Value) -> Value:
    """``1 / (1 + e ** -x)``, elementwise."""
    return _apply("sigmoid", x)


def erf(x: Value) -> Value:
    """The error function of x, elementwise."""
    return _apply("erf", x)


def gelu(x: Value, approximate: str = "none") -> Value:
    """GELU; ``approximate="tanh"`` selects the tanh form."""
    return _apply("gelu", x, approximate=approximate)


def cast(x: Value, dtype: object) -> Value:
    """``x`` converted to ``dtype`` (floats to integers truncate toward zero)."""
    return _apply("cast", x, dtype=dtype)


def where(cond: Value, a: Operand, b: Operand) -> Value:
    """``a`` where ``cond`` is true, else ``b``; all three broadcast."""
    g = _graph_of(cond, a, b)
    like = next((x for x in (a, b) if isinstance(x, Value)), None)
    return g.add("where", [_lift(g, cond), _lift(g, a, like), _lift(g, b, like)])[0]


# -- GEMM ---------------------------------------------------------------------------------------
def matmul(a: Operand, b: Operand) -> Value:
    """``a @ b`` with NumPy semantics for batch dims (both operands rank >= 2)."""
    return _apply("matmul", a, b)


def dense(x: Value, w: Operand) -> Value:
    """``x @ w.T`` with ``w`` of shape [N, K] (PyTorch's Linear weight layout)."""
    return _apply("dense", x, w)


def conv2d(x: Value, w: Operand, stride: int | Sequence[int] = 1,
           padding: int | Sequence[int] = 0, dilation: int | Sequence[int] = 1,
           groups: int = 1) -> Value:
    """2-D convolution of an NCHW ``x`` with an OIHW weight ``w`` [out, in / groups, kh, kw].

    ``stride`` and ``dilation`` are an int or (height, width); ``padding`` is an int,
    (height, width) or (top, left, bottom, right). ``groups == in channels`` is depthwise.
    """
    def norm(v: int | Sequence[int]) -> int | tuple[int, ...]:
        return v if isinstance(v, int) else tuple(v)

    return _apply("conv2d", x, w, strides=norm(stride), padding=norm(padding),
                  dilations=norm(dilation), groups=groups)


def conv_transpose2d(x: Value, w: Operand, stride: int | Sequence[int] = 1,
                     padding: int | Sequence[int] = 0, dilation: int | Sequence[int] = 1,
                     groups: int = 1) -> Value:
    """Transposed 2-D convolution of an NCHW ``x`` with a weight [in, out / groups, kh, kw]
    (PyTorch's ConvTranspose2d layout); ``padding`` crops the output as in ``conv2d``."""
    def norm(v: int | Sequence[int]) -> int | tuple[int, ...]:
        return v if isinstance(v, int) else tuple(v)

    return _apply("conv_transpose2d", x, w, strides=norm(stride), padding=norm(padding),
                  dilations=norm(dilation), groups=groups)


def pool(x: Value, mode: str, kernel: Sequence[int], stride: Sequence[int] | None = None,
         pads: Sequence[int] | None = None, dilation: Sequence[int] | None = None,
         ceil_mode: bool = False, count_include_pad: bool = False, p: int = 2) -> Value:
    """``mode`` ("max", "avg" or "lp") pooling over the trailing ``len(kernel)`` axes of an
    [N, C, ...] ``x``; ``pads`` is (begin..., end...) as in ONNX."""
    return _apply("pool", x, mode=mode, kernel=tuple(kernel), strides=tuple(stride or ()),
                  pads=tuple(pads or ()), dilations=tuple(dilation or ()), ceil_mode=ceil_mode,
                  count_include_pad=count_include_pad, p=p)


def pad(x: Value, pads: Sequence[int], mode: str = "constant", value: float = 0.0) -> Value:
    """``x`` padded by ``pads`` (begin..., end...; negative entries crop); ``mode`` is
    "constant", "reflect", "edge" or "wrap"."""
    return _apply("pad", x, pads=tuple(pads), mode=mode, value=value)


# -- data movement ------------------------------------------------------------------------------
def reshape(x: Value, shape: Sequence[int | str]) -> Value:
    """``x`` with a new shape of the same size; one dim may be -1 (inferred)."""
    return _apply("reshape", x, shape=tuple(shape))


def transpose(x: Value, perm: Sequence[int] | None = None) -> Value:
    """``x`` with its axes permuted (``np.transpose``); no ``perm`` reverses them."""
    perm = tuple(reversed(range(x.type.rank))) if perm is None else tuple(perm)
    return _apply("transpose", x, perm=perm)


def concat(xs: Sequence[Value], axis: int) -> Value:
    """The tensors ``xs`` joined along ``axis``."""
    return _apply("concat", *xs, axis=axis)


def split(x: Value, sizes: int | Sequence[int], axis: int = 0) -> list[Value]:
    """Split into ``sizes`` equal parts (an int) or parts of the given sizes."""
    if isinstance(sizes, int):
        dim = x.shape[axis]
        if not isinstance(dim, int) or sizes <= 0 or dim % sizes:
            raise ModelError(f"cannot split dim {dim} into {sizes} equal parts")
        sizes = [dim // sizes] * sizes
    return x.graph.add("split", [x], axis=axis, sizes=tuple(sizes))


def slice(x: Value, starts: Sequence[int], ends: Sequence[int],  # noqa: A001
          axes: Sequence[int] | None = None, steps: Sequence[int] | None = None) -> Value:
    """Python slicing ``x[starts[i]:ends[i]:steps[i]]`` along ``axes[i]`` (default: the
    leading axes), with Python's clamping of out-of-range bounds."""
    axes = tuple(range(len(starts))) if axes is None else tuple(axes)
    return _apply("slice", x, axes=axes, starts=tuple(starts), ends=tuple(ends),
                  steps=None if steps is None else tuple(steps))


def gather(x: Operand, indices: Operand, axis: int = 0) -> Value:
    """``np.take(x, indices, axis)``; an embedding lookup when ``x`` is a weight table."""
    g = _graph_of(x, indices)
    return g.add("gather", [_lift(g, x), _lift(g, indices)], axis=axis)[0]


# -- reductions ---------------------------------------------------------------------------------
def _axes(axes: int | Sequence[int] | None) -> tuple[int, ...] | None:
    return (axes,) if isinstance(axes, int) else (None if axes is None else tuple(axes))


def sum(x: Value, axes: int | Sequence[int] | None = None, keepdims: bool = False) -> Value:  # noqa: A001
    """The sum over ``axes`` (all when None)."""
    return _apply("reduce_sum", x, axes=_axes(axes), keepdims=keepdims)


def mean(x: Value, axes: int | Sequence[int] | None = None, keepdims: bool = False) -> Value:
    """The mean over ``axes`` (all when None)."""
    return _apply("reduce_mean", x, axes=_axes(axes), keepdims=keepdims)


def max(x: Value, axes: int | Sequence[int] | None = None, keepdims: bool = False) -> Value:  # noqa: A001
    """The maximum over ``axes`` (all when None)."""
    return _apply("reduce_max", x, axes=_axes(axes), keepdims=keepdims)


def softmax(x: Value, axis: int = -1) -> Value:
    """``exp(x) / sum(exp(x))`` along ``axis``, computed with the row max subtracted."""
    return _apply("softmax", x, axis=axis)


def min(x: Value, axes: int | Sequence[int] | None = None, keepdims: bool = False) -> Value:  # noqa: A001
    """The minimum over ``axes`` (all when None)."""
    return _apply("reduce_min", x, axes=_axes(axes), keepdims=keepdims)


def prod(x: Value, axes: int | Sequence[int] | None = None, keepdims: bool = False) -> Value:
    """The product over ``axes`` (all when None)."""
    return _apply("reduce_prod", x, axes=_axes(axes), keepdims=keepdims)


def logsumexp(x: Value, axes: int | Sequence[int] | None = None,
              keepdims: bool = False) -> Value:
    """``log(sum(exp(x)))`` over ``axes``, computed with the max subtracted."""
    return _apply("reduce_log_sum_exp", x, axes=_axes(axes), keepdims=keepdims)


def log_softmax(x: Value, axis: int = -1) -> Value:
    """``x - max - log(sum(exp(x - max)))`` along ``axis``."""
    return _apply("log_softmax", x, axis=axis)


def argmax(x: Value, axis: int = 0, keepdims: bool = False) -> Value:
    """The int64 index of the first maximum along ``axis``."""
    return _apply("arg_max", x, axis=axis, keepdims=keepdims)


def argmin(x: Value, axis: int = 0, keepdims: bool = False) -> Value:
    """The int64 index of the first minimum along ``axis``."""
    return _apply("arg_min", x, axis=axis, keepdims=keepdims)


def cumsum(x: Value, axis: int, exclusive: bool = False, reverse: bool = False) -> Value:
    """Running sums along ``axis``."""
    return _apply("cumsum", x, axis=axis, exclusive=exclusive, reverse=reverse)


def top_k(x: Value, k: int, axis: int = -1, largest: bool = True) -> tuple[Value, Value]:
    """The ``k`` largest (or smallest) values along ``axis``, sorted, and their int64 indices
    (equal values in index order)."""
    values, indices = x.graph.add("top_k", [x], k=k, axis=axis, largest=largest)
    return values, indices


def layer_norm(x: Value, gamma: Operand, beta: Operand, axis: int = -1,
               epsilon: float = 1e-5) -> Value:
    """``(x - mean) / sqrt(var + epsilon) * gamma + beta`` over axes ``[axis, rank)``; gamma
    and beta have shape ``x.shape[axis:]``."""
    return _apply("layer_norm", x, gamma, beta, axis=axis, epsilon=epsilon)


def rms_norm(x: Value, gamma: Operand, axis: int = -1, epsilon: float = 1e-6) -> Value:
    """``x / sqrt(mean(x^2) + epsilon) * gamma`` over axes ``[axis, rank)`` (T5's and LLaMA's
    norm: no mean subtracted, no bias); gamma has shape ``x.shape[axis:]``."""
    return _apply("rms_norm", x, gamma, axis=axis, epsilon=epsilon)


# -- losses -------------------------------------------------------------------------------------
# Written once, for this API and for ONNX's NegativeLogLikelihoodLoss / SoftmaxCrossEntropyLoss
# (kiln/frontend/onnx/ops/loss.py), against anything that emits ops: a graph here, the ONNX
# importer's context there (which also folds constant operands at import).
class Emitter(Protocol):
    def emit(self, op: str, inputs: Sequence[Value], **attrs: object) -> Value: ...

    def scalar(self, value: float | int | bool, like: Value) -> Value: ...


class _GraphEmitter:
    def __init__(self, g: Graph) -> None:
        self.g = g

    def emit(self, op: str, inputs: Sequence[Value], **attrs: object) -> Value:
        return self.g.add(op, inputs, **attrs)[0]

    def scalar(self, value: float | int | bool, like: Value) -> Value:
        return self.g.constant(np.array(value, dtype=like.dtype.np))


LOSS_REDUCTIONS = ("none", "sum", "mean")


def check_loss(x: Value, target: Value, weight: Value | None, reduction: str) -> None:
    """Check a loss's operands and reduction against ONNX's spec (ModelError if not)."""
    if reduction not in LOSS_REDUCTIONS:
        raise ModelError(f"reduction={reduction!r} is not one of {', '.join(LOSS_REDUCTIONS)}")
    if not x.dtype.is_float:
        raise ModelError(f"the input must be a float tensor, got {x.dtype}")
    if x.type.rank < 2:
        raise ModelError(f"the input must be [N, C] or [N, C, d1, ...], got "
                         f"{format_shape(x.shape)}")
    want = (x.shape[0], *x.shape[2:])
    if target.type.rank != len(want) or not target.dtype.is_int:
        raise ModelError(f"the target must be integers of shape {format_shape(want)} (the "
                         f"input's without C), got {target.type}")

    def same(a: Dim, b: Dim) -> bool:     # False only when both are known and differ
        return a == b or not (isinstance(a, int) and isinstance(b, int))

    if weight is not None and (weight.type.rank != 1 or weight.dtype is not x.dtype
                               or not same(weight.shape[0], x.shape[1])):
        raise ModelError(f"the weight must be a [C] tensor of {x.dtype}, got {weight.type}")


def lower_nll_loss(b: Emitter, log_prob: Value, target: Value, weight: Value | None,
                   reduction: str, ignore_index: int | None) -> Value:
    """ONNX's NegativeLogLikelihoodLoss in kiln ops, as onnx's reference computes it::

        picked = gather_elements(log_prob, target[:, None], axis=1)    # [N, d1, ...]
        loss   = where(target == ignore_index, 0, -picked) * weight[target]
        result = loss | sum(loss) | sum(loss) / sum(weight[target], 0 where ignored)

    An ignored target reads class 0 instead (it may lie outside ``[0, C)``) and its loss is
    zeroed before the weight multiplies it, so a ``-inf`` log probability there gives no NaN;
    a mean over only ignored targets is 0 / 0 (NaN), as in the reference."""
    check_loss(log_prob, target, weight, reduction)
    ignored, safe = None, target
    if ignore_index is not None:
        ignored = b.emit("equal", [target, b.scalar(ignore_index, target)])
        safe = b.emit("where", [ignored, b.scalar(0, target), target])
    shape = target.shape
    index = b.emit("reshape", [safe], shape=(shape[0], 1, *shape[1:]))
    picked = b.emit("reshape", [b.emit("gather_elements", [log_prob, index], axis=1)],
                    shape=shape)
    loss = b.emit("neg", [picked])
    zero = b.scalar(0, log_prob)
    if ignored is not None:
        loss = b.emit("where", [ignored, zero, loss])
    counted = None          # each element's share of the mean's denominator, when not 1
    if weight is not None:
        counted = b.emit("gather", [weight, safe], axis=0)
        if ignored is not None:
            counted = b.emit("where", [ignored, zero, counted])
        loss = b.emit("mul", [loss, counted])
    elif ignored is not None:
        counted = b.emit("where", [ignored, zero, b.scalar(1, log_prob)])
    if reduction == "none":
        return loss

    def whole(op: str, v: Value) -> Value:
        # keepdims, then a reshape to a scalar: the x86 row-reduction schedule fails on a
        # rank-0 output once it splits the reduction into vector lanes (rfactor; 16+ elements)
        kept = b.emit(op, [v], axes=None, keepdims=True)
        return b.emit("reshape", [kept], shape=())

    if reduction == "sum":
        return whole("reduce_sum", loss)
    if counted is None:
        return whole("reduce_mean", loss)
    return b.emit("div", [whole("reduce_sum", loss), whole("reduce_sum", counted)])


def nll_loss(log_prob: Value, target: Operand, weight: Operand | None = None,
             reduction: str = "mean", ignore_index: int | None = None) -> Value:
    """Negative log likelihood of ``log_prob`` [N, C, d1, ...] at integer ``target``
    [N, d1, ...]: per element (``reduction="none"``), summed, or the mean weighted by
    ``weight`` [C]; targets equal to ``ignore_index`` count for nothing (PyTorch's
    ``nll_loss``, ONNX's NegativeLogLikelihoodLoss)."""
    g = log_prob.graph
    w = None if weight is None else _lift(g, weight, log_prob)
    return lower_nll_loss(_GraphEmitter(g), log_prob, _lift(g, target), w, reduction,
                          ignore_index)


def cross_entropy(scores: Value, target: Operand, weight: Operand | None = None,
                  reduction: str = "mean", ignore_index: int | None = None) -> Value:
    """``nll_loss(log_softmax(scores, axis=1), ...)``: softmax cross entropy of unnormalised
    ``scores`` [N, C, d1, ...] (PyTorch's ``cross_entropy``, ONNX's SoftmaxCrossEntropyLoss)."""
    return nll_loss(log_softmax(scores, axis=1), target, weight, reduction, ignore_index)


# -- sampling -----------------------------------------------------------------------------------
def grid_sample(x: Value, grid: Operand, mode: str = "linear", padding_mode: str = "zeros",
                align_corners: bool = False) -> Value:
    """``x`` ``[N, C, D1..Dk]`` sampled at ``grid`` ``[N, H1..Hk, k]`` (normalised coordinates
    in ``[-1, 1]``, x first) as ONNX GridSample: ``mode`` "nearest", "linear" or "cubic"
    (2-D only), ``padding_mode`` "zeros", "border" or "reflection"."""
    return _apply("grid_sample", x, grid, mode=mode, padding_mode=padding_mode,
                  align_corners=align_corners)


def roi_align(x: Value, rois: Operand, batch_indices: Operand, output_size: Sequence[int],
              sampling_ratio: int, spatial_scale: float = 1.0, mode: str = "avg",
              half_pixel: bool = True) -> Value:
    """ONNX RoiAlign of ``x`` ``[N, C, H, W]`` over ``rois`` ``[R, 4]`` (x1, y1, x2, y2) of
    images ``batch_indices`` ``[R]``: ``[R, C, *output_size]``."""
    return _apply("roi_align", x, rois, batch_indices, output_height=int(output_size[0]),
                  output_width=int(output_size[1]), sampling_ratio=sampling_ratio,
                  spatial_scale=spatial_scale, mode=mode, half_pixel=half_pixel)


def bitcast(x: Value, dtype: object) -> Value:
    """``x``'s bits reinterpreted as ``dtype`` of the same width."""
    return _apply("bitcast", x, dtype=dtype)


# -- recurrent layers ---------------------------------------------------------------------------
_RECURRENT_ACTIVATIONS = {"lstm": ("sigmoid", "tanh", "tanh"), "gru": ("sigmoid", "tanh")}


def lstm(x: Value, w: Operand, r: Operand, b: Operand | None = None, h0: Value | None = None,
         c0: Value | None = None, direction: str = "forward") -> tuple[Value, Value, Value]:
    """ONNX's LSTM layer: ``x`` [T, B, I], ``w`` [D, 4H, I], ``r`` [D, 4H, H] (gates i, o, f,
    c), ``b`` [D, 8H] (input then recurrent biases); D = 2 when ``direction`` is
    "bidirectional". Returns y [T, D, B, H], the last h [D, B, H] and the last c [D, B, H].
    (``nn.LSTM`` takes PyTorch's layout and stacks layers.)"""
    y, y_h, y_c = _recurrent("lstm", x, w, r, b, h0, c0, direction)
    return y, y_h, y_c


def gru(x: Value, w: Operand, r: Operand, b: Operand | None = None, h0: Value | None = None,
        direction: str = "forward", linear_before_reset: bool = False) -> tuple[Value, Value]:
    """ONNX's GRU layer: ``w`` [D, 3H, I], ``r`` [D, 3H, H] (gates z, r, h), ``b`` [D, 6H];
    ``linear_before_reset`` applies the reset gate after the recurrent product (PyTorch's
    GRU). Returns y [T, D, B, H] and the last h [D, B, H]."""
    y, y_h = _recurrent("gru", x, w, r, b, h0, None, direction,
                        linear_before_reset=linear_before_reset)
    return y, y_h


def _recurrent(op: str, x: Value, w: Operand, r: Operand, b: Operand | None,
               h0: Value | None, c0: Value | None, direction: str, **extra: object
               ) -> list[Value]:
    from kiln.frontend.recurrent import check_weights, recurrent_layer
    from kiln.ir.ops.rnn import ActivationFn, Direction

    g = _graph_of(x)
    w, r = _lift(g, w, name="W"), _lift(g, r, name="R")
    b = _lift(g, b, name="B") if b is not None else None
    try:
        d = Direction(direction)
    except ValueError:
        raise ModelError(f"direction {direction!r} is not one of forward, reverse, "
                         "bidirectional") from None
    h = r.shape[-1]
    check_weights(op, d.count, h, x, w, r)
    acts = tuple(ActivationFn(a) for a in _RECURRENT_ACTIVATIONS[op]) * d.count
    return recurrent_layer(g.add, g.constant, op, x, w, r, b, h0, c0, hidden_size=h,
                           direction=d, activations=acts, **extra)


# -- a decoder's key/value cache (kiln/ir/ops/kv_cache.py) ---------------------------------------
def kv_cache_write(cache: Value, k: Value, v: Value, pos: Value, layer: int) -> Value:
    """The cache ``[L, 2, B, H, C, D]`` with layer ``layer``'s keys and values ``[B, H, T, D]``
    stored at positions ``pos .. pos + T - 1`` (``pos``: a 0-d int64 tensor). Compiled, the
    write is in place: only those T rows move."""
    return _apply("kv_cache_write", cache, k, v, pos, layer=layer)


def kv_attention(q: Value, cache: Value, pos: Value, layer: int,
                 scale: float | None = None) -> Value:
    """Causal attention of the queries ``q [B, H, T, D]`` at positions ``pos .. pos + T - 1``
    over layer ``layer``'s cached keys and values: query t sees positions ``0 .. pos + t``.
    ``scale`` defaults to ``1 / sqrt(D)``. One flash-style kernel: an online softmax over
    blocks of keys, linear in the position."""
    d = q.shape[-1]
    if scale is None:
        if not isinstance(d, int):
            raise ModelError("kv_attention: a symbolic head dim needs an explicit scale")
        scale = 1.0 / float(np.sqrt(d))
    return _apply("kv_attention", q, cache, pos, layer=layer, scale=float(scale))


def full(g: Graph, shape: Sequence[int], value: float | int = 0, dtype: object = "float32"
         ) -> Value:
    """A tensor of ``shape`` filled with ``value``, computed when the model runs (a large
    one is never stored in the library): a decoder's empty key/value cache."""
    fill = g.constant(np.array(value, dtype=as_dtype(dtype).np), name="fill")
    return g.add("broadcast_to", [fill], shape=tuple(shape))[0]
