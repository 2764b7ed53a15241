"""Candidates, reranking and metrics with confidence intervals, inside LanceDB.

Protocol (fixing the reference scripts' bugs):
- Candidates: each leg (vector, FTS) retrieves D = eval.depth rows per eval query once, and
  every k reranks those same D per leg (so metrics are monotone in k). With eval.depth=null
  (the blog's protocol) D = overfetch * max(top_k) and a smaller k reranks each leg's prefix
  of depth overfetch * k. Hybrid merges the two legs and de-duplicates them by row (vector
  order first), so it reranks up to twice one leg's candidates.
- Systems, for every query type and k, on the same candidate set: `baseline` (distance order,
  BM25 order, LanceDB's RRF for hybrid), every model system (`reranked`, `untrained`)
  through our LanceDB `Reranker`, and `ceiling` (relevant candidates first: hit@k of the
  candidate set; no reranker can beat it).
- Metrics: hit@k, MRR@k, nDCG@k with binary relevance (relevant = the query's id set), 95%
  intervals (Wilson for hit, seeded bootstrap over queries otherwise) and the paired
  difference to the baseline from `stats.paired_comparison` (exact McNemar p for hit,
  sign-flip randomization p for MRR/nDCG, the test-inversion interval of the same test).
- No silent failures: an exception while scoring or reranking a query ends the run with
  an `EvaluationError` naming the query.

Files written to run_dir: results.json, table.md, qrels.trec and runs/<qt>-<system>@<k>.trec.
A run file holds each query's whole ranked candidate list for that k (metrics cut it at k);
its scores are rank-derived (n, n-1, ..., 1) so every TREC tool reads back exactly our order.
"""

from __future__ import annotations

import json
import logging
import math
import time
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from rerank_sweeps.cache import Artifact, Cache
from rerank_sweeps.config import RunConfig, UserError
from rerank_sweeps.console import progress
from rerank_sweeps.fusion import RRF_K, rrf_scores
from rerank_sweeps.index import (
    embed,
    has_ann_index,
    load_embedder,
    open_table,
    read_corpus,
    read_jsonl,
    recall_against,
    vector_search,
)
from rerank_sweeps.rerankers import (
    ModelReranker,
    load_reranker,
    read_reranker_meta,
    resolve_bf16,
)
from rerank_sweeps.stats import PERMUTATIONS, paired_comparison, record_p_text

log = logging.getLogger(__name__)

CANDIDATES_VERSION = 1
SCORES_VERSION = 1
METRICS = ("hit", "mrr", "ndcg")
BASELINE, CEILING = "baseline", "ceiling"
RERANKED, FUSED = "reranked", "fused"
Z95 = 1.959963984540054
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


# --------------------------------------------------------------------------------------------
# Model systems: score every unique pair once, then rerank through LanceDB's interface
# --------------------------------------------------------------------------------------------


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


def _add_fused(
    conf: RunConfig,
    reranker: ModelReranker,
    meta: dict[str, Any],
    rankings: Rankings,
    types: Sequence[str],
    ks: Sequence[int],
    texts: dict[str, str],
) -> dict[str, Any] | None:
    """Rankings of `fused` (the primed reranker fused with the first stage, weights from dev);
    None, with one warning, when the model has no weights fit on dev (trained without dev)."""
    from rerank_sweeps.fusion import FusedReranker

    method = conf.rerank.fusion
    fitted = (meta.get("fusion") or {}).get(method)
    if not fitted:
        log.warning(
            "rerank.fusion=%s: no fused row, the model has no fusion weights fit on dev (it was "
            "trained without dev questions)",
            method,
        )
        return None
    weights = {qt: float(v["weight"]) for qt, v in fitted.items()}
    missing = [qt for qt in types if qt not in weights]
    if missing:
        raise UserError(
            f"rerank.fusion={method}: no weight fit on dev for query type(s) {missing} "
            f"(dev.query_types={list(weights)}): add them to dev.query_types"
        )
    fused = FusedReranker(reranker, method, weights)
    for qt in types:
        for k in ks:
            d = depth_for(conf, k)
            rankings.by_key[(qt, FUSED, k)] = [
                reranked_ranking(fused, item, qt, d, texts) for item in rankings.items
            ]
    return {"method": method, "weights": weights, "dev": fitted, "of": RERANKED}


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def query_metrics(
    ranking: Sequence[str], relevant: frozenset[str] | set[str], k: int
) -> dict[str, float]:
    """hit@k, MRR@k and nDCG@k of one ranking with binary relevance."""
    top = list(ranking)[:k]
    gains = [1.0 if doc in relevant else 0.0 for doc in top]
    first = next((i for i, g in enumerate(gains) if g), None)
    dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains))
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(k, len(relevant))))
    return {
        "hit": 1.0 if first is not None else 0.0,
        "mrr": 1.0 / (first + 1) if first is not None else 0.0,
        "ndcg": dcg / ideal if ideal > 0 else 0.0,
    }


