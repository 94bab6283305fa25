"""attend on Ray Data: corpus-scale embedding and attention statistics (imports Ray only when
used, i.e. when this module is imported).

The callable classes follow Ray Data's pattern for batch inference with a stateful model: the
model is loaded once per actor (in ``__init__``), and ``Dataset.map_batches`` feeds it batches::

    import ray, attend.ray
    ds = ray.data.read_parquet("corpus/")
    ds = ds.map_batches(attend.ray.Embedder, fn_constructor_kwargs={"model": "minilm"},
                        concurrency=2, num_cpus=1, batch_size=256, batch_format="pyarrow")
    ds.write_parquet("embeddings/")

or, for that common case, :func:`embed_parquet`. A text attend refuses (a null, a non-string,
longer than ``max_chars``, or one the model rejects) does not fail the job: its row gets a null
result and the message in the ``error`` column.
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

import ray  # noqa: F401  (this module is Ray's integration: importing it imports Ray)

import attend

__all__ = ["Embedder", "Explainer", "Effects", "embed_parquet", "DEFAULT_MAX_CHARS"]

#: Texts longer than this many characters are refused into the error column (the encoder
#: would truncate them at its token limit anyway; a runaway row should not cost a batch).
DEFAULT_MAX_CHARS = 100_000


def _table(batch):
    """The batch as a pyarrow Table. Ray hands over pyarrow Tables, pandas DataFrames or dicts
    of numpy arrays, as ``batch_format`` says."""
    import pyarrow as pa

    if isinstance(batch, pa.Table):
        return batch
    if isinstance(batch, dict):
        return pa.table({k: (list(v) if getattr(v, "ndim", 1) > 1 else v) for k, v in batch.items()})
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas comes with ray[data]
        pd = None
    if pd is not None and isinstance(batch, pd.DataFrame):
        return pa.Table.from_pandas(batch, preserve_index=False)
    raise TypeError(f"a batch must be a pyarrow Table, a pandas DataFrame or a dict of arrays, not {type(batch).__name__}")


def _texts(table, column: str, max_chars: int) -> Tuple[List[Optional[str]], List[Optional[str]]]:
    """The column's texts and, per row, why it is refused (``None`` when it is not)."""
    if column not in table.column_names:
        raise attend.InvalidArgument(f"the batch has no column `{column}`; its columns are {', '.join(table.column_names)}")
    texts: List[Optional[str]] = []
    errors: List[Optional[str]] = []
    for x in table.column(column).to_pylist():
        if isinstance(x, bytes):
            try:
                x = x.decode("utf-8")
            except UnicodeDecodeError as e:
                texts.append(None)
                errors.append(f"the text is not valid UTF-8: {e}")
                continue
        if x is None:
            texts.append(None)
            errors.append("the text is missing (null)")
        elif not isinstance(x, str):
            texts.append(None)
            errors.append(f"the text must be a string, not {type(x).__name__}")
        elif len(x) > max_chars:
            texts.append(None)
            errors.append(f"the text has {len(x)} characters, over the limit of {max_chars} (max_chars)")
        else:
            texts.append(x)
            errors.append(None)
    return texts, errors


def _with(table, columns: Dict[str, Any]):
    """`table` with `columns` set (replaced when the name exists, appended otherwise)."""
    for name, arr in columns.items():
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, arr)
        else:
            table = table.append_column(name, arr)
    return table


