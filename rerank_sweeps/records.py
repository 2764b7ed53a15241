"""Metric keys and run records: the one place that spells and reads them.

An evaluation's numbers travel as string keys (results.json, record.json, W&B summaries,
objective names): a metric is `<query type>/<system>/<metric>@<k>` (`hybrid/reranked/hit@5`),
a paired difference `<query type>/<system>-<reference>/<metric>@<k>`, a latency measurement
`<device>/<system>/<candidates>/<stat>`. `MetricKey`, `PairedKey` and `LatencyKey` build and
parse these strings; nothing else in the package formats or splits them.

`Record` is a run's `record.json` read back, typed: the reports, the results page, the
dashboard and the recipe page read records through it instead of digging in dicts. The JSON
itself is never rewritten here (`Record.raw` keeps it as read), so old run directories stay
readable and the on-disk format is the writer's (`tracking.RunRecord`).

This module imports nothing from the rest of the package, so that any module (config.py
included) can use it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

QUERY_TYPES = ("vector", "fts", "hybrid")
METRICS = ("hit", "mrr", "ndcg")
BASELINE, CEILING = "baseline", "ceiling"
RERANKED, FUSED, UNTRAINED = "reranked", "fused", "untrained"
EVAL_CANDIDATES = "eval"  # the `candidates` part of a latency key holding an accuracy check
# The dev evaluation's cut-offs and its primary metric (mean nDCG@10 over the dev query types):
# record.json's `dev` keys are `ndcg@10` and `<type>_<metric>@<k>` for these k.
DEV_KS = (5, 10)
DEV_PRIMARY = "ndcg@10"


def _metric_at_k(text: str) -> tuple[str, int]:
    """('hit', 5) from 'hit@5'; ValueError when there is no integer k."""
    metric, at, k = text.partition("@")
    if not metric or not at or not k.isdigit():
        raise ValueError(f"{text!r} is not <metric>@<k>")
    return metric, int(k)


@dataclass(frozen=True, order=True)
class MetricKey:
    """One evaluated number: a query type, a system, a metric and its cut-off k."""

    query_type: str
    system: str
    metric: str
    k: int

    def __str__(self) -> str:
        return f"{self.query_type}/{self.system}/{self.metric}@{self.k}"

    @property
    def name(self) -> str:
        """The string form used in results.json, record.json, W&B and objective names."""
        return str(self)

    @property
    def metric_at_k(self) -> str:
        """'hit@5'."""
        return f"{self.metric}@{self.k}"

    @classmethod
    def parse(cls, text: str) -> MetricKey:
        """The key of 'hybrid/reranked/hit@5'; ValueError for anything else."""
        parts = str(text).split("/")
        if len(parts) != 3 or not parts[0] or not parts[1]:
            raise ValueError(f"{text!r} is not a metric key <query type>/<system>/<metric>@<k>")
        metric, k = _metric_at_k(parts[2])
        return cls(parts[0], parts[1], metric, k)

    @classmethod
    def try_parse(cls, text: Any) -> MetricKey | None:
        """`parse`, or None when `text` is no metric key (a dev key, a latency key...)."""
        try:
            return cls.parse(text)
        except ValueError:
            return None

    def of(self, system: str) -> MetricKey:
        """The same query type, metric and k for another system."""
        return MetricKey(self.query_type, system, self.metric, self.k)


@dataclass(frozen=True, order=True)
class PairedKey:
    """One paired difference: `system` minus `reference` on a query type's metric@k."""

    query_type: str
    system: str
    reference: str
    metric: str
    k: int

    def __str__(self) -> str:
        return f"{self.query_type}/{self.comparison}/{self.metric}@{self.k}"

    @property
    def name(self) -> str:
        """The string form used in results.json and record.json ("paired")."""
        return str(self)

    @property
    def comparison(self) -> str:
        """'reranked-baseline'."""
        return f"{self.system}-{self.reference}"

    @property
    def metric_at_k(self) -> str:
        """'hit@5'."""
        return f"{self.metric}@{self.k}"

    @classmethod
    def parse(cls, text: str) -> PairedKey:
        """The key of 'hybrid/reranked-baseline/hit@5'; ValueError for anything else."""
        parts = str(text).split("/")
        if len(parts) != 3:
            raise ValueError(f"{text!r} is not a paired key <qt>/<system>-<reference>/<m>@<k>")
        # System names hold no '-'; the reference is the last part.
        system, dash, reference = parts[1].rpartition("-")
        if not dash or not system or not reference:
            raise ValueError(f"{text!r} names no <system>-<reference> comparison")
        metric, k = _metric_at_k(parts[2])
        return cls(parts[0], system, reference, metric, k)

    @classmethod
    def try_parse(cls, text: Any) -> PairedKey | None:
        """`parse`, or None when `text` is no paired key."""
        try:
            return cls.parse(text)
        except ValueError:
            return None


