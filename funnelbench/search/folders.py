"""A study's name and folder: the names that may be folder names, the folder ``<root>/<study>``,
and who owns it (``owner.json``): a folder that belongs to another study, or holds another
storage's study file or trial folders, is never written to.

Storage floor: it imports only :mod:`.storage` and :mod:`.vocabulary`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UsageError, redact
from ..exports import atomic_write
from .storage import storage_file
from .vocabulary import JOURNAL_FILE, OWNER_FILE, SQLITE_FILE, STUDY_ROOT

if TYPE_CHECKING:
    import optuna

# A study's name is its folder's name (runs/search/<study>/), and a space's name the default study's.
SAFE_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")


def check_name(name: str, what: str, fix: str) -> str:
    """``name`` if it is a safe folder name (letters, digits, ``.``, ``_``, ``-``; 1 to 100 of them;
    not ``.`` or ``..``), else a one-line :class:`UsageError` naming ``what`` and the ``fix``."""
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name) or name in (".", ".."):
        raise UsageError(
            f"{what} {name!r}: a name here is a folder's name, so it may hold only letters, digits, '.', "
            f"'_' and '-' (1 to 100 of them, not '.' or '..'); {fix}"
        )
    return name


def study_folder(root: str | os.PathLike | None, study_name: str) -> Path:
    """The study's folder, ``<root>/<study>`` (root: ``runs/search``), checked to lie directly
    under the root; every trial folder is a ``trial-<number>`` inside it."""
    root = STUDY_ROOT if root is None else Path(root)
    out = root / study_name
    if Path(os.path.normpath(out.absolute())).parent != Path(os.path.normpath(root.absolute())):
        raise UsageError(f"--study {study_name!r}: its folder {out} would not be inside {root}; choose another --study")
    return out


def claim_folder(out: Path, study: optuna.Study, url: str, *, trials_are_its_own: bool = False) -> None:
    """Make ``out`` the folder of ``study`` (identified by its ``uid`` attribute, written to
    ``out/owner.json``), or refuse: a folder that belongs to another study, or that holds another
    storage's study file, is never written to, so no trial of one study replaces another's
    record, history or checkpoint. ``trials_are_its_own``: a study from before owner files,
    whose trial folders are taken to be its own."""
    uid = study.user_attrs["uid"]
    owner = owner_of(out)
    if owner is not None:
        if owner.get("uid") != uid:
            raise UsageError(_taken(out, owner, url))
        return
    check_folder_free(out, url, trials_are_its_own=trials_are_its_own)
    atomic_write(
        out / OWNER_FILE, json.dumps({"study": study.study_name, "uid": uid, "storage": redact(url)}, indent=1) + "\n"
    )


def check_folder_free(out: Path, url: str, *, trials_are_its_own: bool = False) -> None:
    """Refuse a study the folder ``out`` cannot be given to: one that belongs to another study
    (its owner file), one that holds the SQLite or journal file of a study in another storage,
    or one with trial folders of a study whose storage is gone (unless ``trials_are_its_own``)."""
    owner = owner_of(out)
    if owner is not None:
        raise UsageError(_taken(out, owner, url))
    mine = storage_file(url)
    for name in (SQLITE_FILE, JOURNAL_FILE):
        other = out / name
        if other.exists() and (mine is None or other.absolute() != mine):
            raise UsageError(
                f"{out} holds {name}, the storage of another study of this name, and its trial folders; "
                f"this search's study is in {redact(url)} and would write its trials over them: choose "
                f"another --study (or move {out} away)"
            )
    trials = sorted(p.name for p in out.glob("trial-*")) if out.is_dir() else []
    if trials and not trials_are_its_own:
        raise UsageError(
            f"{out} holds trial folders ({', '.join(trials[:3])}{', ...' if len(trials) > 3 else ''}) of "
            f"a study that is not in {redact(url)} (its storage was moved or deleted); a new study would "
            f"write its trials over them: choose another --study (or move {out} away)"
        )


def owner_of(out: Path) -> dict | None:
    try:
        owner = json.loads((out / OWNER_FILE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"study": "?", "uid": None, "storage": f"an unreadable {out / OWNER_FILE}"}
    return owner if isinstance(owner, dict) else {"study": "?", "uid": None, "storage": "?"}


def _taken(out: Path, owner: dict, url: str) -> str:
    return (
        f"{out} belongs to study {owner.get('study')!r} in {owner.get('storage')} (its trial folders, records and "
        f"checkpoints); this search's study is in {redact(url)} and would write its trials over them: choose another "
        f"--study (or move {out} away)"
    )


__all__ = ["SAFE_NAME", "check_name", "study_folder", "claim_folder", "check_folder_free", "owner_of"]
