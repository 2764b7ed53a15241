"""Content-addressed, atomic, locked artifact cache for pipeline stages.

An artifact lives in `<root>/<stage>/<key>/`. Its key hashes the stage name, the stage
version, the config subtree the stage reads and the keys of its inputs. A build writes
into a private temporary directory; the completion marker is written last inside it and
the directory is then renamed into place, so a reader either sees a whole artifact or
none. A file lock per key makes concurrent processes build it once; the lock is an OS
lock (flock), released by the kernel when a process dies, so a SIGKILLed builder leaves
only a stale temp directory that no reader trusts.
"""

from __future__ import annotations

import hashlib
import json
import logging
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
        final.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(final) + ".lock"):
            found = self.lookup(stage, key)
            if found is not None:  # another process built it while we waited
                self._record(stage, key, True, started)
                return found
            self._remove_stale(final)
            tmp = final.parent / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
            tmp.mkdir()
            work = self.work_dir(stage, key)
            work.mkdir(exist_ok=True)
            try:
                build(tmp, work)
                meta = {
                    "stage": stage,
                    "version": version,
                    "key": key,
                    "config": _canonical(config),
                    "inputs": [i.key if isinstance(i, Artifact) else str(i) for i in inputs],
                    "seconds": round(time.perf_counter() - started, 3),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                }
                (tmp / MARKER).write_text(json.dumps(meta, indent=2, default=str))
                tmp.rename(final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                # Keep resumable state (checkpoints) for the next try, but not an empty
                # folder: a build that failed at once (bad input) leaves the cache as it was.
                if work.is_dir() and not any(work.iterdir()):
                    work.rmdir()
                raise
            shutil.rmtree(work, ignore_errors=True)
        log.info("cache miss: %s/%s built in %.1fs", stage, key, time.perf_counter() - started)
        self._record(stage, key, False, started)
        return Artifact(stage, key, final, hit=False)

    def _remove_stale(self, final: Path) -> None:
        # Leftovers of killed builders: temp dirs, or (from older layouts) a final dir without
        # a marker. Only ever called under the lock, so no live builder owns them.
        for leftover in final.parent.glob(f".tmp-{final.name}-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        if final.exists():
            shutil.rmtree(final, ignore_errors=True)

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
