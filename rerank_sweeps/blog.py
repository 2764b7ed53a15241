"""The blog's numbers (docs/blog_numbers.md) and our runs set beside them: hit rate per k and
latency, row by row, for the results page."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rerank_sweeps.gate import gate_footnote, gate_mark
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

# Our offline bases stand in for the blog's: MiniLM for MiniLM, MPNet (110M) for ModernBERT-base
# (150M), the blog's larger base.
BLOG_BASE = {"minilm": "minilm", "mpnet": "modernbert"}
# The blog's untrained rows, by (arch, the blog's base): which of our untrained models has one.
BLOG_UNTRAINED = {("ce", "modernbert"): "untrained ModernBERT CE"}
NO_RERANKER = "none"  # the latency stage's system without a reranker
LATENCY_NS = (20, 50, 100)


@dataclass(frozen=True)
class BlogRow:
    """One trained-from-scratch row of the blog's tables at one k (hit rate, %)."""

    name: str
    arch: str
    base: str
    negatives: int | None
    epochs: int
    k: int
    values: dict[str, float]


@dataclass
class BlogNumbers:
    """The blog's tables, parsed from docs/blog_numbers.md."""

    baseline: dict[tuple[str, int], float] = field(default_factory=dict)
    untrained: dict[tuple[str, int], float] = field(default_factory=dict)
    trained: list[BlogRow] = field(default_factory=list)
    latency_gpu: dict[str, dict[int, float]] = field(default_factory=dict)
    latency_cpu: dict[str, float] = field(default_factory=dict)

    def row(
        self, arch: str, base: str, negatives: int | None, epochs: int, k: int
    ) -> BlogRow | None:
        """The blog row with this arch, base, negatives (None: not stated) and epochs."""
        for row in self.trained:
            if (row.arch, row.base, row.negatives, row.epochs, row.k) == (
                arch,
                base,
                negatives,
                epochs,
                k,
            ):
                return row
        return None


def _blog_model(name: str) -> tuple[str, str, int | None, int]:
    low = name.lower()
    arch = "colbert" if low.startswith("colbert") else "ce"
    base = "modernbert" if "modernbert" in low else "minilm"
    neg = re.search(r"(\d+)-neg", low)
    epochs = re.search(r"(\d+)[-_]?epoch", low)
    return arch, base, int(neg.group(1)) if neg else None, int(epochs.group(1)) if epochs else 1


def parse_blog(path: Path) -> BlogNumbers:
    """Parse the transcription of the blog's tables (the format of docs/blog_numbers.md)."""
    blog = BlogNumbers()
    section = ""
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith("## "):
            section = line[3:].lower()
            continue
        if not line or line.startswith("#") or line.startswith("("):
            continue
        if section.startswith("baselines"):
            for qt, k, value in re.findall(r"(vector|fts)@(\d+) ([\d.]+)", line):
                blog.baseline[(qt, int(k))] = float(value)
        elif section.startswith("untrained"):
            for k, vec, fts in re.findall(r"@(\d+)[^:|]*: vec ([\d.]+) fts ([\d.]+)", line):
                blog.untrained[("vector", int(k))] = float(vec)
                blog.untrained[("fts", int(k))] = float(fts)
        elif section.startswith("trained from scratch"):
            k_match = re.search(r"@(\d+)", section)
            row = re.match(r"^(\S+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", line)
            if k_match and row:
                arch, base, neg, epochs = _blog_model(row.group(1))
                values = dict(zip(QUERY_TYPES, map(float, row.groups()[1:]), strict=True))
                blog.trained.append(
                    BlogRow(row.group(1), arch, base, neg, epochs, int(k_match.group(1)), values)
                )
        elif section.startswith("latency"):
            row = re.match(r"^(.+?)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+[\d.]+x$", line)
            if row:
                name = re.sub(r"\s*\(.*\)$", "", row.group(1)).strip()
                blog.latency_gpu[name] = {
                    n: float(v) for n, v in zip((20, 50, 100), row.groups()[1:], strict=True)
                }
        elif section.startswith('"cpu" latency'):
            for name, value in re.findall(r"([A-Za-z][A-Za-z0-9 ]*?) ([\d.]+)", line):
                blog.latency_cpu[name.strip()] = float(value)
    return blog


