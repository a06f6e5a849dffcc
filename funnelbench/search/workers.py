"""Many workers on one study: storages, the trial count, heartbeats, worker processes, signals.

The search loop is one process asking one study for trials (:mod:`funnelbench.search.study`).
This module lets any number of such loops share a study, the way Optuna's documentation
recommends: worker *processes* (threads share the GIL), one shared storage, and for each storage
the means to notice a worker that died.

- Storage (:func:`open_storage`). One worker: the search's SQLite file. ``--workers N`` on one
  machine: Optuna's journal file (``JournalFileBackend``) in the study's folder; SQLite is refused
  there (Optuna's FAQ: "database is locked", and no ``SELECT ... FOR UPDATE`` to hand out enqueued
  trials). Many machines: a server URL (``postgresql://...``) that every machine's command names.
- The count (:class:`Worker`). ``--trials N`` is the study's total of trained trials over all
  workers. A worker asks for a trial only while the trained plus the running trials are fewer than
  N, under a lock that every worker of the study shares (a PostgreSQL advisory lock, MySQL's
  ``GET_LOCK``, or ``flock`` on a file next to a journal or SQLite file), so two workers never take
  the last slot together. A worker with nothing left to ask waits while other workers' trials run:
  one of them may still fail and free its slot.
- Dead workers. Every running trial has a heartbeat, recorded every ``heartbeat_s`` seconds by a
  thread of its worker. A trial silent for ``STALE_HEARTBEATS`` heartbeats (or, sooner, one whose
  process on this machine is gone: the search's ``recover_stale``) is recorded ``interrupted`` by
  the next worker that asks, with the reason, and its configuration is queued once more with
  Optuna's ``RetryHeartbeatStaleTrialCallback(max_retry=1)`` (:func:`requeue`, also used for
  trials stopped by Ctrl-C or SIGTERM); the retry resumes from the dead trial's last epoch
  checkpoint (:func:`resume_point`). On RDB storages this is Optuna's own heartbeat
  (``RDBStorage(heartbeat_interval=..., grace_period=...)``); Optuna's ``JournalStorage`` has none,
  so :class:`JournalHeartbeatStorage` adds the same interface with one small file per running trial.
- Processes (:func:`run_workers`). ``--workers N`` starts N processes (``spawn``: no forked torch
  state); worker i gets cores / N torch threads or, where there are GPUs, sees only GPU i. SIGINT
  and SIGTERM reach every worker: its running trial is recorded failed (``interrupted``), it stops,
  and the command exits 130 / 143. Re-running the command continues the study.
- One layout, one training (:func:`claim_layout`): on a shared storage a worker marks the layout
  it trains under the study's lock, and a worker that draws a layout being trained waits for it.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._cached_storage import _CachedStorage
from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock, JournalStorage
from optuna.trial import FrozenTrial, TrialState

from ..errors import FunnelbenchError, UsageError, redact

JOURNAL_FILE = "journal.log"  # the study's journal, in its folder, when --workers N > 1
HEARTBEAT_S = 20  # default seconds between a running trial's heartbeats
STALE_HEARTBEATS = 3  # a trial silent for this many heartbeats is taken for dead
MAX_RETRY = 1  # a dead worker's configuration is tried once more
POLL_S = 1.0  # how often an idle worker looks again while other workers' trials run


class StorageError(FunnelbenchError):
    """The study's storage cannot be reached or written (PostgreSQL down, a read-only folder)."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM: the running trial is recorded ``interrupted`` and the worker stops.
    A KeyboardInterrupt, so everything that handles Ctrl-C handles a scheduler's SIGTERM too."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # 130 for SIGINT, 143 for SIGTERM


# ----------------------------------------------------------------------------- storages


def _scheme(url: str) -> str:
    return url.split(":", 1)[0].split("+", 1)[0].lower()


