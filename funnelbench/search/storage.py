"""Where a study is stored, and opening it to write: the URL policy (a SQLite file for one
worker, the journal file for several, a database server for many machines), opening an Optuna
storage with a heartbeat and the retry-once callback for trials of dead workers, SQLite's
pragmas and its damage check, and the URL that opens a storage again in another process.

Storage floor: below everything that runs a search. Read-only opening is :mod:`.readonly`;
the study-wide locks are :mod:`.locks`.
"""

from __future__ import annotations

import copy
import os
import time
import warnings
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._cached_storage import _CachedStorage
from optuna.storages.journal import JournalStorage
from optuna.trial import FrozenTrial

from ..errors import FunnelbenchError, UsageError, redact
from .faults import StorageError, damaged_sqlite, error_line, one_line
from .journal import JournalHeartbeatStorage
from .vocabulary import BASELINE_LAYOUT, JOURNAL_FILE, PROMOTED_FROM, RETRY_OF, RUNG, SQLITE_FILE

HEARTBEAT_S = 20  # default seconds between a running trial's heartbeats
STALE_HEARTBEATS = 3  # a trial silent for this many heartbeats is taken for dead
MAX_RETRY = 1  # a dead worker's configuration is tried once more


def scheme(url: str) -> str:
    """The URL's scheme without a driver: ``postgresql+psycopg://...`` -> ``postgresql``."""
    return url.split(":", 1)[0].split("+", 1)[0].lower()


def storage_url(storage: str | None, *, out: str | os.PathLike, workers: int, sqlite_file: str = SQLITE_FILE) -> str:
    """The storage a search uses: ``storage`` as given, else the file already in the study's folder
    (so a study started with N workers continues with one, and the other way round), else a SQLite
    file for one worker and the journal file for several. Refuses SQLite for several workers."""
    out = Path(out)
    where = "--storage is SQLite"
    if storage is None:
        where = f"this study is stored in SQLite ({sqlite_file} in its folder)"
        journal, sqlite = out / JOURNAL_FILE, out / sqlite_file
        if journal.exists() or (workers > 1 and not sqlite.exists()):
            return f"journal:{journal}"
        storage = f"sqlite:///{sqlite}"
    if workers > 1 and scheme(storage) == "sqlite":
        raise UsageError(
            f"--workers {workers}: {where}, which cannot serve several worker processes (Optuna's FAQ: "
            f"'database is locked', and no SELECT ... FOR UPDATE to hand out queued trials); "
            f"run it with --workers 1, or start a new study (a journal file is the default for --workers > 1) "
            f"or give --storage postgresql://..."
        )
    return storage


