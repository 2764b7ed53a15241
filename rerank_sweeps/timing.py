"""The latency timing harness: warm-up, then timed iterations of each system per query, in
turn, and their percentiles. Model-agnostic (tested with fakes); `latency_device` runs it on
the real systems."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

STATS = ("p50", "p95", "p99", "mean")
PARTS = ("total", "retrieval", "rerank")
T = TypeVar("T")


def time_pipeline(
    queries: Sequence[str],
    retrieve: Callable[[str], T],
    rerank: Callable[[str, T], Any] | None,
    warmup: int,
    iterations: int,
    synchronize: Callable[[], None] | None = None,
    progress: Any = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """Milliseconds per timed iteration of one system: {"total", "retrieval", "rerank"}.

    `time_systems` with a single system (see there).
    """
    return time_systems(
        queries, retrieve, {"_": rerank}, warmup, iterations, synchronize, progress, clock
    )["_"]


def time_systems(
    queries: Sequence[str],
    retrieve: Callable[[str], T],
    reranks: dict[str, Callable[[str, T], Any] | None],
    warmup: int,
    iterations: int,
    synchronize: Callable[[], None] | None = None,
    progress: Any = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, dict[str, list[float]]]:
    """Milliseconds per timed iteration of every system: {name: {"total", "retrieval", "rerank"}}.

    A system is `retrieve(q)` followed by its `rerank(q, candidates)` (None: retrieval only).
    Every system first runs `warmup` iterations, all before any timed one, so a cold start of
    the shared retrieval path (the embedder's first calls, LanceDB opening the table) is paid
    before timing, by nobody in particular. Then iteration i runs every system on the same
    q = queries[i % len], in an order rotated by i, so drifting conditions (clocks, load,
    caches) fall on all systems alike. `synchronize` (e.g. `torch.cuda.synchronize`) is called
    around each timed part, so queued GPU work is counted where it was issued.
    """
    if not queries:
        raise ValueError("time_pipeline needs at least one query")
    sync = synchronize or (lambda: None)
    names = list(reranks)
    out: dict[str, dict[str, list[float]]] = {name: {p: [] for p in PARTS} for name in names}

    def once(name: str, query: str, timed: bool) -> None:
        rerank = reranks[name]
        sync()
        started = clock()
        candidates = retrieve(query)
        sync()
        retrieved = clock()
        if rerank is not None:
            rerank(query, candidates)
            sync()
        finished = clock()
        if timed:
            out[name]["total"].append((finished - started) * 1e3)
            out[name]["retrieval"].append((retrieved - started) * 1e3)
            out[name]["rerank"].append((finished - retrieved) * 1e3)
        if progress is not None:
            progress.update(1)

    for name in names:
        for i in range(warmup):
            once(name, queries[i % len(queries)], timed=False)
    for i in range(iterations):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            once(name, queries[i % len(queries)], timed=True)
    for name in names:
        if reranks[name] is None:
            del out[name]["rerank"]
    return out


def summarize(ms: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99 (numpy's linear interpolation) and mean of `ms`, keyed "<stat>_ms"."""
    values = np.asarray(ms, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no timings to summarize")
    out = {f"p{q}_ms": float(np.percentile(values, q)) for q in (50, 95, 99)}
    out["mean_ms"] = float(values.mean())
    return out


def summarize_parts(parts: dict[str, list[float]]) -> dict[str, float]:
    """`summarize` of every part: end to end unprefixed, the others prefixed by their name."""
    out: dict[str, float] = {}
    for part, ms in parts.items():
        prefix = "" if part == "total" else f"{part}_"
        out.update({prefix + k: v for k, v in summarize(ms).items()})
    return out
