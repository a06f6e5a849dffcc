"""Readers of the two array file formats real datasets come in, each checked as it is read:
every problem (a wrong magic number, a truncated or corrupt file, counts that differ, a batch
of the wrong width) is a one-line :class:`UsageError` naming the file.

* **idx** (MNIST, Fashion-MNIST, KMNIST, EMNIST): a big-endian header (a magic number, 2051
  for images and 2049 for labels, i.e. ``0x0000`` then the type byte ``0x08``, unsigned byte,
  then the number of dimensions; then one 32-bit count per dimension) followed by the raw
  bytes; stored as is or gzipped (``.gz``).
* **downsampled ImageNet** (Chrabaszcz et al. 2017: Imagenet8/16/32/64; ImageNet16-120 of
  NAS-Bench-201): ``train_data_batch_1`` ... and ``val_data``, NumPy ``.npz`` or pickle files of
  a dict with ``data``, an ``N x 3*s*s`` uint8 array stored plane by plane (R, then G, then B,
  each row by row), and ``labels`` numbered from 1.
"""

from __future__ import annotations

import gzip
import pickle
import re
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import UsageError

IDX_IMAGES, IDX_LABELS = 2051, 2049  # magic numbers: unsigned bytes, 3 and 1 dimensions
_IDX_DIMS = {IDX_IMAGES: 3, IDX_LABELS: 1}
_IDX_WHAT = {IDX_IMAGES: "an idx images file", IDX_LABELS: "an idx labels file"}

DOWNSAMPLED_SIZES = (8, 16, 32, 64)  # px of Imagenet8/16/32/64
_BATCH_NAME = re.compile(r"^(train_data_batch_(\d+)|val_data)(\.npz)?$")


# ----------------------------------------------------------------------------- idx


def _idx_open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def idx_header(path: Path, magic: int) -> tuple[int, ...]:
    """The dimensions an idx file's header declares (checked: the magic number, and a file
    length that matches them, so a truncated file is found without reading it all)."""
    dims_n = _IDX_DIMS[magic]
    head_len = 4 + 4 * dims_n
    try:
        with _idx_open(path) as f:
            head = f.read(head_len)
    except (OSError, EOFError, zlib.error) as err:
        raise UsageError(f"{path}: cannot read it as {_IDX_WHAT[magic]} ({_why(err)}); replace the file") from None
    if len(head) < 4:
        raise UsageError(f"{path}: {len(head)} bytes, too short for an idx header; the file is truncated, replace it")
    found = struct.unpack(">I", head[:4])[0]
    if found != magic:
        other = f" ({_IDX_WHAT[found]})" if found in _IDX_WHAT else ""
        raise UsageError(
            f"{path}: magic number {found}{other}, expected {magic} ({_IDX_WHAT[magic]}); "
            "give the MNIST-style idx files (train-images-idx3-ubyte, train-labels-idx1-ubyte, ...)"
        )
    if len(head) < head_len:
        raise UsageError(f"{path}: the idx header is cut short; the file is truncated, replace it")
    dims = struct.unpack(f">{dims_n}I", head[4:])
    expected = head_len + int(np.prod(dims))
    size = path.stat().st_size
    if path.suffix == ".gz":
        # A gzip file ends with the length of its contents (mod 2**32): a cut-off file ends with
        # other bytes. Corruption inside is found when the file is decoded (its CRC).
        with open(path, "rb") as f:
            f.seek(max(0, size - 4))
            trailer = f.read(4)
        if len(trailer) < 4 or struct.unpack("<I", trailer)[0] != expected % 2**32:
            raise UsageError(
                f"{path}: the gzip file does not hold the {expected} bytes its idx header declares "
                f"({' x '.join(map(str, dims))}); it is truncated or corrupt, replace it"
            )
    elif size != expected:
        raise UsageError(
            f"{path}: {size} bytes, but its idx header declares {' x '.join(map(str, dims))} "
            f"({expected} bytes); the file is {'truncated' if size < expected else 'longer than declared'}, "
            "replace it"
        )
    return dims