def storage_url(storage: str | None, *, out: str | os.PathLike, workers: int, sqlite_file: str = "study.db") -> str:
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
    if workers > 1 and _scheme(storage) == "sqlite":
        raise UsageError(
            f"--workers {workers}: {where}, which cannot serve several worker processes (Optuna's FAQ: "
            f"'database is locked', and no SELECT ... FOR UPDATE to hand out queued trials); "
            f"run it with --workers 1, or start a new study (a journal file is the default for --workers > 1) "
            f"or give --storage postgresql://...")
    return storage


def open_storage(url: str, *, heartbeat_s: int = HEARTBEAT_S) -> BaseStorage:
    """An Optuna storage for ``url`` with a heartbeat (RDB servers and the journal file) and the
    retry-once callback for trials of dead workers. ``journal:PATH`` is a journal file; anything
    else is an SQLAlchemy URL. Unreachable or unwritable storage is a :class:`StorageError`."""
    if heartbeat_s < 1:
        raise UsageError(f"--heartbeat {heartbeat_s}: must be at least 1 second")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = _RetryStaleTrial(max_retry=MAX_RETRY)
    heartbeat = dict(heartbeat_interval=heartbeat_s, grace_period=STALE_HEARTBEATS * heartbeat_s,
                     heartbeat_stale_trial_callback=retry)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if _scheme(url) == "journal":
                return JournalHeartbeatStorage(url.split(":", 1)[1], **heartbeat)
            # SQLite has one worker, but a re-run notices the trial that a killed run left running.
            # pool_pre_ping: a restarted server costs a reconnect, not an error.
            if _scheme(url) == "sqlite":
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
    text = _one_line(err)
    if _scheme(url) == "sqlite" and ("malformed" in text or "not a database" in text):
        from sqlalchemy.engine import make_url

        return damaged_sqlite(url, make_url(url).database, text)
    return f"storage {_redact(url)}: {text}"


def damaged_sqlite(url: str, path: str | None, detail: str) -> str:
    """One line: a damaged SQLite study, and how SQLite reads back what it still can."""
    return (f"storage {_redact(url)}: the SQLite file is damaged and nothing was written to it; SQLite can often "
            f"read back the trials before the damage: 'sqlite3 {path} .recover | sqlite3 recovered.db', then "
            f"--storage sqlite:///recovered.db (SQLite says: {detail[:80]})")


def check_sqlite(storage: RDBStorage, url: str) -> None:
    """Refuse a damaged SQLite file in one line (SQLite's ``PRAGMA quick_check``: every page of
    the file, milliseconds for a study), before the search writes into it."""
    import sqlalchemy

    with storage.engine.connect() as conn:
        problems = [" ".join(str(row[0]).split()) for row in conn.execute(sqlalchemy.text("PRAGMA quick_check"))
                    .fetchmany(3)]
    if problems != ["ok"]:
        text = "; ".join(problems).replace("*** in database main ***", "").strip(" ;")
        raise StorageError(damaged_sqlite(url, storage.engine.url.database, text))


def _unwrap(storage: BaseStorage) -> BaseStorage:
    """The storage itself: Optuna wraps an RDBStorage in a cache."""
    return storage._backend if isinstance(storage, _CachedStorage) else storage


_redact = redact  # the one redaction (funnelbench.errors.redact), under the name this module used


def storage_file(url: str) -> Path | None:
    """The file a SQLite or journal storage URL keeps the study in (absolute), or None for a
    database server or an in-memory SQLite."""
    if _scheme(url) == "journal":
        return Path(url.split(":", 1)[1]).absolute()
    if _scheme(url) == "sqlite":
        from sqlalchemy.engine import make_url

        database = make_url(url).database
        if database and database != ":memory:" and not database.startswith("file:"):
            return Path(database).absolute()
    return None


def _one_line(err: BaseException) -> str:
    """The error's first line, without passwords (a driver's message may quote the URL)."""
    if isinstance(err, OSError) and err.strerror:
        return redact(f"{err.filename}: {err.strerror}" if err.filename else err.strerror)
    while isinstance(err, optuna.exceptions.StorageInternalError) and err.__cause__ is not None:
        err = err.__cause__  # Optuna's "An exception is raised during the commit": the cause says what
    text = str(getattr(err, "orig", None) or err).strip().splitlines()
    return redact(text[0]) if text else type(err).__name__


