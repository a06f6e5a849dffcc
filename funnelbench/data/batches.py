"""The batches the trainer reads from a :class:`Split`: a sampler that shards global batches
over ranks, per-sample augmentation seeded by position, the loader and normalisation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UsageError
from .cache import Split

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A 64-bit integer hash (vectorised): per-sample randomness without per-sample generators."""
    with np.errstate(over="ignore"):
        x = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def sample_seeds(seed: int, epoch: int, positions: np.ndarray) -> np.ndarray:
    """The augmentation seed of each sample: a function of (seed, epoch, position in the epoch)
    only, so a resumed run, a run with more loader workers and a run split over ranks see the
    same augmentation for the same sample."""
    base = _splitmix64(np.asarray([seed * 1_000_003 + epoch], dtype=np.uint64))[0]
    with np.errstate(over="ignore"):
        return _splitmix64(base ^ positions.astype(np.uint64))


class ShardedBatchSampler(torch.utils.data.Sampler):
    """Batches ``(indices, augmentation seeds)`` (two arrays) for one rank.

    Like ``DistributedSampler`` it shuffles with ``seed + epoch`` and gives each rank a disjoint
    share, but it splits every *global* batch into consecutive per-rank slices (instead of
    dealing samples out round-robin over the whole epoch), so N processes with ``batch_size/N``
    each take the same optimisation steps as one process with ``batch_size``. Training drops the
    last incomplete batch; evaluation keeps every sample exactly once (no padding).
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        rank: int = 0,
        world: int = 1,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = True,
    ):
        if batch_size % world:
            raise UsageError(
                f"--batch-size {batch_size} is not divisible by the {world} processes; use a multiple of {world}"
            )
        self.n, self.batch_size, self.rank, self.world = n, batch_size, rank, world
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def steps(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def __len__(self) -> int:
        return sum(1 for _ in self.bounds())

    def bounds(self) -> Iterator[tuple[int, int]]:
        """(start, stop) of this rank's slice of each global batch, in epoch positions."""
        for step in range(self.steps()):
            lo, hi = step * self.batch_size, min((step + 1) * self.batch_size, self.n)
            share = -(-(hi - lo) // self.world)
            a, b = lo + self.rank * share, min(lo + (self.rank + 1) * share, hi)
            if a < b:
                yield a, b

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=g).numpy()
        else:
            order = np.arange(self.n)
        seeds = sample_seeds(self.seed, self.epoch, np.arange(self.n))
        for a, b in self.bounds():
            yield order[a:b], seeds[a:b]


@dataclass
class Augment:
    """Per-sample augmentation on uint8 images: zero-padded random crop (``crop_pad`` px each
    side), horizontal flip, torchvision's RandAugment (``randaugment`` ops of ``magnitude``)."""

    crop_pad: int = 0
    hflip: bool = False
    randaugment: int = 0
    magnitude: int = 9

    @property
    def active(self) -> bool:
        return bool(self.crop_pad or self.hflip or self.randaugment)

    def __call__(self, x: torch.Tensor, seeds: np.ndarray) -> torch.Tensor:  # (B, 3, S, S) uint8
        B, _, S, _ = x.shape
        h = _splitmix64(seeds)
        if self.crop_pad:
            p = self.crop_pad
            span, W = np.uint64(2 * p + 1), S + 2 * p
            oy = torch.from_numpy((h % span).astype(np.int64))
            ox = torch.from_numpy(((h >> np.uint64(20)) % span).astype(np.int64))
            ar = torch.arange(S)
            flat = ((oy[:, None] + ar)[:, :, None] * W + (ox[:, None] + ar)[:, None, :]).reshape(B, 1, S * S)
            padded = F.pad(x, (p, p, p, p)).reshape(B, 3, W * W)
            x = padded.gather(2, flat.expand(B, 3, S * S)).reshape(B, 3, S, S)  # one gather: (B, 3, S, S)
        if self.hflip:
            flip = torch.from_numpy(((h >> np.uint64(40)) & np.uint64(1)).astype(bool))
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        if self.randaugment:
            from torchvision.transforms import v2

            op = v2.RandAugment(num_ops=self.randaugment, magnitude=self.magnitude)
            out = torch.empty_like(x)
            for i in range(B):
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(int(h[i] >> np.uint64(1)))
                    out[i] = op(x[i])
            x = out
        return x


class BatchSet(torch.utils.data.Dataset):
    """A split seen through ``__getitems__``: one gather per batch, then augmentation."""

    def __init__(self, split: Split, augment: Augment | None = None):
        self.split, self.augment = split, augment

    def __len__(self):
        return len(self.split)

    def __getitems__(self, batch: tuple[np.ndarray, np.ndarray]):
        index, seeds = batch
        x, y = self.split.take(index)
        if self.augment is not None and self.augment.active:
            x = self.augment(x, seeds)
        return x, y


def _whole_batch(batch):
    return batch


def make_loader(
    split: Split,
    sampler: ShardedBatchSampler,
    augment: Augment | None = None,
    *,
    workers: int = 0,
    pin_memory: bool = False,
) -> torch.utils.data.DataLoader:
    """Batches ``(uint8 images, labels)`` in the sampler's order."""
    return torch.utils.data.DataLoader(
        BatchSet(split, augment),
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=_whole_batch,
        pin_memory=pin_memory,
        persistent_workers=False,
    )


def channel_stats(split) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Per-channel mean and standard deviation (in [0, 1] units) of a split's images, read in
    chunks (a cached split may be memory-mapped): what ``--norm data`` standardises with."""
    total = np.zeros(3)
    squares = np.zeros(3)
    n = 0
    for start in range(0, len(split), 4096):
        rows = split.index[start : start + 4096]
        x = split.images[rows].astype(np.float64) / 255
        total += x.sum(axis=(0, 2, 3))
        squares += (x * x).sum(axis=(0, 2, 3))
        n += x.shape[0] * x.shape[2] * x.shape[3]
    if n == 0:
        return IMAGENET_MEAN, IMAGENET_STD
    mean = total / n
    std = np.sqrt(np.maximum(squares / n - mean * mean, 1e-12))
    return tuple(float(m) for m in mean), tuple(float(max(s, 1e-3)) for s in std)


def normalize(x: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """uint8 ``(B, 3, S, S)`` -> float32, scaled to [0, 1] and standardised per channel (in place
    on the one new float tensor: fresh allocations cost more than the arithmetic)."""
    scale = 1 / (255 * torch.tensor(std, device=x.device).view(1, 3, 1, 1))
    shift = -torch.tensor(mean, device=x.device).view(1, 3, 1, 1) / torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return x.float().mul_(scale).add_(shift)
