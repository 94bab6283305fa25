"""attend's attention kernels with PyTorch's calling conventions.

Every function takes arrays shaped like ``torch.nn.functional.scaled_dot_product_attention``'s
(``(..., L, E)`` queries, ``(..., S, E)`` keys, ``(..., S, Ev)`` values) and turns them into the
flat ``[b, h, s, d]`` float32 buffers the Rust kernels read in place. NumPy float32
C-contiguous arrays are used without a copy; other dtypes and strides are converted (a copy);
CPU torch tensors are read through ``.numpy()`` (shared memory) and answered with torch
tensors that share the result's memory. Results are float32.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from . import _attend
from .errors import InvalidArgument, ShapeError, _integer

__all__ = [
    "sdpa",
    "scaled_dot_product_attention",
    "attention_weights",
    "sdpa_backward",
    "KVCache",
    "set_num_threads",
    "get_num_threads",
]


def set_num_threads(n: int) -> None:
    """Sets how many threads attend's kernels use (1 to 1024)."""
    if isinstance(n, bool) or int(n) != n or not 1 <= n <= 1024:
        raise InvalidArgument(f"set_num_threads({n!r}): give 1 to 1024 threads")
    _attend.set_num_threads(int(n))


def get_num_threads() -> int:
    """How many threads attend's kernels use."""
    return _attend.get_num_threads()