def storage_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "the storage is in trouble" (for ``except``)."""
    errors: list[type[BaseException]] = [OSError, optuna.exceptions.StorageInternalError]
    with contextlib.suppress(ImportError):
        import sqlalchemy.exc

        errors.append(sqlalchemy.exc.SQLAlchemyError)
    return tuple(errors)


class JournalHeartbeatStorage(JournalStorage, BaseHeartbeat):
    """Optuna's journal file with the heartbeat interface its RDB storage has.

    A running trial's heartbeat is the modification time of ``<journal>.heartbeats/<trial id>``
    (touched by its worker; no journal entries, so the journal does not grow with time). A running
    trial whose file (or, before its first heartbeat, whose start) is older than ``grace_period`` is
    stale. Optuna's ``fail_stale_trials`` and ``Study.optimize`` use it like an ``RDBStorage``.
    Times are this machine's clock and the file system's: on a shared file system keep the
    machines' clocks in step (NTP)."""

    def __init__(self, path: str | os.PathLike, *, heartbeat_interval: int, grace_period: int,
                 heartbeat_stale_trial_callback: Callable[[optuna.Study, FrozenTrial], None] | None = None):
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
        return (_reopen_journal, (self._path, self._interval, self.grace_period, self._callback))

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
    print(f"warning: journal {path}: its last line was torn ({len(torn)} bytes: a process was killed while "
          f"writing it); cut off and kept in {keep.name}; every complete operation is kept", file=sys.stderr)
    return len(torn)


def journal_damage(path: Path, err: BaseException) -> str:
    """One line: where a journal that Optuna cannot read is damaged, what is kept, and the fix."""
    line_no, offset = 0, 0
    with open(path, "rb") as f:
        for line_no, line in enumerate(f, start=1):
            try:
                json.loads(line)
            except ValueError:
                break
            offset += len(line)
        else:
            line_no = 0
    where = f"line {line_no} (byte {offset})" if line_no else "somewhere"
    return (f"storage journal:{path} is damaged at {where}: {type(err).__name__}: {_one_line(err)}; the "
            f"{max(line_no - 1, 0)} operations before it (every trial they finish) are intact: keep them with "
            f"'mv {path} {path}.damaged && head -c {offset} {path}.damaged > {path}' and re-run the command")


def _reopen_journal(path, interval, grace, callback):
    return JournalHeartbeatStorage(path, heartbeat_interval=interval, grace_period=grace,
                                   heartbeat_stale_trial_callback=callback)


class _RetryStaleTrial(RetryHeartbeatStaleTrialCallback):
    """Optuna's retry callback (``max_retry`` counted over the chain of retries in the system
    attribute ``retry_history``). The retry is queued as a fresh trial: of the dead trial's user
    attributes it keeps only what says what to run (``baseline_layout``) and gains ``retry_of``,
    the dead trial's number, whose run folder holds the checkpoint to resume from."""

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        trial = copy.deepcopy(trial)
        keep = {k: trial.user_attrs[k] for k in ("baseline_layout",) if k in trial.user_attrs}
        trial.user_attrs = {**keep, "retry_of": trial.number}
        super().__call__(study, trial)


def requeue(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue a dead or interrupted trial's configuration once more (at most ``MAX_RETRY`` times
    along a chain of retries)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        _RetryStaleTrial(max_retry=MAX_RETRY)(study, trial)


def retried_from(trial: optuna.Trial | FrozenTrial) -> int | None:
    """The number of the dead trial this trial retries (its configuration, and its checkpoint
    where it has one), or None."""
    if not isinstance(trial, FrozenTrial):
        trial = trial.study._storage.get_trial(trial._trial_id)
    return trial.user_attrs.get("retry_of")


def stale_error(grace_s: int) -> str:
    return (f"worker lost: no heartbeat for {grace_s} s (its process was killed or its machine stopped); "
            f"the configuration is queued once more")


