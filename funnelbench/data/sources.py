"""Where images come from: the built-in data, an ImageFolder tree (with its listing kept in an
index file), a CIFAR folder, idx files (Fashion-MNIST from Debian's package, MNIST, ...) or
downsampled-ImageNet batches, each seen through :class:`_Source`; :func:`open_source` picks one
from ``--data``. Also the decoding of image files (resize and centre crop).
"""

from __future__ import annotations

import functools
import io
import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..errors import UsageError
from ..exports import atomic_write
from .builtin import (
    BUILTIN,
    BUILTIN_SETS,
    BUILTIN_TRAIN_PER_CLASS,
    BUILTIN_VAL_PER_CLASS,
    CHUNK,
    BuiltinSet,
    builtin_set,
)
from .cache import _digest, cache_root
from .files import IMAGE_EXTENSIONS, _collate_decoded, _DecodeFiles, _unchanged, resize_uint8
from .formats import IDX_IMAGES, IDX_LABELS, batch_files, idx_header, read_idx

# _PACKAGE_LOOKUPS: the built-in renderers (render_arrangement, ...) and _scan_class are looked up in ``funnelbench.data`` (the
# package) when they are called, not bound here at import, so that replacing
# ``funnelbench.data.render_arrangement`` (a test that checks the cache is read, not the
# source) replaces what the sources call.


class _Source:
    """Where images come from: class names, the label of every item of a split, and a reader
    that yields decoded ``(n, 3, S, S)`` uint8 chunks of chosen items (with a mask of the ones
    that could be read).

    Its splits are its own (``train`` and ``held_out``; the built-in data renders a ``test``
    split too); :func:`~funnelbench.data.load.load_data` makes the train, val and test splits of
    a run from them (see :func:`~funnelbench.data.load.split_plan`)."""

    kind = ""
    name = ""  # in records: "synthetic-arrangement", "imagefolder:/data/imagenet", ...
    slug = ""  # in cache folder names
    note = ""
    hflip_ok = True  # may training flip images horizontally without changing their class?
    # May training shift images by a padded random crop? Not for centred, size-normalised images
    # (MNIST-style idx files): on Fashion-MNIST the crop cost 21 points of a 4-epoch proxy's
    # validation top-1 (results/proxy_recipe.md).
    crop_ok = True
    held_out = "val"  # the source's labelled images apart from train: val, or the test split when there is one
    held_out_name = "val/"  # what records call them
    test_by_default = False  # a test split unless --no-test-split (True), or only with --test-split (False)
    carve_per_class = 50  # validation images per class carved from train when the held-out images are the test split
    renders_test = False  # the built-in data: a test split of its own (rendered), nothing carved
    first_classes = False  # --classes K: the first K classes (downsampled ImageNet), else K chosen with --subset-seed

    def prepare(self, split: str) -> None:
        """Read and check what a cache build of ``split`` will need, before the cache is touched
        (so a corrupt file writes nothing)."""

    def classes(self) -> list[str]:
        """The class names (a source that reads them once keeps them in ``_classes``)."""
        return self._classes

    def labels(self, split: str) -> np.ndarray:
        """Every image's class number in ``split`` (kept in ``_labels`` by sources that read them once)."""
        return self._labels[split]

    def identity(self, split: str, items: np.ndarray) -> dict:
        """What the cache key needs to tell this data apart from other data."""
        raise NotImplementedError

    def read(
        self, split: str, items: np.ndarray, size: int, workers: int
    ) -> Iterator[tuple[np.ndarray, np.ndarray, list[str]]]:
        """Chunks ``(uint8 images, ok mask, problems)`` of ``items`` in order."""
        raise NotImplementedError


