"""Where images come from: the built-in data, an ImageFolder tree (with its listing kept in an
index file) or a CIFAR folder, each seen through :class:`_Source`; :func:`open_source` picks
one from ``--data``. Also the decoding of image files (resize and centre crop).
"""

from __future__ import annotations

import functools
import json
import os
import pickle
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..errors import UsageError
from ..exports import atomic_write
from .builtin import BUILTIN, BUILTIN_SETS, BUILTIN_TRAIN_PER_CLASS, BUILTIN_VAL_PER_CLASS, CHUNK, BuiltinSet, builtin_set
from .cache import _digest, cache_root

# _PACKAGE_LOOKUPS: the built-in renderers (render_arrangement, ...) and _scan_class are looked up in ``funnelbench.data`` (the
# package) when they are called, not bound here at import, so that replacing
# ``funnelbench.data.render_arrangement`` (a test that checks the cache is read, not the
# source) replaces what the sources call.

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")
_RACY_NS = 2_000_000_000  # a folder changed this recently may change again within its timestamp's tick


def _scan_class(folder: Path) -> dict:
    """Every image under a class folder (nested folders too): ``files`` is ``[path relative to
    the folder, size, mtime_ns]`` sorted by path, ``dirs`` the modification time of each folder
    visited. A folder's time is read before it is listed, so a change during the scan shows as a
    newer time next time; a time less than ``_RACY_NS`` old is stored as ``None`` (never trusted:
    a change within the same clock tick would not move it)."""
    now = time.time_ns()
    dirs, files, todo = {}, [], [""]
    while todo:
        rel = todo.pop()
        path = folder / rel if rel else folder
        mtime = path.stat().st_mtime_ns
        dirs[rel] = mtime if now - mtime > _RACY_NS else None
        with os.scandir(path) as entries:
            for e in entries:
                name = f"{rel}/{e.name}" if rel else e.name
                if e.is_dir(follow_symlinks=False):
                    todo.append(name)
                elif os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS and e.is_file():
                    st = e.stat()
                    files.append([name, st.st_size, st.st_mtime_ns])
    return {"dirs": dirs, "files": sorted(files)}


def _unchanged(folder: Path, scan: dict) -> bool:
    """Whether every folder of an earlier scan still has the time it had (stats folders, not files)."""
    try:
        return all(mtime is not None and (folder / rel if rel else folder).stat().st_mtime_ns == mtime
                   for rel, mtime in scan["dirs"].items())
    except (OSError, KeyError, TypeError, AttributeError):
        return False


class _Source:
    """Where images come from: class names, the label of every item of a split, and a reader
    that yields decoded ``(n, 3, S, S)`` uint8 chunks of chosen items (with a mask of the ones
    that could be read)."""

    kind = ""
    name = ""  # in records: "synthetic-arrangement", "imagefolder:/data/imagenet", ...
    slug = ""  # in cache folder names
    note = ""
    hflip_ok = True  # may training flip images horizontally without changing their class?

    def classes(self) -> list[str]:
        raise NotImplementedError

    def labels(self, split: str) -> np.ndarray:
        raise NotImplementedError

    def identity(self, split: str, items: np.ndarray) -> dict:
        """What the cache key needs to tell this data apart from other data."""
        raise NotImplementedError

    def read(self, split: str, items: np.ndarray, size: int, workers: int) -> Iterator[tuple[np.ndarray, np.ndarray, list[str]]]:
        """Chunks ``(uint8 images, ok mask, problems)`` of ``items`` in order."""
        raise NotImplementedError


class _Builtin(_Source):
    """A built-in synthetic dataset (:data:`~funnelbench.data.builtin.BUILTIN_SETS`)."""

    kind = "builtin"
    hflip_ok = False

    def __init__(self, train_per_class: int, val_per_class: int, spec: BuiltinSet = BUILTIN_SETS[BUILTIN]):
        self.spec = spec
        self.name = self.slug = spec.name
        self.note = spec.note
        self.per_class = {"train": train_per_class, "val": val_per_class}

    def classes(self) -> list[str]:
        return list(self.spec.classes)

    def labels(self, split):
        k = len(self.spec.classes)
        return np.arange(self.per_class[split] * k) % k

    def identity(self, split, items):
        return {"source": self.spec.name, "version": self.spec.version,
                "pool": int(self.per_class[split] * len(self.spec.classes)), "items": _digest(items.tolist())}

    def read(self, split, items, size, workers):
        from .. import data  # the renderer is looked up in the package: see _PACKAGE_LOOKUPS

        render = getattr(data, self.spec.render)
        # Items are rendered in contiguous runs; the subset of the built-in data is always a
        # whole prefix, so this is one run in practice.
        for lo in range(0, len(items), CHUNK):
            part = items[lo: lo + CHUNK]
            first, last = int(part[0]), int(part[-1]) + 1
            x, _ = render(split, first, last, size)
            yield x[torch.from_numpy(part - first)].numpy(), np.ones(len(part), bool), []


