"""Writes python/tests/golden/torch_sdpa.npz: inputs, outputs and gradients of PyTorch's
scaled_dot_product_attention (CPU, float32) on a few small cases, for attend.sdpa's tests.

    python -m pip install torch numpy   # a separate environment is fine
    python scripts/golden_torch_sdpa.py
"""

import os

import numpy as np
import torch
import torch.nn.functional as F

CASES = {
    "plain": dict(shape=((2, 4, 9, 8), (2, 4, 9, 8), (2, 4, 9, 8)), kw={}),
    "gqa_causal_top_left_L_lt_S": dict(shape=((1, 6, 5, 16), (1, 2, 12, 16), (1, 2, 12, 8)), kw=dict(is_causal=True, enable_gqa=True)),
    "gqa_causal_top_left_L_gt_S": dict(shape=((1, 4, 12, 8), (1, 2, 5, 8), (1, 2, 5, 8)), kw=dict(is_causal=True, enable_gqa=True)),
    "bool_mask_broadcast": dict(shape=((2, 3, 7, 8), (2, 3, 10, 8), (2, 3, 10, 8)), kw={}, mask=("bool", (2, 1, 7, 10))),
    "float_mask_shared": dict(shape=((2, 3, 7, 8), (2, 3, 10, 8), (2, 3, 10, 8)), kw=dict(scale=0.2), mask=("float", (7, 10))),
    "three_d": dict(shape=((3, 6, 8), (3, 11, 8), (3, 11, 4)), kw={}),
}


def main():
    g = torch.Generator().manual_seed(0)
    out = {}
    for name, c in CASES.items():
        q, k, v = (torch.randn(s, generator=g, requires_grad=True) for s in c["shape"])
        kw = dict(c["kw"])
        if "mask" in c:
            kind, ms = c["mask"]
            if kind == "bool":
                m = torch.rand(ms, generator=g) > 0.3
            else:
                m = torch.randn(ms, generator=g)
            kw["attn_mask"] = m
            out[f"{name}.mask"] = m.numpy()
        o = F.scaled_dot_product_attention(q, k, v, **kw)
        do = torch.randn(o.shape, generator=g)
        o.backward(do)
        for key, t in dict(q=q, k=k, v=v, out=o, dout=do, dq=q.grad, dk=k.grad, dv=v.grad).items():
            out[f"{name}.{key}"] = t.detach().numpy()
    path = os.path.join(os.path.dirname(__file__), "..", "python", "tests", "golden", "torch_sdpa.npz")
    np.savez_compressed(path, **out)
    print(f"wrote {path} with torch {torch.__version__}")


if __name__ == "__main__":
    main()
