"""`python -m rerank_sweeps.report DIR`: the dashboard without a W&B account.

Reads every run record below DIR (a sweep, a run, or all of outputs/) and writes
`report.md`, a self-contained `report.html` (plots inlined) and PNG plots into DIR (or
`--out`). Works on partial sweeps: running, died and failed jobs are listed as such.
"""

from __future__ import annotations

import argparse
import base64
import html
import math
import re
import sys
from collections import defaultdict
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


def _gate_note(records: Sequence[dict[str, Any]]) -> str:
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
    note = _gate_note(records)
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


def significance(records: list[dict[str, Any]]) -> str:
    """Paired differences against the baseline, as recorded by the evaluation, and top-two gap."""
    lines = []
    for r in records:
        paired = r.get("paired") or {}
        for key, stats in sorted(paired.items()):
            if not isinstance(stats, dict):
                continue
            diff, p = stats.get("diff"), stats.get("p_value", stats.get("p"))
            low, high = (stats.get("interval") or [stats.get("low"), stats.get("high")])[:2]
            if diff is None:
                continue
            sig = "significant" if p is not None and p < 0.05 else "not significant"
            interval = (
                f" [{100 * low:+.1f}, {100 * high:+.1f}]"
                if low is not None and high is not None
                else ""
            )
            # The evaluation's own p, printed as table.md and docs/results.md print it.
            pv = f", {record_p_text(stats)}" if p is not None else ""
            lines.append(f"- {run_label(r)} {key}: {100 * diff:+.1f} points{interval}{pv} ({sig})")
    return "\n".join(lines)


def _plot_quality_latency(records: list[dict[str, Any]], objective: str, out: Path) -> Path | None:
    points = []
    for r in records:
        value = (r.get("metrics") or {}).get(objective)
        lat = {k: v for k, v in (r.get("latency") or {}).items() if k.endswith("/p50_ms")}
        ours = [v for k, v in lat.items() if k.split("/")[1] not in ("none", "baseline")]
        if value is None or not ours:
            continue
        points.append((min(ours), value, run_label(r)))
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points.sort()
    front, best = [], -1.0
    for x, y, _label in points:
        if y > best:
            front.append((x, y))
            best = y
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([p[0] for p in points], [100 * p[1] for p in points])
    for x, y, label in points:
        ax.annotate(label, (x, 100 * y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.plot([p[0] for p in front], [100 * p[1] for p in front], "r--", label="Pareto front")
    ax.set_xlabel("reranking latency p50 (ms, fastest setting)")
    ax.set_ylabel(f"{objective} (%)")
    ax.legend()
    fig.tight_layout()
    path = out / "quality_vs_latency.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _swept_params(records: list[dict[str, Any]]) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    by_param: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for r in records:
        for override in r.get("overrides") or []:
            key, _, value = override.partition("=")
            key = key.lstrip("+~")
            if key in SWEPT_KEYS or key.startswith("arch.") or key.startswith("data.num"):
                by_param[key].append((value, r))
    return {k: v for k, v in by_param.items() if len({val for val, _ in v}) > 1}


def _plot_params(records: list[dict[str, Any]], objective: str, out: Path) -> list[Path]:
    params = _swept_params([r for r in records if r.get("status") == "completed"])
    if not params:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for key, pairs in sorted(params.items()):
        xs, ys = [], []
        for value, r in pairs:
            y = (r.get("metrics") or {}).get(objective)
            if y is not None:
                xs.append(value)
                ys.append(100 * y)
        if not xs:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.5))
        try:
            numeric = [float(x) for x in xs]
            ax.scatter(numeric, ys)
        except ValueError:
            ax.scatter(xs, ys)
        ax.set_xlabel(key)
        ax.set_ylabel(f"{objective} (%)")
        fig.tight_layout()
        path = out / f"param_{re.sub(r'[^A-Za-z0-9_.-]', '_', key)}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def build_report(root: Path, out: Path | None = None, objective: str | None = None) -> Report:
    """Write report.md, report.html and plots for every run below `root`."""
    root = Path(root)
    out = Path(out) if out else root
    out.mkdir(parents=True, exist_ok=True)
    records = load_records(root)
    if objective is None:
        names = [r.get("objective_names") for r in records if r.get("objective_names")]
        objective = names[0][0] if names else "hybrid/reranked/hit@5"
    plots = []
    quality_latency = _plot_quality_latency(records, objective, out)
    if quality_latency:
        plots.append(quality_latency)
    plots.extend(_plot_params(records, objective, out))
    fusion = fusion_table(records)
    sections = [
        f"# rerank_sweeps report: {root}",
        "",
        f"{len(records)} runs: "
        + ", ".join(f"{n} {s}" for s, n in sorted(_count_status(records).items())),
        "",
        "## Jobs",
        status_table(records),
        "",
        "## Hit rate",
        quality_tables(records, "hit") or "_no completed evaluation yet_",
        "## MRR",
        quality_tables(records, "mrr") or "_no completed evaluation yet_",
        *(["## Fusion weights (fit on dev)", fusion, ""] if fusion else []),
        "## Significance (paired, against the no-rerank baseline)",
        significance(records) or "_no paired statistics recorded_",
        "",
        "## Latency",
        latency_table(records) or "_no latency recorded_",
    ]
    if plots:
        sections += ["", "## Plots", *[f"![{p.stem}]({p.name})" for p in plots]]
    markdown = "\n".join(sections) + "\n"
    (out / "report.md").write_text(markdown)
    (out / "report.html").write_text(_html(markdown, out))
    return Report(markdown=markdown, plots=plots)


def _count_status(records: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for r in records:
        counts[r.get("status", "?")] += 1
    return counts


def _html(markdown: str, out: Path) -> str:
    """A minimal markdown-to-HTML renderer: tables, headings, bullets, inlined images."""
    body = []
    table: list[str] = []

    def flush_table() -> None:
        if not table:
            return
        rows = [r for r in table if not re.fullmatch(r"\|[-|]+\|", r)]
        body.append("<table>")
        for i, row in enumerate(rows):
            cells = [c.strip() for c in row.strip("|").split("|")]
            tag = "th" if i == 0 else "td"
            body.append("<tr>" + "".join(f"<{tag}>{_inline(c)}</{tag}>" for c in cells) + "</tr>")
        body.append("</table>")
        table.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush_table()
        image = re.fullmatch(r"!\[(.*)\]\((.*)\)", line)
        if image:
            data = base64.b64encode((out / image.group(2)).read_bytes()).decode()
            body.append(
                f'<p><img alt="{html.escape(image.group(1))}" src="data:image/png;base64,{data}"></p>'
            )
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
        elif line.startswith("- "):
            body.append(f"<li>{_inline(line[2:])}</li>")
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
    flush_table()
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px}"
        "img{max-width:100%}"
    )
    return f"<!doctype html><html><head><meta charset='utf-8'><title>rerank_sweeps report</title><style>{style}</style></head><body>{''.join(body)}</body></html>\n"


def _inline(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


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
