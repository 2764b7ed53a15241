"""What the report's plots need from the run records, shared by the PNGs (report_plots) and
report.html (dashboard): metric values and intervals by name, the swept parameters and their
axes, latency points with the Pareto front, and the dev training curves."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rerank_sweeps.gate import GATE_MARK
from rerank_sweeps.records import BASELINE, RERANKED, MetricKey, Record

SWEPT_KEYS = (
    "arch",
    "base",
    "negatives",
    "epochs",
    "init",
    "top_k",
    "overfetch",
    "arch.lr",
    "seed",
)
DEFAULT_OBJECTIVE = str(MetricKey("hybrid", RERANKED, "hit", 5))


# Override keys that are never a swept parameter: where and how a run logs, which preset
# bundle it started from (shown as the sweep instead), how latency is measured.
NOT_PARAMS = ("experiment", "logger", "objective", "hydra", "paths", "latency", "wandb")
_MISSING = object()


def metric_value(record: Record, name: str | MetricKey) -> float | None:
    """A metric of the record by name: an eval metric, `dev/<metric>`, or an objective's value."""
    value: Any = record.metric(name)
    name = str(name)
    if value is None and name.startswith("dev/"):
        value = record.dev.get(name.removeprefix("dev/"))
    if value is None:
        names, objective = record.objective_names, record.objective
        if name in names and names.index(name) < len(objective):
            value = objective[names.index(name)]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value)


def metric_interval(record: Record, name: str | MetricKey) -> tuple[float, float] | None:
    """The 95% interval recorded for a metric (None when the evaluation recorded none)."""
    interval = record.interval(name)
    if isinstance(interval, (list, tuple)) and len(interval) == 2 and None not in interval:
        return float(interval[0]), float(interval[1])
    return None


def objective_name(records: Sequence[Record]) -> str:
    """The first objective most records name (hybrid/reranked/hit@5 when none does)."""
    names = Counter(r.objective_names[0] for r in records if r.objective_names)
    return names.most_common(1)[0][0] if names else DEFAULT_OBJECTIVE


def _scalar(text: str) -> Any:
    """An override's value as Hydra would read a plain scalar: int, float or string."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def param_value(record: Record, key: str) -> Any:
    """The value a run used for a parameter: the record's own field, its config, or override.

    The resolved value comes first because a preset sets parameters without an override (the
    epochs of one sweep come from its experiment file, another sweep overrides them).
    """
    top = record.value(key)
    if top is not None and not isinstance(top, (dict, list)):
        return top
    node: Any = record.config
    for part in key.split("."):
        node = node.get(part, _MISSING) if isinstance(node, dict) else _MISSING
    if isinstance(node, dict):  # a config group: its name is the choice (arch=ce)
        node = node.get("name", _MISSING)
    if node is not _MISSING:  # None included: the config says the run had no value
        return str(node) if isinstance(node, (list, dict)) else node
    for override in record.overrides:
        name, _, value = override.partition("=")
        if name.lstrip("+~") == key:
            return None if value == "null" else _scalar(value)
    return None


def swept_params(records: Sequence[Record]) -> dict[str, list[Any]]:
    """Parameters that differ between the records: key -> value per record (None: unknown).

    Candidates are the record's own fields among SWEPT_KEYS (arch, negatives, epochs, ...)
    and every overridden key except NOT_PARAMS; a candidate is swept when the records hold
    more than one value of it. A config value nobody overrode (the learning rate each arch
    defaults to) is not a candidate: it would only repeat another column.
    """
    keys = [k for k in SWEPT_KEYS if any(r.has(k) for r in records)]
    for r in records:
        for override in r.overrides:
            key = override.partition("=")[0].lstrip("+~")
            if key and key not in keys and key.split(".")[0] not in NOT_PARAMS:
                keys.append(key)
    out = {}
    for key in keys:
        values = [param_value(r, key) for r in records]
        if len({repr(v) for v in values if v is not None}) > 1:
            out[key] = values
    return out


def param_kind(values: Sequence[Any]) -> str:
    """How to lay a parameter out on an axis: "int", "float", "log" or "category"."""
    known = [v for v in values if v is not None]
    if known and all(isinstance(v, int) and not isinstance(v, bool) for v in known):
        return "int"
    if known and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in known):
        # A learning rate searched over decades reads on a log axis; 0.1..0.5 does not.
        return "log" if min(known) > 0 and max(known) / min(known) >= 10 else "float"
    return "category"


@dataclass(frozen=True)
class Axis:
    """Where each value of a parameter sits on a plot axis, and the ticks to draw."""

    kind: str
    positions: dict[Any, float]
    tickvals: list[float]
    ticktext: list[str]

    @classmethod
    def of(cls, values: Sequence[Any]) -> Axis:
        """The axis for a parameter's values: numbers where they are, categories at 0, 1, ..."""
        kind = param_kind(values)
        distinct: list[Any]
        if kind == "category":
            distinct = sorted({str(v) for v in values if v is not None})
            positions = {v: float(i) for i, v in enumerate(distinct)}
        else:
            distinct = sorted({v for v in values if v is not None})
            positions = {v: float(v) for v in distinct}
        ticks = [positions[v] for v in distinct]
        return cls(kind, positions, ticks, [_tick(v) for v in distinct])

    def position(self, value: Any) -> float | None:
        """The axis position of a value (None for an unknown value)."""
        if value is None:
            return None
        return self.positions.get(str(value) if self.kind == "category" else value)

    def dodge(self, position: float, group: float, groups: int) -> float:
        """The position moved aside for the group-th of `groups` series sharing the axis.

        Runs of different series at one value would hide each other's error bars; the offset
        is a small share of the smallest gap between values (a factor on a log axis).
        """
        if groups <= 1:
            return position
        share = (group - (groups - 1) / 2) * 0.4 / groups
        if self.kind == "log":
            ratios = [b / a for a, b in zip(self.tickvals, self.tickvals[1:], strict=False)]
            return position * min(ratios, default=2.0) ** share
        gaps = [b - a for a, b in zip(self.tickvals, self.tickvals[1:], strict=False)]
        return position + share * min(gaps, default=1.0)

    def spread(self, values: Sequence[Any], groups: Sequence[int]) -> list[float | None]:
        """Each point's x: its value's position, aside by its series, then by its rank there.

        Runs with one value of the parameter (five colbert runs at arch=colbert) would be
        drawn on top of each other; each series gets a slot per run at its most crowded value.
        """
        ranks, counts = [], Counter[tuple[int, str]]()
        for value, group in zip(values, groups, strict=True):
            ranks.append(counts[(group, repr(value))])
            counts[(group, repr(value))] += 1
        per_group = max(counts.values(), default=1)
        slots = (max(groups, default=0) + 1) * per_group
        out: list[float | None] = []
        for value, group, rank in zip(values, groups, ranks, strict=True):
            position = self.position(value)
            # centred in its series' block: 3 runs of a block of 4 take its middle three slots
            slot = group * per_group + rank + (per_group - counts[(group, repr(value))]) / 2
            out.append(None if position is None else self.dodge(position, slot, slots))
        return out


