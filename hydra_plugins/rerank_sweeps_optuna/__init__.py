"""rerank_sweeps' resumable Optuna sweeper for Hydra (`hydra/sweeper=optuna`).

Tasks may call `report(step, value)` to feed a pruner; see `optuna_sweeper` for the sweeper.
"""

from hydra_plugins.rerank_sweeps_optuna._context import current_trial, report

__all__ = ["current_trial", "report"]
