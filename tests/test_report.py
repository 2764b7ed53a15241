"""The report renders from a fixture sweep (with a failed and a dead job) without W&B."""

from __future__ import annotations

import json
import re
from pathlib import Path

from rerank_sweeps.plotdata import (
    Axis,
    latency_axis_label,
    latency_points,
    pareto_front,
    quality_latency_points,
    swept_params,
    training_curve,
)
from rerank_sweeps.records import Record
from rerank_sweeps.report import build_report, main


def _record(run_dir: Path, **fields) -> None:
    run_dir.mkdir(parents=True)
    base = {
        "status": "completed",
        "run_dir": str(run_dir),
        "host": "elsewhere",  # records from another host are never declared dead
        "pid": 1,
        "objective_names": ["hybrid/reranked/hit@5"],
    }
    base.update(fields)
    (run_dir / "record.json").write_text(json.dumps(base))


def _metrics(reranked: float, baseline: float = 0.40, ceiling: float = 0.70) -> dict[str, float]:
    out = {}
    for qt in ("vector", "fts", "hybrid"):
        out[f"{qt}/reranked/hit@5"] = reranked
        out[f"{qt}/baseline/hit@5"] = baseline
        out[f"{qt}/ceiling/hit@5"] = ceiling
        out[f"{qt}/reranked/mrr@5"] = reranked / 2
    return out


def _sweep(root: Path) -> None:
    fp = {"candidates": "c1"}
    _record(
        root / "0",
        job_num=0,
        name="arch=ce,negatives=1",
        overrides=["arch=ce", "negatives=1"],
        arch="ce",
        base="minilm",
        negatives=1,
        epochs=1,
        objective=[0.55],
        metrics=_metrics(0.55),
        intervals={"hybrid/reranked/hit@5": [0.5, 0.6]},
        fingerprints=fp,
        latency={"cpu/ce/20/p50_ms": 40.0, "cpu/ce/20/p95_ms": 45.0, "cpu/none/20/p50_ms": 5.0},
        paired={
            "hybrid/reranked-baseline/hit@5": {
                "diff": 0.15,
                "low": 0.1,
                "high": 0.2,
                "p_value": 0.001,
            }
        },
    )
    _record(
        root / "1",
        job_num=1,
        name="arch=ce,negatives=2",
        overrides=["arch=ce", "negatives=2"],
        arch="ce",
        base="minilm",
        negatives=2,
        epochs=1,
        objective=[0.61],
        metrics=_metrics(0.61),
        fingerprints=fp,
        latency={"cpu/ce/20/p50_ms": 41.0, "cpu/none/20/p50_ms": 5.0},
    )
    _record(
        root / "2",
        job_num=2,
        name="arch=colbert,negatives=1",
        overrides=["arch=colbert", "negatives=1"],
        arch="colbert",
        base="modernbert",
        negatives=1,
        epochs=1,
        status="failed",
        reason="UserError: model 'answerdotai/ModernBERT-base' is not available offline",
    )
    dead = dict(
        job_num=3, name="arch=colbert,negatives=2", status="running", host=None, pid=2**22 + 12345
    )
    _record(root / "3", **dead)
    import socket

    rec = json.loads((root / "3" / "record.json").read_text())
    rec["host"] = socket.gethostname()
    (root / "3" / "record.json").write_text(json.dumps(rec))


