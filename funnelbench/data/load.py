"""The public loader: open a source, make the train, val and test splits of a run from its own
splits, cut a deterministic subset, and return them from the cache (building the entries that are
missing)."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import UsageError
from .cache import CACHE_FORMAT, Split, _build_or_load, _digest, _open_complete, cache_root
from .sources import open_source


def choose_classes(num_classes: int, k: int | None, seed: int, *, first: bool = False) -> list[int]:
    """``k`` of ``num_classes`` class indices chosen with ``seed`` (sorted), or the first ``k``
    (``first``: downsampled ImageNet, as ImageNet16-120); all when ``k`` is None."""
    if k is None or k == num_classes:
        return list(range(num_classes))
    if not 2 <= k <= num_classes:
        raise UsageError(f"--classes {k}: the data has {num_classes} classes; choose 2 to {num_classes}")
    if first:
        return list(range(k))
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


CARVE_SEED = 0  # carved validation images are the same in every run, whatever --subset-seed says


def carve(labels: np.ndarray, classes: list[int], per_class: int, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(val, rest)``: ``per_class`` items of each chosen class, the same every time (a fixed
    permutation of each class's items, seeded with ``CARVE_SEED`` and the class, so a class's
    validation images do not depend on the other classes chosen; a smaller ``per_class`` takes a
    subset of a larger one's), and the items of those classes left for training."""
    val, rest = [], []
    for c in classes:
        idx = np.flatnonzero(labels == c)
        if per_class >= len(idx):
            raise UsageError(
                f"--val-per-class {per_class}: class {names[c]!r} has {len(idx)} training images, and "
                "validation images are carved from them; carve fewer so that some are left to train on"
            )
        order = np.random.default_rng([CARVE_SEED, c]).permutation(len(idx))
        val.append(idx[order[:per_class]])
        rest.append(idx[order[per_class:]])
    return np.sort(np.concatenate(val)), np.sort(np.concatenate(rest))


@dataclass(frozen=True)
class SplitPlan:
    """Where one split of a run comes from: the source's split (``native``), the items of it, and
    what records say about it."""

    native: str
    items: np.ndarray
    described: str


def split_plan(
    source,
    chosen: list[int],
    *,
    test_split: bool | None,
    train_per_class: int | None,
    val_per_class: int | None,
    test_per_class: int | None,
    subset_seed: int,
) -> dict[str, SplitPlan]:
    """The train, val and (with a test split) test split of a run, from a source's own splits.

    * No test split (``test_split`` False, or None for the built-in data, ImageFolder and CIFAR):
      validation on the source's held-out images, as funnelbench always did.
    * A test split from a source that renders one (the built-in data): train and val as without,
      and its test split, rendered from a seed of its own (``test_per_class``, default 250).
    * Otherwise (the default for idx and downsampled ImageNet): ``val_per_class`` validation
      images per class carved from the training images (:func:`carve`; default: the source's
      ``carve_per_class``), training on the rest (``train_per_class`` of them, chosen with
      ``subset_seed``), and the held-out images as the test split (``test_per_class`` of them).
    """
    three = source.test_by_default if test_split is None else bool(test_split)
    names = source.classes()
    train_labels = source.labels("train")
    if not three:
        if test_per_class is not None:
            raise UsageError(
                f"--test-per-class {test_per_class}: there is no test split (validation is on "
                f"{source.held_out_name}); add --test-split"
            )
        return {
            "train": SplitPlan(
                "train", choose_items(train_labels, chosen, train_per_class, subset_seed), "the training images"
            ),
            "val": SplitPlan(
                source.held_out,
                choose_items(source.labels(source.held_out), chosen, val_per_class, subset_seed),
                source.held_out_name,
            ),
        }
    if source.renders_test:
        return {
            "train": SplitPlan(
                "train", choose_items(train_labels, chosen, train_per_class, subset_seed), "the training images"
            ),
            "val": SplitPlan(
                "val", choose_items(source.labels("val"), chosen, val_per_class, subset_seed), source.held_out_name
            ),
            "test": SplitPlan(
                "test",
                choose_items(source.labels("test"), chosen, test_per_class, subset_seed),
                "a test split rendered from a seed of its own",
            ),
        }
    per_class = val_per_class or source.carve_per_class
    val, rest = carve(train_labels, chosen, per_class, names)
    left = np.full_like(train_labels, -1)
    left[rest] = train_labels[rest]
    held = source.held_out
    return {
        "train": SplitPlan(
            "train",
            choose_items(left, chosen, train_per_class, subset_seed),
            "the training images not carved for validation",
        ),
        "val": SplitPlan(
            "train", val, f"carved from the training images: {per_class} per class, stratified, fixed seed {CARVE_SEED}"
        ),
        "test": SplitPlan(
            held, choose_items(source.labels(held), chosen, test_per_class, subset_seed), source.held_out_name
        ),
    }