class _ImageFolder(_Source):
    """An ImageFolder tree. Its listing (every image's path, size and modification time) is kept
    in an index file in the cache folder, one entry per class folder keyed by the modification
    times of that folder and its subfolders: a later run stats the folders, not the images, and
    lists again only the class folders whose time moved (a file added, removed, renamed or
    replaced through a rename). Sizes and times of the chosen images are part of the cache key."""

    kind = "imagefolder"
    note = "an ImageFolder tree"

    def __init__(self, root: Path, index_path: Path):
        self.root = root
        self.name, self.slug = f"imagefolder:{root}", f"imagefolder-{root.name}"
        train, val = root / "train", root / "val"
        self.split_dirs = {"train": train, "val": val}
        names = {s: sorted(p.name for p in d.iterdir() if p.is_dir()) for s, d in self.split_dirs.items()}
        if not names["train"]:
            raise UsageError(f"--data {root}: {train} has no class folders; expected train/<class>/<image> "
                             "and val/<class>/<image> (the ImageNet layout)")
        if names["train"] != names["val"]:
            only_train = sorted(set(names["train"]) - set(names["val"]))
            only_val = sorted(set(names["val"]) - set(names["train"]))
            detail = "; ".join(x for x in (f"only in train: {_few(only_train)}" if only_train else "",
                                           f"only in val: {_few(only_val)}" if only_val else "") if x)
            raise UsageError(f"--data {root}: train and val have different classes ({detail}); "
                             "give both splits the same class folders")
        self._classes = names["train"]
        index = self._listing(index_path)
        self._files: dict[str, list[list]] = {}  # split -> [["<class>/<path>", size, mtime_ns], ...]
        self._labels: dict[str, np.ndarray] = {}
        for split, folder in self.split_dirs.items():
            files, labels = [], []
            for i, c in enumerate(self._classes):
                found = index[split][c]["files"]
                files += [[f"{c}/{f}", size, mtime] for f, size, mtime in found]
                labels += [i] * len(found)
            if not files:
                raise UsageError(f"--data {root}: no images in {folder} (looked for {', '.join(IMAGE_EXTENSIONS)} "
                                 "files in its class folders)")
            self._files[split], self._labels[split] = files, np.asarray(labels, dtype=np.int64)

    def _listing(self, index_path: Path) -> dict:
        """``{split: {class: scan}}`` from the index, listing again the class folders that changed."""
        from . import _scan_class  # looked up in the package: see _PACKAGE_LOOKUPS

        try:
            index = json.loads(index_path.read_text())
            if index.get("format") != 1 or index.get("root") != str(self.root):
                raise ValueError("another index")
        except (OSError, ValueError, AttributeError):
            index = {}
        splits, changed = {}, False
        for split, folder in self.split_dirs.items():
            known = index.get("splits", {}).get(split, {})
            splits[split] = {}
            for c in self._classes:
                scan = known.get(c)
                if scan is None or not _unchanged(folder / c, scan):
                    scan, changed = _scan_class(folder / c), True
                splits[split][c] = scan
        if changed or splits != index.get("splits"):
            atomic_write(index_path, json.dumps({"format": 1, "root": str(self.root), "splits": splits}))
        return splits

    def classes(self):
        return self._classes

    def labels(self, split):
        return self._labels[split]

    def identity(self, split, items):
        files = [self._files[split][i] for i in items.tolist()]  # paths, sizes and modification times
        return {"source": str(self.root), "split_dir": split, "items": _digest(files)}

    def read(self, split, items, size, workers):
        paths = [str(self.split_dirs[split] / self._files[split][i][0]) for i in items.tolist()]
        loader = torch.utils.data.DataLoader(_DecodeFiles(paths, size), batch_size=64, num_workers=workers,
                                             collate_fn=functools.partial(_collate_decoded, size=size))
        for images, ok, problems in loader:
            yield images, ok, problems


