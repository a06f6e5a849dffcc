"""The study-wide locks: one that every worker of a study shares (on any machine, released when
its holder dies), and the one-process lock of a search on a SQLite study.

Storage floor: it imports only :mod:`.storage`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages.journal import JournalStorage

from ..errors import UsageError
from .storage import is_shared, unwrap


def _lock_key(study_name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"funnelbench:{study_name}".encode()).digest()[:8], "big", signed=True)


def study_lock(study: optuna.Study):
    """A lock that every worker of ``study`` shares (:func:`storage_lock`)."""
    return storage_lock(study._storage, study.study_name)


@contextlib.contextmanager
def storage_lock(storage: BaseStorage, study_name: str) -> Iterator[None]:
    """A lock that every worker of the study ``study_name`` shares, on any machine, released when
    its holder dies: a PostgreSQL advisory lock or MySQL's GET_LOCK for servers, ``flock`` on a
    file beside a journal or SQLite file. Other storages (in-memory): a lock of this process."""
    base = unwrap(storage)
    if isinstance(base, JournalStorage):
        path = getattr(base, "path", None)
        with _flock(Path(f"{path}.ask-lock") if path else None):
            yield
        return
    if isinstance(base, RDBStorage):
        dialect = base.engine.dialect.name
        if dialect in ("postgresql", "mysql"):
            import sqlalchemy

            key = _lock_key(study_name)
            with base.engine.connect() as conn:
                if dialect == "postgresql":
                    # held by this connection's transaction, released when it ends (also through a
                    # transaction-pooling pgbouncer, and when the process dies)
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
                    try:
                        yield
                    finally:
                        with contextlib.suppress(Exception):
                            conn.rollback()
                    return
                conn.execute(sqlalchemy.text("SELECT GET_LOCK(:k, -1)"), {"k": str(key)})
                try:
                    yield
                finally:
                    with contextlib.suppress(Exception):  # a lost connection has released it anyway
                        conn.execute(sqlalchemy.text("SELECT RELEASE_LOCK(:k)"), {"k": str(key)})
            return
        if dialect == "sqlite" and base.engine.url.database:
            with _flock(Path(base.engine.url.database + ".ask-lock")):
                yield
            return
    with _PROCESS_LOCK:
        yield


_PROCESS_LOCK = threading.Lock()


@contextlib.contextmanager
def sole_search(storage: BaseStorage, study_name: str) -> Iterator[None]:
    """Held for the life of a search on a SQLite study: the one process searching it.

    SQLite serves one worker (no ``SELECT ... FOR UPDATE`` to hand out queued trials, "database is
    locked"), so the same command started twice (two terminals, a cron job that overlaps) would
    train every layout twice; the second is refused instead. The lock is an exclusive ``flock``
    on ``<database>.<study>.search-lock`` beside the file, released when its holder ends however
    it ends; the file names the holder (``host:pid``) for the message. A journal file or a
    database server needs none: there a second command is one more worker of the study."""
    base = unwrap(storage)
    database = base.engine.url.database if isinstance(base, RDBStorage) and not is_shared(storage) else None
    if not database or database == ":memory:" or database.startswith("file:"):
        yield
        return
    path = Path(f"{database}.{study_name}.search-lock")
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            raise UsageError(
                f"study {study_name!r} is being searched by another process ({holder}) in {database}, and SQLite "
                "serves one process at a time; wait for it to end (running the command again then continues the "
                "study), or search with several workers on a new study (--workers N, or --storage postgresql://...)"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"{socket.gethostname()}:{os.getpid()}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def _flock(path: Path | None) -> Iterator[None]:
    if path is None:
        with _PROCESS_LOCK:
            yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


__all__ = ["study_lock", "storage_lock", "sole_search"]
