"""report.html's interactive plotly figures: parallel coordinates over the swept parameters,
quality vs latency with the Pareto front, the objective against each swept parameter, and the
dev training curves. The layouts come from `rerank_sweeps.plotdata`, as the PNGs' do."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

from rerank_sweeps.gate import GATE_MARK, gate_mark
from rerank_sweeps.plotdata import (
    Axis,
    completed_with,
    dev_metric_label,
    first_stage_dev,
    latency_axis_label,
    metric_interval,
    metric_value,
    param_series,
    pareto_front,
    point_groups,
    quality_latency_points,
    swept_params,
    training_curve,
)
from rerank_sweeps.records import Record

TEMPLATE = "plotly_white"


def _figure(**layout: Any) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    layout = {"template": TEMPLATE, "margin": {"l": 60, "r": 20, "t": 40, "b": 60}} | layout
    fig.update_layout(**layout)
    return fig


def parallel_coordinates(records: Sequence[Record], objective: str) -> Any | None:
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


def quality_latency_figure(records: Sequence[Record], objective: str) -> Any | None:
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


def param_figures(records: Sequence[Record], objective: str) -> list[tuple[str, Any]]:
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
                        "symbol": ["x" if runs[i].gate_failed else "circle" for i in mine],
                    },
                    error_y=_error_bars(ys, [metric_interval(runs[i], objective) for i in mine]),
                    name=f"{hue}={group}" if hue else key,
                    hovertext=[
                        f"{html.escape(runs[i].label)}<br>{key}={values[i]}"
                        f"<br>{objective}: {100 * y:.1f}%"
                        + (f" {GATE_MARK} dev gate failed" if runs[i].gate_failed else "")
                        for i, y in zip(mine, ys, strict=True)
                    ],
                    hoverinfo="text",
                )
            )
        if axis.kind == "category":
            fig.update_xaxes(range=[-0.5, len(axis.tickvals) - 0.5])
        out.append((key, fig))
    return out


def training_figure(records: Sequence[Record]) -> Any | None:
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
                name=r.label + gate_mark(r),
                hovertext=[
                    f"{html.escape(r.label)}<br>"
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
