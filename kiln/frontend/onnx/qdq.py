"""QDQ fusion: a statically quantized ONNX model (``onnxruntime.quantization`` in QDQ format)
spells each int8 op as float between DequantizeLinear and QuantizeLinear nodes. This pass, run
on the ModelProto before import, rewrites those groups into the quantized ONNX ops kiln already
lowers to integer kernels, as onnxruntime's own QDQ transformer does:

    DQ(x), DQ(w)[, DQ(b)] -> Conv   -> Q    =>  QLinearConv
    DQ(a), DQ(b)          -> MatMul -> Q    =>  QLinearMatMul
    DQ(a), DQ(b)[, DQ(c)] -> Gemm   -> Q    =>  com.microsoft QGemm
    DQ(a), DQ(b)          -> Add    -> Q    =>  com.microsoft QLinearAdd
    DQ(a), DQ(b)          -> Mul    -> Q    =>  com.microsoft QLinearMul
    DQ(x)...              -> Concat -> Q    =>  com.microsoft QLinearConcat
    DQ(x) -> Reshape / Flatten / Transpose / Squeeze / Unsqueeze / Identity -> Q, with the
        same scale and zero point on both sides    =>  the op on the integers

A group is rewritten only when it is unambiguous: the float op's output is read by the Q
alone (and is not a graph output), every scale and zero point is a constant, activations are
per tensor, the weights (Conv, MatMul, Gemm's B) are int8 / uint8 constants per tensor or per
output channel, and a bias is the int32 constant at scale ``x_scale * w_scale`` that the
quantizer writes. Anything else stays as written: DQ -> op -> Q in float, which is the model's
meaning, fused by kiln into one elementwise kernel (Div, HardSigmoid, GlobalAveragePool,
Softmax...). The DQ nodes left without readers are dropped by dead-code elimination.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MS = "com.microsoft"
_INT8 = (TensorProto.INT8, TensorProto.UINT8)
# ops that only move or copy elements: with the same scale and zero point on both sides the
# DQ -> op -> Q round trip is the identity on the integers
_MOVES = ("Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity")
# a bias quantized at x_scale * w_scale: the quantizer computes that product in float32
_BIAS_SCALE_RTOL = 1e-5


@dataclass
class _Quant:
    """One DequantizeLinear (or QuantizeLinear) node's integer tensor and constant
    parameters."""

    node: onnx.NodeProto
    data: str                    # the integer tensor (DQ's input; Q's output)
    scale: np.ndarray
    zero: np.ndarray | None      # None: the default zero point
    elem: int                    # the integer dtype (TensorProto enum)
    axis: int

    @property
    def per_tensor(self) -> bool:
        return self.scale.size == 1


class _Rewriter:
    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.graph = model.graph
        self.consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i)
                                              for i in self.graph.initializer}
        for n in self.graph.node:
            if n.op_type == "Constant" and n.domain in ("", "ai.onnx"):
                value = next((a for a in n.attribute if a.name == "value"), None)
                if value is not None:
                    self.consts[n.output[0]] = numpy_helper.to_array(value.t)
        self.types = {vi.name: vi.type.tensor_type.elem_type
                      for vi in [*self.graph.value_info, *self.graph.input,
                                 *self.graph.output] if vi.type.HasField("tensor_type")}
        self.producer = {o: n for n in self.graph.node for o in n.output}
        self.readers: dict[str, list[onnx.NodeProto]] = {}
        for n in self.graph.node:
            for i in n.input:
                self.readers.setdefault(i, []).append(n)
        self.outputs = {o.name for o in self.graph.output}
        self.names = {o for n in self.graph.node for o in n.output} | set(self.consts)
        self.new_inits: list[onnx.TensorProto] = []

    # -- reading the model ---------------------------------------------------------------------
    def _elem(self, name: str) -> int | None:
        if name in self.consts:
            return helper.np_dtype_to_tensor_dtype(self.consts[name].dtype)
        return self.types.get(name)

    def quant(self, node: onnx.NodeProto | None) -> _Quant | None:
        """The node's parameters when it is a Q or DQ of int8 / uint8 with constant ones."""
        if node is None or node.domain not in ("", "ai.onnx") or node.op_type not in (
                "QuantizeLinear", "DequantizeLinear"):
            return None
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("block_size", 0) or attrs.get("output_dtype", 0) or \
                attrs.get("precision", 0):
            return None
        scale = self.consts.get(node.input[1])
        has_zero = len(node.input) > 2 and node.input[2]
        zero = self.consts.get(node.input[2]) if has_zero else None
        if scale is None or (has_zero and zero is None) or scale.dtype != np.float32:
            return None
        if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            return None
        dq = node.op_type == "DequantizeLinear"
        data = node.input[0] if dq else node.output[0]
        elem = helper.np_dtype_to_tensor_dtype(zero.dtype) if zero is not None else (
            self._elem(data) if dq else TensorProto.UINT8)
        allowed = (*_INT8, TensorProto.INT32) if dq else _INT8      # int32: a DQ'd bias
        if elem not in allowed or (zero is not None and zero.size != scale.size):
            return None
        return _Quant(node, data, scale.reshape(-1) if scale.size > 1 else scale.reshape(()),
                      None if zero is None else zero.reshape(scale.shape if scale.size > 1
                                                             else ()),
                      elem, int(attrs.get("axis", 1)))

    def dq_input(self, node: onnx.NodeProto, i: int) -> _Quant | None:
        q = self.quant(self.producer.get(node.input[i])) if i < len(node.input) else None
        return q if q is not None and q.node.op_type == "DequantizeLinear" else None

    def sole_q(self, node: onnx.NodeProto) -> _Quant | None:
        """The QuantizeLinear that alone reads ``node``'s output, per tensor."""
        out = node.output[0]
        readers = self.readers.get(out, [])
        if out in self.outputs or len(readers) != 1:
            return None
        q = self.quant(readers[0])
        return q if q is not None and q.node.op_type == "QuantizeLinear" \
            and q.per_tensor else None

    # -- writing -------------------------------------------------------------------------------
    def const(self, hint: str, value: np.ndarray) -> str:
        name, k = hint, 0
        while name in self.names:
            k += 1
            name = f"{hint}_{k}"
        self.names.add(name)
        self.new_inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def params(self, q: _Quant) -> list[str]:
        """[integer tensor, scale, zero point] as inputs of a QLinear op (a default zero
        point made explicit: the QLinear ops take it as a required input)."""
        base = q.node.name or q.data
        scale = self.const(f"{base}_scale", q.scale.astype(np.float32))
        zero = q.zero if q.zero is not None else np.zeros(q.scale.shape, np.uint8)
        return [q.data, scale, self.const(f"{base}_zero_point", zero)]


