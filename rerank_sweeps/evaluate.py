"""The evaluation: candidates, reranking and metrics with confidence intervals, inside LanceDB.

Protocol (fixing the reference scripts' bugs):
- Candidates (`rerank_sweeps.candidates`): each leg (vector, FTS) retrieves D = eval.depth
  rows per eval query once, and every k reranks those same D per leg. With eval.depth=null
  (the blog's protocol) a smaller k reranks each leg's prefix of depth overfetch * k.
- Systems, for every query type and k, on the same candidate set: `baseline` (distance order,
  BM25 order, LanceDB's RRF for hybrid), every model system (`reranked`, `untrained`, scored
  by `rerank_sweeps.scoring`) through our LanceDB `Reranker`, `fused` when fusion is on, and
  `ceiling` (relevant candidates first; no reranker can beat it).
- Metrics (`rerank_sweeps.metrics`): hit@k, MRR@k, nDCG@k with 95% intervals and the paired
  difference to the baseline from `stats.paired_comparison`.
- No silent failures: an exception while scoring or reranking a query ends the run with
  an `EvaluationError` naming the query.

Files written to run_dir: results.json, table.md (`rerank_sweeps.eval_table`), qrels.trec and
runs/<qt>-<system>@<k>.trec (`rerank_sweeps.trec`).

The names below the imports are re-exported for the modules that reach the evaluation's
parts through `rerank_sweeps.evaluate` (latency, devsignal, pipeline, data, benchmarks).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rerank_sweeps.archs import load_reranker, read_reranker_meta
from rerank_sweeps.cache import Artifact, Cache
from rerank_sweeps.candidates import (
    CANDIDATES_VERSION,
    FTS_THREADS,
    EvalItem,
    EvaluationError,
    baseline_ranking,
    candidate_ids,
    candidates_key,
    candidates_stage,
    ceiling_ranking,
    depth_for,
    fts_search,
    leg_prefix,
    legs_for,
    load_items,
    merged_candidates,
    read_eval_queries,
    retrieve,
    rrf_order,
)
from rerank_sweeps.config import RunConfig, UserError
from rerank_sweeps.eval_table import markdown_tables
from rerank_sweeps.index import read_corpus
from rerank_sweeps.metrics import (
    Z95,
    Rankings,
    bootstrap_interval,
    compute_results,
    mean,
    query_metrics,
    wilson_interval,
)
from rerank_sweeps.records import BASELINE, CEILING, FUSED, METRICS, RERANKED, count_key
from rerank_sweeps.rerankers import ModelReranker
from rerank_sweeps.scoring import (
    SCORES_VERSION,
    _describe,
    leg_table,
    read_scores,
    reranked_ranking,
    score_items,
    scores_key,
    scores_stage,
    unique_pairs,
)
from rerank_sweeps.stats import PERMUTATIONS
from rerank_sweeps.trec import run_name, write_qrels, write_run

__all__ = [
    "BASELINE",
    "CANDIDATES_VERSION",
    "CEILING",
    "Evaluation",
    "FTS_THREADS",
    "FUSED",
    "METRICS",
    "RERANKED",
    "SCORES_VERSION",
    "Z95",
    "EvalItem",
    "EvaluationError",
    "Rankings",
    "baseline_ranking",
    "bootstrap_interval",
    "candidate_ids",
    "candidates_key",
    "candidates_stage",
    "ceiling_ranking",
    "compute_results",
    "depth_for",
    "evaluate",
    "fts_search",
    "leg_prefix",
    "leg_table",
    "legs_for",
    "load_items",
    "markdown_tables",
    "mean",
    "merged_candidates",
    "query_metrics",
    "read_eval_queries",
    "read_scores",
    "reranked_ranking",
    "retrieve",
    "rrf_order",
    "run_name",
    "score_items",
    "scores_key",
    "scores_stage",
    "unique_pairs",
    "wilson_interval",
    "write_qrels",
    "write_run",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evaluation:
    """What `evaluate` produced: results.json's content and each system's scores artifact."""

    results: dict[str, Any]
    scores: dict[str, Artifact]


def evaluate(
    conf: RunConfig,
    cache: Cache,
    split_art: Artifact,
    cand_art: Artifact,
    systems: dict[str, Artifact],
    run_dir: Path,
) -> Evaluation:
    """Rerank the cached candidates with every system and write results, runs and tables.

    `systems` maps a system name (e.g. "reranked", "untrained") to a model artifact.
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
    scores_arts: dict[str, Artifact] = {}
    for name, art in systems.items():
        if name in (BASELINE, CEILING):
            raise UserError(f"system name {name!r} is reserved")
        scores_art = scores_arts[name] = scores_stage(conf, cache, split_art, cand_art, art, name)
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
            counts[count_key(qt, "candidates", k)] = mean(sizes) if sizes else 0.0
            counts[count_key(qt, "no_candidates", k)] = sum(1 for s in sizes if s == 0)
            # Only these queries can tell rerankers apart: the others miss whatever the order.
            counts[count_key(qt, "with_relevant", k)] = sum(
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
    return Evaluation(results, scores_arts)


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
