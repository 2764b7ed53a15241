"""The sweeper's configuration: `hydra/sweeper=optuna`, `hydra/sweeper/sampler=...`, `.../pruner=...`.

The keys mirror the familiar hydra-optuna-sweeper (storage, study_name, direction, n_trials,
n_jobs, sampler, params, custom_search_space, max_failure_rate) with two differences:
`n_trials` is the study's total, so rerunning a command resumes it, and the keys below
`max_failure_rate` control how trials of dead workers are found and retried.
"""

# No `from __future__ import annotations` here: Hydra's plugin scan executes this module
# before registering it in sys.modules, where dataclasses cannot resolve string annotations.
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class TPESamplerConf:
    """optuna.samplers.TPESampler (the default)."""

    _target_: str = "optuna.samplers.TPESampler"
    seed: int | None = None
    n_startup_trials: int = 10
    multivariate: bool | None = None
    group: bool = False
    constant_liar: bool = True  # parallel workers see running trials as bad: fewer repeats


@dataclass
class RandomSamplerConf:
    """optuna.samplers.RandomSampler."""

    _target_: str = "optuna.samplers.RandomSampler"
    seed: int | None = None


@dataclass
class GridSamplerConf:
    """optuna.samplers.GridSampler; its grid is built from the discrete `params`."""

    _target_: str = "optuna.samplers.GridSampler"
    seed: int | None = None


@dataclass
class NSGAIISamplerConf:
    """optuna.samplers.NSGAIISampler (multi-objective)."""

    _target_: str = "optuna.samplers.NSGAIISampler"
    seed: int | None = None
    population_size: int = 50
    mutation_prob: float | None = None
    crossover_prob: float = 0.9
    swapping_prob: float = 0.5


@dataclass
class QMCSamplerConf:
    """optuna.samplers.QMCSampler."""

    _target_: str = "optuna.samplers.QMCSampler"
    seed: int | None = None
    qmc_type: str = "sobol"
    scramble: bool = False


@dataclass
class GPSamplerConf:
    """optuna.samplers.GPSampler (Gaussian-process Bayesian optimisation)."""

    _target_: str = "optuna.samplers.GPSampler"
    seed: int | None = None
    n_startup_trials: int = 10


@dataclass
class NopPrunerConf:
    """No pruning (the default): `report(...)` only records intermediate values."""

    _target_: str = "optuna.pruners.NopPruner"


@dataclass
class MedianPrunerConf:
    """optuna.pruners.MedianPruner."""

    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 5
    n_warmup_steps: int = 0
    interval_steps: int = 1


@dataclass
class PercentilePrunerConf:
    """optuna.pruners.PercentilePruner."""

    _target_: str = "optuna.pruners.PercentilePruner"
    percentile: float = 25.0
    n_startup_trials: int = 5
    n_warmup_steps: int = 0
    interval_steps: int = 1


@dataclass
class HyperbandPrunerConf:
    """optuna.pruners.HyperbandPruner."""

    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 1
    max_resource: Any = "auto"
    reduction_factor: int = 3


@dataclass
class SuccessiveHalvingPrunerConf:
    """optuna.pruners.SuccessiveHalvingPruner."""

    _target_: str = "optuna.pruners.SuccessiveHalvingPruner"
    min_resource: Any = "auto"
    reduction_factor: int = 4
    min_early_stopping_rate: int = 0


@dataclass
class ThresholdPrunerConf:
    """optuna.pruners.ThresholdPruner: prune once a reported value leaves [lower, upper]."""

    _target_: str = "optuna.pruners.ThresholdPruner"
    lower: float | None = None
    upper: float | None = None
    n_warmup_steps: int = 0
    interval_steps: int = 1


@dataclass
class OptunaSweeperConf:
    """`hydra/sweeper=optuna`."""

    _target_: str = "hydra_plugins.rerank_sweeps_optuna.optuna_sweeper.OptunaSweeper"
    # The sweeper builds the sampler (per-trial seeds) and pruner itself.
    _recursive_: bool = False
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "nop"}])

    sampler: Any = MISSING
    pruner: Any = MISSING
    # "minimize" | "maximize", or a list of them for a multi-objective study
    direction: Any = "minimize"
    # An RDB URL (sqlite:///..., postgresql://user:pw@host/db, mysql://...).
    # null: sqlite:///${paths.root}/optuna/<study_name>.db (./optuna/ without paths.root)
    storage: str | None = None
    # null: <app name>-<hash of the search space and the fixed overrides>, so rerunning
    # the same command resumes the same study and a different command starts a new one
    study_name: str | None = None
    # The study's total of finished trials (complete, pruned or failed by the job):
    # rerunning a command after an interruption runs only the missing ones.
    n_trials: int = 20
    # Trials asked at once and handed to the launcher as one batch.
    n_jobs: int = 1
    # Stop the sweep once more than max_failure_rate * n_trials trials have failed.
    max_failure_rate: float = 0.25
    # {key: sweep in Hydra's override grammar}, e.g. {arch.lr: "tag(log, interval(1e-6, 1e-4))"}
    params: dict[str, str] = field(default_factory=dict)
    # "module.function"(cfg, trial) -> dict | None: define-by-run extra parameters
    custom_search_space: str | None = None
    # Seconds between heartbeats of running trials (null: off); a RUNNING trial whose
    # heartbeat is older than grace_period (null: 2 x interval) is failed and retried.
    heartbeat_interval: int | None = 30
    grace_period: int | None = None
    # How often a lost trial is retried (null: always).
    max_retry: int | None = 3
    # Fail at once the RUNNING trials of dead processes on this machine (same boot and PID
    # namespace), without waiting for the heartbeat grace period.
    check_local_pids: bool = True
    # Resume into the sweep dir recorded by the study's first run (unless hydra.sweep.dir is
    # given on the command line), so run dirs continue instead of starting a new timestamp.
    reuse_sweep_dir: bool = True


_STORE = ConfigStore.instance()
_STORE.store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="rerank_sweeps")
for _name, _node in {
    "tpe": TPESamplerConf,
    "random": RandomSamplerConf,
    "grid": GridSamplerConf,
    "nsgaii": NSGAIISamplerConf,
    "qmc": QMCSamplerConf,
    "gp": GPSamplerConf,
}.items():
    _STORE.store(group="hydra/sweeper/sampler", name=_name, node=_node, provider="rerank_sweeps")
for _name, _node in {
    "nop": NopPrunerConf,
    "median": MedianPrunerConf,
    "percentile": PercentilePrunerConf,
    "hyperband": HyperbandPrunerConf,
    "successive_halving": SuccessiveHalvingPrunerConf,
    "threshold": ThresholdPrunerConf,
}.items():
    _STORE.store(group="hydra/sweeper/pruner", name=_name, node=_node, provider="rerank_sweeps")
