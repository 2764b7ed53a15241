"""The trials running in this process, so a task can report intermediate values for pruning.

The sweeper registers each trial under its Hydra job number (which is the trial number)
before launching it; a task running in the same process finds its trial through
`HydraConfig.get().job.num`. Jobs launched into other processes (joblib, submitit) see no
registered trial, and `report` does nothing there.

Kept in a module whose name starts with "_" because Hydra's plugin scan re-executes every
public module of `hydra_plugins`, which would reset this registry.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

ACTIVE_TRIALS: dict[int, optuna.Trial] = {}


def current_trial() -> optuna.Trial | None:
    """The Optuna trial of the Hydra job running in this process, or None outside our sweeps."""
    if not ACTIVE_TRIALS:
        return None
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    if not HydraConfig.initialized():
        return None
    num: Any = OmegaConf.select(HydraConfig.get(), "job.num", default=None)
    return ACTIVE_TRIALS.get(num) if isinstance(num, int) else None


def report(step: int, value: float) -> None:
    """Report an intermediate objective value of the running trial (e.g. a dev metric per epoch).

    Under the rerank_sweeps Optuna sweeper, in the same process, this records the value in the
    study (the dashboard plots it) and raises `optuna.TrialPruned` when the configured pruner
    (`hydra/sweeper/pruner=median`, ...; none by default) says the trial should stop: let it
    propagate and the trial is recorded PRUNED. Anywhere else it does nothing. Multi-objective
    studies cannot prune (an Optuna limitation), so there it does nothing either.
    """
    trial = current_trial()
    if trial is None:
        return
    if len(trial.study.directions) > 1:
        return
    trial.report(float(value), int(step))
    if trial.should_prune():
        import optuna

        log.info("trial %d pruned at step %d (value %s)", trial.number, step, value)
        raise optuna.TrialPruned(f"pruned at step {step} (value {value})")