def test_report_tables_mark_best_and_show_failed_and_dead_jobs(tmp_path: Path) -> None:
    _sweep(tmp_path)
    report = build_report(tmp_path)
    md = report.markdown
    assert "2 completed" in md and "1 failed" in md and "1 died" in md
    assert "ModernBERT-base' is not available offline" in md
    # best reranked cell per column is bold, with the interval where one was recorded
    assert "| ce-minilm-2neg-1ep | **61.0** | **61.0** | **61.0** |" in md
    assert "| ce-minilm-1neg-1ep | 55.0 | 55.0 | 55.0 [50.0, 60.0] |" in md
    # the reference rows appear once although two runs share the candidates
    assert md.count("| baseline |") == 1 and md.count("| ceiling |") == 1
    significance = md.split("## Significance")[1].split("## Latency")[0]
    table = significance.split("### trained reranker vs first stage (reranked − baseline): hit@5")[
        1
    ]
    assert (
        "| run | hybrid |\n|---|---|\n| ce-minilm-1neg-1ep | **+15.0 [+10.0, +20.0] p=0.001** |"
        in table
    )
    assert "- " not in significance  # tables, not the old bullet list
    assert "| cpu | ce | 20 | 40.0 | 45.0 |" in md
    names = sorted(p.name for p in report.plots)
    assert names == ["param_negatives.png", "quality_vs_latency.png"]
    for plot in report.plots:
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_html_is_self_contained(tmp_path: Path) -> None:
    _sweep(tmp_path)
    assert main([str(tmp_path)]) == 0
    page = (tmp_path / "report.html").read_text()
    assert '<table id="runs"' in page and "Plotly.newPlot" in page
    assert "<script src" not in page and "<link" not in page, "scripts and styles are inline"
    # plotly.js itself names URLs in strings (map tiles it never loads here); outside the
    # scripts, nothing may point off the page.
    markup = re.sub(r"<script>.*?</script>", "", page, flags=re.S)
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", markup), "no external resources"
    assert "plotly.js v" in page.split("</head>")[0], "plotly.js inlined in the head"


