"""One run as data flowing through cached stages.

split -> negatives -> model (trained, and the untrained baseline) ; split -> index ->
candidates ; (model, candidates) -> metrics -> latency ; everything -> results store.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rerank_sweeps.cache import Artifact, Cache
from rerank_sweeps.config import RunConfig, mask_secrets
from rerank_sweeps.validation import validate

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What a run hands back to Hydra and to tests."""

    run_dir: Path
    objective: list[float]
    metrics: dict[str, float] = field(default_factory=dict)
    intervals: dict[str, list[float]] = field(default_factory=dict)
    paired: dict[str, Any] = field(default_factory=dict)
    latency: dict[str, float] = field(default_factory=dict)
    cache_hits: set[str] = field(default_factory=set)
    cache_misses: set[str] = field(default_factory=set)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    artifacts: dict[str, Artifact] = field(default_factory=dict)
    dev: dict[str, Any] = field(default_factory=dict)  # the trained model's dev fields


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(
                self.seconds.get(name, 0.0) + time.perf_counter() - started, 3
            )


def default_run_dir(conf: RunConfig) -> Path:
    """Hydra's run/job dir when running under Hydra, else a fresh dir under paths.runs."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return Path(HydraConfig.get().runtime.output_dir)
    except ImportError:  # pragma: no cover - hydra is a dependency
        pass
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    return conf.paths.runs / f"{stamp}_{os.getpid()}"


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config without Hydra's own node, secrets masked: safe to save and log."""
    raw = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(raw, dict)
    raw.pop("hydra", None)
    masked = mask_secrets(raw)
    assert isinstance(masked, dict)
    return masked


def run(cfg: DictConfig, run_dir: Path | None = None, conf: RunConfig | None = None) -> RunResult:
    """Run every stage for one composed config, record it, and return its objective.

    `conf` is `validate(cfg)` when the caller has it already (the Hydra job does).
    """
    from rerank_sweeps import tracking, wandb_mirror

    conf = conf if conf is not None else validate(cfg)
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(conf)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = resolved_config(cfg)
    finished = tracking.completed_record(run_dir, config)
    if finished is not None:
        # A resumed sweep (a fixed hydra.sweep.dir, the same command again) keeps the jobs
        # that finished instead of measuring them again; delete record.json to rerun one.
        log.info("%s already holds a completed run of this config: kept as it is", run_dir)
        return RunResult(
            run_dir=run_dir,
            objective=[float(v) for v in finished.get("objective", [])],
            metrics=finished.get("metrics", {}),
            intervals=finished.get("intervals", {}),
            paired=finished.get("paired", {}),
            latency=finished.get("latency", {}),
            stage_seconds=finished.get("stage_seconds", {}),
        )
    job = tracking.hydra_job_info(conf.experiment)
    tracking.refuse_another_commands_run(run_dir, job)
    (run_dir / "config.json").write_text(json.dumps(config, indent=2))
    record = tracking.RunRecord(run_dir, conf, config, job)
    tracker = wandb_mirror.WandbTracker(conf, config, job, run_dir)
    cache = Cache(conf.paths.cache)
    timer = _Timer()
    try:
        result = _run_stages(conf, cache, timer, run_dir)
    except BaseException as err:
        try:
            record.fail(err, **_progress(cache, timer))
        finally:  # the W&B run is closed even when recording the failure fails
            tracker.finish(exit_code=1, error=err)
        raise
    fields = {
        **_progress(cache, timer),
        "objective": result.objective,
        "metrics": result.metrics,
        "intervals": result.intervals,
        "paired": result.paired,
        "latency": result.latency,
        "fingerprints": {name: art.key for name, art in result.artifacts.items()},
        **result.dev,
    }
    if "model" in result.artifacts:
        fields["model_dir"] = str(link_model(run_dir, result.artifacts["model"].path / "model"))
        fields["model_cache_dir"] = str(result.artifacts["model"].path / "model")
    record.complete(**fields)
    tracker.log_results(record.data)
    if conf.logger.log_model and "model" in result.artifacts:
        tracker.log_model(
            result.artifacts["model"].path / "model",
            f"reranker-{conf.arch.name}-{conf.base.name}",
            record.data,
        )
    tracker.finish(exit_code=0)
    from rerank_sweeps.archs import get_arch
    from rerank_sweeps.console import closing_summary

    print(closing_summary(record.data, conf, get_arch(conf.arch.name).loader), flush=True)
    return result


def link_model(run_dir: Path, model_dir: Path) -> Path:
    """`<run_dir>/model`: the trained reranker as a normal sentence-transformers / PyLate
    directory (with its model card), linked to the cached artifact rather than copied, since a
    sweep's runs often share one model. Where links are not allowed it is copied."""
    import shutil

    link = run_dir / "model"
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.is_dir():
        shutil.rmtree(link)
    try:
        link.symlink_to(model_dir.resolve(), target_is_directory=True)
    except OSError:
        shutil.copytree(model_dir, link)
    return link


