"""The sweep loop: one resumable Optuna study whose trials are Hydra jobs.

Each round (under the study lock): fail the trials of dead workers, count the finished
trials, and ask for as many new ones as `n_jobs` and the study's remaining budget allow.
Then launch them (Hydra job number = trial number, so run dirs never collide across
resumes) and tell Optuna what each job returned.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import yaml
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict, read_write
from optuna.distributions import BaseDistribution, distribution_to_json
from optuna.trial import FrozenTrial, TrialState

from hydra_plugins.rerank_sweeps_optuna import _context
from hydra_plugins.rerank_sweeps_optuna._space import (
    format_override,
    grid_values,
    parse_search_space,
)
from hydra_plugins.rerank_sweeps_optuna._workers import (
    Heartbeat,
    RetryLostTrial,
    StudyLock,
    fail_lost_trial,
    local_worker_is_dead,
    worker_info,
)
from rerank_sweeps.config import ConfigError, UserError, mask_secrets

log = logging.getLogger(__name__)

# Samplers whose seed must be the same in every process: the grid order and the QMC
# sequence are shared state across workers. Every other sampler gets a seed per trial.
_SHARED_SEED_SAMPLERS = ("optuna.samplers.GridSampler", "optuna.samplers.QMCSampler")
_GRID_SAMPLER = "optuna.samplers.GridSampler"
RESULTS_FILE = "optuna_results.yaml"


class JobExit(RuntimeError):
    """A job called sys.exit(): recorded as a failed trial instead of ending the sweep."""


class _ExitAsError:
    """Wraps the task function so `SystemExit` in one job fails that trial, not the sweep.

    A class rather than a closure so that launchers which pickle the task (submitit) can.
    """

    def __init__(self, task_function: TaskFunction) -> None:
        self.task_function = task_function

    def __call__(self, cfg: DictConfig) -> Any:
        try:
            return self.task_function(cfg)
        except SystemExit as err:
            # An app that turns its errors into exit codes (`raise SystemExit(2) from None`)
            # still keeps the error as the exit's context: name it in the trial's error.
            cause = err.__cause__ or err.__context__
            why = f" after {type(cause).__name__}: {cause}" if cause is not None else ""
            raise JobExit(f"the job exited with code {err.code}{why}") from err


def derive_seed(seed: int | None, index: int) -> int | None:
    """The sampler seed for the `index`-th trial of a study seeded with `seed`.

    A resumed study (or a second worker) must not replay the first run's proposals, which a
    sampler re-created with the same seed would do; a seed per trial index also makes a
    resumed study propose what an uninterrupted one would have.
    """
    if seed is None:
        return None
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def consecutive_runs(numbers: Sequence[int]) -> list[list[int]]:
    """Split sorted trial numbers into runs of consecutive numbers: [3,4,7] -> [[3,4],[7]].

    Hydra's launchers number the jobs of one launch consecutively from `initial_job_idx`;
    each run becomes one launch so that job number = trial number.
    """
    runs: list[list[int]] = []
    for number in sorted(numbers):
        if runs and number == runs[-1][-1] + 1:
            runs[-1].append(number)
        else:
            runs.append([number])
    return runs


def is_job_failure(trial: FrozenTrial) -> bool:
    """A trial that failed because its job raised or returned no usable value."""
    return trial.state == TrialState.FAIL and "error" in trial.user_attrs


def counts_as_finished(trial: FrozenTrial) -> bool:
    """Trials that use up the `n_trials` budget; lost trials (dead workers) are retried instead."""
    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) or is_job_failure(trial)


def storage_url_with_driver(url: str) -> str:
    """`url`, with psycopg2 named as the driver of a plain postgresql:// URL when needed.

    SQLAlchemy 2.1 maps postgresql:// to psycopg 3; our dependencies install psycopg2
    (psycopg2-binary), so a plain URL would fail with "No module named 'psycopg'".
    """
    import importlib.util

    if not url.startswith("postgresql://") and not url.startswith("postgres://"):
        return url
    if importlib.util.find_spec("psycopg") is not None:
        return url
    if importlib.util.find_spec("psycopg2") is None:
        return url
    return "postgresql+psycopg2://" + url.split("://", 1)[1]


def _directions(direction: Any) -> list[str]:
    raw = list(direction) if isinstance(direction, (list, tuple, ListConfig)) else [direction]
    out = [str(d).lower() for d in raw]
    for d in out:
        if d not in ("minimize", "maximize"):
            raise ConfigError(
                f"hydra.sweeper.direction={direction!r} is not allowed: "
                "minimize, maximize or a list of them"
            )
    if not out:
        raise ConfigError("hydra.sweeper.direction is empty: minimize, maximize or a list")
    return out


def objective_values(value: Any, n_objectives: int) -> tuple[list[float] | None, str | None]:
    """The job's return value as objective values, or None and why it is unusable."""
    items = list(value) if isinstance(value, (list, tuple, ListConfig)) else [value]
    if value is None:
        return None, "the job returned None (it must return the objective)"
    if len(items) != n_objectives:
        return None, f"the job returned {len(items)} values for {n_objectives} objectives"
    values = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (Real, np.number)):
            return None, f"the job returned {item!r}, not a number"
        number = float(item)
        if math.isnan(number):
            return None, "the job returned nan"
        values.append(number)
    return values, None