class Embedder:
    """Sentence embeddings of a text column, for ``Dataset.map_batches`` (one model per actor).

    ``model``: a name (``attend models``) or a BERT-family folder; ``column``: the texts;
    ``output_column``: the embeddings (a fixed-size list of float32, null on a refused row);
    ``threads``: attend's threads in this actor (give the actor as many CPUs);
    ``batch_size``: texts per call of the encoder inside a batch (bounds the actor's working
    memory whatever batch Ray hands over); ``max_chars``: longer texts are refused;
    ``error_column``: the message of a refused row, null otherwise; ``int8``: the encoder's
    linear layers in 8 bits (``attend.load(model, int8=True)``: faster, within cosine 0.999).

    Each output row equals ``attend.load(model, int8=int8).embed([text])[0]`` bit for bit: the
    encoder's results depend neither on the batch a text is in nor on the thread count."""

    def __init__(
        self,
        model: str = "minilm",
        column: str = "text",
        output_column: str = "embedding",
        threads: int = 1,
        batch_size: int = 256,
        max_chars: int = DEFAULT_MAX_CHARS,
        error_column: str = "error",
        int8: bool = False,
    ):
        if int(batch_size) < 1:
            raise attend.InvalidArgument(f"batch_size must be at least 1, not {batch_size}")
        attend.set_num_threads(int(threads))
        m = attend.load(model, int8=int8)
        if not isinstance(m, attend.Encoder):
            raise attend.ModelError(f"`{model}` is not a sentence encoder (Embedder needs one, e.g. minilm)")
        self.model, self.column, self.output_column = m, column, output_column
        self.batch_size, self.max_chars, self.error_column = int(batch_size), int(max_chars), error_column

    def _embed(self, texts: List[str]) -> Tuple[List[Optional[np.ndarray]], List[Optional[str]]]:
        """Embeddings of `texts`, in chunks; a chunk the model refuses is retried text by text,
        so that only the offending text is lost."""
        vecs: List[Optional[np.ndarray]] = []
        errs: List[Optional[str]] = []
        for i in range(0, len(texts), self.batch_size):
            chunk = texts[i : i + self.batch_size]
            try:
                out = self.model.embed(chunk)
                vecs.extend(out)
                errs.extend([None] * len(chunk))
            except attend.AttendError:
                for t in chunk:
                    try:
                        vecs.append(self.model.embed([t])[0])
                        errs.append(None)
                    except attend.AttendError as e:
                        vecs.append(None)
                        errs.append(str(e))
        return vecs, errs

    def __call__(self, batch):
        import pyarrow as pa

        table = _table(batch)
        texts, errors = _texts(table, self.column, self.max_chars)
        ok = [i for i, e in enumerate(errors) if e is None]
        vecs, errs = self._embed([texts[i] for i in ok])
        dim = next((v.shape[0] for v in vecs if v is not None), None)
        rows: List[Optional[np.ndarray]] = [None] * len(texts)
        for i, v, e in zip(ok, vecs, errs):
            rows[i], errors[i] = v, e
        if dim is None:
            emb = pa.nulls(len(rows), pa.list_(pa.float32()))
        else:
            flat = np.zeros((len(rows), dim), np.float32)
            valid = np.array([r is not None for r in rows], dtype=bool)
            for i, r in enumerate(rows):
                if r is not None:
                    flat[i] = r
            emb = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), dim, mask=pa.array(~valid))
        return _with(table, {self.output_column: emb, self.error_column: pa.array(errors, pa.string())})


