"""The key/value cache ops (kv_cache_write, kv_attention) against the reference interpreter on
odd shapes, the in-place update, and libraries with several entry points."""

from __future__ import annotations

import numpy as np
import pytest
import tvm

import kiln
from kiln import ops
from kiln.codegen.pipeline import lower_graph
from kiln.errors import InputError, KilnError, ModelError

RNG = np.random.default_rng(7)


def step_graph(layers: int, heads: int, capacity: int, d: int, t: int | str,
               layer: int = 1) -> kiln.Graph:
    """Write k, v at pos, then attend with q: outputs the attention and the new cache."""
    g = kiln.Graph("step")
    cache = g.input("cache", (layers, 2, 1, heads, capacity, d))
    q, k, v = (g.input(n, (1, heads, t, d)) for n in "qkv")
    pos = g.input("pos", (), "int64")
    new = ops.kv_cache_write(cache, k, v, pos, layer=layer)
    g.output(ops.kv_attention(q, new, pos, layer=layer), new, names=("attention", "new_cache"))
    return g


def write_kernels(kernels: list) -> list:
    return [k for k in kernels if k.group.anchor and k.group.anchor.op.name == "kv_cache_write"]


def feeds(layers: int, heads: int, capacity: int, d: int, t: int, pos: int) -> dict:
    f = {n: RNG.standard_normal((1, heads, t, d)).astype(np.float32) for n in "qkv"}
    f["cache"] = RNG.standard_normal((layers, 2, 1, heads, capacity, d)).astype(np.float32)
    f["pos"] = np.array(pos, np.int64)
    return f


@pytest.mark.parametrize(("heads", "capacity", "d", "t", "pos"), [
    (3, 37, 24, 1, 0),        # one key: the first position
    (3, 37, 24, 5, 7),        # a block of queries, head dim 16 + 8
    (2, 37, 7, 1, 36),        # the last position; head dim narrower than a vector
    (1, 50, 40, 4, 46),       # several key blocks of 16, a partial last one, to the end
    (4, 64, 64, 17, 30),      # more queries than a key block
])
def test_write_and_attention_match_the_reference(heads, capacity, d, t, pos) -> None:
    g = step_graph(2, heads, capacity, d, t)
    f = feeds(2, heads, capacity, d, t, pos)
    ref = kiln.run_reference(g, f)
    out = kiln.compile(g)(**f)
    np.testing.assert_allclose(out[0], ref[0], rtol=2e-5, atol=2e-5)
    np.testing.assert_array_equal(out[1], ref[1])
    # the reference's attention sees exactly positions 0 .. pos + t: changing the cache past
    # them changes nothing
    f2 = dict(f, cache=f["cache"].copy())
    f2["cache"][:, :, :, :, pos + t:] = 1e4
    np.testing.assert_allclose(kiln.run_reference(g, f2)[0], ref[0], rtol=1e-6)


def test_the_cache_is_updated_in_place() -> None:
    g = step_graph(2, 3, 37, 24, 2)
    lib = kiln.compile(g)
    (write,) = write_kernels(lib.compilation.kernels)
    assert write.inplace == 0 and len(write.func.params) == 4      # no output buffer
    f = feeds(2, 3, 37, 24, 2, 9)
    ref = kiln.run_reference(g, f)
    cache = tvm.runtime.tensor(f["cache"])
    attention, new_cache = lib.functions["main"].on_device(**dict(f, cache=cache))
    np.testing.assert_array_equal(cache.numpy(), ref[1])     # the tensor passed, updated
    np.testing.assert_array_equal(new_cache.numpy(), ref[1])
    np.testing.assert_allclose(attention.numpy(), ref[0], rtol=2e-5, atol=2e-5)


