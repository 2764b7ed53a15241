"""Hard-negative mining with the first-stage retriever (`mining.source=retriever`).

Negatives are what the index's embedder (and, with `fts` in `mining.legs`, BM25) retrieves
for a training question from the training answers and the eval corpus's distractors: the
texts the reranker will meet among its candidates, and never an eval answer.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import rerank_sweeps.data.mining as model_miner  # read at call time: one budget to patch
from rerank_sweeps.config import MiningConfig, RunConfig
from rerank_sweeps.data.mining import MinedRows, mean_score, mix_random
from rerank_sweeps.data.rows import NTuple, QAPair, Split, answer_key, normalize


def _bm25_rankings(
    corpus: Sequence[str],
    vectors: Any,
    questions: Sequence[str],
    depth: int,
    work_dir: Path | None,
) -> dict[str, list[int]]:
    """Each question's BM25 top `depth` pool positions, from a LanceDB table of the pool (the
    FTS the evaluation uses), written in `work_dir` (or a temporary folder)."""
    import tempfile

    from rerank_sweeps.candidates import fts_search
    from rerank_sweeps.index import write_table

    with tempfile.TemporaryDirectory(dir=work_dir) as folder:
        ids = [f"p{i:08d}" for i in range(len(corpus))]
        table = write_table(Path(folder) / "pool", ids, list(corpus), vectors)
        hits = fts_search(table, questions, depth)
    return {
        q: [int(doc[1:]) for doc in found["ids"]] for q, found in zip(questions, hits, strict=True)
    }


def _margin_keeps(mining: MiningConfig, positive: float, negative: float) -> bool:
    """Whether a candidate passes `mining.margin` (the library's relative/absolute rule)."""
    if mining.margin is None:
        return True
    if mining.margin_type == "relative":
        return negative <= positive * (1 - mining.margin)
    return negative + mining.margin <= positive


def mine_from_retriever(
    conf: RunConfig,
    rows: Sequence[QAPair],
    pool_rows: Sequence[QAPair],
    known: dict[str, Any],
    num_negatives: int,
    seed: int,
    min_negatives: int | None = None,
    work_dir: Path | None = None,
) -> MinedRows:
    """Negatives as the first stage retrieves them: the index embedder's nearest pool answers
    and, with `fts` in `mining.legs`, BM25's top answers (the legs take turns).

    The pool's vectors come from the evaluation's LanceDB table where it holds the text
    (`known`: the distractors), so only the training answers and questions are encoded. Each
    row's candidates are the top `mining.range_max` pool answers outside the question's
    relevance sets; the first `mining.range_min` are skipped (likely unlabelled positives),
    `mining.margin` filters as in `mine_hard_negatives`, and `mining.random_share` of the
    negatives are replaced by random pool answers.
    """
    import numpy as np

    from rerank_sweeps.index import embed_reusing

    mining = conf.mining
    min_negatives = num_negatives if min_negatives is None else min_negatives
    stats: dict[str, Any] = {"rows": len(rows)}
    if not rows:
        return MinedRows([], [], [], stats | {"kept": 0})
    corpus = list(dict.fromkeys(r.answer for r in pool_rows))
    key_of = {text: answer_key(text) for text in corpus}
    forbidden: dict[str, set[str]] = defaultdict(set)
    for row in list(rows) + list(pool_rows):
        if row.question:
            forbidden[normalize(row.question)].add(row.answer_key)
    questions = list(dict.fromkeys(r.question for r in rows))
    reused = sum(1 for t in corpus if t in known)
    pool_vectors = embed_reusing(conf, corpus, known, "embed mining pool")
    question_vectors = embed_reusing(conf, questions, known, "embed questions to mine")
    position = {text: i for i, text in enumerate(corpus)}
    question_index = {text: i for i, text in enumerate(questions)}
    nan = float("nan")
    depth = min(mining.range_max, len(corpus))
    ranked: dict[str, np.ndarray] = {}
    chunk = max(1, model_miner.SIMILARITY_BUDGET // max(1, len(corpus)))
    for start in range(0, len(questions), chunk):
        sims = question_vectors[start : start + chunk] @ pool_vectors.T
        top = np.argpartition(-sims, depth - 1, axis=1)[:, :depth]
        for i, row_top in enumerate(top):
            ranked[questions[start + i]] = row_top[np.argsort(-sims[i, row_top], kind="stable")]
    bm25: dict[str, list[int]] = {}
    if "fts" in mining.legs:
        bm25 = _bm25_rankings(corpus, pool_vectors, questions, depth, work_dir)
    rng = random.Random(seed)
    result = MinedRows([], [], [], stats)
    too_few = removed = 0
    for row in rows:
        banned = forbidden[normalize(row.question)]
        qv = question_vectors[question_index[row.question]]
        positive = float(pool_vectors[position[row.answer]] @ qv) if row.answer in position else nan
        legs = []
        if "vector" in mining.legs:
            legs.append(ranked[row.question].tolist())
        if "fts" in mining.legs:
            legs.append(bm25[row.question])
        per_leg = []
        for order in legs:
            candidates = []
            for idx in order:
                if key_of[corpus[idx]] in banned:
                    removed += 1
                    continue
                candidates.append((corpus[idx], float(pool_vectors[idx] @ qv)))
            candidates = candidates[mining.range_min :]
            if positive == positive:  # NaN when the positive is not in the pool (dev rows)
                candidates = [c for c in candidates if _margin_keeps(mining, positive, c[1])]
            per_leg.append(candidates)
        # The legs take turns (vector first), as the hybrid candidate set mixes them.
        candidates = []
        seen: set[str] = set()
        for rank in range(max((len(c) for c in per_leg), default=0)):
            for leg in per_leg:
                if rank < len(leg) and leg[rank][0] not in seen:
                    seen.add(leg[rank][0])
                    candidates.append(leg[rank])
        if mining.sampling_strategy == "random" and len(candidates) > num_negatives:
            candidates = sorted(rng.sample(candidates, num_negatives), key=lambda ts: -ts[1])
        kept = candidates[:num_negatives]
        if mining.random_share > 0:
            kept = mix_random(kept, corpus, key_of, banned, mining.random_share, rng)
        if len(kept) < min_negatives:
            too_few += 1
            continue
        result.tuples.append(NTuple(row.question, row.answer, [t for t, _ in kept]))
        result.positive_scores.append(positive)
        result.negative_scores.append([s for _, s in kept])
    flat = [s for scores in result.negative_scores for s in scores]
    result.stats |= {
        "kept": len(result.tuples),
        "dropped_too_few_negatives": too_few,
        "candidates_removed_same_relevance_set": removed,
        "corpus_answers": len(corpus),
        "pool_vectors_reused": reused,
        "range_max_used": depth,
        "mean_positive_score": mean_score(result.positive_scores),
        "mean_negative_score": mean_score(flat),
        "legs": list(mining.legs),
        "negatives_above_positive": sum(
            n > p
            for p, ns in zip(result.positive_scores, result.negative_scores, strict=True)
            for n in ns
        ),
    }
    return result


def distractor_rows(split: Split) -> list[QAPair]:
    """The eval corpus's documents no eval query counts as relevant, as answer-only rows.

    Retriever mining draws negatives from them as well as from the training answers: they are
    the texts the reranker will meet among its candidates, and never an eval answer.
    """
    relevant = {doc for q in split.eval for doc in q.relevant}
    return [
        QAPair(f"x{d.id}", "", d.text, answer_key(d.text))
        for d in split.corpus
        if d.id not in relevant
    ]
