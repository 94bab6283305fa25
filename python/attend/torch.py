"""``attend.torch.scaled_dot_product_attention``: attend's fused forward and backward as a
``torch.autograd.Function``, usable in a training loop. torch is imported only here."""

from __future__ import annotations

import torch

from . import _kernels

__all__ = ["scaled_dot_product_attention"]


class _SDPA(torch.autograd.Function):
    @staticmethod
    def forward(ctx, query, key, value, attn_mask, is_causal, scale, enable_gqa, causal, window, softcap):
        kw = dict(is_causal=is_causal, scale=scale, enable_gqa=enable_gqa, causal=causal, window=window, softcap=softcap)
        q, k, v = (t.detach().contiguous().float() for t in (query, key, value))
        out, lse = _kernels.sdpa(q, k, v, attn_mask, **kw, return_lse=True)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.attn_mask = attn_mask
        ctx.kw = kw
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = _kernels.sdpa_backward(
            grad_out.detach().contiguous().float(), q, k, v, out, lse, ctx.attn_mask, **ctx.kw
        )
        return dq, dk, dv, None, None, None, None, None, None, None


def scaled_dot_product_attention(
    query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False,
    *, causal=None, window=None, softcap=None,
):
    """Same as :func:`attend.sdpa`, differentiable: gradients flow to ``query``, ``key`` and
    ``value`` through attend's fused backward (the mask gets none)."""
    if dropout_p != 0.0:
        from .errors import InvalidArgument

        raise InvalidArgument("dropout_p must be 0: attend computes attention exactly")
    return _SDPA.apply(query, key, value, attn_mask, is_causal, scale, enable_gqa, causal, window, softcap)