def _weight_ok(rw: _Rewriter, w: _Quant, channel_axis: int, rank: int) -> bool:
    """A constant int8 / uint8 weight, per tensor or per output channel (``channel_axis``)."""
    if w.data not in rw.consts or w.elem not in _INT8:
        return False
    return w.per_tensor or (w.axis % rank) == channel_axis


def _optional_bias(rw: _Rewriter, node: onnx.NodeProto, x: _Quant, w: _Quant) -> str | None:
    """Input 2's int32 bias name, "" where the node has none, None where it cannot be used."""
    if len(node.input) > 2 and node.input[2]:
        return _bias(rw, rw.dq_input(node, 2), x, w)
    return ""


def _bias(rw: _Rewriter, b: _Quant | None, x: _Quant, w: _Quant) -> str | None:
    """The int32 bias of a DQ(b) at scale x_scale * w_scale with zero point 0: its name;
    "" when there is no bias; None when it is not of that form (no fusion)."""
    if b is None:
        return None
    data = rw.consts.get(b.data)
    if data is None or data.dtype != np.int32 or (b.zero is not None and np.any(b.zero)):
        return None
    want = (x.scale * w.scale).astype(np.float32).reshape(-1)
    got = np.broadcast_to(b.scale.reshape(-1), want.shape)
    if not np.allclose(got, want, rtol=_BIAS_SCALE_RTOL, atol=0):
        return None
    return b.data


