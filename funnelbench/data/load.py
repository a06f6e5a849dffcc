"""The public loader: open a source, cut a deterministic subset, and return both splits from
the cache (building the entries that are missing)."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import UsageError
from .cache import CACHE_FORMAT, Split, _build_or_load, _digest, cache_root
from .sources import open_source


def choose_classes(num_classes: int, k: int | None, seed: int) -> list[int]:
    """``k`` of ``num_classes`` class indices chosen with ``seed`` (sorted); all when ``k`` is None."""
    if k is None or k == num_classes:
        return list(range(num_classes))
    if not 2 <= k <= num_classes:
        raise UsageError(f"--classes {k}: the data has {num_classes} classes; choose 2 to {num_classes}")
    return sorted(np.random.default_rng(seed).choice(num_classes, size=k, replace=False).tolist())


def choose_items(labels: np.ndarray, classes: list[int], per_class: int | None, seed: int) -> np.ndarray:
    """Indices (sorted) of up to ``per_class`` items of each chosen class, picked with ``seed``."""
    rng = np.random.default_rng(seed + 1)
    chosen = []
    for c in classes:
        idx = np.flatnonzero(labels == c)
        if per_class is not None and per_class < len(idx):
            idx = np.sort(rng.choice(idx, size=per_class, replace=False))
        chosen.append(idx)
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


@dataclass
class ImageData:
    """A dataset ready for training: both splits, class names, and how to name it honestly."""

    name: str  # "synthetic-arrangement", "imagefolder:/data/imagenet", "cifar10:/data/cifar"
    kind: str  # builtin | imagefolder | cifar
    note: str
    classes: list[str]
    train: Split
    val: Split
    image_size: int
    hflip_ok: bool

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def skipped(self) -> int:
        return len(self.train.skipped) + len(self.val.skipped)


def load_data(data: str | os.PathLike | None = None, *, image_size: int, classes: int | None = None,
              train_per_class: int | None = None, val_per_class: int | None = None, subset_seed: int = 0,
              cache_dir: str | os.PathLike | None = None, workers: int = 0,
              progress: Callable[[str, int, int], None] | None = None) -> ImageData:
    """Open a source, cut the subset and return both splits as cached uint8 arrays.

    ``progress(description, done, total)`` is called while a cache entry is being built.
    Unreadable images are skipped (and listed in ``Split.skipped``) with a warning.
    """
    if image_size < 8:
        raise UsageError(f"--image-size {image_size}: too small; use at least 8 px")
    for flag, value in (("--train-per-class", train_per_class), ("--val-per-class", val_per_class)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} {value}: must be at least 1")
    source = open_source(data, train_per_class=train_per_class, val_per_class=val_per_class, cache_dir=cache_dir)
    all_classes = source.classes()
    chosen = choose_classes(len(all_classes), classes, subset_seed)
    remap = np.full(len(all_classes), -1, np.int64)
    remap[chosen] = np.arange(len(chosen))
    root = cache_root(cache_dir)
    splits = {}
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        labels = source.labels(split)
        items = choose_items(labels, chosen, per_class, subset_seed)
        if len(items) == 0:
            raise UsageError(f"--data {data}: the {split} split has no images of the chosen classes")
        key = {"format": CACHE_FORMAT, "split": split, "size": image_size, "classes": [all_classes[c] for c in chosen],
               **source.identity(split, items)}
        entry = root / f"{source.slug}-{split}-{image_size}px-{_digest(key)[:10]}"
        desc = f"caching {source.slug} {split} images at {image_size} px"
        report = (lambda done, total: progress(desc, done, total)) if progress else None

        def read(start, items=items, split=split):
            return source.read(split, items[start:], image_size, workers)

        result = _build_or_load(entry, key, len(items), image_size, remap[labels[items]], read, report)
        if result.skipped:
            warnings.warn(f"skipped {len(result.skipped)} unreadable {split} image(s), e.g. {result.skipped[0]}",
                          stacklevel=2)
        if len(result) == 0:
            raise UsageError(f"--data {data}: none of the {split} images could be read (e.g. {result.skipped[0]})")
        splits[split] = result
    return ImageData(source.name, source.kind, source.note,
                     [all_classes[c] for c in chosen], splits["train"], splits["val"], image_size, source.hflip_ok)
