"""The local results store (source of truth) and its W&B mirror.

Every run writes `record.json` in its run dir: status `running` at the start, then
`completed` or `failed` (with a one-line reason), always atomically, so a crash leaves a
`failed` record and a SIGKILL leaves a `running` one whose pid is gone, never a half file.
W&B mirrors the record; if W&B itself fails the run logs one warning and carries on.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from rerank_sweeps.config import RunConfig, mask_secrets

log = logging.getLogger(__name__)

RECORD = "record.json"
PACKAGES = (
    "rerank_sweeps",
    "torch",
    "transformers",
    "sentence-transformers",
    "pylate",
    "lancedb",
    "optuna",
    "hydra-core",
    "wandb",
    "datasets",
)


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON so that readers see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w") as fh:
        json.dump(payload, fh, indent=2, default=str)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def package_versions() -> dict[str, str]:
    """Versions of the libraries whose behaviour the numbers depend on."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


@functools.cache
def git_commit() -> str | None:
    """The commit of the checkout the package runs from, with `+dirty` for local changes.

    Read once per process: the jobs of a sweep run in the process that loaded the code, so a
    commit made while the sweep runs must not be credited with its later jobs.
    """
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


@dataclass
class JobInfo:
    """Where this run sits in a sweep (from Hydra when it runs under Hydra)."""

    name: str = "run"
    overrides: list[str] = field(default_factory=list)
    num: int | None = None
    sweep_dir: str | None = None
    group: str | None = None


def hydra_job_info() -> JobInfo:
    """The job's overrides, number and sweep (masked), or defaults outside Hydra."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized():
            return JobInfo()
        hc = HydraConfig.get()
    except Exception:  # noqa: BLE001 - outside Hydra every field has a default
        return JobInfo()
    overrides = [str(mask_secrets(o)) for o in hc.overrides.task]
    name = ",".join(o for o in overrides if not o.startswith("hydra")) or "defaults"
    multirun = hc.mode == RunMode.MULTIRUN
    sweep_dir = str(hc.sweep.dir) if multirun else None
    study = None
    sweeper = getattr(hc, "sweeper", None)
    if sweeper is not None and "study_name" in sweeper:
        study = sweeper.get("study_name")
    group = study or (Path(sweep_dir).name if sweep_dir else None)
    num = int(hc.job.num) if multirun else None
    return JobInfo(name=name, overrides=overrides, num=num, sweep_dir=sweep_dir, group=group)


def completed_record(run_dir: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The record in `run_dir` if it is a completed run of exactly `config`, else None."""
    path = Path(run_dir) / RECORD
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if data.get("status") == "completed" and data.get("config") == config:
        return data
    return None


class RunRecord:
    """The run's entry in the local results store (`<run_dir>/record.json`)."""

    def __init__(self, run_dir: Path, conf: RunConfig, config: dict[str, Any], job: JobInfo):
        self.path = Path(run_dir) / RECORD
        self.data: dict[str, Any] = {
            "status": "running",
            "reason": None,
            "name": job.name,
            "overrides": job.overrides,
            "job_num": job.num,
            "sweep_dir": job.sweep_dir,
            "group": job.group,
            "run_dir": str(run_dir),
            "arch": conf.arch.name,
            "base": conf.base.name,
            "data": conf.data.source,
            "negatives": conf.negatives,
            "epochs": conf.epochs,
            "seed": conf.seed,
            "objective_names": list(conf.objective),
            "config": config,
            "versions": package_versions(),
            "git_commit": git_commit(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "ended": None,
        }
        write_json_atomic(self.path, self.data)

    def complete(self, **fields: Any) -> None:
        """Mark the run completed with its results (metrics, latency, cache, timings...)."""
        self.data.update(fields, status="completed", ended=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        write_json_atomic(self.path, self.data)

    def fail(self, err: BaseException, **fields: Any) -> None:
        """Mark the run failed (or pruned) with a one-line reason and whatever it had measured."""
        reason = " ".join(str(err).split()) or type(err).__name__
        if isinstance(err, KeyboardInterrupt):
            reason = "interrupted"
        pruned = type(err).__name__ == "TrialPruned"  # stopped by the Optuna pruner: no failure
        self.data.update(
            fields,
            status="pruned" if pruned else "failed",
            reason=f"{type(err).__name__}: {reason}"[:500],
            ended=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )
        write_json_atomic(self.path, self.data)


def load_records(root: Path) -> list[dict[str, Any]]:
    """Every run record below `root`, with runs whose process died marked `died`."""
    records = []
    for path in sorted(Path(root).rglob(RECORD)):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if record.get("status") == "running" and not _alive(record):
            record["status"] = "died"
            record["reason"] = "the process ended without recording a result"
        records.append(record)
    return records


def _alive(record: dict[str, Any]) -> bool:
    if record.get("host") != socket.gethostname():
        return True  # cannot tell from here: show it as running
    try:
        os.kill(int(record.get("pid", -1)), 0)
    except (OSError, ValueError):
        return False
    return True


# ----------------------------------------------------------------------------- W&B


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
    """One W&B run per job; every call is guarded so W&B can never lose a run."""

    def __init__(self, conf: RunConfig, config: dict[str, Any], job: JobInfo, run_dir: Path):
        self.run: Any = None
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
                job_type="train-eval",
                name=job.name,
                tags=tags,
                config=config,
                dir=str(run_dir),
                mode=wandb_mode(conf),
                reinit="finish_previous",
            )
        except Exception as err:  # noqa: BLE001 - W&B failing must not fail the run
            self._warn("init", err)

    @property
    def active(self) -> bool:
        """Whether a W&B run is open."""
        return self.run is not None

    def _warn(self, what: str, err: BaseException) -> None:
        log.warning("W&B %s failed (%s); the run continues with local results only", what, err)
        self.run = None

    def log_results(self, record: dict[str, Any]) -> None:
        """Summary metrics (with define_metric), metric and latency tables."""
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
            for key, value in sorted(metrics.items()):
                query_type, system, metric_at_k = key.split("/", 2)
                metric, _, k = metric_at_k.partition("@")
                low, high = intervals.get(key, [None, None])
                rows.append([query_type, system, metric, int(k) if k else None, value, low, high])
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
            summary = {**metrics, **{f"latency/{k}": v for k, v in latency.items()}}
            summary.update(
                {f"stage_seconds/{k}": v for k, v in record.get("stage_seconds", {}).items()}
            )
            summary["cache_hits"] = ",".join(sorted(record.get("cache_hits", [])))
            dev_gate = record.get("dev_gate")
            if dev_gate:
                summary["dev_gate/passed"] = dev_gate["passed"]
                summary["dev_gate/reranked"] = dev_gate["reranked"]
                summary["dev_gate/first_stage"] = dev_gate["first_stage"]
            for key, value in summary.items():
                self.run.summary[key] = value
        except Exception as err:  # noqa: BLE001
            self._warn("log", err)

    def log_model(self, model_dir: Path, name: str) -> None:
        """Upload the model directory as an artifact (when configured)."""
        if self.run is None:
            return
        try:
            import wandb

            artifact = wandb.Artifact(name=name, type="model")
            artifact.add_dir(str(model_dir))
            self.run.log_artifact(artifact)
        except Exception as err:  # noqa: BLE001
            self._warn("artifact", err)

    def finish(self, exit_code: int) -> None:
        """Close the W&B run; a failed run is closed with a non-zero exit code."""
        if self.run is None:
            return
        try:
            self.run.finish(exit_code=exit_code)
        except Exception as err:  # noqa: BLE001
            self._warn("finish", err)
        self.run = None


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
