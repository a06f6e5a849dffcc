"""Epoch hooks: what happens to each finished epoch's row (its metrics and status), in order.

:class:`Decider` asks the epoch callback (rank 0) for a decision, :data:`CONTINUE`, :data:`PRUNE`
or :data:`STOP`, and gives it to every rank; the search's pruning adapter is such a callback
(:class:`EpochCallback`). Then each hook in ``Trainer.epoch_hooks`` sees the row:
:class:`HistoryHook` (the history list), :class:`CheckpointHook` (checkpoint.pt when the policy
says so, and history.csv), :class:`ConsoleHook` (the epoch line; it also prints the run's first
and last lines). Any callable taking the row is a hook."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from ..errors import FunnelbenchError, UsageError
from .checkpoint import CHECKPOINT, Checkpoints

# What the epoch callback returns (None means CONTINUE).
CONTINUE, PRUNE, STOP = "continue", "prune", "stop"
# How a run ends (record["status"]); history rows of epochs after which it went on say "running".
STATUSES = ("completed", "pruned", "stopped", "diverged", "oom", "interrupted", "failed")
DECISION_STATUS = {CONTINUE: "running", PRUNE: "pruned", STOP: "stopped"}

# One place for the metric columns a callback and the history see (besides the epoch number).
EPOCH_METRICS = ("train_loss", "val_loss", "val_top1", "val_top5", "lr", "train_img_per_s", "epoch_s", "eval_s")


class _RankZeroFailed(FunnelbenchError):
    """Rank 0's epoch callback raised; the other ranks stop with it."""


RankZeroFailed = _RankZeroFailed  # (the class keeps its old name: a record's error names it)


class EpochCallback(Protocol):
    """The epoch callback (the search's pruning adapter is one): called on rank 0 with
    ``{"epoch": e, **EPOCH_METRICS}`` after every epoch; returns None or :data:`CONTINUE`,
    :data:`PRUNE` or :data:`STOP` (True and False are accepted as STOP and CONTINUE)."""

    def __call__(self, metrics: dict) -> str | bool | None: ...


def decision(value) -> str:
    """The callback's return value as CONTINUE / PRUNE / STOP (True is STOP, as it used to be)."""
    if value is None or value is False or value == CONTINUE:
        return CONTINUE
    if value is True or value == STOP:
        return STOP
    if value == PRUNE:
        return PRUNE
    raise UsageError(f"the epoch callback returned {value!r}; return None, {CONTINUE!r}, {PRUNE!r} or {STOP!r}")


class Decider:
    """Rank 0 asks the callback; every rank gets its decision (one broadcast), so no rank is
    left waiting in a collective when rank 0 prunes, stops or fails. ``in_callback`` says
    whether the callback raised (the run is then ``interrupted``, not ``failed``)."""

    def __init__(self, callback: EpochCallback | None, ranks):
        self.callback, self.ranks = callback, ranks
        self.in_callback = False

    def __call__(self, row: dict) -> str:
        codes = (CONTINUE, PRUNE, STOP, "failed")
        code, error = 0, None
        if self.ranks.rank == 0 and self.callback is not None:
            self.in_callback = True
            try:
                code = codes.index(decision(self.callback(dict(row))))
            except BaseException as err:  # noqa: BLE001 - re-raised below, after the other ranks know
                code, error = 3, err
            self.in_callback = error is not None
        code = self.ranks.broadcast_code(code)
        if error is not None:
            raise error
        if code == 3:
            raise RankZeroFailed("rank 0's epoch callback raised; this rank stops with it")
        return codes[code]


class HistoryHook:
    """Appends each row to ``history`` (the trainer's list, which the record and checkpoint read)."""

    def __init__(self, history: list[dict]):
        self.history = history

    def __call__(self, row: dict) -> None:
        self.history.append(row)


