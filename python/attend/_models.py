"""Models: ``attend.load(name_or_path)`` gives an :class:`Encoder` (MiniLM and BERT-family
folders) or a :class:`CausalLM` (SmolLM2, GGUF decoders, models attend trained)."""

from __future__ import annotations

import html
import itertools
import json
import os
import secrets
from typing import Dict, Iterator, List, Optional, Sequence, Union

import numpy as np

from . import _attend
from .errors import InvalidArgument, _integer, _real

__all__ = ["load", "Encoder", "CausalLM", "Explanation", "Effect", "Generation"]

_ids = itertools.count()


def load(name_or_path: str, int8: bool = False):
    """A model by name (fetched into attend's cache on first use, verified by SHA-256) or by
    path: an :class:`Encoder` or a :class:`CausalLM`. ``int8=True`` (sentence encoders only)
    quantises the encoder's linear layers to 8 bits, as ``attend embed --int8``."""
    name = str(name_or_path)
    if not isinstance(int8, bool):
        raise TypeError("int8 is True or False")
    # attend-models decides what a name or path is (raises ModelError for neither)
    if _attend.model_kind(name) == "encoder":
        return Encoder(name, int8=int8)
    if int8:
        raise InvalidArgument(
            f"int8 is for sentence encoders; `{name}` is a causal model whose weights are used "
            "as its file stores them"
        )
    return CausalLM(name)


