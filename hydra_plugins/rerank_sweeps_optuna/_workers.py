"""Workers sharing one study: who runs a trial, whether it is still alive, and one ask at a time.

Three mechanisms keep a study consistent when workers die or start together:

- a study lock (PostgreSQL advisory lock, or a file lock next to a SQLite file) around
  "count the finished trials, then ask for new ones", so concurrent workers never overshoot
  `n_trials` and never draw the same grid point; the server (or the kernel) releases it when
  its holder dies;
- Optuna's heartbeat: every running trial's heartbeat is refreshed by a thread of the worker
  that runs it; a RUNNING trial whose heartbeat is older than the grace period belongs to a
  dead worker, on any machine, and is failed and retried (`RetryLostTrial`);
- a local check: each trial records its worker (machine, pid, process start time), so a
  rerun on the same machine fails the trials of a killed process at once instead of waiting
  out the grace period.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

# Per-run bookkeeping that must not be inherited by the retry of a lost trial.
RUN_ATTRS = ("worker", "run_dir", "error", "lost", "overrides")


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def machine_id() -> str:
    """This host, boot and PID namespace: pids are comparable only between equal ids.

    Containers that share a host name but not a PID namespace get different ids, so a
    pid from one container is never looked up in another.
    """
    try:
        pid_ns = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        pid_ns = "?"
    boot = _read("/proc/sys/kernel/random/boot_id") or "?"
    return f"{socket.gethostname()}|{boot}|{pid_ns}"


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state letter, start time in clock ticks since boot) of a Linux process, or None."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after its ")".
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[0], fields[19]


def worker_info() -> dict[str, Any]:
    """The identity this process records in the trials it runs."""
    pid = os.getpid()
    stat = _proc_stat(pid)
    return {
        "host": socket.gethostname(),
        "machine": machine_id(),
        "pid": pid,
        "start": stat[1] if stat else None,
    }


def local_worker_is_dead(info: Any) -> bool:
    """True if `info` (from `worker_info`) names a process of this machine that is gone.

    A zombie counts as gone, and so does a live process with the same pid but another
    start time (the pid was reused). Workers of other machines are never judged here:
    their trials are left to the heartbeat.
    """
    if not isinstance(info, dict) or info.get("machine") != machine_id():
        return False
    pid = info.get("pid")
    if not isinstance(pid, int):
        return False
    if Path("/proc/self/stat").exists():
        stat = _proc_stat(pid)
        if stat is None or stat[0] in ("Z", "X"):
            return True
        return info.get("start") is not None and stat[1] != info["start"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class RetryLostTrial(RetryHeartbeatStaleTrialCallback):
    """Optuna's retry of a heartbeat-stale trial, without the dead run's bookkeeping.

    The retry is a WAITING copy with the same parameters (and grid point); the next `ask`
    of any worker takes it. `RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)`
    still names the original.
    """

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Enqueue the retry of `trial` unless it was retried `max_retry` times already."""
        history = [*trial.system_attrs.get("retry_history", []), trial.number]
        if self._max_retry is not None and len(history) > self._max_retry:
            return
        system_attrs = {
            **trial.system_attrs,
            "failed_trial": trial.system_attrs.get("failed_trial", trial.number),
            "retry_history": history,
        }
        user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in RUN_ATTRS}
        study.add_trial(
            optuna.create_trial(
                state=TrialState.WAITING,
                params=trial.params,
                distributions=trial.distributions,
                user_attrs=user_attrs,
                system_attrs=system_attrs,
            )
        )


def fail_lost_trial(
    study: optuna.Study, trial: FrozenTrial, reason: str, retry: RetryLostTrial | None
) -> bool:
    """Mark a RUNNING trial whose worker is gone FAIL (with `lost`: reason) and enqueue its retry.

    Returns False if the trial finished meanwhile (another worker got there first).
    """
    storage = study._storage
    try:
        storage.set_trial_user_attr(trial._trial_id, "lost", reason)
        if not storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
            return False
    except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError, ValueError):
        return False
    if retry is not None:
        retry(study, storage.get_trial(trial._trial_id))
    return True


class Heartbeat:
    """Refreshes the heartbeats of a batch of running trials from a background thread."""

    def __init__(self, storage: Any, trial_ids: list[int], interval: int | None) -> None:
        """Beat for `trial_ids` every `interval` seconds (no thread when interval is None)."""
        self._storage = storage
        self._trial_ids = trial_ids
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _beat(self) -> None:
        assert self._interval is not None
        while not self._stop.wait(self._interval):
            for trial_id in self._trial_ids:
                # A trial finished (told) in the meantime just ignores the beat; a database
                # hiccup must not end the thread, or a slow trial would be declared lost.
                with contextlib.suppress(Exception):
                    self._storage.record_heartbeat(trial_id)

    def __enter__(self) -> Heartbeat:
        if self._interval is not None:
            self._thread = threading.Thread(target=self._beat, name="optuna-heartbeat", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


class StudyLock:
    """A lock shared by every worker of one study; released by the server if its holder dies.

    PostgreSQL: a session advisory lock on a dedicated connection. SQLite: a file lock next
    to the database file. Other storages (or in-memory SQLite): no lock, so concurrent
    workers may overshoot `n_trials` by a trial or two.
    """

    def __init__(self, url: str, study_name: str) -> None:
        """Prepare the lock for `study_name` in the storage at `url` (connects lazily)."""
        import sqlalchemy

        self._url = sqlalchemy.engine.make_url(url)
        self._name = study_name
        self._depth = 0
        self._conn: Any = None
        self._file_lock: Any = None
        backend = self._url.get_backend_name()
        if backend == "sqlite" and self._url.database not in (None, "", ":memory:"):
            from filelock import FileLock

            self._file_lock = FileLock(f"{self._url.database}.lock")
        self.backend = backend
        digest = hashlib.sha1(f"rerank_sweeps_optuna:{study_name}".encode()).digest()
        self._key = int.from_bytes(digest[:8], "big", signed=True)

    def __enter__(self) -> StudyLock:
        self._depth += 1
        if self._depth > 1:
            return self
        if self._file_lock is not None:
            self._file_lock.acquire()
        elif self.backend == "postgresql":
            if self._conn is None:
                import sqlalchemy
                from sqlalchemy.pool import NullPool

                engine = sqlalchemy.create_engine(self._url, poolclass=NullPool)
                self._conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            self._conn.exec_driver_sql(f"SELECT pg_advisory_lock({self._key})")
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth > 0:
            return
        if self._file_lock is not None:
            self._file_lock.release()
        elif self._conn is not None:
            self._conn.exec_driver_sql(f"SELECT pg_advisory_unlock({self._key})")

    def close(self) -> None:
        """Drop the lock's database connection."""
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
