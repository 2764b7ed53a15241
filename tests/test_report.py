"""The report renders from a fixture sweep (with a failed and a dead job) without W&B."""

from __future__ import annotations

import json
import re
from pathlib import Path

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
    assert "+15.0 points [+10.0, +20.0], p=0.001 (significant)" in md
    assert "| cpu | ce | 20 | 40.0 | 45.0 |" in md
    names = sorted(p.name for p in report.plots)
    assert names == ["param_negatives.png", "quality_vs_latency.png"]
    for plot in report.plots:
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_html_is_self_contained(tmp_path: Path) -> None:
    _sweep(tmp_path)
    assert main([str(tmp_path)]) == 0
    page = (tmp_path / "report.html").read_text()
    assert "<table>" in page and "data:image/png;base64," in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "no external resources"
    assert "<script" not in page


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
    assert "hybrid/fused-baseline/hit@5: +23.0 points [+10.0, +30.0], p=0.01 (significant)" in md
    page = (tmp_path / "report.html").read_text()
    assert "ce-minilm-1neg-1ep fused" in page and "FAILED (dev nDCG@10 0.412" in page


def test_report_of_old_records_has_no_gate_or_fusion(tmp_path: Path) -> None:
    _sweep(tmp_path)
    md = build_report(tmp_path).markdown
    assert "| job | run | status | objective | dev gate | run dir |" in md
    assert "| 1 | arch=ce,negatives=2 | completed | 0.6100 | – |" in md
    assert "†" not in md and "FAILED" not in md and "fused" not in md
    assert "Fusion weights" not in md and "should not be deployed" not in md
