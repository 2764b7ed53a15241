"""Results store and W&B mirror: offline runs carry the logged keys; W&B failures lose nothing.

The W&B tests run W&B offline into tmp dirs and read the run back from its `.wandb`
transaction log (wandb_mirror.read_wandb_records): what W&B would upload is what is asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rerank_sweeps import tracking, wandb_mirror
from rerank_sweeps.config import UserError
from rerank_sweeps.tracking import JobInfo, RunRecord, load_records
from rerank_sweeps.validation import validate
from rerank_sweeps.wandb_mirror import WandbTracker, read_wandb_records, wandb_mode
from tests.conftest import REPO, compose_config, write_negatives

RESULT = {
    "metrics": {"hybrid/reranked/hit@5": 0.625, "hybrid/baseline/hit@5": 0.5},
    "intervals": {"hybrid/reranked/hit@5": [0.55, 0.7], "hybrid/baseline/hit@5": [0.42, 0.58]},
    "latency": {"cpu/ce/20/p50_ms": 12.5},
    "stage_seconds": {"split": 0.1},
    "cache_hits": ["split"],
    "cache_misses": ["index", "model"],
    "objective_names": ["hybrid/reranked/hit@5", "dev/ndcg@10"],
    "objective": [0.625, 0.41],
    "dev_gate": {"passed": False, "reranked": 0.41, "first_stage": 0.45},
}


def _conf(tmp_path: Path, *overrides: str):
    return validate(compose_config(["logger=wandb", f"paths.root={tmp_path}", *overrides]))


@pytest.fixture(autouse=True)
def _wandb_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """W&B's own dirs (artifact staging, cache, settings) inside the test's tmp dir."""
    for var in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home" / var.lower()))


def _summary(records: list) -> dict:
    """The run's final summary, decoded (later updates win, as in W&B)."""
    summary = {}
    for kind, message in records:
        if kind == "summary":
            for item in message.update:
                summary[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return summary


def _config(records: list) -> dict:
    """The run's config: what init sent and every later config update."""
    config = {}
    for kind, message in records:
        if kind in ("run", "config"):
            for item in message.config.update if kind == "run" else message.update:
                config[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return config


def _history_keys(records: list) -> set[str]:
    return {
        item.key or "/".join(item.nested_key)
        for kind, m in records
        if kind == "history"
        for item in m.item
    }


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


@pytest.mark.parametrize(("epochs", "job_type"), [(1, "train"), (0, "eval")])
def test_offline_run_holds_config_summary_tables_and_exit_code(
    tmp_path: Path, monkeypatch, epochs: int, job_type: str
) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    conf = _conf(tmp_path, "arch=colbert", f"epochs={epochs}")
    assert wandb_mode(conf) == "offline"  # no API key configured
    job = JobInfo(name="arch=colbert", overrides=["arch=colbert"], group="sweep-1")
    tracker = WandbTracker(conf, {"arch": {"name": "colbert"}, "storage": "***"}, job, tmp_path)
    assert tracker.active
    tracker.log_results(RESULT)
    tracker.finish(exit_code=0)

    records = _closed_run_records(tmp_path)
    run = next(m for kind, m in records if kind == "run")
    assert run.run_group == "sweep-1" and run.display_name == "arch=colbert"
    assert run.job_type == job_type and "arch=colbert" in list(run.tags)
    assert set(_config(records)) - {"_wandb"} == {"arch", "storage"}
    summary = _summary(records)
    assert summary["hybrid/reranked/hit@5"] == 0.625
    assert summary["latency/cpu/ce/20/p50_ms"] == 12.5
    assert summary["objective"] == {"hybrid/reranked/hit@5": 0.625, "dev/ndcg@10": 0.41}
    assert summary["status"] == "completed"
    assert summary["cache_hits"] == ["split"]  # a list, not a comma-joined string
    assert summary["cache/hits"] == 1 and summary["cache/misses"] == 2
    assert summary["dev_gate/passed"] is False
    assert (summary["dev_gate/reranked"], summary["dev_gate/first_stage"]) == (0.41, 0.45)
    assert any(k.startswith("metrics_table") for k in summary)
    assert any(k.startswith("latency_table") for k in summary)
    exit_record = next(m for kind, m in records if kind == "exit")
    assert exit_record.exit_code == 0


def test_no_cache_hits_is_an_empty_list_and_no_objective_names_no_objective() -> None:
    summary = wandb_mirror.results_summary({"metrics": {}, "objective": [0.5]})
    assert summary["cache_hits"] == [] and summary["cache/hits"] == 0
    assert "objective" not in summary  # values without their names would be unreadable


def test_failed_run_finishes_with_nonzero_exit_code(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    tracker = WandbTracker(_conf(tmp_path), {}, JobInfo(), tmp_path)
    tracker.finish(exit_code=1)
    records = _closed_run_records(tmp_path)
    assert next(m for kind, m in records if kind == "exit").exit_code == 1
    assert _summary(records)["status"] == "failed"


@pytest.mark.parametrize("how", ["interrupt", "error", "record_fails_too"])
def test_pipeline_closes_the_wandb_run_however_the_run_ends(
    tmp_path: Path, monkeypatch, how: str
) -> None:
    """Ctrl-C, an error, even a failure to write record.json: the W&B run is finished, with
    exit code 1 and the failure in its summary, and the exception still propagates."""
    from rerank_sweeps import pipeline

    monkeypatch.delenv("WANDB_MODE", raising=False)
    error: BaseException = KeyboardInterrupt() if how == "interrupt" else RuntimeError("boom")

    def stages(conf, cache, timer, run_dir):
        raise error

    monkeypatch.setattr(pipeline, "_run_stages", stages)
    if how == "record_fails_too":

        def broken_fail(self, err, **fields):
            raise OSError("disk full")

        monkeypatch.setattr(tracking.RunRecord, "fail", broken_fail)
    cfg = compose_config(["experiment=tiny", "logger=wandb", f"paths.root={tmp_path}"])
    run_dir = tmp_path / "run"
    with pytest.raises((KeyboardInterrupt, RuntimeError, OSError)):
        pipeline.run(cfg, run_dir)
    records = _closed_run_records(run_dir)
    assert next(m for kind, m in records if kind == "exit").exit_code == 1
    summary = _summary(records)
    assert summary["status"] == "failed"
    expected = "KeyboardInterrupt: interrupted" if how == "interrupt" else "RuntimeError: boom"
    assert summary["reason"] == expected
    if how != "record_fails_too":
        assert json.loads((run_dir / "record.json").read_text())["reason"] == expected


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
    assert wandb.run is None  # closed all the same: the next job's run starts clean
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

    # Another command's job sent to this dir (another grid into a fixed sweep dir) must not
    # overwrite the completed run: one line, and the record stays as it was.
    kept = json.loads((run_dir / "record.json").read_text())
    other = JobInfo(overrides=["seed=15", "paths.root=/elsewhere"])
    monkeypatch.setattr(tracking, "hydra_job_info", lambda experiment=None: other)
    with pytest.raises(
        UserError,
        match=r"holds a completed run of another command \(no "
        r"overrides; this job: seed=15\): pass hydra.sweep.dir=",
    ):
        pipeline.run(
            compose_config(["experiment=tiny", f"paths.root={tmp_path}", "seed=15"]), run_dir
        )
    assert len(calls) == 3 and json.loads((run_dir / "record.json").read_text()) == kept
    # The same command (storage overrides aside) reruns as before.
    same = JobInfo(overrides=["paths.root=/elsewhere"])
    monkeypatch.setattr(tracking, "hydra_job_info", lambda experiment=None: same)
    pipeline.run(compose_config(["experiment=tiny", f"paths.root={tmp_path}", "seed=15"]), run_dir)
    assert len(calls) == 4


def test_git_commit_is_read_once_per_process(monkeypatch) -> None:
    """A commit made while a sweep runs is not credited to the jobs the old code runs."""
    first = tracking.git_commit()

    def git_again(*args: object, **kwargs: object) -> None:
        raise AssertionError("git was asked again")

    monkeypatch.setattr(tracking.subprocess, "run", git_again)
    assert tracking.git_commit() == first


# ----------------------------------------------------------------------------- training curves

TRAINER_KEYS = ("_name_or_path", "per_device_train_batch_size", "project", "bf16", "run_name")


def _toy_rows(nouns: list[str]) -> list:
    """n-tuples a tiny random model can train on for a few steps (learning is not the point)."""
    from rerank_sweeps.data import NTuple

    return [
        NTuple(
            f"what is a {n} like", f"the {n} is red", [f"the {o} is big" for o in nouns if o != n]
        )
        for n in nouns
    ]


def test_training_logs_its_curves_into_our_run_without_touching_its_config(
    tmp_path: Path, monkeypatch, one_torch_thread
) -> None:
    """A real (tiny) training through the cross-encoder trainer, inside our open W&B run: the
    loss, learning rate and dev evaluations arrive as train/*, and the config stays ours."""
    from rerank_sweeps import train
    from rerank_sweeps.cache import Cache
    from rerank_sweeps.pipeline import resolved_config

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    cfg = compose_config(
        [
            "experiment=tiny",
            "logger=wandb",
            f"paths.root={tmp_path}",
            "arch=ce",
            "negatives=1",
            "arch.max_steps=4",
            "arch.batch_size=4",
        ]
    )
    conf = validate(cfg)
    config = resolved_config(cfg)
    tracker = WandbTracker(conf, config, JobInfo(name="tiny"), tmp_path)
    assert tracker.active
    neg = write_negatives(
        tmp_path / "neg", _toy_rows("cat dog cow fish".split()), _toy_rows("red sea sky".split())
    )
    info = json.loads(
        (
            train.model_stage(conf, Cache(conf.paths.cache), neg, neg).path / "reranker.json"
        ).read_text()
    )
    assert info["steps"] >= 2  # it really trained through the trainer
    tracker.finish(exit_code=0)

    records = _closed_run_records(tmp_path)
    logged = _config(records)
    assert set(logged) - {"_wandb"} == set(config)
    assert not [k for k in TRAINER_KEYS if k in logged], sorted(logged)
    assert "WANDB_PROJECT" not in os.environ  # no run was ever opened in project huggingface
    history = _history_keys(records)
    assert {"train/loss", "train/learning_rate", "train/global_step"} <= history
    assert any(k.startswith("train/eval_") for k in history), history  # the dev evaluations
    # One run in all: the trainer opened none of its own (here or in W&B's default dir).
    assert len(list(tmp_path.rglob("offline-run-*"))) == 1


def test_training_without_an_open_run_logs_nowhere(tmp_path: Path, monkeypatch) -> None:
    """The forwarder never opens a run (the HF callback would, in project `huggingface`)."""
    import wandb

    monkeypatch.setattr(wandb, "run", None)  # whatever an earlier test left
    callback = wandb_mirror.train_log_callback()

    class State:
        is_world_process_zero = True
        global_step = 3

    assert callback.on_log(None, State(), "control", logs={"loss": 1.0}) == "control"
    assert wandb.run is None and not list(tmp_path.rglob("offline-run-*"))


# ----------------------------------------------------------------------------- names and groups

APP = """
import json
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig

from rerank_sweeps import tracking


@hydra.main(version_base="1.3", config_path="pkg://rerank_sweeps.conf", config_name="config")
def main(cfg) -> float:
    info = tracking.hydra_job_info(cfg.experiment)
    out = Path(HydraConfig.get().runtime.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "job.json").write_text(json.dumps(info.__dict__))
    return 0.5


if __name__ == "__main__":
    main()
"""


def _sweep_jobs(tmp_path: Path, *overrides: str) -> list[dict]:
    """Run a real Hydra multirun of the project's config whose job only reports its JobInfo."""
    app = tmp_path / "app.py"
    app.write_text(APP)
    root = tmp_path / "root"
    proc = subprocess.run(
        [sys.executable, str(app), "-m", f"paths.root={root}", "logger=wandb", *overrides],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env={**os.environ, "HYDRA_FULL_ERROR": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(p.read_text()) for p in sorted(root.rglob("job.json"))]


def test_grid_job_names_hold_the_swept_values_only(tmp_path: Path) -> None:
    """cpu_grid sweeps base x arch x negatives (hydra.sweeper.params); the command line pins
    arch and negatives and sweeps seed: the names hold base and seed, nothing constant."""
    jobs = _sweep_jobs(tmp_path, "experiment=cpu_grid", "arch=ce", "negatives=1", "seed=3,4")
    names = sorted(j["name"] for j in jobs)
    assert names == [
        "base=minilm,seed=3",
        "base=minilm,seed=4",
        "base=mpnet,seed=3",
        "base=mpnet,seed=4",
    ]
    assert {j["group"] for j in jobs} == {"cpu_grid"}  # the sweep dir's name
    assert all("paths.root=" in " ".join(j["overrides"]) for j in jobs)  # the record keeps all


def test_a_timestamped_sweep_is_grouped_by_its_experiment(tmp_path: Path) -> None:
    jobs = _sweep_jobs(tmp_path, "experiment=tiny", "arch=ce,colbert", "top_k=5")
    assert sorted(j["name"] for j in jobs) == ["arch=ce", "arch=colbert"]
    assert {j["group"] for j in jobs} == {"tiny"}  # not the sweep dir's timestamp
    assert {j["num"] for j in jobs} == {0, 1}


def test_optuna_trial_names_hold_the_sampled_values_and_group_is_the_study(tmp_path: Path) -> None:
    jobs = _sweep_jobs(tmp_path, "experiment=recipe_search", "hydra.sweeper.n_trials=2", "seed=3")
    assert len(jobs) == 2 and {j["group"] for j in jobs} == {"recipe_search"}
    for job in jobs:
        keys = [part.split("=", 1)[0] for part in job["name"].split(",")]
        assert sorted(keys) == sorted(
            ["arch.lr", "negatives", "mining.random_share", "arch.warmup_ratio", "arch.temperature"]
        ), job["name"]


def test_single_run_name_is_the_experiment_and_the_user_overrides() -> None:
    overrides = [
        "experiment=cpu_grid",
        "paths.root=/tmp/x",
        "logger=wandb",
        "logger.mode=offline",
        "arch=ce",
        "+hydra.job.env_set.X=1",
        "seed=14",
    ]
    assert (
        tracking.run_name(overrides, "cpu_grid", None, multirun=False) == "cpu_grid arch=ce,seed=14"
    )
    assert tracking.run_name(["paths.root=/tmp"], "tiny", None, multirun=False) == "tiny"
    # A sweep that varies the experiment keeps it in the names.
    assert (
        tracking.run_name(["experiment=a", "seed=1"], "a", {"seed", "paths.root"}, multirun=True)
        == "experiment=a"
    )


# ----------------------------------------------------------------------------- model artifact


def test_model_artifact_holds_the_card_and_says_what_the_model_is(
    tmp_path: Path, monkeypatch, tiny_models
) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    conf = _conf(tmp_path, "experiment=tiny", "logger=wandb", "arch=ce", "logger.log_model=true")
    tracker = WandbTracker(conf, {}, JobInfo(), tmp_path)
    record = {**RESULT, "run_dir": "runs/x", "git_commit": "abc"}
    tracker.log_model(tiny_models["ce"] / "model", "reranker-ce-tiny_bert", record)
    tracker.finish(exit_code=0)

    artifact = next(m for kind, m in _closed_run_records(tmp_path) if kind == "artifact")
    assert artifact.type == "model" and artifact.name == "reranker-ce-tiny_bert"
    paths = {entry.path for entry in artifact.manifest.contents}
    assert {"README.md", "config.json", "reranker.json"} <= paths, paths
    metadata = json.loads(artifact.metadata)
    assert metadata["arch"] == "ce" and metadata["base"] == "tiny_bert"
    assert metadata["objective"] == {"hybrid/reranked/hit@5": 0.625, "dev/ndcg@10": 0.41}
    assert metadata["dev_gate"]["passed"] is False
    assert metadata["model_id"] and metadata["git_commit"] == "abc"
