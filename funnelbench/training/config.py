"""The training run's configuration: :class:`TrainConfig`, one flat frozen dataclass whose
fields are the command line's options (their metadata is the help) and the record's columns,
every value checked when it is made; :func:`make_config` builds one from a layout and options."""

from __future__ import annotations

import hashlib
import json
import math
import sys
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from ..errors import UsageError
from ..presets import resolve

DTYPE_CHOICES = ("auto", "fp32", "bf16", "fp16")
NORM_CHOICES = ("imagenet", "data")
CHECKPOINT_POLICIES = ("every-epoch", "last", "none")
# cosine: warm-up, then a cosine decay to --min-lr at the last epoch (the lr depends on --epochs);
# constant: warm-up, then --lr (the lr of epoch k does not depend on --epochs, so a run of k
# epochs resumed to n is the run of n epochs: multi-fidelity searches extend runs this way); wsd:
# warm-up, --lr, then a linear decay to --min-lr over the last WSD_DECAY of the steps (a k-epoch run is
# a longer run's first steps plus a decay of its own)
SCHEDULES = ("cosine", "constant", "wsd")
# wsd: the share of a run's steps spent decaying (Hägele et al. 2024, "Scaling Laws and
# Compute-Optimal Training Beyond Fixed Training Durations": a 10-20 % linear cool-down matches
# the cosine's final loss)
WSD_DECAY = 0.2


def wsd_decay_start(total: int, warmup: int) -> int:
    """The first step of the wsd schedule's decay in a run of ``total`` steps whose warm-up
    takes ``warmup``: the last :data:`WSD_DECAY` of the steps, never inside the warm-up. It
    never moves back as ``total`` grows, so the steps before it are the first steps of every
    longer wsd run with the same warm-up."""
    return max(warmup, total - round(WSD_DECAY * total))


def _numpy(*names: str) -> tuple[type, ...]:
    """NumPy's scalar types of these names, or none while NumPy is not imported (no value can be
    one then): the command line reads this module without loading NumPy."""
    np = sys.modules.get("numpy")
    return tuple(getattr(np, name) for name in names) if np is not None else ()


# Fields that do not change the numbers: a resumed run may use other values, and the default
# --out folder's name ignores them.
FREE_ON_RESUME = frozenset({"workers", "threads", "checkpoint"})

SEED_MAX = 2**32 - 1

_DATA, _RECIPE, _AUG, _RUN = "Data", "Recipe", "Augmentation", "Run"


