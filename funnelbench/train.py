"""Short-schedule proxy training and fine-tuning, in one process or under ``torchrun``.

    import funnelbench as fb
    record = fb.train("B2(17)-2(9), h96, a3, img32, patch8", out="runs/a", epochs=10)
    record = fb.finetune("runs/a/checkpoint.pt", image_size=48, out="runs/b", epochs=3)

    data = fb.load_data(None, image_size=32)          # load once, train many (a search)
    with Trainer(TrainConfig(layout="test-vit", epochs=3), out="runs/t", data=data) as trainer:
        record = trainer.fit()

The recipe: AdamW (fused; no weight decay on biases, norms, position embedding and class token),
linear warm-up then cosine decay per step, label smoothing, gradient clipping, optional
RandAugment / MixUp / CutMix (torchvision), autocast in bf16 or fp16 (fp16 with a gradient
scaler), fixed seeds. Every hyperparameter is a :class:`TrainConfig` field (its metadata is
the command line's help) and every field goes into the record.

Determinism: the model is initialised from ``seed``; the data order is a function of
``(seed, epoch)`` and every random augmentation of ``(seed, epoch, position in the epoch)``,
so on CPU the same config and data give the same metrics, and a run resumed from its
checkpoint (model, optimizer, scheduler, scaler and RNG states) gives the same metrics as one
that was never interrupted. The caller's global random states and torch thread count are put
back when the trainer closes.

Pieces: :class:`RunFolder` (the output folder: resume, overwrite, atomic writes),
:class:`Trainer` (data, model, optimizer; ``train_epoch`` / ``evaluate`` / ``fit``), the
epoch callback (returns :data:`CONTINUE`, :data:`PRUNE` or :data:`STOP`).

Many processes: under ``torchrun --nproc_per_node N`` the model is wrapped in
``DistributedDataParallel`` (NCCL on CUDA, gloo on CPU); ``batch_size`` is the global batch,
each rank takes a consecutive slice of every global batch (:class:`ShardedBatchSampler`), and
MixUp / CutMix mix the gathered global batch, so N processes take the same steps as one. The
exception: a PS-ViT stem's BatchNorm is synchronised over the ranks on CUDA (SyncBatchNorm) but
sees only a rank's slice on CPU. Only rank 0 calls the callback, prints, checkpoints and writes
records; its decision is broadcast to every rank.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import fields
from typing import Callable

import torch

from .cost import count
from .data import ImageData, ShardedBatchSampler, load_data, make_loader
from .env import environment
from .errors import UsageError
from .measure import is_oom
from .models import build_model
from .presets import resolve
from .progress import ProgressBar
from .rng import GlobalState, rng_states, set_rng_states
from .weights import load_vit_weights
from .training.config import (CHECKPOINT_POLICIES, DTYPE_CHOICES, FREE_ON_RESUME, NORM_CHOICES, SEED_MAX, TrainConfig,
                              make_config)
from .training.distributed import Ranks
from .training.recipe import (lr_factor, make_augment, make_criterion, make_mixer, make_optimizer, make_scaler,
                              make_scheduler, mix, norm_stats, train_dtype)
from .training.steps import (Diverged, NonFiniteWatch, diverged, evaluate_split, one_line, oom_message,
                             train_steps)
from .training.hooks import (CONTINUE, DECISION_STATUS, EPOCH_METRICS, PRUNE, STATUSES, STOP, CheckpointHook,
                             ConsoleHook, Decider, HistoryHook, _RankZeroFailed)
from .training.proxy import PROXY_FIELDS, _scaled_width, proxy_layout

from .training.checkpoint import (CHECKPOINT, CHECKPOINT_FORMAT, HISTORY, RECORD, RUN_FILES, Checkpoints, RunFolder,
                                  checkpoint_layout, finetune_layout, read_checkpoint, remove_checkpoint)

# ----------------------------------------------------------------------------- set-up helpers


# Kept under their old names: a checkpoint's "rng" entry is rng_states().
_rng_states, _set_rng_states = rng_states, set_rng_states


# ----------------------------------------------------------------------------- the trainer


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

    Use it as a context manager (or call :meth:`close`): closing releases the model,
    optimizer and loaders and puts back the caller's random states and thread count.
    """

    check_every = 16  # steps between reads of the on-device non-finite flag (and at each epoch's end)

    def __init__(self, config: TrainConfig, *, out: str | os.PathLike, data: ImageData | None = None,
                 resume: bool = False, overwrite: bool = False, callback: Callable[[dict], str | None] | None = None,
                 console=None, cache_dir: str | os.PathLike | None = None):
        self.config = c = config
        self.callback = callback
        self._caller = GlobalState()
        self._closed = False
        self.ranks = None
        self._failure: tuple[str, str] | None = None  # (status, error) of a run that cannot start (oom)
        self.model = self.ddp = self.optimizer = self.scheduler = self.scaler = None
        self.train_loader = self.val_loader = self.test_loader = self.mixer = None
        self.history: list[dict] = []
        self.test_metrics: dict | None = None  # measured once, after the last epoch (never seen by the callback)
        self.epoch = 0  # epochs completed
        # Called in order with each finished epoch's row (metrics and status), after the
        # callback's decision; append your own to watch a run.
        self.epoch_hooks: list[Callable[[dict], None]] = []
        try:
            if c.threads:
                torch.set_num_threads(c.threads)
            self.ranks = Ranks.from_env(c.device)
            self.rank, self.world, self.device = self.ranks.rank, self.ranks.world, self.ranks.device
            self.console = console if self.rank == 0 else None
            self.log = ConsoleHook(self.console, c.epochs)
            self.dtype = train_dtype(c.dtype, self.device)
            self.run = RunFolder(out, rank=self.rank, resume=resume, overwrite=overwrite)
            self.out = self.run.path
            self.checkpoints = Checkpoints(self.run, c.checkpoint)
            self.epoch_hooks += [HistoryHook(self.history), CheckpointHook(self.checkpoints, self), self.log]
            self.decide = Decider(callback, self.ranks)
            self.checkpoints.check_resume(c, self.device, self.dtype)
            state = self.checkpoints.resume_state
            self.target = resolve(c.layout)
            self.layout = proxy_layout(self.target, c.image_size, c.patch_size, c.width_scale)
            init_state = self._init_weights(state)
            self.data = self._inject(data, state) if data is not None else self._load_data(cache_dir)
            self.augment = make_augment(c, self.data, self.layout.image_size)
            try:
                self._build(init_state)
            except Exception as err:  # noqa: BLE001 - out of memory is a status, anything else a bug
                if not is_oom(err):
                    raise
                self._failure = ("oom", oom_message(err, "while building the model"))
                self._release()
                return
            self.checkpoints.restore(self)
        except BaseException:
            self.close()
            raise

    # -- set-up
    def _init_weights(self, resume_state: dict | None) -> dict | None:
        """The fine-tuning source's weights (checked against the proxy before the data loads);
        a resumed fine-tune has every weight in its own checkpoint and does not read it."""
        self.init_report = None
        self.init_fields = resume_state.get("init_fields") if resume_state is not None else None
        if not self.config.finetune_from or resume_state is not None:
            return None
        init_state = read_checkpoint(self.config.finetune_from)
        load_vit_weights(build_model(self.layout, num_classes=1), init_state)
        return init_state

    def _inject(self, data: ImageData, resume_state: dict | None) -> ImageData:
        if not isinstance(data, ImageData):
            raise UsageError(f"data= takes the ImageData of funnelbench.load_data, got {type(data).__name__}")
        if data.image_size != self.layout.image_size:
            raise UsageError(f"the data given is at {data.image_size} px but the proxy trains at {self.layout.image_size} px; "
                             f"load it with image_size={self.layout.image_size}")
        self.checkpoints.check_classes(data.classes)
        wanted = self.config.test_split
        if wanted is not None and wanted != (data.test is not None):
            raise UsageError(f"--{'' if wanted else 'no-'}test-split: the data given has {'no' if wanted else 'a'} test split; "
                             f"load it with load_data(..., test_split={wanted})")
        return data

    def _load_data(self, cache_dir) -> ImageData:
        c = self.config
        progress = ProgressBar.maybe(self.console)
        # rank 0 builds the cache first
        with self.ranks.rank_zero_first(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                data = load_data(c.data, image_size=self.layout.image_size, classes=c.classes,
                                 train_per_class=c.train_per_class, val_per_class=c.val_per_class,
                                 test_split=c.test_split, test_per_class=c.test_per_class,
                                 subset_seed=c.subset_seed, cache_dir=cache_dir,
                                 # Decoding into the cache is a one-off whose result does not depend on
                                 # the number of processes: use the cores.
                                 workers=c.workers or min(8, os.cpu_count() or 1),
                                 progress=progress.update if progress else None)
            finally:
                if progress:
                    progress.close()
        if self.console:
            for w in caught:
                self.console.print(f"[yellow]warning:[/yellow] {w.message}")
        return data

    def _build(self, init_state: dict | None) -> None:
        """Model (seeded), DDP wrapper, loaders, optimizer, schedule, scaler, loss, mixer."""
        c = self.config
        self.train_sampler = ShardedBatchSampler(len(self.data.train), c.batch_size, rank=self.rank, world=self.world,
                                                 shuffle=True, seed=c.seed, drop_last=True)
        self.steps_per_epoch = self.train_sampler.steps()
        if self.steps_per_epoch == 0:
            raise UsageError(f"--batch-size {c.batch_size} is larger than the {len(self.data.train)} training images; "
                             "use a smaller batch or more images per class")
        self.eval_samplers = {name: ShardedBatchSampler(len(split), c.batch_size, rank=self.rank, world=self.world,
                                                        shuffle=False, drop_last=False)
                              for name, split in (("val", self.data.val), ("test", self.data.test)) if split is not None}
        self.norm_stats = norm_stats(c, self.data)
        torch.manual_seed(c.seed)
        model = build_model(self.layout, num_classes=self.data.num_classes)
        if init_state is not None:
            self.init_report = load_vit_weights(model, init_state)
            r = self.init_report
            self.init_fields = dict(init_loaded=len(r.loaded), init_resized=",".join(r.resized),
                                    init_new=",".join(r.new), init_skipped=",".join(r.skipped))
        self.model, self.ddp = self.ranks.wrap(model)
        pin = self.device.type == "cuda"
        self.train_loader = make_loader(self.data.train, self.train_sampler, self.augment, workers=c.workers, pin_memory=pin)
        self.val_loader = make_loader(self.data.val, self.eval_samplers["val"], None, workers=c.workers, pin_memory=pin)
        if self.data.test is not None:
            self.test_loader = make_loader(self.data.test, self.eval_samplers["test"], None, workers=c.workers,
                                           pin_memory=pin)
        self.optimizer = make_optimizer(self.model, c, self.device)
        self.scheduler = make_scheduler(self.optimizer, c, self.steps_per_epoch)
        self.scaler = make_scaler(self.device, self.dtype)
        self.criterion = make_criterion(c)
        self.mixer = make_mixer(c, self.data.num_classes)

    def __enter__(self) -> "Trainer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _release(self) -> None:
        self.model = self.ddp = self.optimizer = self.scheduler = self.scaler = None
        self.train_loader = self.val_loader = self.test_loader = self.mixer = self.criterion = None
        # Reference counting frees them here (the trainer holds no cycles; a test checks it): no
        # gc.collect(), which costs ~0.3 s per run in a process that imported torch and pandas.
        if getattr(self, "device", None) is not None and self.device.type == "cuda":
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
        mixing = None if self.mixer is None else (
            lambda x, y, step: mix(self.mixer, x, y, seed=c.seed, epoch=epoch, step=step, ranks=self.ranks))
        return train_steps(model=self.model, ddp=self.ddp, loader=self.train_loader, optimizer=self.optimizer,
                           scheduler=self.scheduler, scaler=self.scaler, criterion=self.criterion, mix=mixing,
                           norm_stats=self.norm_stats, dtype=self.dtype, clip_grad=c.clip_grad, ranks=self.ranks,
                           steps=self.steps_per_epoch, check_every=self.check_every,
                           check=lambda watch: self._raise_if_diverged(watch, epoch), progress=progress)

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
        return evaluate_split(self.model, loader, split=split, num_classes=self.data.num_classes,
                              norm_stats=self.norm_stats, dtype=self.dtype, ranks=self.ranks)

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
        if self._failure is not None:
            return self._finish(*self._failure, started)
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
                interrupted = self.decide.in_callback or isinstance(err, (KeyboardInterrupt, _RankZeroFailed))
                self._finish("interrupted" if interrupted else "failed", one_line(err) if interrupted else
                             f"{type(err).__name__}: {one_line(err)}", started)
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
        return {"test_loss": metrics["test_loss"], "test_top1": metrics["test_top1"], "test_top5": metrics["test_top5"],
                "test_epoch": self.epoch}

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
        """The run as one flat record: the proxy that trained (``layout``, ``params``, ``macs``)
        and the target it stands for (``target_*``, at full size; both counted with the data's
        classes), what it trained on, every hyperparameter, the final and best metrics, and the
        environment."""
        c, data, h = self.config, self.data, self.history
        cost = count(self.layout, num_classes=data.num_classes)
        target = count(self.target, num_classes=data.num_classes)
        last = h[-1] if h else {}
        best = max(h, key=lambda r: r["val_top1"]) if h else {}
        rec = {
            "layout": str(self.layout),
            "target_layout": str(self.target),
            "dataset": data.name,
            "dataset_note": data.note,
            "num_classes": data.num_classes,
            "train_images": len(data.train),
            "val_images": len(data.val),
            "test_images": None if data.test is None else len(data.test),
            "val_from": data.val_from,
            "test_from": data.test_from,
            "skipped_images": data.skipped,
            "image_size": self.layout.image_size,
            "patch_size": self.layout.patch_size,
            "params": cost.params,
            "macs": cost.macs,
            "target_params": target.params,
            "target_macs": target.macs,
            **{f.name: getattr(c, f.name) for f in fields(c) if f.name not in ("layout", "image_size", "patch_size", "dtype", "device")},
            "layout_arg": c.layout,
            "hflip": self.augment.hflip,
            "crop_pad": self.augment.crop_pad,
            "world_size": self.world,
            "epochs_done": self.epoch,
            "train_loss": last.get("train_loss"),
            "val_loss": last.get("val_loss"),
            "val_top1": last.get("val_top1"),
            "val_top5": last.get("val_top5"),
            "best_val_top1": best.get("val_top1"),
            "best_epoch": best.get("epoch"),
            # the test split, read once at the end (None: no test split, or the run did not finish)
            **(self.test_metrics or dict.fromkeys(("test_loss", "test_top1", "test_top5", "test_epoch"))),
            "train_img_per_s": sum(r["train_img_per_s"] for r in h) / len(h) if h else None,
            "train_s": sum(r["epoch_s"] + r["eval_s"] for r in h),
            "status": status,
            "error": error,
            **environment(self.device, self.dtype),
        }
        if self.init_fields is not None:
            rec.update(self.init_fields)
        return rec

    # -- output
# ----------------------------------------------------------------------------- entry points


def train(layout=None, *, out: str | os.PathLike, config: TrainConfig | None = None, data: ImageData | None = None,
          resume: bool = False, overwrite: bool = False, callback: Callable[[dict], str | None] | None = None,
          console=None, cache_dir: str | os.PathLike | None = None, **options) -> dict:
    """Train ``layout`` (a layout string, preset name or Layout: the target, at full size) with
    ``options`` (the :class:`TrainConfig` fields), or a ready ``config``, on ``data`` (an
    already loaded :class:`ImageData`) or on the config's data; returns the final record (see
    :class:`Trainer` for the callback's decisions and the statuses). The caller's random states
    and torch thread count are the same afterwards, and the model and loaders are released."""
    config = make_config(layout, config=config, **options)
    with Trainer(config, out=out, data=data, resume=resume, overwrite=overwrite, callback=callback, console=console,
                 cache_dir=cache_dir) as trainer:
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



__all__ = ["TrainConfig", "Trainer", "RunFolder", "Diverged", "train", "finetune", "make_config", "proxy_layout",
           "remove_checkpoint", "read_checkpoint", "checkpoint_layout", "finetune_layout", "lr_factor", "EPOCH_METRICS",
           "CONTINUE", "PRUNE", "STOP", "STATUSES", "CHECKPOINT_POLICIES", "FREE_ON_RESUME"]