def _progress(cache: Cache, timer: _Timer) -> dict[str, Any]:
    return {
        "cache_hits": sorted(cache.hits),
        "cache_misses": sorted(cache.misses),
        "cache_events": [
            {"stage": s, "key": k, "hit": h, "seconds": round(t, 3)} for s, k, h, t in cache.events
        ],
        "stage_seconds": dict(timer.seconds),
    }


def _run_stages(conf: RunConfig, cache: Cache, timer: _Timer, run_dir: Path) -> RunResult:
    arts: dict[str, Artifact] = {}
    from rerank_sweeps import data

    with timer("split"):
        arts["split"] = data.split_stage(conf, cache)
    results: dict[str, Any] = {}
    latency: dict[str, float] = {}
    dev_fields: dict[str, Any] = {}
    stages_present = _available_stages()
    if {"index", "evaluate"} <= stages_present:
        from rerank_sweeps import index

        with timer("index"):
            arts["index"] = index.index_stage(conf, cache, arts["split"])
    with timer("negatives"):
        arts["negatives"] = data.negatives_stage(conf, cache, arts["split"], arts.get("index"))
    dev = None
    if "index" in arts:
        from rerank_sweeps import devsignal

        with timer("dev"):
            dev = devsignal.dev_stages(conf, cache, arts["split"], arts["index"])
        if dev is not None:
            arts |= {"devsplit": dev.split, "devindex": dev.index, "devcandidates": dev.candidates}
    if "train" in stages_present:
        from rerank_sweeps import train

        with timer("model"):
            arts["model"] = train.model_stage(conf, cache, arts["split"], arts["negatives"], dev)
            if conf.eval.untrained and conf.epochs > 0:
                arts["untrained"] = train.untrained_stage(conf, cache)
        dev_fields = _dev_fields(arts["model"])
        _warn_if_gate_failed(conf, dev_fields.get("dev_gate"))
    if {"index", "evaluate"} <= stages_present and "model" in arts:
        from rerank_sweeps import evaluate

        with timer("candidates"):
            arts["candidates"] = evaluate.candidates_stage(
                conf, cache, arts["split"], arts["index"]
            )
        with timer("evaluate"):
            systems = {"reranked": arts["model"]}
            if "untrained" in arts:
                systems["untrained"] = arts["untrained"]
            evaluation = evaluate.evaluate(
                conf, cache, arts["split"], arts["candidates"], systems, run_dir
            )
            results = evaluation.results
        if conf.latency.enabled and "latency" in stages_present:
            from rerank_sweeps import latency as latency_mod

            with timer("latency"):
                # The evaluation's scores of this model: reused for the latency system with
                # the same numerics instead of being computed again.
                latency = latency_mod.latency_stage(
                    conf,
                    arts["split"],
                    arts["index"],
                    arts["candidates"],
                    arts["model"],
                    run_dir,
                    evaluation.scores["reranked"],
                )

    metrics = results.get("metrics", {})
    dev_metrics = dev_fields.get("dev", {})
    objective = [_objective_value(name, metrics, latency, dev_metrics) for name in conf.objective]
    _log_cache(cache)
    return RunResult(
        run_dir=run_dir,
        objective=objective,
        metrics=metrics,
        intervals=results.get("intervals", {}),
        paired=results.get("paired", {}),
        latency=latency,
        cache_hits=cache.hits,
        cache_misses=cache.misses,
        stage_seconds=timer.seconds,
        artifacts=arts,
        dev=dev_fields,
    )


def _dev_fields(model_art: Artifact) -> dict[str, Any]:
    """What the trained model's dev evaluation says, for record.json: the dev gate, the dev
    metrics beside the first stage's, and the fusion weights (all measured on dev only)."""
    from rerank_sweeps.archs import read_reranker_meta

    meta = read_reranker_meta(model_art.path)
    keys = ("dev_gate", "dev", "dev_first_stage", "fusion", "dev_protocol", "dev_history")
    return {key: meta[key] for key in keys if key in meta}


def _warn_if_gate_failed(conf: RunConfig, dev_gate: dict[str, Any] | None) -> None:
    from rerank_sweeps.devsignal import gate_message

    if conf.dev.gate and dev_gate and not dev_gate["passed"]:
        log.warning("%s", gate_message(dev_gate))


def _available_stages() -> set[str]:
    import importlib.util

    names = ("train", "index", "evaluate", "latency")
    return {n for n in names if importlib.util.find_spec(f"rerank_sweeps.{n}") is not None}


def _objective_value(
    name: str, metrics: dict[str, float], latency: dict[str, float], dev: dict[str, float]
) -> float:
    if name.startswith("dev/") and name.removeprefix("dev/") in dev:
        return float(dev[name.removeprefix("dev/")])
    if name in metrics:
        return float(metrics[name])
    if name in latency:
        return float(latency[name])
    # Stages not yet computed (e.g. latency switched off) give NaN, which Optuna records as a
    # failed value rather than a silently wrong number.
    return float("nan")


def _log_cache(cache: Cache) -> None:
    # Each stage already said "cache hit/miss" as it ran: one line of totals here.
    hits = sum(1 for _, _, hit, _ in cache.events if hit)
    log.info("stages: %d built, %d from the cache", len(cache.events) - hits, hits)
