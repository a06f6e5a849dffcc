"""A run's folder and its checkpoint.

:class:`RunFolder` is the output folder (``checkpoint.pt``, ``history.csv``, ``record.json``,
and under the wsd schedule ``stable.pt``: resume, overwrite, atomic writes); :class:`Checkpoints` is the checkpoint manager: when a
checkpoint is written (the ``--checkpoint`` policy), what it holds (model, optimizer,
scheduler, scaler, history and RNG states), how a run continues from it, and when it may
(the resume checks). :func:`resume_point` lets a retried search trial continue where its dead
predecessor stopped; :func:`read_checkpoint`, :func:`remove_checkpoint`,
:func:`checkpoint_layout` and :func:`finetune_layout` read and remove checkpoints."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch

from ..errors import UsageError
from ..exports import export_records
from ..rng import rng_states, set_rng_states
from .config import FREE_ON_RESUME, TrainConfig

CHECKPOINT = "checkpoint.pt"
# wsd: the checkpoint at the stable point (recipe.stable_epochs), before the decay; a longer wsd
# run continues from it (its state says ``"stable": True``)
STABLE = "stable.pt"
HISTORY = "history.csv"
RECORD = "record.json"
RUN_FILES = (CHECKPOINT, STABLE, HISTORY, RECORD)
CHECKPOINT_FORMAT = "funnelbench-train/1"


def read_checkpoint(path: str | os.PathLike) -> dict:
    """A checkpoint file (loaded with ``weights_only=True``: tensors and plain values only)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UsageError(
            f"checkpoint {str(path)!r} does not exist; give the checkpoint.pt of a run (or a state dict file)"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors of every kind: not a checkpoint we can read safely
        raise UsageError(
            f"cannot read checkpoint {str(path)!r} ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
            "give a funnelbench checkpoint.pt or a plain state dict saved with torch.save"
        ) from None


def checkpoint_layout(checkpoint: str | os.PathLike) -> str | None:
    """The layout a funnelbench checkpoint was trained with (None for a plain state dict)."""
    state = read_checkpoint(checkpoint)
    return state.get("layout") if isinstance(state, dict) and isinstance(state.get("layout"), str) else None


def finetune_layout(checkpoint: str | os.PathLike, *, out: str | os.PathLike, resume: bool = False) -> str:
    """The layout a fine-tune trains when none is given: the source checkpoint's; when resuming,
    the one the run's own checkpoint recorded (the source need not exist any more)."""
    own = Path(out).expanduser() / CHECKPOINT
    if resume and own.is_file():
        layout = read_checkpoint(own).get("config", {}).get("layout")
        if isinstance(layout, str):
            return layout
    layout = checkpoint_layout(checkpoint)
    if layout is None:
        raise UsageError(f"{checkpoint} is a plain state dict and does not say its layout; pass --layout")
    return layout


class RunFolder:
    """A run's folder: ``checkpoint.pt``, ``history.csv``, ``record.json``.

    Everything is checked when it is opened and nothing is written then: the folder is created,
    and an older run's files (``overwrite``) are replaced, only when the new run writes its
    first file, each written to a temporary name and renamed into place. Only rank 0 writes."""

    def __init__(self, out: str | os.PathLike, *, rank: int = 0, resume: bool = False, overwrite: bool = False):
        self.path = Path(out).expanduser()
        self.rank = rank
        if self.path.exists() and not self.path.is_dir():
            raise UsageError(f"--out {self.path}: is a file; choose a folder")
        old = [name for name in RUN_FILES if (self.path / name).exists()]
        self.resume_state = None
        self.claimed = resume  # whether the files here are this run's
        if resume:
            if CHECKPOINT not in old:
                why = " (the run kept none: --checkpoint last or none)" if old else ""
                raise UsageError(f"--resume: no checkpoint in {self.path}{why}; run without --resume to start there")
            self.resume_state = read_checkpoint(self.path / CHECKPOINT)
            if self.resume_state.get("format") != CHECKPOINT_FORMAT:
                raise UsageError(f"--resume: {self.path / CHECKPOINT} is not a funnelbench training checkpoint")
        elif old and not overwrite:
            raise UsageError(
                f"--out {self.path} already holds a run ({self._describe()}); pass --resume to continue it, "
                "--overwrite to start again, or choose another --out"
            )
        self.had_run = bool(old) and not resume
        if rank == 0:
            self._check_writable()

    def _describe(self) -> str:
        try:
            state = read_checkpoint(self.path / CHECKPOINT)
            return f"{state.get('epoch', '?')} of {state.get('config', {}).get('epochs', '?')} epochs"
        except UsageError:
            return ", ".join(name for name in RUN_FILES if (self.path / name).exists())

    def _check_writable(self) -> None:
        probe = self.path
        while not probe.exists():
            probe = probe.parent
        if not probe.is_dir():
            raise UsageError(f"--out {self.path}: {probe} is a file; choose a folder")
        try:
            fd, tmp = tempfile.mkstemp(prefix=".funnelbench-probe.", dir=probe)
        except OSError:
            raise UsageError(f"--out {self.path}: the folder is not writable; choose another") from None
        os.close(fd)
        os.unlink(tmp)

    def _claim(self, keep: str) -> None:
        """Before this run's first file lands: make the folder, remove an older run's other files."""
        if self.claimed:
            return
        for name in RUN_FILES:
            if name != keep:
                (self.path / name).unlink(missing_ok=True)
        self.claimed = True

    def _mkdir(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UsageError(
                f"--out {self.path}: cannot create the folder ({err.strerror}); choose a writable path"
            ) from None

    def save_checkpoint(self, state: dict, name: str = CHECKPOINT) -> None:
        """``torch.save`` straight into a temporary file next to the checkpoint (or the stable
        checkpoint, ``name``), then renamed."""
        if self.rank != 0:
            return
        self._mkdir()
        for stale in self.path.glob(f".{name}.*.tmp"):  # left by a save that was killed
            stale.unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=self.path)
        try:
            os.close(fd)
            with open(tmp, "wb") as f:
                torch.save(state, f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            self._claim(keep=name)
            os.replace(tmp, self.path / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def save_history(self, history: list[dict]) -> None:
        if self.rank != 0:
            return
        self._mkdir()
        self._claim(keep=HISTORY)
        export_records(history, self.path / HISTORY)

    def save_record(self, record: dict, *, failed_early: bool = False) -> bool:
        """Write ``record.json``; a run that failed before it wrote anything leaves an older
        run (``overwrite``) in place instead (returns False then)."""
        if self.rank != 0 or (failed_early and self.had_run and not self.claimed):
            return False
        self._mkdir()
        self._claim(keep=RECORD)
        export_records([record], self.path / RECORD)
        return True


def remove_checkpoint(out: str | os.PathLike) -> bool:
    """Delete the checkpoints (the last and the stable one) of a finished run in ``out`` (its
    record and history stay; it can no longer be resumed or fine-tuned from). Returns whether
    there was one."""
    paths = [Path(out).expanduser() / name for name in (CHECKPOINT, STABLE)]
    existed = any(path.exists() for path in paths)
    for path in paths:
        path.unlink(missing_ok=True)
    return existed


class Checkpoints:
    """The checkpoint manager of a run: ``policy`` (``--checkpoint``: every-epoch, last, none)
    says after which epochs :meth:`save` is due (and, under the wsd schedule with a policy other
    than none, :meth:`save_stable` at the stable point); :meth:`state` is what a checkpoint holds and
    :meth:`restore` puts it back into a built trainer; :meth:`check_resume` refuses a resume
    whose results would differ from the run's."""

    def __init__(self, folder: RunFolder, policy: str):
        self.folder = folder
        self.policy = policy

    @property
    def resume_state(self) -> dict | None:
        """The checkpoint the run continues from (``--resume``), or None."""
        return self.folder.resume_state

    def check_resume(self, config: TrainConfig, device: torch.device, dtype: str) -> None:
        """The resumed run's options must be the saved ones (but :data:`FREE_ON_RESUME`), and
        ``auto`` must still mean the same device type and dtype."""
        state = self.resume_state
        if state is None:
            return
        saved, now = state["config"], asdict(config)
        free = FREE_ON_RESUME
        if saved.get("epochs", now["epochs"]) != now["epochs"]:
            self._check_extension(saved, config, int(state.get("epoch", 0)))
            free = free | {"epochs"}
        diff = [
            f"{k}={saved.get(k)!r} (now {now[k]!r})" for k in now if k not in free and saved.get(k, now[k]) != now[k]
        ]
        if diff:
            raise UsageError(
                f"--resume: the run in {self.folder.path} was made with other options: {', '.join(diff[:4])}"
                f"{' ...' if len(diff) > 4 else ''}; resume with the same options or choose another --out"
            )
        was = (state.get("device_type"), state.get("dtype_resolved"))
        if was[0] is not None and was != (device.type, dtype):
            raise UsageError(
                f"--resume: the run in {self.folder.path} trained in {was[1]} on {was[0]}, but --device "
                f"{config.device} / --dtype {config.dtype} now mean {dtype} on {device.type}; "
                f"the results would differ: resume where it ran, or choose another --out"
            )

    def _check_extension(self, saved: dict, config: TrainConfig, done: int) -> None:
        """A resume with other ``--epochs``: under the constant schedule (whose lr does not
        depend on the run's length, so the result is the run of the new length), or from a wsd
        run's stable checkpoint to a run at least as long (the steps before the decay are the
        longer run's first steps); and not below the epochs already trained."""
        was = saved.get("schedule", "cosine")  # checkpoints written before --schedule: cosine
        stable = was == "wsd" and config.schedule == "wsd" and self.resume_state.get("stable") is True
        if stable and config.epochs < saved["epochs"]:
            raise UsageError(
                f"--resume with --epochs {config.epochs}: the stable checkpoint in {self.folder.path} is the "
                f"start of runs of {saved['epochs']} epochs or more (a shorter run decays earlier); give "
                f"--epochs {saved['epochs']} or more"
            )
        if not stable and (was != "constant" or config.schedule != "constant"):
            wsd = f" (a wsd run extends from its {STABLE})" if was == "wsd" == config.schedule else ""
            raise UsageError(
                f"--resume with --epochs {config.epochs}: the run in {self.folder.path} was made for "
                f"{saved['epochs']} epochs with the {was} schedule, whose learning rate depends on --epochs{wsd}; "
                f"resume with --epochs {saved['epochs']}, or train with --schedule constant to extend runs"
            )
        if config.epochs < done:
            raise UsageError(
                f"--resume with --epochs {config.epochs}: the run in {self.folder.path} has already trained "
                f"{done} epochs; give --epochs {done} or more"
            )

    def check_classes(self, classes) -> None:
        """Data given to a resumed run must have the classes it trained on."""
        state = self.resume_state
        if state is not None and list(state.get("classes", classes)) != list(classes):
            raise UsageError(f"--resume: the run in {self.folder.path} trained on other classes than the data given")

    def due(self, status: str) -> bool:
        """Whether the epoch that ended with ``status`` (``running`` when the run goes on) is checkpointed."""
        return self.policy == "every-epoch" or (self.policy == "last" and status != "running")

    def state(self, trainer) -> dict:
        """What a checkpoint holds: the run's identity (config, layouts, data, device, dtype), its
        progress (epoch, history) and every state that the next step depends on."""
        t = trainer
        return {
            "format": CHECKPOINT_FORMAT,
            "config": asdict(t.config),
            "layout": str(t.layout),
            "target_layout": str(t.target),
            "dataset": t.data.name,
            "classes": list(t.data.classes),
            "device_type": t.device.type,
            "dtype_resolved": t.dtype,
            "init_fields": t.init_fields,
            "epoch": t.epoch,
            "model": t.model.state_dict(),
            "optimizer": t.optimizer.state_dict(),
            "scheduler": t.scheduler.state_dict(),
            "scaler": t.scaler.state_dict(),
            "history": t.history,
            "rng": rng_states(),
        }

    def save(self, trainer) -> None:
        self.folder.save_checkpoint(self.state(trainer))

    def save_stable(self, trainer) -> None:
        """The wsd run's stable checkpoint (:data:`STABLE`), where a longer run continues."""
        if self.policy != "none":
            self.folder.save_checkpoint({**self.state(trainer), "stable": True}, STABLE)

    def restore(self, trainer) -> None:
        """Continue a built trainer from the resume checkpoint (nothing without one): weights,
        optimizer, schedule, scaler, history, epoch and the random states."""
        state, t = self.resume_state, trainer
        if state is None:
            return
        t.model.load_state_dict(state["model"])
        t.optimizer.load_state_dict(state["optimizer"])
        t.scheduler.load_state_dict(state["scheduler"])
        # the next step's lr from this run's schedule: an extended run's (a longer one) may differ
        # from the lr the saved run set for it (the wsd decay's first step, at the stable point)
        for group, base, factor in zip(t.optimizer.param_groups, t.scheduler.base_lrs, t.scheduler.lr_lambdas):
            group["lr"] = base * factor(t.scheduler.last_epoch)
        t.scheduler._last_lr = [group["lr"] for group in t.optimizer.param_groups]
        t.scaler.load_state_dict(state["scaler"])
        t.history[:] = state["history"]
        t.epoch = int(state["epoch"])
        set_rng_states(state["rng"])


def resume_point(source: Path | None, target: Path, *, stable: bool = False) -> list[dict] | None:
    """Prepare a retried trial to continue where its dead predecessor stopped: copy the last
    epoch checkpoint (and history) of the run folder ``source`` into ``target`` and return the
    epochs it holds; with ``stable``, its stable checkpoint (:data:`STABLE`, a wsd run's start of
    longer runs) as ``target``'s checkpoint. None (train from the start) without a predecessor or
    a readable checkpoint."""
    name = STABLE if stable else CHECKPOINT
    if source is None or not (source / name).is_file():
        return None
    try:
        history = list(read_checkpoint(source / name).get("history") or [])
    except Exception:  # noqa: BLE001 - a damaged checkpoint: start again
        return None
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source / name, target / CHECKPOINT)
    # a retry takes its predecessor's history and stable checkpoint (the start of a longer run,
    # written before it died); the stable point's history is in its state
    for extra in () if stable else (HISTORY, STABLE):
        if (source / extra).is_file():
            shutil.copy2(source / extra, target / extra)
    return history


__all__ = [
    "RunFolder",
    "Checkpoints",
    "read_checkpoint",
    "remove_checkpoint",
    "checkpoint_layout",
    "finetune_layout",
    "resume_point",
    "CHECKPOINT",
    "STABLE",
    "HISTORY",
    "RECORD",
    "RUN_FILES",
    "CHECKPOINT_FORMAT",
]
