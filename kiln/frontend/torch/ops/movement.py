"""Views, slicing, joining and indexing: ``view``, ``permute``, ``expand``, ``slice``, ``cat``,
``split``, ``index``, ``embedding``, ``pad``...

torch's views are kiln's data movement ops. A view's new shape is read from the traced result
(``cx.out_shape()``), not from the ``size`` argument, which may hold -1 or size arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence

from kiln.errors import ModelError
from kiln.frontend.torch.context import Context, Scalar, aten, static_ints
from kiln.ir.dtype import DType
from kiln.ir.graph import Value
from kiln.ir.types import Dim, normalize_axis

_BIG = 1 << 62       # ends at or past this are torch's "to the end" (sys.maxsize)


@aten("clone.default", "alias.default", "lift_fresh_copy.default", "detach.default")
def _identity(cx: Context, x: Value) -> Value:
    return x


@aten("view.default", "_unsafe_view.default", "reshape.default")
def _view(cx: Context, x: Value, size: Sequence[Dim]) -> Value:
    return cx.reshape(x, cx.out_shape())


@aten("squeeze.default")
def _squeeze_all(cx: Context, x: Value) -> Value:
    return cx.reshape(x, cx.out_shape())


@aten("squeeze.dim", "squeeze.dims", "unsqueeze.default")
def _squeeze(cx: Context, x: Value, dim: int | Sequence[int]) -> Value:
    return cx.reshape(x, cx.out_shape())


@aten("permute.default")
def _permute(cx: Context, x: Value, dims: Sequence[int]) -> Value:
    perm = tuple(normalize_axis(int(d), x.type.rank) for d in dims)
    if perm == tuple(range(x.type.rank)):
        return x
    return cx.emit("transpose", [x], perm=perm)


@aten("expand.default")
def _expand(cx: Context, x: Value, size: Sequence[Dim], *, implicit: bool = False) -> Value:
    return cx.broadcast(x, cx.out_shape())


@aten("copy.default")
def _copy(cx: Context, x: Value, src: Value, non_blocking: bool = False) -> Value:
    return cx.broadcast(cx.cast(src, x.dtype), x.shape)


@aten("slice.Tensor")
def _slice(cx: Context, x: Value, dim: int = 0, start: Dim | None = None,
           end: Dim | None = None, step: int = 1) -> Value:
    axis = normalize_axis(int(dim), x.type.rank)
    size = x.shape[axis]
    start = 0 if start is None else start
    end = _BIG if end is None else end
    if isinstance(size, str) or isinstance(end, str) or isinstance(start, str):
        # of a symbolic dim, only a prefix ending at a named size: x[:, :seq]
        whole = end == size or (isinstance(end, int) and end >= _BIG)
        if start == 0 and step == 1 and whole:
            return x
        if start == 0 and step == 1 and isinstance(end, str):
            return cx.emit("slice", [x], axes=(axis,), starts=(0,), ends=(end,))
        raise ModelError(f"slice {start}:{end}:{step} of dim {size}: with symbolic sizes kiln "
                         "slices only prefixes")
    b, e, s = slice(int(start), int(end), int(step)).indices(size)
    if (b, e, s) == (0, size, 1):
        return x
    return cx.emit("slice", [x], axes=(axis,), starts=(b,), ends=(e,), steps=(s,))


@aten("select.int")
def _select(cx: Context, x: Value, dim: int, index: int) -> Value:
    axis = normalize_axis(int(dim), x.type.rank)
    size = x.shape[axis]
    if not isinstance(index, int) or (index < 0 and not isinstance(size, int)):
        raise ModelError(f"select {index} of dim {size} needs a static index")
    i = index % size if index < 0 else index
    picked = cx.emit("slice", [x], axes=(axis,), starts=(i,), ends=(i + 1,))
    return cx.reshape(picked, cx.out_shape())


@aten("flip.default")
def _flip(cx: Context, x: Value, dims: Sequence[int]) -> Value:
    axes = tuple(sorted({normalize_axis(int(d), x.type.rank) for d in dims}))
    sizes = static_ints([x.shape[a] for a in axes], "flip's dims")
    return cx.emit("slice", [x], axes=axes, starts=(-1,) * len(axes),
                   ends=tuple(-(s + 1) for s in sizes), steps=(-1,) * len(axes))


@aten("cat.default")
def _cat(cx: Context, tensors: Sequence[Value], dim: int = 0) -> Value:
    out = cx.out_dtype()
    # torch skips 1-D empty tensors in cat whatever the other shapes (a legacy rule)
    parts = [cx.cast(t, out) for t in tensors if t.shape != (0,)]
    if len(parts) == 1:
        return parts[0]
    return cx.emit("concat", parts, axis=normalize_axis(int(dim), parts[0].type.rank))


@aten("stack.default")
def _stack(cx: Context, tensors: Sequence[Value], dim: int = 0) -> Value:
    axis = normalize_axis(int(dim), tensors[0].type.rank + 1)
    out = cx.out_dtype()
    parts = [cx.reshape(cx.cast(t, out), (*t.shape[:axis], 1, *t.shape[axis:]))
             for t in tensors]
    return parts[0] if len(parts) == 1 else cx.emit("concat", parts, axis=axis)


@aten("split_with_sizes.default")
def _split_with_sizes(cx: Context, x: Value, split_sizes: Sequence[int],
                      dim: int = 0) -> list[Value]:
    axis = normalize_axis(int(dim), x.type.rank)
    sizes = tuple(static_ints(split_sizes, "split sizes"))
    if len(sizes) == 1:
        return [x]
    return cx.add("split", [x], axis=axis, sizes=sizes)


@aten("split.Tensor")
def _split(cx: Context, x: Value, split_size: int, dim: int = 0) -> list[Value]:
    axis = normalize_axis(int(dim), x.type.rank)
    total = static_ints([x.shape[axis]], "a split dim")[0]
    step = int(split_size)
    sizes = [min(step, total - i) for i in range(0, total, step)] or [0]
    return _split_with_sizes(cx, x, sizes, axis)


@aten("unbind.int")
def _unbind(cx: Context, x: Value, dim: int = 0) -> list[Value]:
    axis = normalize_axis(int(dim), x.type.rank)
    total = static_ints([x.shape[axis]], "an unbind dim")[0]
    rest = (*x.shape[:axis], *x.shape[axis + 1:])
    parts = _split_with_sizes(cx, x, [1] * total, axis)
    return [cx.reshape(p, rest) for p in parts]


@aten("repeat.default")
def _repeat(cx: Context, x: Value, repeats: Sequence[int]) -> Value:
    reps = static_ints(repeats, "repeat's counts")
    lead = len(reps) - x.type.rank
    y = cx.reshape(x, (1,) * lead + x.shape)
    return y if all(r == 1 for r in reps) else cx.emit("tile", [y], repeats=tuple(reps))


# -- gathering --------------------------------------------------------------------------------
@aten("embedding.default")
def _embedding(cx: Context, weight: Value, indices: Value, padding_idx: int = -1,
               scale_grad_by_freq: bool = False, sparse: bool = False) -> Value:
    return cx.emit("gather", [weight, indices], axis=0)   # padding_idx matters for training


@aten("index_select.default")
def _index_select(cx: Context, x: Value, dim: int, index: Value) -> Value:
    return cx.emit("gather", [x, index], axis=normalize_axis(int(dim), x.type.rank))


@aten("gather.default")
def _gather(cx: Context, x: Value, dim: int, index: Value, *, sparse_grad: bool = False
            ) -> Value:
    return cx.emit("gather_elements", [x, index], axis=normalize_axis(int(dim), x.type.rank))


@aten("index.Tensor")
def _index(cx: Context, x: Value, indices: Sequence[Value | None]) -> Value:
    """Advanced indexing ``x[..., i, ...]``: one index tensor (a gather along its axis), or
    several on the leading axes (``x[i, j]``, a gather_nd of their broadcast)."""
    used = [k for k, t in enumerate(indices) if t is not None]
    for k in used:
        if indices[k].dtype.value == "bool":
            raise ModelError("indexing with a bool mask gives a data-dependent shape; kiln "
                             "takes integer indices (or use torch.where)")
    if len(used) == 1:
        return cx.emit("gather", [x, indices[used[0]]], axis=used[0])
    if used != list(range(len(used))):
        raise ModelError("several index tensors are supported on the leading axes only")
    shape = cx.out_shape()[:len(cx.out_shape()) - (x.type.rank - len(used))]
    stacked = [cx.reshape(cx.broadcast(cx.cast(indices[k], DType.int64), shape), (*shape, 1))
               for k in used]
    return cx.emit("gather_nd", [x, cx.emit("concat", stacked, axis=len(shape))])


# -- padding ----------------------------------------------------------------------------------
def _pads(x: Value, pad: Sequence[int]) -> tuple[int, ...]:
    """torch's pad list (last dim first: left, right, then the dim before...) as kiln's
    (begin..., end...) over every axis."""
    pad = static_ints(pad, "pads")
    rank = x.type.rank
    if len(pad) % 2 or len(pad) // 2 > rank:
        raise ModelError(f"pad {pad} does not fit a rank-{rank} tensor")
    begin, end = [0] * rank, [0] * rank
    for i in range(len(pad) // 2):
        begin[rank - 1 - i], end[rank - 1 - i] = pad[2 * i], pad[2 * i + 1]
    return tuple(begin + end)


@aten("constant_pad_nd.default")
def _constant_pad(cx: Context, x: Value, pad: Sequence[int], value: Scalar = 0) -> Value:
    return cx.emit("pad", [x], pads=_pads(x, pad), value=float(value))


def _mode_pad(mode: str):  # noqa: ANN202 - a converter
    def convert(cx: Context, x: Value, padding: Sequence[int]) -> Value:
        return cx.emit("pad", [x], pads=_pads(x, padding), mode=mode)
    return convert


for _dims in ("1d", "2d", "3d"):
    aten(f"reflection_pad{_dims}.default")(_mode_pad("reflect"))
    aten(f"replication_pad{_dims}.default")(_mode_pad("edge"))
