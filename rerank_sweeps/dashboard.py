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
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rerank_sweeps.report import (
    GATE_MARK,
    QUERY_TYPES,
    Axis,
    completed_with,
    dev_metric_label,
    first_stage_dev,
    gate_cell,
    gate_failed,
    gate_note,
    latency_axis_label,
    metric_interval,
    metric_ks,
    metric_value,
    param_series,
    pareto_front,
    point_groups,
    quality_latency_points,
    run_label,
    summary_line,
    swept_params,
    training_curve,
)

# Plotly's modebar stays (zoom, pan, download as PNG: all offline); its logo links out.
PLOT_CONFIG = {"displaylogo": False, "responsive": True}
TEMPLATE = "plotly_white"


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


def _metric_columns(records: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """(header, metric key) of the reranked hit@k per k and nDCG at its largest k, per type."""
    keys = {key for r in records for key in (r.get("metrics") or {})}
    types = [qt for qt in QUERY_TYPES if any(k.startswith(f"{qt}/reranked/") for k in keys)]
    ndcg_ks = sorted(int(m.group(1)) for k in keys if (m := re.search(r"/reranked/ndcg@(\d+)$", k)))
    columns = [
        (f"hit@{k}\n{qt}", f"{qt}/reranked/hit@{k}")
        for k in metric_ks(list(records))
        for qt in types
    ]
    if ndcg_ks:  # one nDCG depth keeps the table readable: the largest, as the dev gate uses @10
        columns += [
            (f"nDCG@{ndcg_ks[-1]}\n{qt}", f"{qt}/reranked/ndcg@{ndcg_ks[-1]}") for qt in types
        ]
    return [(header, key) for header, key in columns if key in keys]


def _sweep_name(record: dict[str, Any]) -> str:
    if record.get("group"):
        return str(record["group"])
    return Path(str(record["sweep_dir"])).name if record.get("sweep_dir") else ""


def run_table(records: Sequence[dict[str, Any]], objectives: Sequence[str]) -> str:
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
        status = str(r.get("status", "?"))
        reason = r.get("reason")
        cells = [
            Cell(
                str(r["job_num"]) if r.get("job_num") is not None else "",
                r.get("job_num"),
                css="num",
            ),
            Cell(_sweep_name(r)),
            Cell(run_label(r), title=f"{r.get('name')}\n{r.get('run_dir')}", css="name"),
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


def _gate_cell(record: dict[str, Any]) -> Cell:
    """passed / FAILED with the dev numbers in small print under it / – (no gate recorded)."""
    text = gate_cell(record)
    if not gate_failed(record):
        return Cell(text, css="good" if text == "passed" else "")
    dev_gate = record["dev_gate"]
    ours, first = dev_gate.get("reranked"), dev_gate.get("first_stage")
    small = ""
    if isinstance(ours, (int, float)) and isinstance(first, (int, float)):
        small = f'<div class="gate">{ours:.3f} &lt;= first stage {first:.3f}</div>'
    return Cell("FAILED", title=text, css="bad", extra_html=small)


def _objective_cell(record: dict[str, Any], name: str) -> Cell:
    value = metric_value(record, name)
    if value is None:
        return Cell("–", css="num")
    interval = metric_interval(record, name)
    title = f"95% interval [{interval[0]:.4f}, {interval[1]:.4f}]" if interval else ""
    return Cell(f"{value:.4f}", value, title, "num")


# --- plots ---


def _figure(**layout: Any) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    layout = {"template": TEMPLATE, "margin": {"l": 60, "r": 20, "t": 40, "b": 60}} | layout
    fig.update_layout(**layout)
    return fig


def parallel_coordinates(records: Sequence[dict[str, Any]], objective: str) -> Any | None:
    """Parallel coordinates: one line per completed run over its swept parameters and objective.

    Categories sit at 0, 1, ... with their names as ticks; a parameter searched over decades
    (a learning rate) is drawn as log10, since parcoords axes are linear. Drag along an axis
    to keep only the runs in a range. None when fewer than two runs or no parameter varies.
    """
    import plotly.graph_objects as go

    runs = completed_with(records, objective)
    params = swept_params(runs)
    keep = [i for i in range(len(runs)) if all(v[i] is not None for v in params.values())]
    if len(keep) < 2 or not params:
        return None
    dimensions = []
    for key, values in params.items():
        axis = Axis.of([values[i] for i in keep])
        positions = [axis.position(values[i]) for i in keep]
        ticks = axis.tickvals
        if axis.kind == "log":
            positions = [math.log10(p) for p in positions if p is not None]
            ticks = [math.log10(t) for t in ticks]
        dimension: dict[str, Any] = {"label": key, "values": positions}
        if len(ticks) <= 12:  # the values tried, not 1.2 and 1.4 between two integers
            dimension.update(tickvals=ticks, ticktext=axis.ticktext)
        dimensions.append(dimension)
    quality = [100 * (metric_value(runs[i], objective) or 0.0) for i in keep]
    dimensions.append({"label": f"{objective} (%)", "values": quality})
    fig = _figure(height=440, margin={"l": 70, "r": 70, "t": 70, "b": 30})
    fig.add_trace(
        go.Parcoords(
            dimensions=dimensions,
            line={
                "color": quality,
                # Viridis without its palest yellow, which vanishes on white.
                "colorscale": [[0.0, "#440154"], [0.5, "#21918c"], [1.0, "#7ad151"]],
                "showscale": True,
                "colorbar": {"title": {"text": "%"}},
            },
        )
    )
    return fig


def quality_latency_figure(records: Sequence[dict[str, Any]], objective: str) -> Any | None:
    """Objective vs end-to-end p50 latency per run, the first stage alone, and the Pareto front.

    The x value is the end-to-end p50 (query embedding, vector search and reranking) of the
    fp32 reranker at the evaluated number of candidates; the rerank-only p50 is in the hover.
    """
    import plotly.graph_objects as go

    points = quality_latency_points(records, objective)
    if not any(not p.reference for p in points):
        return None
    fig = _figure(
        height=480,
        xaxis_title=latency_axis_label(points),
        yaxis_title=f"{objective} (%, 95% interval)",
        legend={"orientation": "h", "y": -0.2},
    )
    symbols = {"reference": "diamond", "run": "circle", "gate_failed": "x"}
    for _, suffix, kind, group, name in point_groups(points):
        fig.add_trace(
            go.Scatter(
                x=[p.latency.p50_ms for p in group],
                y=[100 * p.quality for p in group],
                mode="markers+text",
                text=[p.label for p in group],
                textposition="top center",
                textfont={"size": 10},
                cliponaxis=False,  # a label near the edge stays whole
                marker={"symbol": symbols[kind], "size": 10},
                error_y=_error_bars([p.quality for p in group], [p.interval for p in group]),
                name=name + suffix,
                hovertext=[_latency_hover(p, objective) for p in group],
                hoverinfo="text",
            )
        )
    devices = sorted({p.latency.device for p in points})
    for device in devices:
        mine = [p for p in points if p.latency.device == device]
        suffix = f" ({device})" if len(devices) > 1 else ""
        front = [mine[i] for i in pareto_front([(p.latency.p50_ms, p.quality) for p in mine])]
        fig.add_trace(
            go.Scatter(
                x=[p.latency.p50_ms for p in front],
                y=[100 * p.quality for p in front],
                # A step: each front point holds until a faster-and-better one takes over.
                mode="lines+markers",
                line={"shape": "hv", "dash": "dash", "color": "crimson"},
                marker={"symbol": "circle-open", "size": 16, "color": "crimson"},
                name=f"Pareto front{suffix}",
                hoverinfo="skip",
            )
        )
    return fig


def _latency_hover(point: Any, objective: str) -> str:
    lat = point.latency
    rerank = f"{lat.rerank_p50_ms:.1f} ms" if lat.rerank_p50_ms is not None else "–"
    interval = (
        f" [{100 * point.interval[0]:.1f}, {100 * point.interval[1]:.1f}]" if point.interval else ""
    )
    return (
        f"{html.escape(point.label)}<br>{objective}: {100 * point.quality:.1f}%{interval}"
        f"<br>{lat.device}, {lat.system}, {lat.candidates} candidates"
        f"<br>end-to-end p50 {lat.p50_ms:.1f} ms, rerank p50 {rerank}"
    )


def _error_bars(
    values: Sequence[float], intervals: Sequence[tuple[float, float] | None]
) -> dict[str, Any]:
    """Plotly's asymmetric error bars in percent (zero where no interval was recorded)."""
    return {
        "type": "data",
        "symmetric": False,
        "array": [
            100 * (iv[1] - v) if iv else 0.0 for v, iv in zip(values, intervals, strict=True)
        ],
        "arrayminus": [
            100 * (v - iv[0]) if iv else 0.0 for v, iv in zip(values, intervals, strict=True)
        ],
        "thickness": 1,
        "width": 4,
    }


def param_figures(records: Sequence[dict[str, Any]], objective: str) -> list[tuple[str, Any]]:
    """(parameter, figure) of the objective against each swept parameter, with intervals.

    Ticks are the values the sweep tried (so an integer parameter has integer ticks), a
    parameter searched over decades gets a log axis, and series of another categorical
    parameter (the arch) get their own colour, moved slightly aside so bars do not overlap.
    """
    import plotly.graph_objects as go

    runs = completed_with(records, objective)
    params = swept_params(runs)
    out = []
    for key, values in params.items():
        axis, hue, series, positions = param_series(params, key)
        fig = _figure(
            height=360,
            xaxis={
                "title": {"text": key},
                "type": "log" if axis.kind == "log" else "linear",
                "tickvals": axis.tickvals,
                "ticktext": axis.ticktext,
                "zeroline": False,  # x=0 is the first category, not a zero
            },
            yaxis_title=f"{objective} (%)",
            legend={"title": {"text": hue}} if hue else {},
            showlegend=bool(hue),
        )
        for group, mine in series:
            ys = [metric_value(runs[i], objective) or 0.0 for i in mine]
            fig.add_trace(
                go.Scatter(
                    x=[positions[i] for i in mine],
                    y=[100 * y for y in ys],
                    mode="markers",
                    marker={
                        "size": 9,
                        "symbol": ["x" if gate_failed(runs[i]) else "circle" for i in mine],
                    },
                    error_y=_error_bars(ys, [metric_interval(runs[i], objective) for i in mine]),
                    name=f"{hue}={group}" if hue else key,
                    hovertext=[
                        f"{html.escape(run_label(runs[i]))}<br>{key}={values[i]}"
                        f"<br>{objective}: {100 * y:.1f}%"
                        + (f" {GATE_MARK} dev gate failed" if gate_failed(runs[i]) else "")
                        for i, y in zip(mine, ys, strict=True)
                    ],
                    hoverinfo="text",
                )
            )
        if axis.kind == "category":
            fig.update_xaxes(range=[-0.5, len(axis.tickvals) - 0.5])
        out.append((key, fig))
    return out


def training_figure(records: Sequence[dict[str, Any]]) -> Any | None:
    """The dev metric at each dev evaluation of every run that recorded one (dev_history).

    Step -1 (the model before training) is drawn at 0; the dotted lines are the first stage's
    dev value that the dev gate compares against.
    """
    import plotly.graph_objects as go

    curves = [(r, training_curve(r)) for r in records]
    curves = [(r, c) for r, c in curves if c]
    if not curves:
        return None
    metric = curves[0][1][0]
    fig = _figure(
        height=420,
        xaxis_title="training step (0: before training)",
        yaxis_title=dev_metric_label(metric),
    )
    for r, (_, points) in curves:
        fig.add_trace(
            go.Scatter(
                x=[max(step, 0) for step, _ in points],
                y=[value for _, value in points],
                mode="lines+markers",
                name=run_label(r) + (GATE_MARK if gate_failed(r) else ""),
                hovertext=[
                    f"{html.escape(run_label(r))}<br>"
                    + ("before training" if step < 0 else f"step {step}")
                    + f"<br>{dev_metric_label(metric)} {value:.4f}"
                    for step, value in points
                ],
                hoverinfo="text",
            )
        )
    for value in sorted(first_stage_dev(records)):
        fig.add_hline(
            y=value,
            line={"dash": "dot", "color": "grey"},
            annotation_text=f"first stage {value:.3f}",
            annotation_position="bottom right",
        )
    return fig


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
    records: Sequence[dict[str, Any]],
    objective: str,
    sections: Sequence[tuple[str, str]],
    title: str = "rerank_sweeps report",
) -> str:
    """The whole report.html: run table, interactive plots, then `sections` (markdown) as HTML.

    `sections` are report.md's (heading, body) pairs; its Jobs table is left out, since the
    run table holds the same and more. Without any plot the page carries no plotly.js.
    """
    records = list(records)
    objectives = list(
        dict.fromkeys([objective] + [n for r in records for n in (r.get("objective_names") or [])])
    )
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