def open_storage(url: str, *, heartbeat_s: int = HEARTBEAT_S) -> BaseStorage:
    """An Optuna storage for ``url`` with a heartbeat (RDB servers and the journal file) and the
    retry-once callback for trials of dead workers. ``journal:PATH`` is a journal file; anything
    else is an SQLAlchemy URL. Unreachable or unwritable storage is a :class:`StorageError`."""
    if heartbeat_s < 1:
        raise UsageError(f"--heartbeat {heartbeat_s}: must be at least 1 second")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryStaleTrial(max_retry=MAX_RETRY)
    heartbeat = dict(
        heartbeat_interval=heartbeat_s,
        grace_period=STALE_HEARTBEATS * heartbeat_s,
        heartbeat_stale_trial_callback=retry,
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if scheme(url) == "journal":
                return JournalHeartbeatStorage(url.split(":", 1)[1], **heartbeat)
            # SQLite has one worker, but a re-run notices the trial that a killed run left running.
            # pool_pre_ping: a restarted server costs a reconnect, not an error.
            if scheme(url) == "sqlite":
                storage = RDBStorage(url, **heartbeat)
                check_sqlite(storage, url)
                return storage
            try:
                return RDBStorage(url, engine_kwargs={"pool_pre_ping": True}, **heartbeat)
            except Exception as err:  # machines starting together on an empty database create its tables at once
                if not type(err).__module__.startswith("sqlalchemy"):
                    raise
                time.sleep(1.0)
                return RDBStorage(url, engine_kwargs={"pool_pre_ping": True}, **heartbeat)
    except (OSError, ImportError, optuna.exceptions.StorageInternalError) as err:
        raise StorageError(_storage_trouble(url, err)) from None
    except Exception as err:  # SQLAlchemy's OperationalError and friends, without importing them
        if type(err).__module__.startswith("sqlalchemy"):
            raise StorageError(_storage_trouble(url, err)) from None
        raise


def _storage_trouble(url: str, err: BaseException) -> str:
    text = one_line(err)
    if scheme(url) == "sqlite" and ("malformed" in text or "not a database" in text):
        from sqlalchemy.engine import make_url

        return damaged_sqlite(url, make_url(url).database, text)
    return f"storage {redact(url)}: {text}"


def check_sqlite(storage: RDBStorage, url: str) -> None:
    """Refuse a damaged SQLite file in one line (SQLite's ``PRAGMA quick_check``: every page of
    the file, milliseconds for a study), before the search writes into it."""
    import sqlalchemy

    with storage.engine.connect() as conn:
        problems = [
            " ".join(str(row[0]).split()) for row in conn.execute(sqlalchemy.text("PRAGMA quick_check")).fetchmany(3)
        ]
    if problems != ["ok"]:
        text = "; ".join(problems).replace("*** in database main ***", "").strip(" ;")
        raise StorageError(damaged_sqlite(url, storage.engine.url.database, text))


def unwrap(storage: BaseStorage) -> BaseStorage:
    """The storage itself: Optuna wraps an RDBStorage in a cache."""
    return storage._backend if isinstance(storage, _CachedStorage) else storage


def storage_file(url: str) -> Path | None:
    """The file a SQLite or journal storage URL keeps the study in (absolute), or None for a
    database server or an in-memory SQLite."""
    if scheme(url) == "journal":
        return Path(url.split(":", 1)[1]).absolute()
    if scheme(url) == "sqlite":
        from sqlalchemy.engine import make_url

        database = make_url(url).database
        if database and database != ":memory:" and not database.startswith("file:"):
            return Path(database).absolute()
    return None


class RetryStaleTrial(RetryHeartbeatStaleTrialCallback):
    """Optuna's retry callback (``max_retry`` counted over the chain of retries in the system
    attribute ``retry_history``). The retry is queued as a fresh trial: of the dead trial's user
    attributes it keeps only what says what to run (``baseline_layout``; with --fidelity asha
    ``rung`` and ``promoted_from``, so a retried promotion is the same promotion) and gains ``retry_of``,
    the dead trial's number, whose run folder holds the checkpoint to resume from."""

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        trial = copy.deepcopy(trial)
        keep = {k: trial.user_attrs[k] for k in (BASELINE_LAYOUT, RUNG, PROMOTED_FROM) if k in trial.user_attrs}
        trial.user_attrs = {**keep, RETRY_OF: trial.number}
        super().__call__(study, trial)


def is_shared(storage: BaseStorage) -> bool:
    """Whether other processes may work on this storage's studies (a journal or a database server)."""
    base = unwrap(storage)
    return isinstance(base, JournalStorage) or (isinstance(base, RDBStorage) and base.engine.dialect.name != "sqlite")


def url_of(storage: BaseStorage) -> str:
    """The URL that opens ``storage`` again in another process (with its password)."""
    base = unwrap(storage)
    if isinstance(base, JournalHeartbeatStorage):
        return f"journal:{base.path}"
    if isinstance(base, RDBStorage):
        return base.engine.url.render_as_string(hide_password=False)
    raise UsageError(
        f"--workers: a {type(base).__name__} cannot be shared by worker processes; "
        "use the journal file (the default) or --storage postgresql://..."
    )


def open_search_storage(url: str, heartbeat_s: int = HEARTBEAT_S):
    """The storage a search writes to: :func:`open_storage`, any trouble one line naming ``url``
    (with a heartbeat: :func:`open_storage`). SQLite gets
    write-ahead logging without a sync per commit
    (every trial writes ~25 attributes, each a transaction: ~20 ms with a sync, well under 1 ms
    without). A killed process loses nothing it committed; a power cut may lose the last commits
    but never corrupts the file."""
    try:
        storage = open_storage(url, heartbeat_s=heartbeat_s)
    except FunnelbenchError:  # already one line that names the storage (a damaged file, a bad URL)
        raise
    except Exception as err:  # noqa: BLE001 - a malformed URL, an unwritable folder, a file that is not a database
        raise UsageError(f"--storage {redact(url)}: cannot open it ({error_line(err)})") from None
    if not url.startswith("sqlite:"):
        return storage
    from sqlalchemy import event

    def pragmas(conn, _record):
        cursor = conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(storage.engine, "connect", pragmas)
    storage.engine.dispose()
    return storage


__all__ = [
    "HEARTBEAT_S",
    "STALE_HEARTBEATS",
    "MAX_RETRY",
    "scheme",
    "storage_url",
    "open_storage",
    "open_search_storage",
    "check_sqlite",
    "unwrap",
    "storage_file",
    "RetryStaleTrial",
    "is_shared",
    "url_of",
]