class _Cifar(_Source):
    kind = "cifar"
    note = "CIFAR in the python pickle format"

    def __init__(self, root: Path, variant: str):
        from torchvision.datasets import CIFAR10, CIFAR100

        base = CIFAR10 if variant == "cifar10" else CIFAR100

        # Presence of the files is checked, not their md5 sums, so a re-pickled subset works too.
        class NoChecksum(base):
            train_list = [[f, None] for f, _ in base.train_list]
            test_list = [[f, None] for f, _ in base.test_list]
            meta = {**base.meta, "md5": None}

        self.root, self.variant = root, variant
        self.name, self.slug = f"{variant}:{root}", f"{variant}-{root.name}"
        self._sets = {}
        try:
            for split, train in (("train", True), ("val", False)):
                self._sets[split] = NoChecksum(str(root), train=train, download=False)
        except (RuntimeError, OSError, pickle.UnpicklingError, KeyError, EOFError) as err:
            raise UsageError(f"--data {root}: cannot read {variant} ({err}); expected the python version "
                             f"({base.base_folder}/ with its batches and meta file)") from None
        self._classes = list(self._sets["train"].classes)

    def classes(self):
        return self._classes

    def labels(self, split):
        return np.asarray(self._sets[split].targets, dtype=np.int64)

    def identity(self, split, items):
        return {"source": str(self.root), "variant": self.variant, "split_dir": split, "items": _digest(items.tolist())}

    def read(self, split, items, size, workers):
        data = self._sets[split].data  # (N, 32, 32, 3) uint8
        for lo in range(0, len(items), CHUNK):
            part = items[lo: lo + CHUNK]
            x = torch.from_numpy(np.ascontiguousarray(data[part])).permute(0, 3, 1, 2)
            if x.shape[-1] != size:
                x = resize_uint8(x, size)
            yield x.numpy(), np.ones(len(part), bool), []


def _few(names: list[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")



def open_source(data: str | os.PathLike | None, *, train_per_class: int | None = None,
                val_per_class: int | None = None, cache_dir: str | os.PathLike | None = None) -> _Source:
    """The source named by ``--data``; a one-line :class:`UsageError` when it is not one. An
    ImageFolder tree's listing is kept under the cache folder (see :func:`cache_root`)."""
    spec = builtin_set(data)
    if spec is not None:
        return _Builtin(train_per_class or BUILTIN_TRAIN_PER_CLASS, val_per_class or BUILTIN_VAL_PER_CLASS, spec)
    root = Path(data).expanduser()
    if not root.exists():
        raise UsageError(f"--data {data}: no such file or folder; give an ImageFolder tree, a CIFAR folder, "
                         "or leave --data out for the built-in synthetic dataset")
    if not root.is_dir():
        raise UsageError(f"--data {data}: is a file; give the folder that holds train/ and val/ (or the CIFAR folder)")
    root = root.resolve()
    for variant, folder in (("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")):
        if root.name == folder:
            return _Cifar(root.parent, variant)
        if (root / folder).is_dir():
            return _Cifar(root, variant)
    if (root / "train").is_dir() and (root / "val").is_dir():
        index = cache_root(cache_dir) / "imagefolder-index" / f"{root.name}-{_digest(str(root))}.json"
        return _ImageFolder(root, index)
    raise UsageError(f"--data {data}: not an ImageFolder tree (train/<class>/<image> and val/<class>/<image>) nor a "
                     "CIFAR-10/100 python folder (cifar-10-batches-py, cifar-100-python)")


# ----------------------------------------------------------------------------- decoding


def resize_uint8(x: torch.Tensor, size: int) -> torch.Tensor:
    """Shorter side to ``size`` (antialiased bilinear), then a centre crop to ``size`` x ``size``
    (torchvision's ``Resize(size)`` + ``CenterCrop(size)``), for a uint8 ``(..., 3, H, W)``."""
    from torchvision.transforms.v2 import functional as TF

    return TF.center_crop(TF.resize(x, size, antialias=True), size)


def decode_file(path: str, size: int) -> torch.Tensor:
    """One image file -> ``(3, size, size)`` uint8: RGB, shorter side to ``size``, centre crop.
    JPEGs are decoded at a reduced scale first when they are much larger (PIL ``draft``)."""
    from PIL import Image
    from torchvision.transforms.v2 import functional as TF

    with Image.open(path) as img:
        img.draft("RGB", (size, size))
        img = img.convert("RGB")
        img = TF.center_crop(TF.resize(img, size, antialias=True), size)
        return TF.pil_to_tensor(img)


class _DecodeFiles(torch.utils.data.Dataset):
    def __init__(self, paths: list[str], size: int):
        self.paths, self.size = paths, size

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        try:
            return decode_file(self.paths[i], self.size), None
        except Exception as err:  # any unreadable file is skipped and counted, never a crash
            return None, f"{self.paths[i]} ({type(err).__name__}: {err})"


def _collate_decoded(items, size: int):
    images = np.zeros((len(items), 3, size, size), np.uint8)
    ok = np.zeros(len(items), bool)
    problems = []
    for j, (x, problem) in enumerate(items):
        if x is None:
            problems.append(problem)
        else:
            images[j], ok[j] = x.numpy(), True
    return images, ok, problems
