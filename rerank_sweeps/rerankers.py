"""Our trained rerankers as `lancedb.rerankers.Reranker`s, so the path we measure is the path
users run: `tbl.search(query_type="hybrid").vector(v).text(q).rerank(reranker=ours).limit(k)`.

`ModelReranker` is what every architecture's reranker shares (LanceDB's interface, primed
scores, timing, bf16 autocast); each architecture's own subclass lives in its module under
`rerank_sweeps/archs/` (`archs.ce.CrossEncoderReranker`: raw logits as scores;
`archs.colbert.ColBERTReranker`: MaxSim). `archs.load_reranker(model_artifact_dir)` reads the
artifact's reranker.json and returns the reranker of its architecture. Scores are float32; the
ranking is a stable sort on descending score, so ties keep the incoming order (vector leg
first, then the FTS leg's new rows, for hybrid).

Evaluation scores every unique (query, text) pair once in one length-sorted batched pass and
`prime`s the reranker with the results; the `rerank_*` methods then look scores up instead of
running the model again, for every k and query type.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from lancedb.rerankers import Reranker

from rerank_sweeps.machine import resolve_bf16

log = logging.getLogger(__name__)

RERANKER_JSON = "reranker.json"
RELEVANCE = "_relevance_score"


def rerank_order(scores: np.ndarray) -> np.ndarray:
    """Indices that sort `scores` descending; ties keep their incoming order (stable)."""
    return np.argsort(-np.asarray(scores, dtype=np.float32), kind="stable")


def _first_occurrences(keys: Sequence[Any]) -> np.ndarray:
    seen: set[Any] = set()
    mask = np.zeros(len(keys), dtype=bool)
    for i, key in enumerate(keys):
        if key not in seen:
            seen.add(key)
            mask[i] = True
    return mask


class ModelReranker(Reranker):
    """A LanceDB reranker whose relevance is a model's score of (query, row text).

    Subclasses implement `_score_pairs(queries, texts)`. LanceDB's base class keeps its
    return-score mode in an attribute named `score`, which would hide our `score(query,
    texts)` method; the `score` property below serves the method and stores the mode in
    `return_score` (this class's rerank methods read that instead).
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        device: str = "auto",
        bf16: str | bool = "auto",
        batch_size: int = 64,
        column: str = "text",
        id_column: str = "id",
        meta: dict[str, Any] | None = None,
        return_score: str = "relevance",
    ) -> None:
        from rerank_sweeps.index import resolve_device

        super().__init__(return_score)
        self.model_dir = Path(model_dir)
        self.device = resolve_device(device)
        self.bf16 = resolve_bf16(bf16, self.device)
        self.batch_size = int(batch_size)
        self.column = column
        self.id_column = id_column
        self.meta = dict(meta or {})
        self._primed: dict[tuple[str, str], float] = {}
        # Threads tokenising ahead of the model: worth it where the forward pass does not
        # occupy the CPU (a GPU); on a CPU they would only compete with torch's own threads.
        self.tokenize_workers = 4 if self.device.startswith("cuda") else 0
        self.forward_seconds = 0.0  # time inside the model's forward passes
        self.pairs_scored = 0  # (query, text) pairs that went through the model

    # -- the `score` name: method for us, mode string for LanceDB's base class --------------
    @property
    def score(self):  # type: ignore[override]
        """`score(query, texts) -> np.ndarray` (float32, higher = more relevant)."""
        return self.score_texts

    @score.setter
    def score(self, mode: str) -> None:
        self.return_score = mode

    def __str__(self) -> str:
        return (
            f"{type(self).__name__}(model={self.model_dir}, device={self.device}, bf16={self.bf16})"
        )

    # -- scoring ----------------------------------------------------------------------------
    def score_texts(self, query: str, texts: Sequence[str]) -> np.ndarray:
        """Scores of `texts` for `query`, from the primed table where present, else the model."""
        texts = list(texts)
        out = np.empty(len(texts), dtype=np.float32)
        missing = []
        for i, text in enumerate(texts):
            hit = self._primed.get((query, text))
            if hit is None:
                missing.append(i)
            else:
                out[i] = hit
        if missing:
            got = self.score_pairs([query] * len(missing), [texts[i] for i in missing])
            out[missing] = got
        return out

    def score_pairs(self, queries: Sequence[str], texts: Sequence[str]) -> np.ndarray:
        """Model scores of the pairs (queries[i], texts[i]): float32, batched across queries."""
        if len(queries) != len(texts):
            raise ValueError("score_pairs needs as many queries as texts")
        if not len(queries):
            return np.empty(0, dtype=np.float32)
        queries = list(queries)
        texts = self.prepare_texts(queries, list(texts))
        scores = np.asarray(self._score_pairs(queries, texts), dtype=np.float32)
        self.pairs_scored += len(queries)
        return scores

    def prepare_texts(self, queries: list[str], texts: list[str]) -> list[str]:
        """The texts as the model reads them with their queries (here: unchanged)."""
        del queries
        return texts

    def _score_pairs(self, queries: list[str], texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def prime(self, pairs: Iterable[tuple[str, str]], scores: Iterable[float]) -> None:
        """Remember precomputed scores so that reranking looks them up instead of rescoring."""
        for pair, value in zip(pairs, scores, strict=True):
            self._primed[pair] = float(np.float32(value))

    def clear_primed(self) -> None:
        """Forget all primed scores."""
        self._primed.clear()

    def _autocast(self):
        import contextlib

        import torch

        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.split(":")[0], dtype=torch.bfloat16)

    def _sync(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()

    # -- LanceDB's Reranker interface -------------------------------------------------------
    def _rerank(self, query: str, results: pa.Table) -> pa.Table:
        results = self._handle_empty_results(results)
        if results.num_rows == 0:
            return results
        scores = self.score_texts(query, results[self.column].to_pylist())
        results = results.append_column(RELEVANCE, pa.array(scores, type=pa.float32()))
        return results.take(pa.array(rerank_order(scores)))

    def merge_results(self, vector_results: pa.Table, fts_results: pa.Table) -> pa.Table:
        """Vector rows in their order, then FTS rows not seen yet, in theirs (dedup by row)."""
        combined = pa.concat_tables([vector_results, fts_results], **self._concat_tables_args)
        key = "_rowid" if "_rowid" in combined.column_names else self.id_column
        return combined.filter(pa.array(_first_occurrences(combined[key].to_pylist())))

    def _keep_relevance_score(self, combined_results: pa.Table) -> pa.Table:
        if self.return_score == "relevance":
            drop = [c for c in ("_score", "_distance") if c in combined_results.column_names]
            combined_results = combined_results.drop_columns(drop)
        return combined_results

    def rerank_vector(self, query: str, vector_results: pa.Table) -> pa.Table:
        """Rerank a vector search's rows."""
        return self._keep_relevance_score(self._rerank(query, vector_results))

    def rerank_fts(self, query: str, fts_results: pa.Table) -> pa.Table:
        """Rerank a full-text search's rows."""
        return self._keep_relevance_score(self._rerank(query, fts_results))

    def rerank_hybrid(
        self, query: str, vector_results: pa.Table, fts_results: pa.Table
    ) -> pa.Table:
        """Merge both legs (de-duplicated, vector order first) and rerank the union."""
        if vector_results.num_rows == 0:
            merged = fts_results
        elif fts_results.num_rows == 0:
            merged = vector_results
        else:
            merged = self.merge_results(vector_results, fts_results)
        return self._keep_relevance_score(self._rerank(query, merged))


def length_sorted(queries: Sequence[str], texts: Sequence[str]) -> np.ndarray:
    """Pair indices, longest pair first: batches of similar length waste little padding."""
    lengths = np.fromiter(
        (len(q) + len(t) for q, t in zip(queries, texts, strict=True)), dtype=np.int64
    )
    return np.argsort(-lengths, kind="stable")
