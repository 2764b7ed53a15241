"""Reranker architectures, one module each, chosen by `arch.name` (conf/arch/<name>.yaml).

    from rerank_sweeps.archs import get_arch
    get_arch(conf.arch.name).load_start_model(path, conf, local_only)

Adding an architecture: a module here with an `Architecture` subclass and its
`rerankers.ModelReranker` subclass, one line in `ARCHITECTURES` below (or `register` from your
own code), `conf/arch/<name>.yaml`, and its tests.
"""

from __future__ import annotations

from pathlib import Path

from rerank_sweeps.archs.base import Architecture
from rerank_sweeps.archs.ce import CrossEncoderArch
from rerank_sweeps.archs.colbert import ColBERTArch
from rerank_sweeps.config import UserError

__all__ = ["ARCHITECTURES", "Architecture", "arch_names", "detect_arch", "get_arch", "register"]

ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (CrossEncoderArch(), ColBERTArch())}


def register(arch: Architecture) -> Architecture:
    """Add (or replace) an architecture under its `name`; returns it."""
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
