"""attend.view: attention computed anywhere, in attend's viewer — synthetic arrays always, a
torch tensor when torch is installed, and transformers' own MiniLM attentions (equal to
attend.load("minilm").explain's page data) when transformers is installed."""

import json
import os
import subprocess

import numpy as np
import pytest

import attend

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def rows(rng, *shape, causal=False):
    s = rng.standard_normal(shape).astype(np.float32) * 2
    if causal:
        n = shape[-1]
        s = np.where(np.triu(np.ones((n, n), bool), 1), -np.inf, s)
    return softmax(s).astype(np.float32)


def page_data(html):
    start = html.index('id="attend-data">') + len('id="attend-data">')
    return json.loads(html[start : html.index("</script>", start)])


TOKENS = ["[CLS]", "the", "animal", "was", "tired", "[SEP]"]


def test_a_square_array_is_an_explanation_with_the_same_weights_and_page():
    a = rows(np.random.default_rng(0), 2, 4, 6, 6)
    ex = attend.view(a, TOKENS, model="mine")
    assert isinstance(ex, attend.Explanation)
    assert (ex.layers, ex.heads, ex.tokens) == (2, 4, TOKENS)
    np.testing.assert_array_equal(ex.attention, a)
    np.testing.assert_array_equal(ex.head(1, 3), a[1, 3])
    assert ex.top("animal", k=2, layer=0, head=0)[0][0] == TOKENS[int(np.argmax(a[0, 0, 2]))]
    html = ex.html()
    d = page_data(html)
    assert d["causal"] is False and d["layers"] == 2 and "http://" not in html and "https://" not in html
    assert "<iframe" in ex._repr_html_()
    # one layer as (heads, n, n); a list per layer; transformers' tuple of (batch, heads, n, n)
    np.testing.assert_array_equal(attend.view(a[0], TOKENS).attention, a[:1])
    np.testing.assert_array_equal(attend.view([a[0], a[1]], TOKENS).attention, a)
    batched = tuple(np.stack([a[l] * 0 + rows(np.random.default_rng(l), 4, 6, 6), a[l]]) for l in range(2))
    np.testing.assert_array_equal(attend.view(batched, TOKENS, batch=1).attention, a)
    np.testing.assert_array_equal(attend.view(np.stack(batched), TOKENS, batch=1).attention, a)


def test_causal_is_read_from_the_weights_and_kv_heads_group_the_heads():
    a = rows(np.random.default_rng(1), 3, 4, 6, 6, causal=True)
    ex = attend.view(a, TOKENS, kv_heads=2)
    assert page_data(ex.html())["causal"] is True and ex.kv_heads == 2
    with pytest.raises(attend.InvalidArgument, match="does not divide"):
        attend.view(a, TOKENS, kv_heads=3)
    with pytest.raises(attend.InvalidArgument, match="after the query's own position"):
        attend.view(rows(np.random.default_rng(2), 1, 1, 6, 6), TOKENS, causal=True)


def test_rectangular_rows_are_a_generation():
    # 3 generation steps over a 4-token prompt: rows over 4, 5, 6 keys (of 6), 7 tokens
    rng = np.random.default_rng(3)
    a = np.zeros((2, 2, 3, 6), np.float32)
    for r in range(3):
        a[:, :, r, : 4 + r] = rows(rng, 2, 2, 4 + r)
    toks = ["a", " b", " c", " d", " e", " f", " g"]
    g = attend.view(a, toks)
    assert isinstance(g, attend.Generation) and g.tokens == [" e", " f", " g"]
    d = page_data(g.html())
    assert d["kind"] == "generation" and len(d["generated"]) == 3
    np.testing.assert_array_equal(g.attention[2], a[:, :, 2, :6].reshape(2, 2, 6))
    bad = a.copy()
    bad[0, 0, 0, 5] = 0.5
    with pytest.raises(attend.InvalidArgument, match="sees only the keys before it"):
        attend.view(bad, toks)
    with pytest.raises(attend.ShapeError, match="give 7"):
        attend.view(a, toks[:6])


