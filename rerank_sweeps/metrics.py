"""Metrics of rankings with 95% intervals, and their paired differences to the baseline.

hit@k, MRR@k and nDCG@k with binary relevance (relevant = the query's id set); intervals are
Wilson for hit and a seeded bootstrap over queries otherwise; the paired difference to the
baseline comes from `stats.paired_comparison` (exact McNemar p for hit, sign-flip
randomization p for MRR/nDCG, the test-inversion interval of the same test). Keys are
`records.MetricKey` / `records.PairedKey` in their string form (results.json's).
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rerank_sweeps.candidates import EvalItem
from rerank_sweeps.records import BASELINE, CEILING, METRICS, MetricKey, PairedKey
from rerank_sweeps.stats import PERMUTATIONS, paired_comparison

Z95 = 1.959963984540054


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
                    key = MetricKey(qt, system, m, k).name
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
                    ours = MetricKey(qt, system, m, k)
                    diffs = per_query[ours.name] - per_query[ours.of(BASELINE).name]
                    key = PairedKey(qt, system, BASELINE, m, k).name
                    if n == 0:  # nothing to test: the old schema's empty entry
                        paired[key] = {"diff": math.nan, "interval": None, "p_value": None}
                        continue
                    paired[key] = paired_comparison(diffs, m, PERMUTATIONS).as_record()
    return {"metrics": metrics, "intervals": intervals, "paired": paired}