def _pct(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def _blog(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _hits(record: Record, system: str, k: int) -> list[str]:
    """The record's hit@k of `system` per query type, as table cells."""
    return [_pct(record.metric(MetricKey(qt, system, "hit", k))) for qt in QUERY_TYPES]


def blog_comparison(records: Sequence[Record], blog: BlogNumbers, k: int) -> str:
    """Our hit@k beside the nearest blog row (same arch, negatives, epochs; base per BLOG_BASE)."""
    lines = [
        "| ours | vector | fts | hybrid | nearest blog row | vector | fts | hybrid |",
        "|---|---|---|---|---|---|---|---|",
    ]
    first = records[0]
    base_cells = _hits(first, BASELINE, k)
    blog_base = [_blog(blog.baseline.get((qt, k))) for qt in QUERY_TYPES]
    lines.append(
        f"| no reranker | {' | '.join(base_cells)} | no reranker | {' | '.join(blog_base)} |"
    )
    seen_untrained: set[tuple[str | None, str | None]] = set()
    for r in records:
        key = (r.arch, r.base)
        if key in seen_untrained or MetricKey("vector", UNTRAINED, "hit", k) not in r.metrics:
            continue
        seen_untrained.add(key)
        cells = _hits(r, UNTRAINED, k)
        theirs = BLOG_UNTRAINED.get((str(r.arch), BLOG_BASE.get(str(r.base), str(r.base))))
        if theirs is not None:
            vals = [_blog(blog.untrained.get((qt, k))) for qt in QUERY_TYPES]
        else:
            theirs, vals = "–", ["–"] * 3
        lines.append(
            f"| untrained {key[0]}-{key[1]} | {' | '.join(cells)} | {theirs} | {' | '.join(vals)} |"
        )
    for r in records:
        cells = _hits(r, RERANKED, k)
        base = BLOG_BASE.get(str(r.base), str(r.base))
        row = blog.row(str(r.arch), base, r.negatives, r.epochs, k)
        note = ""
        if row is None and r.negatives == 1:
            row = blog.row(str(r.arch), base, None, r.epochs, k)
            note = " (negatives not stated)"
        theirs = f"`{row.name}`{note}" if row else "–"
        vals = [_blog(row.values[qt]) if row else "–" for qt in QUERY_TYPES]
        lines.append(
            f"| {r.label}{gate_mark(r)} | {' | '.join(cells)} | {theirs} | {' | '.join(vals)} |"
        )
        if any(MetricKey(qt, FUSED, "hit", k) in r.metrics for qt in QUERY_TYPES):
            # The trained reranker fused with the first stage (weights fit on dev): the blog
            # has no such row.
            fused = _hits(r, FUSED, k)
            lines.append(f"| {r.label} fused | {' | '.join(fused)} | – | – | – | – |")
    ceiling = _hits(first, CEILING, k)
    lines.append(f"| ceiling (a perfect reranker) | {' | '.join(ceiling)} | – | – | – | – |")
    footnote = gate_footnote(records)
    return "\n".join(lines + (["", footnote] if footnote else []))


def cpu_latency(record: Record, system: str, n: int | str, stat: str = "mean_ms") -> float | None:
    """One CPU latency number of the record (None when not measured)."""
    return record.latency_value("cpu", system, n, stat)


def _systems(record: Record) -> list[str]:
    """The rerankers the record timed on CPU, in record order (not the first stage alone)."""
    found = []
    for key in record.latency:
        if key.device == "cpu" and key.is_timing and key.system != NO_RERANKER:
            if key.system not in found:
                found.append(key.system)
    return found


def latency_comparison(records: Sequence[Record], blog: BlogNumbers) -> str:
    """Our CPU end-to-end and rerank-only latency beside the blog's L4 and "CPU" tables."""
    lines = [
        "| ours (CPU) | N=20 p50 / mean | N=50 p50 / mean | N=100 p50 / mean | rerank only, N=20 / 50 / 100 p50 | hit@5 change (vector, hybrid) | load avg start / end |",
        "|---|---|---|---|---|---|---|",
    ]
    shown: set[tuple[str | None, str | None]] = set()
    none_shown = False
    for r in records:
        if cpu_latency(r, NO_RERANKER, 20) is not None and not none_shown:
            none_shown = True
            cells = [_ms_cell(r, NO_RERANKER, n) for n in LATENCY_NS]
            lines.append(
                f"| none (vector search only) | {' | '.join(cells)} | – | – | {_load(r)} |"
            )
        key = (r.arch, r.base)
        if key in shown or not _systems(r):
            continue  # latency depends on the architecture, not on training: one row per model
        shown.add(key)
        for system in _systems(r):
            if cpu_latency(r, system, 20) is None:
                continue
            cells = [_ms_cell(r, system, n) for n in LATENCY_NS]
            rerank = " / ".join(
                _fmt_ms(cpu_latency(r, system, n, "rerank_p50_ms")) for n in LATENCY_NS
            )
            deltas = [
                cpu_latency(r, system, "eval", f"{qt}-hit@5_delta") for qt in ("vector", "hybrid")
            ]
            change = ", ".join(f"{100 * d:+.1f}" for d in deltas if d is not None) or "reference"
            lines.append(
                f"| {system} {r.base} ({r.label}) | {' | '.join(cells)} | {rerank} | {change} "
                f"| {_load(r)} |"
            )
    lines += [
        "",
        "The blog's numbers (mean of 100 runs, ms; vector search limit N + rerank N):",
        "",
        '| blog | L4 N=20 | L4 N=50 | L4 N=100 | "CPU" (limit unstated) |',
        "|---|---|---|---|---|",
    ]
    for name, values in blog.latency_gpu.items():
        cpu = blog.latency_cpu.get(name)
        lines.append(
            f"| {name} | {values[20]:.2f} | {values[50]:.2f} | {values[100]:.2f} | {_blog(cpu)} |"
        )
    return "\n".join(lines)


def _load(record: Record) -> str:
    """The 1-minute load average before and after the run's latency measurement."""
    path = Path(str(record.run_dir)) / "latency.json"
    if not path.is_file():
        return "–"
    info = json.loads(path.read_text()).get("devices", {}).get("cpu", {}).get("info", {})
    start, end = info.get("loadavg_start"), info.get("loadavg_end")
    return " / ".join("?" if v is None else f"{v:.1f}" for v in (start, end))


def _ms_cell(record: Record, system: str, n: int) -> str:
    p50, mean = cpu_latency(record, system, n, "p50_ms"), cpu_latency(record, system, n)
    return f"{_fmt_ms(p50)} / {_fmt_ms(mean)}"


def _fmt_ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"
