"""A NumPy port of the reference math in torch's documentation of
``scaled_dot_product_attention`` (float64), with attend's extras written from their
definitions: bottom-right causal, a band ``window=(left, right)`` in bottom-right positions,
and soft-capping. A row with every key masked gives zeros (torch gives NaN; attend differs
there on purpose)."""

import numpy as np


def keep_matrix(L, S, is_causal=False, causal=None, window=None):
    keep = np.ones((L, S), dtype=bool)
    i = np.arange(L)[:, None]
    j = np.arange(S)[None, :]
    if is_causal or causal == "top_left":
        keep &= j <= i
    p = S - L + i  # bottom-right position of query i
    if causal == "bottom_right":
        keep &= j <= p
    if window is not None:
        # any side past the sequence is the same as an open side (and fits in int64)
        left, right = (None if x is None else min(x, 1 << 40) for x in window)
        if left is not None:
            keep &= j >= p - left
        if right is not None:
            keep &= j <= p + right
    return keep


def sdpa_ref(q, k, v, attn_mask=None, is_causal=False, scale=None, enable_gqa=False,
             causal=None, window=None, softcap=None, return_weights=False):
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    L, S = q.shape[-2], k.shape[-2]
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    if enable_gqa and q.ndim >= 3 and q.shape[-3] != k.shape[-3]:
        rep = q.shape[-3] // k.shape[-3]
        k = np.repeat(k, rep, axis=-3)
        v = np.repeat(v, rep, axis=-3)
    s = (q @ np.swapaxes(k, -1, -2)) * scale
    if softcap is not None:
        s = softcap * np.tanh(s / softcap)
    keep = np.broadcast_to(keep_matrix(L, S, is_causal, causal, window), s.shape)
    bias = np.zeros(s.shape)
    if attn_mask is not None:
        m = np.asarray(attn_mask)
        if m.dtype == np.bool_:
            keep = keep & np.broadcast_to(m, s.shape)
        else:
            bias = bias + np.broadcast_to(m.astype(np.float64), s.shape)
    z = np.where(keep, s + bias, -np.inf)
    mx = z.max(axis=-1, keepdims=True)
    dead = ~np.isfinite(mx)
    e = np.exp(z - np.where(dead, 0.0, mx))
    e = np.where(dead, 0.0, e)
    tot = e.sum(axis=-1, keepdims=True)
    w = e / np.where(tot == 0, 1.0, tot)
    out = w @ v
    if return_weights:
        return out, w
    return out