def test_report_of_a_missing_dir_is_one_line_error(tmp_path: Path, capsys) -> None:
    assert main([str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def _gated_sweep(root: Path) -> None:
    """A run whose dev gate failed (with fused rows and fusion weights) and an old record."""
    metrics = _metrics(0.50)
    for qt, value in (("vector", 0.58), ("fts", 0.52), ("hybrid", 0.63)):
        metrics[f"{qt}/fused/hit@5"] = value
        metrics[f"{qt}/fused/mrr@5"] = value / 2
    _record(
        root / "0",
        job_num=0,
        name="arch=ce,negatives=1",
        arch="ce",
        base="minilm",
        negatives=1,
        epochs=1,
        objective=[0.50],
        metrics=metrics,
        intervals={"hybrid/fused/hit@5": [0.55, 0.7]},
        fingerprints={"candidates": "c1"},
        paired={
            "hybrid/fused-baseline/hit@5": {"diff": 0.23, "interval": [0.1, 0.3], "p_value": 0.01}
        },
        config={"rerank": {"fusion": "convex"}},
        dev_gate={
            "passed": False,
            "metric": "dev ndcg@10, mean over query types",
            "reranked": 0.4123,
            "first_stage": 0.4551,
            "per_type": {"vector": {"reranked": 0.40, "first_stage": 0.45}},
        },
        fusion={
            "convex": {
                "vector": {"weight": 0.35, "dev": 0.5012},
                "fts": {"weight": 0.6, "dev": 0.47},
                "hybrid": {"weight": 0.4, "dev": 0.52},
            },
            "rrf": {"vector": {"weight": 0.5, "dev": 0.49}},
        },
    )
    _record(
        root / "1",
        job_num=1,
        name="arch=ce,negatives=2",
        arch="ce",
        base="minilm",
        negatives=2,
        epochs=1,
        objective=[0.45],
        metrics=_metrics(0.45),
        fingerprints={"candidates": "c1"},
    )


def test_report_marks_a_failed_dev_gate_and_shows_fused_rows(tmp_path: Path) -> None:
    _gated_sweep(tmp_path)
    md = build_report(tmp_path).markdown
    jobs = md.split("## Jobs")[1].split("## Hit rate")[0]
    assert "| dev gate |" in jobs
    assert "FAILED (dev nDCG@10 0.412 <= first stage 0.455)" in jobs
    assert "arch=ce,negatives=2 | completed | 0.4500 | – |" in jobs  # the old record: no gate
    assert "it should not be deployed as is" in jobs
    hit = md.split("## Hit rate")[1].split("## MRR")[0]
    # the failed run's reranked row carries the mark; its fused row follows, best cells in bold
    assert "| ce-minilm-1neg-1ep† | 50.0 | 50.0 | 50.0 |" in hit
    assert "| ce-minilm-1neg-1ep fused | **58.0** | **52.0** | **63.0 [55.0, 70.0]** |" in hit
    assert "| ce-minilm-2neg-1ep | 45.0 | 45.0 | 45.0 |" in hit
    assert "ce-minilm-2neg-1ep fused" not in md  # no fused metrics, no fused row
    assert "† dev gate FAILED (ce-minilm-1neg-1ep: dev nDCG@10 0.412 <= first stage 0.455)" in hit
    mrr = md.split("## MRR")[1].split("## Fusion")[0]
    assert "| ce-minilm-1neg-1ep fused | **29.0** | **26.0** | **31.5** |" in mrr
    fusion = md.split("## Fusion weights (fit on dev)")[1].split("## Significance")[0]
    assert "| ce-minilm-1neg-1ep | convex (the `fused` rows) | 0.35 (dev 0.501) | 0.60" in fusion
    assert "| ce-minilm-1neg-1ep | rrf | 0.50 (dev 0.490) | – | – |" in fusion
    assert "ce-minilm-2neg-1ep" not in fusion
    fused = md.split("### fused (reranker + first stage) vs first stage (fused − baseline): hit@5")
    assert "| ce-minilm-1neg-1ep† | **+23.0 [+10.0, +30.0] p=0.01** |" in fused[1]
    page = (tmp_path / "report.html").read_text()
    assert "ce-minilm-1neg-1ep fused" in page and 'title="FAILED (dev nDCG@10 0.412' in page


def test_report_of_old_records_has_no_gate_or_fusion(tmp_path: Path) -> None:
    _sweep(tmp_path)
    md = build_report(tmp_path).markdown
    assert "| job | run | status | objective | dev gate | run dir |" in md
    assert "| 1 | arch=ce,negatives=2 | completed | 0.6100 | – |" in md
    assert "†" not in md and "FAILED" not in md and "fused" not in md
    assert "Fusion weights" not in md and "should not be deployed" not in md


# A small grid as the dashboard sees it: arch x negatives, every field the plots read.
GRID = (  # (job, arch, negatives, objective); the objective order differs from the job order
    (0, "ce", 1, 0.30),
    (1, "ce", 2, 0.50),
    (2, "colbert", 1, 0.40),
    (3, "colbert", 2, 0.20),
)


def _grid_metrics(value: float) -> tuple[dict[str, float], dict[str, list[float]]]:
    metrics, intervals = {}, {}
    for qt, shift in (("vector", 0.02), ("fts", -0.05), ("hybrid", 0.0)):
        for k, more in ((5, 0.0), (10, 0.1)):
            for name, scale in (("hit", 1.0), ("ndcg", 0.7), ("mrr", 0.6)):
                reranked = round(scale * (value + shift + more), 4)
                metrics[f"{qt}/reranked/{name}@{k}"] = reranked
                metrics[f"{qt}/baseline/{name}@{k}"] = round(scale * (0.35 + shift + more), 4)
                intervals[f"{qt}/reranked/{name}@{k}"] = [reranked - 0.05, reranked + 0.04]
    return metrics, intervals


def _grid(root: Path) -> list[Record]:
    """Four completed runs (one with a failed dev gate) and a failed one; returns the records."""
    for job, arch, negatives, value in GRID:
        metrics, intervals = _grid_metrics(value)
        speed = {"ce": 3.0, "colbert": 1.0}[arch] * (1 + negatives / 10)
        latency = {}
        for n in (20, 50):
            # The evaluation reranked 50 candidates: that setting, not the fastest, is plotted.
            latency[f"cpu/none/{n}/p50_ms"] = 10.0
            latency[f"cpu/{arch}/{n}/p50_ms"] = 10.0 + speed * n
            latency[f"cpu/{arch}/{n}/rerank_p50_ms"] = speed * n
            latency[f"cpu/{arch}/{n}/p95_ms"] = 12.0 + speed * n
        _record(
            root / str(job),
            job_num=job,
            name=f"arch={arch},negatives={negatives}",
            overrides=[f"arch={arch}", f"negatives={negatives}", "paths.root=/x"],
            sweep_dir=str(root),
            group="grid",
            arch=arch,
            base="minilm",
            negatives=negatives,
            epochs=1,
            objective=[value],
            metrics=metrics,
            intervals=intervals,
            fingerprints={"candidates": "c1"},
            config={"eval": {"depth": 50}, "arch": {"name": arch, "lr": 2e-5}},
            latency=latency,
            dev_gate={
                "passed": value > 0.25,
                "metric": "dev ndcg@10, mean over query types",
                "reranked": round(value - 0.05, 4),
                "first_stage": 0.25,
            },
            dev_history=[
                {"step": -1, "ndcg@10": 0.2},
                {"step": 10, "ndcg@10": value - 0.1},
                {"step": 20, "ndcg@10": value - 0.05},
            ],
            paired={
                f"{qt}/reranked-baseline/{m}": {
                    "diff": round(value - 0.35, 4),
                    "interval": [value - 0.4, value - 0.3],
                    "p_value": 0.01 if value > 0.45 else 0.3,
                }
                for qt in ("vector", "hybrid")
                for m in ("hit@5", "ndcg@10")
            },
        )
    _record(
        root / "4",
        job_num=4,
        name="arch=colbert,negatives=4",
        overrides=["arch=colbert", "negatives=4"],
        sweep_dir=str(root),
        group="grid",
        arch="colbert",
        base="minilm",
        negatives=4,
        epochs=1,
        status="failed",
        reason="RuntimeError: CUDA out of memory",
    )
    return [Record.load(root / str(job) / "record.json") for job in range(5)]


def test_report_of_a_grid_has_ndcg_significance_tables_and_every_plot(tmp_path: Path) -> None:
    _grid(tmp_path)
    report = build_report(tmp_path)
    md = report.markdown
    ndcg = md.split("## nDCG")[1].split("## MRR")[0]
    assert "### ndcg@10 (%, 95% interval)" in ndcg
    assert "| ce-minilm-2neg-1ep | **43.4 [38.4, 47.4]** | **38.5 [33.5, 42.5]** |" in ndcg
    assert "| baseline | 32.9 | 28.0 | 31.5 |" in ndcg
    significance = md.split("## Significance")[1].split("## Latency")[0]
    headings = re.findall(r"^### (.*)$", significance, flags=re.M)
    assert headings == [
        "trained reranker vs first stage (reranked − baseline): hit@5",
        "trained reranker vs first stage (reranked − baseline): ndcg@10",
    ]
    hit5 = significance.split(headings[0])[1].split("###")[0]
    assert "| run | vector | hybrid |" in hit5
    # p < 0.05 is bold, p >= 0.05 is not; one row per run with paired statistics
    assert "| ce-minilm-2neg-1ep | **+15.0 [+10.0, +20.0] p=0.01** |" in hit5
    assert "| ce-minilm-1neg-1ep | -5.0 [-10.0, +0.0] p=0.3 |" in hit5
    assert hit5.count("\n| ") == 5  # header + 4 runs
    assert "† dev gate FAILED (colbert-minilm-2neg-1ep" in significance
    names = sorted(p.name for p in report.plots)
    assert names == [
        "param_arch.png",
        "param_negatives.png",
        "quality_vs_latency.png",
        "training_curves.png",
    ]


def test_plots_take_end_to_end_latency_at_the_evaluated_depth() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        records = _grid(Path(tmp))
    (point,) = latency_points(records[0])  # ce, 1 negative: speed 3.3 ms per candidate
    assert point.candidates == 50  # eval.depth, although 20 candidates were faster
    assert point.p50_ms == 10.0 + 3.3 * 50 and point.rerank_p50_ms == 3.3 * 50
    points = quality_latency_points(records, "hybrid/reranked/hit@5")
    assert [p.label for p in points if p.reference] == ["first stage only (no reranker)"]
    label = latency_axis_label(points)
    assert label.startswith("end-to-end latency p50") and "reranking 50 candidates" in label
    # the Pareto front: the first stage (fastest), then each faster-and-better run
    xy = [(p.latency.p50_ms, p.quality) for p in points]
    front = [points[i].label for i in pareto_front(xy)]
    assert front == [
        "first stage only (no reranker)",
        "colbert-minilm-1neg-1ep",
        "ce-minilm-2neg-1ep",
    ]


def test_pareto_front_keeps_only_undominated_points() -> None:
    points = [(10.0, 0.5), (5.0, 0.2), (20.0, 0.4), (30.0, 0.9), (5.0, 0.3)]
    assert pareto_front(points) == [4, 0, 3]
    assert pareto_front([]) == []


def test_swept_params_are_resolved_values_and_integer_axes_tick_at_the_values() -> None:
    records = [
        {"arch": "ce", "negatives": 1, "epochs": 1, "overrides": ["arch=ce", "paths.root=/a"]},
        {"arch": "ce", "negatives": 2, "epochs": 3, "overrides": ["epochs=3", "paths.root=/b"]},
        {
            "arch": "colbert",
            "negatives": 5,
            "epochs": 1,
            "config": {"arch": {"name": "colbert", "lr": 1e-4}},
            "overrides": ["arch.lr=1e-4"],
        },
        {"arch": "ce", "negatives": 2, "epochs": 1, "overrides": ["arch.lr=1e-6"]},
        {
            "arch": "ce",
            "negatives": 2,
            "epochs": 1,
            "config": {"arch": {"name": "ce", "lr": None}},
            "overrides": ["arch.lr=null"],
        },
    ]
    params = swept_params([Record.from_json(r) for r in records])
    # epochs comes from the record (one run overrode it, the others took the preset's);
    # paths.root differs but is no parameter; arch.lr was overridden, so it is one
    assert list(params) == ["arch", "negatives", "epochs", "arch.lr"]
    assert params["epochs"] == [1, 3, 1, 1, 1]
    assert params["arch.lr"] == [None, None, 1e-4, 1e-6, None]  # null is no value
    negatives = Axis.of(params["negatives"])
    assert negatives.kind == "int" and negatives.tickvals == [1.0, 2.0, 5.0]
    assert negatives.ticktext == ["1", "2", "5"]
    assert Axis.of(params["arch.lr"]).kind == "log"
    arch = Axis.of(params["arch"])
    assert arch.kind == "category" and arch.position("colbert") == 1.0
    assert arch.dodge(1.0, 0, 2) < 1.0 < arch.dodge(1.0, 1, 2) < 1.5
    # runs at one value, of one series or two, each get their own x near that value
    xs = negatives.spread([1, 1, 2, 1, None], [0, 0, 0, 1, 0])
    assert xs[4] is None and len(set(xs[:4])) == 4
    assert all(abs(x - v) < 0.3 for x, v in zip(xs[:4], [1, 1, 2, 1], strict=True))


def test_training_curve_reads_dev_history() -> None:
    record = {"dev_history": [{"step": 8, "ndcg@10": 0.3}, {"step": -1, "ndcg@10": 0.1}]}
    assert training_curve(Record.from_json(record)) == ("ndcg@10", [(-1, 0.1), (8, 0.3)])
    assert training_curve(Record.from_json({})) is None
    assert training_curve(Record.from_json({"dev_history": []})) is None
