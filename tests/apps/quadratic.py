"""The toy Hydra app of the Optuna sweeper tests (see conf/quadratic.yaml for the switches).

Each job writes result.json (its job number, x, y, value, pid) into its run dir.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from hydra_plugins.rerank_sweeps_optuna import report


def extend_space(cfg: DictConfig, trial: Any) -> dict[str, str]:
    """A custom_search_space for the tests: y's range depends on x (define-by-run)."""
    if trial.params["x"] > 0:
        trial.suggest_float("y", -1.0, 0.0)
    else:
        trial.suggest_float("y", -3.0, -2.0)
    return {"note": "x positive" if trial.params["x"] > 0 else "x not positive"}


@hydra.main(version_base="1.3", config_path="conf", config_name="quadratic")
def main(cfg: DictConfig) -> float | tuple[float, float]:
    """One job: the quadratic at (x, y), after the configured sleep, hang or failure."""
    hydra_cfg = HydraConfig.get()
    num = hydra_cfg.job.num
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if cfg.signal_dir:
        Path(cfg.signal_dir).mkdir(parents=True, exist_ok=True)
        (Path(cfg.signal_dir) / f"started-{num}").write_text(str(os.getpid()))
    if num in cfg.hang_on:
        time.sleep(600)
    time.sleep(cfg.sleep)
    value = (cfg.x - 1) ** 2 + (cfg.y + 2) ** 2
    for step in range(cfg.steps):
        (run_dir / f"step-{step}").touch()
        report(step, value)
    if num in cfg.fail_on:
        raise RuntimeError(f"failure switch for job {num}")
    if num in cfg.exit_on:
        try:
            raise ValueError(f"bad value for job {num}")
        except ValueError:
            raise SystemExit(2) from None  # as rerank_sweeps' own app reports user errors
    if num in cfg.nan_on:
        value = math.nan
    result = {
        "num": num,
        "x": cfg.x,
        "y": cfg.y,
        "note": cfg.note,
        "value": value,
        "pid": os.getpid(),
    }
    (run_dir / "result.json").write_text(json.dumps(result))
    if cfg.objectives == 2:
        return value, abs(cfg.x)
    return value


if __name__ == "__main__":
    main()
