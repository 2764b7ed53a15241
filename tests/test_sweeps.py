"""Grid sweeps through the real app: shared cache, eval-only jobs never retrain, failure isolation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def _sweep(
    root: Path, *overrides: str, timeout: int = 900
) -> tuple[subprocess.CompletedProcess[str], list[dict]]:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rerank_sweeps",
            "-m",
            "experiment=tiny",
            "latency.enabled=false",
            f"paths.root={root}",
            *overrides,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
    )
    summaries = sorted((root / "multirun").glob("*/sweep_summary.json"))
    jobs = json.loads(summaries[-1].read_text()) if summaries else []
    return proc, jobs


@pytest.fixture(scope="module")
def grid(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess[str], list[dict]]:
    root = tmp_path_factory.mktemp("grid")
    proc, jobs = _sweep(root, "base=tiny_bert,modernbert", "top_k=5,10")
    return root, proc, jobs


def test_failed_job_is_recorded_and_the_others_complete(grid) -> None:
    _, proc, jobs = grid
    assert proc.returncode == 1, proc.stderr[-2000:]
    by_num = {j["job_num"]: j for j in jobs}
    assert [by_num[i]["status"] for i in range(4)] == ["completed", "completed", "failed", "failed"]
    assert "ModernBERT-base" in by_num[2]["reason"]
    assert "Sweep summary (2 completed, 2 failed)" in proc.stdout


def test_eval_only_settings_never_retrain(grid) -> None:
    _, _, jobs = grid
    first, second = jobs[0], jobs[1]
    assert {"split", "negatives", "model", "untrained", "index"} <= set(second["cache_hits"])
    records = [
        json.loads((Path(j["run_dir"]) / "record.json").read_text()) for j in (first, second)
    ]
    assert "model" in records[0]["cache_misses"] and "model" not in records[1]["cache_misses"]
    assert records[0]["fingerprints"]["model"] == records[1]["fingerprints"]["model"]
    # top_k=5 and top_k=10 rerank the same eval.depth candidates per leg: retrieved once.
    assert records[0]["fingerprints"]["candidates"] == records[1]["fingerprints"]["candidates"]
    assert "candidates" in records[1]["cache_hits"]


def test_grid_through_submitit_local_completes_from_the_warm_cache(grid) -> None:
    root, _, _ = grid
    proc, jobs = _sweep(
        root, "base=tiny_bert", "negatives=1", "top_k=5,10", "hydra/launcher=submitit_local"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [j["status"] for j in jobs] == ["completed", "completed"]
    assert all("model" in j["cache_hits"] for j in jobs)


def test_another_grid_sent_to_a_finished_sweep_dir_is_refused_before_it_writes(grid) -> None:
    from rerank_sweeps.__main__ import preflight

    root, _, _ = grid
    sweep = sorted(p for p in (root / "multirun").iterdir() if p.is_dir())[0]
    saved = (sweep / "multirun.yaml").read_text()
    records = sorted(p.read_text() for p in sweep.glob("*/record.json"))
    proc = subprocess.run(
        [sys.executable, "-m", "rerank_sweeps", "-m", "experiment=tiny",
         "latency.enabled=false", f"paths.root={root}", "base=tiny_bert", "top_k=7",
         f"hydra.sweep.dir={sweep}"],
        capture_output=True, text=True, timeout=300, env=ENV,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {sweep} holds completed jobs of another command (base=tiny_bert,modernbert "
        "experiment=tiny latency.enabled=false top_k=5,10): pass hydra.sweep.dir=<another "
        "folder> for this one, or delete that folder to rerun there"
    ]
    # Nothing of the finished sweep changed: not Hydra's multirun.yaml, not a job's record.
    assert (sweep / "multirun.yaml").read_text() == saved
    assert sorted(p.read_text() for p in sweep.glob("*/record.json")) == records
    # The same command, its overrides in another order and with a storage override, resumes.
    same = ["top_k=5,10", "base=tiny_bert,modernbert", "latency.enabled=false", "experiment=tiny"]
    assert preflight(["-m", *same, f"paths.root={root}", f"hydra.sweep.dir={sweep}"]) is None


def _attempt(root: Path, num: int, status: str, started: str, overrides: list[str]) -> None:
    run_dir = root / str(num)
    run_dir.mkdir(parents=True)
    record = {
        "status": status,
        "reason": None if status == "completed" else "killed",
        "job_num": num,
        "name": ",".join(overrides),
        "overrides": overrides,
        "started": started,
        "run_dir": str(run_dir),
        "host": "elsewhere",
        "objective": [0.5] if status == "completed" else [],
    }
    (run_dir / "record.json").write_text(json.dumps(record))


def test_a_killed_attempt_that_was_retried_and_completed_does_not_fail_the_sweep(tmp_path, capsys):
    from omegaconf import OmegaConf

    from rerank_sweeps.sweep import SweepSummary

    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    _attempt(tmp_path, 0, "completed", "2026-11-26T10:00:00", ["lr=0.1"])
    _attempt(tmp_path, 1, "failed", "2026-11-26T10:01:00", ["lr=0.2"])  # killed worker
    _attempt(tmp_path, 2, "completed", "2026-11-26T10:05:00", ["lr=0.2"])  # its retry
    SweepSummary().on_multirun_end(config)  # no SystemExit
    out = capsys.readouterr().out
    assert "2 completed, 1 retried and then completed, 0 failed" in out
    summary = json.loads((tmp_path / "sweep_summary.json").read_text())
    assert [s["status"] for s in summary] == ["completed", "failed, retried", "completed"]

    # A failure after the last success of its job is a failure.
    _attempt(tmp_path, 3, "failed", "2026-11-26T10:09:00", ["lr=0.1"])
    with pytest.raises(SystemExit):
        SweepSummary().on_multirun_end(config)
    assert "1 failed" in capsys.readouterr().out


def test_the_optuna_pruner_stops_training_through_the_dev_metric(tmp_path) -> None:
    """train.py reports each dev evaluation; a pruner that rejects every value prunes trial 0."""
    proc, jobs = _sweep(
        tmp_path,
        "hydra/sweeper=optuna",
        "hydra.sweeper.n_trials=1",
        "hydra.sweeper.direction=maximize",
        "hydra/sweeper/pruner=threshold",
        "hydra.sweeper.pruner.lower=2.0",  # ndcg@10 never reaches 2: prune at the first report
        "arch.lr=interval(1e-5,1e-4)",
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]  # pruning is not a failure
    assert "trial 0 pruned at step" in proc.stderr + proc.stdout
    [job] = jobs  # from the sweep's sweep_summary.json
    assert job["status"] == "pruned" and "TrialPruned" in job["reason"]
    assert "(0 completed, 1 pruned, 0 failed)" in proc.stdout
    # The model stage never finished: nothing was cached as a trained model.
    assert not list((tmp_path / "cache" / "model").glob("*/_COMPLETE.json"))


def test_a_grid_axis_counts_the_same_from_the_sweeper_params_or_the_command(tmp_path) -> None:
    from rerank_sweeps.sweep import refuse_another_sweep
    from rerank_sweeps.tracking import AnotherCommandsRun

    # `make results` starts `-m experiment=cpu_grid` (its axes in hydra.sweeper.params); the
    # results page prints the axes on the command line. Both are the same sweep.
    (tmp_path / "multirun.yaml").write_text(
        "hydra:\n  sweeper:\n    params:\n      arch: ce,colbert\n      negatives: 1,2\n"
        "  overrides:\n    hydra:\n    - hydra.mode=MULTIRUN\n    task:\n"
        "    - experiment=cpu_grid\n    - paths.root=/a\n"
    )
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "record.json").write_text(json.dumps({"status": "completed"}))
    params = {"arch": "ce,colbert", "negatives": "1,2"}
    printed = ["arch=ce,colbert", "negatives=1,2", "experiment=cpu_grid", "paths.root=/b"]
    refuse_another_sweep(tmp_path, params, printed)
    refuse_another_sweep(tmp_path, params, ["experiment=cpu_grid"])
    # An axis changed in either place is another sweep.
    with pytest.raises(AnotherCommandsRun, match=r"\(arch=ce,colbert experiment=cpu_grid"):
        refuse_another_sweep(tmp_path, params | {"negatives": "1,2,3"}, ["experiment=cpu_grid"])
    with pytest.raises(AnotherCommandsRun):
        refuse_another_sweep(tmp_path, params, ["experiment=cpu_grid", "base=mpnet"])
