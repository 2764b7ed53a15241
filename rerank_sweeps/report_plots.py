"""The report's PNG plots (for report.md and other markdown viewers): quality vs latency with
its Pareto front, the objective against each swept parameter, and the dev training curves."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rerank_sweeps.plotdata import (
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


def save_figure(fig: Any, path: Path, dpi: int = 110) -> Path:
    """Lay `fig` out, write it to `path` (its folder created) and free it; returns `path`."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_quality_latency(records: Sequence[Record], objective: str, out: Path) -> Path | None:
    """quality_vs_latency.png: the objective against end-to-end p50 with the Pareto front per
    device (None when no completed run has both)."""
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
    return save_figure(fig, out / "quality_vs_latency.png", dpi=120)


def plot_params(records: Sequence[Record], objective: str, out: Path) -> list[Path]:
    """param_<key>.png per swept parameter: the objective with its 95% interval per run."""
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
        paths.append(save_figure(fig, out / f"param_{re.sub(r'[^A-Za-z0-9_.-]', '_', key)}.png"))
    return paths


def plot_training(records: Sequence[Record], out: Path) -> Path | None:
    """training_curves.png: the dev metric per dev evaluation (None when no run has one)."""
    curves = [(r.label, training_curve(r), r) for r in records]
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
    return save_figure(fig, out / "training_curves.png")
