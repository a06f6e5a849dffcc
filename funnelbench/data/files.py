"""Image files: scanning a class folder (what an ImageFolder source caches its listing by) and
decoding files to fixed-size uint8 arrays (resize the shorter side, centre crop), as
torchvision's ``Resize`` + ``CenterCrop`` do."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

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
        return all(
            mtime is not None and (folder / rel if rel else folder).stat().st_mtime_ns == mtime
            for rel, mtime in scan["dirs"].items()
        )
    except (OSError, KeyError, TypeError, AttributeError):
        return False


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
