"""The :class:`Trainer`: it wires the parts of a run together and runs its epochs.

The parts: :class:`~.distributed.Ranks` (the processes), :class:`~.checkpoint.RunFolder` and
:class:`~.checkpoint.Checkpoints` (the folder and its checkpoint), :mod:`.build` (data, model,
samplers, loaders), :mod:`.recipe` (optimizer, schedule, scaler, loss, augmentation, mixing),
:mod:`.steps` (an epoch's steps and the non-finite watch, evaluation), :mod:`.hooks` (the
callback's decision and the epoch hooks) and :mod:`.record` (the record)."""

from __future__ import annotations

import os
import time
from typing import Callable

import torch

from ..data import ImageData
from ..errors import UsageError
from ..measure import is_oom
from ..presets import resolve
from ..progress import ProgressBar
from ..rng import GlobalState
from .build import (
    check_given_data,
    fine_tuning_source,
    init_fields,
    load_run_data,
    make_loaders,
    make_model,
    make_samplers,
)
from .checkpoint import Checkpoints, RunFolder
from .config import TrainConfig
from .distributed import Ranks
from .hooks import (
    DECISION_STATUS,
    EPOCH_METRICS,
    CheckpointHook,
    ConsoleHook,
    Decider,
    EpochCallback,
    HistoryHook,
    RankZeroFailed,
)
from .proxy import proxy_layout
from .recipe import (
    make_augment,
    make_criterion,
    make_mixer,
    make_optimizer,
    make_scaler,
    make_scheduler,
    mix,
    norm_stats,
    stable_epochs,
    train_dtype,
)
from .record import run_record
from .steps import Diverged, NonFiniteWatch, OutOfMemory, diverged, evaluate_split, one_line, oom_message, train_steps


