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
import re
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from rerank_sweeps.config import RunConfig, mask_secrets
from rerank_sweeps.records import MetricKey, Record

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


# Overrides of these roots say where and how a run is stored or logged, never what it
# measures: they stay out of run names (and `paths.root` would put a tmp path in every name).
INFRASTRUCTURE = ("hydra", "paths", "logger")
# Hydra's default sweep dir name (`${now:%Y-%m-%d_%H-%M-%S_%f}`): a useless W&B group.
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}[_T ]\d{2}")


def override_key(line: str) -> str:
    """The key or group an override sets: `+arch.lr=1e-4` -> `arch.lr`, `db@pkg=x` -> `db@pkg`."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_override(line)
    except Exception:  # noqa: BLE001 - e.g. a masked secret: the text before `=` is the key
        return line.split("=", 1)[0].lstrip("+~")
    key = parsed.key_or_group
    return f"{key}@{parsed.package}" if parsed.package else key


def is_infrastructure(key: str) -> bool:
    """Whether an override key is storage / logging / Hydra plumbing (never part of a name)."""
    return re.split(r"[./@]", key.lstrip("+~"), maxsplit=1)[0] in INFRASTRUCTURE


def sweep_constant_keys(sweep_dir: str | Path) -> set[str] | None:
    """The keys every job of the sweep gets the same value for, or None when unknown.

    A job's own Hydra config holds only its final overrides (constant and swept alike); the
    command line that started the sweep is in `<sweep_dir>/multirun.yaml`, written by Hydra's
    basic sweeper and by our Optuna sweeper before the first job: its plain overrides are the
    constant ones. Everything else a job gets came from the sweeper (grid axes, the
    sweeper's `params`, an Optuna trial's sampled or custom values).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    try:
        saved = OmegaConf.load(Path(sweep_dir) / "multirun.yaml")
        task = OmegaConf.to_container(saved.hydra.overrides.task, resolve=False)
        assert isinstance(task, list)
        parsed = OverridesParser.create().parse_overrides([str(line) for line in task])
    except Exception:  # noqa: BLE001 - no file, or a sweep started by other means
        return None
    return {
        f"{o.key_or_group}@{o.package}" if o.package else o.key_or_group
        for o in parsed
        if not o.is_sweep_override()
    }


def run_name(
    overrides: list[str], experiment: str | None, constant: set[str] | None, multirun: bool
) -> str:
    """A run's display name: what distinguishes it from its neighbours.

    In a sweep, the job's swept values (its overrides minus the sweep's constant ones and the
    infrastructure ones: the group names the sweep); in a single run, the experiment and the
    user's overrides. `constant=None` (unknown) shows every non-infrastructure override.
    """
    # The experiment is the single run's prefix, and a sweep's group: unless the sweep varies it.
    dropped = constant if multirun and constant is not None else {"experiment"}
    shown = [
        o for o in overrides if not is_infrastructure(k := override_key(o)) and k not in dropped
    ]
    if multirun:
        return ",".join(shown) or experiment or "defaults"
    return " ".join(part for part in (experiment, ",".join(shown)) if part) or "defaults"


def sweep_group(sweep_dir: str, study: str | None, experiment: str | None) -> str:
    """The W&B group of a sweep's jobs: the Optuna study, else the sweep dir's name unless it is
    Hydra's timestamp default (then the experiment, which names what the sweep studies)."""
    if study:
        return study
    name = Path(sweep_dir).name
    if _TIMESTAMP.match(name) and experiment:
        return experiment
    return name


def hydra_job_info(experiment: str | None = None) -> JobInfo:
    """The job's overrides (masked), display name, number and sweep group under Hydra.

    Outside Hydra (tests, library use) the name is `experiment` and there is no group.
    """
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized():
            return JobInfo(name=experiment or "run")
        hc = HydraConfig.get()
    except Exception:  # noqa: BLE001 - outside Hydra every field has a default
        return JobInfo(name=experiment or "run")
    overrides = [str(mask_secrets(o)) for o in hc.overrides.task]
    multirun = hc.mode == RunMode.MULTIRUN
    if not multirun:
        return JobInfo(
            name=run_name(overrides, experiment, None, multirun=False), overrides=overrides
        )
    sweep_dir = str(hc.sweep.dir)
    sweeper = getattr(hc, "sweeper", None)
    study = sweeper.get("study_name") if sweeper is not None and "study_name" in sweeper else None
    return JobInfo(
        name=run_name(overrides, experiment, sweep_constant_keys(sweep_dir), multirun=True),
        overrides=overrides,
        num=int(hc.job.num),
        sweep_dir=sweep_dir,
        group=sweep_group(sweep_dir, study, experiment),
    )


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
        status, reason = failure_status(err)
        self.data.update(
            fields, status=status, reason=reason, ended=time.strftime("%Y-%m-%dT%H:%M:%S%z")
        )
        write_json_atomic(self.path, self.data)


def failure_status(err: BaseException) -> tuple[str, str]:
    """(status, one-line reason) of a run that ended with `err`: `pruned` when the Optuna
    pruner stopped it (no failure), else `failed`; Ctrl-C reads as `interrupted`."""
    reason = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, KeyboardInterrupt):
        reason = "interrupted"
    pruned = type(err).__name__ == "TrialPruned"
    return ("pruned" if pruned else "failed"), f"{type(err).__name__}: {reason}"[:500]


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


def read_records(root: Path) -> list[Record]:
    """`load_records` read into typed records (what the reports and pages work on)."""
    return [Record.from_json(data) for data in load_records(root)]


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