def read_idx(path: Path, magic: int) -> np.ndarray:
    """The whole array of an idx file (uint8, shaped as its header says), checked."""
    dims = idx_header(path, magic)
    head_len = 4 + 4 * len(dims)
    try:
        with _idx_open(path) as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as err:
        raise UsageError(f"{path}: the file is corrupt ({_why(err)}); replace it") from None
    body = raw[head_len:]
    need = int(np.prod(dims))
    if len(body) != need:
        raise UsageError(f"{path}: {len(body)} bytes of data, but its header declares {need}; replace the file")
    return np.frombuffer(body, np.uint8).reshape(dims)


def _why(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:120]}" if text else type(err).__name__


# ----------------------------------------------------------------------------- downsampled ImageNet


def batch_files(root: Path) -> dict[str, list[Path]]:
    """``{"train": [train_data_batch_1, 2, ...], "val": [val_data]}`` in a folder (empty lists
    where none); each batch either ``.npz`` or pickle, not both."""
    found: dict[str, dict[int, Path]] = {"train": {}, "val": {}}
    for p in sorted(root.iterdir()):
        m = _BATCH_NAME.match(p.name)
        if not m or not p.is_file():
            continue
        split, number = ("val", 0) if m.group(1) == "val_data" else ("train", int(m.group(2)))
        if number in found[split]:
            raise UsageError(
                f"--data {root}: both {found[split][number].name} and {p.name}; keep one of the two formats"
            )
        found[split][number] = p
    return {split: [files[k] for k in sorted(files)] for split, files in found.items()}


def read_batch(path: Path, *, labels_only: bool = False) -> tuple[np.ndarray | None, np.ndarray, int]:
    """``(data (N, 3*s*s) uint8, labels (N,) int64 numbered from 1, s)`` of one batch file,
    checked. ``labels_only``: data is None and an ``.npz`` is read without its pixels (a pickle
    is always read whole)."""
    data = None
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                labels = np.asarray(z["labels"])
                if labels_only:
                    shape, dtype = _npz_header(path, "data")
                else:
                    data = np.asarray(z["data"])
        else:
            with open(path, "rb") as f:
                d = pickle.load(f, encoding="latin1")  # the user's own files (Python 2 or 3 pickles)
            labels, data = np.asarray(d["labels"]), np.asarray(d["data"])
        if data is not None:
            shape, dtype = data.shape, data.dtype
    except (
        OSError,
        EOFError,
        ValueError,
        KeyError,
        TypeError,
        IndexError,
        AttributeError,
        zlib.error,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
    ) as err:
        raise UsageError(
            f"{path}: cannot read it as a downsampled-ImageNet batch ({_why(err)}); expected a dict with "
            "'data' (N x 3*s*s uint8) and 'labels' (1 to 1000), pickled or as .npz"
        ) from None
    if len(shape) != 2 or dtype != np.uint8:
        raise UsageError(f"{path}: 'data' is {dtype} of shape {shape}; expected an N x 3*s*s uint8 array")
    sizes = {3 * s * s: s for s in DOWNSAMPLED_SIZES}
    if shape[1] not in sizes:
        raise UsageError(
            f"{path}: rows of {shape[1]} values; expected 3*s*s for s in {', '.join(map(str, DOWNSAMPLED_SIZES))} "
            f"px ({', '.join(map(str, sizes))} values: the R, G and B planes)"
        )
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise UsageError(f"{path}: 'labels' is {labels.dtype} of shape {labels.shape}; expected N integers from 1")
    if shape[0] != len(labels):
        raise UsageError(f"{path}: {shape[0]} images but {len(labels)} labels; the counts must match")
    if len(labels) and labels.min() < 1:
        raise UsageError(f"{path}: a label {int(labels.min())}; downsampled-ImageNet labels are numbered from 1")
    return data, labels.astype(np.int64), sizes[shape[1]]


def _npz_header(path: Path, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of one array of an ``.npz`` from its header (the pixels are not read)."""
    with zipfile.ZipFile(path) as z, z.open(f"{name}.npy") as f:
        major, _ = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(f)
    return shape, dtype
