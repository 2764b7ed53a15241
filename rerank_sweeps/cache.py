"""Content-addressed, atomic, locked artifact cache for pipeline stages.

An artifact lives in `<root>/<stage>/<key>/`. Its key hashes the stage name, the stage
version, the config subtree the stage reads and the keys of its inputs. A build writes
into a private temporary directory; the completion marker is written last inside it and
the directory is then renamed into place, so a reader either sees a whole artifact or
none. A file lock per key makes concurrent processes build it once; the lock is an OS
lock (flock), released by the kernel when a process dies, so a SIGKILLed builder leaves
only a stale temp directory that no reader trusts.

`build_atomically` is that lock + temp dir + rename, for anything built once on disk: the
stage cache here, and the models built locally under `models_home()` (joined PyPI parts,
tiny test models, distilled static embeddings).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

log = logging.getLogger(__name__)

MARKER = "_COMPLETE.json"


def models_home() -> Path:
    """Folder for models assembled or built locally (joined PyPI parts, tiny test models)."""
    home = os.environ.get("RERANK_SWEEPS_MODELS")
    return Path(home) if home else Path.home() / ".cache" / "rerank_sweeps" / "models"


def build_atomically(
    target: Path,
    is_complete: Callable[[Path], bool],
    build: Callable[[Path], Path | None],
) -> bool:
    """Build the folder `target` once across threads and processes; True if this call built it.

    `is_complete(target)` says whether a finished build is there (its completion marker).
    `build(tmp)` writes into `tmp`, a fresh private folder beside `target`, and returns the
    folder to publish: `tmp` itself (None) or one inside it. That folder is renamed into
    place, so a reader sees a whole build or none. Under the lock (`<target>.lock`, an OS lock
    the kernel releases when a process dies) leftovers of killed builders are removed first:
    their temp folders, and a `target` that `is_complete` does not accept.
    """
    if is_complete(target):
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if is_complete(target):  # another process built it while we waited
            return False
        # Only ever reached under the lock, so no live builder owns these leftovers.
        for leftover in target.parent.glob(f".tmp-{target.name}-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        tmp = target.parent / f".tmp-{target.name}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            published = build(tmp)
            (tmp if published is None else published).rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return True


@dataclass(frozen=True)
class Artifact:
    """A finished stage output on disk."""

    stage: str
    key: str
    path: Path
    hit: bool


def _canonical(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return _canonical(asdict(value))
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def stage_key(stage: str, version: int, config: Any, inputs: Sequence[Artifact | str]) -> str:
    """Hash of (stage, version, config subtree, input keys): the artifact's identity."""
    payload = {
        "stage": stage,
        "version": version,
        "config": _canonical(config),
        "inputs": [i.key if isinstance(i, Artifact) else str(i) for i in inputs],
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


@dataclass
class Cache:
    """The stage cache rooted at `root`; records every hit and miss of this process."""

    root: Path
    events: list[tuple[str, str, bool, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    @property
    def hits(self) -> set[str]:
        """Stages served from the cache in this process."""
        return {stage for stage, _, hit, _ in self.events if hit}

    @property
    def misses(self) -> set[str]:
        """Stages built in this process."""
        return {stage for stage, _, hit, _ in self.events if not hit}

    def path_for(self, stage: str, key: str) -> Path:
        """Where the artifact of `stage` with `key` lives (whether or not it exists)."""
        return self.root / stage / key

    def work_dir(self, stage: str, key: str) -> Path:
        """A persistent scratch folder for a build (e.g. training checkpoints to resume from)."""
        return self.root / stage / f"{key}.work"

    def lookup(self, stage: str, key: str) -> Artifact | None:
        """The finished artifact, or None if it is absent or incomplete."""
        path = self.path_for(stage, key)
        if (path / MARKER).is_file():
            return Artifact(stage, key, path, hit=True)
        return None

    def stage(
        self,
        stage: str,
        version: int,
        config: Any,
        inputs: Sequence[Artifact | str],
        build: Callable[[Path, Path], None],
    ) -> Artifact:
        """Return the artifact for these inputs, building it with `build(out_dir, work_dir)` once.

        `build` writes its files into `out_dir` (a private temp dir that becomes the artifact)
        and may keep resumable state in `work_dir`, which survives a killed build and is
        removed after success.
        """
        key = stage_key(stage, version, config, inputs)
        started = time.perf_counter()
        found = self.lookup(stage, key)
        if found is not None:
            self._record(stage, key, True, started)
            return found
        final = self.path_for(stage, key)
        work = self.work_dir(stage, key)

        def publish(tmp: Path) -> None:
            work.mkdir(exist_ok=True)
            try:
                build(tmp, work)
            except BaseException:
                # Keep resumable state (checkpoints) for the next try, but not an empty
                # folder: a build that failed at once (bad input) leaves the cache as it was.
                if work.is_dir() and not any(work.iterdir()):
                    work.rmdir()
                raise
            meta = {
                "stage": stage,
                "version": version,
                "key": key,
                "config": _canonical(config),
                "inputs": [i.key if isinstance(i, Artifact) else str(i) for i in inputs],
                "seconds": round(time.perf_counter() - started, 3),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            # The marker is written last, inside the temp folder: a renamed folder is whole.
            (tmp / MARKER).write_text(json.dumps(meta, indent=2, default=str))

        if not build_atomically(final, lambda path: (path / MARKER).is_file(), publish):
            self._record(stage, key, True, started)  # another process built it while we waited
            return Artifact(stage, key, final, hit=True)
        shutil.rmtree(work, ignore_errors=True)
        log.info("cache miss: %s/%s built in %.1fs", stage, key, time.perf_counter() - started)
        self._record(stage, key, False, started)
        return Artifact(stage, key, final, hit=False)

    def _record(self, stage: str, key: str, hit: bool, started: float) -> None:
        seconds = time.perf_counter() - started
        self.events.append((stage, key, hit, seconds))
        if hit:
            log.info("cache hit: %s/%s", stage, key)


def artifact_at(path: Path) -> tuple[Cache, Artifact] | None:
    """The cache holding the finished artifact directory `path`, and that artifact.

    None when `path` is not a finished artifact (no completion marker, or a marker that names
    another stage/key than the directory's place in `<root>/<stage>/<key>/`).
    """
    path = Path(path)
    try:
        meta = json.loads((path / MARKER).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if meta.get("key") != path.name or meta.get("stage") != path.parent.name:
        return None
    return Cache(path.parent.parent), Artifact(meta["stage"], meta["key"], path, hit=True)