class _Builtin(_Source):
    """A built-in synthetic dataset (:data:`~funnelbench.data.builtin.BUILTIN_SETS`)."""

    kind = "builtin"
    hflip_ok = False
    held_out_name = "the val images (rendered from a seed of their own)"
    renders_test = True

    def __init__(
        self,
        train_per_class: int,
        val_per_class: int,
        spec: BuiltinSet = BUILTIN_SETS[BUILTIN],
        test_per_class: int = BUILTIN_VAL_PER_CLASS,
    ):
        self.spec = spec
        self.name = self.slug = spec.name
        self.note = spec.note
        self.per_class = {"train": train_per_class, "val": val_per_class, "test": test_per_class}

    def classes(self) -> list[str]:
        return list(self.spec.classes)

    def labels(self, split):
        k = len(self.spec.classes)
        return np.arange(self.per_class[split] * k) % k

    def identity(self, split, items):
        return {
            "source": self.spec.name,
            "version": self.spec.version,
            "pool": int(self.per_class[split] * len(self.spec.classes)),
            "items": _digest(items.tolist()),
        }

    def read(self, split, items, size, workers):
        from .. import data  # the renderer is looked up in the package: see _PACKAGE_LOOKUPS

        render = getattr(data, self.spec.render)
        # Items are rendered in contiguous runs; the subset of the built-in data is always a
        # whole prefix, so this is one run in practice.
        for lo in range(0, len(items), CHUNK):
            part = items[lo : lo + CHUNK]
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
            raise UsageError(
                f"--data {root}: {train} has no class folders; expected train/<class>/<image> "
                "and val/<class>/<image> (the ImageNet layout)"
            )
        if names["train"] != names["val"]:
            only_train = sorted(set(names["train"]) - set(names["val"]))
            only_val = sorted(set(names["val"]) - set(names["train"]))
            detail = "; ".join(
                x
                for x in (
                    f"only in train: {_few(only_train)}" if only_train else "",
                    f"only in val: {_few(only_val)}" if only_val else "",
                )
                if x
            )
            raise UsageError(
                f"--data {root}: train and val have different classes ({detail}); "
                "give both splits the same class folders"
            )
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
                raise UsageError(
                    f"--data {root}: no images in {folder} (looked for {', '.join(IMAGE_EXTENSIONS)} "
                    "files in its class folders)"
                )
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

    def identity(self, split, items):
        files = [self._files[split][i] for i in items.tolist()]  # paths, sizes and modification times
        return {"source": str(self.root), "split_dir": split, "items": _digest(files)}

    def read(self, split, items, size, workers):
        paths = [str(self.split_dirs[split] / self._files[split][i][0]) for i in items.tolist()]
        loader = torch.utils.data.DataLoader(
            _DecodeFiles(paths, size),
            batch_size=64,
            num_workers=workers,
            collate_fn=functools.partial(_collate_decoded, size=size),
        )
        for images, ok, problems in loader:
            yield images, ok, problems


class _Cifar(_Source):
    kind = "cifar"
    note = "CIFAR in the python pickle format"
    held_out_name = "the official test batch"

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
            raise UsageError(
                f"--data {root}: cannot read {variant} ({err}); expected the python version "
                f"({base.base_folder}/ with its batches and meta file)"
            ) from None
        self._classes = list(self._sets["train"].classes)
        self.carve_per_class = 5000 // len(self._classes)  # 5,000 in all: 500 per class of CIFAR-10, 50 of CIFAR-100

    def classes(self):
        return self._classes

    def labels(self, split):
        return np.asarray(self._sets[split].targets, dtype=np.int64)

    def identity(self, split, items):
        return {"source": str(self.root), "variant": self.variant, "split_dir": split, "items": _digest(items.tolist())}

    def read(self, split, items, size, workers):
        data = self._sets[split].data  # (N, 32, 32, 3) uint8
        for lo in range(0, len(items), CHUNK):
            part = items[lo : lo + CHUNK]
            x = torch.from_numpy(np.ascontiguousarray(data[part])).permute(0, 3, 1, 2)
            if x.shape[-1] != size:
                x = resize_uint8(x, size)
            yield x.numpy(), np.ones(len(part), bool), []


