"""The local results store (the source of truth; its W&B mirror is `wandb_mirror`).

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
import subprocess
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from rerank_sweeps.config import RunConfig, UserError, mask_secrets
from rerank_sweeps.records import Record

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


def saved_sweep(sweep_dir: str | Path, key: str) -> Any:
    """`key` of the sweep's `<sweep_dir>/multirun.yaml` (the config Hydra's basic sweeper and
    our Optuna sweeper save before the first job) as plain data, unresolved; None when the
    file or the key is missing (a sweep started by other means)."""
    from omegaconf import OmegaConf

    try:
        node = OmegaConf.select(OmegaConf.load(Path(sweep_dir) / "multirun.yaml"), key)
        return OmegaConf.to_container(node, resolve=False) if node is not None else None
    except Exception:  # noqa: BLE001 - no file, or not a config Hydra wrote
        return None


def swept_settings(params: Any, overrides: list[str]) -> dict[str, str]:
    """What a sweep or a job measures: its sweeper's `params` with the overrides over them,
    key -> value, sorted, without storage, logging and Hydra's own keys. Two commands with
    the same settings start the same jobs, whichever place a grid axis came from."""
    settings = {str(k): str(v) for k, v in dict(params or {}).items()}
    for line in overrides:
        settings[override_key(str(line))] = str(line).partition("=")[2]
    return {k: v for k, v in sorted(settings.items()) if not is_infrastructure(k)}


def sweep_constant_keys(sweep_dir: str | Path) -> set[str] | None:
    """The keys every job of the sweep gets the same value for, or None when unknown.

    A job's own Hydra config holds only its final overrides (constant and swept alike); the
    command line that started the sweep is in `<sweep_dir>/multirun.yaml`, written by Hydra's
    basic sweeper and by our Optuna sweeper before the first job: its plain overrides are the
    constant ones. Everything else a job gets came from the sweeper (grid axes, the
    sweeper's `params`, an Optuna trial's sampled or custom values).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    task = saved_sweep(sweep_dir, "hydra.overrides.task")
    if not isinstance(task, list):
        return None
    try:
        parsed = OverridesParser.create().parse_overrides([str(line) for line in task])
    except Exception:  # noqa: BLE001 - an override this Hydra does not parse
        return None
    return {
        f"{o.key_or_group}@{o.package}" if o.package else o.key_or_group
        for o in parsed
        if not o.is_sweep_override()
    }


def sweep_hydra_overrides(sweep_dir: str | Path) -> list[str]:
    """The `hydra.*` overrides of the command that started the sweep (from its multirun.yaml),
    without `hydra.mode` (which `-m` sets), e.g. `hydra.sweep.dir=...`; [] when unknown."""
    lines = saved_sweep(sweep_dir, "hydra.overrides.hydra")
    if not isinstance(lines, list):
        return []
    return [str(line) for line in lines if not str(line).startswith("hydra.mode=")]


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


class AnotherCommandsRun(UserError):
    """A job dir holds a completed run of another command: the command, not the job, is wrong,
    so a sweep stops at once instead of reporting the old run as its job's."""


def refuse_another_commands_run(run_dir: Path, job: JobInfo) -> None:
    """Raise a one-line `AnotherCommandsRun` when `run_dir` holds a completed run that a command with
    other overrides started (storage and logging overrides and their order aside).

    An experiment's fixed sweep dir makes the same command resume; another grid sent there
    would otherwise overwrite the finished jobs that share its job numbers. The same command
    after a change of defaults still reruns its jobs, as a resume should.
    """
    try:
        data = json.loads((Path(run_dir) / RECORD).read_text())
    except (OSError, ValueError):
        return
    if data.get("status") != "completed":
        return

    before = swept_settings({}, list(data.get("overrides") or []))
    now = swept_settings({}, job.overrides)
    if before != now:
        was, is_ = (
            " ".join(f"{k}={v}" for k, v in d.items()) or "no overrides" for d in (before, now)
        )
        raise AnotherCommandsRun(
            f"{run_dir} holds a completed run of another command ({was}; this job: {is_}): "
            "pass hydra.sweep.dir=<another folder> to keep it, or delete that folder to rerun "
            "there"
        )


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