@dataclass
class ImageData:
    """A dataset ready for training: its splits, class names, and how to name them honestly.
    ``test`` is None when the run has no test split (``test_from`` then says why)."""

    name: str  # "synthetic-arrangement", "imagefolder:/data/imagenet", "cifar10:/data/cifar", "fashion-mnist"
    kind: str  # builtin | imagefolder | cifar | idx | downsampled-imagenet
    note: str
    classes: list[str]
    train: Split
    val: Split
    image_size: int
    hflip_ok: bool
    test: Split | None = None
    val_from: str = ""  # where the validation images come from (records: val_from)
    test_from: str = ""  # where the test images come from, or why there are none (records: test_from)
    crop_ok: bool = True  # may training shift the images by a padded random crop (the source says)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def skipped(self) -> int:
        return sum(len(s.skipped) for s in (self.train, self.val, self.test) if s is not None)


def load_data(
    data: str | os.PathLike | None = None,
    *,
    image_size: int,
    classes: int | None = None,
    train_per_class: int | None = None,
    val_per_class: int | None = None,
    subset_seed: int = 0,
    test_split: bool | None = None,
    test_per_class: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    workers: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
) -> ImageData:
    """Open a source, make its splits (:func:`split_plan`), cut the subset and return them as
    cached uint8 arrays.

    ``progress(description, done, total)`` is called while a cache entry is being built.
    Unreadable images are skipped (and listed in ``Split.skipped``) with a warning.
    """
    if image_size < 8:
        raise UsageError(f"--image-size {image_size}: too small; use at least 8 px")
    for flag, value in (
        ("--train-per-class", train_per_class),
        ("--val-per-class", val_per_class),
        ("--test-per-class", test_per_class),
    ):
        if value is not None and value < 1:
            raise UsageError(f"{flag} {value}: must be at least 1")
    source = open_source(
        data,
        train_per_class=train_per_class,
        val_per_class=val_per_class,
        test_per_class=test_per_class,
        cache_dir=cache_dir,
    )
    all_classes = source.classes()
    chosen = choose_classes(len(all_classes), classes, subset_seed, first=source.first_classes)
    remap = np.full(len(all_classes), -1, np.int64)
    remap[chosen] = np.arange(len(chosen))
    plans = split_plan(
        source,
        chosen,
        test_split=test_split,
        train_per_class=train_per_class,
        val_per_class=val_per_class,
        test_per_class=test_per_class,
        subset_seed=subset_seed,
    )
    root = cache_root(cache_dir)
    splits = {}
    for split, plan in plans.items():
        native, items = plan.native, plan.items
        labels = source.labels(native)
        if len(items) == 0:
            raise UsageError(f"--data {data}: the {split} split has no images of the chosen classes")
        key = {
            "format": CACHE_FORMAT,
            "split": split,
            "size": image_size,
            "classes": [all_classes[c] for c in chosen],
            **source.identity(native, items),
        }
        entry = root / f"{source.slug}-{split}-{image_size}px-{_digest(key)[:10]}"
        desc = f"caching {source.slug} {split} images at {image_size} px"
        report = (lambda done, total: progress(desc, done, total)) if progress else None

        def read(start, items=items, native=native):
            return source.read(native, items[start:], image_size, workers)

        if _open_complete(entry, key) is None:
            source.prepare(native)  # a corrupt file fails here, before anything is written
        result = _build_or_load(entry, key, len(items), image_size, remap[labels[items]], read, report)
        if result.skipped:
            warnings.warn(
                f"skipped {len(result.skipped)} unreadable {split} image(s), e.g. {result.skipped[0]}", stacklevel=2
            )
        if len(result) == 0:
            raise UsageError(f"--data {data}: none of the {split} images could be read (e.g. {result.skipped[0]})")
        splits[split] = result
    test = plans.get("test")
    return ImageData(
        source.name,
        source.kind,
        source.note,
        [all_classes[c] for c in chosen],
        splits["train"],
        splits["val"],
        image_size,
        source.hflip_ok,
        test=splits.get("test"),
        val_from=plans["val"].described,
        test_from=test.described if test else "none (--test-split holds one out)",
        crop_ok=source.crop_ok,
    )
