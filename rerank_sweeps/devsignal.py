"""The dev signal: dev questions reranked among their real first-stage candidates.

Mined dev tuples (a positive among its hard negatives) always rerank the positive, so they
cannot say whether a reranker improves a LanceDB ranking whose candidates often miss the
answer. Here the dev questions get their own retrieval setting, built by the evaluation's own
stages: a corpus of the dev answers plus the eval corpus's distractors (never an eval answer or
question), its LanceDB table (vectors + FTS) and each dev question's candidates per leg. The
number that picks the best checkpoint, gates the run and fits the fusion weight is therefore
measured as the evaluation measures, on questions the evaluation never sees.
"""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rerank_sweeps.cache import Artifact, Cache
from rerank_sweeps.config import RunConfig
from rerank_sweeps.data import Doc, EvalQuery, Split, load_split, normalize
from rerank_sweeps.records import DEV_KS, METRICS
from rerank_sweeps.records import DEV_PRIMARY as PRIMARY

DEVSPLIT_VERSION = 1


@dataclass(frozen=True)
class DevArtifacts:
    """The dev retrieval setting: split-like dir, its LanceDB table, its candidates."""

    split: Artifact
    index: Artifact
    candidates: Artifact


def make_dev_split(split: Split, seed: int) -> tuple[list[EvalQuery], list[Doc], dict[str, Any]]:
    """Dev questions as eval-style queries over the dev answers plus the eval distractors.

    Distractors are the eval corpus's documents that no eval query counts as relevant, so the
    dev setting is as crowded as the evaluation's without containing any eval answer. Ids are
    assigned in a seeded shuffled order so that they carry no hint of relevance.
    """
    eval_relevant = {doc for q in split.eval for doc in q.relevant}
    distractors = [d.text for d in split.corpus if d.id not in eval_relevant]
    answer_by_key: dict[str, str] = {}
    for row in split.dev:
        answer_by_key.setdefault(row.answer_key, row.answer)
    texts = list(answer_by_key.values()) + distractors
    keys = list(answer_by_key) + [None] * len(distractors)
    order = list(range(len(texts)))
    random.Random(seed + 2).shuffle(order)
    ids = {pos: f"v{rank:07d}" for rank, pos in enumerate(order)}
    id_of_key = {key: ids[pos] for pos, key in enumerate(keys) if key is not None}
    corpus = sorted((Doc(ids[pos], text) for pos, text in enumerate(texts)), key=lambda d: d.id)

    by_question: dict[str, list[str]] = defaultdict(list)
    question_text: dict[str, str] = {}
    for row in split.dev:
        norm = normalize(row.question)
        question_text.setdefault(norm, row.question)
        if id_of_key[row.answer_key] not in by_question[norm]:
            by_question[norm].append(id_of_key[row.answer_key])
    queries = [
        EvalQuery(f"dq{n:06d}", question_text[norm], sorted(relevant))
        for n, (norm, relevant) in enumerate(by_question.items())
    ]
    stats = {"queries": len(queries), "dev_answers": len(answer_by_key)}
    stats |= {"distractors": len(distractors), "corpus": len(corpus)}
    return queries, corpus, stats


def _write_jsonl(path: Path, rows: Sequence[Any]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(asdict(row), ensure_ascii=False) + "\n")


def dev_split_stage(conf: RunConfig, cache: Cache, split_art: Artifact) -> Artifact:
    """A split-shaped artifact (eval.jsonl = dev queries, corpus.jsonl) for the index stages."""

    def build(out_dir: Path, work_dir: Path) -> None:
        del work_dir
        queries, corpus, stats = make_dev_split(load_split(split_art), conf.seed)
        _write_jsonl(out_dir / "eval.jsonl", queries)
        _write_jsonl(out_dir / "corpus.jsonl", corpus)
        for empty in ("train.jsonl", "dev.jsonl"):
            (out_dir / empty).write_text("")
        (out_dir / "stats.json").write_text(json.dumps(stats, indent=2))

    return cache.stage("devsplit", DEVSPLIT_VERSION, {"seed": conf.seed}, [split_art], build)


def dev_stages(
    conf: RunConfig, cache: Cache, split_art: Artifact, eval_index: Artifact | None = None
) -> DevArtifacts | None:
    """The dev split, its table and its candidates; None when the split has no dev questions.

    `eval_index` lends the vectors of texts it already holds (the distractors), so the dev
    table embeds only the dev answers.
    """
    from rerank_sweeps.evaluate import candidates_stage
    from rerank_sweeps.index import index_stage

    if not load_split(split_art).dev:
        return None
    dev_split = dev_split_stage(conf, cache, split_art)
    dev_index = index_stage(conf, cache, dev_split, reuse=eval_index)
    candidates = candidates_stage(
        conf, cache, dev_split, dev_index, conf.dev.query_types, conf.dev.depth
    )
    return DevArtifacts(dev_split, dev_index, candidates)


