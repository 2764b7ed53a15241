"""Reranker architectures, one module each, chosen by `arch.name` (conf/arch/<name>.yaml).

    from rerank_sweeps.archs import get_arch, load_reranker
    get_arch(conf.arch.name).load_start_model(path, conf, local_only)
    load_reranker(model_artifact_dir)  # the LanceDB reranker of a saved model artifact

Adding an architecture: a module here with an `Architecture` subclass and its
`rerankers.ModelReranker` subclass, one line in `ARCHITECTURES` below (or `register` from your
own code: the latency stage's fresh process registers it again from its class's module),
`conf/arch/<name>.yaml`, and its tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rerank_sweeps.archs.base import Architecture
from rerank_sweeps.archs.ce import CrossEncoderArch
from rerank_sweeps.archs.colbert import ColBERTArch
from rerank_sweeps.config import UserError
from rerank_sweeps.rerankers import RERANKER_JSON, ModelReranker

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "arch_names",
    "detect_arch",
    "get_arch",
    "load_reranker",
    "read_reranker_meta",
    "register",
]

ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (CrossEncoderArch(), ColBERTArch())}


def register(arch: Architecture) -> Architecture:
    """Add (or replace) an architecture under its `name`; returns it. Its class must be
    importable (or defined in a file) with a no-argument constructor: the latency stage's
    child process builds it again (`latency_device.register_job_arch`)."""
    ARCHITECTURES[arch.name] = arch
    return arch


def arch_names() -> tuple[str, ...]:
    """The registered architecture names."""
    return tuple(ARCHITECTURES)


def get_arch(name: str) -> Architecture:
    """The architecture registered as `name`, or a one-line UserError naming the choices."""
    try:
        return ARCHITECTURES[name]
    except (KeyError, TypeError):
        raise UserError(
            f"arch={name!r} is not an architecture: one of {', '.join(ARCHITECTURES)}"
        ) from None


def detect_arch(path: Path) -> Architecture | None:
    """The architecture of a local model directory, from its files (None: not recognised)."""
    for arch in ARCHITECTURES.values():
        if arch.detect(path):
            return arch
    return None


def read_reranker_meta(model_artifact_dir: str | Path) -> dict[str, Any]:
    """The artifact's reranker.json, or a one-line UserError."""
    path = Path(model_artifact_dir) / RERANKER_JSON
    if not path.is_file():
        raise UserError(f"{path} is missing: {model_artifact_dir} is not a model artifact")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not JSON ({err.msg})") from None
    if meta.get("arch") not in ARCHITECTURES:
        raise UserError(
            f"{path}: arch={meta.get('arch')!r} is not one of {', '.join(ARCHITECTURES)}"
        )
    return meta


def load_reranker(
    model_artifact_dir: str | Path,
    device: str = "auto",
    bf16: str | bool = "auto",
    batch_size: int = 64,
) -> ModelReranker:
    """The LanceDB reranker for a model artifact (`model/` + reranker.json); loads lazily."""
    meta = read_reranker_meta(model_artifact_dir)
    cls = get_arch(meta["arch"]).reranker_class()
    return cls(
        Path(model_artifact_dir) / "model",
        device=device,
        bf16=bf16,
        batch_size=batch_size,
        meta=meta,
    )
