"""Shared test setup: everything offline, everything small, nothing written outside tmp dirs."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from rerank_sweeps.latency_device import LatencyJob

# Offline by construction: a test that reaches for the network fails fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.pop("WANDB_API_KEY", None)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def outputs(tmp_path: Path) -> Path:
    """A fresh `paths.root` for one test."""
    root = tmp_path / "outputs"
    root.mkdir()
    return root


def compose_config(overrides: list[str]):
    """Compose the real configuration with `overrides` (tests override only what makes them small)."""
    from hydra import compose, initialize_config_module

    with initialize_config_module("rerank_sweeps.conf", version_base="1.3"):
        return compose("config", overrides=overrides)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Untrained tiny-BERT cross-encoder and ColBERT model artifacts, in one cache."""
    from rerank_sweeps import train
    from rerank_sweeps.cache import Cache
    from rerank_sweeps.validation import validate

    root = tmp_path_factory.mktemp("tiny_models")
    arts = {}
    for arch in ("ce", "colbert"):
        conf = validate(compose_config(["experiment=tiny", f"paths.root={root}", f"arch={arch}"]))
        arts[arch] = train.untrained_stage(conf, Cache(conf.paths.cache)).path
    return arts


def write_negatives(folder: Path, train_rows: list[Any], dev_rows: list[Any]) -> Any:
    """A negatives artifact in the data stage's format (train.jsonl, dev.jsonl) from NTuples."""
    from rerank_sweeps.cache import Artifact

    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train_rows), ("dev", dev_rows)):
        lines = [
            json.dumps({"question": r.question, "positive": r.positive, "negatives": r.negatives})
            for r in rows
        ]
        (folder / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    key = hashlib.sha256((folder / "train.jsonl").read_bytes()).hexdigest()[:20]
    return Artifact("negatives", key, folder, hit=True)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Training tests on one torch thread: faster on 2 cores, and the same numbers every run."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def latency_job(**changes: Any) -> LatencyJob:
    """A latency job with made-up paths (for the functions that only read its fields)."""
    from dataclasses import replace

    from rerank_sweeps.latency_device import LatencyJob

    job = LatencyJob(
        split="/x/split",
        index="/x/index",
        candidates_artifact="/x/cand",
        model="/x/model",
        arch="ce",
        embedder="sentence-transformers/all-MiniLM-L6-v2",
        candidates=(20, 50),
        warmup=1,
        iterations=2,
        queries=3,
        optimizations=("fp32", "bf16"),
        batch_size=8,
        sort_batch_size=4,
        accuracy_queries=None,
        accuracy_ks=(5, 10),
        query_types=("vector", "hybrid"),
        depth_per_leg={5: 20, 10: 20},
    )
    return replace(job, **changes)
