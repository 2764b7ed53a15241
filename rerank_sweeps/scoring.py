"""Model systems: every unique (query, candidate) pair scored once (the cached scores stage),
then each query's candidates reranked through the model's LanceDB `Reranker` interface.

No silent failures: an exception while scoring or reranking a query ends the run with an
`EvaluationError` naming the query.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from rerank_sweeps.archs import load_reranker
from rerank_sweeps.cache import Artifact, Cache
from rerank_sweeps.candidates import EvalItem, EvaluationError, leg_prefix, load_items
from rerank_sweeps.config import RunConfig, UserError
from rerank_sweeps.data.files import read_jsonl
from rerank_sweeps.index import read_corpus
from rerank_sweeps.machine import resolve_bf16
from rerank_sweeps.rerankers import ModelReranker

SCORES_VERSION = 1


def unique_pairs(items: Sequence[EvalItem], texts: dict[str, str]) -> list[tuple[int, str]]:
    """(item index, doc id) for every document any leg retrieved for any query, once."""
    pairs = []
    for n, item in enumerate(items):
        ids: dict[str, None] = {}
        for leg in ("vector", "fts"):
            if leg in item.legs:
                ids.update(dict.fromkeys(item.legs[leg]["ids"]))
        pairs.extend((n, doc) for doc in ids)
    missing = {doc for _, doc in pairs if doc not in texts}
    if missing:
        raise UserError(
            f"{len(missing)} candidate ids are not in the corpus (e.g. {sorted(missing)[0]})"
        )
    return pairs


def _describe(item: EvalItem) -> str:
    question = item.question if len(item.question) <= 80 else item.question[:77] + "..."
    return f"query {item.qid} ({question!r})"


def score_items(
    reranker: ModelReranker, items: Sequence[EvalItem], texts: dict[str, str], system: str
) -> list[np.ndarray]:
    """Model scores of each item's unique candidates (per item, in `unique_pairs` order).

    One batched pass over all pairs; if it raises, the queries are rescored one at a time to
    name the one that fails.
    """
    pairs = unique_pairs(items, texts)
    questions = [items[n].question for n, _ in pairs]
    docs = [texts[d] for _, d in pairs]
    try:
        flat = reranker.score_pairs(questions, docs)
    except Exception as batch_err:
        for item in items:
            try:
                rows = [texts[d] for n, d in pairs if items[n] is item]
                reranker.score_pairs([item.question] * len(rows), rows)
            except Exception as err:
                raise EvaluationError(
                    f"system {system!r} failed on {_describe(item)}: {type(err).__name__}: {err}"
                ) from err
        raise EvaluationError(
            f"system {system!r} failed while scoring a batch (no single query reproduces it): "
            f"{type(batch_err).__name__}: {batch_err}"
        ) from batch_err
    if not np.all(np.isfinite(flat)):
        bad = items[pairs[int(np.flatnonzero(~np.isfinite(flat))[0])][0]]
        raise EvaluationError(f"system {system!r} gave a non-finite score on {_describe(bad)}")
    out: list[list[float]] = [[] for _ in items]
    for (n, _), value in zip(pairs, flat.tolist(), strict=True):
        out[n].append(value)
    return [np.asarray(v, dtype=np.float32) for v in out]


def scores_key(conf: RunConfig, device: str) -> dict[str, Any]:
    """What changes a model's scores beyond its inputs: device type and bf16 (not batch size)."""
    return {"device": device.split(":")[0], "bf16": resolve_bf16(conf.eval.bf16, device)}


def scores_stage(
    conf: RunConfig,
    cache: Cache,
    split_art: Artifact,
    cand_art: Artifact,
    model_art: Artifact,
    system: str,
) -> Artifact:
    """Scores of every unique (query, candidate) pair by one model, cached per model x candidates."""
    from rerank_sweeps.index import resolve_device

    device = resolve_device(conf.eval.device)

    def build(out_dir: Path, work_dir: Path) -> None:
        started = time.perf_counter()
        items = load_items(split_art, cand_art)
        ids, texts_list = read_corpus(split_art.path)
        texts = dict(zip(ids, texts_list, strict=True))
        reranker = load_reranker(model_art.path, device, conf.eval.bf16, conf.eval.batch_size)
        scores = score_items(reranker, items, texts, system)
        with (out_dir / "scores.jsonl").open("w", encoding="utf-8") as f:
            for item, values in zip(items, scores, strict=True):
                f.write(json.dumps({"qid": item.qid, "scores": values.tolist()}) + "\n")
        stats = {
            "pairs": int(sum(len(v) for v in scores)),
            "device": reranker.device,
            "bf16": reranker.bf16,
            "batch_size": reranker.batch_size,
            "forward_seconds": round(reranker.forward_seconds, 3),
            "seconds": round(time.perf_counter() - started, 3),
        }
        (out_dir / "stats.json").write_text(json.dumps(stats, indent=2))

    return cache.stage(
        "scores", SCORES_VERSION, scores_key(conf, device), [split_art, cand_art, model_art], build
    )


def read_scores(
    scores_art: Artifact, items: Sequence[EvalItem], texts: dict[str, str]
) -> list[tuple[tuple[str, str], float]]:
    """((question, text), score) for every scored pair, aligned with `unique_pairs`."""
    rows = {r["qid"]: r["scores"] for r in read_jsonl(scores_art.path / "scores.jsonl")}
    pairs = unique_pairs(items, texts)
    flat: list[float] = []
    for item in items:
        flat.extend(rows[item.qid])
    if len(flat) != len(pairs):
        raise UserError(f"{scores_art.path} does not match the candidates: stale artifact?")
    return [((items[n].question, texts[d]), s) for (n, d), s in zip(pairs, flat, strict=True)]


def leg_table(item: EvalItem, leg: str, depth: int, texts: dict[str, str]) -> pa.Table:
    """One leg's prefix as the pyarrow table LanceDB would hand a reranker."""
    rows = leg_prefix(item, leg, depth)
    score_col = "_distance" if leg == "vector" else "_score"
    values = rows["distances"] if leg == "vector" else rows["scores"]
    return pa.table(
        {
            "id": pa.array(rows["ids"], type=pa.string()),
            "text": pa.array([texts[i] for i in rows["ids"]], type=pa.string()),
            score_col: pa.array(values, type=pa.float32()),
            "_rowid": pa.array(rows["rowids"], type=pa.uint64()),
        }
    )


def reranked_ranking(
    reranker: Any, item: EvalItem, query_type: str, depth: int, texts: dict[str, str]
) -> list[str]:
    """The candidate set reranked through the reranker's LanceDB `rerank_*` method."""
    if query_type == "vector":
        out = reranker.rerank_vector(item.question, leg_table(item, "vector", depth, texts))
    elif query_type == "fts":
        out = reranker.rerank_fts(item.question, leg_table(item, "fts", depth, texts))
    else:
        out = reranker.rerank_hybrid(
            item.question,
            leg_table(item, "vector", depth, texts),
            leg_table(item, "fts", depth, texts),
        )
    return out["id"].to_pylist()
