"""attend.ray on a real Ray cluster started on this machine (ray.init with its two CPUs): a
corpus in 8 Parquet files embedded through Ray Data equals attend.load(...).embed row for row,
a worker killed mid-job costs no row, refused texts land in the error column.

The sizes keep the suite to seconds; the same properties at 100 000 rows (and the speed and
memory figures of the README) are `python bench/ray_embed.py --sizes 100000 --check`."""

import os
import shutil
import signal
import threading
import time

import numpy as np
import pytest

WHY = "attend.ray's tests need Ray Data: pip install 'ray[data]' (scripts/test installs it)"
ray = pytest.importorskip("ray", reason=WHY)
pa = pytest.importorskip("pyarrow", reason=WHY)
pq = pytest.importorskip("pyarrow.parquet", reason=WHY)

import attend  # noqa: E402
import attend.ray as ar  # noqa: E402

WORDS = ("the animal the road a cat it was tired because didn't cross big small red river "
         "ça café naïve 東京 🙂 1984 x=y+1").split()


def corpus(n, seed=0):
    """`n` short sentences of 3 to 14 words, deterministic, mostly distinct."""
    rng = np.random.default_rng(seed)
    lens = rng.integers(3, 15, n)
    picks = rng.integers(0, len(WORDS), lens.sum())
    out, at = [], 0
    for i, l in enumerate(lens):
        out.append(f"{i} " + " ".join(WORDS[j] for j in picks[at : at + l]))
        at += l
    return out


def write_corpus(folder, texts, files=8):
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    n = len(texts)
    for f in range(files):
        lo, hi = f * n // files, (f + 1) * n // files
        t = pa.table({"id": pa.array(np.arange(lo, hi), pa.int64()), "text": pa.array(texts[lo:hi], pa.string())})
        pq.write_table(t, os.path.join(folder, f"part-{f:03}.parquet"))


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def minilm():
    return attend.load("minilm")


def check_output(dst, texts, minilm, bad=()):
    """Every row once, in input order with its id, equal to the in-process embedding."""
    t = pq.read_table(dst)
    assert t.num_rows == len(texts)
    assert np.array_equal(t["id"].to_numpy(), np.arange(len(texts)))
    errors = t["error"].to_pylist()
    assert [i for i, e in enumerate(errors) if e is not None] == sorted(bad)
    good = [i for i in range(len(texts)) if i not in set(bad)]
    emb = t["embedding"]
    assert emb.null_count == len(bad)
    got = np.stack([np.asarray(emb[i].values, np.float32) for i in good]) if len(good) < 50 else None
    if got is None:
        flat = emb.combine_chunks()
        vals = np.asarray(flat.values, np.float32).reshape(len(texts), -1)
        got = vals[good]
    want = minilm.embed([texts[i] for i in good])
    # bit for bit: attend's encoder gives the same bits whatever the batch and thread count
    assert np.array_equal(got, want)
    return t


CORPUS_ROWS = 5_000


def test_a_corpus_through_ray_equals_embed_row_for_row(cluster, minilm, tmp_path):
    texts = corpus(CORPUS_ROWS)
    write_corpus(tmp_path / "src", texts)
    r = ar.embed_parquet(str(tmp_path / "src"), str(tmp_path / "dst"), model="minilm", concurrency=2)
    assert r["rows"] == CORPUS_ROWS and r["errors"] == 0
    t = check_output(tmp_path / "dst", texts, minilm)
    assert "text" not in t.column_names  # keep_text=False
    # a second run into the same folder would mix rows: refused before any work
    with pytest.raises(ValueError, match="already holds files"):
        ar.embed_parquet(str(tmp_path / "src"), str(tmp_path / "dst"))


def map_workers():
    """PIDs of Ray Data's actor processes (their title is `ray::MapWorker(...)`)."""
    pids = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if cmd.startswith(b"ray::MapWorker"):
            pids.append(int(p))
    return pids


KILL_ROWS = 8_000