class Explanation:
    """Who attends to whom in one text: ``tokens`` (their texts), ``attention``
    (``np.ndarray[layers, heads, n, n]``, float32, rows sum to 1), ``next`` (a causal model's
    three likeliest next tokens with their probabilities, else None), and helpers.

    The weights live in attend's compact trace (a causal model keeps each row only over the
    keys it sees); ``attention`` makes the dense array on first use — ``layers × heads × n²``
    floats, 4.5 GB for SmolLM2 on 2 048 tokens —, while ``head(layer, head)``, ``top``,
    ``compare``, ``atlas`` and the viewer read the trace itself."""

    def __init__(self, model: str, trace: dict):
        self.model = model
        self.token_info: List[Dict] = [
            {"id": i, "text": t, "start": s, "end": e} for (i, t, s, e) in trace["tokens"]
        ]
        self.tokens: List[str] = [t["text"] for t in self.token_info]
        self.layers: int = trace["layers"]
        self.heads: int = trace["heads"]
        self.kv_heads: int = trace["kv_heads"]
        self.truncated: bool = trace["truncated"]
        self.next: Optional[List] = trace["next"]
        self._page = trace["page"]
        self._dense: Optional[np.ndarray] = None

    @property
    def attention(self) -> np.ndarray:
        """Every weight, ``np.ndarray[layers, heads, n, n]`` (made on first use)."""
        if self._dense is None:
            n = len(self.tokens)
            self._dense = self._page.dense().reshape(self.layers, self.heads, n, n)
        return self._dense

    def head(self, layer: int, head: int) -> np.ndarray:
        """One head's ``[query][key]`` weights, ``np.ndarray[n, n]``."""
        n = len(self.tokens)
        h = self._head(head)
        if h is None:
            raise InvalidArgument("head must be a head number here, not 'mean'")
        return self._page.matrix(self._layer(layer), h).reshape(n, n)

    def __len__(self) -> int:
        return len(self.tokens)

    def index(self, token: Union[int, str]) -> int:
        """A token by position, or by text as ``attend explain --token`` finds it (the first
        match; surrounding spaces, one ``##`` and case aside)."""
        if isinstance(token, (bool, np.bool_)):
            raise InvalidArgument(f"a token is a position or a text, not {token!r}")
        if isinstance(token, (int, np.integer)):
            if not 0 <= int(token) < len(self.tokens):
                raise InvalidArgument(f"token {token} is out of range 0..{len(self.tokens) - 1}")
            return int(token)
        if not isinstance(token, str):
            raise InvalidArgument(f"a token is a position or a text, not {token!r}")
        return self._page.index(token)

    def _layer(self, layer: int) -> int:
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not -self.layers <= layer < self.layers:
            raise InvalidArgument(f"layer must be -{self.layers}..{self.layers - 1}, not {layer!r}")
        return int(layer) % self.layers

    def _head(self, head: Union[int, str]) -> Optional[int]:
        if isinstance(head, str) and head == "mean":
            return None
        if isinstance(head, bool) or not isinstance(head, (int, np.integer)) or not -self.heads <= head < self.heads:
            raise InvalidArgument(f"head must be 'mean' or 0..{self.heads - 1}, not {head!r}")
        return int(head) % self.heads

    def top(self, token: Union[int, str], k: int = 5, layer: int = -1, head: Union[int, str] = "mean"):
        """The ``k`` tokens ``token`` attends to most in ``layer`` (one head, or the mean of
        its heads): ``[(text, weight), ...]``, as ``attend explain --token`` lists them."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise InvalidArgument(f"k must be a count of tokens, not {k!r}")
        pairs = self._page.top(self._layer(layer), self._head(head), self.index(token), int(k))
        return [(self.tokens[j], float(w)) for j, w in pairs]

    def compare(self, token: Union[int, str], a: Union[int, str], b: Union[int, str]):
        """For every layer × head, the weight ``token`` gives ``a`` and ``b``, sorted by
        ``|a − b|`` (the CLI's ``--compare`` table, computed by the same code): a list of
        dicts."""
        q, ia, ib = self.index(token), self.index(a), self.index(b)
        return [{"layer": l, "head": h, "a": float(x), "b": float(y)} for l, h, x, y in self._page.compare(q, ia, ib)]

    def to_json(self) -> str:
        """The JSON of ``attend explain --format json`` for the same text (made by the same
        code)."""
        return self._page.to_json(self.model)

    def html(self, compare=None) -> str:
        """The viewer — one self-contained HTML page (no network request), as
        ``attend explain --format html`` writes it; ``compare=(token, a, b)`` opens the
        comparison with that question."""
        c = None
        if compare is not None:
            q, a, b = compare
            c = (self.index(q), self.index(a), self.index(b))
        return self._page.html(self.model, c)

    def atlas(self) -> Dict:
        """The head atlas: ``sinks`` (positions) and, per head (layer-major arrays of
        ``layers × heads``), ``layer``, ``head``, ``kv_head``, ``entropy`` (bits),
        ``sink_share``, ``prev_token`` and ``distance`` — the viewer's numbers."""
        return self._page.atlas()

    def _repr_html_(self) -> str:
        return _frame(self.html())

    def save_html(self, path, compare=None) -> None:
        """Writes :meth:`html` to ``path`` (whole or not at all)."""
        _write_atomic(path, self.html(compare))


# The frame's height before its viewer has said how tall it is (and where no script runs, as in
# an untrusted notebook), and the bounds of what a viewer's message can set.
_FRAME_HEIGHT = 600
_FRAME_MIN, _FRAME_MAX = 300, 4000

# The host's half of the sizing: the viewer (viewer.js) posts {attendViewer: 'height', height}
# to its parent after each draw and on resize; this sets the height of the one frame whose
# window sent it (event.source: the sandboxed page cannot know the frame's id, and no other
# frame's messages count), within the bounds, and answers {attendViewer: 'sizing'} so that the
# viewer drops its viewport-relative caps. It stops listening once the frame is gone.
# tests/browser/viewer.test.mjs reads this text from this file.
_FRAME_SCRIPT = """(function () {
  var id = '__ID__', s = document.currentScript, f = s && s.previousElementSibling;
  if (!f || f.id !== id) f = document.getElementById(id);
  if (!f) return;
  function on(e) {
    if (!f.isConnected) { window.removeEventListener('message', on); return; }
    var d = e.data;
    if (e.source !== f.contentWindow || !d || d.attendViewer !== 'height') return;
    var h = Number(d.height);
    if (!isFinite(h) || h <= 0) return;
    f.style.height = Math.round(Math.min(__MAX__, Math.max(__MIN__, h))) + 'px';
    e.source.postMessage({ attendViewer: 'sizing' }, '*');
  }
  window.addEventListener('message', on);
})();"""


def _frame(page: str) -> str:
    """A page inside a notebook: its own sandboxed frame (scripts run, nothing else leaks in
    or out; two viewers in one notebook never interfere), sized to its content by the script
    beside it (the viewer posts its height; see ``_FRAME_SCRIPT``)."""
    # unique across kernels too: an output of an earlier session may still hold attend-0
    fid = f"attend-{next(_ids)}-{secrets.token_hex(4)}"
    script = (
        _FRAME_SCRIPT.replace("__ID__", fid)
        .replace("__MIN__", str(_FRAME_MIN))
        .replace("__MAX__", str(_FRAME_MAX))
    )
    return (
        f"<iframe id='{fid}' name='{fid}' sandbox='allow-scripts' srcdoc=\"{html.escape(page, quote=True)}\" "
        f"style='width:100%;height:{_FRAME_HEIGHT}px;border:1px solid #ddd' title='attend viewer'></iframe>"
        f"<script>{script}</script>"
    )


def _write_atomic(path, text: str) -> None:
    """The page to ``path`` through attend's one output writer (the CLI's ``-o``): a regular
    file replaced whole, keeping its mode; a new file ``0666 & ~umask``; a link written through;
    a device or FIFO written in place; a folder refused with ``OSError``."""
    if os.fspath(path) == "-":
        # (Python's standard output: a notebook's cell, not the kernel's descriptor 1)
        import sys

        sys.stdout.write(text)
        return
    _attend.write_output(os.fspath(path), text.encode("utf-8"))


class Effect:
    """Attention beside its causal effect for one prediction (``CausalLM.effect``) or one
    sentence embedding (``Encoder.effect``: ``delta`` is then 1 − cos to the unedited
    embedding, ``measure == "embedding"``, and there is no target).

    ``sources`` (token or word texts), ``positions``, ``delta`` (Δ log p(target) with each
    source knocked out; negative: it supported the target), ``attention`` (the predicting
    position's attention to it, mean of heads and layers), ``layer_attention``
    (``[sources, layers]``), ``rollout``, ``head_delta`` (``[layers, heads]``, Δ log p with
    each head ablated), ``spearman`` (rank correlation of attention and rollout with
    |Δ log p|), ``target``, ``logp`` and ``top`` (the likeliest next token unedited)."""

    def __init__(self, model: str, doc: dict, page=None):
        self.model = model
        self.doc = doc
        self._page = page
        self.measure: str = doc.get("measure", "logp")
        src = doc["sources"]
        self.tokens: List[str] = doc["tokens"]
        self.sources: List[str] = [s["label"] for s in src]
        self.positions: List[List[int]] = [s["positions"] for s in src]
        self.delta = np.array([s["delta"] for s in src], dtype=np.float32)
        self.attention = np.array([s["attention"] for s in src], dtype=np.float32)
        self.rollout = np.array([s["rollout"] for s in src], dtype=np.float32)
        self.layer_attention = np.array([s["layer_attention"] for s in src], dtype=np.float32).reshape(
            len(src), doc["layers"]
        )
        self.removes_edges = np.array([s["removes_edges"] for s in src], dtype=bool)
        self.top_after: List[str] = [s["top"] for s in src]
        hd = np.array(doc["head_delta"], dtype=np.float32)
        self.head_delta = hd.reshape(doc["layers"], doc["heads"]) if hd.size else hd.reshape(0, doc["heads"])
        self.target: str = "".join(doc["target"])
        #: log p(target) and the likeliest next token unedited (``None`` for an encoder)
        self.logp: Optional[float] = doc["logp"]
        self.top: Optional[tuple] = (doc["top"]["token"], doc["top"]["p"]) if doc["top"] else None
        #: whose attention ``attention`` is: ``"predicting"``, ``"cls"`` or ``"every_query"``
        self.attention_from: str = doc.get("attention_from", "predicting")
        #: whether the text was cut at the model's length limit (encoders truncate)
        self.truncated: bool = bool(doc.get("truncated", False))
        self.spearman: Dict[str, Optional[float]] = doc["spearman"]

    def heads_by_effect(self, k: int = 10) -> List[tuple]:
        """The ``k`` heads with the largest |Δ log p|: ``(layer, head, delta)``."""
        return [(h["layer"], h["head"], h["delta"]) for h in self.doc["heads_by_effect"][:k]]

    def to_json(self) -> str:
        return json.dumps(self.doc)

    def html(self) -> str:
        """The viewer of the prompt opened on its effect view (per-source bars of attention
        and Δ log p, the head-ablation grid; click a head to open it): one self-contained page,
        as ``attend effect --format html`` writes it."""
        if self._page is None:
            raise InvalidArgument("this Effect was made from JSON alone and has no attention to show")
        return self._page.html(self.model, None)

    def save_html(self, path) -> None:
        """Writes :meth:`html` to ``path`` (whole or not at all)."""
        _write_atomic(path, self.html())

    def _repr_html_(self) -> str:
        return self._table() + (_frame(self.html()) if self._page is not None else "")

    def _table(self) -> str:
        esc = html.escape
        decoder = self.measure == "logp"
        amax = float(self.attention.max()) if self.attention.size else 1.0
        dmax = float(np.abs(self.delta).max()) if self.delta.size else 1.0
        amax, dmax = amax or 1.0, dmax or 1.0

        def bar(x, m, colour):
            w = 100.0 * min(abs(x) / m, 1.0)
            return (f'<div style="background:{colour};height:10px;width:{w:.1f}px"></div>')

        rows = []
        for i, s in enumerate(self.sources):
            d = float(self.delta[i])
            shown = f"{d:+.3f}" if decoder else f"{d:.4f}"
            colour = "#d8563b" if (d < 0 or not decoder) else "#3bb273"
            rows.append(
                f"<tr><td>{self.positions[i][0]}</td><td><code>{esc(s)}</code></td>"
                f"<td>{self.attention[i]:.4f}</td><td>{bar(self.attention[i], amax, '#3b7dd8')}</td>"
                f"<td>{shown if self.removes_edges[i] else '—'}</td><td>{bar(d, dmax, colour)}</td>"
                + (f"<td><code>{esc(self.top_after[i])}</code></td>" if decoder else "")
                + "</tr>"
            )
        heads = "".join(
            f"<li>layer {l} head {h}: {d:+.3f}</li>" if decoder else f"<li>layer {l} head {h}: {d:.4f}</li>"
            for (l, h, d) in self.heads_by_effect(5)
        )
        rho = self.spearman
        fmt = lambda r: "—" if r is None else f"{r:+.2f}"  # noqa: E731
        name = esc(self.doc.get("delta_name", "Δ log p"))
        return (
            f"<div><b>{esc(self.model)}</b>: "
            + (f"log p(<code>{esc(self.target)}</code>) = {self.logp:.3f}; " if decoder
               else "the sentence embedding (1 − cos to the unedited one); ")
            + f"Spearman with |{name}|: attention {fmt(rho['attention'])}, rollout {fmt(rho['rollout'])}"
            + f"<table><tr><th>pos</th><th>source</th><th>attention</th><th></th><th>{name}</th><th></th>"
            + ("<th>top-1 after</th>" if decoder else "")
            + f"</tr>{''.join(rows)}</table>"
            + (f"<p>heads by effect:</p><ul>{heads}</ul>" if heads else "")
            + "</div>"
        )


class Encoder:
    """A BERT-family sentence encoder. With ``int8=True`` its linear layers are quantised to
    8 bits (``Q8_0`` weights smoothed on calibration text, activations quantised per row,
    integer dot products): faster, and within cosine 0.999 of the float32 embeddings on every
    text attend's tests try. ``explain`` and ``effect`` of an int8 encoder show the quantised
    model's attention and effects (``attend explain`` and ``attend effect`` load float32)."""

    def __init__(self, name_or_path: str, int8: bool = False):
        self.name = str(name_or_path)
        if not isinstance(int8, bool):
            raise TypeError("int8 is True or False")
        self.int8 = int8
        self._m = _attend.Encoder(self.name, int8)

    @property
    def max_len(self) -> int:
        """Longest input in tokens; longer texts are truncated."""
        return self._m.max_len

    def embed(self, texts: Union[str, Sequence[str]]) -> np.ndarray:
        """Sentence embeddings, ``np.ndarray[n, dim]`` float32 (as ``attend embed``)."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("embed takes a string or a sequence of strings")
        if not texts:
            raise InvalidArgument("no text to embed")
        flat, dim = self._m.embed(texts)
        return flat.reshape(len(texts), dim)

    def effect(self, text: str, layers: Optional[Sequence[int]] = None, words: bool = False, heads: bool = True) -> "Effect":
        """Does the attention matter to the sentence embedding? Each token of ``text`` (each
        word with ``words=True``) knocked out — its key hidden from every query, in every layer
        or in ``layers=(first, end)`` — and each head zero-ablated: ``delta`` is 1 − cos between
        the edited and the unedited embedding, beside the attention the token receives (mean
        over every query and head; ``[CLS]``'s with CLS pooling), as ``attend effect --model
        minilm`` computes it."""
        if not isinstance(text, str):
            raise TypeError("effect takes a string")
        span = None
        if layers is not None:
            a, b = (int(x) for x in layers)
            span = (a, b)
        doc, page = self._m.effect(text, span, bool(words), bool(heads))
        return Effect(self.name, json.loads(doc), page)

    def explain(self, text: str) -> Explanation:
        """The attention of every layer and head over ``text``."""
        if not isinstance(text, str):
            raise TypeError("explain takes a string")
        return Explanation(self.name, self._m.explain(text))


class Generation:
    """A generated continuation: ``text``, ``ids``, ``tokens``, ``logprobs`` and, with
    ``explain=True``, ``attention``: per generated token, ``np.ndarray[layers, heads, keys]``
    — the row of the position that predicted it, from the KV cache that produced it."""

    def __init__(self, model: str, prompt_tokens: List[str], items: List[dict], layers: int, heads: int, page=None):
        self.model = model
        self._page = page
        self.prompt_tokens = prompt_tokens
        self.ids = [t["id"] for t in items]
        self.tokens = [t["text"] for t in items]
        self.logprobs = [t["logprob"] for t in items]
        self.text = b"".join(t["bytes"] for t in items).decode("utf-8", errors="replace")
        self.attention: Optional[List[np.ndarray]] = None
        if items and "attention" in items[0]:
            self.attention = [t["attention"].reshape(layers, heads, -1) for t in items]

    def __repr__(self) -> str:
        return f"Generation({self.text!r})"

    def html(self) -> str:
        """The viewer of this generation (needs ``explain=True``): one self-contained page, as
        ``attend generate --format html`` writes it."""
        if self._page is None:
            raise InvalidArgument("generate(..., explain=True) keeps the attention the viewer shows")
        return self._page.html(self.model, None)

    def _repr_html_(self) -> str:
        if self._page is None:
            return f"<pre>{html.escape(self.text)}</pre>"
        return _frame(self.html())

    def save_html(self, path) -> None:
        """Writes :meth:`html` to ``path`` (whole or not at all)."""
        _write_atomic(path, self.html())


class CausalLM:
    """A causal language model."""

    def __init__(self, name_or_path: str):
        self.name = str(name_or_path)
        self._m = _attend.CausalLM(self.name)

    @property
    def layers(self) -> int:
        return self._m.layers

    @property
    def heads(self) -> int:
        return self._m.heads

    def _prompt(self, prompt: str, control_tokens: bool = False):
        if not isinstance(prompt, str):
            raise TypeError("the prompt must be a string")
        toks = self._m.tokenize(prompt, bool(control_tokens))
        if not toks:
            raise InvalidArgument("the prompt is empty")
        return [t[0] for t in toks], [t[1] for t in toks]

    def generate(
        self,
        prompt: str,
        max_tokens: int = 64,
        temperature: float = 0.0,
        top_k: Optional[int] = None,
        top_p: Optional[float] = None,
        seed: Optional[int] = None,
        explain: bool = False,
        control_tokens: bool = False,
    ) -> Generation:
        """Continues ``prompt`` (greedy by default; ``temperature``, ``top_k``, ``top_p`` and
        ``seed`` sample), as ``attend generate`` does. Control tokens typed in the prompt
        (``<|im_start|>``, ``<start_of_turn>``) are text unless ``control_tokens=True``."""
        ids, texts = self._prompt(prompt, control_tokens)
        items, page = self._m.generate(ids, _count(max_tokens), *_sampling(temperature, top_k, top_p, seed), bool(explain))
        return Generation(self.name, texts, items, self.layers, self.heads, page)

    def stream(
        self,
        prompt: str,
        max_tokens: int = 64,
        temperature: float = 0.0,
        top_k: Optional[int] = None,
        top_p: Optional[float] = None,
        seed: Optional[int] = None,
        control_tokens: bool = False,
    ) -> Iterator[str]:
        """The same generation, yielding each token's text as it is made."""
        ids, _ = self._prompt(prompt, control_tokens)
        for t in self._m.stream(ids, _count(max_tokens), *_sampling(temperature, top_k, top_p, seed), False):
            yield t["text"]

    def explain(self, text: str, control_tokens: bool = False) -> Explanation:
        """The attention of every layer × head × query × key over ``text`` (one forward pass
        on attend's kernel, as ``attend explain --model`` computes it), and the likeliest
        next tokens (``Explanation.next``). Control tokens typed in ``text`` are text unless
        ``control_tokens=True``."""
        if not isinstance(text, str):
            raise TypeError("explain takes a string")
        return Explanation(self.name, self._m.explain(text, bool(control_tokens)))

    def effect(
        self,
        text: str,
        target: Optional[str] = None,
        knockout: str = "later",
        layers: Optional[Sequence[int]] = None,
        words: bool = False,
        heads: bool = True,
        mean_ablation: bool = False,
        control_tokens: bool = False,
    ) -> "Effect":
        """Does the attention matter? Each source token of ``text`` (each word with
        ``words=True``) knocked out — its attention edges from every later position removed
        (``knockout="later"``), or only from the predicting position
        (``knockout="predicting"``, Geva et al. 2023), in every layer or in
        ``layers=(first, end)`` — and each head ablated (its output zeroed, or replaced by its
        mean over the text with ``mean_ablation=True``): the change of ``log p(target)``
        (``target``: a continuation such as ``" tired"``, several tokens allowed; default the
        model's likeliest next token), beside the attention the predicting position paid,
        as ``attend effect`` computes it."""
        if not isinstance(text, str):
            raise TypeError("effect takes a string")
        if target is not None and not isinstance(target, str):
            raise TypeError("target must be a string")
        span = None
        if layers is not None:
            a, b = (int(x) for x in layers)
            span = (a, b)
        doc, page = self._m.effect(
            text, target, str(knockout), span, bool(words), bool(heads), bool(mean_ablation), bool(control_tokens)
        )
        return Effect(self.name, json.loads(doc), page)

    def set_exact(self, exact: bool = True) -> "CausalLM":
        """Float32 activations (what transformers computes on the same file) instead of 8-bit
        ones: slower. Returns the model."""
        self._m.set_exact(bool(exact))
        return self


def _count(n) -> int:
    # (the CLI's bound; the model's context bounds it further)
    return _integer("max_tokens", n, 1, 1 << 24)


def _sampling(temperature, top_k, top_p, seed):
    """The sampling arguments checked, each error naming its argument."""
    return (
        _real("temperature", temperature),
        None if top_k is None else _integer("top_k", top_k, 0, 2**32 - 1),
        None if top_p is None else _real("top_p", top_p),
        None if seed is None else _integer("seed", seed, 0, 2**64 - 1),
    )
