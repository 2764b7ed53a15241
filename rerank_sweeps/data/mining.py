"""Hard-negative mining with an embedding model (`mining.source=model`).

Negatives are mined with sentence-transformers' `mine_hard_negatives` and an embedding model
that is independent of the reranker being trained (`static:<model id>` mines with a static
embedding distilled from it). Also what both miners share: `MinedRows`, the similarity budget,
random negatives mixed into hard ones.
"""

from __future__ import annotations

import logging
import random
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rerank_sweeps.config import MiningConfig, UserError
from rerank_sweeps.data.rows import NTuple, QAPair, answer_key, normalize
from rerank_sweeps.data.static import STATIC_PREFIX, distill_static
from rerank_sweeps.machine import resolve_bf16
from rerank_sweeps.models import hub_unavailable, resolve_model

log = logging.getLogger(__name__)


def load_miner(mining: MiningConfig) -> tuple[Any, bool]:
    """The SentenceTransformer that mines negatives, and whether its weights are bfloat16.

    `static:<id>` distils a static embedding from `<id>` first (once). A transformer miner is
    loaded in bfloat16 where that is fast (`mining.bf16`); `encode` still returns float32, so
    similarities, ranks and margins are computed in full precision.
    """
    import torch
    from sentence_transformers import SentenceTransformer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    static = mining.model_id.startswith(STATIC_PREFIX)
    if static:
        path = str(distill_static(mining.model_id[len(STATIC_PREFIX) :]))
    else:
        path = resolve_model(mining.model_id)
    bf16 = not static and resolve_bf16(mining.bf16, device)
    kwargs = {"model_kwargs": {"dtype": torch.bfloat16}} if bf16 else {}
    try:
        model = SentenceTransformer(path, device=device, **kwargs)
    except OSError as err:
        raise hub_unavailable(mining.model_id, err) from None
    if not static:  # a static embedding has no sequence limit (and no setter for one)
        model.max_seq_length = mining.max_seq_length
    return model, bf16


# Question x corpus similarities scored in one call of the library (floats): ~0.8 GB.
SIMILARITY_BUDGET = 200_000_000


def _question_chunks(rows: Sequence[QAPair], size: int) -> Iterator[list[QAPair]]:
    """Rows in chunks of about `size`, all rows of one question in the same chunk."""
    by_question: dict[str, list[QAPair]] = defaultdict(list)
    for row in rows:
        by_question[row.question].append(row)
    chunk: list[QAPair] = []
    for group in by_question.values():
        if chunk and len(chunk) + len(group) > size:
            yield chunk
            chunk = []
        chunk.extend(group)
    if chunk:
        yield chunk


@dataclass
class MinedRows:
    """Mined tuples and what mining saw (the miner's own similarities, for stats and tests)."""

    tuples: list[NTuple]
    positive_scores: list[float]
    negative_scores: list[list[float]]
    stats: dict[str, Any]


