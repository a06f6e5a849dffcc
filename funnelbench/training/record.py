"""The record of a training run: one flat dict (also ``record.json``) with the proxy that
trained and the target it stands for, the data, every hyperparameter, the final, best and test
metrics, the status, and the environment."""

from __future__ import annotations

from dataclasses import fields

from ..cost import count
from ..env import environment


def run_record(trainer, status: str = "completed", error: str | None = None) -> dict:
    """The run as one flat record: the proxy that trained (``layout``, ``params``, ``macs``)
    and the target it stands for (``target_*``, at full size; both counted with the data's
    classes), what it trained on, every hyperparameter, the final and best metrics, and the
    environment. ``trainer``: a :class:`~funnelbench.training.trainer.Trainer` (built, or
    failing to build)."""
    t = trainer
    c, data, h = t.config, t.data, t.history
    cost = count(t.layout, num_classes=data.num_classes)
    target = count(t.target, num_classes=data.num_classes)
    last = h[-1] if h else {}
    best = max(h, key=lambda r: r["val_top1"]) if h else {}
    rec = {
        "layout": str(t.layout),
        "target_layout": str(t.target),
        "dataset": data.name,
        "dataset_note": data.note,
        "num_classes": data.num_classes,
        "train_images": len(data.train),
        "val_images": len(data.val),
        "test_images": None if data.test is None else len(data.test),
        "val_from": data.val_from,
        "test_from": data.test_from,
        "skipped_images": data.skipped,
        "image_size": t.layout.image_size,
        "patch_size": t.layout.patch_size,
        "params": cost.params,
        "macs": cost.macs,
        "target_params": target.params,
        "target_macs": target.macs,
        **{
            f.name: getattr(c, f.name)
            for f in fields(c)
            if f.name not in ("layout", "image_size", "patch_size", "dtype", "device")
        },
        "layout_arg": c.layout,
        "hflip": t.augment.hflip,
        "crop_pad": t.augment.crop_pad,
        "world_size": t.world,
        "epochs_done": t.epoch,
        "train_loss": last.get("train_loss"),
        "val_loss": last.get("val_loss"),
        "val_top1": last.get("val_top1"),
        "val_top5": last.get("val_top5"),
        "best_val_top1": best.get("val_top1"),
        "best_epoch": best.get("epoch"),
        # the test split, read once at the end (None: no test split, or the run did not finish)
        **(t.test_metrics or dict.fromkeys(("test_loss", "test_top1", "test_top5", "test_epoch"))),
        "train_img_per_s": sum(r["train_img_per_s"] for r in h) / len(h) if h else None,
        "train_s": sum(r["epoch_s"] + r["eval_s"] for r in h),
        "status": status,
        "error": error,
        **environment(t.device, t.dtype),
    }
    if t.init_fields is not None:
        rec.update(t.init_fields)
    return rec


__all__ = ["run_record"]