class Explainer:
    """Attention statistics per text, for ``Dataset.map_batches``: for every layer × head
    (layer-major lists of ``layers × heads``) the viewer's head-atlas numbers — ``entropy``
    (bits, mean over the text's rows), ``sink_share`` (the weight given to the sink tokens) —
    and, with ``compare=(token, a, b)``, ``margin``: the weight ``token`` gives ``a`` minus
    the weight it gives ``b``. Not the matrices: a corpus's worth of those would not fit.
    Also ``tokens`` (the count). A text whose tokens lack one of ``compare``'s words keeps its
    entropy and sink share, with a null margin and the reason in ``error``."""

    def __init__(
        self,
        model: str = "minilm",
        column: str = "text",
        compare: Optional[Sequence[str]] = None,
        threads: int = 1,
        max_chars: int = DEFAULT_MAX_CHARS,
        error_column: str = "error",
    ):
        attend.set_num_threads(int(threads))
        self.model = attend.load(model)
        if compare is not None:
            compare = tuple(compare)
            if len(compare) != 3:
                raise attend.InvalidArgument("compare takes three tokens: (token, a, b)")
        self.column, self.compare = column, compare
        self.max_chars, self.error_column = int(max_chars), error_column

    def _one(self, text: str) -> Dict[str, Any]:
        ex = self.model.explain(text)
        atlas = ex.atlas()
        r: Dict[str, Any] = {
            "tokens": len(ex),
            "entropy": np.asarray(atlas["entropy"], np.float32).tolist(),
            "sink_share": np.asarray(atlas["sink_share"], np.float32).tolist(),
            "margin": None,
            "error": None,
        }
        if self.compare is not None:
            try:
                # the weights of the two keys from the trace itself (no dense copy of it)
                m = np.zeros((ex.layers, ex.heads), np.float32)
                for row in ex.compare(*self.compare):
                    m[row["layer"], row["head"]] = np.float32(row["a"]) - np.float32(row["b"])
                r["margin"] = m.reshape(-1).tolist()
            except attend.InvalidArgument as e:
                r["error"] = str(e)
        return r

    def __call__(self, batch):
        import pyarrow as pa

        table = _table(batch)
        texts, errors = _texts(table, self.column, self.max_chars)
        cols: Dict[str, List[Any]] = {"tokens": [], "entropy": [], "sink_share": [], "margin": []}
        for i, t in enumerate(texts):
            r: Dict[str, Any] = {"tokens": None, "entropy": None, "sink_share": None, "margin": None, "error": errors[i]}
            if t is not None:
                try:
                    r = self._one(t)
                except attend.AttendError as e:
                    r["error"] = str(e)
            for k in cols:
                cols[k].append(r[k])
            errors[i] = r["error"]
        f32 = pa.list_(pa.float32())
        return _with(
            table,
            {
                "tokens": pa.array(cols["tokens"], pa.int32()),
                "entropy": pa.array(cols["entropy"], f32),
                "sink_share": pa.array(cols["sink_share"], f32),
                "margin": pa.array(cols["margin"], f32),
                self.error_column: pa.array(errors, pa.string()),
            },
        )


