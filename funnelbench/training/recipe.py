"""The training recipe, each piece made from a :class:`~funnelbench.training.config.TrainConfig`:
AdamW (fused; no weight decay on biases, norms, position embedding and class token), linear
warm-up then cosine decay or a constant rate per step (:func:`lr_factor`), label smoothing, gradient clipping (in
the epoch steps), RandAugment and random crops / flips (:func:`make_augment`), MixUp / CutMix
over the global batch (:func:`make_mixer`, :func:`mix`), the input standardisation, and the
autocast dtype (bf16 or fp16; fp16 with a gradient scaler)."""

from __future__ import annotations

import math

import numpy as np
import torch

from ..data import IMAGENET_MEAN, IMAGENET_STD, Augment, ImageData, channel_stats, sample_seeds
from ..env import resolve_dtype
from ..errors import UsageError
from .config import TrainConfig, wsd_decay_start


def train_dtype(name: str, device: torch.device) -> str:
    """``auto`` -> bf16 on a CUDA GPU that supports it, else fp32; fp16 needs CUDA or a recent CPU."""
    if name == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    resolve_dtype(name)
    return name


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only (timm's rule): not on biases, norms, position embedding, class token."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name in ("pos_embed", "cls_token") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_factor(step: int, *, warmup: int, total: int, lr: float, min_lr: float, kind: str = "cosine") -> float:
    """Multiplier of the base learning rate at ``step``: linear warm-up over ``warmup`` steps
    (from lr/warmup to lr), then (``kind`` cosine) cosine decay to ``min_lr`` at ``total``,
    (``kind`` constant) 1, whatever ``total``, or (``kind`` wsd: warm-up, stable, decay) 1 until
    the last :data:`~.config.WSD_DECAY` of the steps, which decay linearly to ``min_lr`` at the last
    step: a run of k epochs is a longer run's first steps and a decay of its own."""
    if step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    if kind == "wsd":
        start = wsd_decay_start(total, warmup)
        if step < start:
            return 1.0
        progress = min(1.0, (step - start + 1) / max(1, total - start))
        return (lr - (lr - min_lr) * progress) / lr
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return (min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))) / lr


def schedule(config: TrainConfig, steps_per_epoch: int) -> dict:
    """The keyword arguments of :func:`lr_factor` for a run of ``steps_per_epoch`` steps an epoch.
    The cosine's and wsd's warm-up is cut at the run's end; the constant schedule's is not
    (nothing of it may depend on the run's length)."""
    c = config
    total = c.epochs * steps_per_epoch
    warmup = round(c.warmup_epochs * steps_per_epoch)
    if c.schedule != "constant":
        warmup = min(total, warmup)
    return dict(warmup=warmup, total=total, lr=c.lr, min_lr=c.min_lr, kind=c.schedule)


def stable_epochs(config: TrainConfig, steps_per_epoch: int) -> int | None:
    """The wsd schedule's stable point: the epochs all of whose steps come before the decay
    (:func:`~.config.wsd_decay_start`), after a warm-up the run did not cut short. A checkpoint
    there holds the first steps of every longer wsd run with the same warm-up, and continues
    into one (``--fidelity asha`` promotes from it). None: another schedule, a run that ends
    inside its warm-up, or no whole epoch before the decay."""
    if config.schedule != "wsd":
        return None
    total = config.epochs * steps_per_epoch
    warmup = round(config.warmup_epochs * steps_per_epoch)
    if warmup > total:
        return None
    return wsd_decay_start(total, warmup) // steps_per_epoch or None


def make_optimizer(model: torch.nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    # The fused AdamW kernel (CPU and CUDA) is 3-4x faster than the per-tensor loop on small models.
    return torch.optim.AdamW(
        param_groups(model, config.weight_decay), lr=config.lr, fused=device.type in ("cpu", "cuda")
    )


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int):
    """The per-step learning rate schedule (:func:`lr_factor`)."""
    kwargs = schedule(config, steps_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, **kwargs))


def make_scaler(device: torch.device, dtype: str) -> torch.amp.GradScaler:
    """The gradient scaler: enabled for fp16 only."""
    return torch.amp.GradScaler(device.type, enabled=dtype == "fp16")


def make_criterion(config: TrainConfig) -> torch.nn.Module:
    return torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)


def make_augment(config: TrainConfig, data: ImageData, image_size: int) -> Augment:
    """The per-image augmentation (random crop after padding, flips, RandAugment)."""
    c = config
    hflip = data.hflip_ok if c.hflip is None else c.hflip
    crop_pad = (image_size // 8 if data.crop_ok else 0) if c.crop_pad is None else c.crop_pad
    if crop_pad > image_size:
        raise UsageError(f"--crop-pad {crop_pad}: more than the {image_size} px image; use at most that")
    return Augment(crop_pad=crop_pad, hflip=hflip, randaugment=c.randaugment, magnitude=c.randaugment_magnitude)


def norm_stats(config: TrainConfig, data: ImageData) -> tuple:
    """The input standardisation: fixed numbers, or the training split's own (the same on every rank)."""
    return channel_stats(data.train) if config.norm == "data" else (IMAGENET_MEAN, IMAGENET_STD)


def make_mixer(config: TrainConfig, num_classes: int):
    """MixUp, CutMix, or one of the two per batch (torchvision); None when both are off."""
    c = config
    if not (c.mixup or c.cutmix):
        return None
    from torchvision.transforms import v2

    ops = ([v2.MixUp(alpha=c.mixup, num_classes=num_classes)] if c.mixup else []) + (
        [v2.CutMix(alpha=c.cutmix, num_classes=num_classes)] if c.cutmix else []
    )
    return ops[0] if len(ops) == 1 else v2.RandomChoice(ops)


def mix(
    mixer, x: torch.Tensor, y: torch.Tensor, *, seed: int, epoch: int, step: int, ranks
) -> tuple[torch.Tensor, torch.Tensor]:
    """MixUp / CutMix over the global batch with a seed of (seed, epoch, step) alone: every
    rank gathers the batch (``ranks``: :class:`~funnelbench.training.distributed.Ranks`), mixes
    it as one process would, and keeps its own slice."""
    x, y = ranks.gather(x), ranks.gather(y)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(sample_seeds(seed, epoch, np.array([step]))[0] >> np.uint64(1)))
        x, y = mixer(x, y)
    return ranks.own_slice(x), ranks.own_slice(y)


__all__ = [
    "train_dtype",
    "param_groups",
    "lr_factor",
    "schedule",
    "stable_epochs",
    "make_optimizer",
    "make_scheduler",
    "make_scaler",
    "make_criterion",
    "make_augment",
    "norm_stats",
    "make_mixer",
    "mix",
]