# --------------------------------------------------------------------------------------------
# Metrics of a reranker (or of the first stage) on the dev candidates
# --------------------------------------------------------------------------------------------


@dataclass
class DevData:
    """Dev items with their candidates and texts, and the dev protocol (types, depth)."""

    items: list[Any]  # evaluate.EvalItem
    texts: dict[str, str]
    types: list[str]
    depth: int  # candidates per leg, the same for every k

    @classmethod
    def load(cls, conf: RunConfig, dev: DevArtifacts) -> DevData:
        """Read the dev candidates and corpus of `dev` under the configured dev protocol."""
        from rerank_sweeps.evaluate import load_items
        from rerank_sweeps.index import read_corpus

        items = load_items(dev.split, dev.candidates)
        ids, texts = read_corpus(dev.split.path)
        return cls(
            items, dict(zip(ids, texts, strict=True)), list(conf.dev.query_types), conf.dev.depth
        )


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def ranking_metrics(data: DevData, rank: Any) -> dict[str, float]:
    """hit/MRR/nDCG @5 and @10 per query type, and the primary metric, of `rank(item, qt, depth)`.

    The primary metric is nDCG@10 averaged over the dev query types.
    """
    from rerank_sweeps.evaluate import query_metrics

    out: dict[str, float] = {}
    for qt in data.types:
        rankings = [rank(it, qt, data.depth) for it in data.items]
        for k in DEV_KS:
            rows = [
                query_metrics(r, it.relevant, k) for r, it in zip(rankings, data.items, strict=True)
            ]
            for m in METRICS:
                out[f"{qt}_{m}@{k}"] = round(_mean([r[m] for r in rows]), 6)
    out[PRIMARY] = round(_mean([out[f"{qt}_{PRIMARY}"] for qt in data.types]), 6)
    return out


def first_stage_metrics(data: DevData) -> dict[str, float]:
    """The no-reranker order's dev metrics (distance, BM25, LanceDB's RRF)."""
    from rerank_sweeps.evaluate import baseline_ranking

    return ranking_metrics(data, baseline_ranking)


def primed_reranker(reranker: Any, data: DevData, scores: Sequence[np.ndarray]) -> Any:
    """`reranker` primed with `scores` (aligned with `evaluate.unique_pairs`): no model calls."""
    from rerank_sweeps.evaluate import unique_pairs

    pairs = unique_pairs(data.items, data.texts)
    flat = [float(v) for s in scores for v in np.asarray(s).tolist()]
    reranker.clear_primed()
    reranker.prime(((data.items[n].question, data.texts[d]) for n, d in pairs), flat)
    return reranker


def reranker_metrics(data: DevData, reranker: Any) -> dict[str, float]:
    """Dev metrics of a LanceDB reranker through its `rerank_*` methods (as the evaluation)."""
    from rerank_sweeps.evaluate import reranked_ranking

    return ranking_metrics(
        data, lambda it, qt, depth: reranked_ranking(reranker, it, qt, depth, data.texts)
    )


def gate(reranked: dict[str, float], first_stage: dict[str, float]) -> dict[str, Any]:
    """Whether the reranker beats the first-stage order on dev (primary metric), per type too."""
    per_type = {
        key.removesuffix(f"_{PRIMARY}"): {"reranked": reranked[key], "first_stage": value}
        for key, value in first_stage.items()
        if key.endswith(f"_{PRIMARY}")
    }
    return {
        "passed": bool(reranked[PRIMARY] > first_stage[PRIMARY]),
        "metric": f"dev {PRIMARY}, mean over query types",
        "reranked": reranked[PRIMARY],
        "first_stage": first_stage[PRIMARY],
        "per_type": per_type,
    }


def gate_message(dev_gate: dict[str, Any]) -> str:
    """The one console line of a failed gate."""
    return (
        f"dev gate FAILED: the reranker does not beat the first stage on dev (ndcg@10 "
        f"{dev_gate['reranked']:.3f} <= {dev_gate['first_stage']:.3f}); do not deploy it as is "
        "(try rerank.fusion, more data or another recipe)"
    )


# --------------------------------------------------------------------------------------------
# The training-time evaluator
# --------------------------------------------------------------------------------------------