def mean(values: Sequence[float]) -> float:
    """Correctly rounded mean (fsum), so any reader that sums in any order gets the same value."""
    return math.fsum(values) / len(values) if len(values) else float("nan")


def wilson_interval(successes: float, n: int, z: float = Z95) -> list[float]:
    """Wilson score interval of a binomial proportion."""
    if n == 0:
        return [float("nan"), float("nan")]
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return [max(0.0, centre - half), min(1.0, centre + half)]


def bootstrap_interval(values: np.ndarray, resamples: np.ndarray) -> list[float] | None:
    """Percentile 95% interval of the mean over query resamples (rows of indices)."""
    if resamples.size == 0 or values.size == 0:
        return None
    means = values[resamples].mean(axis=1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def _stable_seed(*parts: Any) -> int:
    return zlib.crc32(json.dumps(parts).encode())


@dataclass
class Rankings:
    """Per-query rankings: rankings[(query_type, system, k)][query index] = ranked ids."""

    items: list[EvalItem]
    by_key: dict[tuple[str, str, int], list[list[str]]] = field(default_factory=dict)


def compute_results(
    rankings: Rankings,
    types: Sequence[str],
    systems: Sequence[str],
    ks: Sequence[int],
    bootstrap: int,
    seed: int,
) -> dict[str, Any]:
    """metrics, intervals and paired differences (system - baseline) from the rankings.

    `bootstrap` resamples (seeded by `seed`) give the MRR/nDCG intervals of single systems;
    the paired differences come from `stats.paired_comparison` (exact McNemar for hit,
    sign-flip for MRR/nDCG, test-inversion intervals), seeded by the comparison itself so
    docs/results.md recomputes the same numbers from the TREC files.
    """
    items = rankings.items
    n = len(items)
    rng = np.random.default_rng(_stable_seed("bootstrap", seed, n))
    resamples = rng.integers(0, n, size=(bootstrap, n)) if n else np.empty((0, 0), dtype=int)
    metrics: dict[str, float] = {}
    intervals: dict[str, list[float] | None] = {}
    per_query: dict[str, np.ndarray] = {}
    for qt in types:
        for system in systems:
            for k in ks:
                rows = [
                    query_metrics(r, it.relevant, k)
                    for r, it in zip(rankings.by_key[(qt, system, k)], items, strict=True)
                ]
                for m in METRICS:
                    key = f"{qt}/{system}/{m}@{k}"
                    values = [row[m] for row in rows]
                    per_query[key] = np.asarray(values, dtype=np.float64)
                    metrics[key] = mean(values)
                    if m == "hit":
                        intervals[key] = wilson_interval(math.fsum(values), n)
                    else:
                        intervals[key] = bootstrap_interval(per_query[key], resamples)
    paired: dict[str, dict[str, Any]] = {}
    for qt in types:
        for system in systems:
            if system in (BASELINE, CEILING):
                continue
            for k in ks:
                for m in METRICS:
                    diffs = (
                        per_query[f"{qt}/{system}/{m}@{k}"] - per_query[f"{qt}/{BASELINE}/{m}@{k}"]
                    )
                    key = f"{qt}/{system}-{BASELINE}/{m}@{k}"
                    if n == 0:  # nothing to test: the old schema's empty entry
                        paired[key] = {"diff": math.nan, "interval": None, "p_value": None}
                        continue
                    paired[key] = paired_comparison(diffs, m, PERMUTATIONS).as_record()
    return {"metrics": metrics, "intervals": intervals, "paired": paired}


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def run_name(query_type: str, system: str, k: int) -> str:
    """The TREC run's name and file stem: <qt>-<system>@<k>."""
    return f"{query_type}-{system}@{k}"


def write_qrels(path: Path, items: Sequence[EvalItem]) -> None:
    """TREC qrels: `qid 0 docid 1` for each relevant id."""
    with path.open("w", encoding="utf-8") as f:
        for item in items:
            for doc in sorted(item.relevant):
                f.write(f"{item.qid} 0 {doc} 1\n")


def write_run(
    path: Path, name: str, items: Sequence[EvalItem], rankings: Sequence[Sequence[str]]
) -> None:
    """TREC run: `qid Q0 docid rank score name`; score = n - rank + 1 keeps our order exact."""
    with path.open("w", encoding="utf-8") as f:
        for item, ranking in zip(items, rankings, strict=True):
            n = len(ranking)
            for rank, doc in enumerate(ranking, 1):
                f.write(f"{item.qid} Q0 {doc} {rank} {n - rank + 1} {name}\n")


def _cell(metrics: dict[str, float], intervals: dict[str, Any], key: str) -> str:
    if key not in metrics:
        return "-"
    interval = intervals.get(key)
    if interval is None:
        return f"{metrics[key]:.3f}"
    return f"{metrics[key]:.3f} [{interval[0]:.2f}, {interval[1]:.2f}]"


def markdown_tables(
    results: dict[str, Any], types: Sequence[str], systems: Sequence[str], ks: Sequence[int]
) -> str:
    """The blog-style tables: rows systems, columns query type x k, one table per metric."""
    metrics, intervals = results["metrics"], results["intervals"]
    n = results["counts"]["queries"]
    titles = {"hit": "Hit rate", "mrr": "MRR", "ndcg": "nDCG"}
    counts = results["counts"]
    protocol = results.get("protocol", {})
    lines = [
        "### Candidates",
        "",
        f"Per leg: {protocol.get('depth_rule', 'overfetch x k')}, "
        + ", ".join(f"@{k}: {d}" for k, d in protocol.get("depth_per_leg", {}).items())
        + ". Hybrid reranks the union of both legs, up to twice one leg's candidates.",
        "",
        "| | " + " | ".join(f"{qt} @{k}" for qt in types for k in ks) + " |",
        "|---|" + "---|" * (len(types) * len(ks)),
        "| candidates reranked per query (mean) | "
        + " | ".join(f"{counts.get(f'{qt}/candidates@{k}', 0.0):.1f}" for qt in types for k in ks)
        + " |",
        "| queries with a relevant candidate (the only ones a reranker can change) | "
        + " | ".join(
            f"{counts.get(f'{qt}/with_relevant@{k}', '-')} of {n}" for qt in types for k in ks
        )
        + " |",
        "",
    ]
    for m in METRICS:
        lines.append(f"### {titles[m]}@k ({n} queries, 95% intervals)")
        lines.append("")
        header = ["system"] + [f"{qt} @{k}" for qt in types for k in ks]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---"] * len(header)) + "|")
        for system in systems:
            cells = [
                _cell(metrics, intervals, f"{qt}/{system}/{m}@{k}") for qt in types for k in ks
            ]
            lines.append("| " + " | ".join([system, *cells]) + " |")
        lines.append("")
    paired = results["paired"]
    if paired:
        lines.append(
            "### Paired difference to the baseline (95% test-inversion interval; "
            "p: exact McNemar for hit, sign-flip for MRR and nDCG)"
        )
        lines.append("")
        header = ["difference"] + [f"{qt} @{k}" for qt in types for k in ks]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---"] * len(header)) + "|")
        for system in systems:
            if system in (BASELINE, CEILING):
                continue
            for m in METRICS:
                cells = []
                for qt in types:
                    for k in ks:
                        p = paired[f"{qt}/{system}-{BASELINE}/{m}@{k}"]
                        cell = f"{p['diff']:+.3f}"
                        if p["interval"] is not None:
                            # 3 decimals like the difference: an end just off 0 must not
                            # print as 0.00 beside p < 0.05.
                            low, high = p["interval"]
                            cell += f" [{low:+.3f}, {high:+.3f}] {record_p_text(p)}"
                        cells.append(cell)
                lines.append("| " + " | ".join([f"{system} {m}", *cells]) + " |")
        lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# The evaluation
# --------------------------------------------------------------------------------------------


def evaluate(
    conf: RunConfig,
    cache: Cache,
    split_art: Artifact,
    cand_art: Artifact,
    systems: dict[str, Artifact],
    run_dir: Path,
) -> dict[str, Any]:
    """Rerank the cached candidates with every system and write results, runs and tables.

    `systems` maps a system name (e.g. "reranked", "untrained") to a model artifact.
    Returns the results.json content.
    """
    started = time.perf_counter()
    run_dir = Path(run_dir)
    (run_dir / "runs").mkdir(parents=True, exist_ok=True)
    types = list(conf.query_type.types)
    ks = sorted(set(conf.top_k))
    items = load_items(split_art, cand_art)
    ids, texts_list = read_corpus(split_art.path)
    texts = dict(zip(ids, texts_list, strict=True))
    depth = json.loads((cand_art.path / "stats.json").read_text())["depth"]
    if depth < depth_for(conf):
        raise UserError(
            f"candidates hold {depth} rows per leg; top_k={max(ks)} needs {depth_for(conf)}"
        )
    for qt in types:
        for leg in legs_for([qt]):
            if items and leg not in items[0].legs:
                raise UserError(f"the candidates artifact has no {leg} leg (query type {qt})")

    rankings = Rankings(items)
    for qt in types:
        for k in ks:
            d = depth_for(conf, k)
            rankings.by_key[(qt, BASELINE, k)] = [baseline_ranking(it, qt, d) for it in items]
            rankings.by_key[(qt, CEILING, k)] = [ceiling_ranking(it, qt, d) for it in items]

    system_info: dict[str, Any] = {}
    for name, art in systems.items():
        if name in (BASELINE, CEILING):
            raise UserError(f"system name {name!r} is reserved")
        scores_art = scores_stage(conf, cache, split_art, cand_art, art, name)
        # Lazy: with every pair primed, the model itself is never loaded here.
        reranker = load_reranker(art.path, conf.eval.device, conf.eval.bf16, conf.eval.batch_size)
        pairs = read_scores(scores_art, items, texts)
        reranker.prime((p for p, _ in pairs), (s for _, s in pairs))
        meta = read_reranker_meta(art.path)
        system_info[name] = {
            "artifact": art.key,
            "arch": meta.get("arch"),
            "model_id": meta.get("model_id"),
            "epochs": meta.get("epochs"),
            "scores": scores_art.key,
            **json.loads((scores_art.path / "stats.json").read_text()),
        }
        for qt in types:
            for k in ks:
                d = depth_for(conf, k)
                out = []
                for item in items:
                    try:
                        out.append(reranked_ranking(reranker, item, qt, d, texts))
                    except Exception as err:
                        raise EvaluationError(
                            f"system {name!r} failed on {_describe(item)} ({qt}@{k}): "
                            f"{type(err).__name__}: {err}"
                        ) from err
                rankings.by_key[(qt, name, k)] = out
        if name == RERANKED and conf.rerank.fusion != "none":
            fused_info = _add_fused(conf, reranker, meta, rankings, types, ks, texts)
            if fused_info is not None:
                system_info[FUSED] = fused_info
        if reranker.pairs_scored:  # primed scores should have covered every pair
            log.warning(
                "%s: %d pairs were scored outside the scores stage", name, reranker.pairs_scored
            )
        reranker.clear_primed()

    system_names = [BASELINE, *systems, *([FUSED] if FUSED in system_info else []), CEILING]
    results = compute_results(rankings, types, system_names, ks, conf.eval.bootstrap, conf.seed)
    counts: dict[str, Any] = {"queries": len(items)}
    for qt in types:
        for k in ks:
            sizes = [len(r) for r in rankings.by_key[(qt, BASELINE, k)]]
            counts[f"{qt}/candidates@{k}"] = mean(sizes) if sizes else 0.0
            counts[f"{qt}/no_candidates@{k}"] = sum(1 for s in sizes if s == 0)
            # Only these queries can tell rerankers apart: the others miss whatever the order.
            counts[f"{qt}/with_relevant@{k}"] = sum(
                1
                for ranked, it in zip(rankings.by_key[(qt, CEILING, k)], items, strict=True)
                if any(d in it.relevant for d in ranked)
            )
    results["counts"] = counts
    results["systems"] = system_info
    results["protocol"] = {
        "top_k": ks,
        "overfetch": conf.overfetch,
        "depth_rule": "fixed (eval.depth)" if conf.eval.depth is not None else "overfetch x k",
        "depth_per_leg": {str(k): depth_for(conf, k) for k in ks},
        "retrieved_depth": depth,
        "query_types": types,
        "bootstrap": conf.eval.bootstrap,
        "seed": conf.seed,
        "intervals": "hit: Wilson 95%; mrr, ndcg: percentile bootstrap over queries; paired: "
        "test inversion of the paired test (holds 0 exactly when p >= 0.05)",
        "p_value": "paired, two-sided: exact McNemar for hit, sign-flip randomization for "
        "mrr and ndcg",
        "permutations": PERMUTATIONS,
        "runs": "runs/<qt>-<system>@<k>.trec: whole ranked candidate list; score = n - rank + 1",
    }
    results["candidates"] = cand_art.key
    results["seconds"] = round(time.perf_counter() - started, 3)

    write_qrels(run_dir / "qrels.trec", items)
    for (qt, system, k), ranked in rankings.by_key.items():
        name = run_name(qt, system, k)
        write_run(run_dir / "runs" / f"{name}.trec", name, items, ranked)
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    table = markdown_tables(results, types, system_names, ks)
    (run_dir / "table.md").write_text(table + "\n")
    # The full tables are wider than a terminal: the run's closing summary shows the headline.
    log.info("evaluation: %d queries, tables in %s", len(items), run_dir / "table.md")
    return results
