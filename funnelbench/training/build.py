"""What a run is built from, each piece where it is made (an out-of-memory raises from here):
the data (given and checked, or loaded, rank 0 first), the fine-tuning source's weights, the
model (seeded, on the device, wrapped for DDP), the batch samplers and the loaders."""

from __future__ import annotations

import os
import warnings

import torch

from ..data import Augment, ImageData, ShardedBatchSampler, load_data, make_loader
from ..errors import UsageError
from ..layout import Layout
from ..models import build_model
from ..progress import ProgressBar
from ..weights import LoadReport, load_vit_weights
from .checkpoint import Checkpoints, read_checkpoint
from .config import TrainConfig


def fine_tuning_source(config: TrainConfig, layout: Layout, resume_state: dict | None) -> dict | None:
    """The fine-tuning source's weights (checked against the proxy before the data loads);
    a resumed fine-tune has every weight in its own checkpoint and does not read it."""
    if not config.finetune_from or resume_state is not None:
        return None
    init_state = read_checkpoint(config.finetune_from)
    load_vit_weights(build_model(layout, num_classes=1), init_state)
    return init_state


def check_given_data(data: ImageData, layout: Layout, config: TrainConfig, checkpoints: Checkpoints) -> ImageData:
    """Data handed in (loaded once for many runs) must fit the run."""
    if not isinstance(data, ImageData):
        raise UsageError(f"data= takes the ImageData of funnelbench.load_data, got {type(data).__name__}")
    if data.image_size != layout.image_size:
        raise UsageError(
            f"the data given is at {data.image_size} px but the proxy trains at {layout.image_size} px; "
            f"load it with image_size={layout.image_size}"
        )
    checkpoints.check_classes(data.classes)
    wanted = config.test_split
    if wanted is not None and wanted != (data.test is not None):
        raise UsageError(
            f"--{'' if wanted else 'no-'}test-split: the data given has {'no' if wanted else 'a'} test split; "
            f"load it with load_data(..., test_split={wanted})"
        )
    return data


def load_run_data(config: TrainConfig, layout: Layout, ranks, console, cache_dir) -> ImageData:
    """The config's data at the proxy's image size; rank 0 fills the cache first. Warnings go
    to the console."""
    c = config
    progress = ProgressBar.maybe(console)
    with ranks.rank_zero_first(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            data = load_data(
                c.data,
                image_size=layout.image_size,
                classes=c.classes,
                train_per_class=c.train_per_class,
                val_per_class=c.val_per_class,
                test_split=c.test_split,
                test_per_class=c.test_per_class,
                subset_seed=c.subset_seed,
                cache_dir=cache_dir,
                # Decoding into the cache is a one-off whose result does not depend on
                # the number of processes: use the cores.
                workers=c.workers or min(8, os.cpu_count() or 1),
                progress=progress.update if progress else None,
            )
        finally:
            if progress:
                progress.close()
    if console:
        for w in caught:
            console.print(f"[yellow]warning:[/yellow] {w.message}")
    return data


def make_samplers(data: ImageData, config: TrainConfig, ranks) -> tuple[ShardedBatchSampler, dict]:
    """The training batch sampler (each rank's slice of every global batch) and the
    evaluation samplers by split."""
    c = config
    train = ShardedBatchSampler(
        len(data.train), c.batch_size, rank=ranks.rank, world=ranks.world, shuffle=True, seed=c.seed, drop_last=True
    )
    if train.steps() == 0:
        raise UsageError(
            f"--batch-size {c.batch_size} is larger than the {len(data.train)} training images; "
            "use a smaller batch or more images per class"
        )
    evals = {
        name: ShardedBatchSampler(
            len(split), c.batch_size, rank=ranks.rank, world=ranks.world, shuffle=False, drop_last=False
        )
        for name, split in (("val", data.val), ("test", data.test))
        if split is not None
    }
    return train, evals


def make_model(
    layout: Layout, num_classes: int, *, seed: int, init_state: dict | None, ranks
) -> tuple[torch.nn.Module, torch.nn.Module, LoadReport | None]:
    """(model, what the steps call (DDP or the model), the fine-tuning load's report): the
    model initialised from ``seed``, then the source's weights."""
    torch.manual_seed(seed)
    model = build_model(layout, num_classes=num_classes)
    report = None if init_state is None else load_vit_weights(model, init_state)
    return (*ranks.wrap(model), report)


def init_fields(report: LoadReport) -> dict:
    """The record's ``init_*`` fields: what the fine-tuning load did."""
    r = report
    return dict(
        init_loaded=len(r.loaded),
        init_resized=",".join(r.resized),
        init_new=",".join(r.new),
        init_skipped=",".join(r.skipped),
    )


def make_loaders(
    data: ImageData, train_sampler, eval_samplers: dict, augment: Augment, *, workers: int, device: torch.device
) -> tuple:
    """(train, val, test) loaders; test is None without a test split."""
    pin = device.type == "cuda"
    train = make_loader(data.train, train_sampler, augment, workers=workers, pin_memory=pin)
    val = make_loader(data.val, eval_samplers["val"], None, workers=workers, pin_memory=pin)
    test = (
        None
        if data.test is None
        else make_loader(data.test, eval_samplers["test"], None, workers=workers, pin_memory=pin)
    )
    return train, val, test


__all__ = [
    "fine_tuning_source",
    "check_given_data",
    "load_run_data",
    "make_samplers",
    "make_model",
    "init_fields",
    "make_loaders",
]
