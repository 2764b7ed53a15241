"""The stage cache: content keys, atomic publishing, crash safety, concurrency."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from rerank_sweeps.cache import MARKER, Cache, build_atomically, stage_key

WRITER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from rerank_sweeps.cache import Cache

    root, mode, value = sys.argv[1], sys.argv[2], sys.argv[3]

    def build(out: Path, work: Path) -> None:
        (out / "part1.txt").write_text(value)
        if mode == "hang":  # simulate a long build that gets killed half-way
            Path(root, "started").write_text(str(os.getpid()))
            time.sleep(600)
        if mode == "slow":
            time.sleep(1.0)
        (out / "part2.txt").write_text(value)
        with open(Path(root) / "builds.log", "a") as log:
            log.write(f"{os.getpid()}\\n")

    art = Cache(Path(root) / "cache").stage("demo", 1, {"x": value}, [], build)
    print(art.path, art.hit)
    """
)


def _writer(root: Path, mode: str, value: str = "v") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root), mode, value],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_same_config_hits_and_changed_subtree_or_input_misses(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    calls: list[str] = []

    def build(out: Path, work: Path) -> None:
        calls.append(out.name)
        (out / "data.txt").write_text("x")

    first = cache.stage("split", 1, {"seed": 1, "n": 10}, [], build)
    again = cache.stage("split", 1, {"n": 10, "seed": 1}, [], build)  # key order irrelevant
    changed = cache.stage("split", 1, {"seed": 2, "n": 10}, [], build)
    bumped = cache.stage("split", 2, {"seed": 1, "n": 10}, [], build)
    downstream_a = cache.stage("negatives", 1, {}, [first], build)
    downstream_b = cache.stage("negatives", 1, {}, [changed], build)
    assert (first.hit, again.hit, changed.hit, bumped.hit) == (False, True, False, False)
    assert again.path == first.path and (first.path / "data.txt").read_text() == "x"
    assert len({first.key, changed.key, bumped.key}) == 3
    assert downstream_a.key != downstream_b.key
    assert len(calls) == 5
    assert cache.hits == {"split"} and cache.misses == {"split", "negatives"}


def test_failed_build_leaves_nothing_and_rerun_succeeds(tmp_path: Path) -> None:
    cache = Cache(tmp_path)

    def broken(out: Path, work: Path) -> None:
        (out / "half.txt").write_text("half")
        raise RuntimeError("boom")

    try:
        cache.stage("s", 1, {}, [], broken)
    except RuntimeError:
        pass
    key = stage_key("s", 1, {}, [])
    assert cache.lookup("s", key) is None
    assert not [p for p in (tmp_path / "s").iterdir() if p.name.startswith(".tmp")]
    # Nothing resumable was written: no empty work folder is left behind (#14.7).
    assert not cache.work_dir("s", key).exists()
    art = cache.stage("s", 1, {}, [], lambda out, work: (out / "ok.txt").write_text("ok"))
    assert not art.hit and (art.path / "ok.txt").read_text() == "ok"


def test_failed_build_keeps_resumable_state(tmp_path: Path) -> None:
    cache = Cache(tmp_path)

    def killed_mid_training(out: Path, work: Path) -> None:
        (work / "checkpoint-40").mkdir()
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        cache.stage("s", 1, {}, [], killed_mid_training)
    work = cache.work_dir("s", stage_key("s", 1, {}, []))
    assert (work / "checkpoint-40").is_dir()  # the next try resumes from it


def test_sigkilled_writer_leaves_nothing_trusted_and_rerun_recomputes(tmp_path: Path) -> None:
    proc = _writer(tmp_path, "hang")
    deadline = time.time() + 60
    while not (tmp_path / "started").exists():
        assert time.time() < deadline and proc.poll() is None, (
            proc.stderr.read() if proc.stderr else ""
        )
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    key = stage_key("demo", 1, {"x": "v"}, [])
    cache = Cache(tmp_path / "cache")
    assert cache.lookup("demo", key) is None, "a killed build must not look complete"
    assert not (tmp_path / "cache" / "demo" / key).exists()

    rerun = _writer(tmp_path, "fast")
    out, err = rerun.communicate(timeout=60)
    assert rerun.returncode == 0, err
    art = cache.lookup("demo", key)
    assert art is not None
    assert (art.path / "part1.txt").read_text() == "v" and (
        art.path / "part2.txt"
    ).read_text() == "v"
    assert (art.path / MARKER).is_file()
    leftovers = [
        p.name for p in (tmp_path / "cache" / "demo").iterdir() if p.name.startswith(".tmp")
    ]
    assert leftovers == [], "the rerun cleans the killed builder's temp dir"


def test_two_concurrent_processes_build_once_and_both_succeed(tmp_path: Path) -> None:
    procs = [_writer(tmp_path, "slow") for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    paths = {out.split()[0] for out, _ in outputs}
    hits = sorted(out.split()[1] for out, _ in outputs)
    assert len(paths) == 1 and hits == ["False", "True"]
    assert len((tmp_path / "builds.log").read_text().split()) == 1


# ---------------------------------------------------------------------------------------------
# build_atomically: the lock + temp dir + rename that the cache and local model builds share


def _has_marker(folder: Path) -> bool:
    return (folder / "done").is_file()


def test_build_atomically_builds_once_across_threads_and_publishes_a_subfolder(
    tmp_path: Path,
) -> None:
    target = tmp_path / "models" / "thing"
    calls: list[str] = []

    def build(tmp: Path) -> Path:
        calls.append(tmp.name)
        time.sleep(0.2)  # long enough for the other thread to wait on the lock
        inner = tmp / "inner"
        inner.mkdir()
        (inner / "done").write_text("x")
        (tmp / "scratch.zip").write_text("dropped with the temp dir")
        return inner

    built: list[bool] = []
    threads = [
        threading.Thread(target=lambda: built.append(build_atomically(target, _has_marker, build)))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(built) == [False, True] and len(calls) == 1
    assert sorted(p.name for p in target.iterdir()) == ["done"]
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".tmp")]
    assert build_atomically(target, _has_marker, build) is False and len(calls) == 1


def test_build_atomically_replaces_leftovers_and_a_failure_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "thing"
    target.mkdir()
    (target / "half").write_text("a killed build, or an older recipe")
    stale = tmp_path / ".tmp-thing-deadbeef"
    stale.mkdir()

    def broken(tmp: Path) -> None:
        (tmp / "half").write_text("half")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        build_atomically(target, _has_marker, broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thing.lock"]

    def build(tmp: Path) -> None:
        (tmp / "done").write_text("x")

    assert build_atomically(target, _has_marker, build)
    assert sorted(p.name for p in target.iterdir()) == ["done"]