@dataclass(frozen=True)
class LatencyKey:
    """One latency number: device, system (`none`: no reranker), candidates and statistic.

    `candidates` is a count (`20`) or `eval` for the accuracy check of a latency setting.
    """

    device: str
    system: str
    candidates: str
    stat: str

    def __str__(self) -> str:
        return f"{self.device}/{self.system}/{self.candidates}/{self.stat}"

    @property
    def name(self) -> str:
        """The string form used in record.json ("latency") and latency objectives."""
        return str(self)

    @property
    def is_timing(self) -> bool:
        """Whether it is a timing (not the accuracy of a latency setting)."""
        return self.candidates != EVAL_CANDIDATES

    @property
    def n(self) -> int | None:
        """The candidate count as a number (None for `eval` or anything not a count)."""
        return int(self.candidates) if self.candidates.isdigit() else None

    @classmethod
    def parse(cls, text: str) -> LatencyKey:
        """The key of 'cpu/ce/20/p50_ms'; ValueError for anything else."""
        parts = str(text).split("/")
        if len(parts) != 4:
            raise ValueError(f"{text!r} is not a latency key <device>/<system>/<N>/<stat>")
        return cls(*parts)

    @classmethod
    def try_parse(cls, text: Any) -> LatencyKey | None:
        """`parse`, or None when `text` is no latency key."""
        try:
            return cls.parse(text)
        except ValueError:
            return None


def count_key(query_type: str, count: str, k: int) -> str:
    """A results.json "counts" key: `hybrid/candidates@5`, `vector/with_relevant@10`."""
    return f"{query_type}/{count}@{k}"


