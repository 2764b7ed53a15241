"""`arch.score_in_input`: the first stage's score written into a cross-encoder's input.

Askari et al. (ECIR 2023, arXiv 2301.09728) give a cross-encoder the first-stage score as
text between the query and the passage, so that the model can learn when to trust the
retriever instead of re-learning relevance from nothing. Here the score is the same for every
pair, whichever leg brought the candidate: the cosine similarity of the query and the text
under `index.embedder` (the vector leg's own model), because BM25 and RRF scores live on other
scales and exist only for the rows their leg returned. It is written as an integer percentage
before the passage, `71 | passage text`: plain text, so that every tokenizer reads it alike
and anyone can format an input for the saved model without our code.

Training tuples, the mined-tuple evaluator and every scoring call of the reranker (dev
signal, evaluation, latency, teacher scores) format their passages with `ScoreInput`, so the
model always sees the score computed the same way, and latency includes computing it.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from rerank_sweeps.data.rows import NTuple

if TYPE_CHECKING:
    from rerank_sweeps.config import RunConfig

META_KEY = "score_in_input"  # reranker.json: {"embedder": model id} when the option is on


def score_text(cosine: float) -> str:
    """The score as the model reads it: the cosine as a rounded integer percentage."""
    return str(int(round(100.0 * float(cosine))))


def format_passage(cosine: float, text: str) -> str:
    """`71 | passage text`: the score in front of the passage (see the module docs)."""
    return f"{score_text(cosine)} | {text}"


def score_input_meta(conf: RunConfig) -> dict[str, Any]:
    """The reranker.json entry of a model trained with `arch.score_in_input` ({} without)."""
    if not conf.arch.score_in_input:
        return {}
    return {META_KEY: {"embedder": conf.index.embedder}}


@lru_cache(maxsize=4)
def _embedder(model_id: str, device: str) -> Any:
    # One loaded embedder per process and device: the dev evaluator builds a new reranker
    # at every evaluation.
    from rerank_sweeps.index import load_embedder

    return load_embedder(model_id, device)


class ScoreInput:
    """Formats (query, text) pairs' texts as `score | text`, the score being the embedder's
    cosine of the pair. Each call embeds its distinct queries and texts once and keeps
    nothing between calls, so a timed call pays for its own embeddings."""

    def __init__(self, embedder: str, device: str = "cpu", batch_size: int = 64) -> None:
        self.embedder = embedder
        self.device = device
        self.batch_size = int(batch_size)

    def cosines(self, queries: Sequence[str], texts: Sequence[str], desc: str = "") -> np.ndarray:
        """The embedder's cosine similarity of each pair (queries[i], texts[i]), float32
        (`desc`: a progress bar's label; none without)."""
        from rerank_sweeps.index import embed

        if len(queries) != len(texts):
            raise ValueError("cosines needs as many queries as texts")
        if not len(queries):
            return np.empty(0, dtype=np.float32)
        model = _embedder(self.embedder, self.device)
        distinct = list(dict.fromkeys([*queries, *texts]))
        row = {text: i for i, text in enumerate(distinct)}
        vectors = embed(model, distinct, self.batch_size, desc)
        q = vectors[[row[t] for t in queries]]
        d = vectors[[row[t] for t in texts]]
        return np.einsum("ij,ij->i", q, d).astype(np.float32)

    def passages(self, queries: Sequence[str], texts: Sequence[str], desc: str = "") -> list[str]:
        """The texts with their pair's score in front (`format_passage`)."""
        cosines = self.cosines(queries, texts, desc)
        return [format_passage(c, t) for c, t in zip(cosines, texts, strict=True)]

    def tuples(self, rows: Sequence[NTuple]) -> list[NTuple]:
        """Training or dev tuples whose positive and negatives carry their scores."""
        queries = [t.question for t in rows for _ in range(1 + len(t.negatives))]
        texts = [text for t in rows for text in (t.positive, *t.negatives)]
        formatted = iter(self.passages(queries, texts, "scores for the input"))
        return [
            NTuple(t.question, next(formatted), [next(formatted) for _ in t.negatives])
            for t in rows
        ]
