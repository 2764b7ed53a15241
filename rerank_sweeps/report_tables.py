"""The report's markdown tables: jobs, quality per k with intervals, fusion weights, paired
significance against the baseline, and latency. The results page reuses the jobs and quality
tables."""

from __future__ import annotations

import html
import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rerank_sweeps.gate import gate_cell, gate_footnote, gate_mark, gate_note
from rerank_sweeps.records import (
    BASELINE,
    CEILING,
    FUSED,
    QUERY_TYPES,
    RERANKED,
    UNTRAINED,
    MetricKey,
    Record,
)
from rerank_sweeps.stats import ALPHA, record_p_text

REFERENCE_SYSTEMS = (BASELINE, UNTRAINED, CEILING)


def _fmt(value: float | None, interval: Sequence[float] | None = None, bold: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = f"{100 * value:.1f}"
    if interval:
        text += f" [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"
    return f"**{text}**" if bold else text


def _has_system(record: Record, system: str, metric: str, k: int) -> bool:
    return any(MetricKey(qt, system, metric, k) in record.metrics for qt in QUERY_TYPES)


def fusion_table(records: Sequence[Record]) -> str:
    """The fusion weights fit on dev per run, method and query type ('' when none recorded).

    The weight is the reranker's share (1: the reranker alone, 0: the first stage alone).
    """
    lines = []
    for r in records:
        fusion = r.fusion
        if fusion is None:
            continue
        evaluated = (r.config.get("rerank") or {}).get("fusion")
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
            lines.append(f"| {r.label} | {shown} | " + " | ".join(cells) + " |")
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


def metric_ks(records: Sequence[Record]) -> list[int]:
    """Every k with a hit@k metric in some record, ascending."""
    return sorted({key.k for r in records for key in r.metrics if key.metric == "hit"})


def quality_tables(records: Sequence[Record], metric: str = "hit") -> str:
    """For each k: rows = runs plus reference rows; columns = query types; best cell in bold."""
    completed = [r for r in records if r.completed and r.metrics]
    out = []
    for k in metric_ks(completed):
        rows: list[tuple[str, Record, str]] = []
        seen_refs: set[tuple[str, str]] = set()
        for r in completed:
            rows.append((r.label + gate_mark(r), r, RERANKED))
            if _has_system(r, FUSED, metric, k):
                rows.append((f"{r.label} fused", r, FUSED))
        for r in completed:
            # Reference rows depend on the data and candidates, not on the reranker: show each
            # distinct one once (the untrained row once per arch and base).
            for system in REFERENCE_SYSTEMS:
                label = system if system != UNTRAINED else f"untrained {r.arch}-{r.base}"
                fp = (label, r.candidates)
                if _has_system(r, system, metric, k) and fp not in seen_refs:
                    seen_refs.add(fp)
                    rows.append((label, r, system))
        present = [
            qt
            for qt in QUERY_TYPES
            if any(MetricKey(qt, s, metric, k) in r.metrics for _, r, s in rows)
        ]
        if not present:  # e.g. nDCG in records older than it: no empty table
            continue
        best: dict[str, float] = {}
        for qt in present:
            # The ceiling is an oracle, not a system to beat: it never takes the bold.
            values = [r.metric(MetricKey(qt, s, metric, k)) for _, r, s in rows if s != CEILING]
            values = [v for v in values if v is not None]
            if values:
                best[qt] = max(values)
        out.append(f"### {metric}@{k} (%, 95% interval)\n")
        out.append("| system | " + " | ".join(present) + " |")
        out.append("|---|" + "---|" * len(present))
        for label, r, system in rows:
            cells = []
            for qt in present:
                key = MetricKey(qt, system, metric, k)
                value = r.metric(key)
                is_best = system != CEILING and value is not None and value == best.get(qt)
                cells.append(_fmt(value, r.interval(key), is_best))
            out.append(f"| {label} | " + " | ".join(cells) + " |")
        out.append("")
        footnote = gate_footnote(completed)
        if footnote:
            out += [footnote, ""]
    return "\n".join(out)


def status_table(records: Sequence[Record]) -> str:
    """Every job with its status (completed, failed with reason, running, died)."""
    lines = [
        "| job | run | status | objective | dev gate | run dir |",
        "|---|---|---|---|---|---|",
    ]
    for r in sorted(
        records,
        key=lambda r: (str(r.sweep_dir), r.job_num is None, r.job_num or 0, r.started or ""),
    ):
        objective = ", ".join(
            "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"
            for v in r.objective
        )
        status = r.status
        if r.reason:
            status += f": {r.reason}"
        lines.append(
            f"| {r.job_num if r.job_num is not None else ''} | {r.name} | "
            f"{html.escape(status, quote=False)} | {objective or '–'} | "
            f"{gate_cell(r)} | `{r.run_dir}` |"
        )
    note = gate_note(records)
    if note:
        lines += ["", note]
    return "\n".join(lines)


def latency_table(records: Sequence[Record]) -> str:
    """Device x candidates x system, p50 / p95 in ms, one block per run."""
    out = []
    for r in records:
        cells: dict[tuple[str, str, str], dict[str, float]] = defaultdict(dict)
        for key, value in r.latency.items():
            if key.is_timing:
                cells[(key.device, key.system, key.candidates)][key.stat] = value
        if not cells:
            continue
        out.append(f"#### {r.label}\n")
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
    """A candidate count or k as a number; anything else sorts last."""
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
            significant=p is not None and p < ALPHA,
        )

    def interval_text(self) -> str:
        """' [+1.0, +3.0]' in points ('' when no interval was recorded)."""
        if self.low is None or self.high is None:
            return ""
        return f" [{100 * self.low:+.1f}, {100 * self.high:+.1f}]"


