"""The entry points: :func:`train` (a run from a layout and options, or a config) and
:func:`finetune` (a run whose weights start from a checkpoint).

    import funnelbench as fb
    record = fb.train("B2(17)-2(9), h96, a3, img32, patch8", out="runs/a", epochs=10)
    record = fb.finetune("runs/a/checkpoint.pt", image_size=48, out="runs/b", epochs=3)
"""

from __future__ import annotations

import os

from ..data import ImageData
from .checkpoint import finetune_layout
from .config import TrainConfig, make_config
from .hooks import EpochCallback
from .steps import OutOfMemory
from .trainer import Trainer


def train(
    layout=None,
    *,
    out: str | os.PathLike,
    config: TrainConfig | None = None,
    data: ImageData | None = None,
    resume: bool = False,
    overwrite: bool = False,
    callback: EpochCallback | None = None,
    console=None,
    cache_dir: str | os.PathLike | None = None,
    **options,
) -> dict:
    """Train ``layout`` (a layout string, preset name or Layout: the target, at full size) with
    ``options`` (the :class:`TrainConfig` fields), or a ready ``config``, on ``data`` (an
    already loaded :class:`ImageData`) or on the config's data; returns the final record (see
    :class:`Trainer` for the callback's decisions and the statuses). The caller's random states
    and torch thread count are the same afterwards, and the model and loaders are released."""
    config = make_config(layout, config=config, **options)
    try:
        trainer = Trainer(
            config,
            out=out,
            data=data,
            resume=resume,
            overwrite=overwrite,
            callback=callback,
            console=console,
            cache_dir=cache_dir,
        )
    except OutOfMemory as err:  # while building: its record is written
        return err.record
    with trainer:
        return trainer.fit()


def finetune(checkpoint: str | os.PathLike, layout=None, *, out: str | os.PathLike, **options) -> dict:
    """Fine-tune from ``checkpoint`` (a run's ``checkpoint.pt`` or a ViT state dict) into
    ``layout`` (default: the checkpoint's own), typically at a new ``image_size``; the rest as
    :func:`train`.

    The weights load with :func:`~funnelbench.weights.load_vit_weights`: same-width ViT and
    Funnel-ViT layouts in either direction, the position embedding interpolated in 2D (bicubic)
    to the new patch grid, the class token's embedding kept, a head for another number of
    classes re-initialised; missing or unexpected keys are an error. The record's ``init_*``
    fields say what was loaded, resized, new and re-initialised. A resumed fine-tune reads only
    its own checkpoint."""
    if layout is None:
        layout = finetune_layout(checkpoint, out=out, resume=options.get("resume", False))
    return train(layout, out=out, finetune_from=str(checkpoint), **options)


__all__ = ["train", "finetune"]