def fail_stale_trials(study: optuna.Study) -> list[int]:
    """Optuna's ``fail_stale_trials`` that also says why in the trial's record (``status``
    ``interrupted`` and ``error``, written before the state: a finished trial takes no attributes).
    Of several workers failing the same trial at once exactly one succeeds (the storage refuses
    to finish a finished trial) and only that one queues the retry. Returns the failed numbers."""
    storage = study._storage
    if not is_heartbeat_enabled(storage):
        return []
    base = _unwrap(storage)
    grace = base.grace_period or 2 * base.get_heartbeat_interval()
    failed = []
    for trial_id in base._get_stale_trial_ids(study._study_id):
        try:
            storage.set_trial_user_attr(trial_id, "status", "interrupted")
            storage.set_trial_user_attr(trial_id, "error", stale_error(grace))
            if storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                failed.append(trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # finished meanwhile, by its own worker or by another worker's check
    callback = base.get_heartbeat_stale_trial_callback()
    numbers = []
    for trial_id in failed:
        frozen = copy.deepcopy(storage.get_trial(trial_id))
        numbers.append(frozen.number)
        if callback is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                callback(study, frozen)
    return numbers


# ----------------------------------------------------------------------------- the study-wide lock


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
    base = _unwrap(storage)
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
    base = _unwrap(storage)
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


# ----------------------------------------------------------------------------- one worker's loop


class Worker:
    """Hands out the study's trials to one worker process until it holds ``trials`` trained ones.

    ``trained(frozen_trial) -> bool`` says which finished trials count towards ``--trials`` (the
    search's rule: trained, not rejected or failed). Use::

        with Worker(study, trials=n, trained=counts) as worker:
            for trial in worker:   # asked under the study's lock, heartbeat running
                ...                # train, tell
    """

    def __init__(self, study: optuna.Study, *, trials: int, trained: Callable[[FrozenTrial], bool],
                 poll_s: float = POLL_S, recover: Callable[[optuna.Study], list[int]] | None = None,
                 on_stale: Callable[[list[int]], None] | None = None):
        self.study, self.trials, self.trained, self.poll_s = study, trials, trained, poll_s
        self.recover, self.on_stale = recover, on_stale
        self._beat: _HeartbeatThread | None = None

        if is_shared(study._storage):
            # Workers seeded alike would propose the same candidates: each draws from its own stream
            # (Optuna's reseed_rng; with several workers the order of trials is not reproducible anyway).
            study.sampler.reseed_rng()

    def __enter__(self) -> "Worker":
        return self

    def __exit__(self, *exc) -> None:
        self._stop_heartbeat()

    def __iter__(self) -> Iterator[optuna.Trial]:
        while (trial := self.ask()) is not None:
            yield trial
            self._stop_heartbeat()
            if _may_have_built(trial.user_attrs):
                release_memory()  # ~0.2 s a call: a cost-only trial built nothing

    def counts(self) -> tuple[int, int]:
        """(trained, running) trials of the study."""
        trials = self.study.get_trials(deepcopy=False)
        trained = sum(1 for t in trials if t.state.is_finished() and self.trained(t))
        running = sum(1 for t in trials if t.state == TrialState.RUNNING)
        return trained, running

    def ask(self) -> optuna.Trial | None:
        """The next trial (queued ones first), or None once the study holds ``trials`` trained
        trials and none is running. Waits while the remaining slots are held by running trials."""
        self._stop_heartbeat()
        while True:
            raise_if_signalled()  # a signal the trainer caught (or one held back) still stops the worker
            with study_lock(self.study):
                stale = fail_stale_trials(self.study) + (self.recover(self.study) if self.recover else [])
                if stale and self.on_stale:
                    self.on_stale(stale)
                trained, running = self.counts()
                if trained + running < self.trials:
                    # a signal waits until the trial has its heartbeat (no running trial nobody watches)
                    # and is raised by the caller's raise_if_signalled, which can record the trial
                    with _signals_held(), warnings.catch_warnings():
                        warnings.filterwarnings("ignore", message=".*Heartbeat.*")  # "meant for optimize()"
                        trial = self.study.ask()
                        self._start_heartbeat(trial)
                    return trial
            if trained >= self.trials or running == 0:
                return None
            time.sleep(self.poll_s)

    def _start_heartbeat(self, trial: optuna.Trial) -> None:
        base = _unwrap(self.study._storage)
        if is_heartbeat_enabled(base):
            self._beat = _HeartbeatThread(base, trial._trial_id)

    def _stop_heartbeat(self) -> None:
        if self._beat is not None:
            self._beat.stop()
            self._beat = None


def _may_have_built(attrs: dict) -> bool:
    """Whether a finished trial may have built a model (a proxy trained, a speed measured, or a
    failure whose traceback may hold one)."""
    return attrs.get("proxy_layout") is not None or attrs.get("infer_img_per_s") is not None \
        or attrs.get("status") not in ("completed", "rejected", "skipped")


def release_memory() -> None:
    """Free what the last trial left (Optuna's ``gc_after_trial``): objects caught in reference
    cycles, such as a failed trial's model held by its traceback, and the CUDA caching
    allocator's blocks, so an out-of-memory trial does not carry into the next one."""
    import gc

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def is_shared(storage: BaseStorage) -> bool:
    """Whether other processes may work on this storage's studies (a journal or a database server)."""
    base = _unwrap(storage)
    return isinstance(base, JournalStorage) or (isinstance(base, RDBStorage) and base.engine.dialect.name != "sqlite")


def claim_layout(study: optuna.Study, trial: optuna.Trial, layout: str, *, finished: Callable, mark: Callable[[], None],
                 poll_s: float = POLL_S) -> FrozenTrial | None:
    """Make sure no two workers train one layout: under the study's lock, return the finished
    trial ``finished(study, layout, number)`` finds (the caller repeats its result), or else, if
    no other running trial is training ``layout``, ``mark()`` this trial as training it (its
    ``target_layout`` and ``status`` ``running``) and return None. While another worker trains
    it, wait (failing stale trials meanwhile: that worker may die)."""
    while True:
        with study_lock(study):
            fail_stale_trials(study)
            earlier = finished(study, layout, trial.number)
            if earlier is not None:
                return earlier
            busy = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                    if t.number != trial.number and t.user_attrs.get("status") == "running"
                    and t.user_attrs.get("target_layout") == layout]
            if not busy:
                mark()
                return None
        time.sleep(poll_s)


