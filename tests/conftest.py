"""Shared test setup: everything offline, everything small, nothing written outside tmp dirs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