def completed_with(records: Sequence[Record], objective: str) -> list[Record]:
    """The completed records that hold a value of the objective."""
    return [r for r in records if r.completed and metric_value(r, objective) is not None]


def _tick(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def hue_param(params: dict[str, list[Any]], x_key: str) -> str | None:
    """The categorical swept parameter (other than x) that colours a parameter plot.

    Runs of another arch answer differently to every parameter; one colour per arch keeps a
    plot of negatives from mixing two populations into one cloud.
    """
    for key, values in params.items():
        if key != x_key and param_kind(values) == "category":
            return key
    return None


@dataclass(frozen=True)
class LatencyPoint:
    """One run's measured latency, for the quality vs latency plot."""

    device: str
    system: str
    candidates: int
    p50_ms: float  # end to end: query embedding + vector search + reranking the candidates
    rerank_p50_ms: float | None  # the reranking alone


def _latency_cells(record: Record, system: str) -> dict[str, dict[int, dict[str, float]]]:
    """device -> candidates -> stat -> value, for one system of the record's latency."""
    cells: dict[str, dict[int, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for key, value in record.latency.items():
        if key.system == system and key.n is not None:
            cells[key.device][key.n][key.stat] = value
    return cells


def latency_points(record: Record, system: str | None = None) -> list[LatencyPoint]:
    """Per device, the end-to-end p50 of `system` (default: the trained reranker, fp32).

    The evaluated metrics come from the fp32 reranker on `eval.depth` candidates, so that is
    the setting timed here when it was measured (else the fewest candidates measured).
    """
    # The latency stage names the fp32 reranker after its architecture.
    system = system or str(record.arch)
    depth = (record.config.get("eval") or {}).get("depth")
    points = []
    for device, per_n in sorted(_latency_cells(record, system).items()):
        measured = {n: stats for n, stats in per_n.items() if "p50_ms" in stats}
        if not measured:
            continue
        n = depth if depth in measured else min(measured)
        stats = measured[n]
        points.append(LatencyPoint(device, system, n, stats["p50_ms"], stats.get("rerank_p50_ms")))
    return points


def first_stage_metric(objective: str) -> str | None:
    """The no-reranker counterpart of an eval objective (hybrid/baseline/hit@5), if it has one."""
    key = MetricKey.try_parse(objective)
    if key is not None and key.system == RERANKED:
        return key.of(BASELINE).name
    return None


@dataclass(frozen=True)
class QualityPoint:
    """A point of the quality vs latency plot: a run, or the first stage alone."""

    label: str
    latency: LatencyPoint
    quality: float
    interval: tuple[float, float] | None
    gate_failed: bool
    reference: bool  # the first stage only (no reranker), not a trained run


def point_groups(
    points: Sequence[QualityPoint],
) -> list[tuple[str, str, str, list[QualityPoint], str]]:
    """The quality-vs-latency points split for drawing: (device, legend suffix, kind, points,
    legend name) per device and kind (first stage only, run, run whose dev gate failed), both
    in the PNG and in report.html."""
    devices = sorted({p.latency.device for p in points})
    out = []
    for device in devices:
        mine = [p for p in points if p.latency.device == device]
        suffix = f" ({device})" if len(devices) > 1 else ""
        for kind, group, name in (
            ("reference", [p for p in mine if p.reference], "first stage only"),
            ("run", [p for p in mine if not p.reference and not p.gate_failed], "run"),
            (
                "gate_failed",
                [p for p in mine if p.gate_failed],
                f"run, dev gate failed {GATE_MARK}",
            ),
        ):
            if group:
                out.append((device, suffix, kind, group, name))
    return out


def quality_latency_points(records: Sequence[Record], objective: str) -> list[QualityPoint]:
    """Every completed run with a latency and the objective, plus the first stage alone.

    The first stage (retrieval without reranking) is an option a deployment has too, so it
    is drawn and takes part in the Pareto front; it is shown once per candidates artifact.
    """
    points = []
    reference = first_stage_metric(objective)
    seen: set[tuple[str, str, int]] = set()
    for r in records:
        if not r.completed:
            continue
        value = metric_value(r, objective)
        for lat in latency_points(r):
            if value is not None:
                interval = metric_interval(r, objective)
                points.append(QualityPoint(r.label, lat, value, interval, r.gate_failed, False))
            base = metric_value(r, reference) if reference else None
            candidates = r.candidates
            for ref in latency_points(r, "none"):
                if base is None or ref.candidates != lat.candidates:
                    continue
                if (ref.device, candidates, ref.candidates) in seen:
                    continue
                seen.add((ref.device, candidates, ref.candidates))
                points.append(
                    QualityPoint(
                        "first stage only (no reranker)",
                        ref,
                        base,
                        metric_interval(r, reference or ""),
                        False,
                        True,
                    )
                )
    return points


def latency_axis_label(points: Sequence[QualityPoint]) -> str:
    """What the x axis of quality vs latency holds: end-to-end p50 at N candidates."""
    counts = sorted({p.latency.candidates for p in points})
    n = f"{counts[0]} candidates" if len(counts) == 1 else "N candidates (see each point)"
    return f"end-to-end latency p50, ms (query embedding + vector search + reranking {n})"


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the (latency, quality) points no other point beats, by rising latency.

    A point is on the front when every faster (or equally fast) point has lower quality.
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front: list[int] = []
    best = -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def training_curve(record: Record) -> tuple[str, list[tuple[int, float]]] | None:
    """The dev metric's name and (step, value) per dev evaluation (step -1: before training)."""
    history = record.dev_history
    if history is None:
        return None
    metric, points = None, []
    for entry in history:
        if not isinstance(entry, dict) or not isinstance(entry.get("step"), int):
            continue
        for key, value in entry.items():
            if key != "step" and isinstance(value, (int, float)):
                metric = metric or key
                if key == metric:
                    points.append((entry["step"], float(value)))
    return (metric, sorted(points)) if metric and points else None


def dev_metric_label(metric: str) -> str:
    """'dev nDCG@10' for 'ndcg@10'."""
    return "dev " + metric.replace("ndcg", "nDCG").replace("mrr", "MRR")


def param_series(
    params: dict[str, list[Any]], key: str
) -> tuple[Axis, str | None, list[tuple[str, list[int]]], list[float | None]]:
    """How a parameter plot of `key` lays out the runs, for the PNG and report.html alike: its
    axis, the parameter that colours the series (or None), each series' name and run indices
    (runs with a position on the axis only), and each run's x position (moved slightly aside
    per series, so that error bars do not overlap)."""
    values = params[key]
    axis = Axis.of(values)
    hue = hue_param(params, key)
    groups = sorted({str(v) for v in params[hue]}) if hue else [""]
    slot = [groups.index(str(params[hue][i])) if hue else 0 for i in range(len(values))]
    positions = axis.spread(values, slot)
    series = [
        (group, [i for i in range(len(values)) if positions[i] is not None and slot[i] == g])
        for g, group in enumerate(groups)
    ]
    return axis, hue, [(group, members) for group, members in series if members], positions


def first_stage_dev(records: Sequence[Record]) -> set[float]:
    """The dev gate's first-stage values (one per distinct dev setup), rounded to 4 digits."""
    return {
        round(float(r.dev_gate["first_stage"]), 4)
        for r in records
        if r.dev_gate is not None and isinstance(r.dev_gate.get("first_stage"), (int, float))
    }
