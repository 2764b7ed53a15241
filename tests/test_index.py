"""The LanceDB index stage: schema, normalised vectors, native FTS, caching and ANN recall."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from conftest import compose_config
from test_evaluate import LIVE_QUERIES, LIVE_TEXTS, make_split

from rerank_sweeps import evaluate as ev
from rerank_sweeps import index
from rerank_sweeps.cache import Cache, stage_key
from rerank_sweeps.config import UserError
from rerank_sweeps.validation import validate


def _conf(root, *overrides):
    return validate(compose_config(["experiment=tiny", f"paths.root={root}", *overrides]))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("index")
    conf = _conf(root / "outputs", "eval.device=cpu")
    cache = Cache(conf.paths.cache)
    texts = {f"c{i}": t for i, t in enumerate(LIVE_TEXTS)}
    split = make_split(root / "split", texts, LIVE_QUERIES)
    return conf, cache, split, index.index_stage(conf, cache, split)


def test_table_schema_rows_and_unit_vectors(built):
    _, _, _, art = built
    table = index.open_table(art)
    schema = table.schema
    assert schema.field("id").type == pa.string()
    assert schema.field("text").type == pa.string()
    assert schema.field("vector").type == pa.list_(pa.float32(), 384)
    data = table.to_arrow()
    assert data["id"].to_pylist() == [f"c{i}" for i in range(len(LIVE_TEXTS))]
    assert data["text"].to_pylist() == LIVE_TEXTS
    vectors = np.stack(data["vector"].to_numpy(zero_copy_only=False))
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    stats = json.loads((art.path / "stats.json").read_text())
    assert stats["rows"] == len(LIVE_TEXTS) and stats["dim"] == 384 and stats["ann"] is None


def test_native_fts_index_answers_bm25_queries(built):
    _, _, _, art = built
    table = index.open_table(art)
    fts = [i for i in table.list_indices() if i.index_type == "FTS"]
    assert [i.columns for i in fts] == [["text"]]
    got = (
        table.search("honey insect", query_type="fts").select(["id", "_score"]).limit(3).to_arrow()
    )
    assert got["id"].to_pylist()[0] == "c20"


def test_index_is_cached_on_corpus_and_embedder_only(built):
    conf, cache, split, art = built
    again = index.index_stage(conf, cache, split)
    assert again.hit and again.key == art.key
    bigger_batches = _conf(conf.paths.root, "index.batch_size=7")
    other_embedder = _conf(
        conf.paths.root, "index.embedder=sentence-transformers/all-mpnet-base-v2"
    )
    key = stage_key("index", index.INDEX_VERSION, index.index_key(bigger_batches), [split])
    assert key == art.key  # batch size does not change the table
    key = stage_key("index", index.INDEX_VERSION, index.index_key(other_embedder), [split])
    assert key != art.key


def test_missing_corpus_is_one_line_user_error(tmp_path):
    (tmp_path / "split").mkdir()
    with pytest.raises(UserError, match=r"corpus.jsonl is missing") as err:
        index.read_corpus(tmp_path / "split")
    assert "\n" not in str(err.value)


def test_ann_index_reports_recall_against_exact_search(tmp_path):
    # IVF_FLAT probing every partition is exhaustive: its recall must be exactly 1.
    conf = _conf(
        tmp_path / "outputs",
        "eval.device=cpu",
        "index.ann=IVF_FLAT",
        "index.ann_partitions=2",
        "index.ann_nprobes=2",
        "top_k=[2]",
        "overfetch=2",
        "eval.depth=null",  # the blog's overfetch x k protocol
    )
    cache = Cache(conf.paths.cache)
    texts = {f"c{i}": t for i, t in enumerate(LIVE_TEXTS)}
    split = make_split(tmp_path / "split", texts, LIVE_QUERIES)
    art = index.index_stage(conf, cache, split)
    table = index.open_table(art)
    assert index.has_ann_index(table)
    stats = json.loads((art.path / "stats.json").read_text())
    assert stats["ann"] == "IVF_FLAT"
    assert stats["ann_recall"] == {"recall@10": 1.0}  # 24 rows: no recall@100
    cands = ev.candidates_stage(conf, cache, split, art)
    cstats = json.loads((cands.path / "stats.json").read_text())
    assert cstats["vector_search"] == "ann" and cstats["ann_recall@4"] == 1.0
