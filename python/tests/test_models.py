"""attend.load: the same answers as the attend command on the same models (fetched into
attend's cache on first use, like the CLI)."""

import json
import os
import subprocess

import numpy as np
import pytest

import attend

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SENTENCE = "The animal didn't cross the road because it was tired"


def cli(*args):
    """The attend binary: $ATTEND_BIN, else the workspace's release build via cargo."""
    binary = os.environ.get("ATTEND_BIN")
    cmd = [binary] if binary else ["cargo", "run", "--release", "-q", "-p", "attend-cli", "--"]
    r = subprocess.run(cmd + list(args), cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture(scope="module")
def minilm():
    return attend.load("minilm")


def test_embed_equals_the_cli(minilm):
    texts = ["a cat sat", SENTENCE, "ça va très bien"]
    got = minilm.embed(texts)
    want = np.array(json.loads(cli("embed", "--format", "json", *texts))["embeddings"], dtype=np.float32)
    assert got.shape == want.shape == (3, 384)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert minilm.embed("one").shape == (1, 384)


def test_int8_embeddings_equal_the_cli_and_stay_near_float32(minilm):
    texts = ["a cat sat", SENTENCE, "ça va très bien", "?"]
    q = attend.load("minilm", int8=True)
    assert isinstance(q, attend.Encoder) and q.int8 and not minilm.int8
    got = q.embed(texts)
    want = np.array(json.loads(cli("embed", "--int8", "--format", "json", *texts))["embeddings"], dtype=np.float32)
    np.testing.assert_allclose(got, want, atol=1e-6)
    cos = (got * minilm.embed(texts)).sum(-1)
    assert cos.min() >= 0.999, cos
    with pytest.raises(attend.InvalidArgument, match="sentence encoders"):
        attend.load("toy-winograd", int8=True)
    with pytest.raises(TypeError):
        attend.load("minilm", int8="yes")


def test_explain_equals_the_cli(minilm):
    ex = minilm.explain(SENTENCE)
    mine = json.loads(ex.to_json())
    theirs = json.loads(cli("explain", "--format", "json", SENTENCE))
    assert mine["tokens"] == theirs["tokens"]
    assert (mine["layers"], mine["heads"]) == (theirs["layers"], theirs["heads"]) == (6, 12)
    np.testing.assert_allclose(np.array(mine["attention"]), np.array(theirs["attention"]), atol=1e-6)
    assert ex.attention.shape == (6, 12, 14, 14) and ex.attention.dtype == np.float32
    np.testing.assert_allclose(ex.attention.sum(-1), 1.0, atol=1e-5)
    top = ex.top("it")
    assert [t for t, _ in top][:2] == ["[CLS]", "animal"]
    rows = ex.compare("it", "animal", "road")
    theirs = json.loads(cli("explain", "--format", "json", "--token", "it", "--compare", "animal", "road", SENTENCE))
    assert [(r["layer"], r["head"]) for r in rows[:5]] == [(r["layer"], r["head"]) for r in theirs["compare"]["rows"][:5]]
    with pytest.raises(ValueError):
        ex.top("zebra")


def _data(page):
    """The viewer's data element of a page."""
    start = page.index('id="attend-data">') + len('id="attend-data">')
    return json.loads(page[start : page.index("</script>", start)])


def test_an_encoders_effect_equals_the_cli(minilm):
    e = minilm.effect(SENTENCE)
    theirs = json.loads(cli("effect", "--model", "minilm", "--format", "json", SENTENCE))
    assert e.measure == theirs["measure"] == "embedding" and e.tokens == theirs["tokens"]
    np.testing.assert_allclose(e.delta, [s["delta"] for s in theirs["sources"]], atol=1e-6)
    np.testing.assert_allclose(e.head_delta.reshape(-1), theirs["head_delta"], atol=1e-6)
    assert e.head_delta.shape == (6, 12) and (e.delta >= -1e-6).all()
    # [CLS] carries the most (mean pooling, yet every token reads it)
    assert e.sources[int(np.argmax(e.delta))] == "[CLS]"
    assert '"measure":"embedding"' in e.html()
    with pytest.raises(attend.InvalidArgument, match="layers"):
        minilm.effect(SENTENCE, layers=(0, 9))


def test_the_notebook_viewer_is_the_cli_page(minilm, tmp_path):
    ex = minilm.explain(SENTENCE)
    page = ex.html()
    out = tmp_path / "cli.html"
    cli("explain", SENTENCE, "-o", str(out))
    # the same page the CLI writes, from the same library function (the title names the model)
    assert _data(page)["maps"] == _data(out.read_text())["maps"]
    d = _data(page)
    assert d["tokens"] == ex.tokens and d["layers"] == 6 and d["heads"] == 12
    assert d["sinks"] == [0] and [m["id"] for m in d["maps"]][:3] == ["raw", "mean", "rollout"]
    for bad in ("http://", "https://", "src=", "<link"):
        assert bad not in page
    # in a notebook: its own sandboxed frame, a distinct id per call
    a, b = ex._repr_html_(), ex._repr_html_()
    assert a.startswith("<iframe") and "sandbox='allow-scripts'" in a and "window.attendViewer" in a
    assert a.split("'")[1] != b.split("'")[1]
    ex.save_html(tmp_path / "x.html", compare=("it", "animal", "road"))
    saved = _data((tmp_path / "x.html").read_text())
    assert saved["compare"] == {"query": 10, "a": 2, "b": 8}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    # the atlas's numbers are the page's
    atlas = ex.atlas()
    assert atlas["sinks"] == [0] and len(atlas["entropy"]) == 72
    np.testing.assert_allclose(atlas["entropy"], [h["entropy"] for h in d["atlas"]], rtol=1e-6)
    np.testing.assert_allclose(atlas["sink_share"], [h["sink_share"] for h in d["atlas"]], rtol=1e-6)


def test_the_notebook_frame_sizes_itself():
    """`_frame`'s markup: the sandboxed page and, beside it, the listener that sets the frame's
    height from that frame's own messages (tests/browser/viewer.test.mjs builds this markup
    from the same text and checks it in Chromium)."""
    import html
    import re

    from attend import _models

    page = "<!doctype html><p class='x'>it's \"a\" page & more</p><script>1 < 2</script>"
    out = _models._frame(page)
    m = re.fullmatch(
        r"<iframe id='(attend-\d+-[0-9a-f]{8})' name='\1' sandbox='allow-scripts' srcdoc=\"([^\"]*)\" "
        r"style='width:100%;height:(\d+)px;border:1px solid #ddd' title='attend viewer'></iframe>"
        r"<script>(.*)</script>",
        out,
        re.S,
    )
    assert m, out
    fid, srcdoc, height, script = m.groups()
    assert html.unescape(srcdoc) == page and "'" not in srcdoc
    assert "allow-same-origin" not in out  # the page stays in its sandbox
    assert int(height) == _models._FRAME_HEIGHT == 600
    assert (_models._FRAME_MIN, _models._FRAME_MAX) == (300, 4000)
    want = _models._FRAME_SCRIPT.replace("__ID__", fid).replace("__MIN__", "300").replace("__MAX__", "4000")
    assert script == want and "__" not in script
    # it listens for the viewer's height message from that frame's window only, clamped
    assert "addEventListener('message'" in script and "e.source !== f.contentWindow" in script
    assert "d.attendViewer !== 'height'" in script and "Math.min(4000, Math.max(300, h))" in script
    assert f"var id = '{fid}'" in script
    # and the viewer posts it (the page's script, as every attend page carries it)
    viewer = open(os.path.join(ROOT, "crates", "attend-viz", "assets", "viewer.js"), encoding="utf-8").read()
    assert "attendViewer: 'height'" in viewer and "postMessage" in viewer
    # a distinct id per call
    assert _models._frame(page).split("'")[1] != fid


@pytest.fixture(scope="module")
def smollm2():
    return attend.load("smollm2")


def test_generate_equals_the_cli_greedily(smollm2):
    prompt = "The capital of France is"
    g = smollm2.generate(prompt, max_tokens=12)
    theirs = json.loads(cli("generate", "--format", "json", "--max-tokens", "12", prompt))
    assert g.ids == [t["id"] for t in theirs["tokens"]]
    np.testing.assert_allclose(g.logprobs, [t["logprob"] for t in theirs["tokens"]], atol=1e-5)
    assert g.text and isinstance(g.text, str)
    # streaming yields the same tokens
    assert list(smollm2.stream(prompt, max_tokens=12)) == g.tokens
    # with explain, each generated token's row over its context, from the KV cache
    e = smollm2.generate(prompt, max_tokens=4, explain=True)
    n = len(smollm2._m.tokenize(prompt))
    for i, a in enumerate(e.attention):
        assert a.shape == (30, 9, n + i)
        np.testing.assert_allclose(a.sum(-1), 1.0, atol=1e-4)
    d = _data(e.html())
    assert d["kind"] == "generation" and d["tokens"][n:] == e.tokens
    assert d["query_pos"] == [n - 1 + i for i in range(4)]
    assert e._repr_html_().startswith("<iframe")
    with pytest.raises(ValueError):
        g.html()  # generated without explain=True


def test_gemma3_generates_as_the_cli_and_its_window_shows():
    lm = attend.load("gemma3")
    prompt = "The capital of France is"
    g = lm.generate(prompt, max_tokens=6)
    theirs = json.loads(cli("generate", "--model", "gemma3", "--format", "json", "--max-tokens", "6", prompt))
    assert g.ids == [t["id"] for t in theirs["tokens"]]
    # a prompt longer than the 512-key window: layer 0 (local) stops at it, layer 5 (global) not
    long = " ".join("word%d" % (i % 7) for i in range(300))
    e = lm.generate(long, max_tokens=1, explain=True)
    a = e.attention[0]
    n = a.shape[-1]
    assert a.shape[:2] == (18, 4) and n > 600
    assert np.all(a[0, :, : n - 512] == 0.0) and np.all(a[5, :, : n - 512].sum(-1) > 0.0)
    np.testing.assert_allclose(a.sum(-1), 1.0, atol=1e-3)


TINY = os.path.join(ROOT, "crates", "attend-models", "tests", "tiny")


@pytest.mark.parametrize("name", ["llama3", "mistral", "qwen2", "qwen3", "phi3", "gemma2", "qwen2-q8_0"])
def test_any_gguf_loads_by_path_and_generates_as_the_cli(name):
    path = os.path.join(TINY, f"{name}.gguf")
    lm = attend.load(path)
    assert isinstance(lm, attend.CausalLM)
    g = lm.generate(SENTENCE, max_tokens=5)
    theirs = json.loads(cli("generate", "--model", path, "--format", "json", "--max-tokens", "5", SENTENCE))
    assert g.ids == [t["id"] for t in theirs["tokens"]]
    ex = lm.explain(SENTENCE)
    cli_json = json.loads(cli("explain", "--model", path, "--format", "json", SENTENCE))
    np.testing.assert_allclose(ex.attention, np.array(cli_json["attention"], np.float32), atol=1e-6)
    e = lm.generate(SENTENCE, max_tokens=3, explain=True)
    assert e.ids == g.ids[:3]
    n = len(lm._m.tokenize(SENTENCE))
    for i, a in enumerate(e.attention):
        assert a.shape == (lm.layers, lm.heads, n + i)
        np.testing.assert_allclose(a.sum(-1), 1.0, atol=1e-4)


def test_a_decoder_explains_as_the_cli_does(smollm2):
    ex = smollm2.explain(SENTENCE)
    theirs = json.loads(cli("explain", "--model", "smollm2", "--format", "json", SENTENCE))
    mine = json.loads(ex.to_json())
    assert mine["tokens"] == theirs["tokens"] and ex.layers == 30 and ex.heads == 9 and ex.kv_heads == 3
    np.testing.assert_allclose(ex.attention, np.array(theirs["attention"], np.float32), atol=1e-6)
    n = len(ex)
    assert ex.attention.shape == (30, 9, n, n)
    np.testing.assert_allclose(ex.attention.sum(-1), 1.0, atol=1e-4)
    assert np.all(np.triu(ex.attention[3, 2], 1) == 0.0), "causal: nothing after a query"
    np.testing.assert_array_equal(ex.head(3, 2), ex.attention[3, 2])
    assert [t for t, _ in ex.next] == [t["text"] for t in theirs["next"]]
    rows = ex.compare("it", "animal", "road")
    assert len(rows) == 270
    cmp = json.loads(cli("explain", "--model", "smollm2", "--format", "json", "--token", "it",
                         "--compare", "animal", "road", SENTENCE))["compare"]["rows"]
    assert [(r["layer"], r["head"]) for r in rows[:5]] == [(r["layer"], r["head"]) for r in cmp[:5]]
    assert len(ex.atlas()["entropy"]) == 270
    assert "<iframe" in ex._repr_html_()


def test_a_path_that_is_no_model_says_so(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(attend.ModelError, match="not a model attend reads"):
        attend.load(str(notes))
    with pytest.raises(attend.ModelError, match="holds no model attend reads"):
        attend.load(str(tmp_path))


def test_toy_models_load_as_causal_models():
    lm = attend.load("toy-winograd")
    text = "The dog didn't cross the street because it was tired. it ="
    assert lm.generate(text, max_tokens=1).tokens == [" dog"]
    ex = lm.explain(text)
    assert ex.attention.shape[:2] == (2, 4)


def test_model_errors():
    with pytest.raises(attend.ModelError):
        attend.load("nosuch")
    with pytest.raises(attend.InvalidArgument):
        attend.load("toy-winograd").generate("x", max_tokens=0)
    with pytest.raises(TypeError):
        attend.load("toy-winograd").generate(3)
    # each bad sampling argument is named, never a bare ValueError/OverflowError
    lm = attend.load("toy-winograd")
    for kw, name in [
        ({"max_tokens": 2**64}, "max_tokens"),
        ({"max_tokens": float("nan")}, "max_tokens"),
        ({"top_k": -1}, "top_k"),
        ({"seed": 2**64}, "seed"),
        ({"seed": -1}, "seed"),
        ({"temperature": "hot"}, "temperature"),
    ]:
        with pytest.raises(attend.InvalidArgument, match=name):
            lm.generate("it =", **kw)


def test_typed_control_tokens_are_text_unless_asked(tmp_path):
    """A control token's spelling typed in a prompt is text (no role injected); asked, it is
    parsed, as the CLI's --control-tokens does. And save_html writes through a link, keeps a
    page's mode, and refuses a folder."""
    lm = attend.load(os.path.join(TINY, "qwen2.gguf"))
    text = "hi<|im_end|><|im_start|>system"
    plain = lm.explain(text)
    parsed = lm.explain(text, control_tokens=True)
    assert "<|im_start|>" not in plain.tokens and "<|im_start|>" in parsed.tokens
    assert len(plain.tokens) > len(parsed.tokens)
    real = tmp_path / "real.html"
    real.write_text("old")
    os.chmod(real, 0o644)
    link = tmp_path / "link.html"
    os.symlink("real.html", link)
    plain.save_html(link)
    assert os.path.islink(link) and real.read_text(encoding="utf-8") == plain.html()
    assert os.stat(real).st_mode & 0o777 == 0o644
    (tmp_path / "folder").mkdir()
    with pytest.raises(OSError, match="folder"):
        plain.save_html(tmp_path / "folder")


PROMPT = "The animal didn't cross the road because it was"


def test_effect_equals_the_cli_and_opens_in_the_viewer(tmp_path):
    path = os.path.join(TINY, "llama3.gguf")
    lm = attend.load(path)
    e = lm.effect(PROMPT, target=" tired")
    theirs = json.loads(cli("effect", "--model", path, "--target", " tired", "--format", "json", PROMPT))
    assert e.tokens == theirs["tokens"] and e.sources == [s["label"] for s in theirs["sources"]]
    assert e.target == "".join(theirs["target"]) and e.logp == pytest.approx(theirs["logp"], abs=1e-5)
    np.testing.assert_allclose(e.delta, [s["delta_logp"] for s in theirs["sources"]], atol=1e-4)
    np.testing.assert_allclose(e.attention, [s["attention"] for s in theirs["sources"]], atol=1e-6)
    assert e.head_delta.shape == (lm.layers, lm.heads)
    np.testing.assert_allclose(e.head_delta.reshape(-1), theirs["head_delta_logp"], atol=1e-4)
    assert e.layer_attention.shape == (len(e.sources), lm.layers)
    # the last prompt token is read by no later position unless the target has several tokens
    assert e.removes_edges[:-1].all() and e.removes_edges[-1] == (len(theirs["target"]) > 1)
    top = lm.effect(PROMPT, heads=False)
    assert not top.removes_edges[-1] and top.delta[-1] == 0.0 and top.target == top.top[0]
    (l, h, d) = e.heads_by_effect(1)[0]
    assert abs(e.head_delta[l, h]) == pytest.approx(np.abs(e.head_delta).max()) and d == pytest.approx(e.head_delta[l, h])
    # words (sub-word pieces together), no heads
    w = lm.effect(PROMPT, target=" tired", words=True, heads=False)
    assert "".join(w.sources) == "".join(e.sources) and len(w.sources) <= len(e.sources)
    assert [p for ps in w.positions for p in ps] == list(range(len(e.tokens)))
    assert w.head_delta.shape == (0, lm.heads)
    # the viewer page with its effect view, in a notebook too
    page = e.html()
    assert '"effect":{' in page and "http://" not in page and "<iframe" in e._repr_html_()
    e.save_html(tmp_path / "e.html")
    assert (tmp_path / "e.html").read_text(encoding="utf-8") == page
    with pytest.raises(attend.InvalidArgument, match="knockout"):
        lm.effect(PROMPT, knockout="sideways")
    with pytest.raises(attend.InvalidArgument, match="layers"):
        lm.effect(PROMPT, layers=(0, lm.layers + 1))
    with pytest.raises(attend.InvalidArgument, match="no tokens"):
        lm.effect(PROMPT, target="")
    with pytest.raises(attend.InvalidArgument, match="interventions"):
        attend.load("toy-winograd").effect("it =")


def ck_notes(folder):
    return json.loads((folder / "config.json").read_text())["notes"]


def test_train_from_python_equals_the_cli_bit_for_bit(tmp_path):
    """attend.train makes the run `attend train` makes: the same seed, the same weights and
    losses, bit for bit; the result is a model attend.load reads, with its measures; a
    stopped run (progress raising, as Ctrl-C does) leaves a checkpoint resume= continues to
    the same end."""
    cli("train", "winograd", "--steps", "40", "--eval-every", "20", "--seed", "3", "-o", str(tmp_path / "cli"))
    seen = []
    run = attend.train("winograd", steps=40, eval_every=20, seed=3, output=str(tmp_path / "py"), progress=False)
    for f in ["model.safetensors", "optimizer.safetensors"]:
        assert (tmp_path / "cli" / f).read_bytes() == (tmp_path / "py" / f).read_bytes(), f
    theirs = json.loads((tmp_path / "cli" / "config.json").read_text())
    np.testing.assert_array_equal(run.loss, np.array(theirs["training"]["losses"], dtype=np.float32))
    assert list(run.eval_steps) == [e["step"] for e in theirs["training"]["evals"]]
    assert ck_notes(tmp_path / "py")["held_out"] == theirs["notes"]["held_out"]
    assert np.float32(run.held_out["accuracy"]) == np.float32(theirs["notes"]["held_out"]["accuracy"])
    assert run.decisive_head == tuple(theirs["notes"]["held_out"]["head"])
    assert ck_notes(tmp_path / "py")["untrained"] == theirs["notes"]["untrained"]
    ex = run.model.explain("The dog didn't cross the street because it was tired. it =")
    assert ex.layers == 2 and ex.heads == 4
    # stopped at step 25 by the progress callback (KeyboardInterrupt is the same path), resumed
    from attend import _attend

    def stop(step, total, loss, ev):
        seen.append(step)
        if step == 25:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _attend.train("winograd", str(tmp_path / "stop"), None, 128, 40, 3, None, None, None, None, None, 20, None, False, stop)
    ck = json.loads((tmp_path / "stop" / "config.json").read_text())
    assert ck["training"]["step"] == 25
    again = attend.train("winograd", steps=40, eval_every=20, resume=str(tmp_path / "stop"), progress=False)
    assert (tmp_path / "stop" / "model.safetensors").read_bytes() == (tmp_path / "py" / "model.safetensors").read_bytes()
    assert len(again.loss) == 40
    with pytest.raises(attend.InvalidArgument, match="already holds a checkpoint"):
        attend.train("winograd", steps=5, output=str(tmp_path / "py"), progress=False)
    with pytest.raises(attend.InvalidArgument, match="file="):
        attend.train("text", steps=5, output=str(tmp_path / "t"), progress=False)
    with pytest.raises(attend.InvalidArgument, match="steps"):
        attend.train("winograd", steps=0, output=str(tmp_path / "z"), progress=False)


def test_training_snapshots_equal_the_checkpoints_at_those_steps(tmp_path):
    """attend.train(..., snapshots=2) keeps the probe's attention at steps 0, 10 and 20: the
    last equals the final model's, the middle one the checkpoint of a run stopped at step 10
    (same seed and length), and the page stores them within 1/65535."""
    import base64

    run = attend.train("winograd", steps=20, eval_every=10, seed=5, snapshots=2, output=str(tmp_path / "a"), progress=False)
    assert run.snapshot_steps == [0, 10, 20]
    probe = "The dog didn't cross the street because it was tired. it ="
    np.testing.assert_array_equal(run.snapshots[-1], run.model.explain(probe).attention)

    def stop(step, total, loss, ev):
        if step == 10 and ev is None:
            raise KeyboardInterrupt

    from attend import _attend

    with pytest.raises(KeyboardInterrupt):
        _attend.train("winograd", str(tmp_path / "b"), None, 128, 20, 5, None, None, None, None, None, 10, None, False, stop)
    np.testing.assert_array_equal(run.snapshots[1], attend.load(str(tmp_path / "b")).explain(probe).attention)
    html = run.html()
    start = html.index('id="attend-data">') + len('id="attend-data">')
    d = json.loads(html[start : html.index("</script>", start)])
    assert d["kind"] == "training" and d["steps"] == [0, 10, 20] and d["tokens"] == run.probe
    stored = np.frombuffer(base64.b64decode(d["maps"]), dtype="<u2").astype(np.float32) / 65535
    np.testing.assert_allclose(stored.reshape(run.snapshots.shape), run.snapshots, atol=0.6 / 65535)
    assert tuple(d["head"]) == run.decisive_head
    assert "<iframe" in run._repr_html_()
    with pytest.raises(attend.InvalidArgument, match="snapshots"):
        attend.train("winograd", steps=5, output=str(tmp_path / "c"), progress=False).html()