def _opt(default, panel: str, help: str):
    """A TrainConfig field with its command-line help (the CLI's options are made from these)."""
    return field(default=default, metadata={"panel": panel, "help": help})


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run (see ``funnelbench train --help``). Every field
    is checked here, so a bad value fails before anything is loaded or written."""

    layout: str  # the target layout (full size); the proxy that trains is proxy_layout(...)
    data: str | None = _opt(
        None,
        _DATA,
        "'fashion-mnist' (Debian's dataset-fashion-mnist package: 28 px grey, replicated "
        "to 3 channels, padded to 32 px or resized to --image-size), a folder of idx files "
        "(MNIST style), of downsampled-ImageNet batches (train_data_batch_*, val_data), an "
        "ImageFolder tree (`train/<class>/*`, `val/<class>/*`), a CIFAR-10/100 python folder, or "
        "'builtin': the built-in synthetic dataset (the default; it says nothing about ImageNet), or "
        "'builtin-hard': its harder 16-class version.",
    )
    classes: int | None = _opt(
        None,
        _DATA,
        "Keep K classes, chosen with --subset-seed (an ImageNet-100-style subset); "
        "downsampled ImageNet: the first K (ImageNet16-120 is --classes 120).",
    )
    train_per_class: int | None = _opt(
        None, _DATA, "Training images per class (chosen with --subset-seed). Built-in data: 1000."
    )
    val_per_class: int | None = _opt(
        None,
        _DATA,
        "Validation images per class. Built-in data: 250. Carved from the training "
        "images (with a test split): Fashion-MNIST / idx 500, downsampled "
        "ImageNet and ImageFolder 50, CIFAR 5000 in all.",
    )
    test_split: bool | None = _opt(
        None,
        _DATA,
        "Hold out a test split, read once at the end of the run (test_top1), that "
        "selection never sees: validation is then carved from the training images "
        "and the source's held-out images are the test split (the built-in data "
        "renders one). Default: on for Fashion-MNIST, idx and downsampled ImageNet, "
        "off for the built-in data, ImageFolder and CIFAR (validation on their "
        "held-out images, no test number).",
    )
    test_per_class: int | None = _opt(
        None, _DATA, "Test images per class. Default: all held-out images (built-in data: 250)."
    )
    subset_seed: int = _opt(
        0, _DATA, "Seed of the class and image subset (separate from --seed, so every run shares it)."
    )
    image_size: int | None = _opt(
        None, _DATA, "Proxy resolution in px; the layout's token counts follow the patch grid. Default: the layout's."
    )
    patch_size: int | None = _opt(
        None, _DATA, "Patch size in px at the proxy resolution (56 px / 4 px = the 14 x 14 grid of 224 / 16)."
    )
    width_scale: float = _opt(
        1.0,
        _DATA,
        "Proxy width: every stage's hidden and MLP widths times this (0 < s <= 1); the "
        "heads are kept and the hidden width rounded to a multiple of them.",
    )
    norm: str = _opt(
        "imagenet",
        _DATA,
        "Input standardisation: the ImageNet channel mean and sd (imagenet), or the "
        "training split's own (data: e.g. grey Fashion-MNIST, mean 0.29, sd 0.35).",
    )
    epochs: int = _opt(10, _RECIPE, "Epochs.")
    batch_size: int = _opt(128, _RECIPE, "Global batch size (split over torchrun processes).")
    lr: float = _opt(1e-3, _RECIPE, "Peak learning rate of AdamW.")
    min_lr: float = _opt(1e-5, _RECIPE, "Learning rate at the end of the cosine or wsd decay (at most --lr).")
    schedule: str = _opt(
        "cosine",
        _RECIPE,
        "Learning rate after the warm-up: cosine (decays to --min-lr at the last epoch), constant "
        "(stays at --lr: the lr of an epoch does not depend on --epochs, so a run resumed with more "
        "--epochs is the longer run) or wsd (stays at --lr, then decays linearly to --min-lr over the "
        f"last {WSD_DECAY:.0%} of the steps; the checkpoint before the decay, stable.pt, resumes into a "
        "longer run). --fidelity asha needs wsd or constant.",
    )
    weight_decay: float = _opt(
        0.05, _RECIPE, "AdamW weight decay (not on biases, norms, position embedding, class token)."
    )
    warmup_epochs: float = _opt(1.0, _RECIPE, "Linear warm-up, in epochs (fractions allowed).")
    label_smoothing: float = _opt(0.1, _RECIPE, "Label smoothing of the training loss, in [0, 1).")
    clip_grad: float = _opt(1.0, _RECIPE, "Clip the gradient norm to this value; 0 = off.")
    randaugment: int = _opt(0, _AUG, "RandAugment operations per image (torchvision), 0-16; 0 = off.")
    randaugment_magnitude: int = _opt(9, _AUG, "RandAugment magnitude (0-30).")
    mixup: float = _opt(0.0, _AUG, "MixUp alpha; 0 = off.")
    cutmix: float = _opt(0.0, _AUG, "CutMix alpha; 0 = off (with --mixup too, one of the two per batch).")
    hflip: bool | None = _opt(
        None, _AUG, "Random horizontal flips. Default: on, except on the built-in data (a flip changes its class)."
    )
    crop_pad: int | None = _opt(
        None,
        _AUG,
        "Random crop after zero-padding this many px per side. Default: image size / 8, "
        "except on centred, size-normalised images (idx files: Fashion-MNIST, "
        "MNIST), where it is 0 (measured: results/proxy_recipe.md).",
    )
    seed: int = _opt(0, _RECIPE, f"Seed of the initialisation, data order and augmentation (0 to {SEED_MAX}).")
    device: str = _opt("auto", _RECIPE, "auto, cpu or cuda (under torchrun: each rank's local GPU).")
    dtype: str = _opt(
        "auto",
        _RECIPE,
        f"Autocast dtype: {', '.join(DTYPE_CHOICES)} (auto: bf16 on a CUDA GPU that has it, else fp32).",
    )
    workers: int = _opt(0, _RUN, "Data loader processes (results do not depend on it).")
    threads: int | None = _opt(
        None,
        _RUN,
        "torch CPU threads for this run (results may differ in the last bits). Default: leave the process's setting.",
    )
    checkpoint: str = _opt(
        "every-epoch",
        _RUN,
        "Write checkpoint.pt after every epoch (every-epoch: a killed run resumes), "
        "after the last one (last), or never (none).",
    )
    finetune_from: str | None = None  # a checkpoint whose weights initialise the model

    def __post_init__(self):
        def bad(name, why):
            raise UsageError(f"--{name.replace('_', '-')} {getattr(self, name)}: {why}")

        hints = {f.name: f.type for f in fields(self)}
        for name, kind in hints.items():
            value = getattr(self, name)
            if value is None and "None" in kind:
                continue
            if kind.startswith("bool") and not isinstance(value, bool):
                bad(name, "expected true or false")
            if kind.startswith("int") and (isinstance(value, bool) or not isinstance(value, (int, *_numpy("integer")))):
                bad(name, "expected an integer")
            if kind.startswith("float"):
                if isinstance(value, bool) or not isinstance(value, (int, float, *_numpy("floating", "integer"))):
                    bad(name, "expected a number")
                if not math.isfinite(value):
                    bad(name, "must be a finite number")
        # (name, lowest, highest) of the bounded integers
        for name, lo, hi in (
            ("epochs", 1, 100_000),
            ("batch_size", 1, 2**20),
            ("seed", 0, SEED_MAX),
            ("subset_seed", 0, SEED_MAX),
            ("randaugment", 0, 16),
            ("randaugment_magnitude", 0, 30),
            ("workers", 0, 256),
            ("threads", 1, 4096),
            ("classes", 2, 1_000_000),
            ("train_per_class", 1, 10**9),
            ("val_per_class", 1, 10**9),
            ("test_per_class", 1, 10**9),
            ("image_size", 8, 4096),
            ("patch_size", 1, 4096),
            ("crop_pad", 0, 4096),
        ):
            value = getattr(self, name)
            if value is not None and not lo <= value <= hi:
                bad(name, f"must be between {lo} and {hi}")
        if not self.lr > 0:
            bad("lr", "must be positive")
        for name in ("min_lr", "weight_decay", "warmup_epochs", "clip_grad", "mixup", "cutmix"):
            if getattr(self, name) < 0:
                bad(name, "must not be negative")
        if self.min_lr > self.lr:
            bad("min_lr", f"is above --lr {self.lr}; the cosine decays from --lr down to --min-lr")
        if not 0 <= self.label_smoothing < 1:
            bad("label_smoothing", "must be in [0, 1)")
        if not 0 < self.width_scale <= 1:
            bad("width_scale", "must be in (0, 1]; 0.25 trains a proxy a quarter as wide")
        if self.dtype not in DTYPE_CHOICES:
            bad("dtype", f"use one of {', '.join(DTYPE_CHOICES)}")
        if self.norm not in NORM_CHOICES:
            bad("norm", f"use one of {', '.join(NORM_CHOICES)}")
        if self.schedule not in SCHEDULES:
            bad("schedule", f"use one of {', '.join(SCHEDULES)}")
        if self.checkpoint not in CHECKPOINT_POLICIES:
            bad("checkpoint", f"use one of {', '.join(CHECKPOINT_POLICIES)}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            bad("device", "use auto, cpu or cuda")
        if self.image_size is not None and self.patch_size is not None and self.patch_size > self.image_size:
            bad("patch_size", f"is larger than --image-size {self.image_size}")


def make_config(layout=None, *, config: TrainConfig | None = None, **options) -> TrainConfig:
    """A :class:`TrainConfig` from a layout and field values (unknown names are an error)."""
    if config is not None:
        return replace(config, **options) if options else config
    if layout is None:
        raise UsageError("give a layout or a config")
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise UsageError(
            f"unknown training option(s) {', '.join(unknown)}; known: {', '.join(sorted(known - {'layout'}))}"
        )
    return TrainConfig(layout=layout if isinstance(layout, str) else str(resolve(layout)), **options)


__all__ = [
    "TrainConfig",
    "make_config",
    "DTYPE_CHOICES",
    "NORM_CHOICES",
    "CHECKPOINT_POLICIES",
    "SCHEDULES",
    "WSD_DECAY",
    "wsd_decay_start",
    "FREE_ON_RESUME",
    "SEED_MAX",
]


def default_run_folder(config: TrainConfig, command: str = "train") -> Path:
    """Where a run of ``config`` goes when no ``--out`` is given: ``runs/<command>-<hash>``, the
    hash (8 hex digits of SHA-1) over every field but :data:`FREE_ON_RESUME`, so that the same
    command with the same numbers lands in the same folder (and ``--resume`` finds it), whatever
    the worker and thread counts."""
    values = {k: v for k, v in asdict(config).items() if k not in FREE_ON_RESUME}
    digest = hashlib.sha1(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return Path("runs") / f"{command}-{digest}"
