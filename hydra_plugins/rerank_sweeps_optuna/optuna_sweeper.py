"""The Hydra plugin class. Optuna is imported only when a sweep starts (see `_impl`), because
Hydra imports this module in every app start-up while scanning for plugins."""

from __future__ import annotations

import sys
from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

# Registers hydra/sweeper=optuna and its sampler and pruner groups in Hydra's ConfigStore.
from hydra_plugins.rerank_sweeps_optuna import config as _config  # noqa: F401


class OptunaSweeper(Sweeper):
    """Hydra sweeper over one resumable Optuna study (see `OptunaSweeperConf` for the keys)."""

    def __init__(self, **settings: Any) -> None:
        """Keep the settings; `_impl.OptunaSweeperImpl` interprets them when the sweep starts."""
        from hydra_plugins.rerank_sweeps_optuna._impl import OptunaSweeperImpl

        self._impl = OptunaSweeperImpl(**settings)

    def setup(
        self,
        *,
        hydra_context: HydraContext,
        task_function: TaskFunction,
        config: DictConfig,
    ) -> None:
        """Called by Hydra with the composed multirun config before `sweep`."""
        self._impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        """Run the study to `n_trials`; exit 1 if a trial failed, 2 on a configuration error."""
        from rerank_sweeps.config import ConfigError, UserError

        try:
            return self._impl.sweep(arguments)
        except (ConfigError, UserError) as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
