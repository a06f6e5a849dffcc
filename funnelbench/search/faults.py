"""What goes wrong with a study's storage, in one line: the storage error, the first line of
any error (passwords redacted), the exceptions that mean "the storage is in trouble", and the
messages for a damaged SQLite file or journal that say what is kept and how to keep it.

The lowest floor of the search's storage: it imports nothing of the package but the errors.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import optuna

from ..errors import FunnelbenchError, redact


class StorageError(FunnelbenchError):
    """The study's storage cannot be reached or written (PostgreSQL down, a read-only folder)."""


def one_line(err: BaseException) -> str:
    """The error's first line, without passwords (a driver's message may quote the URL)."""
    if isinstance(err, OSError) and err.strerror:
        return redact(f"{err.filename}: {err.strerror}" if err.filename else err.strerror)
    while isinstance(err, optuna.exceptions.StorageInternalError) and err.__cause__ is not None:
        err = err.__cause__  # Optuna's "An exception is raised during the commit": the cause says what
    text = str(getattr(err, "orig", None) or err).strip().splitlines()
    return redact(text[0]) if text else type(err).__name__


def error_line(err: BaseException) -> str:
    """``Type: first line`` of an error, without passwords, at most 500 characters: a failed
    trial's ``error`` attribute and a storage that cannot be opened."""
    text = redact(str(err)).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")[:500]


def storage_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "the storage is in trouble" (for ``except``)."""
    errors: list[type[BaseException]] = [OSError, optuna.exceptions.StorageInternalError]
    with contextlib.suppress(ImportError):
        import sqlalchemy.exc

        errors.append(sqlalchemy.exc.SQLAlchemyError)
    return tuple(errors)


def damaged_sqlite(url: str, path: str | None, detail: str) -> str:
    """One line: a damaged SQLite study, and how SQLite reads back what it still can."""
    return (
        f"storage {redact(url)}: the SQLite file is damaged and nothing was written to it; SQLite can often "
        f"read back the trials before the damage: 'sqlite3 {path} .recover | sqlite3 recovered.db', then "
        f"--storage sqlite:///recovered.db (SQLite says: {detail[:80]})"
    )


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
    return (
        f"storage journal:{path} is damaged at {where}: {type(err).__name__}: {one_line(err)}; the "
        f"{max(line_no - 1, 0)} operations before it (every trial they finish) are intact: keep them with "
        f"'mv {path} {path}.damaged && head -c {offset} {path}.damaged > {path}' and re-run the command"
    )


__all__ = ["StorageError", "one_line", "error_line", "storage_errors", "damaged_sqlite", "journal_damage"]
