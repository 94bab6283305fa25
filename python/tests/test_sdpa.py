"""attend.sdpa against a NumPy port of torch's documented reference math, over many shapes,
masks and options; the weights, the backward (finite differences in float64), the KV cache,
the GIL, and every error type."""

import threading
import time

import numpy as np
import pytest

import attend
from reference import sdpa_ref

TOL = 2e-5


def rnd(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


CASES = []
rng0 = np.random.default_rng(0)
for lead in [(), (2,), (2, 3)]:
    for hq, hk in [(1, 1), (4, 4), (4, 2), (6, 1)]:
        for L, S in [(1, 1), (5, 5), (7, 3), (3, 70), (65, 130), (130, 65)]:
            CASES.append((lead, hq, hk, L, S))


@pytest.mark.parametrize("lead,hq,hk,L,S", CASES)
def test_shapes_and_causal_alignments(lead, hq, hk, L, S):
    rng = np.random.default_rng(hash((lead, hq, hk, L, S)) % 2**32)
    E, Ev = 8, 5
    q, k, v = rnd(rng, *lead, hq, L, E), rnd(rng, *lead, hk, S, E), rnd(rng, *lead, hk, S, Ev)
    gqa = hq != hk
    for kw in [{}, {"is_causal": True}, {"causal": "bottom_right"}, {"scale": 0.3}]:
        got = attend.sdpa(q, k, v, enable_gqa=gqa, **kw)
        want = sdpa_ref(q, k, v, enable_gqa=gqa, **kw)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=TOL, rtol=1e-4, err_msg=str(kw))


def test_two_and_three_dimensional_inputs():
    rng = np.random.default_rng(1)
    for shape_q, shape_k in [((6, 8), (9, 8)), ((3, 6, 8), (3, 9, 8))]:
        q, k, v = rnd(rng, *shape_q), rnd(rng, *shape_k), rnd(rng, *shape_k)
        got = attend.sdpa(q, k, v, is_causal=True)
        np.testing.assert_allclose(got, sdpa_ref(q, k, v, is_causal=True), atol=TOL)
        assert got.shape == q.shape[:-1] + (8,)


MASK_SHAPES = [(7, 11), (1, 11), (7, 1), (4, 1, 11), (1, 4, 7, 11), (2, 1, 7, 11), (2, 4, 7, 11), (2, 1, 1, 11)]


@pytest.mark.parametrize("mshape", MASK_SHAPES)
@pytest.mark.parametrize("kind", ["bool", "float"])
def test_masks_broadcast_as_torch_broadcasts(mshape, kind):
    rng = np.random.default_rng(len(mshape) * 7 + mshape[-1])
    q, k, v = rnd(rng, 2, 4, 7, 16), rnd(rng, 2, 4, 11, 16), rnd(rng, 2, 4, 11, 16)
    if kind == "bool":
        m = rng.random(mshape) > 0.3
    else:
        m = rng.standard_normal(mshape).astype(np.float32)
        m[rng.random(mshape) < 0.2] = -np.inf
    got = attend.sdpa(q, k, v, attn_mask=m)
    np.testing.assert_allclose(got, sdpa_ref(q, k, v, attn_mask=m), atol=TOL)
    w = attend.attention_weights(q, k, v, attn_mask=m)
    _, wr = sdpa_ref(q, k, v, attn_mask=m, return_weights=True)
    np.testing.assert_allclose(w, wr, atol=TOL)


def test_extras_window_softcap_lse_and_fully_masked_rows():
    rng = np.random.default_rng(3)
    q, k, v = rnd(rng, 1, 2, 40, 8), rnd(rng, 1, 2, 100, 8), rnd(rng, 1, 2, 100, 8)
    for kw in [
        {"window": (10, 0)},
        {"window": (None, 3)},
        {"window": (5, 5), "causal": "bottom_right"},
        {"softcap": 2.0},
        {"softcap": 1.5, "window": (20, 0), "scale": 0.5},
    ]:
        got = attend.sdpa(q, k, v, **kw)
        np.testing.assert_allclose(got, sdpa_ref(q, k, v, **kw), atol=TOL, err_msg=str(kw))
    out, lse = attend.sdpa(q, k, v, return_lse=True)
    s = (q.astype(np.float64) @ np.swapaxes(k, -1, -2)) / np.sqrt(8)
    want = np.log(np.exp(s - s.max(-1, keepdims=True)).sum(-1)) + s.max(-1)
    np.testing.assert_allclose(lse, want, atol=1e-4)
    # every key masked: zeros (torch: NaN), and weights 0
    m = np.zeros((40, 100), dtype=bool)
    m[5:] = True
    got = attend.sdpa(q, k, v, attn_mask=m)
    assert np.all(got[..., :5, :] == 0)
    assert np.all(attend.attention_weights(q, k, v, attn_mask=m)[..., :5, :] == 0)