def _is_torch(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


def _array(x: Any, name: str) -> np.ndarray:
    """float32 C-contiguous, without a copy when it already is."""
    if _is_torch(x):
        if x.device.type != "cpu":
            raise InvalidArgument(f"`{name}` is on {x.device}; attend runs on the CPU")
        x = x.detach().numpy()
    a = np.asarray(x)
    if a.dtype != np.float32:
        if not np.issubdtype(a.dtype, np.floating):
            raise TypeError(f"`{name}` must hold floating-point numbers, not {a.dtype}")
        a = a.astype(np.float32)
    return np.ascontiguousarray(a)


def _answer(like: Any, a: np.ndarray) -> Any:
    """`a` as a torch tensor sharing its memory when the caller passed torch."""
    if _is_torch(like):
        import torch

        return torch.from_numpy(a)
    return a


class _Call:
    """One attention call's sizes, mask and options, checked and flattened."""

    def __init__(
        self,
        query,
        key,
        value,
        attn_mask=None,
        dropout_p=0.0,
        is_causal=False,
        scale=None,
        enable_gqa=False,
        causal=None,
        window=None,
        softcap=None,
    ):
        if dropout_p != 0.0:
            raise InvalidArgument(
                f"dropout_p = {dropout_p}: attend computes attention exactly; apply dropout "
                "to the output yourself"
            )
        self.like = query
        q, k, v = _array(query, "query"), _array(key, "key"), _array(value, "value")
        if q.ndim < 2 or k.ndim < 2 or v.ndim < 2:
            raise ShapeError("query, key and value need at least 2 dimensions (..., L, E)")
        if not (q.ndim == k.ndim == v.ndim):
            raise ShapeError(
                f"query, key and value have {q.ndim}, {k.ndim} and {v.ndim} dimensions"
            )
        L, E = q.shape[-2:]
        S, Ek = k.shape[-2:]
        Sv, Ev = v.shape[-2:]
        if Ek != E:
            raise ShapeError(f"query has head dim {E}, key {Ek}")
        if Sv != S:
            raise ShapeError(f"key has {S} positions, value {Sv}")
        self.two_d = q.ndim == 2
        if q.ndim == 2:
            lead, hq, hk, hv = (), 1, 1, 1
            q, k, v = q[None, None], k[None, None], v[None, None]
        else:
            hq, hk, hv = q.shape[-3], k.shape[-3], v.shape[-3]
            if hk != hv:
                raise ShapeError(f"key has {hk} heads, value {hv}")
            lead = tuple(q.shape[:-3])
            if tuple(k.shape[:-3]) != lead or tuple(v.shape[:-3]) != lead:
                try:
                    lead = tuple(np.broadcast_shapes(lead, k.shape[:-3], v.shape[:-3]))
                except ValueError:
                    raise ShapeError(
                        f"batch dimensions {q.shape[:-3]}, {k.shape[:-3]} and "
                        f"{v.shape[:-3]} do not broadcast"
                    ) from None
                q = np.ascontiguousarray(np.broadcast_to(q, lead + q.shape[-3:]))
                k = np.ascontiguousarray(np.broadcast_to(k, lead + k.shape[-3:]))
                v = np.ascontiguousarray(np.broadcast_to(v, lead + v.shape[-3:]))
        if hq != hk:
            if not enable_gqa:
                raise ShapeError(
                    f"query has {hq} heads and key {hk}: pass enable_gqa=True for grouped-query "
                    "attention"
                )
            if hk == 0 or hq % hk != 0:
                raise ShapeError(f"query heads {hq} must be a multiple of key heads {hk}")
        b = int(np.prod(lead, dtype=np.int64)) if lead else 1
        # nothing to compute (as torch: an empty result; no key at all: zeros, lse -inf)
        self.empty = b == 0 or hq == 0 or L == 0 or S == 0
        self.lead, self.hq, self.L, self.S, self.Ev = lead, hq, L, S, Ev
        self.q, self.k, self.v = q, k, v
        self.dims = (b, hq, hk, L, S, E, Ev)
        if scale is not None:
            scale = float(scale)
        self.scale = scale
        self.softcap = None if softcap is None else float(softcap)

        # the band: bottom-right causal, a window, or PyTorch's top-left causal
        left = right = None
        if window is not None:
            try:
                wl, wr = window
            except (TypeError, ValueError):
                raise InvalidArgument("window must be (left, right); None for an open side") from None
            # a side longer than any sequence is an open side
            wl, wr = (None if side is None else min(_integer("a window side", side, 0, 2**64 - 1), 2**62) for side in (wl, wr))
            left = None if wl is None or wl >= 2**62 else wl
            right = None if wr is None or wr >= 2**62 else wr
        if causal not in (None, "bottom_right", "top_left"):
            raise InvalidArgument(f"causal must be 'bottom_right' or 'top_left', not {causal!r}")
        top_left = bool(is_causal) or causal == "top_left"
        if top_left and causal == "bottom_right":
            raise InvalidArgument("is_causal=True is top-left causal; causal='bottom_right' contradicts it")
        if top_left and attn_mask is not None:
            # PyTorch refuses the pair too
            raise InvalidArgument("pass either attn_mask or a top-left causal mask, not both")
        extra = None
        if causal == "bottom_right":
            right = 0 if right is None else min(right, 0)
        elif top_left:
            if L == S or L > S:
                r = L - S
                right = r if right is None else min(right, r)
                if L != S and window is not None:
                    raise InvalidArgument(
                        "window is measured in bottom-right positions; combine it with "
                        "causal='bottom_right', not top-left is_causal, when L != S"
                    )
            else:
                if window is not None:
                    raise InvalidArgument(
                        "window is measured in bottom-right positions; combine it with "
                        "causal='bottom_right', not top-left is_causal, when L != S"
                    )
                extra = np.tril(np.ones((L, S), dtype=bool))
        self.window = (left, right)

        mask = attn_mask
        if mask is not None and _is_torch(mask):
            mask = mask.detach().numpy()
        if extra is not None:
            mask = extra
        self.mask, self.scope, self.key_lengths = None, 0, None
        if mask is not None:
            m = np.asarray(mask)
            if m.dtype != np.bool_:
                if not np.issubdtype(m.dtype, np.floating):
                    raise TypeError(f"attn_mask must be bool or floating-point, not {m.dtype}")
                m = m.astype(np.float32, copy=False)
            full = lead + (hq, L, S)
            if m.ndim > len(full):
                raise ShapeError(f"attn_mask {m.shape} has more dimensions than {full}")
            shape = (1,) * (len(full) - m.ndim) + tuple(m.shape)
            try:
                np.broadcast_shapes(shape, full)
            except ValueError:
                raise ShapeError(f"attn_mask {tuple(m.shape)} does not broadcast to {full}") from None
            m = m.reshape(shape)
            if m.dtype == np.bool_ and shape[-2] == 1 and shape[-3] == 1:
                # key padding (each batch row keeps a prefix of the keys): the kernel's key
                # lengths, which skip the padded tiles, instead of a mask buffer
                rows = np.broadcast_to(m, lead + (1, 1, S)).reshape(b, S)
                lengths = rows.sum(axis=1)
                if np.array_equal(rows, np.arange(S)[None, :] < lengths[:, None]):
                    self.key_lengths = lengths.tolist()  # Python ints
                    return
            if all(x == 1 for x in shape[:-2]):
                self.scope, m = 0, np.broadcast_to(m, (1,) * (len(full) - 2) + (L, S)).reshape(L, S)
            elif shape[-3] == 1:
                self.scope = 1
                m = np.broadcast_to(m, lead + (1, L, S)).reshape(b, L, S)
            else:
                self.scope = 2
                m = np.broadcast_to(m, full).reshape(b, hq, L, S)
            self.mask = np.ascontiguousarray(m)

    def shape(self, *last: int) -> tuple:
        """The result's shape: ``(..., Hq, L, *last)``, or ``(L, *last)`` for 2-D inputs."""
        if self.two_d:
            return (self.L,) + last
        return self.lead + (self.hq, self.L) + last

    def kwargs(self) -> dict:
        return dict(
            mask=self.mask,
            scope=self.scope,
            window=self.window,
            scale=self.scale,
            softcap=self.softcap,
            key_lengths=self.key_lengths,
        )


def sdpa(
    query,
    key,
    value,
    attn_mask=None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: Optional[float] = None,
    enable_gqa: bool = False,
    *,
    causal: Optional[str] = None,
    window: Optional[Tuple[Optional[int], Optional[int]]] = None,
    softcap: Optional[float] = None,
    return_lse: bool = False,
):
    """``torch.nn.functional.scaled_dot_product_attention``, on attend's fused kernel.

    Same arguments and semantics: shapes ``(..., L, E)``, masks broadcast as torch broadcasts
    them, a bool mask's True takes part, a float mask is added, ``is_causal`` aligned
    top-left; ``dropout_p`` other than 0 is refused. Keyword-only extras: ``causal=
    "bottom_right"`` (what a KV cache needs), ``window=(left, right)`` (a band in bottom-right
    positions), ``softcap=`` (scores become ``cap·tanh(score/cap)``), and ``return_lse=True``
    (then ``(out, lse)``, lse shaped ``(..., Hq, L)``). The one difference from torch: a row
    with every key masked gives zeros, not NaN.
    """
    c = _Call(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa, causal, window, softcap)
    if c.empty:
        out = np.zeros(c.shape(c.Ev), np.float32)
        lse = np.full(c.shape(), -np.inf, np.float32)
        return (_answer(c.like, out), _answer(c.like, lse)) if return_lse else _answer(c.like, out)
    out = np.empty(c.shape(c.Ev), np.float32)
    lse = np.empty(c.shape(), np.float32)
    _attend.forward(c.q, c.k, c.v, out, lse, c.dims, **c.kwargs())
    if return_lse:
        return _answer(c.like, out), _answer(c.like, lse)
    return _answer(c.like, out)


scaled_dot_product_attention = sdpa


def attention_weights(
    query,
    key,
    value,
    attn_mask=None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: Optional[float] = None,
    enable_gqa: bool = False,
    *,
    causal: Optional[str] = None,
    window: Optional[Tuple[Optional[int], Optional[int]]] = None,
    softcap: Optional[float] = None,
):
    """The exact attention probabilities ``(..., Hq, L, S)`` of the same call as :func:`sdpa`,
    recomputed from the fused kernel's log-sum-exp (masked pairs are exactly 0)."""
    c = _Call(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa, causal, window, softcap)
    if c.empty:
        return _answer(c.like, np.zeros(c.shape(c.S), np.float32))
    w = _attend.weights(c.q, c.k, c.v, c.dims, **c.kwargs())
    return _answer(c.like, w.reshape(c.shape(c.S)))


def sdpa_backward(
    grad_out,
    query,
    key,
    value,
    out,
    lse,
    attn_mask=None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: Optional[float] = None,
    enable_gqa: bool = False,
    *,
    causal: Optional[str] = None,
    window: Optional[Tuple[Optional[int], Optional[int]]] = None,
    softcap: Optional[float] = None,
):
    """``(dq, dk, dv)`` of :func:`sdpa` given ``grad_out = ∂L/∂out`` and the ``out, lse`` that
    ``sdpa(..., return_lse=True)`` returned for the same call (attend's fused backward)."""
    c = _Call(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa, causal, window, softcap)
    want_o = c.shape(c.Ev)
    g, o, l = _array(grad_out, "grad_out"), _array(out, "out"), _array(lse, "lse")
    for name, a, shape in (("grad_out", g, want_o), ("out", o, want_o), ("lse", l, want_o[:-1])):
        if tuple(a.shape) != tuple(shape):
            raise ShapeError(f"`{name}` is {tuple(a.shape)}, expected {tuple(shape)}")
    if c.empty:
        z = [np.zeros(x.shape, np.float32) for x in (c.q, c.k, c.v)]
        dq, dk, dv = z
        if c.two_d:
            dq, dk, dv = dq[0, 0], dk[0, 0], dv[0, 0]
        return _answer(c.like, dq), _answer(c.like, dk), _answer(c.like, dv)
    dq, dk, dv = _attend.backward(g, c.q, c.k, c.v, o, l, c.dims, **c.kwargs())
    dq, dk, dv = dq.reshape(c.q.shape), dk.reshape(c.k.shape), dv.reshape(c.v.shape)
    if c.two_d:
        dq, dk, dv = dq[0, 0], dk[0, 0], dv[0, 0]
    return _answer(c.like, dq), _answer(c.like, dk), _answer(c.like, dv)


class KVCache:
    """Keys and values of one attention layer, for decoding a few queries at a time.

    ``append(key, value)`` takes ``(B, H, n, D)`` / ``(B, H, n, Dv)``; ``attend(query)`` takes
    ``(B, Hq, m, D)`` (``Hq`` a multiple of ``H``) and attends over every stored position,
    bottom-right causal by default (the queries are the last ``m`` positions)."""

    def __init__(self, batch: int, kv_heads: int, head_dim: int, value_dim: Optional[int] = None):
        dv = head_dim if value_dim is None else value_dim
        for name, x in (("batch", batch), ("kv_heads", kv_heads), ("head_dim", head_dim), ("value_dim", dv)):
            if int(x) != x or x < 1:
                raise ShapeError(f"{name} must be a positive integer, not {x!r}")
        self._c = _attend.LayerCache(int(batch), int(kv_heads), int(head_dim), int(dv))
        self.batch, self.kv_heads, self.head_dim, self.value_dim = int(batch), int(kv_heads), int(head_dim), int(dv)

    def __len__(self) -> int:
        return len(self._c)

    def append(self, key, value) -> None:
        k, v = _array(key, "key"), _array(value, "value")
        want = (self.batch, self.kv_heads)
        if k.ndim != 4 or tuple(k.shape[:2]) != want or k.shape[3] != self.head_dim:
            raise ShapeError(f"key is {tuple(k.shape)}, expected ({self.batch}, {self.kv_heads}, n, {self.head_dim})")
        n = k.shape[2]
        if v.ndim != 4 or tuple(v.shape) != (self.batch, self.kv_heads, n, self.value_dim):
            raise ShapeError(f"value is {tuple(v.shape)}, expected ({self.batch}, {self.kv_heads}, {n}, {self.value_dim})")
        self._c.append(k, v, n)

    def attend(
        self,
        query,
        *,
        causal: bool = True,
        scale: Optional[float] = None,
        softcap: Optional[float] = None,
        window: Optional[int] = None,
        return_lse: bool = False,
    ):
        """Attention of ``query`` ``(B, Hq, m, D)`` over the cache: ``(B, Hq, m, Dv)``.
        ``window``: each query sees at most this many positions, its own included."""
        q = _array(query, "query")
        if q.ndim != 4 or q.shape[0] != self.batch or q.shape[3] != self.head_dim:
            raise ShapeError(f"query is {tuple(q.shape)}, expected ({self.batch}, Hq, m, {self.head_dim})")
        hq, m = q.shape[1], q.shape[2]
        left = None
        if window is not None:
            left = min(_integer("window", window, 1, 2**64 - 1), 2**62) - 1
        out, lse = self._c.attend(q, hq, m, causal, scale, softcap, left)
        out = _answer(query, out.reshape(self.batch, hq, m, self.value_dim))
        if return_lse:
            return out, _answer(query, lse.reshape(self.batch, hq, m))
        return out

    def truncate(self, length: int) -> None:
        """Keeps the first ``length`` positions."""
        self._c.truncate(_integer("length", length))

    def reset(self) -> None:
        """Forgets every position."""
        self._c.reset()