class Trainer:
    """One training run: ``fit()`` runs it to the end and returns the record; ``train_epoch``
    and ``evaluate`` are the two halves of an epoch (the benchmark times ``train_epoch``).

    ``data``: an :class:`ImageData` already loaded at the proxy's image size (a process that
    trains many runs loads it once); without it the config's data fields are loaded here.

    ``callback(metrics)`` is called on rank 0 after every epoch with ``{"epoch": e,
    "train_loss": ..., "val_top1": ..., ...}`` and returns a decision: None or
    :data:`CONTINUE`, :data:`PRUNE` (status ``pruned``) or :data:`STOP` (status ``stopped``);
    the decision reaches every rank. An exception from it ends the run (status
    ``interrupted``, record written) and propagates; other ranks stop too.

    Running out of memory while building raises :class:`OutOfMemory` from the constructor,
    after writing the run's ``oom`` record (its ``record``); :func:`train` returns that record.

    Use it as a context manager (or call :meth:`close`): closing releases the model,
    optimizer and loaders and puts back the caller's random states and thread count.
    """

    check_every = 16  # steps between reads of the on-device non-finite flag (and at each epoch's end)

    def __init__(
        self,
        config: TrainConfig,
        *,
        out: str | os.PathLike,
        data: ImageData | None = None,
        resume: bool = False,
        overwrite: bool = False,
        callback: EpochCallback | None = None,
        console=None,
        cache_dir: str | os.PathLike | None = None,
    ):
        self.config = c = config
        self.callback = callback
        self._caller = GlobalState()
        self._closed = False
        self.ranks = self.device = None
        self.model = self.ddp = self.optimizer = self.scheduler = self.scaler = None
        self.train_loader = self.val_loader = self.test_loader = self.mixer = None
        self.history: list[dict] = []
        self.test_metrics: dict | None = None  # measured once, after the last epoch (never seen by the callback)
        self.epoch = 0  # epochs completed
        self.stable_epoch = None  # wsd: the epoch whose end is the stable checkpoint (recipe.stable_epochs)
        try:
            if c.threads:
                torch.set_num_threads(c.threads)
            self.ranks = Ranks.from_env(c.device)
            self.rank, self.world, self.device = self.ranks.rank, self.ranks.world, self.ranks.device
            self.console = console if self.rank == 0 else None
            self.dtype = train_dtype(c.dtype, self.device)
            self.run = RunFolder(out, rank=self.rank, resume=resume, overwrite=overwrite)
            self.out = self.run.path
            self.checkpoints = Checkpoints(self.run, c.checkpoint)
            self.checkpoints.check_resume(c, self.device, self.dtype)
            state = self.checkpoints.resume_state
            self.decide = Decider(callback, self.ranks)
            self.log = ConsoleHook(self.console, c.epochs)
            # Called in order with each finished epoch's row (metrics and status), after the
            # callback's decision; append your own to watch a run.
            self.epoch_hooks: list[Callable[[dict], None]] = [
                HistoryHook(self.history),
                CheckpointHook(self.checkpoints, self),
                self.log,
            ]
            self.target = resolve(c.layout)
            self.layout = proxy_layout(self.target, c.image_size, c.patch_size, c.width_scale)
            self.init_report = None
            self.init_fields = state.get("init_fields") if state is not None else None
            init_state = fine_tuning_source(c, self.layout, state)
            self.data = (
                check_given_data(data, self.layout, c, self.checkpoints)
                if data is not None
                else load_run_data(c, self.layout, self.ranks, self.console, cache_dir)
            )
            self.augment = make_augment(c, self.data, self.layout.image_size)
            try:
                self._build(init_state)
            except Exception as err:
                if not is_oom(err):
                    raise
                self._release()
                raise OutOfMemory(
                    self._finish("oom", oom_message(err, "while building the model"), time.time())
                ) from err
            self.checkpoints.restore(self)
            if self.epoch and self.epoch == self.stable_epoch:
                # resumed at its stable point (a promotion from a shorter wsd run's): that state is
                # this run's stable checkpoint too, and the next, longer run continues from it
                self.checkpoints.save_stable(self)
        except BaseException:
            self.close()
            raise

    def _build(self, init_state: dict | None) -> None:
        """Samplers, model (seeded), DDP wrapper, loaders, optimizer, schedule, scaler, loss, mixer."""
        c, d = self.config, self.data
        self.train_sampler, self.eval_samplers = make_samplers(d, c, self.ranks)
        self.steps_per_epoch = self.train_sampler.steps()
        self.norm_stats = norm_stats(c, d)
        self.model, self.ddp, self.init_report = make_model(
            self.layout, d.num_classes, seed=c.seed, init_state=init_state, ranks=self.ranks
        )
        if self.init_report is not None:
            self.init_fields = init_fields(self.init_report)
        self.train_loader, self.val_loader, self.test_loader = make_loaders(
            d, self.train_sampler, self.eval_samplers, self.augment, workers=c.workers, device=self.device
        )
        self.optimizer = make_optimizer(self.model, c, self.device)
        self.scheduler = make_scheduler(self.optimizer, c, self.steps_per_epoch)
        self.stable_epoch = stable_epochs(c, self.steps_per_epoch)
        self.scaler = make_scaler(self.device, self.dtype)
        self.criterion = make_criterion(c)
        self.mixer = make_mixer(c, d.num_classes)

    # -- release
    def __enter__(self) -> "Trainer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _release(self) -> None:
        self.model = self.ddp = self.optimizer = self.scheduler = self.scaler = None
        self.train_loader = self.val_loader = self.test_loader = self.mixer = self.criterion = None
        # Reference counting frees them here (a test checks it): no gc.collect(), which costs
        # ~0.3 s per run in a process that imported torch and pandas.
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.empty_cache()

    def close(self) -> None:
        """Release the model, optimizer, loaders and data; end a process group the trainer
        started; put back the caller's random states and thread count. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.data = self.train_sampler = self.eval_samplers = None
        self._release()
        if self.ranks is not None:
            self.ranks.close()
        self._caller.restore()

    # -- one epoch
    def train_epoch(self, epoch: int, progress: "ProgressBar | None" = None) -> dict:
        """Train one epoch (0-based ``epoch``); returns its train metrics. Raises
        :class:`Diverged` on a NaN or infinite loss (or gradient norm), naming the first such
        step. No step waits for the device: the clipping is tensor-only and the non-finite
        check is accumulated on the device and read every ``check_every`` steps."""
        c = self.config
        self.ddp.train()
        self.train_sampler.set_epoch(epoch)
        mixing = (
            None
            if self.mixer is None
            else (lambda x, y, step: mix(self.mixer, x, y, seed=c.seed, epoch=epoch, step=step, ranks=self.ranks))
        )
        return train_steps(
            model=self.model,
            ddp=self.ddp,
            loader=self.train_loader,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            scaler=self.scaler,
            criterion=self.criterion,
            mix=mixing,
            norm_stats=self.norm_stats,
            dtype=self.dtype,
            clip_grad=c.clip_grad,
            ranks=self.ranks,
            steps=self.steps_per_epoch,
            check_every=self.check_every,
            check=lambda watch: self._raise_if_diverged(watch, epoch),
            progress=progress,
        )

    def _raise_if_diverged(self, watch: NonFiniteWatch, epoch: int) -> None:
        """Read the non-finite watch (a host sync, agreed over the ranks); raise :class:`Diverged`
        naming the first bad step."""
        bad = watch.read(self.ranks)
        if bad is not None:
            raise diverged(bad, epoch=epoch, config=self.config, steps_per_epoch=self.steps_per_epoch)

    def evaluate(self, split: str = "val") -> dict:
        """Loss (no label smoothing), top-1 and top-5 accuracy (top-5 only with more than 5
        classes) on the ``val`` or ``test`` split, summed over ranks: ``{split}_loss``,
        ``{split}_top1``, ``{split}_top5``, ``eval_s``. ``fit`` reads the test split once, after
        the last epoch."""
        loader = {"val": self.val_loader, "test": self.test_loader}[split]
        if loader is None:
            raise UsageError(f"this run has no {split} split ({self.data.test_from})")
        return evaluate_split(
            self.model,
            loader,
            split=split,
            num_classes=self.data.num_classes,
            norm_stats=self.norm_stats,
            dtype=self.dtype,
            ranks=self.ranks,
        )

    # -- the run
    def fit(self) -> dict:
        """Train from the current epoch to ``config.epochs`` (or the callback's decision);
        returns the record (also written to ``out/record.json``). A run that diverged or ran
        out of memory returns a record with that status; an exception (Ctrl-C, the callback's)
        writes the record (``interrupted``, or ``failed`` for an error of the trainer's own)
        and propagates."""
        if self._closed:
            raise UsageError("this Trainer is closed; make a new one")
        started = time.time()
        c = self.config
        status, error = "completed", None
        self.decide.in_callback = False
        try:
            self.log.start(self)
            while self.epoch < c.epochs:
                row = self._one_epoch()
                try:
                    status = DECISION_STATUS[self.decide(row)]
                except BaseException:
                    self._end_epoch(row, "interrupted")  # the epoch is done: keep it
                    raise
                if status == "running" and self.epoch == c.epochs:
                    status = "completed"
                self._end_epoch(row, status)
                if status != "running":
                    break
            if status in ("completed", "stopped") and self.test_loader is not None:
                self.test_metrics = self._test()
        except Diverged as err:
            status, error = "diverged", str(err)
        except BaseException as err:
            if isinstance(err, Exception) and is_oom(err):
                status, error = "oom", oom_message(err, f"in epoch {self.epoch + 1}")
            else:
                interrupted = self.decide.in_callback or isinstance(err, (KeyboardInterrupt, RankZeroFailed))
                self._finish(
                    "interrupted" if interrupted else "failed",
                    one_line(err) if interrupted else f"{type(err).__name__}: {one_line(err)}",
                    started,
                )
                raise
        return self._finish(status, error, started)

    def _one_epoch(self) -> dict:
        epoch = self.epoch
        bar = ProgressBar.maybe(self.console)
        try:
            if bar:
                bar.start(f"epoch {epoch + 1}/{self.config.epochs}", self.steps_per_epoch)
            metrics = self.train_epoch(epoch, bar)
        finally:
            if bar:
                bar.close()
        metrics.update(self.evaluate())
        self.epoch = epoch + 1
        return {"epoch": epoch + 1, **{name: metrics[name] for name in EPOCH_METRICS}}

    def _test(self) -> dict:
        """The test split, read once: the model at the end of the run, after every epoch's
        callback (so it never reaches a decision: best epoch, pruning, a search's objective)."""
        metrics = self.evaluate("test")
        return {
            "test_loss": metrics["test_loss"],
            "test_top1": metrics["test_top1"],
            "test_top5": metrics["test_top5"],
            "test_epoch": self.epoch,
        }

    def _end_epoch(self, row: dict, status: str) -> None:
        """Run the epoch hooks on the finished epoch's row (with its ``status``)."""
        row = {**row, "status": status}
        for hook in self.epoch_hooks:
            hook(row)

    def _finish(self, status: str, error: str | None, started: float) -> dict:
        rec = self.record(status, error)
        rec["wall_s"] = time.time() - started
        self.run.save_record(rec, failed_early=status in ("interrupted", "failed", "oom") and self.epoch == 0)
        self.log.end(rec, self.out)
        return rec

    def record(self, status: str = "completed", error: str | None = None) -> dict:
        """The run as one flat record (:func:`~funnelbench.training.record.run_record`)."""
        return run_record(self, status, error)


__all__ = ["Trainer", "OutOfMemory", "Diverged"]