def test_a_worker_killed_mid_job_loses_no_row(cluster, minilm, tmp_path):
    texts = corpus(KILL_ROWS, seed=1)
    write_corpus(tmp_path / "src", texts, files=10)
    result, failure = {}, []

    def job():
        try:
            # small batches: the job lasts long enough to be interrupted on a fast machine
            result.update(ar.embed_parquet(str(tmp_path / "src"), str(tmp_path / "dst"), batch_size=16, concurrency=2))
        except BaseException as e:  # noqa: BLE001 - reported below
            failure.append(e)

    th = threading.Thread(target=job)
    th.start()
    # wait until both actors have been working for two seconds (model loaded, batches in
    # flight), then kill one by its PID
    deadline = time.time() + 300
    victim, seen_since, first = None, None, set()
    while time.time() < deadline and th.is_alive():
        pids = map_workers()
        if len(pids) >= 2:
            seen_since = seen_since or time.time()
            if time.time() - seen_since > 2:
                first = set(pids)
                victim = pids[0]
                os.kill(victim, signal.SIGKILL)
                break
        time.sleep(0.1)
    killed_while_running = th.is_alive()
    # Ray restarts the actor: a MapWorker process that was not there before
    restarted = False
    while th.is_alive() and not restarted:
        restarted = bool(set(map_workers()) - first)
        time.sleep(0.1)
    assert victim is not None, f"the job ended (or never started) before a worker could be killed: {failure}"
    th.join(600)
    assert not failure, failure
    assert killed_while_running and restarted
    assert result["rows"] == KILL_ROWS
    check_output(tmp_path / "dst", texts, minilm)


def test_refused_texts_land_in_the_error_column(cluster, minilm, tmp_path):
    texts = corpus(3_000, seed=2)
    texts[5] = None
    texts[77] = "y" * 2_000
    texts[2999] = ""
    write_corpus(tmp_path / "src", texts, files=3)
    r = ar.embed_parquet(str(tmp_path / "src"), str(tmp_path / "dst"), max_chars=1_000, keep_text=True)
    assert r == {"rows": 3_000, "errors": 2, "seconds": r["seconds"]}
    t = pq.read_table(tmp_path / "dst")
    assert t["text"].to_pylist()[:3] == texts[:3]
    errors = t["error"].to_pylist()
    assert errors[5] == "the text is missing (null)"
    assert "2000 characters, over the limit of 1000" in errors[77]
    assert errors[2999] is None  # the empty text is a valid text: [CLS] [SEP]
    good = [i for i in range(3000) if i not in (5, 77)]
    vals = t["embedding"].combine_chunks()
    assert vals.null_count == 2
    got = np.stack([np.asarray(vals[i].values, np.float32) for i in good[:200]])
    assert np.array_equal(got, minilm.embed([texts[i] for i in good[:200]]))


def test_embedder_and_explainer_in_map_batches(cluster, minilm):
    sentence = "The animal didn't cross the road because it was tired"
    rows = [{"text": sentence}, {"text": "no such words here"}, {"text": None}]
    ds = ray.data.from_items(rows)
    out = ds.map_batches(
        ar.Explainer,
        fn_constructor_kwargs={"model": "minilm", "compare": ("it", "animal", "road")},
        concurrency=1,
        num_cpus=1,
        batch_format="pyarrow",
    ).take_all()
    ex = minilm.explain(sentence)
    atlas = ex.atlas()
    first = out[0]
    assert first["error"] is None and first["tokens"] == len(ex) == 14
    np.testing.assert_array_equal(np.float32(first["entropy"]), np.float32(atlas["entropy"]))
    np.testing.assert_array_equal(np.float32(first["sink_share"]), np.float32(atlas["sink_share"]))
    q, a, b = ex.index("it"), ex.index("animal"), ex.index("road")
    want = (ex.attention[:, :, q, a] - ex.attention[:, :, q, b]).reshape(-1)
    np.testing.assert_array_equal(np.float32(first["margin"]), want.astype(np.float32))
    assert len(first["entropy"]) == 6 * 12
    # a text without the compared words keeps its statistics, with the reason for the margin
    assert out[1]["margin"] is None and out[1]["entropy"] is not None
    assert "`it` is not a token of this text" in out[1]["error"]
    assert out[2]["entropy"] is None and out[2]["error"] == "the text is missing (null)"

    # the Embedder on Ray's default numpy batches, other column names
    ds = ray.data.from_items([{"doc": t, "k": i} for i, t in enumerate(["one", "two three", sentence])])
    out = ds.map_batches(
        ar.Embedder,
        fn_constructor_kwargs={"column": "doc", "output_column": "vec", "batch_size": 2},
        concurrency=1,
        num_cpus=1,
    ).take_all()
    got = np.stack([np.asarray(r["vec"], np.float32) for r in out])
    assert np.array_equal(got, minilm.embed(["one", "two three", sentence]))
    assert [r["k"] for r in out] == [0, 1, 2]


