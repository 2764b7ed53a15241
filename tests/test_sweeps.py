"""Grid sweeps through the real app: shared cache, eval-only jobs never retrain, failure isolation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def _sweep(
    root: Path, *overrides: str, timeout: int = 900
) -> tuple[subprocess.CompletedProcess[str], list[dict]]:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rerank_sweeps",
            "-m",
            "experiment=tiny",
            "latency.enabled=false",
            f"paths.root={root}",
            *overrides,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
    )
    summaries = sorted((root / "multirun").glob("*/sweep_summary.json"))
    jobs = json.loads(summaries[-1].read_text()) if summaries else []
    return proc, jobs


@pytest.fixture(scope="module")
def grid(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess[str], list[dict]]:
    root = tmp_path_factory.mktemp("grid")
    proc, jobs = _sweep(root, "base=tiny_bert,modernbert", "top_k=5,10")
    return root, proc, jobs


def test_failed_job_is_recorded_and_the_others_complete(grid) -> None:
    _, proc, jobs = grid
    assert proc.returncode == 1, proc.stderr[-2000:]
    by_num = {j["job_num"]: j for j in jobs}
    assert [by_num[i]["status"] for i in range(4)] == ["completed", "completed", "failed", "failed"]
    assert "ModernBERT-base" in by_num[2]["reason"]
    assert "Sweep summary (2 completed, 2 failed)" in proc.stdout


def test_eval_only_settings_never_retrain(grid) -> None:
    _, _, jobs = grid
    first, second = jobs[0], jobs[1]
    assert {"split", "negatives", "model", "untrained", "index"} <= set(second["cache_hits"])
    records = [
        json.loads((Path(j["run_dir"]) / "record.json").read_text()) for j in (first, second)
    ]
    assert "model" in records[0]["cache_misses"] and "model" not in records[1]["cache_misses"]
    assert records[0]["fingerprints"]["model"] == records[1]["fingerprints"]["model"]
    assert records[0]["fingerprints"]["candidates"] != records[1]["fingerprints"]["candidates"]


def test_grid_through_submitit_local_completes_from_the_warm_cache(grid) -> None:
    root, _, _ = grid
    proc, jobs = _sweep(
        root, "base=tiny_bert", "negatives=1", "top_k=5,10", "hydra/launcher=submitit_local"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [j["status"] for j in jobs] == ["completed", "completed"]
    assert all("model" in j["cache_hits"] for j in jobs)
