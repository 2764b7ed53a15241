"""Sweep-level behaviour: one failed job never stops the others, and every sweep ends with a
summary of all its jobs and a non-zero exit code if any failed."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from rerank_sweeps.tracking import load_records, write_json_atomic

log = logging.getLogger(__name__)


def summarize(sweep_dir: Path) -> tuple[list[dict[str, Any]], str]:
    """The jobs of a sweep (from their records) and a printable summary table."""
    records = sorted(
        load_records(sweep_dir), key=lambda r: (r.get("job_num") is None, r.get("job_num"))
    )
    lines = [f"{'job':>4}  {'status':<9}  {'objective':>9}  {'seconds':>7}  overrides  (run dir)"]
    for r in records:
        objective = r.get("objective") or []
        shown = (
            ", ".join(
                "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"
                for v in objective
            )
            or "-"
        )
        seconds = sum((r.get("stage_seconds") or {}).values())
        line = f"{r.get('job_num', '-')!s:>4}  {r['status']:<9}  {shown:>9}  {seconds:7.1f}  {r.get('name')}  ({r.get('run_dir')})"
        if r.get("reason"):
            line += f"\n{'':>17}{r['reason']}"
        lines.append(line)
    return records, "\n".join(lines)


class SweepSummary(Callback):
    """Hydra callback: print and save the sweep summary; exit non-zero if a job failed."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Runs once in the sweeping process after every job of the sweep has ended."""
        sweep_dir = Path(config.hydra.sweep.dir)
        records, table = summarize(sweep_dir)
        if not records:
            return
        failed = [r for r in records if r["status"] != "completed"]
        write_json_atomic(
            sweep_dir / "sweep_summary.json",
            [
                {
                    k: r.get(k)
                    for k in (
                        "job_num",
                        "status",
                        "reason",
                        "name",
                        "objective",
                        "run_dir",
                        "cache_hits",
                        "stage_seconds",
                    )
                }
                for r in records
            ],
        )
        print(
            f"\nSweep summary ({len(records) - len(failed)} completed, {len(failed)} failed): {sweep_dir}"
        )
        print(table)
        if failed:
            raise SystemExit(1)