def _fused(rw: _Rewriter, node: onnx.NodeProto, q: _Quant) -> list[onnx.NodeProto] | None:
    """The nodes replacing ``node`` and its Q, or None to leave the group as written."""
    op = node.op_type
    attrs = list(node.attribute)
    name = node.name or q.data
    if op in ("Conv", "MatMul", "Gemm"):
        x, w = rw.dq_input(node, 0), rw.dq_input(node, 1)
        if x is None or w is None or not x.per_tensor or x.elem not in _INT8:
            return None
        if op == "Conv":
            rank = len(rw.consts[w.data].shape) if w.data in rw.consts else 0
            if not _weight_ok(rw, w, 0, rank):
                return None
            bias = _optional_bias(rw, node, x, w)
            if bias is None:
                return None
            ins = [*rw.params(x), *rw.params(w), *rw.params(q)[1:]] + ([bias] if bias else [])
            return [_with_attrs(helper.make_node("QLinearConv", ins, [q.data], name=name),
                                attrs)]
        if op == "MatMul":
            rank = len(rw.consts[w.data].shape) if w.data in rw.consts else 0
            if rank != 2 or not _weight_ok(rw, w, 1, rank):
                return None
            ins = [*rw.params(x), *rw.params(w), *rw.params(q)[1:]]
            return [helper.make_node("QLinearMatMul", ins, [q.data], name=name)]
        at = {a.name: helper.get_attribute_value(a) for a in attrs}
        trans_b = int(at.get("transB", 0))
        if float(at.get("beta", 1.0)) != 1.0 or int(at.get("transA", 0)):
            return None
        if not _weight_ok(rw, w, 0 if trans_b else 1, 2):
            return None
        bias = _optional_bias(rw, node, x, w)
        if bias is None:
            return None
        ins = [*rw.params(x), *rw.params(w), bias, *rw.params(q)[1:]]
        return [helper.make_node("QGemm", ins, [q.data], name=name, domain=MS,
                                 alpha=float(at.get("alpha", 1.0)), transB=trans_b)]
    if op in ("Add", "Mul"):
        a, b = rw.dq_input(node, 0), rw.dq_input(node, 1)
        if a is None or b is None or not (a.per_tensor and b.per_tensor) \
                or a.elem != q.elem or b.elem != q.elem:
            return None
        ins = [*rw.params(a), *rw.params(b), *rw.params(q)[1:]]
        return [helper.make_node(f"QLinear{op}", ins, [q.data], name=name, domain=MS)]
    if op == "Concat":
        xs = [rw.dq_input(node, i) for i in range(len(node.input))]
        if any(x is None or not x.per_tensor or x.elem != q.elem for x in xs):
            return None
        ins = rw.params(q)[1:] + [p for x in xs for p in rw.params(x)]
        return [_with_attrs(helper.make_node("QLinearConcat", ins, [q.data], name=name,
                                             domain=MS), attrs)]
    if op in _MOVES:
        x = rw.dq_input(node, 0)
        if x is None or not x.per_tensor or x.elem != q.elem \
                or not np.array_equal(x.scale, q.scale) \
                or not np.array_equal(_zero_of(x), _zero_of(q)):
            return None
        ins = [x.data, *node.input[1:]]
        return [_with_attrs(helper.make_node(op, ins, [q.data], name=name), attrs)]
    return None


def _zero_of(q: _Quant) -> np.ndarray:
    return q.zero if q.zero is not None else np.zeros(q.scale.shape, np.uint8)


def _with_attrs(node: onnx.NodeProto, attrs: list[onnx.AttributeProto]) -> onnx.NodeProto:
    node.attribute.extend(attrs)
    return node


FUSED_OPS = ("Conv", "MatMul", "Gemm", "Add", "Mul", "Concat", *_MOVES)


def fuse_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with its QDQ groups rewritten as quantized ops (see the module docstring);
    the model itself when it has none. Run after shape inference (it reads value_info for
    the dtypes of DQ inputs without a zero point)."""
    if not any(n.op_type == "DequantizeLinear" for n in model.graph.node):
        return model
    rw = _Rewriter(model)
    replace: dict[int, list[onnx.NodeProto]] = {}     # id(Q node) -> its replacement
    dropped: set[int] = set()
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type not in FUSED_OPS:
            continue
        q = rw.sole_q(node)
        if q is None:
            continue
        nodes = _fused(rw, node, q)
        if nodes is None:
            continue
        replace[id(q.node)] = nodes        # at the Q: all the new nodes' inputs precede it
        dropped.add(id(node))
    if not replace:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    for node in model.graph.node:
        if id(node) in dropped:
            continue
        out.graph.node.extend(replace.get(id(node), [node]))
    out.graph.initializer.extend(rw.new_inits)
    if not any(imp.domain == MS for imp in out.opset_import):
        out.opset_import.append(helper.make_opsetid(MS, 1))
    return out