class CheckpointHook:
    """Saves the checkpoint when the policy says so (:meth:`Checkpoints.due`), the wsd run's
    stable checkpoint at its stable point (the trainer's ``stable_epoch``), then the history."""

    def __init__(self, checkpoints: Checkpoints, trainer):
        self.checkpoints, self.trainer = checkpoints, trainer

    def __call__(self, row: dict) -> None:
        if self.checkpoints.due(row["status"]):
            self.checkpoints.save(self.trainer)
        if row["epoch"] == self.trainer.stable_epoch:
            self.checkpoints.save_stable(self.trainer)
        self.checkpoints.folder.save_history(self.trainer.history)


class ConsoleHook:
    """The run on a rich console (rank 0 only; silent without one): a line per epoch, and the
    run's first lines (:meth:`start`) and last line (:meth:`end`)."""

    def __init__(self, console, epochs: int):
        self.console, self.epochs = console, epochs

    def start(self, trainer) -> None:
        if not self.console:
            return
        t = trainer
        d, c = t.data, t.config
        world = f", {t.world} processes" if t.world > 1 else ""
        what = "resuming" if t.epoch else ("fine-tuning" if c.finetune_from else "training")
        proxy = f" (proxy of {t.target})" if str(t.target) != str(t.layout) else ""
        self.console.print(
            f"{what} [bold]{t.layout}[/bold]{proxy} on [bold]{d.name}[/bold]: {d.num_classes} classes, "
            f"{len(d.train)} train / {len(d.val)} val{'' if d.test is None else f' / {len(d.test)} test'} "
            f"images at {d.image_size} px; "
            f"{c.epochs} epoch{'s' * (c.epochs != 1)} of {t.steps_per_epoch} steps, batch {c.batch_size}, "
            f"{t.dtype} on {t.device}{world}"
        )
        if d.kind == "builtin":
            self.console.print(
                f"[dim]{d.note}; for real images: --data fashion-mnist (apt-get install dataset-fashion-mnist)[/dim]"
            )
        once = ", read once at the end" if d.test is not None else ""
        self.console.print(f"[dim]val: {d.val_from}; test: {d.test_from}{once}[/dim]")
        if t.init_report is not None:
            r = t.init_report
            self.console.print(
                f"weights from {c.finetune_from}: {len(r.loaded)} tensors loaded"
                + (f", resized {', '.join(r.resized)}" if r.resized else "")
                + (f", new {', '.join(r.new)}" if r.new else "")
                + (f", re-initialised {', '.join(r.skipped)}" if r.skipped else "")
            )
        if t.epoch:
            self.console.print(f"continuing after epoch {t.epoch} from {t.out / CHECKPOINT}")

    def __call__(self, row: dict) -> None:
        if not self.console:
            return
        top5 = f"  top-5 {100 * row['val_top5']:5.1f} %" if row["val_top5"] is not None else ""
        self.console.print(
            f"epoch {row['epoch']:>3}/{self.epochs}  train loss {row['train_loss']:.4f}  "
            f"val loss {row['val_loss']:.4f}  top-1 {100 * row['val_top1']:5.1f} %{top5}  "
            f"lr {row['lr']:.2e}  {row['train_img_per_s']:7.0f} img/s  {row['epoch_s'] + row['eval_s']:6.1f} s"
        )

    def end(self, record: dict, out: Path) -> None:
        if not self.console or record["val_top1"] is None or record["status"] in ("diverged", "oom", "failed"):
            return
        ended = "" if record["status"] == "completed" else f"{record['status']} after epoch {record['epochs_done']}: "
        kept = "record and history" + (", checkpoint" if (out / CHECKPOINT).exists() else "")
        test = "" if record["test_top1"] is None else f"; test top-1 [bold]{100 * record['test_top1']:.1f} %[/bold]"
        self.console.print(
            f"{ended}val top-1 [bold]{100 * record['val_top1']:.1f} %[/bold] (best "
            f"{100 * record['best_val_top1']:.1f} % at epoch {record['best_epoch']}){test}; "
            f"{record['train_img_per_s']:.0f} img/s; {kept} in {out}"
        )


__all__ = [
    "CONTINUE",
    "PRUNE",
    "STOP",
    "STATUSES",
    "EPOCH_METRICS",
    "EpochCallback",
    "Decider",
    "HistoryHook",
    "CheckpointHook",
    "ConsoleHook",
    "RankZeroFailed",
    "decision",
]
