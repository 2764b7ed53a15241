"""The blog's main claims checked on our runs: paired hit@k comparisons between runs, one
family per claim with Holm's correction, and a verdict per claim (VERDICT_RULE).

Comparisons between two of our runs are paired per query (the runs share split and
candidates) and computed by `stats.paired_comparison` from the runs' TREC files, the function
behind the evaluation's own comparisons against the baseline, so the same comparison prints
the same numbers here and in table.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rerank_sweeps.blog import BlogNumbers
from rerank_sweeps.records import (
    BASELINE,
    CEILING,
    QUERY_TYPES,
    RERANKED,
    UNTRAINED,
    MetricKey,
    Record,
)
from rerank_sweeps.stats import ALPHA, PairedResult, holm, paired_by_query
from rerank_sweeps.trec import per_query_hits

VECTOR_HYBRID = ("vector", "hybrid")  # the query types the pairwise findings compare
# How the page and the README read a finding's comparisons (said once, in both places).
VERDICT_RULE = (
    "Each finding's comparisons are one family: their p-values are adjusted with Holm's "
    "step-down correction within that finding (lines show the raw p, then the Holm-adjusted "
    "one). A finding is *reproduced* when a majority of its family is significant after the "
    "correction (adjusted p < 0.05) in the blog's direction and none against it, "
    "*contradicted* in the mirror case, *mixed* when significant differences go both ways, "
    "and otherwise *not shown*, with the counts."
)
# A paired difference a - b over the same queries (fractions, not %): the one type of
# `stats`, so the page prints a comparison exactly as table.md and the report do.
Paired = PairedResult


def completed(records: Sequence[Record]) -> list[Record]:
    """Completed runs with metrics, in grid order (base, arch, negatives, epochs)."""
    done = [r for r in records if r.completed and r.metrics]
    return sorted(
        done,
        key=lambda r: (str(r.base), str(r.arch), r.negatives, r.epochs),
    )


def find(
    records: Sequence[Record], arch: str, base: str, negatives: int, epochs: int = 1
) -> Record | None:
    """The completed run with these grid coordinates, if any."""
    for r in records:
        if (r.arch, r.base, r.negatives, r.epochs) == (
            arch,
            base,
            negatives,
            epochs,
        ):
            return r
    return None


def between(
    a: Record,
    b: Record,
    query_type: str,
    k: int,
    system_a: str = RERANKED,
    system_b: str = RERANKED,
) -> Paired:
    """Paired hit@k difference between two runs' systems on the same eval queries."""
    return paired_by_query(
        per_query_hits(Path(str(a.run_dir)), query_type, system_a, k),
        per_query_hits(Path(str(b.run_dir)), query_type, system_b, k),
    )


@dataclass
class Finding:
    """A claim of the blog, the blog's evidence, ours, and whether ours reproduces it.

    The finding's comparisons (`results`) are one family: `adjusted` holds their Holm
    step-down adjusted p-values (computed from the raw ones unless given), and the verdict
    reads only those.
    """

    claim: str
    blog: str
    ours: list[str]
    results: list[Paired]  # one per line of `ours`
    expected_sign: int  # +1: the blog's claim predicts a positive difference
    adjusted: list[float] = field(default_factory=list)  # Holm, one per result

    def __post_init__(self) -> None:
        if not self.adjusted:
            self.adjusted = holm([p.p_value for p in self.results])

    @property
    def verdict(self) -> str:
        """reproduced / contradicted / mixed / not shown / not measured, with counts."""
        return _verdict(self.results, self.expected_sign, self.adjusted)

    def strongest(self) -> list[str]:
        """The lines of the largest difference each way that is significant after Holm
        (all lines if few)."""
        if len(self.ours) <= 4:
            return list(self.ours)
        picked = []
        significant = [i for i, adj in enumerate(self.adjusted) if adj < ALPHA]
        for sign in (1, -1):
            side = [i for i in significant if np.sign(self.results[i].diff) == sign]
            if side:
                picked.append(max(side, key=lambda i: sign * self.results[i].diff))
        if not picked:
            picked = [max(range(len(self.results)), key=lambda i: abs(self.results[i].diff))]
        return [self.ours[i] for i in sorted(picked)]