def test_bad_attention_is_a_clear_error():
    a = rows(np.random.default_rng(4), 2, 2, 6, 6)
    nan = a.copy()
    nan[1, 0, 2, 3] = np.nan
    with pytest.raises(attend.InvalidArgument, match="layer 1, head 0, query 2, key 3"):
        attend.view(nan, TOKENS)
    scaled = a * 0.9
    with pytest.raises(attend.InvalidArgument, match=r"sums to 0\.9.*off by 0\.1"):
        attend.view(scaled, TOKENS)
    neg = a.copy()
    neg[0, 1, 1, 1] = -0.5
    with pytest.raises(attend.InvalidArgument, match=">= 0"):
        attend.view(neg, TOKENS)
    with pytest.raises(attend.ShapeError, match="give 6"):
        attend.view(a, TOKENS[:5])
    for shape in [(6, 6), (1, 1, 1, 1, 1, 6, 6)]:
        with pytest.raises(attend.ShapeError):
            attend.view(np.ones(shape, np.float32) / 6, TOKENS)
    with pytest.raises(attend.ShapeError, match="differ"):
        attend.view([a[0], a[1, :1]], TOKENS)
    with pytest.raises(attend.InvalidArgument, match="strings"):
        attend.view(a, "the animal")
    with pytest.raises(attend.InvalidArgument, match="batch"):
        attend.view((a[None, 0],), TOKENS, batch=2)
    with pytest.raises(attend.ShapeError, match="not an array of numbers"):
        attend.view([["x"]], TOKENS)


def test_a_torch_tensor():
    torch = pytest.importorskip("torch", reason="the torch tensor check needs PyTorch (pip install torch)")
    a = rows(np.random.default_rng(5), 1, 2, 6, 6)
    t = torch.tensor(a, dtype=torch.float16, requires_grad=False)
    ex = attend.view(t, TOKENS, atol=2e-3)
    np.testing.assert_allclose(ex.attention, a, atol=1e-3)


def test_transformers_minilm_attentions_equal_attends_own():
    """transformers' MiniLM (same weights, attend's cache) with output_attentions=True, shown
    with attend.view, carries the page data attend.load("minilm").explain carries, within the
    stored precision."""
    pytest.importorskip("torch", reason="comparing with transformers needs PyTorch (pip install torch transformers)")
    transformers = pytest.importorskip("transformers", reason="comparing with transformers needs it (pip install transformers)")
    binary = os.environ.get("ATTEND_BIN")
    cmd = [binary] if binary else ["cargo", "run", "--release", "-q", "-p", "attend-cli", "--"]
    path = subprocess.run(cmd + ["fetch", "minilm"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModel.from_pretrained(path, attn_implementation="eager")
    text = "The animal didn't cross the road because it was tired"
    enc = tok(text, return_tensors="pt")
    out = model(**enc, output_attentions=True)
    tokens = tok.convert_ids_to_tokens(enc["input_ids"][0])
    theirs = attend.view(out.attentions, tokens, model="minilm")
    ours = attend.load("minilm").explain(text)
    assert theirs.tokens == ours.tokens
    np.testing.assert_allclose(theirs.attention, ours.attention, atol=1e-4)
    a, b = page_data(theirs.html()), page_data(ours.html())
    assert a["layers"] == b["layers"] and a["heads"] == b["heads"] and a["causal"] == b["causal"]


def test_words_merge_only_the_pieces_of_a_word():
    """The page's words (sum over keys, mean over queries) group `##` pieces with their word
    and nothing else, as explain's do."""
    toks = ["[CLS]", "the", "un", "##believ", "##ably", "tired", "dog", "[SEP]"]
    a = rows(np.random.default_rng(6), 1, 2, 8, 8)
    ex = attend.view(a, toks)
    words = page_data(ex.html())["words"]
    # one word index per token: the three pieces of "unbelievably" share one, every other token its own
    assert len(set(words)) == 6 and words[2] == words[3] == words[4], words
    gaps = [ex.token_info[i]["start"] - ex.token_info[i - 1]["end"] for i in range(1, len(toks))]
    assert gaps == [1, 1, 0, 0, 1, 1, 1]
