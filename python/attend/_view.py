"""``attend.view``: attention computed anywhere — a NumPy array, a torch tensor, transformers'
``output_attentions`` — in attend's viewer (the page ``attend explain`` writes), offline, in a
notebook or a file, with the same views, sinks, words, aggregations and queries."""

from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np

from . import _attend
from ._models import Explanation, Generation
from .errors import InvalidArgument, ShapeError, _integer


def _numpy(x, what: str) -> np.ndarray:
    """A NumPy array of ``x`` (a torch tensor on any device, in any float type, included)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu()
        if hasattr(x, "float"):
            x = x.float()
        x = x.numpy()
    try:
        return np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise ShapeError(f"{what} is not an array of numbers: {e}") from None


def _stack(attention, batch: int) -> np.ndarray:
    """``(layers, heads, queries, keys)`` from what people have: one array of that shape (or
    ``(layers, batch, heads, q, k)``, or ``(heads, q, k)`` for one layer), or a list / tuple
    with one entry per layer, each ``(batch, heads, q, k)`` (transformers'
    ``output_attentions``) or ``(heads, q, k)``."""
    if isinstance(attention, (list, tuple)):
        if not attention:
            raise ShapeError("the attention list is empty: give one array per layer")
        layers = []
        for i, a in enumerate(attention):
            if a is None:
                raise ShapeError(
                    f"layer {i} is None: transformers gives no attention weights with its SDPA kernel; "
                    "load the model with attn_implementation='eager'"
                )
            a = _numpy(a, f"layer {i}")
            if a.ndim == 4:
                if not 0 <= batch < a.shape[0]:
                    raise InvalidArgument(f"batch={batch}: layer {i} holds {a.shape[0]} sequences")
                a = a[batch]
            if a.ndim != 3:
                raise ShapeError(
                    f"layer {i} is {tuple(a.shape)}: each layer must be (batch, heads, queries, keys) "
                    "as transformers' output_attentions, or (heads, queries, keys)"
                )
            layers.append(a)
        shapes = {a.shape for a in layers}
        if len(shapes) != 1:
            raise ShapeError(f"the layers' shapes differ: {sorted(shapes)}")
        return np.stack(layers)
    a = _numpy(attention, "attention")
    if a.ndim == 5:
        if not 0 <= batch < a.shape[1]:
            raise InvalidArgument(f"batch={batch}: the attention holds {a.shape[1]} sequences")
        a = a[:, batch]
    elif a.ndim == 3:
        a = a[None]
    if a.ndim != 4:
        raise ShapeError(
            f"attention is {tuple(a.shape)}: give (layers, heads, queries, keys), "
            "(layers, batch, heads, queries, keys), (heads, queries, keys), or one array per layer"
        )
    return a


def view(
    attention,
    tokens: Sequence[str],
    *,
    batch: int = 0,
    kv_heads: Optional[int] = None,
    causal: Optional[bool] = None,
    model: str = "attention",
    atol: float = 1e-3,
) -> Union[Explanation, Generation]:
    """Attention computed elsewhere, in attend's viewer.

    ``attention``: a NumPy array or torch tensor ``(layers, heads, n, n)`` (also
    ``(heads, n, n)``, or ``(layers, batch, heads, n, n)`` with ``batch`` chosen), a list
    with one array per layer, or transformers' ``output_attentions`` tuple of
    ``(batch, heads, n, n)``; ``tokens``: the ``n`` token strings. Every row must be
    probabilities (finite, ≥ 0, summing to 1 within ``atol``). ``kv_heads``: the key/value
    heads of a grouped-query model (heads sharing one key head are grouped on the page);
    ``causal``: whether queries only see earlier keys (default: read from the weights).

    Square attention gives an :class:`Explanation` — ``html()``, ``save_html()``, the
    notebook frame, ``top``/``compare``/``atlas`` — the page ``attend explain`` writes.
    Rectangular rows ``(layers, heads, m, n)`` with ``m < n`` are the last ``m`` queries of a
    generation (each over the keys it saw; ``n + 1`` tokens: the text and the last token
    generated): a :class:`Generation` whose page is generation's view. Rollout and
    value-weighted norms need every row of a square attention; the page says so when they are
    missing."""
    a = _stack(attention, _integer("batch", batch))
    layers, heads, queries, keys = a.shape
    if min(a.shape) == 0:
        raise ShapeError(f"attention is {a.shape}: every size must be at least 1")
    if isinstance(tokens, str):
        raise InvalidArgument("tokens must be a list of strings, one per position")
    tokens = list(tokens)
    if not all(isinstance(t, str) for t in tokens):
        raise InvalidArgument("tokens must be a list of strings, one per position")
    square = queries == keys
    want = keys if square else keys + 1
    if queries > keys:
        raise ShapeError(f"attention has {queries} queries over {keys} keys: at most one row per key")
    if len(tokens) != want:
        raise ShapeError(
            f"{len(tokens)} tokens for attention over {keys} keys: "
            + (f"give {keys}" if square else f"rectangular rows are a generation's: give {keys + 1} (the text and the last generated token)")
        )
    kv = heads if kv_heads is None else _integer("kv_heads", kv_heads, 1, heads)
    if heads % kv:
        raise InvalidArgument(f"kv_heads={kv} does not divide the {heads} heads")
    atol = float(atol)
    if not atol >= 0:
        raise InvalidArgument(f"atol must be a number >= 0, not {atol!r}")

    def where(flat_index) -> str:
        l, h, q, k = np.unravel_index(flat_index, a.shape)
        return f"layer {l}, head {h}, query {q}, key {k}"

    bad = ~np.isfinite(a)
    if bad.any():
        i = int(np.argmax(bad))
        raise InvalidArgument(f"the attention holds {a.reshape(-1)[i]} at {where(i)}: weights must be finite")
    if (a < -atol).any():
        i = int(np.argmax(a < -atol))
        raise InvalidArgument(f"the attention holds {a.reshape(-1)[i]:.4g} at {where(i)}: weights are probabilities, >= 0")
    # what each row may see: everything (square, not causal), up to itself (causal), or up to
    # the position it predicted from (a generation's rows)
    qpos = np.arange(queries)[:, None] + (keys - queries)
    upper = np.arange(keys)[None, :] > qpos
    if square and causal is None:
        causal = bool((np.abs(a[..., upper]) <= atol).all())
    masked = upper if (causal or not square) else np.zeros_like(upper)
    if masked.any():
        past = np.abs(np.where(masked, a, 0.0))
        if (past > atol).any():
            i = int(np.argmax(past > atol))
            raise InvalidArgument(
                f"the attention holds {a.reshape(-1)[i]:.4g} at {where(i)}, after the query's own position"
                + (" (causal=True)" if square else " (a generation's row sees only the keys before it)")
            )
    sums = a.sum(-1)
    dev = np.abs(sums - 1.0)
    if (dev > atol).any():
        l, h, q = np.unravel_index(int(np.argmax(dev)), dev.shape)
        raise InvalidArgument(
            f"row (layer {l}, head {h}, query {q}) sums to {sums[l, h, q]:.6g}, not 1 "
            f"(off by {dev[l, h, q]:.3g}; atol={atol}): give attention probabilities (after the softmax)"
        )
    # (weights within atol below 0 are 0: the page takes logarithms of them)
    flat = np.ascontiguousarray(np.where(masked, 0.0, np.maximum(a, 0.0)), dtype=np.float32).reshape(-1)
    page = _attend.external_page(flat, tokens, layers, heads, kv, queries, keys, bool(causal))
    if square:
        infos = page.token_infos()
        return Explanation(
            model,
            {"tokens": infos, "layers": layers, "heads": heads, "kv_heads": kv, "truncated": False, "next": None, "page": page},
        )
    prompt = keys - queries + 1
    items = []
    for r in range(queries):
        seen = prompt + r
        items.append(
            {
                "id": 0,
                "text": tokens[prompt + r],
                "logprob": float("nan"),
                "bytes": tokens[prompt + r].encode("utf-8"),
                "attention": a[:, :, r, :seen].reshape(-1),
            }
        )
    return Generation(model, tokens[:prompt], items, layers, heads, page)