def _number(value: Any) -> float | None:
    """A JSON number as float (None for anything else, booleans included)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


@dataclass(frozen=True)
class Record:
    """A run's record.json as read back (any status; older records miss later fields).

    Metric, interval and paired entries are keyed by `MetricKey` / `PairedKey` and latency
    numbers by `LatencyKey`; entries whose key does not parse are left out of these typed
    views (they stay in `raw`). `raw` is the JSON exactly as read, for fields no reader
    needs typed and for parameters looked up by name (`value`).
    """

    status: str = "?"
    reason: str | None = None
    name: str | None = None
    run_dir: str | None = None
    sweep_dir: str | None = None
    group: str | None = None
    job_num: int | None = None
    arch: str | None = None
    base: str | None = None
    negatives: Any = None  # an int in every record written so far
    epochs: Any = None
    overrides: list[str] = field(default_factory=list)
    objective_names: list[str] = field(default_factory=list)
    objective: list[Any] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[MetricKey, float] = field(default_factory=dict)
    intervals: dict[MetricKey, Any] = field(default_factory=dict)
    paired: dict[PairedKey, dict[str, Any]] = field(default_factory=dict)
    latency: dict[LatencyKey, float] = field(default_factory=dict)
    dev: dict[str, Any] = field(default_factory=dict)
    dev_gate: dict[str, Any] | None = None
    dev_history: list[Any] | None = None
    fusion: dict[str, Any] | None = None
    fingerprints: dict[str, Any] = field(default_factory=dict)
    stage_seconds: dict[str, Any] = field(default_factory=dict)
    cache_events: list[dict[str, Any]] = field(default_factory=list)
    versions: dict[str, Any] = field(default_factory=dict)
    git_commit: str | None = None
    started: str | None = None
    ended: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        """The typed view of a record.json payload (a dict as `json.loads` returns it)."""
        metrics = {}
        for key, value in _dict(data.get("metrics")).items():
            parsed, number = MetricKey.try_parse(key), _number(value)
            if parsed is not None and number is not None:
                metrics[parsed] = number
        intervals = {
            parsed: value
            for key, value in _dict(data.get("intervals")).items()
            if (parsed := MetricKey.try_parse(key)) is not None
        }
        paired = {
            parsed: value
            for key, value in _dict(data.get("paired")).items()
            if (parsed := PairedKey.try_parse(key)) is not None and isinstance(value, dict)
        }
        latency = {}
        for key, value in _dict(data.get("latency")).items():
            parsed, number = LatencyKey.try_parse(key), _number(value)
            if parsed is not None and number is not None:
                latency[parsed] = number
        dev_history = data.get("dev_history")
        return cls(
            status=str(data.get("status", "?")),
            reason=data.get("reason"),
            name=data.get("name"),
            run_dir=data.get("run_dir"),
            sweep_dir=data.get("sweep_dir"),
            group=data.get("group"),
            job_num=data.get("job_num"),
            arch=data.get("arch"),
            base=data.get("base"),
            negatives=data.get("negatives"),
            epochs=data.get("epochs"),
            overrides=[str(o) for o in _list(data.get("overrides"))],
            objective_names=[str(n) for n in _list(data.get("objective_names"))],
            objective=_list(data.get("objective")),
            config=_dict(data.get("config")),
            metrics=metrics,
            intervals=intervals,
            paired=paired,
            latency=latency,
            dev=_dict(data.get("dev")),
            dev_gate=data["dev_gate"] if isinstance(data.get("dev_gate"), dict) else None,
            dev_history=dev_history if isinstance(dev_history, list) else None,
            fusion=data["fusion"] if isinstance(data.get("fusion"), dict) else None,
            fingerprints=_dict(data.get("fingerprints")),
            stage_seconds=_dict(data.get("stage_seconds")),
            cache_events=[e for e in _list(data.get("cache_events")) if isinstance(e, dict)],
            versions=_dict(data.get("versions")),
            git_commit=data.get("git_commit"),
            started=data.get("started"),
            ended=data.get("ended"),
            raw=data,
        )

    @classmethod
    def load(cls, path: Path) -> Record:
        """Read a record.json file (OSError / ValueError when it is missing or not JSON)."""
        return cls.from_json(json.loads(Path(path).read_text()))

    def to_json(self) -> dict[str, Any]:
        """The payload as read (unchanged: the typed view never rewrites a record)."""
        return self.raw

    @property
    def label(self) -> str:
        """A short run name: arch-base-Nneg-Eep (the blog's naming of a model)."""
        return f"{self.arch}-{self.base}-{self.negatives}neg-{self.epochs}ep"

    @property
    def completed(self) -> bool:
        """Whether the run completed."""
        return self.status == "completed"

    @property
    def gate_failed(self) -> bool:
        """Whether the run's dev gate failed (False when it recorded none)."""
        return self.dev_gate is not None and self.dev_gate.get("passed") is False

    @property
    def candidates(self) -> str:
        """The fingerprint of the run's candidates (what reference rows depend on)."""
        return str(self.fingerprints.get("candidates"))

    def has(self, name: str) -> bool:
        """Whether record.json holds a top-level field `name`."""
        return name in self.raw

    def value(self, name: str) -> Any:
        """A top-level record.json field by name (None when absent), for parameters looked up
        by their name (arch, negatives, init, ...)."""
        return self.raw.get(name)

    def metric(self, key: MetricKey | str) -> float | None:
        """An evaluated metric (None when not recorded or `key` is no metric key)."""
        parsed = key if isinstance(key, MetricKey) else MetricKey.try_parse(key)
        return self.metrics.get(parsed) if parsed is not None else None

    def interval(self, key: MetricKey | str) -> Any:
        """The recorded 95% interval of a metric, as stored (None when none)."""
        parsed = key if isinstance(key, MetricKey) else MetricKey.try_parse(key)
        return self.intervals.get(parsed) if parsed is not None else None

    def latency_value(
        self, device: str, system: str, candidates: int | str, stat: str
    ) -> float | None:
        """One latency number (None when not measured)."""
        return self.latency.get(LatencyKey(device, system, str(candidates), stat))
