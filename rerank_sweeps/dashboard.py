"""report.html: the report as an interactive page that needs no network to view.

`render_dashboard` turns the run records into one self-contained HTML file: plotly.js is
inlined (a few MB, so the page opens on an air-gapped machine or from a mail attachment), the
run table sorts and filters with a few lines of plain JS, and the report's markdown tables
follow as HTML. It is written by `python -m rerank_sweeps.report DIR` beside report.md.

Sections: the run table (swept parameters as columns, status, objective, dev gate, hit@k
and nDCG per query type), parallel coordinates over the swept parameters and the objective,
quality vs end-to-end latency with the Pareto front, the objective against each swept
parameter with 95% intervals, dev training curves, then the tables of report.md.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rerank_sweeps.dashboard_plots import (
    parallel_coordinates,
    param_figures,
    quality_latency_figure,
    training_figure,
)
from rerank_sweeps.gate import gate_cell, gate_note
from rerank_sweeps.plotdata import Axis, metric_interval, metric_value, swept_params
from rerank_sweeps.records import QUERY_TYPES, RERANKED, MetricKey, Record
from rerank_sweeps.report_tables import metric_ks, summary_line

# Plotly's modebar stays (zoom, pan, download as PNG: all offline); its logo links out.
PLOT_CONFIG = {"displaylogo": False, "responsive": True}


@dataclass
class Cell:
    """One run table cell: what it shows, what it sorts by, its tooltip and CSS class."""

    text: str
    sort: str | float | None = None
    title: str = ""
    css: str = ""
    extra_html: str = field(default="", repr=False)  # already escaped, shown under the text

    def html(self) -> str:
        """The <td> element."""
        attrs = ""
        if self.sort is not None:
            attrs += f' data-sort="{html.escape(str(self.sort))}"'
        elif self.css == "num":
            attrs += ' data-sort=""'  # a blank sorts last, in either direction
        if self.title:
            attrs += f' title="{html.escape(self.title)}"'
        if self.css:
            attrs += f' class="{self.css}"'
        return f"<td{attrs}>{html.escape(self.text)}{self.extra_html}</td>"


@dataclass
class Column:
    """A run table column: header, whether it sorts as numbers, and a tooltip."""

    title: str
    numeric: bool
    tooltip: str = ""


def _pct(value: float | None, interval: tuple[float, float] | None) -> Cell:
    if value is None:
        return Cell("–", css="num")
    title = f"95% interval [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]" if interval else ""
    return Cell(f"{100 * value:.1f}", value, title, "num")


def _metric_columns(records: Sequence[Record]) -> list[tuple[str, MetricKey]]:
    """(header, metric key) of the reranked hit@k per k and nDCG at its largest k, per type."""
    keys = {key for r in records for key in r.metrics}
    reranked = [key for key in keys if key.system == RERANKED]
    types = [qt for qt in QUERY_TYPES if any(key.query_type == qt for key in reranked)]
    ndcg_ks = sorted(key.k for key in reranked if key.metric == "ndcg")
    columns = [
        (f"hit@{k}\n{qt}", MetricKey(qt, RERANKED, "hit", k))
        for k in metric_ks(records)
        for qt in types
    ]
    if ndcg_ks:  # one nDCG depth keeps the table readable: the largest, as the dev gate uses @10
        columns += [
            (f"nDCG@{ndcg_ks[-1]}\n{qt}", MetricKey(qt, RERANKED, "ndcg", ndcg_ks[-1]))
            for qt in types
        ]
    return [(header, key) for header, key in columns if key in keys]


def _sweep_name(record: Record) -> str:
    if record.group:
        return str(record.group)
    return Path(str(record.sweep_dir)).name if record.sweep_dir else ""


def run_table(records: Sequence[Record], objectives: Sequence[str]) -> str:
    """The sortable, filterable run table: one row per record.

    Each row's `data-filter` holds `param=value` words, so the filter box also matches
    `negatives=2`, which the cells alone (the value under a header) would not.
    """
    params = swept_params(records)
    metric_columns = _metric_columns(records)
    columns = [
        Column("job", True),
        Column("sweep", False),
        Column("run", False, "arch-base-negatives-epochs; hover a name for the overrides"),
        *[Column(key, param_kind_numeric(values)) for key, values in params.items()],
        Column("status", False),
        *[
            Column("objective" if len(objectives) == 1 else f"objective\n{name}", True, name)
            for name in objectives
        ],
        Column("dev gate", False, "whether the reranker beats the first stage on dev"),
        *[Column(header, True, f"{key} (%)") for header, key in metric_columns],
    ]
    rows = []
    for i, r in enumerate(records):
        status = r.status
        reason = r.reason
        cells = [
            Cell(
                str(r.job_num) if r.job_num is not None else "",
                r.job_num,
                css="num",
            ),
            Cell(_sweep_name(r)),
            Cell(r.label, title=f"{r.name}\n{r.run_dir}", css="name"),
            *[
                Cell("–" if values[i] is None else str(values[i]), values[i], css="num")
                if param_kind_numeric(values)
                else Cell("–" if values[i] is None else str(values[i]))
                for values in params.values()
            ],
            Cell(
                status,
                css={"completed": "good", "failed": "bad", "died": "bad"}.get(status, ""),
                extra_html=f'<div class="reason">{html.escape(str(reason))}</div>'
                if reason
                else "",
            ),
            *[_objective_cell(r, name) for name in objectives],
            _gate_cell(r),
            *[_pct(metric_value(r, key), metric_interval(r, key)) for _, key in metric_columns],
        ]
        words = [f"{key}={values[i]}" for key, values in params.items()] + [status]
        filter_words = html.escape(" ".join(words))
        rows.append(
            f'<tr data-filter="{filter_words}">' + "".join(c.html() for c in cells) + "</tr>"
        )
    head = "".join(
        f'<th data-type="{"num" if c.numeric else "text"}" tabindex="0" aria-sort="none"'
        + (f' title="{html.escape(c.tooltip)}"' if c.tooltip else "")
        + f">{html.escape(c.title).replace(chr(10), '<br>')}</th>"
        for c in columns
    )
    note = gate_note(list(records))
    return (
        '<p class="controls"><input id="run-filter" type="search" size="40" '
        'placeholder="filter: words that must all appear, e.g. colbert negatives=2" '
        'aria-label="filter runs"> <span id="run-count"></span> '
        '<span class="note">click a header to sort (again: reverse)</span></p>'
        f'<div class="scroll"><table id="runs" class="runs"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
        + (f'<p class="note">{html.escape(note)}</p>' if note else "")
    )


def param_kind_numeric(values: Sequence[Any]) -> bool:
    """Whether a parameter's column sorts as numbers."""
    return Axis.of(values).kind != "category"


