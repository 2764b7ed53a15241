"""The W&B mirror of the local results store: one W&B run per job (offline unless an API key
is configured), the training curves forwarded into it, its summary and the model artifact.
Every call is guarded: if W&B itself fails the run logs one warning and carries on.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rerank_sweeps.config import RunConfig
from rerank_sweeps.records import MetricKey
from rerank_sweeps.tracking import JobInfo, failure_status

log = logging.getLogger(__name__)


def wandb_mode(conf: RunConfig) -> str:
    """offline unless an API key is configured (env or netrc), or what the config says."""
    if conf.logger.mode != "auto":
        return conf.logger.mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    netrc = Path.home() / ".netrc"
    if netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore"):
        return "online"
    return "offline"


class WandbTracker:
    """One W&B run per job; every call is guarded so W&B can never lose a run.

    The run's config is our resolved config only: the trainers do not report to W&B
    themselves (their WandbCallback would merge ~145 TrainingArguments and the model config
    into it, and open a run in project `huggingface` when none is open); their curves reach
    this run through `train_log_callback`.
    """

    def __init__(self, conf: RunConfig, config: dict[str, Any], job: JobInfo, run_dir: Path):
        self.run: Any = None
        self._open: Any = None  # the run to finish, even after a failure stopped logging to it
        self.conf = conf
        self.enabled = conf.logger.name == "wandb" and wandb_mode(conf) != "disabled"
        if not self.enabled:
            return
        try:
            import wandb

            tags = sorted(
                {
                    *conf.logger.tags,
                    f"arch={conf.arch.name}",
                    f"base={conf.base.name}",
                    f"data={conf.data.source}",
                }
            )
            self.run = wandb.init(
                project=conf.logger.project,
                entity=conf.logger.entity,
                group=conf.logger.group or job.group,
                # epochs=0 evaluates the base model as it is: nothing is trained.
                job_type="train" if conf.epochs > 0 else "eval",
                name=job.name,
                tags=tags,
                config=config,
                dir=str(run_dir),
                mode=wandb_mode(conf),
                reinit="finish_previous",
            )
            self._open = self.run
        except Exception as err:  # noqa: BLE001 - W&B failing must not fail the run
            self._warn("init", err)

    @property
    def active(self) -> bool:
        """Whether a W&B run is open."""
        return self.run is not None

    def _warn(self, what: str, err: BaseException) -> None:
        # Nothing more is logged; finish() still closes the run (left open, it would take the
        # next job's training curves in a sweep process).
        log.warning("W&B %s failed (%s); the run continues with local results only", what, err)
        self.run = None

    def log_results(self, record: dict[str, Any]) -> None:
        """Summary metrics (with define_metric), objective, dev gate, metric and latency tables."""
        if self.run is None:
            return
        try:
            import wandb

            metrics: dict[str, float] = record.get("metrics", {})
            latency: dict[str, float] = record.get("latency", {})
            for key in metrics:
                self.run.define_metric(key, summary="last")
            rows = []
            intervals = record.get("intervals", {})
            for name, value in sorted(metrics.items()):
                key = MetricKey.parse(name)
                low, high = intervals.get(name, [None, None])
                rows.append([key.query_type, key.system, key.metric, key.k, value, low, high])
            columns = ["query_type", "system", "metric", "k", "value", "ci_low", "ci_high"]
            self.run.log({"metrics_table": wandb.Table(columns=columns, data=rows)})
            if latency:
                lat_rows = [[*key.rsplit("/", 1), value] for key, value in sorted(latency.items())]
                self.run.log(
                    {
                        "latency_table": wandb.Table(
                            columns=["measurement", "stat", "value"], data=lat_rows
                        )
                    }
                )
            for key, value in results_summary(record).items():
                self.run.summary[key] = value
        except Exception as err:  # noqa: BLE001
            self._warn("log", err)

    def log_model(self, model_dir: Path, name: str, record: dict[str, Any] | None = None) -> None:
        """Upload the model directory (weights, tokenizer, model card) as a model artifact.

        Its metadata says what the model is and how it scored (arch, base, data, objective,
        dev gate), from `record` and the `reranker.json` beside `model_dir`, which is added too.
        """
        if self.run is None:
            return
        try:
            import wandb

            model_dir = Path(model_dir)
            if not (model_dir / "README.md").is_file():
                log.warning("%s has no model card (README.md): uploaded without one", model_dir)
            info_file = model_dir.parent / "reranker.json"
            info = json.loads(info_file.read_text()) if info_file.is_file() else {}
            metadata = model_metadata(self.conf, info, record or {})
            artifact = wandb.Artifact(
                name=name,
                type="model",
                description=f"{self.conf.arch.name} reranker from {self.conf.base.name}",
                metadata=metadata,
            )
            # The model dir is a finished cache artifact that never changes: `immutable` spares
            # W&B a staging copy of the weights.
            artifact.add_dir(str(model_dir), policy="immutable")
            if info_file.is_file():
                artifact.add_file(str(info_file), policy="immutable")
            self.run.log_artifact(artifact)
        except Exception as err:  # noqa: BLE001
            self._warn("artifact", err)

    def finish(self, exit_code: int, error: BaseException | None = None) -> None:
        """Close the W&B run with its status in the summary; a failed run (`error`, or a
        non-zero exit code) is closed with a non-zero exit code and its one-line reason."""
        run, self.run, self._open = self._open, None, None
        if run is None:
            return
        failed = error is not None or exit_code != 0
        try:
            if error is not None:
                status, reason = failure_status(error)
                run.summary["status"] = status
                run.summary["reason"] = reason
            else:
                run.summary["status"] = "failed" if failed else "completed"
        except Exception as err:  # noqa: BLE001 - the run must still be closed below
            log.warning("W&B summary failed (%s)", err)
        try:
            run.finish(exit_code=exit_code or int(failed))
        except Exception as err:  # noqa: BLE001
            log.warning("W&B finish failed (%s); the local results are complete", err)


def results_summary(record: dict[str, Any]) -> dict[str, Any]:
    """The W&B summary of a completed run's record: metrics, latency, stage seconds, the
    objective (name -> value), the dev gate and the cache hits (a list and counts).

    Set explicitly rather than left to W&B's last-logged values: these are what the runs table
    and the parallel-coordinates plots compare runs on.
    """
    metrics: dict[str, float] = record.get("metrics", {})
    latency: dict[str, float] = record.get("latency", {})
    summary: dict[str, Any] = {**metrics, **{f"latency/{k}": v for k, v in latency.items()}}
    summary.update({f"stage_seconds/{k}": v for k, v in record.get("stage_seconds", {}).items()})
    names = record.get("objective_names", [])
    values = record.get("objective", [])
    if names and len(names) == len(values):
        summary["objective"] = {str(n): float(v) for n, v in zip(names, values, strict=True)}
    dev = record.get("dev") or {}  # the trained model's dev metrics (what dev/* objectives read)
    summary.update({f"dev/{k}": v for k, v in dev.items() if isinstance(v, int | float)})
    hits, misses = record.get("cache_hits") or [], record.get("cache_misses") or []
    summary["cache_hits"] = sorted(hits)
    summary["cache/hits"] = len(hits)
    summary["cache/misses"] = len(misses)
    dev_gate = record.get("dev_gate")
    if dev_gate:
        summary["dev_gate/passed"] = bool(dev_gate["passed"])
        summary["dev_gate/reranked"] = dev_gate["reranked"]
        summary["dev_gate/first_stage"] = dev_gate["first_stage"]
    return summary


def model_metadata(conf: RunConfig, info: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """What a model artifact says about itself: what it is, what it was trained on, its scores."""
    names = record.get("objective_names", list(conf.objective))
    values = record.get("objective", [])
    metadata: dict[str, Any] = {
        "arch": conf.arch.name,
        "base": conf.base.name,
        "model_id": info.get("model_id"),
        "init": conf.init,
        "loss": info.get("loss"),
        "data": conf.data.source,
        "negatives": conf.negatives,
        "epochs": conf.epochs,
        "steps": info.get("steps"),
        "seed": conf.seed,
        "objective": dict(zip(names, values, strict=False)) if values else {},
        "dev": info.get("dev", {}),
        "dev_gate": record.get("dev_gate", info.get("dev_gate")),
        "run_dir": record.get("run_dir"),
        "git_commit": record.get("git_commit"),
    }
    return {k: v for k, v in metadata.items() if v is not None}


def train_log_callback() -> Any:
    """A transformers TrainerCallback that logs the trainer's curves (loss, learning rate, dev
    evaluations...) into the open W&B run as `train/<name>`, against `train/global_step`.

    It never opens a run nor touches the run's config, and does nothing without an open run
    (W&B disabled, or training outside `pipeline.run`). A failure warns once and stops it.
    """
    from transformers import TrainerCallback

    class ForwardTrainLogs(TrainerCallback):
        """Forward `on_log` to `wandb.run` (the tracker's run)."""

        def __init__(self) -> None:
            self.defined_for: str | None = None
            self.broken = False

        def on_log(
            self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any
        ) -> Any:
            """Log the trainer's numbers (not its strings) under `train/`, with the step."""
            wandb = sys.modules.get("wandb")  # imported by the tracker when it opened a run
            run = getattr(wandb, "run", None)
            if self.broken or run is None or not logs or not state.is_world_process_zero:
                return control
            scalars = {
                f"train/{key}": value
                for key, value in logs.items()
                if isinstance(value, int | float) and not isinstance(value, bool)
            }
            try:
                if self.defined_for != run.id:  # once per run: a sweep process opens many
                    run.define_metric("train/global_step")
                    run.define_metric("train/*", step_metric="train/global_step")
                    self.defined_for = run.id
                run.log({**scalars, "train/global_step": state.global_step})
            except Exception as err:  # noqa: BLE001 - W&B failing must not stop training
                self.broken = True
                log.warning("W&B training curves failed (%s); training continues", err)
            return control

    return ForwardTrainLogs()


def read_wandb_records(path: Path) -> Iterator[tuple[str, Any]]:
    """Decode a `.wandb` transaction log with W&B's own protobuf schema.

    The file is a LevelDB-style log (7-byte record headers in 32 KiB blocks) of
    `wandb_internal_pb2.Record` messages; yields (record type, message) pairs.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    block, pos, header = 32768, 7, 7  # the file starts with a 7-byte W&B header
    pending = b""
    while pos + header <= len(data):
        offset_in_block = pos % block
        if block - offset_in_block < header:
            pos += block - offset_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + header])
        chunk = data[pos + header : pos + header + length]
        pos += header + length
        if kind == 0 and length == 0:
            continue
        if kind in (1, 2):  # FULL or FIRST
            pending = chunk
        else:  # MIDDLE or LAST
            pending += chunk
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = pb.Record()
            record.ParseFromString(pending)
            kind_name = record.WhichOneof("record_type")
            if kind_name:
                yield kind_name, getattr(record, kind_name)
            pending = b""