def test_a_cache_read_again_after_the_write_is_copied_first() -> None:
    """Attention over the old cache after the write: writing in place would change what it
    reads, so the write kernel copies (and the caller's tensor stays as it was)."""
    g = kiln.Graph("copy")
    cache = g.input("cache", (1, 2, 1, 2, 20, 16))
    q, k, v = (g.input(n, (1, 2, 1, 16)) for n in "qkv")
    pos = g.input("pos", (), "int64")
    new = ops.kv_cache_write(cache, k, v, pos, layer=0)
    after = ops.kv_attention(q, new, pos, layer=0)
    before = ops.kv_attention(q, cache, pos, layer=0)
    g.output(ops.sub(after, before), new)
    c = lower_graph(g)
    (write,) = write_kernels(c.kernels)
    assert write.inplace is None and len(write.func.params) == 5
    f = {"cache": RNG.standard_normal((1, 2, 1, 2, 20, 16)).astype(np.float32),
         "pos": np.array(5, np.int64),
         **{n: RNG.standard_normal((1, 2, 1, 16)).astype(np.float32) for n in "qkv"}}
    ref = kiln.run_reference(g, f)
    original = f["cache"].copy()
    tensor = tvm.runtime.tensor(f["cache"])
    out = kiln.compile(g).functions["main"].on_device(**dict(f, cache=tensor))
    np.testing.assert_allclose(out[0].numpy(), ref[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(out[1].numpy(), ref[1])
    np.testing.assert_array_equal(tensor.numpy(), original)
    assert np.abs(ref[0]).max() > 1e-3          # the two attentions do differ


@pytest.mark.parametrize("pos", [36, -1, 100])
def test_a_position_outside_the_cache_is_an_input_error(pos: int) -> None:
    g = step_graph(2, 3, 37, 24, 2)
    f = feeds(2, 3, 37, 24, 2, pos)
    with pytest.raises(InputError, match="capacity of 37"):
        kiln.run_reference(g, f)
    with pytest.raises(InputError, match="capacity of 37"):
        kiln.compile(g)(**f)


def test_a_symbolic_number_of_new_tokens() -> None:
    g = step_graph(1, 2, 40, 24, "T", layer=0)
    lib = kiln.compile(g)
    for t, pos in ((3, 0), (9, 31), (1, 39)):
        f = feeds(1, 2, 40, 24, t, pos)
        ref = kiln.run_reference(g, f)
        out = lib(**f)
        np.testing.assert_allclose(out[0], ref[0], rtol=2e-5, atol=2e-5)
        np.testing.assert_array_equal(out[1], ref[1])


def test_kv_ops_check_their_operands() -> None:
    g = kiln.Graph("bad")
    cache = g.input("cache", (2, 2, 1, 3, 16, 8))
    pos = g.input("pos", (), "int64")
    q = g.input("q", (1, 3, 1, 8))
    with pytest.raises(ModelError, match="layer 2 is not in the cache's 2 layers"):
        ops.kv_attention(q, cache, pos, layer=2)
    with pytest.raises(ModelError, match=r"q must be \[batch, heads, T, head_dim\]"):
        ops.kv_attention(g.input("q5", (1, 3, 1, 5)), cache, pos, layer=0)
    with pytest.raises(ModelError, match="pos must be a 0-d int64"):
        ops.kv_cache_write(cache, q, q, g.input("p32", (), "int32"), layer=0)


def test_cuda_names_the_kv_ops_it_cannot_compile_yet() -> None:
    with pytest.raises(ModelError, match=r"no CUDA schedule yet: kv_cache_write .*kv_attention"):
        lower_graph(step_graph(1, 2, 16, 8, 1, layer=0), "cuda")


def _two_entry_points() -> tuple[dict[str, kiln.Graph], np.ndarray]:
    w = RNG.standard_normal((256, 1024)).astype(np.float32)      # 1 MiB, shared
    graphs = {}
    for name, act in (("plain", None), ("relu", ops.relu)):
        g = kiln.Graph(name)
        x = g.input("x", (3, 256))
        y = ops.matmul(x, w)
        g.output(act(y) if act else y)
        graphs[name] = g
    return graphs, w


def test_a_library_with_two_entry_points_shares_its_weights(tmp_path) -> None:
    graphs, w = _two_entry_points()
    lib = kiln.compile(graphs)
    x = RNG.standard_normal((3, 256)).astype(np.float32)
    (plain,) = lib["plain"](x)
    (relu,) = lib["relu"](x=x)
    np.testing.assert_allclose(plain, x @ w, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(relu, np.maximum(x @ w, 0), rtol=1e-4, atol=1e-4)
    with pytest.raises(KilnError, match=r"2 entry points \(plain, relu\): call one"):
        lib(x)
    with pytest.raises(KilnError, match="has no function 'nope'; it has plain, relu"):
        lib["nope"]
    path = lib.export(tmp_path / "two.so")
    # the packed weight is stored once: one MiB of weights, not two
    assert path.stat().st_size < 1.6 * w.nbytes
    loaded = kiln.load(path)
    assert list(loaded.functions) == ["plain", "relu"]
    np.testing.assert_array_equal(loaded["relu"](x)[0], relu)


@pytest.mark.parametrize(("name", "message"), [("kiln_meta", "identifier other than"),
                                               ("not an id", "identifier")])
def test_entry_point_names_are_checked(name: str, message: str) -> None:
    graphs, _ = _two_entry_points()
    with pytest.raises(KilnError, match=message):
        kiln.compile({name: graphs["plain"]})


def test_a_device_tensor_of_the_wrong_type_names_the_input() -> None:
    lib = kiln.compile(step_graph(1, 2, 16, 8, 1, layer=0))
    f = feeds(1, 2, 16, 8, 1, 3)
    bad = tvm.runtime.tensor(np.zeros((1, 2, 1, 2, 15, 8), np.float32))
    with pytest.raises(InputError, match="input 'cache': expected float32"):
        lib(**dict(f, cache=bad))


def test_attention_alone_checks_the_position() -> None:
    g = kiln.Graph("attend")
    cache = g.input("cache", (1, 2, 1, 2, 16, 8))
    q = g.input("q", (1, 2, 3, 8))
    pos = g.input("pos", (), "int64")
    g.output(ops.kv_attention(q, cache, pos, layer=0))
    f = {"cache": np.zeros((1, 2, 1, 2, 16, 8), np.float32),
         "q": np.zeros((1, 2, 3, 8), np.float32), "pos": np.array(14, np.int64)}
    with pytest.raises(InputError, match="kv_attention: a position is outside the cache's "
                                         "capacity of 16"):
        kiln.compile(g)(**f)
