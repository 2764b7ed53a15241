"""table.md of an evaluation: the blog-style tables of results.json, with intervals and the
paired differences to the baseline."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rerank_sweeps.records import BASELINE, CEILING, METRICS, MetricKey, PairedKey, count_key
from rerank_sweeps.stats import record_p_text


def _cell(metrics: dict[str, float], intervals: dict[str, Any], key: str) -> str:
    if key not in metrics:
        return "-"
    interval = intervals.get(key)
    if interval is None:
        return f"{metrics[key]:.3f}"
    return f"{metrics[key]:.3f} [{interval[0]:.2f}, {interval[1]:.2f}]"


def markdown_tables(
    results: dict[str, Any], types: Sequence[str], systems: Sequence[str], ks: Sequence[int]
) -> str:
    """The blog-style tables: rows systems, columns query type x k, one table per metric."""
    metrics, intervals = results["metrics"], results["intervals"]
    n = results["counts"]["queries"]
    titles = {"hit": "Hit rate", "mrr": "MRR", "ndcg": "nDCG"}
    counts = results["counts"]
    protocol = results.get("protocol", {})
    lines = [
        "### Candidates",
        "",
        f"Per leg: {protocol.get('depth_rule', 'overfetch x k')}, "
        + ", ".join(f"@{k}: {d}" for k, d in protocol.get("depth_per_leg", {}).items())
        + ". Hybrid reranks the union of both legs, up to twice one leg's candidates.",
        "",
        "| | " + " | ".join(f"{qt} @{k}" for qt in types for k in ks) + " |",
        "|---|" + "---|" * (len(types) * len(ks)),
        "| candidates reranked per query (mean) | "
        + " | ".join(
            f"{counts.get(count_key(qt, 'candidates', k), 0.0):.1f}" for qt in types for k in ks
        )
        + " |",
        "| queries with a relevant candidate (the only ones a reranker can change) | "
        + " | ".join(
            f"{counts.get(count_key(qt, 'with_relevant', k), '-')} of {n}"
            for qt in types
            for k in ks
        )
        + " |",
        "",
    ]
    for m in METRICS:
        lines.append(f"### {titles[m]}@k ({n} queries, 95% intervals)")
        lines.append("")
        header = ["system"] + [f"{qt} @{k}" for qt in types for k in ks]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---"] * len(header)) + "|")
        for system in systems:
            cells = [
                _cell(metrics, intervals, MetricKey(qt, system, m, k).name)
                for qt in types
                for k in ks
            ]
            lines.append("| " + " | ".join([system, *cells]) + " |")
        lines.append("")
    paired = results["paired"]
    if paired:
        lines.append(
            "### Paired difference to the baseline (95% test-inversion interval; "
            "p: exact McNemar for hit, sign-flip for MRR and nDCG)"
        )
        lines.append("")
        header = ["difference"] + [f"{qt} @{k}" for qt in types for k in ks]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---"] * len(header)) + "|")
        for system in systems:
            if system in (BASELINE, CEILING):
                continue
            for m in METRICS:
                cells = []
                for qt in types:
                    for k in ks:
                        p = paired[PairedKey(qt, system, BASELINE, m, k).name]
                        cell = f"{p['diff']:+.3f}"
                        if p["interval"] is not None:
                            # 3 decimals like the difference: an end just off 0 must not
                            # print as 0.00 beside p < 0.05.
                            low, high = p["interval"]
                            cell += f" [{low:+.3f}, {high:+.3f}] {record_p_text(p)}"
                        cells.append(cell)
                lines.append("| " + " | ".join([f"{system} {m}", *cells]) + " |")
        lines.append("")
    return "\n".join(lines)
