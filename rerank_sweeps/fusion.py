"""Fusion of a reranker's score with the first stage's, as a LanceDB `Reranker`.

A reranker trained on little data often knows something the retriever does not and misses
something it knows; a convex combination of the two normalised scores with one weight per
query type, fit on dev only (Bruch et al., arXiv 2210.11934), keeps the best of both. `rrf`
combines the two rankings instead of the scores (weighted reciprocal rank fusion).

First-stage scores: vector search's similarity (-distance), BM25's score, and for hybrid the
RRF score of the two legs (LanceDB's `RRFReranker`, k=60). Convex fusion min-max normalises
each score per query, so the weight is comparable across queries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from lancedb.rerankers import Reranker

from rerank_sweeps.rerankers import RELEVANCE, ModelReranker, rerank_order

METHODS = ("convex", "rrf")
RRF_K = 60
WEIGHT_GRID = tuple(round(float(w), 2) for w in np.linspace(0.0, 1.0, 21))


def _minmax(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    span = float(values.max() - values.min()) if values.size else 0.0
    return (values - values.min()) / span if span > 0 else np.zeros_like(values)


def _ranks(scores: np.ndarray) -> np.ndarray:
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[rerank_order(scores)] = np.arange(1, len(scores) + 1)
    return ranks


def fuse(method: str, weight: float, model: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Fused scores: `weight` on the reranker, `1 - weight` on the first stage."""
    if method == "convex":
        return weight * _minmax(model) + (1.0 - weight) * _minmax(first)
    if method == "rrf":
        return weight / (RRF_K + _ranks(model)) + (1.0 - weight) / (RRF_K + _ranks(first))
    raise ValueError(f"unknown fusion method {method!r}: choose one of {', '.join(METHODS)}")


def rrf_scores(keys: Sequence[Any], *legs: Sequence[Any], k: int = RRF_K) -> np.ndarray:
    """RRF score of each key over the legs' orders (a key absent from a leg adds nothing),
    summed leg by leg as LanceDB's `RRFReranker` does."""
    total = np.zeros(len(keys), dtype=np.float64)
    for leg in legs:
        rank = {key: r for r, key in enumerate(dict.fromkeys(leg), 1)}
        total += np.array([1.0 / (k + rank[key]) if key in rank else 0.0 for key in keys])
    return total


class FusedReranker(Reranker):
    """A trained reranker's score fused with the first stage's, per query type's weight.

    `weights` maps a query type (vector, fts, hybrid) to the reranker's weight; a type with no
    weight falls back to the reranker alone (weight 1).
    """

    def __init__(
        self,
        inner: ModelReranker,
        method: str,
        weights: dict[str, float],
        return_score: str = "relevance",
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown fusion method {method!r}: choose one of {METHODS}")
        super().__init__(return_score)
        self.inner = inner
        self.method = method
        self.weights = {k: float(v) for k, v in weights.items()}
        self.column = inner.column

    def __str__(self) -> str:
        return f"FusedReranker({self.method}, {self.weights}, {self.inner})"

    def _fused(self, query: str, results: pa.Table, first: np.ndarray, qt: str) -> pa.Table:
        results = self._handle_empty_results(results)
        if results.num_rows == 0:
            return results
        model = self.inner.score_texts(query, results[self.column].to_pylist())
        scores = fuse(self.method, self.weights.get(qt, 1.0), model, first).astype(np.float32)
        drop = [c for c in ("_score", "_distance", RELEVANCE) if c in results.column_names]
        if self.score == "relevance":
            results = results.drop_columns(drop)
        elif RELEVANCE in results.column_names:
            results = results.drop_columns([RELEVANCE])
        results = results.append_column(RELEVANCE, pa.array(scores, type=pa.float32()))
        return results.take(pa.array(rerank_order(scores)))

    def rerank_vector(self, query: str, vector_results: pa.Table) -> pa.Table:
        """Fuse with the vector similarity (-distance)."""
        first = -np.asarray(vector_results["_distance"].to_numpy(), dtype=np.float64)
        return self._fused(query, vector_results, first, "vector")

    def rerank_fts(self, query: str, fts_results: pa.Table) -> pa.Table:
        """Fuse with the BM25 score."""
        first = np.asarray(fts_results["_score"].to_numpy(), dtype=np.float64)
        return self._fused(query, fts_results, first, "fts")

    def rerank_hybrid(
        self, query: str, vector_results: pa.Table, fts_results: pa.Table
    ) -> pa.Table:
        """Fuse with the RRF score of the two legs over their union (vector order first)."""
        key = "_rowid" if "_rowid" in vector_results.column_names else self.inner.id_column
        vector_keys = vector_results[key].to_pylist() if vector_results.num_rows else []
        fts_keys = fts_results[key].to_pylist() if fts_results.num_rows else []
        if vector_results.num_rows == 0:
            merged = fts_results
        elif fts_results.num_rows == 0:
            merged = vector_results
        else:
            merged = self.inner.merge_results(vector_results, fts_results)
        first = rrf_scores(merged[key].to_pylist(), vector_keys, fts_keys)
        return self._fused(query, merged, first, "hybrid")


def fit_weights(
    method: str,
    query_types: Sequence[str],
    metric_of: Any,
) -> dict[str, dict[str, float]]:
    """The weight per query type that maximises `metric_of(qt, reranker_weight)` on dev.

    Ties go to the larger reranker weight. Returns {qt: {"weight", "dev"}}.
    """
    fitted: dict[str, dict[str, float]] = {}
    for qt in query_types:
        best_w, best_v = 1.0, -np.inf
        for w in sorted(WEIGHT_GRID, reverse=True):
            value = float(metric_of(qt, w))
            if value > best_v + 1e-12:
                best_w, best_v = w, value
        fitted[qt] = {"weight": best_w, "dev": round(best_v, 6)}
    return fitted