def _few(names: list[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


class _Idx(_Source):
    """Four idx files in a folder (``*train-images-idx3-ubyte``, ``*train-labels-idx1-ubyte``,
    ``*t10k-*`` or ``*test-*`` likewise; ``.gz`` or not): MNIST, Fashion-MNIST, KMNIST, EMNIST.
    The official test files are the held-out images. Grey images become 3 identical channels;
    28 px images are padded with 2 black px per side to 32 px (the picture is unchanged, and
    32 px with 8 px patches keeps the 4 x 4 token grid), resized to any other size. The labels
    are read when the source opens (small files); the images only when a cache entry is built.
    The cache key holds the four files' sizes and modification times."""

    kind = "idx"
    crop_ok = False
    note = "idx files"
    held_out = "test"
    held_out_name = "the official test images (t10k)"
    test_by_default = True
    carve_per_class = 500  # 5,000 of Fashion-MNIST's 60,000 training images

    def __init__(
        self,
        root: Path,
        *,
        name: str | None = None,
        slug: str | None = None,
        class_names: tuple[str, ...] | None = None,
        hflip_ok: bool = False,
        note: str | None = None,
    ):
        self.root = root
        self.name, self.slug = name or f"idx:{root}", slug or f"idx-{root.name}"
        self.hflip_ok, self.note = hflip_ok, note or self.note
        self.files, self._labels, self.shape = {}, {}, {}
        for split, prefixes in (("train", ("train",)), ("test", ("t10k", "test"))):
            images = self._find(prefixes, "images-idx3-ubyte")
            labels = self._find(prefixes, "labels-idx1-ubyte")
            n, rows, cols = idx_header(images, IDX_IMAGES)
            y = read_idx(labels, IDX_LABELS).astype(np.int64)
            if len(y) != n:
                raise UsageError(
                    f"--data {root}: {images.name} holds {n} images but {labels.name} holds {len(y)} labels; "
                    "the counts must match (give matching files)"
                )
            self.files[split], self._labels[split], self.shape[split] = (images, labels), y, (rows, cols)
        if self.shape["train"] != self.shape["test"]:
            raise UsageError(
                f"--data {root}: training images are {self.shape['train']} px but test images "
                f"{self.shape['test']} px; give files of one dataset"
            )
        top = max(int(self._labels[s].max(initial=0)) for s in self._labels)
        self._classes = list(class_names) if class_names else [str(i) for i in range(top + 1)]
        if top >= len(self._classes):
            raise UsageError(f"--data {root}: a label {top}, but the dataset has {len(self._classes)} classes")
        self._images: dict[str, np.ndarray] = {}

    def _find(self, prefixes: tuple[str, ...], kind: str) -> Path:
        found = sorted(
            p
            for p in self.root.iterdir()
            for pre in prefixes
            if p.name.endswith((f"{pre}-{kind}", f"{pre}-{kind}.gz")) and p.is_file()
        )
        if not found:
            raise UsageError(
                f"--data {self.root}: no {prefixes[0]}-{kind}[.gz] file; an idx folder holds "
                "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
                "t10k-labels-idx1-ubyte (each may be .gz)"
            )
        if len(found) > 1:
            raise UsageError(
                f"--data {self.root}: several {prefixes[0]}-{kind} files ({_few([p.name for p in found])}); "
                "give a folder with one dataset's four files"
            )
        return found[0]

    def identity(self, split, items):
        files = [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in self.files[split]]
        return {"source": "idx", "root": str(self.root), "split_files": files, "items": _digest(items.tolist())}

    def prepare(self, split):
        if split not in self._images:
            from . import read_idx as decode  # looked up in the package: see _PACKAGE_LOOKUPS

            self._images[split] = decode(self.files[split][0], IDX_IMAGES)

    def read(self, split, items, size, workers):
        self.prepare(split)
        images = self._images[split]
        for lo in range(0, len(items), 4 * CHUNK):
            part = items[lo : lo + 4 * CHUNK]
            yield grey_to_rgb(images[part], size), np.ones(len(part), bool), []


IDX_PAD = 2  # px per side: a 28 px image at --image-size 32


def grey_to_rgb(x: np.ndarray, size: int) -> np.ndarray:
    """Grey ``(n, H, W)`` uint8 -> ``(n, 3, size, size)``: the grey value in all three channels;
    padded with ``IDX_PAD`` black px per side when that makes ``size`` (28 -> 32 px), else
    resized (shorter side, centre crop)."""
    t = torch.from_numpy(np.ascontiguousarray(x))[:, None]  # (n, 1, H, W)
    h, w = t.shape[-2:]
    if (h, w) != (size, size):
        if h == w and size == h + 2 * IDX_PAD:
            t = torch.nn.functional.pad(t, (IDX_PAD,) * 4)
        else:
            t = resize_uint8(t, size)
    return t.expand(-1, 3, -1, -1).contiguous().numpy()


class _Downsampled(_Source):
    """Downsampled ImageNet (Imagenet8/16/32/64, ImageNet16-120): ``train_data_batch_*`` and
    ``val_data`` in one folder (see :mod:`~funnelbench.data.formats`); the official ``val_data``
    is the held-out split. ``--classes K`` takes the first K classes (labels 1 to K), as
    ImageNet16-120 does. Every file's labels and width are kept in an index file in the cache
    folder, keyed by the files' sizes and modification times, so a later run opens no batch
    file unless a cache entry must be built."""

    kind = "downsampled-imagenet"
    note = "downsampled ImageNet (Chrabaszcz et al. 2017)"
    held_out_name = "the official val_data"
    test_by_default = True
    carve_per_class = 50  # as many per class as the official val_data holds
    first_classes = True

    def __init__(self, root: Path, files: dict[str, list[Path]], index_path: Path):
        self.root, self.files = root, files
        self.name, self.slug = f"downsampled-imagenet:{root}", f"downsampled-{root.name}"
        for split, what in (("train", "train_data_batch_1 ..."), ("val", "val_data")):
            if not files[split]:
                raise UsageError(
                    f"--data {root}: no {what} file; a downsampled-ImageNet folder holds train_data_batch_1, "
                    "train_data_batch_2, ... and val_data (.npz or pickle)"
                )
        listing = self._listing(index_path)
        sizes = {p.name: listing[p.name]["size_px"] for split in files for p in files[split]}
        if len(set(sizes.values())) > 1:
            shown = ", ".join(f"{n} {s} px" for n, s in sorted(sizes.items())[:4])
            raise UsageError(
                f"--data {root}: the files hold images of different sizes ({shown}); keep one resolution in a folder"
            )
        self.native_size = next(iter(sizes.values()))
        self._labels = {split: np.concatenate([listing[p.name]["labels"] for p in files[split]]) - 1 for split in files}
        self._counts = {split: [len(listing[p.name]["labels"]) for p in files[split]] for split in files}
        top = int(self._labels["train"].max(initial=-1)) + 1
        if int(self._labels["val"].max(initial=-1)) >= top:
            raise UsageError(
                f"--data {root}: val_data has label {int(self._labels['val'].max()) + 1} but the training "
                f"batches only labels 1 to {top}; give val_data of the same classes"
            )
        self._classes = [str(i) for i in range(1, top + 1)]  # the files' label numbers

    def _listing(self, index_path: Path) -> dict:
        """``{file name: {"size_px", "labels"}}``, from the index where a file's size and time are unchanged."""
        try:
            with np.load(index_path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                if meta.get("format") != 1 or meta.get("root") != str(self.root):
                    raise ValueError("another index")
                known = {n: {**m, "labels": z[f"labels/{n}"]} for n, m in meta["files"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError, zipfile.BadZipFile):
            known = {}
        listing, changed = {}, False
        for p in (p for split in self.files.values() for p in split):
            st = p.stat()
            entry = known.get(p.name)
            if entry is None or [entry.get("bytes"), entry.get("mtime_ns")] != [st.st_size, st.st_mtime_ns]:
                from . import read_batch as read  # looked up in the package: see _PACKAGE_LOOKUPS

                _, labels, size_px = read(p, labels_only=True)
                entry, changed = (
                    {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "size_px": size_px, "labels": labels},
                    True,
                )
            listing[p.name] = entry
        if changed or set(listing) != set(known):
            meta = {
                "format": 1,
                "root": str(self.root),
                "files": {n: {k: v for k, v in e.items() if k != "labels"} for n, e in listing.items()},
            }
            buf = io.BytesIO()
            np.savez(buf, meta=np.array(json.dumps(meta)), **{f"labels/{n}": e["labels"] for n, e in listing.items()})
            atomic_write(index_path, buf.getvalue())
        return listing

    def identity(self, split, items):
        files = [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in self.files[split]]
        return {
            "source": "downsampled-imagenet",
            "root": str(self.root),
            "split_files": files,
            "items": _digest(items.tolist()),
        }

    def read(self, split, items, size, workers):
        from . import read_batch as read  # looked up in the package: see _PACKAGE_LOOKUPS

        s, start = self.native_size, 0
        for path, n in zip(self.files[split], self._counts[split]):
            mine = items[(items >= start) & (items < start + n)] - start
            start += n
            if not len(mine):
                continue
            data, _, _ = read(path)
            for lo in range(0, len(mine), 4 * CHUNK):
                x = torch.from_numpy(np.ascontiguousarray(data[mine[lo : lo + 4 * CHUNK]])).view(-1, 3, s, s)
                if s != size:
                    x = resize_uint8(x, size)
                yield x.numpy(), np.ones(x.shape[0], bool), []


FASHION_MNIST = "fashion-mnist"
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist package
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
FASHION_MNIST_NOTE = (
    "Fashion-MNIST (Zalando, 28 px grey, 10 classes) from Debian's dataset-fashion-mnist package; "
    "grey replicated to 3 channels"
)


def _fashion_mnist(root: Path) -> _Idx:
    return _Idx(
        root,
        name=FASHION_MNIST,
        slug=FASHION_MNIST,
        class_names=FASHION_MNIST_CLASSES,
        hflip_ok=True,
        note=FASHION_MNIST_NOTE,
    )


def _is_idx_folder(root: Path) -> bool:
    return any(p.name.endswith(("images-idx3-ubyte", "images-idx3-ubyte.gz")) for p in root.iterdir())


def open_source(
    data: str | os.PathLike | None,
    *,
    train_per_class: int | None = None,
    test_per_class: int | None = None,
    val_per_class: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> _Source:
    """The source named by ``--data``; a one-line :class:`UsageError` when it is not one. An
    ImageFolder tree's listing is kept under the cache folder (see :func:`cache_root`)."""
    from . import FASHION_MNIST_DIR as debian  # looked up in the package: see _PACKAGE_LOOKUPS

    spec = builtin_set(data)
    if str(data) == FASHION_MNIST:
        if not debian.is_dir():
            raise UsageError(
                f"--data {FASHION_MNIST}: Debian's dataset-fashion-mnist package is not installed (no {debian}); "
                "install it with `apt-get install dataset-fashion-mnist` (about 30 MB), or give --data PATH, "
                "a folder holding the four idx files"
            )
        return _fashion_mnist(debian)
    if spec is not None:
        return _Builtin(train_per_class or BUILTIN_TRAIN_PER_CLASS, val_per_class or BUILTIN_VAL_PER_CLASS, spec)
    root = Path(data).expanduser()
    if not root.exists():
        raise UsageError(
            f"--data {data}: no such file or folder; give fashion-mnist, an ImageFolder tree, a CIFAR "
            "folder, an idx or downsampled-ImageNet folder, or leave --data out for the built-in synthetic "
            "dataset"
        )
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
    if _is_idx_folder(root):
        return _fashion_mnist(root) if debian.is_dir() and root == debian.resolve() else _Idx(root)
    batches = batch_files(root)
    if batches["train"] or batches["val"]:
        index = cache_root(cache_dir) / "downsampled-index" / f"{root.name}-{_digest(str(root))}.npz"
        return _Downsampled(root, batches, index)
    raise UsageError(
        f"--data {data}: not an ImageFolder tree (train/<class>/<image> and val/<class>/<image>), a "
        "CIFAR-10/100 python folder (cifar-10-batches-py, cifar-100-python), an idx folder "
        "(train-images-idx3-ubyte, ...) nor a downsampled-ImageNet folder (train_data_batch_1, ..., val_data)"
    )