def model_reranker(arch: str, model: Any, batch_size: int, meta: dict[str, Any]) -> Any:
    """Our LanceDB reranker around an in-memory model (fp32: no ties from rounding)."""
    from rerank_sweeps.archs import get_arch

    device = str(getattr(model, "device", "cpu"))
    cls = get_arch(arch).reranker_class()
    reranker = cls(".", device=device, bf16=False, batch_size=batch_size)
    reranker.meta = dict(meta)
    reranker.__dict__["model"] = model  # fills the lazy `model` property
    return reranker


def _sentence_evaluator_base() -> type:
    from sentence_transformers.evaluation import SentenceEvaluator

    return SentenceEvaluator


def candidate_evaluator(
    arch: str, data: DevData, batch_size: int, meta: dict[str, Any], name: str = "dev"
) -> Any:
    """A sentence-transformers evaluator that reranks the dev candidates with the model.

    Its primary metric, nDCG@10 over the real candidates averaged over query types, drives
    `load_best_model_at_end` and the pruners; every call keeps the scores it computed
    (`last_scores`) for the fusion fit.
    """
    base = _sentence_evaluator_base()

    class CandidateRerankingEvaluator(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            self.name = name
            self.primary_metric = PRIMARY
            self.greater_is_better = True
            self.last_scores: list[np.ndarray] | None = None
            self.seconds = 0.0
            self.arch = arch
            self.batch_size = batch_size
            # step -> (metrics, scores): the best checkpoint's are reused after training
            self.history: dict[int, tuple[dict[str, float], list[np.ndarray]]] = {}

        def recall(self, step: int | None) -> dict[str, float] | None:
            """The metrics of the evaluation at `step` (its scores become `last_scores`)."""
            if step is None or step not in self.history:
                return None
            metrics, self.last_scores = self.history[step]
            return dict(metrics)

        def __call__(self, model: Any, output_path: Any = None, epoch: int = -1, steps: int = -1):
            from rerank_sweeps.evaluate import score_items

            started = time.perf_counter()
            was_training = bool(getattr(model, "training", False))
            if hasattr(model, "eval"):
                model.eval()
            try:
                import torch

                with torch.inference_mode():
                    reranker = model_reranker(arch, model, batch_size, meta)
                    scores = score_items(reranker, data.items, data.texts, "dev")
            finally:
                if was_training and hasattr(model, "train"):
                    model.train()
            self.last_scores = scores
            metrics = reranker_metrics(data, primed_reranker(reranker, data, scores))
            self.history[int(steps)] = (metrics, scores)
            self.seconds += time.perf_counter() - started
            metrics = self.prefix_name_to_metrics(metrics, self.name)
            self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
            return metrics

    return CandidateRerankingEvaluator()


# --------------------------------------------------------------------------------------------
# What training hands on: the gate and the fusion weights, both from dev only
# --------------------------------------------------------------------------------------------


def fit_fusion(data: DevData, primed: Any) -> dict[str, dict[str, dict[str, float]]]:
    """Fusion weights per method and dev query type, fit on the dev candidates only.

    `primed` is the trained model's reranker primed with its dev scores, so the fit runs the
    same `FusedReranker` the evaluation and users run, without calling the model again.
    """
    from dataclasses import replace

    from rerank_sweeps.fusion import METHODS, FusedReranker, fit_weights

    def metric_of(method: str) -> Any:
        def value(qt: str, weight: float) -> float:
            fused = FusedReranker(primed, method, {qt: weight})
            return reranker_metrics(replace(data, types=[qt]), fused)[PRIMARY]

        return value

    return {m: fit_weights(m, data.types, metric_of(m)) for m in METHODS}


def finish_training(
    data: DevData, evaluator: Any, model: Any, reranked: dict[str, float]
) -> dict[str, Any]:
    """The first stage's dev metrics, the dev gate and the fusion weights of the final model.

    `reranked` holds the final model's dev metrics, from the evaluator's last call (whose
    scores, `evaluator.last_scores`, the fusion fit reuses).
    """
    first = first_stage_metrics(data)
    primed = primed_reranker(
        model_reranker(evaluator.arch, model, evaluator.batch_size, {}), data, evaluator.last_scores
    )
    return {
        "dev_first_stage": first,
        "dev_gate": gate(reranked, first),
        "fusion": fit_fusion(data, primed),
        "dev_protocol": {
            "query_types": data.types,
            "depth": data.depth,
            "queries": len(data.items),
        },
        # every dev evaluation of this process (step -1: before training), for curves and audits
        "dev_history": [
            {"step": step, PRIMARY: metrics[PRIMARY]}
            for step, (metrics, _) in sorted(evaluator.history.items())
        ],
    }