def test_other_dtypes_and_strides_are_converted():
    rng = np.random.default_rng(4)
    q = rng.standard_normal((1, 2, 9, 8))  # float64
    k = np.asfortranarray(rng.standard_normal((1, 2, 12, 8)).astype(np.float32))
    v = rng.standard_normal((1, 2, 8, 12)).astype(np.float32).swapaxes(-1, -2)  # strided view
    got = attend.sdpa(q, k, v)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, sdpa_ref(q, k, v), atol=TOL)


def finite_difference(f, x, eps=1e-3):
    g = np.zeros_like(x, dtype=np.float64)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        xp, xm = x.astype(np.float64).copy(), x.astype(np.float64).copy()
        xp[i] += eps
        xm[i] -= eps
        g[i] = (f(xp) - f(xm)) / (2 * eps)
    return g


@pytest.mark.parametrize("kw", [{}, {"is_causal": True}, {"causal": "bottom_right", "softcap": 3.0}])
def test_backward_against_finite_differences(kw):
    rng = np.random.default_rng(5)
    q, k, v = rnd(rng, 1, 2, 5, 4), rnd(rng, 1, 1, 7, 4), rnd(rng, 1, 1, 7, 3)
    dout = rnd(rng, 1, 2, 5, 3)
    out, lse = attend.sdpa(q, k, v, enable_gqa=True, return_lse=True, **kw)
    dq, dk, dv = attend.sdpa_backward(dout, q, k, v, out, lse, enable_gqa=True, **kw)

    def loss(qq, kk, vv):
        return float((sdpa_ref(qq, kk, vv, enable_gqa=True, **kw) * dout).sum())

    np.testing.assert_allclose(dq, finite_difference(lambda x: loss(x, k, v), q), atol=2e-3)
    np.testing.assert_allclose(dk, finite_difference(lambda x: loss(q, x, v), k), atol=2e-3)
    np.testing.assert_allclose(dv, finite_difference(lambda x: loss(q, k, x), v), atol=2e-3)


def test_kv_cache_decoding_equals_the_full_call():
    rng = np.random.default_rng(6)
    B, Hq, H, T, D = 2, 6, 2, 37, 16
    q, k, v = rnd(rng, B, Hq, T, D), rnd(rng, B, H, T, D), rnd(rng, B, H, T, D)
    full = attend.sdpa(q, k, v, enable_gqa=True, causal="bottom_right")
    c = attend.KVCache(B, H, D)
    c.append(k[:, :, :10], v[:, :, :10])
    rows = [c.attend(q[:, :, :10])]
    for t in range(10, T):
        c.append(k[:, :, t : t + 1], v[:, :, t : t + 1])
        rows.append(c.attend(q[:, :, t : t + 1]))
    np.testing.assert_allclose(np.concatenate(rows, axis=2), full, atol=TOL)
    assert len(c) == T
    c.truncate(5)
    assert len(c) == 5
    c.reset()
    assert len(c) == 0
    with pytest.raises(attend.AttendError):
        c.truncate(3)


def test_the_gil_is_released_during_a_long_call():
    rng = np.random.default_rng(7)
    q = rnd(rng, 1, 8, 2048, 64)
    ticks = []
    stop = threading.Event()

    def count():
        while not stop.is_set():
            ticks.append(1)
            time.sleep(0.001)

    t = threading.Thread(target=count)
    t.start()
    time.sleep(0.01)
    before = len(ticks)
    for _ in range(3):
        attend.sdpa(q, q, q, is_causal=True)
    during = len(ticks) - before
    stop.set()
    t.join()
    # a held GIL would freeze the counter for the whole call
    assert during > 5, during


def test_threads_can_be_set():
    n = attend.get_num_threads()
    attend.set_num_threads(1)
    assert attend.get_num_threads() == 1
    attend.set_num_threads(n)
    with pytest.raises(ValueError):
        attend.set_num_threads(0)


