"""The candidates stage and the candidate sets: what every system reranks, and the orders
that need no model.

- Candidates: each leg (vector, FTS) retrieves D = eval.depth rows per eval query once, and
  every k reranks those same D per leg (so metrics are monotone in k). With eval.depth=null
  (the blog's protocol) D = overfetch * max(top_k) and a smaller k reranks each leg's prefix
  of depth overfetch * k. Hybrid merges the two legs and de-duplicates them by row (vector
  order first), so it reranks up to twice one leg's candidates.
- Systems without a model, on that candidate set: `baseline` (distance order, BM25 order,
  LanceDB's RRF for hybrid) and `ceiling` (relevant candidates first: hit@k of the candidate
  set; no reranker can beat it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rerank_sweeps.cache import Artifact, Cache
from rerank_sweeps.config import RunConfig, UserError
from rerank_sweeps.console import progress
from rerank_sweeps.data.files import read_jsonl
from rerank_sweeps.fusion import RRF_K, rrf_scores
from rerank_sweeps.index import (
    embed,
    has_ann_index,
    load_embedder,
    open_table,
    recall_against,
    vector_search,
)

CANDIDATES_VERSION = 1
FTS_THREADS = 4  # LanceDB runs queries on its own runtime; a few in flight hide its latency


class EvaluationError(RuntimeError):
    """Evaluating one query failed: the run stops and the message names the query."""


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalItem:
    """One eval query with its relevance set and its retrieved legs."""

    qid: str
    question: str
    relevant: frozenset[str]
    legs: dict[str, dict[str, list]] = field(default_factory=dict)


def read_eval_queries(split_dir: Path) -> list[tuple[str, str, list[str]]]:
    """(qid, question, relevant ids) of the split's eval.jsonl, in file order."""
    rows = read_jsonl(Path(split_dir) / "eval.jsonl")
    out = [(str(r["qid"]), str(r["question"]), [str(x) for x in r["relevant"]]) for r in rows]
    if len({q for q, _, _ in out}) != len(out):
        raise UserError(f"{split_dir}/eval.jsonl has duplicate qids")
    return out


def legs_for(types: Sequence[str]) -> list[str]:
    """The retrieval legs the query types need (hybrid needs both)."""
    legs = set()
    for t in types:
        legs.update(("vector", "fts") if t == "hybrid" else (t,))
    return sorted(legs)


def depth_for(conf: RunConfig, k: int | None = None) -> int:
    """Candidates per leg for metrics @k (k None: the retrieval itself, i.e. the deepest).

    `eval.depth` for every k; with `eval.depth=null`, the blog's overfetch * k.
    """
    if conf.eval.depth is not None:
        return conf.eval.depth
    return conf.overfetch * (k if k is not None else max(conf.top_k))


# --------------------------------------------------------------------------------------------
# Candidates stage
# --------------------------------------------------------------------------------------------


def fts_search(
    table: Any, questions: Sequence[str], depth: int, threads: int = FTS_THREADS
) -> list[dict[str, list]]:
    """BM25 top-`depth` for each question: [{"ids", "rowids", "scores"}] in question order."""

    def one(question: str) -> dict[str, list]:
        got = (
            table.search(question, query_type="fts")
            .select(["id", "_score"])
            .with_row_id(True)
            .limit(depth)
            .to_arrow()
        )
        return {
            "ids": got["id"].to_pylist(),
            "rowids": got["_rowid"].to_pylist(),
            "scores": got["_score"].to_pylist(),
        }

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(
            progress(
                pool.map(one, questions), total=len(questions), desc="FTS search", unit="query"
            )
        )


def retrieve(
    conf: RunConfig, table: Any, questions: Sequence[str], legs: Sequence[str], depth: int
) -> tuple[dict[str, list[dict[str, list]]], dict[str, Any]]:
    """Both legs for every question (batched), and timing/ANN statistics."""
    stats: dict[str, Any] = {}
    out: dict[str, list[dict[str, list]]] = {}
    if "vector" in legs:
        started = time.perf_counter()
        embedder = load_embedder(conf.index.embedder, conf.eval.device)
        qvecs = embed(embedder, questions, conf.index.batch_size, "embed eval queries")
        stats["embed_seconds"] = round(time.perf_counter() - started, 3)
        started = time.perf_counter()
        ann = has_ann_index(table)
        out["vector"] = vector_search(
            table,
            qvecs,
            depth,
            exact=not ann,
            nprobes=conf.index.ann_nprobes,
            refine_factor=conf.index.ann_refine_factor,
            desc="vector search" + (" (ANN)" if ann else " (exact)"),
        )
        stats["vector_seconds"] = round(time.perf_counter() - started, 3)
        stats["vector_search"] = "ann" if ann else "exact"
        if ann:
            exact = vector_search(table, qvecs, depth, exact=True, desc="exact search (recall)")
            stats[f"ann_recall@{depth}"] = recall_against(exact, out["vector"], depth)
    if "fts" in legs:
        started = time.perf_counter()
        out["fts"] = fts_search(table, questions, depth)
        stats["fts_seconds"] = round(time.perf_counter() - started, 3)
        stats["fts_empty"] = sum(1 for r in out["fts"] if not r["ids"])
        stats["fts_short"] = sum(1 for r in out["fts"] if len(r["ids"]) < depth)
    return out, stats


