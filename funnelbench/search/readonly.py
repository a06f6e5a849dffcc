"""Opening a study only to read it: the storage ``funnelbench search`` used by default, a
read-only Optuna storage for a URL or a file (SQLite through a read-only file URI, a database
server without creating Optuna's tables, a journal file), and :func:`read_study`, which loads a
study written by ``funnelbench search`` or says in one line why it cannot.

Nothing here creates or changes anything, so a report can run while workers are still writing.
Storage floor (the writer's side is :func:`.studies.open_search_study`).
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import UsageError, redact
from .faults import damaged_sqlite, journal_damage, one_line
from .folders import check_name
from .vocabulary import DEFAULT_OUT_DIR, JOURNAL_FILE, MARKER, SQLITE_FILE, SQLITE_SUFFIXES

# Optuna's RDB storage writes its version tables into a database that lacks them: read only one that has them.
OPTUNA_TABLES = ("studies", "trials", "version_info", "alembic_version")


def default_storage(study_name: str, out_dir: str | Path = DEFAULT_OUT_DIR) -> str:
    """The storage ``funnelbench search`` used for ``study_name`` by default: the SQLite file
    ``<out_dir>/<study>/study.db`` or, with several workers, the journal ``journal.log`` there."""
    check_name(study_name, "--study", "give the name funnelbench search used, or --storage URL")
    folder = Path(out_dir) / study_name
    found = [p for p in (folder / SQLITE_FILE, folder / JOURNAL_FILE) if p.is_file()]
    if not found:
        raise UsageError(
            f"no study {study_name!r} under {str(out_dir)!r}: neither {str(folder / SQLITE_FILE)!r} nor "
            f"{str(folder / JOURNAL_FILE)!r} exists; run funnelbench search first, or pass --out-dir or "
            "--storage URL"
        )
    if len(found) == 2:
        raise UsageError(
            f"{str(folder)!r} holds both {SQLITE_FILE} and {JOURNAL_FILE}; choose one with --storage "
            f"sqlite:///{folder / SQLITE_FILE} or --storage {folder / JOURNAL_FILE}"
        )
    return f"sqlite:///{found[0]}" if found[0].name == SQLITE_FILE else str(found[0])


def readonly_storage(storage: str):
    """An Optuna storage that only reads ``storage``: a URL or the path of a SQLite file or of a
    journal file. Nothing is created or changed: a SQLite file is opened through a read-only file
    URI (its path escaped, so a ``%``, ``?`` or ``#`` in it is part of the file's name), a
    database server without creating Optuna's tables, and a file that does not exist is an error."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if storage.startswith("journal:"):  # how funnelbench search names a journal file
        storage = storage[len("journal:") :]
    if "://" not in storage:  # a file path
        path = Path(storage)
        if not path.is_file():
            raise UsageError(f"--storage {storage!r}: no such file; give a study.db, a journal.log or a storage URL")
        if path.suffix.lower() in SQLITE_SUFFIXES:
            return _readonly_sqlite(path)
        return JournalStorage(JournalFileBackend(str(path)))
    sqlite = re.fullmatch(r"sqlite(?:\+\w+)?:///(.+)", storage, re.DOTALL)
    if sqlite and not sqlite.group(1).startswith("file:"):  # the path as written (a '?' in it is no query)
        path = Path(sqlite.group(1))
        if not path.is_file():
            raise UsageError(
                f"--storage {redact(storage)!r}: no such file {str(path)!r}; give the study.db that "
                "funnelbench search wrote"
            )
        return _readonly_sqlite(path)
    if storage.startswith("sqlite") and not sqlite:
        raise UsageError(f"--storage {storage!r}: an in-memory SQLite database holds no study; give a study.db")
    return _readonly_rdb(storage, storage)  # a server (or a SQLite file URI as given)


def _readonly_sqlite(path: Path):
    """Optuna's RDB storage on the SQLite file ``path``, read-only (``mode=ro`` in a file URI)."""
    from urllib.parse import quote

    import sqlalchemy
    from sqlalchemy.engine import URL

    url = URL.create("sqlite", database="file:" + quote(str(path.absolute())), query={"mode": "ro", "uri": "true"})
    storage = _readonly_rdb(url.render_as_string(hide_password=False), str(path))
    with storage.engine.connect() as conn:  # a damaged page may read as "no study": check every page first
        problems = [
            " ".join(str(row[0]).split()) for row in conn.execute(sqlalchemy.text("PRAGMA quick_check")).fetchmany(3)
        ]
    if problems != ["ok"]:
        text = "; ".join(problems).replace("*** in database main ***", "").strip(" ;")
        raise UsageError(
            damaged_sqlite(f"sqlite:///{path}", str(path), text).replace(" and nothing was written to it", "")
        )
    return storage


def _readonly_rdb(url: str, given: str):
    """Optuna's RDB storage on ``url`` if the database already holds Optuna's tables (opening one
    that does not would create them), else a :class:`UsageError` naming ``given``."""
    import sqlalchemy
    from optuna.storages import RDBStorage

    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        tables = set(sqlalchemy.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    missing = [t for t in OPTUNA_TABLES if t not in tables]
    if missing:
        raise UsageError(
            f"cannot read the storage {redact(given)}: it is not an Optuna storage (no {', '.join(missing)} "
            "table); give the study.db, journal.log or database that funnelbench search wrote"
        )
    return RDBStorage(url, skip_table_creation=True)


def read_study(study_name: str, storage: str | None = None, out_dir: str | Path = DEFAULT_OUT_DIR):
    """Load a study written by ``funnelbench search`` (read-only).

    ``storage`` is an Optuna storage URL or a file path; by default it is found from the study's
    folder (:func:`default_storage`). A missing study, a study of another tool and a study with
    no trials are each a :class:`UsageError` with a one-line message (passwords redacted)."""
    import optuna
    import sqlalchemy.exc

    url = storage or default_storage(study_name, out_dir)
    shown = redact(url)
    try:
        opened = readonly_storage(url)
        names = optuna.study.get_all_study_names(opened)
        if study_name not in names:
            held = ", ".join(repr(n) for n in names[:10]) or "no study"
            raise UsageError(f"no study {study_name!r} in {shown}: it holds {held}; pass one of those with --study")
        study = optuna.load_study(study_name=study_name, storage=opened)
        study.get_trials(deepcopy=False)  # everything is read here, so that a damaged file is one line here
        marker = study.user_attrs.get("funnelbench")
    except (
        sqlalchemy.exc.SQLAlchemyError,
        optuna.exceptions.StorageInternalError,
        OSError,
        ValueError,
        ImportError,
        RuntimeError,
    ) as err:
        if isinstance(err, UsageError):
            raise
        raise UsageError(_unreadable(url, err)) from None
    if marker is None:
        raise UsageError(
            f"study {study_name!r} in {shown} was not written by funnelbench search (it has no "
            f"'funnelbench' study attribute); open it with optuna-dashboard {shown}"
        )
    if marker != MARKER:
        raise UsageError(
            f"study {study_name!r} is in the format {marker!r}, which this funnelbench does not know "
            f"(it reads {MARKER!r}); upgrade funnelbench"
        )
    if not study.get_trials(deepcopy=False):
        raise UsageError(
            f"study {study_name!r} in {shown} has no trials yet; run funnelbench search --study "
            f"{study_name} (or wait for its workers)"
        )
    return study


def _unreadable(url: str, err: BaseException) -> str:
    """One line for a storage that cannot be read: a damaged journal says where and how to keep
    what comes before the damage; a damaged SQLite file how SQLite reads back what it can."""
    path = url[len("journal:") :] if url.startswith("journal:") else url if "://" not in url else None
    if (
        path is not None
        and Path(path).suffix.lower() not in SQLITE_SUFFIXES
        and Path(path).is_file()
        and isinstance(err, ValueError)
    ):
        return journal_damage(Path(path), err)
    text = one_line(err)
    if "malformed" in text or "not a database" in text:
        return damaged_sqlite(url, path or url.split(":///", 1)[-1], text).replace(" and nothing was written to it", "")
    return f"cannot read the storage {redact(url)}: {text}"


__all__ = ["default_storage", "readonly_storage", "read_study", "OPTUNA_TABLES"]