def test_every_error_type():
    z = np.zeros((1, 2, 3, 4), np.float32)
    with pytest.raises(attend.ShapeError):
        attend.sdpa(z, np.zeros((1, 2, 3, 5), np.float32), z)
    with pytest.raises(ValueError):  # ShapeError is a ValueError
        attend.sdpa(z, z, np.zeros((1, 2, 4, 4), np.float32))
    with pytest.raises(attend.InvalidArgument):
        attend.sdpa(z, z, z, dropout_p=0.1)
    with pytest.raises(attend.InvalidArgument):
        attend.sdpa(z, z, z, scale=-1.0)
    with pytest.raises(attend.InvalidArgument):
        bad = z.copy()
        bad[0, 0, 0, 0] = np.nan
        attend.sdpa(bad, z, z)
    with pytest.raises(attend.InvalidArgument):
        attend.sdpa(z, z, z, attn_mask=np.ones((3, 3), bool), is_causal=True)
    with pytest.raises(attend.ShapeError):
        attend.sdpa(z, z, z, attn_mask=np.ones((5, 3), bool))
    with pytest.raises(TypeError):
        attend.sdpa(z, z, z, attn_mask=np.ones((3, 3), np.int32))
    with pytest.raises(TypeError):
        attend.sdpa(np.array([["a"]]), z, z)
    with pytest.raises(attend.ShapeError):
        attend.KVCache(0, 1, 4)
    with pytest.raises(attend.ModelError):
        attend.load("no-such-model")
    with pytest.raises(attend.ModelError):
        attend.load("/nonexistent/folder/model.gguf")
    # huge declared sizes never reach an allocation
    c = attend.KVCache(1, 1, 4)
    with pytest.raises(attend.ShapeError):
        c.append(np.zeros((1, 1, 2, 5), np.float32), np.zeros((1, 1, 2, 4), np.float32))


def test_key_padding_masks_take_the_key_lengths_path():
    rng = np.random.default_rng(8)
    q, k, v = rnd(rng, 3, 4, 6, 8), rnd(rng, 3, 4, 70, 8), rnd(rng, 3, 4, 70, 8)
    lengths = np.array([70, 13, 0])
    m = (np.arange(70)[None, :] < lengths[:, None])[:, None, None, :]
    got = attend.sdpa(q, k, v, attn_mask=m, causal="bottom_right")
    np.testing.assert_allclose(got, sdpa_ref(q, k, v, attn_mask=m, causal="bottom_right"), atol=TOL)
    assert np.all(got[2] == 0)
    w = attend.attention_weights(q, k, v, attn_mask=m)
    np.testing.assert_allclose(w, sdpa_ref(q, k, v, attn_mask=m, return_weights=True)[1], atol=TOL)
    out, lse = attend.sdpa(q, k, v, attn_mask=m, return_lse=True)
    g = attend.sdpa_backward(np.ones_like(out), q, k, v, out, lse, attn_mask=m)
    g2 = attend.sdpa_backward(
        np.ones_like(out), q, k, v, out, lse, attn_mask=np.broadcast_to(m, (3, 4, 6, 70)).copy()
    )
    for a, b in zip(g, g2):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_empty_inputs_give_empty_or_zero_results():
    z = lambda *s: np.zeros(s, np.float32)  # noqa: E731
    assert attend.sdpa(z(1, 2, 0, 4), z(1, 2, 3, 4), z(1, 2, 3, 5)).shape == (1, 2, 0, 5)
    out, lse = attend.sdpa(z(1, 2, 3, 4), z(1, 2, 0, 4), z(1, 2, 0, 5), return_lse=True)
    assert out.shape == (1, 2, 3, 5) and np.all(out == 0) and np.all(lse == -np.inf)
    assert attend.attention_weights(z(0, 2, 3, 4), z(0, 2, 3, 4), z(0, 2, 3, 4)).shape == (0, 2, 3, 3)


def test_hostile_sizes_are_errors_not_panics():
    from attend import _attend

    for make in [
        lambda: attend.KVCache(10**12, 10**6, 10**6),
        lambda: _attend.LayerCache(2**40, 2**40, 1, 1),
        lambda: _attend.forward(z4(), z4(), z4(), z4(), z4(), (2**32, 2**32, 1, 1, 1, 1, 1)),
        lambda: _attend.forward(z4(), z4(), z4(), z1(), z1(), (1, 1, 1, 1, 1, 1, 1), np.zeros(5, bool), 2),
        lambda: _attend.forward(z4(), z4(), z4(), z1(), z1(), (1, 1, 1, 1, 1, 1, 1), None, 0, (2**63, None)),
        # the output buffers: the wrong length, not contiguous
        lambda: _attend.forward(z1(), z1(), z1(), z4(), z1(), (1, 1, 1, 1, 1, 1, 1)),
        lambda: _attend.forward(z4(), z4(), z4(), np.zeros(8, np.float32)[::2], z1(), (1, 1, 1, 1, 1, 4, 4)),
    ]:
        with pytest.raises(attend.ShapeError):
            make()
    for bad in [0, 10**20, -3, 2.5, True]:
        with pytest.raises(ValueError):
            attend.set_num_threads(bad)


