"""attend against PyTorch: golden outputs and gradients made by scripts/golden_torch_sdpa.py
(always run), and live comparisons when torch is importable (skipped when it is not: torch
from PyPI is several GB, so CI does not install it)."""

import os

import numpy as np
import pytest

import attend

TORCH_WHY = ("the live comparisons need PyTorch (pip install torch); the golden outputs of "
             "PyTorch in this file run without it")

GOLDEN = np.load(os.path.join(os.path.dirname(__file__), "golden", "torch_sdpa.npz"))
NAMES = sorted({k.split(".")[0] for k in GOLDEN.files})
KW = {
    "plain": {},
    "gqa_causal_top_left_L_lt_S": dict(is_causal=True, enable_gqa=True),
    "gqa_causal_top_left_L_gt_S": dict(is_causal=True, enable_gqa=True),
    "bool_mask_broadcast": {},
    "float_mask_shared": dict(scale=0.2),
    "three_d": {},
}


@pytest.mark.parametrize("name", NAMES)
def test_golden_outputs_and_gradients_of_torch(name):
    g = {k.split(".")[1]: GOLDEN[k] for k in GOLDEN.files if k.startswith(name + ".")}
    kw = dict(KW[name])
    if "mask" in g:
        kw["attn_mask"] = g["mask"]
    out, lse = attend.sdpa(g["q"], g["k"], g["v"], return_lse=True, **kw)
    np.testing.assert_allclose(out, g["out"], atol=2e-5)
    dq, dk, dv = attend.sdpa_backward(g["dout"], g["q"], g["k"], g["v"], out, lse, **kw)
    for mine, theirs in ((dq, g["dq"]), (dk, g["dk"]), (dv, g["dv"])):
        np.testing.assert_allclose(mine, theirs, atol=5e-5)


def test_live_torch_tensors_in_and_out_sharing_memory():
    torch = pytest.importorskip("torch", reason=TORCH_WHY)
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 4, 33, 16, generator=gen) for _ in range(3))
    m = torch.rand(2, 1, 33, 33, generator=gen) > 0.4
    out = attend.sdpa(q, k, v, attn_mask=m)
    assert isinstance(out, torch.Tensor)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=m), atol=2e-5, rtol=1e-4)
    # the tensor shares the result's memory (no copy on the way out)
    arr = out.numpy()
    assert arr.ctypes.data == out.data_ptr()


def test_live_autograd_function_matches_torch():
    torch = pytest.importorskip("torch", reason=TORCH_WHY)
    import attend.torch as at
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(2)
    shapes = [(1, 6, 20, 8), (1, 2, 20, 8), (1, 2, 20, 8)]
    a = [torch.randn(s, generator=gen, requires_grad=True) for s in shapes]
    b = [t.detach().clone().requires_grad_(True) for t in a]
    o1 = at.scaled_dot_product_attention(*a, is_causal=True, enable_gqa=True)
    o2 = F.scaled_dot_product_attention(*b, is_causal=True, enable_gqa=True)
    do = torch.randn(o1.shape, generator=gen)
    (o1 * do).sum().backward()
    (o2 * do).sum().backward()
    torch.testing.assert_close(o1, o2, atol=2e-5, rtol=1e-4)
    for x, y in zip(a, b):
        torch.testing.assert_close(x.grad, y.grad, atol=5e-5, rtol=1e-4)
