"""Writing results so that nothing is ever half-written: every file goes to a temporary name in
the target folder first and is renamed into place (atomic on POSIX). Tables are exported by
the file's suffix."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from .errors import UsageError

EXPORT_SUFFIXES = (".csv", ".md", ".json", ".tex")


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write ``data`` to ``path`` atomically; :class:`UsageError` if the folder is not writable."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as err:
        raise UsageError(f"cannot write {str(path)!r}: {err.strerror or err}; choose a writable path") from None
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private; give it the usual mode
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_export_path(path: str | os.PathLike) -> Path:
    """Fail early (before any long measurement) on an unknown suffix or an unwritable folder."""
    path = Path(path)
    if path.suffix.lower() not in EXPORT_SUFFIXES:
        raise UsageError(
            f"cannot export to {str(path)!r}: unknown suffix {path.suffix or '(none)'!r}; "
            f"use one of {', '.join(EXPORT_SUFFIXES)}"
        )
    folder = path.parent if str(path.parent) else Path(".")
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"cannot write {str(path)!r}: {str(probe)!r} is a file, not a folder; choose another path")
    if not _can_create_in(probe) or (path.exists() and not os.access(path, os.W_OK)) or path.is_dir():
        raise UsageError(f"cannot write {str(path)!r}: the folder is not writable; choose another path")
    return path


def _can_create_in(folder: Path) -> bool:
    """Whether a file can be created in ``folder`` (tried, not inferred from permission bits,
    which say yes to root in read-only places such as /proc)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".funnelbench-probe.", dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.unlink(tmp)
    return True


def export_records(records: list[dict], path: str | os.PathLike, title: str | None = None) -> Path:
    """Write flat records as ``.csv``, ``.md`` (GitHub markdown), ``.json`` or ``.tex`` (by suffix),
    atomically. Columns keep the records' names (units are in the names)."""
    import pandas as pd

    path = check_export_path(path)
    frame = pd.DataFrame.from_records(records)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        text = frame.to_csv(index=False)
    elif suffix == ".json":
        text = json.dumps(records, indent=2, default=str) + "\n"
    elif suffix == ".md":
        text = (f"{title}\n\n" if title else "") + frame.to_markdown(index=False) + "\n"
    else:
        text = frame.to_latex(index=False, escape=True, na_rep="")
    return atomic_write(path, text)
