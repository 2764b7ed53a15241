"""The LanceDB table the rerankers are evaluated in: corpus vectors plus a native FTS index.

One embedded LanceDB database per (corpus, embedder) lives inside a cached artifact
(`<artifact>/lancedb`, table "corpus"; no server). Columns: `id` (str), `text` (str) and
`vector` (float32 fixed-size list, L2-normalised, so LanceDB's "dot" distance is the cosine
distance). The vectors come from `conf.index.embedder`, never from the reranker under test,
so the retriever does not change when the reranker does. Vector search is exact (a flat
scan) unless `conf.index.ann` names an ANN index; then the artifact's stats.json records its
recall against exact search.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from rerank_sweeps.cache import Artifact, Cache
from rerank_sweeps.config import RunConfig, UserError
from rerank_sweeps.console import progress
from rerank_sweeps.data.files import read_jsonl

log = logging.getLogger(__name__)

INDEX_VERSION = 1
TABLE_NAME = "corpus"
DB_DIR = "lancedb"
# Normalised vectors: 1 - dot is the cosine distance, and the cheapest exact kernel.
DISTANCE = "dot"
INGEST_CHUNK = 8192
# Depths at which the index stage reports an ANN index's recall against exact search.
ANN_RECALL_DEPTHS = (10, 100)


def read_corpus(split_dir: Path) -> tuple[list[str], list[str]]:
    """(ids, texts) of the split's corpus.jsonl, in file order."""
    rows = read_jsonl(Path(split_dir) / "corpus.jsonl")
    ids = [str(r["id"]) for r in rows]
    if len(set(ids)) != len(ids):
        raise UserError(f"{split_dir}/corpus.jsonl has duplicate ids")
    return ids, [str(r["text"]) for r in rows]