class _HeartbeatThread:
    """Records a trial's heartbeat now and every interval until stopped (Optuna's own thread is
    private and started only by ``Study.optimize``)."""

    def __init__(self, storage: BaseHeartbeat, trial_id: int):
        self._stop = threading.Event()
        storage.record_heartbeat(trial_id)
        interval = storage.get_heartbeat_interval()

        def beat():
            while not self._stop.wait(interval):
                with contextlib.suppress(Exception):  # a missed beat is retried; storage trouble surfaces in the main thread
                    storage.record_heartbeat(trial_id)

        self._thread = threading.Thread(target=beat, name=f"heartbeat-{trial_id}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


# ----------------------------------------------------------------------------- signals

_signalled: list[int] = []  # the signal this process received, if any


_holding: list[int] = []  # inside _signals_held: a signal is noted, and raised when the block ends


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Within the block a signal does not raise :class:`Interrupted`; it is noted, and
    :func:`raise_if_signalled` raises it where the caller can record what it interrupted."""
    _holding.append(0)
    try:
        yield
    finally:
        _holding.pop()


def raise_if_signalled() -> None:
    """Raise :class:`Interrupted` if this process received SIGINT or SIGTERM."""
    if _signalled:
        raise Interrupted(_signalled[0])


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """Within the block SIGINT and SIGTERM raise :class:`Interrupted` in the main thread (once:
    a second signal while the first is being handled is ignored, so the record gets written)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = _signalled
    fired.clear()

    def handler(signum, frame):
        if fired:
            return
        fired.append(signum)
        if not _holding:
            raise Interrupted(signum)

    before = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in before.items():
            signal.signal(s, h)


# ----------------------------------------------------------------------------- worker processes


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def gpu_ids() -> list[str]:
    """The GPUs this process may use (respecting CUDA_VISIBLE_DEVICES); [] without CUDA."""
    try:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        count = 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [v.strip() for v in visible.split(",") if v.strip()] if visible else [str(i) for i in range(count)]
    return ids[:count]


def check_workers(workers: int) -> None:
    """Refuse more worker processes than this machine's CPU cores or GPUs, whichever is more: each
    is a whole torch process (about 700 MB on a CPU), more CPU workers than cores only take turns,
    and the GPU rule is one worker per GPU (several share a GPU round robin up to the cores)."""
    if workers < 1:
        raise UsageError(f"--workers {workers}: must be at least 1")
    cores = cpu_cores()
    if workers > cores:
        gpus = gpu_ids()
        if workers <= len(gpus):
            return
        raise UsageError(f"--workers {workers}: this machine has {cores} CPU core(s)"
                         + (f" and {len(gpus)} GPU(s)" if gpus else " and no GPU")
                         + f", and each worker is a whole training process; use --workers {max(cores, len(gpus))} "
                         "or fewer")


def workers_for(workers: int, trials_left: int) -> int:
    """The worker processes worth starting: no more than the trials left to train (at least one,
    which finds the study done and stops)."""
    return max(1, min(workers, trials_left))


def worker_resources(index: int, workers: int, *, cores: int | None = None, gpus: list[str] | None = None) -> dict:
    """What worker ``index`` of ``workers`` may use: ``{"threads": n, "cuda_visible_devices": id | None}``.
    With GPUs worker i sees only GPU i (round robin when there are more workers than GPUs; one
    torch thread each feeds its GPU); without, the cores are shared out (at least one thread)."""
    cores = cpu_cores() if cores is None else cores
    gpus = gpu_ids() if gpus is None else gpus
    threads = max(1, cores // workers)
    if gpus:
        return {"threads": threads, "cuda_visible_devices": gpus[index % len(gpus)]}
    return {"threads": threads, "cuda_visible_devices": None}


def _worker_main(index: int, workers: int, resources: dict, target: Callable, kwargs: dict, errors) -> None:
    """A worker process: its share of the machine, then ``target(**kwargs)`` (the search loop)."""
    if resources["cuda_visible_devices"] is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = resources["cuda_visible_devices"]
    os.environ["FUNNELBENCH_WORKER"] = f"{index}/{workers}"
    import torch

    torch.set_num_threads(resources["threads"])
    code = 0
    with signals_interrupt():
        try:
            target(**kwargs)
        except Interrupted as stop:
            code = stop.exit_code
        except KeyboardInterrupt:
            code = 130
        except FunnelbenchError as err:
            errors.put(str(err))
            code = 2
        except storage_errors() as err:
            errors.put(f"storage: {_one_line(err)}; the study keeps every finished trial: re-run the command to continue")
            code = 2
        except Exception as err:  # noqa: BLE001 - a bug or unknown trouble: one line in the parent (exit 1)
            if os.environ.get("FUNNELBENCH_DEBUG", "") not in ("", "0"):
                import traceback

                traceback.print_exc()
            errors.put(f"{UNEXPECTED}{type(err).__name__}: {_one_line(err)}")
            code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # no atexit handlers of a half-torn-down torch


def run_workers(workers: int, target: Callable, kwargs: dict) -> list[str]:
    """Run ``target(**kwargs)`` in ``workers`` processes and wait for all of them.

    ``target`` must be a module-level function (each process imports it by name). SIGINT and
    SIGTERM to this process reach every worker; once they have stopped, :class:`Interrupted` is
    raised here (exit code 130 / 143). A worker's one-line error is raised here as a
    :class:`FunnelbenchError` (once, however many workers had it). Returns one line per worker
    that died otherwise (killed, crashed): the caller judges from the study whether the others
    finished its work (a dead worker's trial is retried by the live ones)."""
    ctx = multiprocessing.get_context("spawn")
    errors = ctx.SimpleQueue()  # written at once (a Queue's feeder thread may not outlive os._exit)
    procs = [ctx.Process(target=_worker_main, name=f"funnelbench-worker-{i}",
                         args=(i, workers, worker_resources(i, workers), target, kwargs, errors))
             for i in range(workers)]
    received: list[int] = []

    def forward(signum, frame):
        if signum not in received:
            received.append(signum)
        for p in procs:
            if p.pid is not None and p.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signum)

    before = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for p in procs:
            p.start()
        for p in procs:
            while p.exitcode is None:
                p.join(timeout=0.5)
    finally:
        for s, h in before.items():
            signal.signal(s, h)
    messages = []
    while not errors.empty():
        messages.append(errors.get())
    if received:
        raise Interrupted(received[0])
    if messages:
        if messages[0].startswith(UNEXPECTED):
            raise WorkerCrashed(messages[0][len(UNEXPECTED):])
        raise (StorageError if messages[0].startswith("storage") else FunnelbenchError)(messages[0])
    return [f"worker {i} (pid {p.pid}) {_describe_exit(p.exitcode)}" for i, p in enumerate(procs) if p.exitcode != 0]


UNEXPECTED = "unexpected: "  # a worker's message about an exception that is not the user's


class WorkerCrashed(RuntimeError):
    """A worker process ended with an exception funnelbench did not expect (the CLI: one line, exit 1)."""


def _describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"ended with exit code {code}"


# ----------------------------------------------------------------------------- the search in N processes


def url_of(storage: BaseStorage) -> str:
    """The URL that opens ``storage`` again in another process (with its password)."""
    base = _unwrap(storage)
    if isinstance(base, JournalHeartbeatStorage):
        return f"journal:{base.path}"
    if isinstance(base, RDBStorage):
        return base.engine.url.render_as_string(hide_password=False)
    raise UsageError(f"--workers: a {type(base).__name__} cannot be shared by worker processes; "
                     "use the journal file (the default) or --storage postgresql://...")


def search_in_workers(study: optuna.Study, workers: int, kwargs: dict, *, warm: Callable[[], object] | None,
                      start: dict, on_event=None, worker_events=None) -> optuna.Study:
    """The parent process of ``funnelbench search --workers N``: the study is created (and its
    baselines queued) here, once, before any worker starts; the data cache is built here, once,
    so every worker maps the same bytes; then N processes run the single-process search loop
    (``search(**kwargs)``) on the shared storage. Returns the study when every worker stopped."""
    from .study import counts

    emit = on_event or (lambda kind, info: None)
    url = url_of(study._storage)
    emit("start", {**start, "counts": counts(study), "storage": _redact(url), "workers": workers})
    if warm is not None:
        warm()  # the data, loaded once here and dropped: the workers find it in the cache
    lost = run_workers(workers, _search_worker, {"kwargs": {**kwargs, "storage": url}, "events": worker_events})
    c = counts(study)
    if lost:
        emit("workers_lost", {"lines": lost})
        if c["trained"] < kwargs["trials"]:
            raise WorkersLost(f"{'; '.join(lost)}: the study holds {c['trained']} of {kwargs['trials']} trained trials "
                              f"(every finished one is kept); re-run the command to continue")
    emit("end", {"counts": c, "study": study})
    return study


class WorkersLost(FunnelbenchError):
    """Worker processes ended (killed, crashed) before the study held its trials."""


def _search_worker(kwargs: dict, events) -> None:
    """One worker process: the single-process search on the shared storage."""
    from .study import search

    search(**kwargs, on_event=events() if events is not None else None)


def resume_point(source: Path | None, target: Path) -> list[dict] | None:
    """Prepare a retried trial to continue where its dead predecessor stopped (the checkpoint
    manager's :func:`funnelbench.training.checkpoint.resume_point`)."""
    from ..training.checkpoint import resume_point as from_checkpoint

    return from_checkpoint(source, target)
