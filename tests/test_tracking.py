"""Results store and W&B mirror: offline runs carry the logged keys; W&B failures lose nothing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from rerank_sweeps import tracking
from rerank_sweeps.config import validate
from rerank_sweeps.tracking import (
    JobInfo,
    RunRecord,
    WandbTracker,
    load_records,
    read_wandb_records,
    wandb_mode,
)
from tests.conftest import compose_config

RESULT = {
    "metrics": {"hybrid/reranked/hit@5": 0.625, "hybrid/baseline/hit@5": 0.5},
    "intervals": {"hybrid/reranked/hit@5": [0.55, 0.7], "hybrid/baseline/hit@5": [0.42, 0.58]},
    "latency": {"cpu/ce/20/p50_ms": 12.5},
    "stage_seconds": {"split": 0.1},
    "cache_hits": ["split"],
}


def _conf(tmp_path: Path, *overrides: str):
    return validate(compose_config(["logger=wandb", f"paths.root={tmp_path}", *overrides]))


def _closed_run_records(run_dir: Path) -> list:
    """The offline run's records once W&B's service has flushed its exit record."""
    files = list(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    deadline = time.time() + 30
    while True:  # finish() returns before the service process has flushed the file
        records = list(read_wandb_records(files[0]))
        if any(kind == "exit" for kind, _ in records) or time.time() > deadline:
            return records
        time.sleep(0.2)


def test_offline_run_holds_config_summary_tables_and_exit_code(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    conf = _conf(tmp_path, "arch=colbert")
    assert wandb_mode(conf) == "offline"  # no API key configured
    job = JobInfo(name="arch=colbert", overrides=["arch=colbert"], group="sweep-1")
    tracker = WandbTracker(conf, {"arch": {"name": "colbert"}, "storage": "***"}, job, tmp_path)
    assert tracker.active
    tracker.log_results(RESULT)
    tracker.finish(exit_code=0)

    records = _closed_run_records(tmp_path)
    run = next(m for kind, m in records if kind == "run")
    assert run.run_group == "sweep-1" and run.display_name == "arch=colbert"
    assert run.job_type == "train-eval" and "arch=colbert" in list(run.tags)
    summary = {}
    for kind, message in records:
        if kind == "summary":
            for item in message.update:
                key = item.key or "/".join(item.nested_key)
                summary[key] = item.value_json
    assert json.loads(summary["hybrid/reranked/hit@5"]) == 0.625
    assert json.loads(summary["latency/cpu/ce/20/p50_ms"]) == 12.5
    assert any(k.startswith("metrics_table") for k in summary)
    assert any(k.startswith("latency_table") for k in summary)
    exit_record = next(m for kind, m in records if kind == "exit")
    assert exit_record.exit_code == 0


def test_failed_run_finishes_with_nonzero_exit_code(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    tracker = WandbTracker(_conf(tmp_path), {}, JobInfo(), tmp_path)
    tracker.finish(exit_code=1)
    exit_record = next(m for kind, m in _closed_run_records(tmp_path) if kind == "exit")
    assert exit_record.exit_code == 1


@pytest.mark.parametrize("where", ["init", "log"])
def test_wandb_failure_warns_once_and_local_results_survive(
    tmp_path: Path, monkeypatch, caplog, where
) -> None:
    import wandb

    def broken(*args, **kwargs):
        raise OSError("no space left on device")

    if where == "init":
        monkeypatch.setattr(wandb, "init", broken)
    conf = _conf(tmp_path)
    record = RunRecord(tmp_path, conf, {}, JobInfo())
    tracker = WandbTracker(conf, {}, JobInfo(), tmp_path)
    if where == "log":
        assert tracker.active
        monkeypatch.setattr(tracker.run, "log", broken)
    tracker.log_results(RESULT)
    tracker.finish(exit_code=0)
    record.complete(**RESULT)
    warnings = [r for r in caplog.records if "W&B" in r.getMessage()]
    assert len(warnings) == 1 and "no space left" in warnings[0].getMessage()
    saved = json.loads((tmp_path / "record.json").read_text())
    assert saved["status"] == "completed" and saved["metrics"] == RESULT["metrics"]


def test_failed_and_killed_runs_are_recorded_as_such(tmp_path: Path) -> None:
    conf = validate(compose_config([f"paths.root={tmp_path}", "logger=none"]))
    failed = RunRecord(tmp_path / "a", conf, {}, JobInfo(name="a"))
    failed.fail(RuntimeError("CUDA out of memory\nwith details"))
    died = RunRecord(tmp_path / "b", conf, {}, JobInfo(name="b"))
    died.data["pid"] = 2**22 + 777  # no such process: as if SIGKILLed
    died.path.write_text(json.dumps(died.data))
    by_name = {r["name"]: r for r in load_records(tmp_path)}
    assert by_name["a"]["status"] == "failed"
    assert by_name["a"]["reason"] == "RuntimeError: CUDA out of memory with details"
    assert by_name["b"]["status"] == "died"
    assert not list(tmp_path.rglob("*.tmp")), "atomic writes leave no temp files"


def test_a_completed_run_of_the_same_config_is_kept_and_anything_else_reruns(
    tmp_path: Path, monkeypatch
) -> None:
    """A resumed sweep (fixed sweep dir, same command) keeps its finished jobs."""
    from rerank_sweeps import pipeline

    calls: list[Path] = []

    def stages(conf, cache, timer, run_dir):  # the stages themselves are tested elsewhere
        calls.append(run_dir)
        return pipeline.RunResult(
            run_dir=run_dir, objective=[0.5], metrics={"hybrid/reranked/hit@5": 0.5}
        )

    monkeypatch.setattr(pipeline, "_run_stages", stages)
    cfg = compose_config(["experiment=tiny", f"paths.root={tmp_path}"])
    run_dir = tmp_path / "sweep" / "0"
    pipeline.run(cfg, run_dir)
    before = json.loads((run_dir / "record.json").read_text())
    again = pipeline.run(cfg, run_dir)
    assert len(calls) == 1  # nothing ran the second time
    assert again.objective == [0.5] and again.metrics == {"hybrid/reranked/hit@5": 0.5}
    assert json.loads((run_dir / "record.json").read_text()) == before

    pipeline.run(compose_config(["experiment=tiny", f"paths.root={tmp_path}", "seed=14"]), run_dir)
    assert len(calls) == 2  # another config in the same dir runs

    failed = json.loads((run_dir / "record.json").read_text()) | {"status": "failed"}
    (run_dir / "record.json").write_text(json.dumps(failed))
    pipeline.run(compose_config(["experiment=tiny", f"paths.root={tmp_path}", "seed=14"]), run_dir)
    assert len(calls) == 3  # a failed job runs again


def test_git_commit_is_read_once_per_process(monkeypatch) -> None:
    """A commit made while a sweep runs is not credited to the jobs the old code runs."""
    first = tracking.git_commit()

    def git_again(*args: object, **kwargs: object) -> None:
        raise AssertionError("git was asked again")

    monkeypatch.setattr(tracking.subprocess, "run", git_again)
    assert tracking.git_commit() == first
