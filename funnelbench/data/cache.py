"""The on-disk cache of decoded, resized uint8 images: where it is, the key of an entry, and
building an entry safely (a lock per entry, a partial folder that resumes, a rename into place).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from filelock import FileLock, Timeout

from ..errors import UsageError
from ..exports import atomic_write

CACHE_ENV = "FUNNELBENCH_CACHE"
CACHE_FORMAT = 1


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else ``$FUNNELBENCH_CACHE``, else ``~/.cache/funnelbench``."""
    return Path(cache_dir or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "funnelbench").expanduser()


def _digest(obj) -> str:
    """16 hex digits of a JSON-able object: in entry names, keys and source identities."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Split:
    """One split in memory (or mapped from the cache): ``images`` is ``(N, 3, S, S)`` uint8
    (possibly with unreadable rows), ``index`` the rows that hold images, ``labels`` theirs."""

    images: np.ndarray
    index: np.ndarray
    labels: np.ndarray
    skipped: list[str] = field(default_factory=list)
    cache_path: Path | None = None

    def __len__(self) -> int:
        return len(self.index)

    def take(self, positions) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels at ``positions`` (0 ... len-1): uint8 ``(n, 3, S, S)``, int64 ``(n,)``."""
        positions = np.asarray(positions, dtype=np.int64)
        rows = self.index[positions]
        return torch.from_numpy(self.images[rows]), torch.from_numpy(self.labels[positions])


def _build_or_load(
    entry: Path,
    key: dict,
    n: int,
    size: int,
    labels: np.ndarray,
    read: Callable[[int], Iterator],
    progress: Callable | None,
) -> Split:
    """Load a complete cache entry, or build it.

    An entry is built in a folder beside it (``.<name>.partial``) and renamed into place when
    complete, so a reader finds a whole entry or none. Processes that need the same missing entry
    take turns through a lock file (``.<name>.lock``): the first builds it, the others wait
    (following its progress) and then load what it built. A build that was interrupted, even
    killed, resumes from its partial folder (the operating system releases a dead process's lock).
    """
    found = _open_complete(entry, key)
    if found is not None:
        return found
    partial = entry.with_name(f".{entry.name}.partial")
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(entry.with_name(f".{entry.name}.lock"))
        while True:
            try:
                lock.acquire(timeout=1)
                break
            except Timeout:  # another process is building it: show its progress
                if progress:
                    progress(_partial_done(partial, key), n)
    except OSError as err:
        raise UsageError(
            f"cannot write the data cache in {str(entry.parent)!r}: {err.strerror or err}; "
            f"choose a writable --cache-dir (or ${CACHE_ENV})"
        ) from None
    try:
        found = _open_complete(entry, key)  # built by another process while this one waited?
        if found is not None:
            return found
        if entry.exists():  # damaged (or another key under the same name): set aside, then delete
            trash = entry.with_name(f".{entry.name}.trash-{os.getpid()}")
            os.rename(entry, trash)
            shutil.rmtree(trash, ignore_errors=True)
        meta = _build(partial, key, n, size, labels, read, progress)
        os.rename(partial, entry)
    finally:
        lock.release()
    return _open_entry(entry, meta)


def _open_complete(entry: Path, key: dict) -> Split | None:
    """The entry if it is complete and holds ``key``, else None."""
    try:
        meta = json.loads((entry / "meta.json").read_text())
        return _open_entry(entry, meta) if meta.get("key") == key else None
    except (OSError, ValueError, AttributeError):
        return None


def _partial_done(folder: Path, key: dict) -> int:
    """How many images a (possibly running) build in ``folder`` has written."""
    try:
        partial = json.loads((folder / "partial.json").read_text())
        return int(partial["done"]) if partial.get("key") == key else 0
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return 0


def _build(
    folder: Path,
    key: dict,
    n: int,
    size: int,
    labels: np.ndarray,
    read: Callable[[int], Iterator],
    progress: Callable | None,
) -> dict:
    """Write a complete entry into ``folder`` (resuming an interrupted build there); its meta."""
    folder.mkdir(exist_ok=True)
    images_path, labels_path, partial_path = folder / "images.npy", folder / "labels.npy", folder / "partial.json"
    shape = (n, 3, size, size)
    try:
        partial = json.loads(partial_path.read_text())
        if partial.get("key") == key:
            done, skipped = int(partial["done"]), list(partial["skipped"])
            images = np.lib.format.open_memmap(images_path, mode="r+")
            stored = np.lib.format.open_memmap(labels_path, mode="r+")
            if images.shape != shape or stored.shape != (n,):
                raise ValueError("shape changed")
        else:
            raise ValueError("another key")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        done, skipped = 0, []
        images = np.lib.format.open_memmap(images_path, mode="w+", dtype=np.uint8, shape=shape)
        stored = np.lib.format.open_memmap(labels_path, mode="w+", dtype=np.int64, shape=(n,))
    if progress:
        progress(done, n)
    pos = done
    for chunk, ok, problems in read(done):
        m = len(ok)
        images[pos : pos + m] = chunk
        stored[pos : pos + m] = np.where(ok, labels[pos : pos + m], -1)
        skipped += problems
        pos += m
        images.flush()
        stored.flush()
        atomic_write(partial_path, json.dumps({"key": key, "done": pos, "skipped": skipped}))
        if progress:
            progress(pos, n)
    del images, stored
    meta = {"key": key, "n": n, "size": size, "skipped": skipped}
    atomic_write(folder / "meta.json", json.dumps(meta, indent=1))
    partial_path.unlink(missing_ok=True)
    return meta


def _open_entry(entry: Path, meta: dict) -> Split:
    images = np.load(entry / "images.npy", mmap_mode="r")
    stored = np.load(entry / "labels.npy")
    index = np.flatnonzero(stored >= 0)
    return Split(images, index, stored[index], list(meta.get("skipped", [])), entry)
