"""Where models come from: the hub probe, and the module layout of models and tiny."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from rerank_sweeps.models import first_line, hub_reachable, hub_unreachable_reason

_PROXIES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def test_the_hub_probe_names_the_endpoint_it_could_not_reach(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for proxy in _PROXIES:
        monkeypatch.delenv(proxy, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on port 9
    reason = hub_unreachable_reason(timeout=2.0)
    assert reason is not None and reason.startswith("127.0.0.1:9 unreachable: ")
    assert hub_reachable(timeout=2.0) is False


def test_behind_a_proxy_the_hub_counts_as_reachable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert hub_unreachable_reason() is None and hub_reachable() is True


def test_first_line_of_an_error() -> None:
    assert first_line(OSError("\nrefused\nmore")) == "refused"
    assert first_line(RuntimeError("x" * 500), limit=10) == "x" * 10
    assert first_line(ValueError()) == "ValueError"


def test_tiny_does_not_import_models() -> None:
    """models lists the tiny builders; tiny needs nothing from models (no import circle)."""
    code = (
        "import sys, rerank_sweeps.tiny; "
        "assert 'rerank_sweeps.models' not in sys.modules, 'tiny imports models'; "
        "from rerank_sweeps.models import _OFFLINE; "
        "from rerank_sweeps.tiny import TINY_BERT_ID, TINY_MODERNBERT_ID; "
        "assert {TINY_BERT_ID, TINY_MODERNBERT_ID} <= set(_OFFLINE)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_mpnet_parts_are_joined_once_into_models_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from rerank_sweeps import models

    archive = tmp_path / "whole.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("all-mpnet-base-v2/model.safetensors", b"weights" * 100)
        zf.writestr("all-mpnet-base-v2/config.json", "{}")
    blob = archive.read_bytes()
    parts = [tmp_path / "part_001", tmp_path / "part_002"]
    parts[0].write_bytes(blob[: len(blob) // 2])
    parts[1].write_bytes(blob[len(blob) // 2 :])
    monkeypatch.setattr(models, "_mpnet_parts", lambda: parts)
    home = tmp_path / "home"
    monkeypatch.setenv("RERANK_SWEEPS_MODELS", str(home))
    target = models._mpnet_offline()
    assert target == home / "all-mpnet-base-v2"
    assert (target / "model.safetensors").read_bytes() == b"weights" * 100
    assert sorted(p.name for p in home.iterdir()) == ["all-mpnet-base-v2", "all-mpnet-base-v2.lock"]
    monkeypatch.setattr(models, "_mpnet_parts", lambda: [])  # built: the parts are not needed
    assert models.resolve_model(models.MPNET_ID) == str(target)
