"""docs/results.md: the blog's numbers parsed, paired comparisons hand-checked, page and README."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rerank_sweeps import findings, publish, trec
from rerank_sweeps.blog import parse_blog
from rerank_sweeps.records import QUERY_TYPES, Record
from rerank_sweeps.report import main

REPO = Path(__file__).resolve().parents[1]
BLOG = REPO / "docs" / "blog_numbers.md"
QIDS = ["q1", "q2", "q3", "q4"]


def test_blog_numbers_parse_to_the_transcribed_values():
    blog = parse_blog(BLOG)
    assert blog.baseline == {
        ("vector", 5): 48.75,
        ("vector", 10): 60.30,
        ("fts", 5): 33.10,
        ("fts", 10): 39.25,
    }
    assert blog.untrained == {
        ("vector", 5): 9.70,
        ("fts", 5): 4.30,
        ("vector", 10): 9.20,
        ("fts", 10): 4.75,
    }
    assert len(blog.trained) == 11 + 12  # the @5 and @10 tables
    row = blog.row("colbert", "modernbert", 2, 1, 5)
    assert row is not None and row.values == {"vector": 54.10, "fts": 46.95, "hybrid": 53.25}
    row = blog.row("ce", "minilm", None, 1, 10)
    assert row is not None and row.name == "cross-encoder_minilm_tuned_1_epoch"
    assert row.values["fts"] == 55.95
    assert blog.row("ce", "minilm", 2, 1, 5) is None
    assert blog.latency_gpu["CE MiniLM"] == {20: 24.79, 50: 48.99, 100: 82.56}
    assert blog.latency_cpu["ColBERT answerai v1"] == 137.59
    assert blog.latency_cpu["none"] == 53.85


def _trec(run_dir: Path, name: str, hit_qids: set[str]) -> None:
    """A TREC run over QIDS whose top 5 holds the relevant doc exactly for `hit_qids`."""
    lines = []
    for qid in QIDS:
        docs = [f"x{qid}{i}" for i in range(6)]
        if qid in hit_qids:
            docs[2] = f"d{qid}"
        else:
            docs[5] = f"d{qid}"  # relevant, but at rank 6: a miss at k=5
        lines += [f"{qid} Q0 {d} {r} {7 - r} {name}" for r, d in enumerate(docs, 1)]
    (run_dir / "runs" / f"{name}.trec").write_text("\n".join(lines) + "\n")


def _run(
    root: Path, num: int, negatives: int, reranked: set[str], epochs: int = 1, sweep: str = "grid"
) -> dict:
    run_dir = root / sweep / str(num)
    (run_dir / "runs").mkdir(parents=True)
    (run_dir / "qrels.trec").write_text("".join(f"{q} 0 d{q} 1\n" for q in QIDS))
    systems = {"reranked": reranked, "baseline": {"q1"}, "untrained": set(), "ceiling": set(QIDS)}
    metrics = {}
    for qt in ("vector", "fts", "hybrid"):
        for system, hits in systems.items():
            _trec(run_dir, f"{qt}-{system}@5", hits)
            metrics[f"{qt}/{system}/hit@5"] = len(hits) / len(QIDS)
    latency = {
        "cpu/none/20/p50_ms": 20.0,
        "cpu/none/20/mean_ms": 21.0,
        "cpu/ce/20/p50_ms": 100.0 + negatives,
        "cpu/ce/20/mean_ms": 110.0,
        "cpu/ce/20/rerank_p50_ms": 80.0,
    }
    record = {
        "status": "completed",
        "run_dir": str(run_dir),
        "host": "elsewhere",
        "pid": 1,
        "job_num": num,
        "name": f"negatives={negatives}",
        "overrides": [f"negatives={negatives}", f"experiment=cpu_{sweep}"],
        "sweep_dir": str(root / sweep),
        "arch": "ce",
        "base": "minilm",
        "negatives": negatives,
        "epochs": epochs,
        "objective_names": ["hybrid/reranked/hit@5"],
        "objective": [metrics["hybrid/reranked/hit@5"]],
        "metrics": metrics,
        "intervals": {},
        "latency": latency,
        "stage_seconds": {"split": 1.0, "model": 30.0, "evaluate": 5.0},
        "cache_events": [{"stage": "split", "hit": num > 0}],
        "fingerprints": {"split": "k1"},
        "config": {
            "data": {
                "num_train": 1000,
                "num_dev": 100,
                "num_eval": 4,
                "corpus_size": 50,
                "source": "wordnet",
            },
            "overfetch": 4,
            "paths": {"root": str(root / "outputs")},
            "latency": {"accuracy_queries": 50},
        },
        "versions": {"torch": "x"},
        "git_commit": "abc",
        "started": f"2026-11-26T10:0{num}:00",
        "ended": f"2026-11-26T10:0{num}:30",
    }
    (run_dir / "record.json").write_text(json.dumps(record))
    return record


def test_per_query_hits_and_paired_difference_hand_checked(tmp_path):
    one = _run(tmp_path, 0, 1, {"q1", "q2"})
    two = _run(tmp_path, 1, 2, set(QIDS))
    assert trec.per_query_hits(Path(one["run_dir"]), "vector", "reranked", 5) == {
        "q1": 1.0,
        "q2": 1.0,
        "q3": 0.0,
        "q4": 0.0,
    }
    p = findings.between(Record.from_json(two), Record.from_json(one), "vector", 5)
    # diffs 0, 0, 1, 1: mean 0.5; exact McNemar with 2 won, 0 lost: 2 * (1/2)^2 = 0.5.
    assert p.diff == pytest.approx(0.5) and p.n == 4
    assert p.p_value == 0.5 and not p.significant
    assert (p.test, p.won, p.lost) == ("mcnemar-exact", 2, 0)
    # The test-inversion interval: 4 queries reject no shift in [-1, 1]. At delta = -1 the
    # shifted diffs are 1, 1, 2, 2 and only the all-plus and all-minus flips reach |sum| 6:
    # exact p 2/16 = 0.125; at +1 they are -1, -1, 0, 0 and half the flips reach |sum| 2.
    assert p.low == -1.0 and p.high == 1.0
    reranked_vs_baseline = findings.between(
        Record.from_json(one), Record.from_json(one), "vector", 5, "reranked", "baseline"
    )
    assert reranked_vs_baseline.diff == pytest.approx(0.25)


def _paired(diff: float, p: float) -> findings.Paired:
    return findings.Paired(diff, diff - 0.1, diff + 0.1, p, 200)


def test_verdicts_follow_significance_and_sign():
    # A majority of the family after Holm: 2 of 3 (Holm [0.03, 0.03, 0.4]).
    two_of_three = [_paired(0.1, 0.01), _paired(0.05, 0.01), _paired(0.02, 0.4)]
    assert findings._verdict(two_of_three, 1).startswith("reproduced (2 of 3")
    # One significant of two is no majority (it used to read "reproduced").
    assert findings._verdict([_paired(0.1, 0.01), _paired(0.02, 0.4)], 1).startswith("not shown")
    assert findings._verdict([_paired(-0.1, 0.01)], 1).startswith("contradicted")
    assert findings._verdict([_paired(-0.1, 0.01), _paired(0.1, 0.01)], 1).startswith("mixed")
    assert findings._verdict([_paired(0.1, 0.2)], 1).startswith("not shown")
    assert findings._verdict([_paired(-0.3, 0.001)], -1).startswith("reproduced")
    assert findings._verdict([], 1) == "not measured"


def test_page_and_readme_block_are_generated_from_the_runs(tmp_path):
    root = tmp_path / "sweep"
    _run(root, 0, 1, {"q1", "q2"})
    _run(root, 1, 2, set(QIDS))
    _run(root, 0, 1, {"q1"}, epochs=3, sweep="epochs")
    _run(root, 0, 5, {"q1", "q2", "q3"}, sweep="negatives")
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(BLOG, docs / "blog_numbers.md")
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{publish.README_START}\nold text\n{publish.README_END}\noutro\n")
    page_path = docs / "results.md"
    argv = [
        str(root),
        "--out",
        str(tmp_path / "rep"),
        "--publish",
        str(page_path),
        "--readme",
        str(readme),
    ]
    assert main(argv) == 0
    page = page_path.read_text()
    assert "python -m rerank_sweeps -m negatives=1,2 experiment=cpu_grid   # resumable" in page
    assert "python -m rerank_sweeps -m negatives=1 experiment=cpu_epochs   # resumable" in page
    # 3 epochs hit q1 only, 1 epoch q1 and q2: -25 points on 4 queries.
    assert "ce-minilm, 1 negative(s): 3 - 1 epochs vector hit@5 -25.0" in page
    # Ours beside the blog: the no-reranker row (25.0 everywhere; the blog has 48.75 and 33.10).
    assert "| no reranker | 25.0 | 25.0 | 25.0 | no reranker | 48.75 | 33.10 | – |" in page
    assert (
        "| ce-minilm-1neg-1ep | 50.0 | 50.0 | 50.0 | `cross-encoder_minilm_tuned_1_epoch` "
        "(negatives not stated) | 50.95 | 50.10 | 51.50 |" in page
    )
    assert "| ce-minilm-2neg-1ep | 100.0 | 100.0 | 100.0 | – |" in page
    # 2 won, 0 lost: exact McNemar p = 0.5; the family (2 and 5 negatives x vector, hybrid)
    # has raw p 0.5, 0.5, 1, 1, so Holm gives min(1, 4 x 0.5) = 1. With 4 queries the
    # test-inversion interval rejects no shift (it used to be a bootstrap [+0.0, +100.0]).
    assert (
        "ce-minilm, 2 - 1 negatives: vector hit@5 +50.0 [-100.0, +100.0], p=0.5, Holm 1 "
        "(2 won, 0 lost); 4 of 4 queries with a relevant candidate" in page
    )
    assert "ce-minilm, 5 - 1 negatives: hybrid hit@5 +25.0 [-100.0, +100.0], p=1, Holm 1" in page
    assert findings.VERDICT_RULE in page and "sign-flip tests on the same queries" not in page
    assert "the exact McNemar test" in page and "so it holds 0 exactly when p >= 0.05" in page
    assert "**More hard negatives help**: not shown: none of the 4 differences" in page
    # 5 negatives hit q1-q3, 1 negative q1 and q2: +25 points; the blog's 1/2/5 rows beside it.
    assert "ce-minilm, 5 - 1 negatives: vector hit@5 +25.0" in page
    assert "vector hit@5 43.35 with 1 negative, 54.1 with 2 negatives, 55.5 with 5" in page
    assert "- Training scale: 1 or 3 epoch(s) over the train questions above with 1, 2 or 5" in page
    assert "hit@10" not in page.split("## Our tables")[0]  # only the k the runs measured
    assert (docs / "results_quality_vs_latency.png").stat().st_size > 1000
    assert "| ce-minilm-2neg-1ep | 1 (cached) | – | 30 | – | – | 5 | – | 36 |" in page
    marker = root / "outputs" / "cache" / "split" / "k1" / "_COMPLETE.json"
    marker.parent.mkdir(parents=True)
    marker.write_text(json.dumps({"seconds": 4.2}))  # the build time the cache remembers
    assert main(argv) == 0
    page = page_path.read_text()
    assert "| ce-minilm-2neg-1ep | 1 (cached, built in 4) | – | 30 |" in page
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("\noutro\n") and "old text" not in text
    assert "**More hard negatives help**: not shown" in text
    assert findings.VERDICT_RULE in text  # the README states family, correction and rule too
    assert main(argv) == 0
    assert readme.read_text() == text  # regenerating changes nothing


def test_publish_refuses_a_readme_without_the_block_and_a_missing_blog_file(tmp_path):
    root = tmp_path / "sweep"
    _run(root, 0, 1, {"q1"})
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")
    cmd = [sys.executable, "-m", "rerank_sweeps.report", str(root), "--publish"]
    out = subprocess.run(
        [*cmd, str(tmp_path / "results.md"), "--blog", str(BLOG), "--readme", str(readme)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode != 0 and "has no" in out.stderr and "Traceback" not in out.stderr
    out = subprocess.run(
        [*cmd, str(tmp_path / "nowhere" / "results.md")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 2 and "blog" in out.stderr and "Traceback" not in out.stderr


def test_the_readme_keeps_the_strongest_comparison_each_way():
    # Line 3's p was 0.01: Holm over 6 made it 0.05 (not significant), so it is now 0.002.
    # Holm: 0.001 x 6 = 0.006, 0.002 x 5 = 0.01, 0.01 x 4 = 0.04, then 0.6, 1, 1.
    diffs = [(0.05, 0.01), (0.15, 0.001), (-0.02, 0.5), (-0.10, 0.002), (-0.20, 0.2), (0.01, 0.9)]
    finding = findings.Finding(
        "claim", "blog", [f"line {i}" for i in range(6)], [_paired(d, p) for d, p in diffs], 1
    )
    assert finding.adjusted == pytest.approx([0.04, 0.006, 1.0, 0.01, 0.6, 1.0])
    # The largest significant lift (+15) and drop (-10); -20 is larger but not significant.
    assert finding.strongest() == ["line 1", "line 3"]
    text = findings.findings_markdown([finding], compact=True)
    assert "line 0" not in text and "4 more comparisons on the page" in text
    assert finding.verdict.startswith("mixed")
    short = findings.Finding("c", "b", ["a", "b"], [_paired(0.1, 0.5), _paired(0.2, 0.5)], 1)
    assert short.strongest() == ["a", "b"]


def test_page_marks_a_failed_dev_gate_and_lists_fused_rows(tmp_path):
    root = tmp_path / "sweep"
    gated = _run(root, 0, 1, {"q1", "q2"})
    _run(root, 1, 2, set(QIDS))  # an old record: no dev gate, no fused metrics
    gated["dev_gate"] = {
        "passed": False,
        "metric": "dev ndcg@10, mean over query types",
        "reranked": 0.4123,
        "first_stage": 0.4551,
        "per_type": {},
    }
    gated["fusion"] = {"convex": {qt: {"weight": 0.3, "dev": 0.5} for qt in QUERY_TYPES}}
    gated["config"]["rerank"] = {"fusion": "convex"}
    for qt, value in (("vector", 0.75), ("fts", 0.5), ("hybrid", 1.0)):
        gated["metrics"][f"{qt}/fused/hit@5"] = value
    Path(gated["run_dir"], "record.json").write_text(json.dumps(gated))
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(BLOG, docs / "blog_numbers.md")
    page_path = docs / "results.md"
    assert main([str(root), "--out", str(tmp_path / "rep"), "--publish", str(page_path)]) == 0
    page = page_path.read_text()
    blog_table = page.split("## Hit rate beside the blog")[1].split("## Our tables")[0]
    assert "| ce-minilm-1neg-1ep† | 50.0 | 50.0 | 50.0 | `cross-encoder_minilm" in blog_table
    assert "| ce-minilm-1neg-1ep fused | 75.0 | 50.0 | 100.0 | – | – | – | – |" in blog_table
    assert "| ce-minilm-2neg-1ep | 100.0 | 100.0 | 100.0 | – |" in blog_table
    assert "ce-minilm-2neg-1ep fused" not in page
    assert (
        "† dev gate FAILED (ce-minilm-1neg-1ep: dev nDCG@10 0.412 <= first stage 0.455): "
        "the trained reranker did not beat the first stage on dev questions" in blog_table
    )
    ours = page.split("## Our tables with intervals")[1].split("## Latency")[0]
    assert "| ce-minilm-1neg-1ep† | 50.0 | 50.0 | 50.0 |" in ours
    assert "| ce-minilm-1neg-1ep fused | 75.0 | 50.0 | **100.0** |" in ours
    jobs = page.split("## Jobs")[1].split("## Configuration")[0]
    assert "| negatives=1 | completed | 0.5000 | FAILED (dev nDCG@10 0.412 <= first stage" in jobs
    assert "| negatives=2 | completed | 1.0000 | – |" in jobs
    assert "should not be deployed as is" in jobs
    # the findings still compare the trained rerankers (reranked rows) only
    assert "fused" not in page.split("## Findings of the blog, checked")[1].split("## Where")[0]


def test_page_of_old_records_has_no_gate_marks(tmp_path):
    root = tmp_path / "sweep"
    _run(root, 0, 1, {"q1", "q2"})
    page = publish.build_page(root, tmp_path / "docs" / "results.md", blog_path=BLOG)
    assert "†" not in page and "fused" not in page and "FAILED" not in page
    assert "| negatives=1 | completed | 0.5000 | – |" in page


def test_the_page_command_keeps_the_sweep_dir_it_was_run_with(tmp_path: Path) -> None:
    # A grid moved off its experiment's fixed sweep dir must be printed with that dir: the
    # command without it would resume into the other grid's job folders.
    sweep = tmp_path / "cpu_grid_mpnet"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text(
        "hydra:\n  overrides:\n    hydra:\n"
        f"    - hydra.sweep.dir={sweep}\n    - hydra.mode=MULTIRUN\n"
        "    task:\n    - base=mpnet\n    - arch=colbert,ce\n"
    )
    records = [
        Record(sweep_dir=str(sweep), job_num=n, overrides=["base=mpnet", f"arch={a}"])
        for n, a in enumerate(["colbert", "ce"])
    ]
    assert publish.grid_command(records) == (
        f"python -m rerank_sweeps -m base=mpnet arch=colbert,ce hydra.sweep.dir={sweep}"
    )
    # A sweep without its multirun.yaml (started by other means): the overrides alone.
    bare = [Record(sweep_dir=str(tmp_path / "gone"), job_num=0, overrides=["base=mpnet"])]
    assert publish.grid_command(bare) == "python -m rerank_sweeps -m base=mpnet"