def _gate_cell(record: Record) -> Cell:
    """passed / FAILED with the dev numbers in small print under it / – (no gate recorded)."""
    text = gate_cell(record)
    if not record.gate_failed or record.dev_gate is None:
        return Cell(text, css="good" if text == "passed" else "")
    dev_gate = record.dev_gate
    ours, first = dev_gate.get("reranked"), dev_gate.get("first_stage")
    small = ""
    if isinstance(ours, (int, float)) and isinstance(first, (int, float)):
        small = f'<div class="gate">{ours:.3f} &lt;= first stage {first:.3f}</div>'
    return Cell("FAILED", title=text, css="bad", extra_html=small)


def _objective_cell(record: Record, name: str) -> Cell:
    value = metric_value(record, name)
    if value is None:
        return Cell("–", css="num")
    interval = metric_interval(record, name)
    title = f"95% interval [{interval[0]:.4f}, {interval[1]:.4f}]" if interval else ""
    return Cell(f"{value:.4f}", value, title, "num")


# --- the page ---


def _plot_div(fig: Any, div_id: str) -> str:
    # A fixed div id keeps the page identical between runs on the same records.
    return str(
        fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config=PLOT_CONFIG)
    )


def markdown_html(markdown: str) -> str:
    """The report's markdown as HTML: headings, tables, bullets, paragraphs, **bold**, `code`."""
    body: list[str] = []
    table: list[str] = []
    bullets: list[str] = []

    def flush() -> None:
        if table:
            rows = [r for r in table if not re.fullmatch(r"\|[-|]+\|", r)]
            body.append('<div class="scroll"><table>')
            for i, row in enumerate(rows):
                cells = [c.strip() for c in row.strip("|").split("|")]
                tag = "th" if i == 0 else "td"
                body.append(
                    "<tr>" + "".join(f"<{tag}>{_inline(c)}</{tag}>" for c in cells) + "</tr>"
                )
            body.append("</table></div>")
            table.clear()
        if bullets:
            body.append("<ul>" + "".join(f"<li>{_inline(b)}</li>" for b in bullets) + "</ul>")
            bullets.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        if line.startswith("- "):
            bullets.append(line[2:])
            continue
        flush()
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))  # "###" under a section's <h2>: <h3>
            body.append(f"<h{level}>{_inline(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
    flush()
    return "\n".join(body)


def _inline(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def _anchor(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;color:#222;max-width:1400px;
margin:0 auto;padding:1em 2em}
h1{font-size:1.5em}h2{margin-top:1.8em;border-bottom:1px solid #ddd}h3,h4{margin-bottom:.3em}
nav a{margin-right:1.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}
td,th{border:1px solid #d5d5d5;padding:3px 7px;vertical-align:top}
th{background:#f3f4f6}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.runs th{cursor:pointer;user-select:none;white-space:nowrap}
.runs th[aria-sort=ascending]::after{content:" \\25B2"}
.runs th[aria-sort=descending]::after{content:" \\25BC"}
.runs tbody tr:hover{background:#f7f9fc}
.good{color:#17803d}.bad{color:#b3261e}
.reason{font-size:11px;color:#666;max-width:30em;white-space:normal}
td.name{white-space:nowrap}
.gate{font-size:11px;color:#666;white-space:nowrap}
.scroll{overflow-x:auto}
.note{color:#555;font-size:13px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(600px,1fr));gap:1em}
.controls input{font-size:14px;padding:3px 6px}
"""

# Sorting and filtering of the run table. Blank cells sort last in both directions; the
# filter keeps the rows whose text (or param=value words) contains every word typed.
SCRIPT = """
(function () {
  var table = document.getElementById("runs");
  if (!table) return;
  var body = table.tBodies[0];
  var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
  function key(cell, numeric) {
    var raw = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort")
                                             : cell.textContent.trim();
    if (raw === "" || raw === "\\u2013") return null;
    return numeric ? parseFloat(raw) : raw.toLowerCase();
  }
  function sortBy(index) {
    var th = heads[index], numeric = th.getAttribute("data-type") === "num";
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    heads.forEach(function (h) { h.setAttribute("aria-sort", "none"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a.cells[index], numeric), y = key(b.cells[index], numeric);
      if (x === null || y === null) return (x === null) - (y === null);
      var order = numeric ? x - y : x.localeCompare(y, undefined, {numeric: true});
      return ascending ? order : -order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }
  heads.forEach(function (th, i) {
    th.addEventListener("click", function () { sortBy(i); });
    th.addEventListener("keydown", function (e) {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(i); }
    });
  });
  var filter = document.getElementById("run-filter"), count = document.getElementById("run-count");
  function applyFilter() {
    var words = filter.value.toLowerCase().split(/\\s+/).filter(Boolean), shown = 0;
    Array.prototype.forEach.call(body.rows, function (row) {
      var text = (row.textContent + " " + row.getAttribute("data-filter")).toLowerCase();
      row.hidden = !words.every(function (w) { return text.indexOf(w) >= 0; });
      if (!row.hidden) shown += 1;
    });
    count.textContent = shown + " of " + body.rows.length + " runs";
  }
  filter.addEventListener("input", applyFilter);
  applyFilter();
})();
"""


def render_dashboard(
    records: Sequence[Record],
    objective: str,
    sections: Sequence[tuple[str, str]],
    title: str = "rerank_sweeps report",
) -> str:
    """The whole report.html: run table, interactive plots, then `sections` (markdown) as HTML.

    `sections` are report.md's (heading, body) pairs; its Jobs table is left out, since the
    run table holds the same and more. Without any plot the page carries no plotly.js.
    """
    records = list(records)
    objectives = list(dict.fromkeys([objective] + [n for r in records for n in r.objective_names]))
    plots: list[tuple[str, str, str]] = []  # (heading, explanation, HTML)
    parcoords = parallel_coordinates(records, objective)
    if parcoords is not None:
        plots.append(
            (
                "Parallel coordinates",
                "One line per completed run, coloured by the objective; drag along an axis to "
                "keep only the runs in that range (click the axis outside the range to clear).",
                _plot_div(parcoords, "plot-parcoords"),
            )
        )
    quality_latency = quality_latency_figure(records, objective)
    if quality_latency is not None:
        plots.append(
            (
                "Quality vs latency",
                "End-to-end p50 latency (query embedding, vector search and reranking, measured "
                "by the latency stage) of each run's fp32 reranker at the evaluated number of "
                "candidates; the rerank-only p50 is in the hover. The dashed step is the Pareto "
                "front: no other option is both faster and better. Bars: 95% intervals.",
                _plot_div(quality_latency, "plot-quality-latency"),
            )
        )
    params = param_figures(records, objective)
    if params:
        divs = "".join(
            f"<div>{_plot_div(fig, 'plot-param-' + _anchor(key))}</div>" for key, fig in params
        )
        plots.append(
            (
                "Parameters",
                f"{objective} of each completed run against each swept parameter; bars: 95% "
                "intervals of the evaluation (none where it recorded none); ×: dev gate failed.",
                f'<div class="grid">{divs}</div>',
            )
        )
    training = training_figure(records)
    if training is not None:
        plots.append(
            (
                "Training curves",
                "The dev metric at each dev evaluation (`dev_history` of the run records).",
                _plot_div(training, "plot-training"),
            )
        )
    tables = [(h, body) for h, body in sections if h != "Jobs"]
    nav = [("Runs", "runs-section")] + [(h, _anchor(h)) for h, _, _ in plots]
    nav += [(h.split(" (")[0], _anchor(h)) for h, _ in tables]
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{html.escape(summary_line(records))}. Objective: <code>{html.escape(objective)}"
        "</code>.</p>",
        "<nav>" + "".join(f'<a href="#{a}">{html.escape(h)}</a>' for h, a in nav) + "</nav>",
        '<h2 id="runs-section">Runs</h2>',
        run_table(records, objectives),
    ]
    for heading, explanation, div in plots:
        parts += [
            f'<h2 id="{_anchor(heading)}">{html.escape(heading)}</h2>',
            f'<p class="note">{_inline(explanation)}</p>',
            div,
        ]
    for heading, body in tables:
        parts += [f'<h2 id="{_anchor(heading)}">{html.escape(heading)}</h2>', markdown_html(body)]
    plotly_js = ""
    if plots:
        from plotly.offline import get_plotlyjs

        plotly_js = f"<script>{get_plotlyjs()}</script>"
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style>{plotly_js}</head>"
        f"<body>{''.join(parts)}<script>{SCRIPT}</script></body></html>\n"
    )