def candidates_key(
    conf: RunConfig, legs: Sequence[str] | None = None, depth: int | None = None
) -> dict[str, Any]:
    """The config the candidates stage reads; the model is not part of it."""
    key: dict[str, Any] = {
        "legs": sorted(legs) if legs is not None else legs_for(conf.query_type.types),
        "depth": depth if depth is not None else depth_for(conf),
    }
    if conf.index.ann is not None:  # query-time ANN settings change the vector leg
        key["ann_nprobes"] = conf.index.ann_nprobes
        key["ann_refine_factor"] = conf.index.ann_refine_factor
    return key


def candidates_stage(
    conf: RunConfig,
    cache: Cache,
    split_art: Artifact,
    index_art: Artifact,
    query_types: Sequence[str] | None = None,
    depth: int | None = None,
) -> Artifact:
    """Each leg's top-D rows for every eval query, retrieved once (cached without the model).

    The key holds the legs the query types need (hybrid = vector + fts, so `query_type=all`
    and `query_type=hybrid` share one artifact), the depth, the split and the table.
    `query_types` and `depth` default to the evaluation's (the dev signal sets its own).
    """
    legs = legs_for(query_types if query_types is not None else conf.query_type.types)
    depth = depth if depth is not None else depth_for(conf)

    def build(out_dir: Path, work_dir: Path) -> None:
        started = time.perf_counter()
        queries = read_eval_queries(split_art.path)
        results, stats = retrieve(
            conf, open_table(index_art), [q for _, q, _ in queries], legs, depth
        )
        with (out_dir / "candidates.jsonl").open("w", encoding="utf-8") as f:
            for i, (qid, question, _) in enumerate(queries):
                row = {"qid": qid, "question": question}
                row.update({leg: results[leg][i] for leg in legs})
                f.write(json.dumps(row) + "\n")
        stats.update(
            {
                "queries": len(queries),
                "legs": legs,
                "depth": depth,
                "seconds": round(time.perf_counter() - started, 3),
            }
        )
        (out_dir / "stats.json").write_text(json.dumps(stats, indent=2))

    return cache.stage(
        "candidates",
        CANDIDATES_VERSION,
        candidates_key(conf, legs, depth),
        [split_art, index_art],
        build,
    )


def load_items(split_art: Artifact | Path, cand_art: Artifact | Path) -> list[EvalItem]:
    """Eval queries (relevance from the split) joined with their cached legs."""
    split_dir = split_art.path if isinstance(split_art, Artifact) else Path(split_art)
    cand_dir = cand_art.path if isinstance(cand_art, Artifact) else Path(cand_art)
    queries = read_eval_queries(split_dir)
    rows = {r["qid"]: r for r in read_jsonl(cand_dir / "candidates.jsonl")}
    items = []
    for qid, question, relevant in queries:
        row = rows.get(qid)
        if row is None:
            raise UserError(f"query {qid} has no candidates in {cand_dir}: stale artifact?")
        legs = {leg: row[leg] for leg in ("vector", "fts") if leg in row}
        items.append(EvalItem(qid, question, frozenset(relevant), legs))
    return items


# --------------------------------------------------------------------------------------------
# Candidate sets and the systems that need no model
# --------------------------------------------------------------------------------------------


def leg_prefix(item: EvalItem, leg: str, depth: int) -> dict[str, list]:
    """The first `depth` rows of one leg."""
    rows = item.legs[leg]
    return {name: values[:depth] for name, values in rows.items()}


def merged_candidates(vector: Sequence[str], fts: Sequence[str]) -> list[str]:
    """Vector ids in order, then FTS ids not seen yet, in order (the hybrid candidate set)."""
    seen = set(vector)
    return list(vector) + [i for i in dict.fromkeys(fts) if i not in seen]


def candidate_ids(item: EvalItem, query_type: str, depth: int) -> list[str]:
    """The candidate ids of one query type at per-leg depth `depth`, in incoming order."""
    if query_type == "hybrid":
        return merged_candidates(
            item.legs["vector"]["ids"][:depth], item.legs["fts"]["ids"][:depth]
        )
    return list(item.legs[query_type]["ids"][:depth])


def rrf_order(vector: dict[str, list], fts: dict[str, list], k: int = RRF_K) -> list[str]:
    """Hybrid baseline: LanceDB's `RRFReranker` order exactly, ties included.

    Mirrors `lancedb.rerankers.RRFReranker.rerank_hybrid` (0.40): float32 RRF scores summed
    over the legs, rows in merge order (the vector leg's, then FTS rows not seen yet, as
    `Reranker.merge_results` keeps the first occurrence of each row id), then a stable
    descending sort, so a tie keeps the merge order.
    """
    ident: dict[int, str] = {}
    for leg in (vector, fts):
        ident.update(
            (r, d) for r, d in zip(leg["rowids"], leg["ids"], strict=True) if r not in ident
        )
    merged = list(ident)  # insertion order: the vector leg's rows, then new FTS rows
    values = rrf_scores(merged, vector["rowids"], fts["rowids"], k=k).astype(np.float32)
    order = np.argsort(-values, kind="stable")
    return [ident[merged[i]] for i in order]


def baseline_ranking(item: EvalItem, query_type: str, depth: int) -> list[str]:
    """No reranker: distance order, BM25 order, or RRF over both legs."""
    if query_type == "hybrid":
        return rrf_order(leg_prefix(item, "vector", depth), leg_prefix(item, "fts", depth))
    return candidate_ids(item, query_type, depth)


def ceiling_ranking(item: EvalItem, query_type: str, depth: int) -> list[str]:
    """An oracle on the candidate set: relevant candidates first (stable)."""
    ids = candidate_ids(item, query_type, depth)
    return [i for i in ids if i in item.relevant] + [i for i in ids if i not in item.relevant]