def mine_negatives(
    rows: Sequence[QAPair],
    corpus_rows: Sequence[QAPair],
    model: Any,
    mining: MiningConfig,
    num_negatives: int,
    seed: int,
    min_negatives: int | None = None,
    cache_folder: Path | None = None,
) -> MinedRows:
    """Up to `num_negatives` hard negatives per row, drawn from the answers of `corpus_rows`.

    Rows that end with fewer than `min_negatives` (default: `num_negatives`) are dropped, so
    by default every row has exactly `num_negatives`.

    `mine_hard_negatives` already skips each question's exact positives; a candidate that is
    only a variant of a positive (same relevance set after normalisation) or an answer of the
    same question in another set would still slip through, so we mine a few spare candidates
    and filter by answer_key afterwards. Rows left with too few negatives are dropped.

    The library scores every question against the whole corpus at once, so large inputs are
    mined in chunks of questions; with `cache_folder` the corpus is embedded once (the
    library's own embedding cache) and a killed build resumes from the saved embeddings.
    """
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    min_negatives = num_negatives if min_negatives is None else min_negatives
    stats: dict[str, Any] = {"rows": len(rows)}
    if not rows:
        return MinedRows([], [], [], stats | {"kept": 0})
    corpus = list(dict.fromkeys(r.answer for r in corpus_rows))
    corpus_keys = Counter(answer_key(text) for text in corpus)
    forbidden: dict[str, set[str]] = defaultdict(set)  # normalised question -> answer keys
    for row in list(rows) + list(corpus_rows):
        forbidden[normalize(row.question)].add(row.answer_key)
    # Candidates we may have to throw away: the variants of a question's own answers.
    spare = max(sum(corpus_keys[k] for k in forbidden[normalize(r.question)]) for r in rows)
    positives_per_question = max(Counter(r.question for r in rows).values())
    range_max = min(mining.range_max, len(corpus) - positives_per_question)
    window = range_max - mining.range_min
    if window < min_negatives:
        raise UserError(
            f"too few training answers ({len(corpus)}) to mine {num_negatives} negatives between "
            f"ranks mining.range_min={mining.range_min} and mining.range_max={mining.range_max}"
        )
    wanted = min(num_negatives + spare, window)
    margin: dict[str, float] = {}
    if mining.margin is None:
        pass  # no filter: the retriever's mistakes (negatives above the positive) are kept
    elif mining.margin_type == "relative":
        margin["relative_margin"] = mining.margin
    else:
        margin["absolute_margin"] = mining.margin
    mined: dict[str, list[Any]] = {"question": [], "answer": [], "scores": []}
    state = random.getstate()
    random.seed(seed)  # mine_hard_negatives samples with the global `random` (strategy random)
    try:
        for chunk in _question_chunks(rows, max(1, SIMILARITY_BUDGET // len(corpus))):
            dataset = Dataset.from_dict(
                {"question": [r.question for r in chunk], "answer": [r.answer for r in chunk]}
            )
            part = mine_hard_negatives(
                dataset,
                model,
                anchor_column_name="question",
                positive_column_name="answer",
                corpus=corpus,
                range_min=mining.range_min,
                range_max=range_max,
                num_negatives=wanted,
                sampling_strategy=mining.sampling_strategy,
                output_format="labeled-list",
                output_scores=True,
                batch_size=mining.batch_size,
                verbose=False,
                cache_folder=str(cache_folder) if cache_folder is not None else None,
                **margin,
            )
            for column, values in mined.items():
                values.extend(part[column])
    finally:
        random.setstate(state)

    rng = random.Random(seed)
    key_of = {text: answer_key(text) for text in corpus}
    row_by_pair = {(r.question, r.answer): r for r in rows}
    result = MinedRows([], [], [], stats)
    dropped_same_set = 0
    too_few = 0
    for question, texts, scores in zip(
        mined["question"], mined["answer"], mined["scores"], strict=True
    ):
        positive, candidates = texts[0], texts[1:]
        row = row_by_pair[(question, positive)]
        banned = forbidden[normalize(question)]
        kept = [
            (t, s) for t, s in zip(candidates, scores[1:], strict=True) if key_of[t] not in banned
        ]
        dropped_same_set += len(candidates) - len(kept)
        if len(kept) < min_negatives:
            too_few += 1
            continue
        if mining.sampling_strategy == "random" and len(kept) > num_negatives:
            kept = sorted(rng.sample(kept, num_negatives), key=lambda ts: -ts[1])
        kept = kept[:num_negatives]
        if mining.random_share > 0:
            kept = mix_random(kept, corpus, key_of, banned, mining.random_share, rng)
        result.tuples.append(NTuple(row.question, row.answer, [t for t, _ in kept]))
        result.positive_scores.append(float(scores[0]))
        result.negative_scores.append([float(s) for _, s in kept])
    missing = len(rows) - len(mined["question"])
    flat = [s for scores in result.negative_scores for s in scores]
    result.stats |= {
        "kept": len(result.tuples),
        "dropped_no_candidates": missing,
        "dropped_too_few_negatives": too_few,
        "candidates_removed_same_relevance_set": dropped_same_set,
        "corpus_answers": len(corpus),
        "range_max_used": range_max,
        "mean_positive_score": mean_score(result.positive_scores),
        "mean_negative_score": mean_score(flat),
    }
    if len(result.tuples) < len(rows):
        log.warning(
            "mining kept %d of %d rows (%d had too few negatives; relax mining.margin or raise "
            "mining.range_max)",
            len(result.tuples),
            len(rows),
            len(rows) - len(result.tuples),
        )
    return result


def mix_random(
    kept: list[tuple[str, float]],
    corpus: Sequence[str],
    key_of: dict[str, str],
    banned: set[str],
    share: float,
    rng: random.Random,
) -> list[tuple[str, float]]:
    """Each negative replaced, with probability `share`, by a random corpus answer outside the
    question's relevance sets (score NaN: the miner did not pick it). Mixing random negatives
    into hard ones keeps a reranker from learning only the retriever's confusions."""
    taken = {t for t, _ in kept}
    out = []
    for text, score in kept:
        if rng.random() < share:
            for _ in range(20):  # a few tries: the pool is large, clashes are rare
                pick = corpus[rng.randrange(len(corpus))]
                if pick not in taken and key_of[pick] not in banned:
                    taken.add(pick)
                    text, score = pick, float("nan")
                    break
        out.append((text, score))
    return out


def mean_score(values: Sequence[float]) -> float | None:
    """The mean of the scores that exist, rounded for stats; None when there are none."""
    values = [v for v in values if v == v]  # NaN: a random negative has no miner score
    return round(sum(values) / len(values), 4) if values else None