def resolve_device(device: str = "auto") -> str:
    """'cuda' when asked for or available under 'auto', else 'cpu'."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' was requested but torch sees no CUDA device")
    return device


def load_embedder(model_id: str, device: str = "auto") -> Any:
    """The sentence-transformers bi-encoder `model_id` (an offline copy when one is known)."""
    from sentence_transformers import SentenceTransformer

    from rerank_sweeps.models import hub_unavailable, resolve_model

    path = resolve_model(model_id)
    try:
        return SentenceTransformer(path, device=resolve_device(device))
    except OSError as err:
        raise hub_unavailable(model_id, err) from None


def embed(model: Any, texts: Sequence[str], batch_size: int, desc: str) -> np.ndarray:
    """Unit-length float32 embeddings of `texts`, one row per text, with a progress bar."""
    dim = model.get_sentence_embedding_dimension()
    out = np.empty((len(texts), dim), dtype=np.float32)
    # Chunks larger than a batch keep sentence-transformers' length sorting effective while
    # our bar shows progress over the whole list.
    step = max(batch_size * 16, 1)
    with progress(total=len(texts), desc=desc, unit="text", disable=not desc) as bar:
        for start in range(0, len(texts), step):
            chunk = list(texts[start : start + step])
            vecs = model.encode(
                chunk,
                batch_size=batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            out[start : start + len(chunk)] = vecs.astype(np.float32, copy=False)
            bar.update(len(chunk))
    return out


def _table_schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("text", pa.string(), nullable=False),
            pa.field("vector", pa.list_(pa.float32(), dim), nullable=False),
        ]
    )


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def write_table(db_dir: Path, ids: Sequence[str], texts: Sequence[str], vectors: np.ndarray) -> Any:
    """Create the "corpus" table in `db_dir` (chunked, with a bar) and its native FTS index."""
    import lancedb
    from lancedb.index import FTS

    if not len(ids):
        raise UserError("the corpus is empty: nothing to index")
    dim = int(vectors.shape[1])
    db = lancedb.connect(str(db_dir))
    table = db.create_table(TABLE_NAME, schema=_table_schema(dim))
    with progress(total=len(ids), desc="ingest into LanceDB", unit="row") as bar:
        for part in _chunks(len(ids), INGEST_CHUNK):
            flat = pa.array(np.ascontiguousarray(vectors[part]).ravel(), type=pa.float32())
            batch = pa.table(
                {
                    "id": pa.array(ids[part], type=pa.string()),
                    "text": pa.array(texts[part], type=pa.string()),
                    "vector": pa.FixedSizeListArray.from_arrays(flat, dim),
                },
                schema=_table_schema(dim),
            )
            table.add(batch)
            bar.update(part.stop - part.start)
    # Native (Lance) inverted index; the tantivy path is gone in lancedb 0.40.
    table.create_index("text", config=FTS())
    return table


def create_ann_index(table: Any, conf: RunConfig) -> None:
    """Build `conf.index.ann` on the vector column, or raise a one-line UserError."""
    n = table.count_rows()
    kind = conf.index.ann
    partitions = conf.index.ann_partitions or max(1, int(round(np.sqrt(n))))
    try:
        table.create_index(
            metric=DISTANCE,
            vector_column_name="vector",
            index_type=kind,
            num_partitions=partitions,
        )
    except Exception as err:  # lance raises plain RuntimeErrors with multi-line texts
        first = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise UserError(
            f"index.ann={kind} could not be built on {n} rows ({partitions} partitions): {first}"
        ) from None


def vector_search(
    table: Any,
    queries: np.ndarray,
    depth: int,
    *,
    exact: bool,
    nprobes: int | None = None,
    refine_factor: int | None = None,
    batch_size: int = 128,
    desc: str | None = None,
) -> list[dict[str, list]]:
    """Top-`depth` rows for each query vector: [{"ids", "rowids", "distances"}] in query order.

    Queries go to LanceDB in batches (one multi-vector query per batch: an order of magnitude
    cheaper than one query each). `_distance` and `_rowid` are selected explicitly, so lance
    logs no auto-projection warning per query. Within a query LanceDB orders by (distance,
    row id), which is the order we keep.
    """
    results: list[dict[str, list]] = [
        {"ids": [], "rowids": [], "distances": []} for _ in range(len(queries))
    ]
    bar = progress(
        total=len(queries), desc=desc or "vector search", unit="query", disable=desc == ""
    )
    for part in _chunks(len(queries), batch_size):
        batch = np.ascontiguousarray(queries[part], dtype=np.float32)
        # A single vector is a plain query (no query_index column): keep the batch shape.
        builder = table.search(batch if len(batch) > 1 else batch[0], vector_column_name="vector")
        builder = builder.distance_type(DISTANCE).select(["id", "_distance"]).with_row_id(True)
        if exact:
            builder = builder.bypass_vector_index()
        else:
            if nprobes is not None:
                builder = builder.nprobes(nprobes)
            if refine_factor is not None:
                builder = builder.refine_factor(refine_factor)
        got = builder.limit(depth).to_arrow()
        qidx = (
            got["query_index"].to_numpy()
            if "query_index" in got.column_names
            else np.zeros(got.num_rows, dtype=np.int64)
        )
        ids = got["id"].to_pylist()
        rowids = got["_rowid"].to_pylist()
        dists = got["_distance"].to_pylist()
        for i, qi in enumerate(qidx.tolist()):
            row = results[part.start + qi]
            row["ids"].append(ids[i])
            row["rowids"].append(rowids[i])
            row["distances"].append(dists[i])
        bar.update(part.stop - part.start)
    bar.close()
    return results


def recall_against(
    exact: list[dict[str, list]], approx: list[dict[str, list]], depth: int
) -> float:
    """Mean |approx top-depth ∩ exact top-depth| / |exact top-depth| over queries."""
    ratios = []
    for e, a in zip(exact, approx, strict=True):
        truth = set(e["ids"][:depth])
        if truth:
            ratios.append(len(truth & set(a["ids"][:depth])) / len(truth))
    return float(np.mean(ratios)) if ratios else float("nan")


def index_key(conf: RunConfig) -> dict[str, Any]:
    """The config the index stage reads that changes the table (batch size does not)."""
    key: dict[str, Any] = {"embedder": conf.index.embedder, "ann": conf.index.ann}
    if conf.index.ann is not None:
        key["ann_partitions"] = conf.index.ann_partitions
    return key


def known_vectors(index_art: Artifact | None) -> dict[str, np.ndarray]:
    """text -> vector of every row of another index artifact (empty without one)."""
    if index_art is None:
        return {}
    rows = open_table(index_art).to_arrow().select(["text", "vector"])
    vectors = np.asarray(rows["vector"].combine_chunks().flatten().to_numpy(), dtype=np.float32)
    matrix = vectors.reshape(rows.num_rows, -1)
    return dict(zip(rows["text"].to_pylist(), matrix, strict=True))


def embed_reusing(
    conf: RunConfig, texts: Sequence[str], known: dict[str, np.ndarray], desc: str
) -> np.ndarray:
    """Embeddings of `texts`, taking those in `known` (same embedder) instead of encoding them."""
    todo = list(dict.fromkeys(t for t in texts if t not in known))
    if todo:
        embedder = load_embedder(conf.index.embedder, conf.eval.device)
        known = {
            **known,
            **dict(zip(todo, embed(embedder, todo, conf.index.batch_size, desc), strict=True)),
        }
    if not texts:
        return np.empty((0, 0), dtype=np.float32)
    return np.stack([known[t] for t in texts]).astype(np.float32, copy=False)


def index_stage(
    conf: RunConfig, cache: Cache, split_art: Artifact, reuse: Artifact | None = None
) -> Artifact:
    """The LanceDB table of the split's corpus (cached on the corpus and the embedder).

    `reuse`: another index artifact of the same embedder whose vectors are taken for the texts
    it holds (it does not enter the key: the vectors are the same either way).
    """

    def build(out_dir: Path, work_dir: Path) -> None:
        started = time.perf_counter()
        ids, texts = read_corpus(split_art.path)
        known = known_vectors(reuse) if reuse is not None else {}
        vectors = embed_reusing(conf, texts, known, "embed corpus")
        embedded = time.perf_counter()
        table = write_table(out_dir / DB_DIR, ids, texts, vectors)
        stats: dict[str, Any] = {
            "rows": len(ids),
            "dim": int(vectors.shape[1]),
            "embedder": conf.index.embedder,
            "distance": DISTANCE,
            "fts": "native",
            "ann": conf.index.ann,
            "embed_seconds": round(embedded - started, 3),
            "reused_vectors": sum(1 for t in texts if t in known),
            "ingest_seconds": round(time.perf_counter() - embedded, 3),
        }
        if conf.index.ann is not None:
            create_ann_index(table, conf)
            embedder = load_embedder(conf.index.embedder, conf.eval.device)
            questions = [str(r["question"]) for r in read_jsonl(split_art.path / "eval.jsonl")]
            qvecs = embed(embedder, questions, conf.index.batch_size, "embed eval queries")
            depth = min(max(ANN_RECALL_DEPTHS), len(ids))
            exact = vector_search(table, qvecs, depth, exact=True, desc="exact search")
            approx = vector_search(
                table,
                qvecs,
                depth,
                exact=False,
                nprobes=conf.index.ann_nprobes,
                refine_factor=conf.index.ann_refine_factor,
                desc="ANN search",
            )
            stats["ann_recall"] = {
                f"recall@{d}": recall_against(exact, approx, d)
                for d in ANN_RECALL_DEPTHS
                if d <= len(ids)
            }
            stats["ann_recall_queries"] = len(questions)
        (out_dir / "stats.json").write_text(json.dumps(stats, indent=2))

    return cache.stage("index", INDEX_VERSION, index_key(conf), [split_art], build)


def open_table(art: Artifact | Path | str) -> Any:
    """The "corpus" table of an index artifact (or of its directory)."""
    import lancedb

    path = art.path if isinstance(art, Artifact) else Path(art)
    return lancedb.connect(str(path / DB_DIR)).open_table(TABLE_NAME)


def has_ann_index(table: Any) -> bool:
    """Whether the table's vector column carries an ANN index."""
    return any("vector" in idx.columns and idx.index_type != "FTS" for idx in table.list_indices())