def _verdict(
    results: Sequence[Paired], expected_sign: int, adjusted: Sequence[float] | None = None
) -> str:
    """The verdict of VERDICT_RULE on one family, from its Holm-adjusted p-values."""
    if not results:
        return "not measured"
    m = len(results)
    adjusted = holm([p.p_value for p in results]) if adjusted is None else adjusted
    signs = [
        np.sign(p.diff) for p, adj in zip(results, adjusted, strict=True) if adj < ALPHA
    ]  # of the comparisons significant after Holm
    agree = sum(1 for s in signs if s == expected_sign)
    against = sum(1 for s in signs if s == -expected_sign)
    if agree and against:
        return f"mixed ({agree} for, {against} against, of {m} significant after Holm)"
    # A majority of the family, not one lucky comparison, must carry a verdict.
    if 2 * agree > m:
        return f"reproduced ({agree} of {m} comparisons significant after Holm, none against)"
    if 2 * against > m:
        return f"contradicted: the opposite holds ({against} of {m} significant after Holm)"
    raw = sum(1 for p in results if p.significant)
    if agree or against:
        return (
            f"not shown ({agree} of {m} significant for it, {against} against after Holm, "
            f"{raw} before; a verdict needs a majority)"
        )
    if m == 1:  # Holm leaves a family of one unchanged
        return "not shown: the one difference is within noise (p >= 0.05)"
    return (
        f"not shown: none of the {m} differences is significant after Holm "
        f"({raw} before the correction)"
    )


# One comparison: (what it is, run a, run b, system of a, system of b, query types).
Comparison = tuple[str, Record, Record, str, str, Sequence[str]]


def trained_vs_trained(
    what: str, a: Record, b: Record, query_types: Sequence[str] = VECTOR_HYBRID
) -> Comparison:
    """A comparison of two runs' trained rerankers (reranked - reranked) on `query_types`."""
    return (what, a, b, RERANKED, RERANKED, query_types)


def compare(comparisons: Sequence[Comparison], k: int) -> tuple[list[Paired], list[str]]:
    """Paired hit@k of every comparison on each of its query types, and a line for each
    (raw p, then the Holm-adjusted p within these comparisons)."""
    results: list[Paired] = []
    names: list[str] = []
    notes: list[str] = []
    for what, a, b, system_a, system_b, query_types in comparisons:
        for qt in query_types:
            results.append(between(a, b, qt, k, system_a, system_b))
            names.append(f"{what} {qt} hit@{k}")
            notes.append(_separable(a, qt, k))
    # The comparisons of one call are one finding's family: Holm within it.
    adjusted = holm([p.p_value for p in results])
    lines = [
        f"{name} {p.text(adj)}{note}"
        for name, p, adj, note in zip(names, results, adjusted, notes, strict=True)
    ]
    return results, lines


def _separable(record: Record, query_type: str, k: int) -> str:
    """'; 89 of 200 queries with a relevant candidate': the queries that can move a hit@k
    (the others miss whatever the order), read from the run's ceiling run file."""
    try:
        ceiling = per_query_hits(Path(str(record.run_dir)), query_type, CEILING, k)
    except (OSError, KeyError):
        return ""
    return f"; {int(sum(ceiling.values()))} of {len(ceiling)} queries with a relevant candidate"