class Effects:
    """Attention beside its causal effect per text, for ``Dataset.map_batches``: on a causal
    model (``CausalLM.effect``: each token knocked out, each head ablated; the prediction is
    the model's likeliest next token, or the text of ``target_column`` when given), or on an
    encoder (``Encoder.effect``: Δ is 1 − cos on the sentence embedding; no target). Per row:
    ``target`` and ``logp`` (the prediction measured), the ``k`` sources with the largest
    |Δ| (``top_sources``, their ``top_source_delta`` and ``top_source_attention``: the
    attention paid them, by the predicting position or, for an encoder, by the queries its
    embedding pools), the ``k`` heads with the largest |Δ|
    (``top_head_layer``, ``top_head_head``, ``top_head_delta``), ``spearman_attention`` (rank
    correlation of attention and |Δ|; null where undefined) and ``head_delta`` (the whole
    ``layers × heads`` grid, layer-major, for statistics over the corpus). A refused text gets
    nulls and the reason in ``error``."""

    def __init__(
        self,
        model: str = "smollm2",
        column: str = "text",
        target_column: Optional[str] = None,
        k: int = 5,
        words: bool = False,
        knockout: str = "later",
        heads: bool = True,
        threads: int = 1,
        max_chars: int = 4_000,
        error_column: str = "error",
    ):
        if isinstance(k, bool) or int(k) < 1:
            raise attend.InvalidArgument(f"k must be a positive count, not {k!r}")
        attend.set_num_threads(int(threads))
        self.model = attend.load(model)
        self.causal = isinstance(self.model, attend.CausalLM)
        if not self.causal and not isinstance(self.model, attend.Encoder):
            raise attend.InvalidArgument(f"`{model}` has no interventions: effects run on GGUF decoders and encoders")
        if knockout not in ("later", "predicting"):
            raise attend.InvalidArgument(f'knockout={knockout!r}: give "later" or "predicting"')
        if self.causal and not self.model._m.has_interventions:
            raise attend.InvalidArgument(f"`{model}` has no interventions: effects run on GGUF decoders and encoders")
        if not self.causal and (target_column is not None or knockout != "later"):
            raise attend.InvalidArgument(
                f"`{model}` is a sentence encoder, which predicts nothing: no target or knockout kind "
                "(its effects are 1 − cos on the sentence embedding)")
        self.column, self.target_column, self.k = column, target_column, int(k)
        self.words, self.knockout, self.heads = bool(words), str(knockout), bool(heads)
        self.max_chars, self.error_column = int(max_chars), error_column

    _COLUMNS = ("target", "logp", "top_sources", "top_source_delta", "top_source_attention",
                "top_head_layer", "top_head_head", "top_head_delta", "spearman_attention", "head_delta")

    def _one(self, text: str, target: Optional[str]) -> Dict[str, Any]:
        if self.causal:
            e = self.model.effect(text, target=target, knockout=self.knockout, words=self.words, heads=self.heads)
        else:
            e = self.model.effect(text, words=self.words, heads=self.heads)
        live = np.flatnonzero(e.removes_edges)
        order = live[np.argsort(-np.abs(e.delta[live]), kind="stable")][: self.k]
        heads = e.heads_by_effect(self.k)
        return {
            "target": e.target if self.causal else None,
            "logp": float(e.logp) if self.causal else None,
            "top_sources": [e.sources[i] for i in order],
            "top_source_delta": [float(e.delta[i]) for i in order],
            "top_source_attention": [float(e.attention[i]) for i in order],
            "top_head_layer": [int(l) for l, _, _ in heads],
            "top_head_head": [int(h) for _, h, _ in heads],
            "top_head_delta": [float(d) for _, _, d in heads],
            "spearman_attention": e.spearman["attention"],
            "head_delta": e.head_delta.reshape(-1).tolist(),
        }

    def __call__(self, batch):
        import pyarrow as pa

        table = _table(batch)
        texts, errors = _texts(table, self.column, self.max_chars)
        targets: List[Optional[str]] = [None] * len(texts)
        if self.target_column is not None:
            if self.target_column not in table.column_names:
                raise attend.InvalidArgument(f"the batch has no column `{self.target_column}`; its columns are {', '.join(table.column_names)}")
            targets = table[self.target_column].to_pylist()
        cols: Dict[str, List[Any]] = {c: [] for c in self._COLUMNS}
        for i, t in enumerate(texts):
            r: Dict[str, Any] = {c: None for c in self._COLUMNS}
            if t is not None:
                tg = targets[i]
                if tg is not None and not isinstance(tg, str):
                    errors[i] = f"the target is a {type(tg).__name__}, not a string"
                else:
                    try:
                        r = self._one(t, tg)
                    except attend.AttendError as e:
                        errors[i] = str(e)
            for c in cols:
                cols[c].append(r[c])
        f32, i32 = pa.list_(pa.float32()), pa.list_(pa.int32())
        return _with(
            table,
            {
                "target": pa.array(cols["target"], pa.string()),
                "logp": pa.array(cols["logp"], pa.float32()),
                "top_sources": pa.array(cols["top_sources"], pa.list_(pa.string())),
                "top_source_delta": pa.array(cols["top_source_delta"], f32),
                "top_source_attention": pa.array(cols["top_source_attention"], f32),
                "top_head_layer": pa.array(cols["top_head_layer"], i32),
                "top_head_head": pa.array(cols["top_head_head"], i32),
                "top_head_delta": pa.array(cols["top_head_delta"], f32),
                "spearman_attention": pa.array(cols["spearman_attention"], pa.float32()),
                "head_delta": pa.array(cols["head_delta"], f32),
                self.error_column: pa.array(errors, pa.string()),
            },
        )


