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
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rerank_sweeps.dashboard import render_dashboard
from rerank_sweeps.plotdata import objective_name
from rerank_sweeps.publish import build_page
from rerank_sweeps.records import Record
from rerank_sweeps.report_plots import plot_params, plot_quality_latency, plot_training
from rerank_sweeps.report_tables import (
    fusion_table,
    latency_table,
    quality_tables,
    significance_tables,
    status_table,
    summary_line,
)
from rerank_sweeps.tracking import read_records


@dataclass
class Report:
    """The rendered report: markdown text and the PNG files written beside it."""

    markdown: str
    plots: list[Path]


def report_sections(records: Sequence[Record]) -> list[tuple[str, str]]:
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


def build_report(root: Path, out: Path | None = None, objective: str | None = None) -> Report:
    """Write report.md, report.html and plots for every run below `root`."""
    root = Path(root)
    out = Path(out) if out else root
    out.mkdir(parents=True, exist_ok=True)
    records = read_records(root)
    objective = objective or objective_name(records)
    plots = []
    quality_latency = plot_quality_latency(records, objective, out)
    if quality_latency:
        plots.append(quality_latency)
    plots.extend(plot_params(records, objective, out))
    training = plot_training(records, out)
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
