"""Sweep-level behaviour: one failed job never stops the others, every sweep ends with a
summary of all its jobs and a non-zero exit code if any failed, and a sweep dir that holds
another command's finished jobs is refused before anything is written there."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from rerank_sweeps.tracking import (
    AnotherCommandsRun,
    load_records,
    saved_sweep,
    swept_settings,
    write_json_atomic,
)

log = logging.getLogger(__name__)
RETRIED = ", retried"  # status suffix of an attempt whose job later completed


def refuse_another_sweep(sweep_dir: Path, params: Any, overrides: list[str]) -> None:
    """Raise `AnotherCommandsRun` when `sweep_dir` holds completed jobs of a sweep whose
    settings (`swept_settings` of its multirun.yaml) differ from this command's.

    Experiments with a fixed sweep dir resume with the same command; another grid sent there
    would overwrite the finished jobs that share its job numbers, and Hydra would replace the
    dir's multirun.yaml before the first job could object.
    """
    task = saved_sweep(sweep_dir, "hydra.overrides.task")
    if not isinstance(task, list):  # no earlier sweep there, or one started by other means
        return
    before = swept_settings(saved_sweep(sweep_dir, "hydra.sweeper.params"), task)
    now = swept_settings(params, overrides)
    if before == now or not any(
        r.get("status") == "completed" for r in load_records(Path(sweep_dir))
    ):
        return
    was = " ".join(f"{k}={v}" for k, v in before.items()) or "no overrides"
    raise AnotherCommandsRun(
        f"{sweep_dir} holds completed jobs of another command ({was}): pass "
        "hydra.sweep.dir=<another folder> for this one, or delete that folder to rerun there"
    )


def summarize(sweep_dir: Path) -> tuple[list[dict[str, Any]], str]:
    """The jobs of a sweep (from their records) and a printable summary table.

    An unfinished attempt whose job completed later gets the status suffix `RETRIED`.
    """
    records = sorted(
        load_records(sweep_dir), key=lambda r: (r.get("job_num") is None, r.get("job_num"))
    )
    for i in superseded(records):
        records[i]["status"] += RETRIED
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


def superseded(records: list[dict[str, Any]]) -> set[int]:
    """Indexes of unfinished records whose job (same overrides) later completed.

    A resumed sweep runs a killed or lost job again, e.g. the Optuna sweeper's retry of a trial
    whose worker died: the retry's success answers for the job, the dead attempt does not.
    """
    done: dict[tuple[str, ...], list[str]] = {}
    for r in records:
        if r.get("status") == "completed":
            done.setdefault(tuple(r.get("overrides") or []), []).append(str(r.get("started")))
    return {
        i
        for i, r in enumerate(records)
        if r.get("status") != "completed"
        and any(s >= str(r.get("started")) for s in done.get(tuple(r.get("overrides") or []), []))
    }


class SweepSummary(Callback):
    """Hydra callback: print and save the sweep summary; exit non-zero if a job failed."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Runs once in the sweeping process after every job of the sweep has ended."""
        sweep_dir = Path(config.hydra.sweep.dir)
        records, table = summarize(sweep_dir)
        if not records:
            return
        retried = [r for r in records if r["status"].endswith(RETRIED)]
        pruned = [r for r in records if r["status"] == "pruned"]
        failed = [
            r for r in records if r["status"] not in ("completed", "pruned") and r not in retried
        ]
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
            f"\nSweep summary ({sum(r['status'] == 'completed' for r in records)} completed, "
            + (f"{len(retried)} retried and then completed, " if retried else "")
            + (f"{len(pruned)} pruned, " if pruned else "")
            + f"{len(failed)} failed): {sweep_dir}"
        )
        print(table)
        if failed:
            raise SystemExit(1)
