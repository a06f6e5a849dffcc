"""The journal file with heartbeats: Optuna's ``JournalStorage`` on a file, plus the heartbeat
interface Optuna's RDB storage has (one small file per running trial), and the repair of a
journal whose last line a killed writer tore.

Storage floor: it imports only :mod:`.faults`.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock, JournalStorage
from optuna.trial import FrozenTrial, TrialState

from .faults import StorageError, journal_damage


class JournalHeartbeatStorage(JournalStorage, BaseHeartbeat):
    """Optuna's journal file with the heartbeat interface its RDB storage has.

    A running trial's heartbeat is the modification time of ``<journal>.heartbeats/<trial id>``
    (touched by its worker; no journal entries, so the journal does not grow with time). A running
    trial whose file (or, before its first heartbeat, whose start) is older than ``grace_period`` is
    stale. Optuna's ``fail_stale_trials`` and ``Study.optimize`` use it like an ``RDBStorage``.
    Times are this machine's clock and the file system's: on a shared file system keep the
    machines' clocks in step (NTP)."""

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        heartbeat_interval: int,
        grace_period: int,
        heartbeat_stale_trial_callback: Callable[[optuna.Study, FrozenTrial], None] | None = None,
    ):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._beats = path.with_name(path.name + ".heartbeats")
        self._beats.mkdir(exist_ok=True)
        self._path = path
        self._interval, self.grace_period = heartbeat_interval, grace_period
        self._callback = heartbeat_stale_trial_callback
        lock = JournalFileSymlinkLock(str(path))  # Optuna's default: the lock every writer of the file takes
        backend = JournalFileBackend(str(path), lock_obj=lock)
        lock.acquire()
        try:
            repair_torn_tail(path)
        finally:
            lock.release()
        try:
            super().__init__(backend)
        except ValueError as err:  # UnicodeDecodeError, JSONDecodeError, Optuna's "Invalid log format."
            raise StorageError(journal_damage(path, err)) from None

    def __reduce__(self):  # pickled into worker processes: reopen the file there
        return (reopen_journal, (self._path, self._interval, self.grace_period, self._callback))

    @property
    def path(self) -> Path:
        return self._path

    def record_heartbeat(self, trial_id: int) -> None:
        beat = self._beats / str(trial_id)
        beat.touch()
        os.utime(beat)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            try:
                last = (self._beats / str(trial._trial_id)).stat().st_mtime
            except FileNotFoundError:  # killed before its first heartbeat
                last = trial.datetime_start.timestamp() if trial.datetime_start else now
            if now - last > self.grace_period:
                stale.append(trial._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self._interval

    def get_heartbeat_stale_trial_callback(self):
        return self._callback


def repair_torn_tail(path: Path) -> int:
    """Cut a journal's torn last line (a writer killed mid-line, a full disk) off the end, keeping
    its bytes in ``<journal>.torn-<time>``; the number of bytes cut (0: the journal was whole).

    Call it holding the journal's lock: then no live writer is in the middle of a line. Optuna's
    readers skip a torn last line, so no reader ever applied it; but a writer would append its next
    operations onto it, and that line, now in the middle, would stop every reader there (every
    trial after it unreachable). Cutting it keeps every complete operation."""
    size = path.stat().st_size if path.exists() else 0
    if size == 0:
        return 0
    with open(path, "rb+") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        start = size
        while start > 0:  # back to the end of the last complete line
            chunk = min(start, 1 << 16)
            f.seek(start - chunk)
            at = f.read(chunk).rfind(b"\n")
            if at >= 0:
                start = start - chunk + at + 1
                break
            start -= chunk
        f.seek(start)
        torn = f.read()
        keep = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
        keep.write_bytes(torn)
        f.truncate(start)
        f.flush()
        os.fsync(f.fileno())
    print(
        f"warning: journal {path}: its last line was torn ({len(torn)} bytes: a process was killed while "
        f"writing it); cut off and kept in {keep.name}; every complete operation is kept",
        file=sys.stderr,
    )
    return len(torn)


def reopen_journal(path, interval, grace, callback):
    return JournalHeartbeatStorage(
        path, heartbeat_interval=interval, grace_period=grace, heartbeat_stale_trial_callback=callback
    )


__all__ = ["JournalHeartbeatStorage", "repair_torn_tail"]