def significance(records: Sequence[Record]) -> str:
    """Every paired difference against the baseline as one bullet line (see significance_tables).

    The report prints `significance_tables`; this compact form is kept for callers that want
    one line per comparison.
    """
    lines = []
    for r in records:
        for key, stats in sorted(r.paired.items(), key=lambda kv: str(kv[0])):
            paired = Paired.of(stats)
            if paired is None:
                continue
            sig = "significant" if paired.significant else "not significant"
            pv = f", {paired.p_text}" if paired.p_text else ""
            lines.append(
                f"- {r.label} {key}: {100 * paired.diff:+.1f} points"
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


def significance_tables(records: Sequence[Record]) -> str:
    """One table per comparison and metric: rows = runs, columns = query types.

    A cell is the paired difference in points with its 95% interval and the evaluation's p;
    bold where p < 0.05. The untrained comparison depends only on the arch, base and
    candidates, so each distinct one is shown once, as in the quality tables.
    """
    # (comparison, metric) -> row label -> query type -> Paired
    tables: dict[tuple[str, str], dict[str, dict[str, Paired]]] = defaultdict(dict)
    seen_untrained: dict[tuple[str, str], str] = {}
    for r in records:
        for key, stats in r.paired.items():
            paired = Paired.of(stats)
            if paired is None:
                continue
            if key.system == UNTRAINED and key.reference == BASELINE:
                label = f"untrained {r.arch}-{r.base}"
                owner = seen_untrained.setdefault((label, r.candidates), str(r.run_dir))
                if owner != str(r.run_dir):
                    continue
            else:
                label = r.label + gate_mark(r)
            tables[(key.comparison, key.metric_at_k)].setdefault(label, {})[key.query_type] = paired
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
    footnote = gate_footnote([r for r in records if r.paired])
    if footnote:
        out += [footnote, ""]
    return "\n".join(out).rstrip("\n")


def summary_line(records: Sequence[Record]) -> str:
    """'13 runs: 12 completed, 1 failed'."""
    counts = Counter(r.status for r in records)
    return f"{len(records)} runs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