def embed_parquet(
    src,
    dst: str,
    model: str = "minilm",
    column: str = "text",
    concurrency: int = 2,
    threads: int = 1,
    batch_size: int = 256,
    keep_text: bool = False,
    max_chars: int = DEFAULT_MAX_CHARS,
    block_bytes: int = 8 << 20,
) -> Dict[str, Any]:
    """Parquet in, Parquet out: embeds ``column`` of ``src`` (a file, a folder or a list of
    them) into the folder ``dst`` with ``concurrency`` actors of ``threads`` threads each, on
    the Ray cluster this process is connected to (a local one is started when there is none).

    Streaming: Ray reads, embeds and writes block by block (blocks of at most
    ``block_bytes``, split into ``batch_size`` texts per call), so memory is bounded by the
    block and batch sizes × ``concurrency`` and Ray's queue of blocks in flight, never by the
    corpus.
    The output keeps every column but the text (``keep_text=True`` keeps it too), in input
    order (files named by write task, in order), plus ``embedding`` and ``error``. Read and
    write tasks ask Ray for no CPU: they are I/O, and the actors would otherwise hold every
    CPU of a small machine while a read waits for one (no progress, ever).

    ``dst`` must be new or empty (Ray adds files to a folder: a second run into the same one
    would mix its rows with the first's).

    Faults: a killed actor is restarted and its batches retried by Ray; a retried write task
    rewrites its own file (the name is fixed by the task, not the attempt), so no row is lost
    or written twice. Returns ``{"rows", "errors", "seconds"}``."""
    import pyarrow.parquet as pq
    from ray.data import DataContext

    dst = str(dst)
    if "://" not in dst and os.path.isdir(dst) and os.listdir(dst):
        # Ray appends to a folder: a second run would mix its rows with the first's
        raise attend.InvalidArgument(f"{dst} already holds files: give embed_parquet a new or empty folder")
    if "://" not in dst and os.path.lexists(dst) and not os.path.isdir(dst):
        # Ray writes a folder of parts: a file (or anything else) at dst would be replaced
        raise attend.InvalidArgument(f"{dst} is not a folder: give embed_parquet a new or empty folder")
    if not ray.is_initialized():
        ray.init()
    ctx = DataContext.get_current()
    saved = (ctx.execution_options.preserve_order, getattr(ctx, "use_datasource_v2", None), ctx.target_max_block_size)
    ctx.execution_options.preserve_order = True
    # blocks of at most `block_bytes` (Ray's default is 128 MiB): what an actor holds at once
    ctx.target_max_block_size = int(block_bytes)
    if saved[1] is not None:
        # Ray's newer Parquet reader lists files in a task that always takes a whole CPU
        ctx.use_datasource_v2 = False
    t0 = time.perf_counter()
    try:
        ds = ray.data.read_parquet(src, num_cpus=0)
        ds = ds.map_batches(
            Embedder,
            fn_constructor_kwargs={
                "model": model,
                "column": column,
                "threads": threads,
                "batch_size": batch_size,
                "max_chars": max_chars,
            },
            concurrency=int(concurrency),
            num_cpus=threads,
            batch_size=batch_size,
            batch_format="pyarrow",
        )
        if not keep_text:
            ds = ds.drop_columns([column])
        ds.write_parquet(dst, ray_remote_args={"num_cpus": 0})
    finally:
        ctx.execution_options.preserve_order = saved[0]
        ctx.target_max_block_size = saved[2]
        if saved[1] is not None:
            ctx.use_datasource_v2 = saved[1]
    seconds = time.perf_counter() - t0
    rows = errors = 0
    for piece in pq.ParquetDataset(dst).fragments:
        col = piece.to_table(columns=["error"]).column("error")
        rows += len(col)
        errors += len(col) - col.null_count
    return {"rows": rows, "errors": errors, "seconds": seconds}
