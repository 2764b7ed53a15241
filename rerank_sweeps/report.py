"""`python -m rerank_sweeps.report DIR`: the dashboard without a W&B account.

Reads every run record below DIR (a sweep, a run, or all of outputs/) and writes into DIR
(or `--out`): `report.md` with PNG plots beside it, and `report.html`, an interactive page
that needs no network to view (see rerank_sweeps.dashboard: a sortable, filterable run
table, parallel coordinates, quality vs latency with its Pareto front, metric vs each swept
parameter with intervals, training curves). Works on partial sweeps: running, died and
failed jobs are listed as such.
"""

from __future__ import annotations

import argparse
import html
import math
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rerank_sweeps.stats import record_p_text
from rerank_sweeps.tracking import load_records

QUERY_TYPES = ("vector", "fts", "hybrid")
REFERENCE_SYSTEMS = ("baseline", "untrained", "ceiling")
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


@dataclass
class Report:
    """The rendered report: markdown text and the PNG files written beside it."""

    markdown: str
    plots: list[Path]


def run_label(record: dict[str, Any]) -> str:
    """A short row label: arch/base, negatives and epochs (the blog's naming)."""
    return f"{record.get('arch')}-{record.get('base')}-{record.get('negatives')}neg-{record.get('epochs')}ep"