def z4():
    return np.zeros(4, np.float32)


def z1():
    return np.zeros(1, np.float32)


def test_extreme_windows_are_exact():
    rng = np.random.default_rng(9)
    q, k, v = rnd(rng, 1, 1, 4, 8), rnd(rng, 1, 1, 6, 8), rnd(rng, 1, 1, 6, 8)
    for window in [(2**63, None), (None, 2**64 - 1), (2**64 - 1, 0)]:
        got = attend.sdpa(q, k, v, window=window)
        np.testing.assert_allclose(got, sdpa_ref(q, k, v, window=window), atol=TOL)


def test_no_copy_in_or_out():
    from attend import _kernels

    a = np.zeros((2, 3, 4, 8), np.float32)
    assert _kernels._array(a, "q") is a  # float32 C-contiguous: used as it is
    b = np.zeros((2, 3, 4, 8), np.float64)
    assert _kernels._array(b, "q") is not b  # converted (documented)
    out = attend.sdpa(a, a, a)
    # the result is the array the kernel wrote into (made by numpy, uninitialised, and shaped
    # before the call), not a copy of a buffer of the kernel's
    assert out.flags.owndata and out.flags.c_contiguous and out.base is None
    import sys

    assert "torch" not in sys.modules or hasattr(sys.modules["torch"], "Tensor")


def test_top_left_causal_never_drops_a_mask_silently():
    z = np.zeros((1, 1, 2, 4), np.float32)
    k = np.zeros((1, 1, 5, 4), np.float32)
    with pytest.raises(attend.InvalidArgument):
        attend.sdpa(z, k, k, attn_mask=np.ones((2, 5), bool), causal="top_left")
    got = attend.sdpa(z + 1, k + 1, k + np.arange(5, dtype=np.float32)[:, None], causal="top_left")
    np.testing.assert_allclose(got, sdpa_ref(z + 1, k + 1, k + np.arange(5)[:, None], is_causal=True), atol=TOL)


def test_arguments_are_named_in_their_errors_never_bare():
    """Every bad argument is an attend error naming it (not a bare ValueError/OverflowError/
    IndexError from deeper down), and the private forward never panics."""
    from attend import _attend

    rng = np.random.default_rng(3)
    q, k, v = rnd(rng, 1, 2, 3, 8), rnd(rng, 1, 2, 4, 8), rnd(rng, 1, 2, 4, 8)
    for window in [(float("nan"), None), (None, float("inf")), ("3", None), (1.5, None), (-1, 0)]:
        with pytest.raises(attend.InvalidArgument, match="window"):
            attend.sdpa(q, k, v, window=window)
    cache = attend.KVCache(1, 2, 8)
    cache.append(k, v)
    for length in [-1, 2**64, float("nan"), 1.5, True]:
        with pytest.raises(attend.InvalidArgument, match="length"):
            cache.truncate(length)
    for window in [0, float("nan"), 2.5]:
        with pytest.raises(attend.InvalidArgument, match="window"):
            cache.attend(q, window=window)
    # lse: NaN or +inf, or -inf beside a row with output, is no forward's lse
    out, lse = attend.sdpa(q, k, v, return_lse=True)
    dout = np.ones_like(out)
    for bad in [np.nan, np.inf, -np.inf]:
        l = lse.copy()
        l[0, 0, 1] = bad
        with pytest.raises(attend.InvalidArgument, match="lse"):
            attend.sdpa_backward(dout, q, k, v, out, l)
    # the private forward: a read-only output, or one that is an input, is an error
    flat = [x.reshape(-1) for x in (q, k, v)]
    dims = (1, 2, 2, 3, 4, 8, 8)
    ro = np.zeros(48, np.float32)
    ro.flags.writeable = False
    for out_buf in [ro, flat[0]]:
        with pytest.raises(attend.InvalidArgument, match="out"):
            _attend.forward(*flat, out_buf, np.zeros(6, np.float32), dims)
    o = np.zeros(48, np.float32)
    with pytest.raises(attend.InvalidArgument, match="lse"):
        _attend.forward(*flat, o, o, dims)