def _fmt_number(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


class OptunaSweeperImpl:
    """The sweeper behind `OptunaSweeper`; settings as in `config.OptunaSweeperConf`."""

    def __init__(
        self,
        sampler: DictConfig,
        pruner: DictConfig | None,
        direction: Any,
        storage: str | None,
        study_name: str | None,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        params: DictConfig | None,
        custom_search_space: str | None,
        heartbeat_interval: int | None,
        grace_period: int | None,
        max_retry: int | None,
        check_local_pids: bool,
        reuse_sweep_dir: bool,
    ) -> None:
        """Keep the settings; nothing touches the storage before `sweep`."""
        self.sampler_cfg = sampler
        self.pruner_cfg = pruner
        self.direction = direction
        self.storage_url = storage
        self.study_name = study_name
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.max_failure_rate = max_failure_rate
        self.params = params
        self.custom_search_space = custom_search_space
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.max_retry = max_retry
        self.check_local_pids = check_local_pids
        self.reuse_sweep_dir = reuse_sweep_dir

        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher: Any = None
        self._space: dict[str, BaseDistribution] = {}
        self._fixed: list[str] = []
        self._hydra_overrides: list[str] = []
        self._grid: dict[str, list[Any]] | None = None
        self._shared_sampler: optuna.samplers.BaseSampler | None = None
        self._extender: Callable[[DictConfig, optuna.Trial], Any] | None = None
        self._retry: RetryLostTrial | None = None
        self._mine: set[int] = set()

    # -- Hydra plugin API -------------------------------------------------------------------

    def setup(
        self,
        *,
        hydra_context: HydraContext,
        task_function: TaskFunction,
        config: DictConfig,
    ) -> None:
        """Instantiate the configured launcher around our wrapped task function."""
        from hydra.core.plugins import Plugins

        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context,
            task_function=_ExitAsError(task_function),
            config=config,
        )

    def sweep(self, arguments: list[str]) -> list[FrozenTrial]:
        """Run the study up to `n_trials` finished trials; returns this run's trials."""
        assert self.config is not None and self.launcher is not None
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        # We run the heartbeat ourselves (the warning assumes only Study.optimize does).
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        self._check_settings()
        directions = _directions(self.direction)
        self._build_search_space(arguments)
        n_trials = self.n_trials
        if self._grid is not None:
            size = math.prod(len(v) for v in self._grid.values())
            if size < n_trials:
                log.info("grid of %d points: n_trials lowered from %d", size, n_trials)
                n_trials = size
        name = self.study_name or self._derived_study_name(directions)
        url = storage_url_with_driver(self.storage_url or self._default_storage(name))
        lock = StudyLock(url, name)
        try:
            with lock:
                study = self._open_study(url, name, directions)
            sweep_dir = self._settle_sweep_dir(study)
            self._save_multirun_config(sweep_dir)
            finished = sum(counts_as_finished(t) for t in study.get_trials(deepcopy=False))
            log.info(
                "study %r in %s: %d of %d trials finished",
                name,
                mask_secrets(url),
                finished,
                n_trials,
            )
            ran, stopped = self._loop(study, lock, n_trials)
        finally:
            lock.close()
        return self._finish(study, url, n_trials, sweep_dir, ran, stopped)

    # -- set-up -----------------------------------------------------------------------------

    def _check_settings(self) -> None:
        if self.n_trials < 1:
            raise ConfigError(f"hydra.sweeper.n_trials={self.n_trials} is not allowed: >= 1")
        if self.n_jobs < 1:
            raise ConfigError(f"hydra.sweeper.n_jobs={self.n_jobs} is not allowed: >= 1")
        if not 0.0 <= self.max_failure_rate <= 1.0:
            raise ConfigError(
                f"hydra.sweeper.max_failure_rate={self.max_failure_rate} is not allowed: in [0, 1]"
            )
        if self.heartbeat_interval is not None and self.heartbeat_interval < 1:
            raise ConfigError(
                f"hydra.sweeper.heartbeat_interval={self.heartbeat_interval} is not allowed: "
                ">= 1 second or null"
            )

    def _build_search_space(self, arguments: list[str]) -> None:
        params = OmegaConf.to_container(self.params) if self.params is not None else {}
        assert isinstance(params, dict)
        lines = [f"{k}={v}" for k, v in params.items()] + list(arguments)
        self._space, self._fixed = parse_search_space(lines)
        if self.custom_search_space:
            try:
                self._extender = get_method(self.custom_search_space)
            except Exception as err:  # Hydra wraps import errors in several types
                raise ConfigError(
                    f"hydra.sweeper.custom_search_space={self.custom_search_space!r}: {err}"
                ) from None
        if self.sampler_cfg.get("_target_") == _GRID_SAMPLER:
            if self._extender is not None:
                raise ConfigError("the grid sampler cannot be combined with custom_search_space")
            if not self._space:
                raise ConfigError("the grid sampler needs params to sweep (choice, a,b or range)")
            self._grid = {k: grid_values(k, d) for k, d in self._space.items()}
        if not self._space and self._extender is None:
            raise ConfigError(
                "nothing to optimise: give hydra.sweeper.params or sweeps such as x=interval(0,1)"
            )

    def _derived_study_name(self, directions: list[str]) -> str:
        assert self.config is not None
        job = str(OmegaConf.select(self.config, "hydra.job.name", default="study"))
        if job == "__main__":
            job = str(OmegaConf.select(self.config, "hydra.job.config_name", default="study"))
        identity = {
            "space": {k: distribution_to_json(d) for k, d in self._space.items()},
            "fixed": sorted(self._fixed),
            "directions": directions,
            "custom": self.custom_search_space,
        }
        digest = hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        return f"{job}-{digest[:8]}"

    def _default_storage(self, name: str) -> str:
        assert self.config is not None
        root = OmegaConf.select(self.config, "paths.root", default=None)
        folder = Path(str(root)) / "optuna" if root is not None else Path("optuna")
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
        return f"sqlite:///{(folder / f'{safe}.db').resolve()}"

    def _open_study(self, url: str, name: str, directions: list[str]) -> optuna.Study:
        import sqlalchemy

        try:
            parsed = sqlalchemy.engine.make_url(url)
        except Exception:  # sqlalchemy raises ArgumentError and ValueError for bad URLs
            raise ConfigError(
                f"hydra.sweeper.storage={mask_secrets(url)!r} is not a database URL "
                "(sqlite:///path.db, postgresql://user:pw@host/db, mysql://...)"
            ) from None
        backend = parsed.get_backend_name()
        engine_kwargs: dict[str, Any] = {}
        if backend == "sqlite":
            if parsed.database not in (None, "", ":memory:"):
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            # Several local processes share one file: wait for the write lock, do not fail.
            engine_kwargs["connect_args"] = {"timeout": 60}
        else:
            engine_kwargs["pool_pre_ping"] = True
        self._retry = RetryLostTrial(max_retry=self.max_retry)
        heartbeat: dict[str, Any] = {}
        if self.heartbeat_interval is not None:
            heartbeat = {
                "heartbeat_interval": self.heartbeat_interval,
                "grace_period": self.grace_period,
                "heartbeat_stale_trial_callback": self._retry,
            }
        pruner = instantiate(self.pruner_cfg) if self.pruner_cfg is not None else None
        try:
            storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **heartbeat)
            study = optuna.create_study(
                storage=storage,
                study_name=name,
                directions=directions,
                pruner=pruner,
                load_if_exists=True,
            )
        except ImportError as err:
            raise UserError(f"storage {mask_secrets(url)}: {err}") from None
        except Exception as err:  # sqlalchemy/driver errors: connection refused, bad password
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UserError(
                f"cannot open the Optuna storage {mask_secrets(url)}: {mask_secrets(first)}"
            ) from None
        have = [d.name.lower() for d in study.directions]
        if have != directions:
            raise ConfigError(
                f"study {name!r} optimises {have}, not {directions}: "
                "give another hydra.sweeper.study_name or the same direction"
            )
        return study

    def _settle_sweep_dir(self, study: optuna.Study) -> str:
        """The sweep dir of this run: the study's first run's, so trial dirs continue there."""
        assert self.config is not None
        current = str(self.config.hydra.sweep.dir)
        recorded = study.user_attrs.get("sweep_dir")
        explicit = any(
            str(o).lstrip("+~").split("=", 1)[0] == "hydra.sweep.dir"
            for o in self.config.hydra.overrides.hydra
        )
        if recorded is None or explicit:
            if recorded is None:
                study.set_user_attr("sweep_dir", current)
            return current
        if recorded != current and self.reuse_sweep_dir:
            log.info("resuming in the study's sweep dir %s", recorded)
            self._hydra_overrides = [format_override("hydra.sweep.dir", recorded)]
            with read_write(self.config.hydra.sweep), open_dict(self.config.hydra.sweep):
                self.config.hydra.sweep.dir = recorded
            return recorded
        return current

    def _save_multirun_config(self, sweep_dir: str) -> None:
        # Hydra's basic sweeper saves multirun.yaml too; ours masks storage passwords.
        assert self.config is not None
        Path(sweep_dir).mkdir(parents=True, exist_ok=True)
        container = OmegaConf.to_container(self.config, resolve=False)
        OmegaConf.save(OmegaConf.create(mask_secrets(container)), Path(sweep_dir) / "multirun.yaml")

    # -- the loop ---------------------------------------------------------------------------

    def _sampler_for(self, index: int) -> optuna.samplers.BaseSampler:
        if self._shared_sampler is not None:
            return self._shared_sampler
        target = str(self.sampler_cfg.get("_target_"))
        extra: dict[str, Any] = {}
        if self._grid is not None:
            extra["search_space"] = self._grid
        if target in _SHARED_SEED_SAMPLERS:
            self._shared_sampler = instantiate(self.sampler_cfg, _convert_="all", **extra)
            return self._shared_sampler
        if "seed" in self.sampler_cfg:
            extra["seed"] = derive_seed(self.sampler_cfg.get("seed"), index)
        return instantiate(self.sampler_cfg, _convert_="all", **extra)

    def _recover_lost(self, study: optuna.Study) -> None:
        """Fail (and enqueue retries of) RUNNING trials whose worker is gone."""
        optuna.storages.fail_stale_trials(study)
        if not self.check_local_pids:
            return
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if trial.number in self._mine:
                continue
            info = trial.user_attrs.get("worker")
            if local_worker_is_dead(info):
                reason = f"worker pid {info['pid']} on {info['host']} is gone"
                if fail_lost_trial(study, trial, reason, self._retry):
                    log.warning(
                        "trial %d was left running by a dead process: %s; retrying it",
                        trial.number,
                        reason,
                    )

    def _ask(self, study: optuna.Study) -> optuna.Trial:
        index = len(study.get_trials(deepcopy=False))
        study.sampler = self._sampler_for(index)
        trial = study.ask(fixed_distributions=self._space)
        if self.heartbeat_interval is not None:
            study._storage.record_heartbeat(trial._trial_id)
        trial.set_user_attr("worker", worker_info())
        self._mine.add(trial.number)
        return trial

    def _loop(self, study: optuna.Study, lock: StudyLock, n_trials: int) -> tuple[list[int], str]:
        """Ask, launch and tell until the study has `n_trials` finished trials."""
        ran: list[int] = []
        poll = min(self.heartbeat_interval or 5, 5)
        waiting_logged = False
        while True:
            with lock:
                self._recover_lost(study)
                trials = study.get_trials(deepcopy=False)
                finished = sum(counts_as_finished(t) for t in trials)
                failures = sum(is_job_failure(t) for t in trials)
                if failures > self.max_failure_rate * n_trials:
                    return ran, (
                        f"{failures} trials failed, more than max_failure_rate="
                        f"{self.max_failure_rate} of n_trials={n_trials}"
                    )
                running = [t.number for t in trials if t.state == TrialState.RUNNING]
                slots = min(self.n_jobs, n_trials - finished - len(running))
                grid_done = self._grid_exhausted(study)
                if grid_done:
                    # Every grid point has finished (some failed for good, after their
                    # retries): only queued retries are left; a fresh ask would repeat a point.
                    slots = min(slots, sum(t.state == TrialState.WAITING for t in trials))
                asked = [self._ask(study) for _ in range(max(slots, 0))]
            if asked:
                waiting_logged = False
                self._run_batch(study, asked)
                ran.extend(t.number for t in asked)
                continue
            if finished >= n_trials or (grid_done and not running):
                return ran, ""
            if self.heartbeat_interval is None:
                return ran, (
                    f"trials {running} are still running in other processes; without "
                    "heartbeats their fate is unknown here: rerun the command later"
                )
            if not waiting_logged:
                log.info("waiting for trials %s, running in other workers", running)
                waiting_logged = True
            time.sleep(poll)

    def _grid_exhausted(self, study: optuna.Study) -> bool:
        if self._grid is None:
            return False
        sampler = self._sampler_for(0)
        assert isinstance(sampler, optuna.samplers.GridSampler)
        return sampler.is_exhausted(study)

    def _overrides(self, trial: optuna.Trial) -> list[str]:
        extra: Any = None
        if self._extender is not None:
            assert self.config is not None
            extra = self._extender(self.config, trial)
        params = dict(trial.params)
        lines = list(self._fixed)
        lines += [format_override(k, params.pop(k)) for k in self._space if k in params]
        lines += [format_override(k, v) for k, v in params.items()]
        if isinstance(extra, dict):
            lines += [format_override(str(k), v) for k, v in extra.items()]
        return lines

    def _run_batch(self, study: optuna.Study, trials: list[optuna.Trial]) -> None:
        """Launch one batch of asked trials and tell their results; never leaves them RUNNING."""
        by_number = {t.number: t for t in trials}
        told: set[int] = set()
        try:
            overrides = {}
            for trial in trials:
                overrides[trial.number] = self._overrides(trial)
                trial.set_user_attr("overrides", overrides[trial.number])
            try:
                # Composing each job's config validates it (as Hydra's basic sweeper does) and
                # tells its run dir now, so even a trial that gets killed shows where it ran.
                for number, trial in by_number.items():
                    run_dir = self._planned_run_dir(overrides[number], number)
                    trial.set_user_attr("run_dir", run_dir)
            except Exception as err:  # Hydra's composition errors come in several types
                message = " ".join(str(err).split())
                for trial in trials:
                    self._tell_failure(study, trial, f"config: {message}")
                    told.add(trial.number)
                raise ConfigError(message) from None
            with Heartbeat(study._storage, [t._trial_id for t in trials], self.heartbeat_interval):
                for run in consecutive_runs(list(by_number)):
                    for number in run:
                        _context.ACTIVE_TRIALS[number] = by_number[number]
                    try:
                        returns = self.launcher.launch(
                            [overrides[n] + self._hydra_overrides for n in run],
                            initial_job_idx=run[0],
                        )
                    finally:
                        for number in run:
                            _context.ACTIVE_TRIALS.pop(number, None)
                    for number, ret in zip(run, returns, strict=True):
                        self._tell(study, by_number[number], ret)
                        told.add(number)
        except BaseException as err:
            # Interrupted (Ctrl-C, a launcher error): the untold trials are lost, not failed
            # by their jobs, so a rerun retries them.
            for number, trial in by_number.items():
                if number not in told:
                    reason = f"interrupted: {type(err).__name__}"
                    fail_lost_trial(
                        study, study._storage.get_trial(trial._trial_id), reason, self._retry
                    )
            raise
        finally:
            self._mine.difference_update(by_number)

    def _planned_run_dir(self, overrides: list[str], number: int) -> str:
        assert self.hydra_context is not None and self.config is not None
        cfg = self.hydra_context.config_loader.load_sweep_config(
            self.config, overrides + self._hydra_overrides
        )
        with open_dict(cfg):
            cfg.hydra.job.num = number
            cfg.hydra.job.id = number
        return os.path.abspath(os.path.join(str(cfg.hydra.sweep.dir), str(cfg.hydra.sweep.subdir)))

    def _record(self, study: optuna.Study, trial: optuna.Trial, **tell: Any) -> None:
        """study.tell, tolerating the two ways a tell can fail after the state is safe."""
        try:
            study.tell(trial, **tell)
        except optuna.exceptions.UpdateFinishedTrialError:
            log.warning(
                "trial %d was declared lost by another worker while it ran (its heartbeat "
                "was late: raise hydra.sweeper.grace_period); its result is dropped",
                trial.number,
            )
        except RuntimeError as err:
            # GridSampler.after_trial calls study.stop() once the grid is done, which only
            # works inside study.optimize; the trial's state is stored before that call.
            if "Study.stop" not in str(err):
                raise

    def _tell_failure(self, study: optuna.Study, trial: optuna.Trial, error: str) -> None:
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            trial.set_user_attr("error", error[:2000])
        self._record(study, trial, state=TrialState.FAIL)

    def _tell(self, study: optuna.Study, trial: optuna.Trial, ret: JobReturn) -> None:
        run_dir = (
            OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir") if ret.hydra_cfg else None
        )
        if run_dir:
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                trial.set_user_attr("run_dir", run_dir)
        if ret.status == JobStatus.FAILED:
            err = ret._return_value
            if isinstance(err, optuna.TrialPruned):
                log.info("trial %d pruned: %s", trial.number, err)
                self._record(study, trial, state=TrialState.PRUNED)
                return
            traceback = (
                (type(err), err, err.__traceback__) if isinstance(err, BaseException) else None
            )
            log.error(
                "trial %d failed: %s: %s", trial.number, type(err).__name__, err, exc_info=traceback
            )
            self._tell_failure(study, trial, f"{type(err).__name__}: {err}")
            return
        values, problem = objective_values(ret._return_value, len(study.directions))
        if problem is not None:
            log.error("trial %d failed: %s", trial.number, problem)
            self._tell_failure(study, trial, problem)
            return
        self._record(study, trial, values=values)
        log.info("trial %d: %s", trial.number, ", ".join(_fmt_number(v) for v in values or []))

    # -- the end ----------------------------------------------------------------------------

    def _finish(
        self,
        study: optuna.Study,
        url: str,
        n_trials: int,
        sweep_dir: str,
        ran: list[int],
        stopped: str,
    ) -> list[FrozenTrial]:
        trials = study.get_trials(deepcopy=False)
        results = study_results(study, url, n_trials)
        Path(sweep_dir).mkdir(parents=True, exist_ok=True)
        with open(Path(sweep_dir) / RESULTS_FILE, "w") as f:
            yaml.safe_dump(results, f, sort_keys=False)
        print(summary_table(trials))
        print(best_lines(results))
        print(f"results: {Path(sweep_dir) / RESULTS_FILE}")
        sys.stdout.flush()
        mine = [t for t in trials if t.number in set(ran)]
        failed = [t.number for t in mine if is_job_failure(t)]
        if stopped or failed:
            parts = []
            if failed:
                parts.append(f"{len(failed)} of {len(mine)} trials of this run failed ({failed})")
            if stopped:
                parts.append(f"sweep stopped: {stopped}")
            print(f"error: {'; '.join(parts)}", file=sys.stderr)
            raise SystemExit(1)
        return mine