def _fmt(value: float | None, interval: Sequence[float] | None = None, bold: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = f"{100 * value:.1f}"
    if interval:
        text += f" [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"
    return f"**{text}**" if bold else text


GATE_FAILED_NOTE = (
    "the trained reranker did not beat the first stage on dev questions; its numbers are "
    "reported but it should not be deployed as is"
)
GATE_MARK = "†"


def _gate_metric(dev_gate: dict[str, Any]) -> str:
    """'dev nDCG@10' from the gate's metric ('dev ndcg@10, mean over query types')."""
    name = str(dev_gate.get("metric") or "dev metric").split(",")[0].strip()
    return name.replace("ndcg", "nDCG").replace("mrr", "MRR")


def gate_failed(record: dict[str, Any]) -> bool:
    """Whether the record's dev gate failed (False when the record has none)."""
    dev_gate = record.get("dev_gate")
    return isinstance(dev_gate, dict) and dev_gate.get("passed") is False


def gate_cell(record: dict[str, Any]) -> str:
    """passed / FAILED (dev nDCG@10 0.412 <= first stage 0.455) / – (no dev gate recorded)."""
    dev_gate = record.get("dev_gate")
    if not isinstance(dev_gate, dict) or "passed" not in dev_gate:
        return "–"
    if dev_gate["passed"]:
        return "passed"
    numbers = _gate_numbers(dev_gate)
    return f"FAILED ({numbers})" if numbers else "FAILED"


def _gate_numbers(dev_gate: dict[str, Any]) -> str:
    """'dev nDCG@10 0.412 <= first stage 0.455' ('' when the gate holds no numbers)."""
    ours, first = dev_gate.get("reranked"), dev_gate.get("first_stage")
    if not isinstance(ours, (int, float)) or not isinstance(first, (int, float)):
        return ""
    return f"{_gate_metric(dev_gate)} {ours:.3f} <= first stage {first:.3f}"


def gate_footnote(
    records: Sequence[dict[str, Any]], name: Callable[[dict[str, Any]], str] = run_label
) -> str:
    """The line under a table that marks failed runs with †: which runs, and what it means."""
    failed = [r for r in records if gate_failed(r)]
    if not failed:
        return ""
    runs = "; ".join(
        f"{name(r)}: {_gate_numbers(r['dev_gate'])}" if _gate_numbers(r["dev_gate"]) else name(r)
        for r in failed
    )
    return f"{GATE_MARK} dev gate FAILED ({runs}): {GATE_FAILED_NOTE}."


def gate_note(records: Sequence[dict[str, Any]]) -> str:
    """The sentence under the jobs table explaining its dev gate column ('' when no run has one)."""
    gated = [r for r in records if isinstance(r.get("dev_gate"), dict)]
    if not gated:
        return ""
    metric = _gate_metric(gated[0]["dev_gate"])
    note = (
        "dev gate: whether the trained reranker beats the first stage (no reranker) on the dev "
        f"questions ({metric}, mean over the dev query types); – where the run recorded none."
    )
    if any(gate_failed(r) for r in records):
        note += f" FAILED: {GATE_FAILED_NOTE}."
    return note


def _has_system(record: dict[str, Any], system: str, metric: str, k: int) -> bool:
    metrics = record.get("metrics") or {}
    return any(f"{qt}/{system}/{metric}@{k}" in metrics for qt in QUERY_TYPES)


def fusion_table(records: Sequence[dict[str, Any]]) -> str:
    """The fusion weights fit on dev per run, method and query type ('' when none recorded).

    The weight is the reranker's share (1: the reranker alone, 0: the first stage alone).
    """
    lines = []
    for r in records:
        fusion = r.get("fusion")
        if not isinstance(fusion, dict):
            continue
        evaluated = ((r.get("config") or {}).get("rerank") or {}).get("fusion")
        for method, per_type in fusion.items():
            if not isinstance(per_type, dict):
                continue
            cells = []
            for qt in QUERY_TYPES:
                fit = per_type.get(qt)
                if not isinstance(fit, dict) or fit.get("weight") is None:
                    cells.append("–")
                    continue
                cell = f"{float(fit['weight']):.2f}"
                if isinstance(fit.get("dev"), (int, float)):
                    cell += f" (dev {fit['dev']:.3f})"
                cells.append(cell)
            shown = f"{method} (the `fused` rows)" if method == evaluated else method
            lines.append(f"| {run_label(r)} | {shown} | " + " | ".join(cells) + " |")
    if not lines:
        return ""
    head = [
        "Reranker weight per query type, fit on dev only (1: the reranker alone, 0: the first "
        "stage alone), with the dev nDCG@10 it reached.",
        "",
        "| run | method | " + " | ".join(QUERY_TYPES) + " |",
        "|---|---|" + "---|" * len(QUERY_TYPES),
    ]
    return "\n".join(head + lines)


def metric_ks(records: list[dict[str, Any]]) -> list[int]:
    """Every k with a hit@k metric in some record, ascending."""
    ks = set()
    for r in records:
        for key in r.get("metrics", {}):
            m = re.search(r"/hit@(\d+)$", key)
            if m:
                ks.add(int(m.group(1)))
    return sorted(ks)


def quality_tables(records: list[dict[str, Any]], metric: str = "hit") -> str:
    """For each k: rows = runs plus reference rows; columns = query types; best cell in bold."""
    completed = [r for r in records if r.get("status") == "completed" and r.get("metrics")]
    out = []
    for k in metric_ks(completed):
        rows: list[tuple[str, dict[str, Any], str]] = []
        seen_refs: set[tuple[str, str]] = set()
        for r in completed:
            mark = GATE_MARK if gate_failed(r) else ""
            rows.append((run_label(r) + mark, r, "reranked"))
            if _has_system(r, "fused", metric, k):
                rows.append((f"{run_label(r)} fused", r, "fused"))
        for r in completed:
            # Reference rows depend on the data and candidates, not on the reranker: show each
            # distinct one once (the untrained row once per arch and base).
            for system in REFERENCE_SYSTEMS:
                label = (
                    system
                    if system != "untrained"
                    else f"untrained {r.get('arch')}-{r.get('base')}"
                )
                fp = (label, str(r.get("fingerprints", {}).get("candidates")))
                if (
                    any(f"{qt}/{system}/{metric}@{k}" in r["metrics"] for qt in QUERY_TYPES)
                    and fp not in seen_refs
                ):
                    seen_refs.add(fp)
                    rows.append((label, r, system))
        present = [
            qt
            for qt in QUERY_TYPES
            if any(f"{qt}/{s}/{metric}@{k}" in r["metrics"] for _, r, s in rows)
        ]
        if not present:  # e.g. nDCG in records older than it: no empty table
            continue
        best: dict[str, float] = {}
        for qt in present:
            values = [
                r["metrics"].get(f"{qt}/{s}/{metric}@{k}")
                for _, r, s in rows
                if s not in ("ceiling",)
            ]
            values = [v for v in values if v is not None]
            if values:
                best[qt] = max(values)
        out.append(f"### {metric}@{k} (%, 95% interval)\n")
        out.append("| system | " + " | ".join(present) + " |")
        out.append("|---|" + "---|" * len(present))
        for label, r, system in rows:
            cells = []
            for qt in present:
                key = f"{qt}/{system}/{metric}@{k}"
                value = r["metrics"].get(key)
                is_best = system != "ceiling" and value is not None and value == best.get(qt)
                cells.append(_fmt(value, r.get("intervals", {}).get(key), is_best))
            out.append(f"| {label} | " + " | ".join(cells) + " |")
        out.append("")
        footnote = gate_footnote(completed)
        if footnote:
            out += [footnote, ""]
    return "\n".join(out)


def status_table(records: list[dict[str, Any]]) -> str:
    """Every job with its status (completed, failed with reason, running, died)."""
    lines = [
        "| job | run | status | objective | dev gate | run dir |",
        "|---|---|---|---|---|---|",
    ]
    for r in sorted(
        records,
        key=lambda r: (
            str(r.get("sweep_dir")),
            r.get("job_num") is None,
            r.get("job_num") or 0,
            r.get("started", ""),
        ),
    ):
        objective = ", ".join(
            "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"
            for v in (r.get("objective") or [])
        )
        status = r.get("status", "?")
        if r.get("reason"):
            status += f": {r['reason']}"
        lines.append(
            f"| {r.get('job_num', '') if r.get('job_num') is not None else ''} | {r.get('name')} | "
            f"{html.escape(status, quote=False)} | {objective or '–'} | "
            f"{gate_cell(r)} | `{r.get('run_dir')}` |"
        )
    note = gate_note(records)
    if note:
        lines += ["", note]
    return "\n".join(lines)


def _parse_latency_key(key: str) -> tuple[str, str, str, str] | None:
    parts = key.split("/")
    if len(parts) != 4:
        return None
    device, system, candidates, stat = parts
    if candidates == "eval":  # the accuracy of a latency setting, not a timing
        return None
    return device, system, candidates, stat


def latency_table(records: list[dict[str, Any]]) -> str:
    """Device x candidates x system, p50 / p95 in ms, one block per run."""
    out = []
    for r in records:
        latency = r.get("latency") or {}
        cells: dict[tuple[str, str, str], dict[str, float]] = defaultdict(dict)
        for key, value in latency.items():
            parsed = _parse_latency_key(key)
            if parsed and isinstance(value, (int, float)):
                device, system, n, stat = parsed
                cells[(device, system, n)][stat] = float(value)
        if not cells:
            continue
        out.append(f"#### {run_label(r)}\n")
        out.append("| device | system | candidates | p50 ms | p95 ms | p99 ms | mean ms |")
        out.append("|---|---|---|---|---|---|---|")
        for (device, system, n), stats in sorted(
            cells.items(), key=lambda kv: (kv[0][0], kv[0][1], _as_int(kv[0][2]))
        ):
            vals = [stats.get(s) for s in ("p50_ms", "p95_ms", "p99_ms", "mean_ms")]
            out.append(
                f"| {device} | {system} | {n} | "
                + " | ".join("–" if v is None else f"{v:.1f}" for v in vals)
                + " |"
            )
        out.append("")
    return "\n".join(out)


def _as_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 10**9


@dataclass(frozen=True)
class Paired:
    """One record.json "paired" entry, read the way old and new records spell it."""

    diff: float
    low: float | None
    high: float | None
    p_text: str | None
    significant: bool

    @classmethod
    def of(cls, stats: Any) -> Paired | None:
        """The entry, or None when it holds no difference (or is not a dict)."""
        if not isinstance(stats, dict) or stats.get("diff") is None:
            return None
        p = stats.get("p_value", stats.get("p"))
        low, high = (stats.get("interval") or [stats.get("low"), stats.get("high")])[:2]
        return cls(
            diff=float(stats["diff"]),
            low=low,
            high=high,
            # The evaluation's own p, printed as table.md and docs/results.md print it.
            p_text=record_p_text(stats) if p is not None else None,
            significant=p is not None and p < 0.05,
        )

    def interval_text(self) -> str:
        """' [+1.0, +3.0]' in points ('' when no interval was recorded)."""
        if self.low is None or self.high is None:
            return ""
        return f" [{100 * self.low:+.1f}, {100 * self.high:+.1f}]"


def significance(records: list[dict[str, Any]]) -> str:
    """Every paired difference against the baseline as one bullet line (see significance_tables).

    The report prints `significance_tables`; this compact form is kept for callers that want
    one line per comparison.
    """
    lines = []
    for r in records:
        for key, stats in sorted((r.get("paired") or {}).items()):
            paired = Paired.of(stats)
            if paired is None:
                continue
            sig = "significant" if paired.significant else "not significant"
            pv = f", {paired.p_text}" if paired.p_text else ""
            lines.append(
                f"- {run_label(r)} {key}: {100 * paired.diff:+.1f} points"
                f"{paired.interval_text()}{pv} ({sig})"
            )
    return "\n".join(lines)


COMPARISON_TITLES = {
    "reranked-baseline": "trained reranker vs first stage (reranked − baseline)",
    "fused-baseline": "fused (reranker + first stage) vs first stage (fused − baseline)",
    "untrained-baseline": "untrained reranker vs first stage (untrained − baseline)",
}
METRIC_ORDER = ("hit", "ndcg", "mrr")


def _metric_sort_key(metric: str) -> tuple[int, int, str]:
    """hit@5 < hit@10 < ndcg@5 < ... < mrr@10, unknown metrics last."""
    name, _, k = metric.partition("@")
    rank = METRIC_ORDER.index(name) if name in METRIC_ORDER else len(METRIC_ORDER)
    return rank, _as_int(k), name


def significance_tables(records: list[dict[str, Any]]) -> str:
    """One table per comparison and metric: rows = runs, columns = query types.

    A cell is the paired difference in points with its 95% interval and the evaluation's p;
    bold where p < 0.05. The untrained comparison depends only on the arch, base and
    candidates, so each distinct one is shown once, as in the quality tables.
    """
    # (comparison, metric) -> row label -> query type -> Paired
    tables: dict[tuple[str, str], dict[str, dict[str, Paired]]] = defaultdict(dict)
    seen_untrained: dict[tuple[str, str], str] = {}
    for r in records:
        for key, stats in (r.get("paired") or {}).items():
            parts = key.split("/")
            paired = Paired.of(stats)
            if len(parts) != 3 or paired is None:
                continue
            qt, comparison, metric = parts
            if comparison == "untrained-baseline":
                label = f"untrained {r.get('arch')}-{r.get('base')}"
                fp = (label, str((r.get("fingerprints") or {}).get("candidates")))
                owner = seen_untrained.setdefault(fp, str(r.get("run_dir")))
                if owner != str(r.get("run_dir")):
                    continue
            else:
                label = run_label(r) + (GATE_MARK if gate_failed(r) else "")
            tables[(comparison, metric)].setdefault(label, {})[qt] = paired
    if not tables:
        return ""
    comparisons = list(COMPARISON_TITLES) + sorted({c for c, _ in tables} - set(COMPARISON_TITLES))
    out = [
        "Paired differences in points (95% interval) and the evaluation's p, one table per "
        "comparison and metric; **bold**: p < 0.05 (not corrected for the number of tables).",
        "",
    ]
    for comparison in comparisons:
        metrics = sorted((m for c, m in tables if c == comparison), key=_metric_sort_key)
        for metric in metrics:
            rows = tables[(comparison, metric)]
            present = [qt for qt in QUERY_TYPES if any(qt in cells for cells in rows.values())]
            title = COMPARISON_TITLES.get(comparison, comparison)
            out += [
                f"### {title}: {metric}",
                "",
                "| run | " + " | ".join(present) + " |",
                "|---|" + "---|" * len(present),
            ]
            for label, cells in rows.items():
                texts = []
                for qt in present:
                    paired = cells.get(qt)
                    if paired is None:
                        texts.append("–")
                        continue
                    text = f"{100 * paired.diff:+.1f}{paired.interval_text()}"
                    if paired.p_text:
                        text += f" {paired.p_text}"
                    texts.append(f"**{text}**" if paired.significant else text)
                out.append(f"| {label} | " + " | ".join(texts) + " |")
            out.append("")
    footnote = gate_footnote([r for r in records if r.get("paired")])
    if footnote:
        out += [footnote, ""]
    return "\n".join(out).rstrip("\n")


# --- what the plots need from the records (shared with rerank_sweeps.dashboard) ---

# Override keys that are never a swept parameter: where and how a run logs, which preset
# bundle it started from (shown as the sweep instead), how latency is measured.
NOT_PARAMS = ("experiment", "logger", "objective", "hydra", "paths", "latency", "wandb")
_MISSING = object()


def metric_value(record: dict[str, Any], name: str) -> float | None:
    """A metric of the record by name: an eval metric, `dev/<metric>`, or an objective's value."""
    value: Any = (record.get("metrics") or {}).get(name)
    if value is None and name.startswith("dev/"):
        value = (record.get("dev") or {}).get(name.removeprefix("dev/"))
    if value is None:
        names, objective = record.get("objective_names") or [], record.get("objective") or []
        if name in names and names.index(name) < len(objective):
            value = objective[names.index(name)]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value)