def findings(records: Sequence[Record], blog: BlogNumbers, k: int = 5) -> list[Finding]:
    """The blog's main claims checked on our runs (hit@k, paired per query)."""
    out: list[Finding] = []
    bases = sorted({r.base for r in records})
    archs = sorted({r.arch for r in records})

    # 1. Reranking lifts retrieval (the blog has no hybrid baseline; we have all three).
    lifts, lines = compare(
        [
            (f"{r.label}:", r, r, RERANKED, BASELINE, [qt])
            for r in records
            for qt in QUERY_TYPES
            if MetricKey(qt, BASELINE, "hit", k) in r.metrics
        ],
        k,
    )
    ce_minilm = blog.row("ce", "minilm", None, 1, k)
    ce_modern = blog.row("ce", "modernbert", None, 1, k)
    base_v = blog.baseline.get(("vector", k))
    evidence = "; ".join(
        f"{qt} hit@{k} {blog.baseline.get((qt, k))} without a reranker"
        + (f", {ce_minilm.values[qt]} with a 1-epoch MiniLM CE" if ce_minilm else "")
        + (f", {ce_modern.values[qt]} with a 1-epoch ModernBERT CE" if ce_modern else "")
        for qt in ("vector", "fts")
    )
    out.append(Finding("Reranking lifts retrieval", evidence, lines, lifts, 1))

    # 2. Untrained base models are useless as rerankers.
    # The untrained model depends on arch and base only: its first run stands for all.
    untrained: dict[tuple[str | None, str | None], Record] = {}
    for r in records:
        if MetricKey("vector", UNTRAINED, "hit", k) in r.metrics:
            untrained.setdefault((r.arch, r.base), r)
    drops, lines = compare(
        [
            (f"untrained {arch}-{base} - no reranker:", r, r, UNTRAINED, BASELINE, ["vector"])
            for (arch, base), r in untrained.items()
        ],
        k,
    )
    evidence = (
        f"untrained ModernBERT CE: vector hit@{k} {blog.untrained.get(('vector', k))} "
        f"against {base_v} without a reranker"
    )
    out.append(
        Finding("Untrained base models are useless as rerankers", evidence, lines, drops, -1)
    )

    # 3. More negatives help.
    gains, lines = compare(
        [
            trained_vs_trained(f"{r.arch}-{r.base}, {r.negatives} - 1 negatives:", r, one)
            for r in sorted(records, key=lambda r: str(r.arch))
            if r.epochs == 1 and r.negatives > 1 and (one := find(records, r.arch, r.base, 1))
        ],
        k,
    )
    by_negatives = {
        neg: row
        for neg in sorted({r.negatives for r in blog.trained if r.negatives is not None})
        if (row := blog.row("colbert", "modernbert", neg, 1, k))
    }
    evidence = (
        f"ColBERT ModernBERT 1 epoch: vector hit@{k} "
        + ", ".join(
            f"{row.values['vector']} with {neg} negative{'s' if neg > 1 else ''}"
            for neg, row in by_negatives.items()
        )
        if len(by_negatives) > 1
        else "–"
    )
    out.append(Finding("More hard negatives help", evidence, lines, gains, 1))

    # 4. The cross-encoder beats ColBERT at the same base and budget.
    wins, lines = compare(
        [
            trained_vs_trained(f"{base}, 1 negative: CE - ColBERT", ce, colbert)
            for base in bases
            if (ce := find(records, "ce", base, 1))
            and (colbert := find(records, "colbert", base, 1))
        ],
        k,
    )
    cb = blog.row("colbert", "minilm", 1, 1, k)
    evidence = (
        f"MiniLM 1 epoch: CE vector hit@{k} {ce_minilm.values['vector']}, ColBERT {cb.values['vector']}"
        if ce_minilm and cb
        else "–"
    )
    out.append(Finding("A cross-encoder beats ColBERT on the same base", evidence, lines, wins, 1))

    # 5. The larger base is better.
    bigger, lines = compare(
        [
            trained_vs_trained(
                f"{arch}, {neg} negative(s): MPNet - MiniLM", large, small, ["vector"]
            )
            for arch in archs
            for neg in sorted({r.negatives for r in records})
            if (small := find(records, arch, "minilm", neg))
            and (large := find(records, arch, "mpnet", neg))
        ],
        k,
    )
    evidence = (
        f"1-epoch CE: ModernBERT vector hit@{k} {ce_modern.values['vector']}, MiniLM "
        f"{ce_minilm.values['vector']}"
        if ce_modern and ce_minilm
        else "–"
    )
    out.append(Finding("A larger base model trains a better reranker", evidence, lines, bigger, 1))

    # 6. More epochs help.
    longer, lines = compare(
        [
            trained_vs_trained(
                f"{r.arch}-{r.base}, {r.negatives} negative(s): {r.epochs} - 1 epochs",
                r,
                one,
            )
            for r in records
            if r.epochs > 1 and (one := find(records, r.arch, r.base, r.negatives, 1))
        ],
        k,
    )
    e1 = blog.row("colbert", "modernbert", 1, 1, k)
    e5 = blog.row("colbert", "modernbert", 1, 5, k)
    m5 = blog.row("ce", "minilm", None, 5, k)
    evidence = (
        f"ColBERT ModernBERT 1 negative: vector hit@{k} {e1.values['vector']} after 1 epoch, "
        f"{e5.values['vector']} after 5; MiniLM CE {ce_minilm.values['vector']} after 1, "
        f"{m5.values['vector']} after 5"
        if e1 and e5 and m5 and ce_minilm
        else "–"
    )
    out.append(Finding("More epochs help", evidence, lines, longer, 1))
    return out


def findings_markdown(items: Sequence[Finding], compact: bool = False) -> str:
    """Findings as a markdown list: claim, verdict, the blog's evidence and ours.

    `compact` (the README) keeps, of our comparisons, the strongest each way.
    """
    lines = []
    for f in items:
        lines.append(f"- **{f.claim}**: {f.verdict}.")
        lines.append(f"  - Blog: {f.blog}.")
        shown = f.strongest() if compact else f.ours
        for line in shown:
            lines.append(f"  - Ours: {line}")
        if len(shown) < len(f.ours):
            lines.append(f"  - Ours: {len(f.ours) - len(shown)} more comparisons on the page.")
    return "\n".join(lines)