def test_usage_errors_are_clear(minilm):
    with pytest.raises(attend.ModelError, match="not a sentence encoder"):
        ar.Embedder(model="toy-winograd")
    with pytest.raises(ValueError, match="batch_size"):
        ar.Embedder(batch_size=0)
    with pytest.raises(ValueError, match="three tokens"):
        ar.Explainer(compare=("it", "animal"))
    e = ar.Embedder()
    with pytest.raises(ValueError, match="no column `text`"):
        e(pa.table({"body": ["x"]}))


def test_embed_parquet_never_replaces_a_file(tmp_path):
    """The destination is a folder of parts: a file (or a link to one) there is refused, kept."""
    mine = tmp_path / "mine.parquet"
    mine.write_text("my data")
    for dst in [mine, tmp_path / "link"]:
        if dst.name == "link":
            os.symlink(mine, dst)
        with pytest.raises(attend.InvalidArgument, match="not a folder"):
            ar.embed_parquet(str(tmp_path / "nothing.parquet"), str(dst))
    assert mine.read_text() == "my data"


def test_effects_per_text_in_map_batches(cluster):
    path = os.path.join(os.path.dirname(__file__), "..", "..", "crates", "attend-models", "tests", "tiny", "llama3.gguf")
    path = os.path.abspath(path)
    rows = [
        {"text": "The animal didn't cross the road because it was", "target": " tired"},
        {"text": "a cat sat on the", "target": None},
        {"text": None, "target": None},
    ]
    out = ray.data.from_items(rows).map_batches(
        ar.Effects,
        fn_constructor_kwargs={"model": path, "target_column": "target", "k": 3},
        concurrency=1,
        num_cpus=1,
        batch_format="pyarrow",
    ).take_all()
    lm = attend.load(path)
    for r, src in zip(out[:2], rows[:2]):
        e = lm.effect(src["text"], target=src["target"])
        assert r["error"] is None and r["target"] == e.target
        live = np.flatnonzero(e.removes_edges)
        want = live[np.argsort(-np.abs(e.delta[live]), kind="stable")][:3]
        assert r["top_sources"] == [e.sources[i] for i in want]
        np.testing.assert_allclose(r["top_source_delta"], e.delta[want], atol=1e-4)
        np.testing.assert_allclose(r["head_delta"], e.head_delta.reshape(-1), atol=1e-4)
        assert [(a, b) for a, b in zip(r["top_head_layer"], r["top_head_head"])] == [(l, h) for l, h, _ in e.heads_by_effect(3)]
    assert out[2]["error"] == "the text is missing (null)" and out[2]["head_delta"] is None
    direct = ar.Effects(model=path, target_column="target", heads=False)(pa.table({"text": ["a cat"], "target": [3]}))
    assert direct["error"].to_pylist() == ["the target is a int, not a string"]
    with pytest.raises(attend.InvalidArgument, match="sentence encoder"):
        ar.Effects(model="minilm", target_column="target")
    with pytest.raises(attend.InvalidArgument, match="no interventions"):
        ar.Effects(model="toy-winograd")
    with pytest.raises(attend.InvalidArgument, match="knockout"):
        ar.Effects(model=path, knockout="sideways")
    # an encoder: the effect on the sentence embedding
    out = ray.data.from_items([{"text": "The animal didn't cross the road because it was tired"}]).map_batches(
        ar.Effects, fn_constructor_kwargs={"model": "minilm", "k": 2}, concurrency=1, num_cpus=1, batch_format="pyarrow",
    ).take_all()
    e = attend.load("minilm").effect("The animal didn't cross the road because it was tired")
    assert out[0]["error"] is None and out[0]["target"] is None and out[0]["logp"] is None
    np.testing.assert_allclose(out[0]["head_delta"], e.head_delta.reshape(-1), atol=1e-6)
    assert out[0]["top_sources"] == [e.sources[i] for i in np.argsort(-np.abs(e.delta), kind="stable")[:2]]