def metric_interval(record: dict[str, Any], name: str) -> tuple[float, float] | None:
    """The 95% interval recorded for a metric (None when the evaluation recorded none)."""
    interval = (record.get("intervals") or {}).get(name)
    if isinstance(interval, (list, tuple)) and len(interval) == 2 and None not in interval:
        return float(interval[0]), float(interval[1])
    return None


def objective_name(records: Sequence[dict[str, Any]]) -> str:
    """The first objective most records name (hybrid/reranked/hit@5 when none does)."""
    names = Counter(r["objective_names"][0] for r in records if r.get("objective_names"))
    return names.most_common(1)[0][0] if names else "hybrid/reranked/hit@5"


def _scalar(text: str) -> Any:
    """An override's value as Hydra would read a plain scalar: int, float or string."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def param_value(record: dict[str, Any], key: str) -> Any:
    """The value a run used for a parameter: the record's own field, its config, or override.

    The resolved value comes first because a preset sets parameters without an override (the
    epochs of one sweep come from its experiment file, another sweep overrides them).
    """
    top = record.get(key)
    if top is not None and not isinstance(top, (dict, list)):
        return top
    node: Any = record.get("config") or {}
    for part in key.split("."):
        node = node.get(part, _MISSING) if isinstance(node, dict) else _MISSING
    if isinstance(node, dict):  # a config group: its name is the choice (arch=ce)
        node = node.get("name", _MISSING)
    if node is not _MISSING:  # None included: the config says the run had no value
        return str(node) if isinstance(node, (list, dict)) else node
    for override in record.get("overrides") or []:
        name, _, value = override.partition("=")
        if name.lstrip("+~") == key:
            return None if value == "null" else _scalar(value)
    return None


def swept_params(records: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """Parameters that differ between the records: key -> value per record (None: unknown).

    Candidates are the record's own fields among SWEPT_KEYS (arch, negatives, epochs, ...)
    and every overridden key except NOT_PARAMS; a candidate is swept when the records hold
    more than one value of it. A config value nobody overrode (the learning rate each arch
    defaults to) is not a candidate: it would only repeat another column.
    """
    keys = [k for k in SWEPT_KEYS if any(k in r for r in records)]
    for r in records:
        for override in r.get("overrides") or []:
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


def completed_with(records: Sequence[dict[str, Any]], objective: str) -> list[dict[str, Any]]:
    """The completed records that hold a value of the objective."""
    return [
        r
        for r in records
        if r.get("status") == "completed" and metric_value(r, objective) is not None
    ]


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


def _latency_cells(record: dict[str, Any], system: str) -> dict[str, dict[int, dict[str, float]]]:
    """device -> candidates -> stat -> value, for one system of the record's latency."""
    cells: dict[str, dict[int, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for key, value in (record.get("latency") or {}).items():
        parsed = _parse_latency_key(key)
        if not parsed or parsed[1] != system or not isinstance(value, (int, float)):
            continue
        device, _, n, stat = parsed
        if _as_int(n) < 10**9:
            cells[device][int(n)][stat] = float(value)
    return cells


def latency_points(record: dict[str, Any], system: str | None = None) -> list[LatencyPoint]:
    """Per device, the end-to-end p50 of `system` (default: the trained reranker, fp32).

    The evaluated metrics come from the fp32 reranker on `eval.depth` candidates, so that is
    the setting timed here when it was measured (else the fewest candidates measured).
    """
    system = system or str(record.get("arch"))
    depth = ((record.get("config") or {}).get("eval") or {}).get("depth")
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
    parts = objective.split("/")
    if len(parts) == 3 and parts[1] == "reranked":
        return f"{parts[0]}/baseline/{parts[2]}"
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


def quality_latency_points(records: Sequence[dict[str, Any]], objective: str) -> list[QualityPoint]:
    """Every completed run with a latency and the objective, plus the first stage alone.

    The first stage (retrieval without reranking) is an option a deployment has too, so it
    is drawn and takes part in the Pareto front; it is shown once per candidates artifact.
    """
    points = []
    reference = first_stage_metric(objective)
    seen: set[tuple[str, str, int]] = set()
    for r in records:
        if r.get("status") != "completed":
            continue
        value = metric_value(r, objective)
        for lat in latency_points(r):
            if value is not None:
                interval = metric_interval(r, objective)
                points.append(
                    QualityPoint(run_label(r), lat, value, interval, gate_failed(r), False)
                )
            base = metric_value(r, reference) if reference else None
            candidates = str((r.get("fingerprints") or {}).get("candidates"))
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


def training_curve(record: dict[str, Any]) -> tuple[str, list[tuple[int, float]]] | None:
    """The dev metric's name and (step, value) per dev evaluation (step -1: before training)."""
    history = record.get("dev_history")
    if not isinstance(history, list):
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


# --- PNG plots (for report.md and other markdown viewers) ---


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_quality_latency(records: list[dict[str, Any]], objective: str, out: Path) -> Path | None:
    points = quality_latency_points(records, objective)
    if not any(not p.reference for p in points):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    markers = {"reference": "D", "run": "o", "gate_failed": "X"}
    for _, suffix, kind, group, name in point_groups(points):
        errors = [
            [100 * (p.quality - p.interval[0]) if p.interval else 0 for p in group],
            [100 * (p.interval[1] - p.quality) if p.interval else 0 for p in group],
        ]
        ax.errorbar(
            [p.latency.p50_ms for p in group],
            [100 * p.quality for p in group],
            yerr=errors,
            fmt=markers[kind],
            capsize=3,
            alpha=0.85,
            color="grey" if kind == "reference" else None,
            label=name + suffix,
        )
    devices = sorted({p.latency.device for p in points})
    for device in devices:
        mine = [p for p in points if p.latency.device == device]
        suffix = f" ({device})" if len(devices) > 1 else ""
        for p in mine:
            ax.annotate(
                p.label,
                (p.latency.p50_ms, 100 * p.quality),
                fontsize=7,
                xytext=(4, 4),
                textcoords="offset points",
            )
        front = [mine[i] for i in pareto_front([(p.latency.p50_ms, p.quality) for p in mine])]
        # A step line (each front point holds until a faster-and-better one), drawn with its
        # markers so that a front of a single point still shows, as the legend entry does.
        ax.plot(
            [p.latency.p50_ms for p in front],
            [100 * p.quality for p in front],
            "--o",
            color="red",
            drawstyle="steps-post",
            markerfacecolor="none",
            markersize=11,
            label=f"Pareto front{suffix}",
        )
    ax.set_xlabel(latency_axis_label(points), fontsize=8)
    ax.set_ylabel(f"{objective} (%, 95% interval)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "quality_vs_latency.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


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


def _plot_params(records: list[dict[str, Any]], objective: str, out: Path) -> list[Path]:
    runs = completed_with(records, objective)
    params = swept_params(runs)
    if not params:
        return []
    plt = _pyplot()
    paths = []
    for key in params:
        axis, hue, series, positions = param_series(params, key)
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        drawn = False
        for group, members in series:
            xs, ys, low, high = [], [], [], []
            for i in members:
                r, x = runs[i], positions[i]
                y = metric_value(r, objective) or 0.0
                interval = metric_interval(r, objective) or (y, y)
                xs.append(x)
                ys.append(100 * y)
                low.append(100 * (y - interval[0]))
                high.append(100 * (interval[1] - y))
            if xs:
                drawn = True
                label = f"{hue}={group}" if hue else None
                ax.errorbar(xs, ys, yerr=[low, high], fmt="o", capsize=3, label=label)
        if not drawn:
            plt.close(fig)
            continue
        if axis.kind == "log":
            ax.set_xscale("log")
        # The values the sweep tried, as ticks: an integer never sits between 1.2 and 1.4.
        ax.set_xticks(axis.tickvals, axis.ticktext)
        ax.minorticks_off()
        ax.set_xlabel(key)
        ax.set_ylabel(f"{objective} (%, 95% interval)", fontsize=8)
        if hue:
            ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"param_{re.sub(r'[^A-Za-z0-9_.-]', '_', key)}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def _plot_training(records: list[dict[str, Any]], out: Path) -> Path | None:
    curves = [(run_label(r), training_curve(r), r) for r in records]
    curves = [(label, curve, r) for label, curve, r in curves if curve]
    if not curves:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, (_, points), _r in curves:
        ax.plot([max(step, 0) for step, _ in points], [v for _, v in points], "-o", label=label)
    for value in sorted(first_stage_dev(records)):
        ax.axhline(value, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("training step (0: before training)")
    ax.set_ylabel(dev_metric_label(curves[0][1][0]) + " (dotted: first stage)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "training_curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def first_stage_dev(records: Sequence[dict[str, Any]]) -> set[float]:
    """The dev gate's first-stage values (one per distinct dev setup), rounded to 4 digits."""
    return {
        round(float(r["dev_gate"]["first_stage"]), 4)
        for r in records
        if isinstance(r.get("dev_gate"), dict)
        and isinstance(r["dev_gate"].get("first_stage"), (int, float))
    }


# --- the report ---


def report_sections(records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The report's (heading, markdown body) sections, shared by report.md and report.html."""
    fusion = fusion_table(records)
    none_yet = "_no completed evaluation yet_"
    return [
        ("Jobs", status_table(records)),
        ("Hit rate", quality_tables(records, "hit") or none_yet),
        ("nDCG", quality_tables(records, "ndcg") or "_no nDCG recorded_"),
        ("MRR", quality_tables(records, "mrr") or none_yet),
        *([("Fusion weights (fit on dev)", fusion)] if fusion else []),
        (
            "Significance (paired, against the no-rerank baseline)",
            significance_tables(records) or "_no paired statistics recorded_",
        ),
        ("Latency", latency_table(records) or "_no latency recorded_"),
    ]


def summary_line(records: list[dict[str, Any]]) -> str:
    """'13 runs: 12 completed, 1 failed'."""
    return f"{len(records)} runs: " + ", ".join(
        f"{n} {s}" for s, n in sorted(_count_status(records).items())
    )


def build_report(root: Path, out: Path | None = None, objective: str | None = None) -> Report:
    """Write report.md, report.html and plots for every run below `root`."""
    # The page imports this module's helpers, so it is imported here, not at the top.
    from rerank_sweeps.dashboard import render_dashboard

    root = Path(root)
    out = Path(out) if out else root
    out.mkdir(parents=True, exist_ok=True)
    records = load_records(root)
    objective = objective or objective_name(records)
    plots = []
    quality_latency = _plot_quality_latency(records, objective, out)
    if quality_latency:
        plots.append(quality_latency)
    plots.extend(_plot_params(records, objective, out))
    training = _plot_training(records, out)
    if training:
        plots.append(training)
    sections = report_sections(records)
    lines = [f"# rerank_sweeps report: {root}", "", summary_line(records), ""]
    for heading, body in sections:
        lines += [f"## {heading}", body, ""]
    if plots:
        lines += ["## Plots", *[f"![{p.stem}]({p.name})" for p in plots]]
    markdown = "\n".join(lines).rstrip("\n") + "\n"
    (out / "report.md").write_text(markdown)
    page = render_dashboard(records, objective, sections, title=f"rerank_sweeps report: {root}")
    (out / "report.html").write_text(page)
    return Report(markdown=markdown, plots=plots)


def _count_status(records: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for r in records:
        counts[r.get("status", "?")] += 1
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: `python -m rerank_sweeps.report DIR [--out DIR] [--objective KEY]`."""
    parser = argparse.ArgumentParser(
        prog="python -m rerank_sweeps.report", description=__doc__.splitlines()[0]
    )
    parser.add_argument("root", type=Path, help="a sweep dir, a run dir, or outputs/")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: ROOT)")
    parser.add_argument(
        "--objective", default=None, help='metric for plots, e.g. "hybrid/reranked/hit@5"'
    )
    parser.add_argument(
        "--publish",
        type=Path,
        default=None,
        help="also write the results page (e.g. docs/results.md; see rerank_sweeps.publish)",
    )
    parser.add_argument(
        "--readme", type=Path, default=None, help="with --publish: update this README's findings"
    )
    parser.add_argument(
        "--blog",
        type=Path,
        default=None,
        help="with --publish: the blog's numbers (default: blog_numbers.md beside the page)",
    )
    args = parser.parse_args(argv)
    if not args.root.exists():
        print(f"error: {args.root} does not exist", file=sys.stderr)
        return 2
    if args.publish is not None:
        from rerank_sweeps.publish import build_page

        blog = args.blog or args.publish.parent / "blog_numbers.md"
        if not blog.is_file():
            print(f"error: the blog's numbers {blog} do not exist (--blog)", file=sys.stderr)
            return 2
        build_page(args.root, args.publish, args.readme, blog)
        print(f"results page: {args.publish}")
    report = build_report(args.root, args.out, args.objective)
    out = args.out or args.root
    print(report.markdown)
    print(f"report: {out / 'report.md'} and {out / 'report.html'} ({len(report.plots)} plots)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