def _state_text(trial: FrozenTrial) -> str:
    text = trial.state.name
    retried = trial.system_attrs.get("failed_trial")
    if retried is not None:
        text += f" (retry of {retried})"
    return text


def _value_text(trial: FrozenTrial) -> str:
    if trial.state == TrialState.COMPLETE and trial.values is not None:
        return ", ".join(_fmt_number(v) for v in trial.values)
    if "error" in trial.user_attrs:
        reason = str(trial.user_attrs["error"])
    elif "lost" in trial.user_attrs:
        reason = f"lost: {trial.user_attrs['lost']}"
    elif trial.state == TrialState.FAIL:
        # Optuna's heartbeat check fails stale trials without a word.
        reason = "lost: its worker's heartbeat stopped"
    else:
        reason = ""
    reason = " ".join(str(reason).split())
    return reason[:60] + ("..." if len(reason) > 60 else "")


def _short_path(path: Any) -> str:
    if not path:
        return "-"
    rel = os.path.relpath(str(path))
    return rel if not rel.startswith("..") else str(path)


def summary_table(trials: Sequence[FrozenTrial]) -> str:
    """A plain-text table of every trial: number, state, value or error, params, run dir."""
    rows = [("trial", "state", "value / error", "params", "run dir")]
    for t in sorted(trials, key=lambda t: t.number):
        params = " ".join(f"{k}={_fmt_number(v)}" for k, v in t.params.items())
        rows.append(
            (
                str(t.number),
                _state_text(t),
                _value_text(t),
                params,
                _short_path(t.user_attrs.get("run_dir")),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def study_results(study: optuna.Study, url: str, n_trials: int) -> dict[str, Any]:
    """What optuna_results.yaml holds: the study, its trial counts and its best trial(s)."""
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    directions = [d.name.lower() for d in study.directions]
    if not complete:
        best: list[FrozenTrial] = []
    elif len(directions) == 1:
        best = [study.best_trial]
    else:
        best = sorted(study.best_trials, key=lambda t: t.number)

    def describe(t: FrozenTrial) -> dict[str, Any]:
        return {
            "number": t.number,
            "values": list(t.values),
            "params": dict(t.params),
            "overrides": list(t.user_attrs.get("overrides", [])),
            "run_dir": t.user_attrs.get("run_dir"),
        }

    results: dict[str, Any] = {
        "name": "optuna",
        "study_name": study.study_name,
        "storage": mask_secrets(url),
        "directions": directions,
        "n_trials": n_trials,
        "trials": {
            "complete": len(complete),
            "pruned": sum(t.state == TrialState.PRUNED for t in trials),
            "failed": sum(is_job_failure(t) for t in trials),
            "lost": sum(t.state == TrialState.FAIL and not is_job_failure(t) for t in trials),
            "running": sum(t.state == TrialState.RUNNING for t in trials),
        },
    }
    if len(directions) == 1 and best:
        results["best_params"] = dict(best[0].params)
        results["best_value"] = best[0].value
    results["best_trials"] = [describe(t) for t in best]
    return results


def best_lines(results: dict[str, Any]) -> str:
    """The best trial(s) in a few printable lines."""
    if not results["best_trials"]:
        return "no trial completed"
    label = "best trial" if len(results["directions"]) == 1 else "Pareto-optimal trials"
    lines = [f"{label} ({', '.join(results['directions'])}):"]
    for t in results["best_trials"]:
        values = ", ".join(_fmt_number(v) for v in t["values"])
        lines.append(
            f"  #{t['number']}: {values}  {' '.join(t['overrides'])}  run dir: {t['run_dir']}"
        )
    return "\n".join(lines)
