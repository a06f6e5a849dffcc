"""Small files in the exact formats of real datasets, for tests: idx (MNIST / Fashion-MNIST) and
downsampled-ImageNet batches (npz or pickle)."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist


def write_idx(
    folder: Path,
    *,
    n_train: int = 20,
    n_test: int = 10,
    size: int = 28,
    classes: int = 10,
    gz: bool = True,
    seed: int = 0,
) -> dict:
    """The four idx files of a tiny MNIST-style dataset; returns ``{split: (images, labels)}``
    (``train`` and ``t10k``), label ``i % classes`` for image ``i``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        labels = (np.arange(n) % classes).astype(np.uint8)
        write_file(
            folder / f"{split}-images-idx3-ubyte", struct.pack(">IIII", 2051, n, size, size) + images.tobytes(), gz
        )
        write_file(folder / f"{split}-labels-idx1-ubyte", struct.pack(">II", 2049, n) + labels.tobytes(), gz)
        written[split] = (images, labels)
    return written


def write_file(path: Path, data: bytes, gz: bool) -> Path:
    path = path.with_name(path.name + ".gz") if gz else path
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def write_batches(
    folder: Path,
    *,
    size: int = 8,
    classes: int = 4,
    per_class: int = 6,
    val_per_class: int = 3,
    batches: int = 2,
    fmt: str = "npz",
    seed: int = 0,
) -> dict:
    """``train_data_batch_1 .. batches`` and ``val_data`` of a tiny downsampled ImageNet:
    ``data`` N x 3*s*s uint8 stored plane by plane (R, G, B), ``labels`` 1 to ``classes``.
    Returns ``{"train": (images (N, 3, s, s), labels from 1), "val": ...}``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = {}
    for split, k in (("train", per_class), ("val", val_per_class)):
        labels = np.tile(np.arange(1, classes + 1), k)
        rng.shuffle(labels)
        images = rng.integers(0, 256, (len(labels), 3, size, size), dtype=np.uint8)
        written[split] = (images, labels)
        parts = np.array_split(np.arange(len(labels)), batches if split == "train" else 1)
        names = [f"train_data_batch_{i + 1}" for i in range(len(parts))] if split == "train" else ["val_data"]
        for name, rows in zip(names, parts):
            write_batch(folder / name, images[rows].reshape(len(rows), -1), labels[rows], fmt)
    return written


def write_batch(path: Path, data: np.ndarray, labels, fmt: str = "npz") -> Path:
    if fmt == "npz":
        path = path.with_name(path.name + ".npz")
        np.savez(path, data=data, labels=np.asarray(labels))
    else:
        with open(path, "wb") as f:
            pickle.dump({"data": data, "labels": [int(x) for x in labels], "mean": data.mean(0)}, f)
    return path
