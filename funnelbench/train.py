"""Short-schedule proxy training and fine-tuning, in one process or under ``torchrun``.

    import funnelbench as fb
    record = fb.train("B2(17)-2(9), h96, a3, img32, patch8", out="runs/a", epochs=10)
    record = fb.finetune("runs/a/checkpoint.pt", image_size=48, out="runs/b", epochs=3)

The recipe: AdamW (fused; no weight decay on biases, norms, position embedding and class token),
linear warm-up then cosine decay per step, label smoothing, gradient clipping, optional
RandAugment / MixUp / CutMix (torchvision), autocast in bf16 or fp16 (fp16 with a gradient
scaler), fixed seeds. Every hyperparameter is a :class:`TrainConfig` field and every field
goes into the record.

Determinism: the model is initialised from ``seed``; the data order is a function of
``(seed, epoch)`` and every random augmentation of ``(seed, epoch, position in the epoch)``,
so on CPU the same config and data give the same metrics, and a run resumed from its
checkpoint (saved after every epoch, with model, optimizer, scheduler, scaler and RNG states)
gives the same metrics as one that was never interrupted.

Many processes: under ``torchrun --nproc_per_node N`` the model is wrapped in
``DistributedDataParallel`` (NCCL on CUDA, gloo on CPU); ``batch_size`` is the global batch,
each rank takes a consecutive slice of every global batch (:class:`ShardedBatchSampler`), so N
processes take the same steps as one. Only rank 0 prints, checkpoints and writes records.
"""

from __future__ import annotations

import io as _io
import math
import os
import random
import time
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from .cost import count
from .data import Augment, ImageData, ShardedBatchSampler, load_data, make_loader, normalize, sample_seeds
from .env import environment, resolve_device, resolve_dtype
from .errors import FunnelbenchError, UsageError
from .exports import atomic_write, export_records
from .layout import Layout
from .models import build_model
from .presets import resolve
from .weights import load_vit_weights

CHECKPOINT = "checkpoint.pt"
HISTORY = "history.csv"
RECORD = "record.json"
CHECKPOINT_FORMAT = "funnelbench-train/1"
DTYPE_CHOICES = ("auto", "fp32", "bf16", "fp16")
# Fields that do not change the numbers: a resumed run may use other values.
_FREE_ON_RESUME = {"workers"}

# One place for the metric columns a callback and the history see (besides the epoch number).
EPOCH_METRICS = ("train_loss", "val_loss", "val_top1", "val_top5", "lr", "train_img_per_s", "epoch_s", "eval_s")


@dataclass
class TrainConfig:
    """Everything that decides a training run's numbers (see ``funnelbench train --help``)."""

    layout: str
    data: str | None = None  # None: the built-in synthetic dataset
    classes: int | None = None  # keep K classes (chosen with subset_seed)
    train_per_class: int | None = None
    val_per_class: int | None = None
    subset_seed: int = 0
    image_size: int | None = None  # None: the layout's own
    patch_size: int | None = None
    epochs: int = 10
    batch_size: int = 128  # global, over all processes
    lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    clip_grad: float = 1.0  # max gradient norm; 0 = off
    randaugment: int = 0  # RandAugment ops per image; 0 = off
    randaugment_magnitude: int = 9
    mixup: float = 0.0  # MixUp alpha; 0 = off
    cutmix: float = 0.0  # CutMix alpha; 0 = off
    hflip: bool | None = None  # None: on, unless the data's classes change under a flip (built-in)
    crop_pad: int | None = None  # random-crop padding in px; None: image_size // 8
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"  # auto: bf16 on a CUDA GPU that has it, else fp32
    workers: int = 0  # loader processes (results do not depend on it)
    finetune_from: str | None = None  # a checkpoint whose weights initialise the model

    def __post_init__(self):
        def bad(flag, value, why):
            raise UsageError(f"--{flag.replace('_', '-')} {value}: {why}")

        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                bad(name, getattr(self, name), "must be at least 1")
        for name in ("lr",):
            if not getattr(self, name) > 0:
                bad(name, getattr(self, name), "must be positive")
        for name in ("min_lr", "weight_decay", "warmup_epochs", "clip_grad", "mixup", "cutmix", "randaugment", "workers"):
            if getattr(self, name) < 0:
                bad(name, getattr(self, name), "must not be negative")
        if self.crop_pad is not None and self.crop_pad < 0:
            bad("crop_pad", self.crop_pad, "must not be negative")
        if not 0 <= self.label_smoothing < 1:
            bad("label_smoothing", self.label_smoothing, "must be in [0, 1)")
        if self.dtype not in DTYPE_CHOICES:
            bad("dtype", self.dtype, f"use one of {', '.join(DTYPE_CHOICES)}")


class Diverged(FunnelbenchError):
    """The loss (or the gradient norm) became NaN or infinite."""


# ----------------------------------------------------------------------------- set-up helpers


def proxy_layout(layout, image_size: int | None = None, patch_size: int | None = None) -> Layout:
    """The layout at the proxy resolution: the stages keep their pooling strides and their token
    counts follow the patch grid (56 px with 4 px patches is the 14 x 14 grid of 224 / 16)."""
    layout = resolve(layout)
    size = image_size or layout.image_size
    patch = patch_size or layout.patch_size
    if (size, patch) == (layout.image_size, layout.patch_size):
        return layout
    if size % patch:
        raise UsageError(f"--image-size {size} is not a multiple of --patch-size {patch}; "
                         f"use e.g. {size - size % patch or patch} or {size - size % patch + patch}")
    return layout.at_image_size(size, patch)


def _distributed(device_name: str) -> tuple[int, int, torch.device, bool]:
    """(rank, world size, device, whether we started the process group) from torchrun's
    environment; one process when ``WORLD_SIZE`` is unset."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_name)
    if world <= 1:
        return 0, 1, device, False
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device, owns


def train_dtype(name: str, device: torch.device) -> str:
    """``auto`` -> bf16 on a CUDA GPU that supports it, else fp32; fp16 needs CUDA or a recent CPU."""
    if name == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    resolve_dtype(name)
    return name


def _rng_states() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
        "python": random.getstate(),
    }


def _set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if states.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))


def read_checkpoint(path: str | os.PathLike) -> dict:
    """A checkpoint file (loaded with ``weights_only=True``: tensors and plain values only)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UsageError(f"checkpoint {str(path)!r} does not exist; give the checkpoint.pt of a run (or a state dict file)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors of every kind: not a checkpoint we can read safely
        raise UsageError(f"cannot read checkpoint {str(path)!r} ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
                         "give a funnelbench checkpoint.pt or a plain state dict saved with torch.save") from None


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only (timm's rule): not on biases, norms, position embedding, class token."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name in ("pos_embed", "cls_token") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_factor(step: int, *, warmup: int, total: int, lr: float, min_lr: float) -> float:
    """Multiplier of the base learning rate at ``step``: linear warm-up over ``warmup`` steps
    (from lr/warmup to lr), then cosine decay to ``min_lr`` at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return (min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))) / lr


# ----------------------------------------------------------------------------- the trainer


class Trainer:
    """One training run. ``fit()`` runs it to the end and returns the record; ``train_epoch``
    and ``evaluate`` are the two halves of an epoch (the benchmark times ``train_epoch``).

    ``callback(metrics)`` is called after every epoch (after the checkpoint is written) with
    ``{"epoch": e, "train_loss": ..., "val_top1": ..., ...}``; returning True stops the run
    early (status ``stopped``). An exception from it (Optuna's ``TrialPruned``) ends the run
    and propagates, with the record written first.
    """

    def __init__(self, config: TrainConfig, *, out: str | os.PathLike, resume: bool = False, overwrite: bool = False,
                 callback: Callable[[dict], bool | None] | None = None, console=None,
                 cache_dir: str | os.PathLike | None = None):
        self.config = c = config
        self.callback = callback
        self.rank, self.world, self.device, self._owns_group = _distributed(c.device)
        self.console = console if self.rank == 0 else None
        self.dtype = train_dtype(c.dtype, self.device)
        self.out = Path(out)
        resume_state = self._prepare_out(resume, overwrite)

        self.layout = proxy_layout(c.layout, c.image_size, c.patch_size)
        init_state = None
        if c.finetune_from:
            # Check that the weights fit before spending time on the data.
            init_state = read_checkpoint(c.finetune_from)
            load_vit_weights(build_model(self.layout, num_classes=1), init_state)
        self.data = self._load_data(cache_dir)
        torch.manual_seed(c.seed)
        model = build_model(self.layout, num_classes=self.data.num_classes)
        self.init_report = load_vit_weights(model, init_state) if init_state is not None else None
        self.model = model.to(self.device)
        self.ddp = self.model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp = DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

        hflip = self.data.hflip_ok if c.hflip is None else c.hflip
        crop_pad = self.layout.image_size // 8 if c.crop_pad is None else c.crop_pad
        self.augment = Augment(crop_pad=crop_pad, hflip=hflip, randaugment=c.randaugment, magnitude=c.randaugment_magnitude)
        self.train_sampler = ShardedBatchSampler(len(self.data.train), c.batch_size, rank=self.rank, world=self.world,
                                                 shuffle=True, seed=c.seed, drop_last=True)
        self.steps_per_epoch = self.train_sampler.steps()
        if self.steps_per_epoch == 0:
            raise UsageError(f"--batch-size {c.batch_size} is larger than the {len(self.data.train)} training images; "
                             "use a smaller batch or more images per class")
        self.val_sampler = ShardedBatchSampler(len(self.data.val), c.batch_size, rank=self.rank, world=self.world,
                                               shuffle=False, drop_last=False)
        pin = self.device.type == "cuda"
        self.train_loader = make_loader(self.data.train, self.train_sampler, self.augment, workers=c.workers, pin_memory=pin)
        self.val_loader = make_loader(self.data.val, self.val_sampler, None, workers=c.workers, pin_memory=pin)

        # The fused AdamW kernel (CPU and CUDA) is 3-4x faster than the per-tensor loop on small models.
        self.optimizer = torch.optim.AdamW(_param_groups(self.model, c.weight_decay), lr=c.lr,
                                           fused=self.device.type in ("cpu", "cuda"))
        total = c.epochs * self.steps_per_epoch
        warmup = min(total, round(c.warmup_epochs * self.steps_per_epoch))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, warmup=warmup, total=total, lr=c.lr, min_lr=c.min_lr))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == "fp16")
        self.criterion = torch.nn.CrossEntropyLoss(label_smoothing=c.label_smoothing)
        self.mixer = self._mixer()
        self.history: list[dict] = []
        self.epoch = 0  # epochs completed
        if resume_state is not None:
            self._restore(resume_state)

    # -- set-up
    def _prepare_out(self, resume: bool, overwrite: bool) -> dict | None:
        path = self.out / CHECKPOINT
        if self.out.exists() and not self.out.is_dir():
            raise UsageError(f"--out {self.out}: is a file; choose a folder")
        if resume:
            if not path.exists():
                raise UsageError(f"--resume: no checkpoint in {self.out}; run without --resume to start there")
            state = read_checkpoint(path)
            self._check_same_config(state)
            return state
        if path.exists() and not overwrite:
            state = read_checkpoint(path)
            raise UsageError(f"--out {self.out} already holds a run ({state.get('epoch', '?')} of "
                             f"{state.get('config', {}).get('epochs', '?')} epochs); pass --resume to continue it, "
                             "--overwrite to start again, or choose another --out")
        if self.rank == 0:
            try:
                self.out.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise UsageError(f"--out {self.out}: cannot create the folder ({err.strerror}); choose a writable path") from None
            if not os.access(self.out, os.W_OK):
                raise UsageError(f"--out {self.out}: the folder is not writable; choose another")
            for name in (CHECKPOINT, HISTORY, RECORD):
                (self.out / name).unlink(missing_ok=True)
        return None

    def _check_same_config(self, state: dict) -> None:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise UsageError(f"--resume: {self.out / CHECKPOINT} is not a funnelbench training checkpoint")
        saved, now = state["config"], asdict(self.config)
        diff = [f"{k}={saved.get(k)!r} (now {now[k]!r})" for k in now
                if k not in _FREE_ON_RESUME and saved.get(k) != now[k]]
        if diff:
            raise UsageError(f"--resume: the run in {self.out} was made with other options: {', '.join(diff[:4])}"
                             f"{' ...' if len(diff) > 4 else ''}; resume with the same options or choose another --out")

    def _load_data(self, cache_dir) -> ImageData:
        c = self.config
        progress = _ProgressBar.maybe(self.console)
        if self.world > 1 and self.rank != 0:
            dist.barrier()  # rank 0 builds the cache first
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                data = load_data(c.data, image_size=self.layout.image_size, classes=c.classes,
                                 train_per_class=c.train_per_class, val_per_class=c.val_per_class,
                                 subset_seed=c.subset_seed, cache_dir=cache_dir,
                                 # Decoding into the cache is a one-off whose result does not depend on
                                 # the number of processes: use the cores.
                                 workers=c.workers or min(8, os.cpu_count() or 1),
                                 progress=progress.update if progress else None)
            finally:
                if progress:
                    progress.close()
        if self.world > 1 and self.rank == 0:
            dist.barrier()
        if self.console:
            for w in caught:
                self.console.print(f"[yellow]warning:[/yellow] {w.message}")
        return data

    def _mixer(self):
        c = self.config
        if not (c.mixup or c.cutmix):
            return None
        from torchvision.transforms import v2

        ops = ([v2.MixUp(alpha=c.mixup, num_classes=self.data.num_classes)] if c.mixup else []) + \
              ([v2.CutMix(alpha=c.cutmix, num_classes=self.data.num_classes)] if c.cutmix else [])
        return ops[0] if len(ops) == 1 else v2.RandomChoice(ops)

    def _restore(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.history = list(state["history"])
        self.epoch = int(state["epoch"])
        _set_rng_states(state["rng"])

    # -- one epoch
    def train_epoch(self, epoch: int, progress: "_ProgressBar | None" = None) -> dict:
        """Train one epoch (0-based ``epoch``); returns its train metrics. Raises
        :class:`Diverged` on a NaN or infinite loss."""
        c, device = self.config, self.device
        self.ddp.train()
        self.train_sampler.set_epoch(epoch)
        autocast = torch.autocast(device.type, dtype=resolve_dtype(self.dtype), enabled=self.dtype != "fp32")
        loss_sum = torch.zeros((), device=device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        images = 0
        _sync(device)
        start = time.perf_counter()
        for step, (x, y) in enumerate(self.train_loader):
            x = normalize(x.to(device, non_blocking=True))
            y = y.to(device, non_blocking=True)
            if self.mixer is not None:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(int(sample_seeds(c.seed, epoch, np.array([step]))[0] >> np.uint64(1)) + self.rank)
                    x, y = self.mixer(x, y)
            with autocast:
                loss = self.criterion(self.ddp(x), y)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
            self._check_finite(loss, grad_norm, epoch, step)
            if 0 < c.clip_grad < grad_norm:  # clip (a pass over the gradients) only when needed
                torch.nn.utils.clip_grads_with_norm_(params, c.clip_grad, grad_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            loss_sum += loss.detach().float()
            images += x.shape[0]
            if progress:
                progress.advance(loss)
        _sync(device)
        seconds = time.perf_counter() - start
        totals = self._all_sum(torch.stack([loss_sum, torch.tensor(float(images), device=device)]))
        steps = self.steps_per_epoch
        return {"train_loss": float(totals[0]) / (steps * self.world), "lr": self.optimizer.param_groups[0]["lr"],
                "train_img_per_s": float(totals[1]) / seconds, "epoch_s": seconds}

    def _check_finite(self, loss: torch.Tensor, grad_norm: torch.Tensor, epoch: int, step: int) -> None:
        if self.scaler.is_enabled():
            # fp16: an infinite gradient is the scaler's business (it skips the step); only the
            # loss counts, agreed over the ranks so that all of them stop together.
            bad = (~torch.isfinite(loss.detach().float())).float()
            bad = self._all_sum(bad.reshape(1))[0]
            if bad == 0:
                return
        else:
            # A non-finite loss on any rank makes the all-reduced gradient non-finite on every
            # rank, so checking the gradient norm stops all ranks at the same step.
            if bool(torch.isfinite(torch.stack([loss.detach().float(), grad_norm.float()])).all()):
                return
        value = loss.item()
        what = f"loss became {value}" if not math.isfinite(value) else f"gradient norm became {grad_norm.item()}"
        raise Diverged(f"the {what} at epoch {epoch + 1}, step {step + 1} (lr {self.optimizer.param_groups[0]['lr']:.3g}); "
                       "the run stopped: lower --lr, lengthen --warmup-epochs or keep --clip-grad on")

    @torch.inference_mode()
    def evaluate(self) -> dict:
        """Validation loss (no label smoothing), top-1 and top-5 accuracy (top-5 only with more
        than 5 classes), summed over ranks."""
        device = self.device
        self.model.eval()
        autocast = torch.autocast(device.type, dtype=resolve_dtype(self.dtype), enabled=self.dtype != "fp32")
        k = min(5, self.data.num_classes)
        sums = torch.zeros(4, device=device, dtype=torch.float64)  # loss, top-1, top-k, n
        _sync(device)
        start = time.perf_counter()
        for x, y in self.val_loader:
            x = normalize(x.to(device, non_blocking=True))
            y = y.to(device, non_blocking=True)
            with autocast:
                logits = self.model(x)
            logits = logits.float()
            top = logits.topk(k, dim=1).indices
            hit = top == y[:, None]
            sums += torch.stack([F.cross_entropy(logits, y, reduction="sum").double(), hit[:, 0].sum().double(),
                                 hit.any(1).sum().double(), torch.tensor(float(len(y)), device=device, dtype=torch.float64)])
        _sync(device)
        seconds = time.perf_counter() - start
        loss, top1, topk, n = self._all_sum(sums).tolist()
        return {"val_loss": loss / n, "val_top1": top1 / n, "val_top5": topk / n if self.data.num_classes > 5 else None,
                "eval_s": seconds}

    def _all_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            t = t.clone()
            dist.all_reduce(t)
        return t

    # -- the run
    def fit(self) -> dict:
        """Train from the current epoch to ``config.epochs``; returns the record (also written to
        ``out/record.json``). A diverged run returns a record with ``status`` ``diverged``."""
        c = self.config
        status, error = "completed", None
        started = time.time()
        try:
            self._log_start()
            while self.epoch < c.epochs:
                epoch = self.epoch
                bar = _ProgressBar.maybe(self.console)
                try:
                    if bar:
                        bar.start(f"epoch {epoch + 1}/{c.epochs}", self.steps_per_epoch)
                    metrics = self.train_epoch(epoch, bar)
                finally:
                    if bar:
                        bar.close()
                metrics.update(self.evaluate())
                row = {"epoch": epoch + 1, **{name: metrics[name] for name in EPOCH_METRICS}}
                self.history.append(row)
                self.epoch = epoch + 1
                self._save()
                self._log_epoch(row)
                if self.callback is not None and self._agree(bool(self.callback(dict(row)))):
                    status = "stopped"
                    break
        except Diverged as err:
            status, error = "diverged", str(err)
        except BaseException as err:
            self._write_record("interrupted", f"{type(err).__name__}: {err}".rstrip(": "), started)
            self._shutdown()
            raise
        record = self._write_record(status, error, started)
        self._log_end(record)
        self._shutdown()
        return record

    def _agree(self, stop: bool) -> bool:
        """Rank 0's decision (a callback that prunes) on every rank."""
        if self.world == 1:
            return stop
        flag = torch.tensor([float(stop)], device=self.device)
        dist.broadcast(flag, 0)
        return bool(flag.item())

    def _shutdown(self) -> None:
        if self._owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self._owns_group = False

    def _save(self) -> None:
        if self.rank != 0:
            return
        state = {
            "format": CHECKPOINT_FORMAT,
            "config": asdict(self.config),
            "layout": str(self.layout),
            "dataset": self.data.name,
            "classes": list(self.data.classes),
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "history": self.history,
            "rng": _rng_states(),
        }
        buffer = _io.BytesIO()
        torch.save(state, buffer)
        atomic_write(self.out / CHECKPOINT, buffer.getvalue())
        export_records(self.history, self.out / HISTORY)

    def record(self, status: str = "completed", error: str | None = None) -> dict:
        """The run as one flat record: what was trained on what, every hyperparameter, the
        final and best metrics, and the environment."""
        c, data, h = self.config, self.data, self.history
        cost = count(self.layout, num_classes=data.num_classes)
        last = h[-1] if h else {}
        best = max(h, key=lambda r: r["val_top1"]) if h else {}
        rec = {
            "layout": str(self.layout),
            "dataset": data.name,
            "dataset_note": data.note,
            "num_classes": data.num_classes,
            "train_images": len(data.train),
            "val_images": len(data.val),
            "skipped_images": data.skipped,
            "image_size": self.layout.image_size,
            "patch_size": self.layout.patch_size,
            "params": cost.params,
            "macs": cost.macs,
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
            "train_img_per_s": sum(r["train_img_per_s"] for r in h) / len(h) if h else None,
            "train_s": sum(r["epoch_s"] + r["eval_s"] for r in h),
            "status": status,
            "error": error,
            **environment(self.device, self.dtype),
        }
        if self.init_report is not None:
            r = self.init_report
            rec.update(init_loaded=len(r.loaded), init_resized=",".join(r.resized), init_new=",".join(r.new),
                       init_skipped=",".join(r.skipped))
        return rec

    def _write_record(self, status: str, error: str | None, started: float) -> dict:
        rec = self.record(status, error)
        rec["wall_s"] = time.time() - started
        if self.rank == 0:
            export_records([rec], self.out / RECORD)
        return rec

    # -- output
    def _log_start(self) -> None:
        if not self.console:
            return
        d, c = self.data, self.config
        world = f", {self.world} processes" if self.world > 1 else ""
        what = "resuming" if self.epoch else ("fine-tuning" if c.finetune_from else "training")
        self.console.print(f"{what} [bold]{self.layout}[/bold] on [bold]{d.name}[/bold]: {d.num_classes} classes, "
                           f"{len(d.train)} train / {len(d.val)} val images at {d.image_size} px; "
                           f"{c.epochs} epoch{'s' * (c.epochs != 1)} of {self.steps_per_epoch} steps, batch {c.batch_size}, "
                           f"{self.dtype} on {self.device}{world}")
        if d.kind == "builtin":
            self.console.print(f"[dim]{d.note}[/dim]")
        if self.init_report is not None:
            r = self.init_report
            self.console.print(f"weights from {c.finetune_from}: {len(r.loaded)} tensors loaded"
                               + (f", resized {', '.join(r.resized)}" if r.resized else "")
                               + (f", new {', '.join(r.new)}" if r.new else "")
                               + (f", re-initialised {', '.join(r.skipped)}" if r.skipped else ""))
        if self.epoch:
            self.console.print(f"continuing after epoch {self.epoch} from {self.out / CHECKPOINT}")

    def _log_epoch(self, row: dict) -> None:
        if not self.console:
            return
        top5 = f"  top-5 {100 * row['val_top5']:5.1f} %" if row["val_top5"] is not None else ""
        self.console.print(f"epoch {row['epoch']:>3}/{self.config.epochs}  train loss {row['train_loss']:.4f}  "
                           f"val loss {row['val_loss']:.4f}  top-1 {100 * row['val_top1']:5.1f} %{top5}  "
                           f"lr {row['lr']:.2e}  {row['train_img_per_s']:7.0f} img/s  {row['epoch_s'] + row['eval_s']:6.1f} s")

    def _log_end(self, record: dict) -> None:
        if not self.console:
            return
        if record["status"] != "diverged" and record["val_top1"] is not None:
            self.console.print(f"val top-1 [bold]{100 * record['val_top1']:.1f} %[/bold] (best {100 * record['best_val_top1']:.1f} % "
                               f"at epoch {record['best_epoch']}); {record['train_img_per_s']:.0f} img/s; "
                               f"record, history and checkpoint in {self.out}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _ProgressBar:
    """A rich progress bar for epochs and cache building (rank 0, on a terminal)."""

    @classmethod
    def maybe(cls, console) -> "_ProgressBar | None":
        return cls(console) if console is not None and console.is_terminal else None

    def __init__(self, console):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                                 console=console, transient=True)
        self.task = None
        self.steps = 0

    def start(self, description: str, total: int) -> None:
        self.progress.start()
        self.task = self.progress.add_task(description, total=total, info="")

    def advance(self, loss: torch.Tensor) -> None:
        self.steps += 1
        info = f"loss {loss.item():.4f}" if self.steps % 10 == 1 else None
        self.progress.update(self.task, advance=1, **({"info": info} if info else {}))

    def update(self, description: str, done: int, total: int) -> None:
        if self.task is None:
            self.start(description, total)
        self.progress.update(self.task, description=description, completed=done, total=total)

    def close(self) -> None:
        self.progress.stop()


# ----------------------------------------------------------------------------- fine-tuning


def checkpoint_layout(checkpoint: str | os.PathLike) -> str | None:
    """The layout a funnelbench checkpoint was trained with (None for a plain state dict)."""
    state = read_checkpoint(checkpoint)
    return state.get("layout") if isinstance(state, dict) and isinstance(state.get("layout"), str) else None


# ----------------------------------------------------------------------------- entry points


def train(layout=None, *, out: str | os.PathLike, config: TrainConfig | None = None, resume: bool = False,
          overwrite: bool = False, callback: Callable[[dict], bool | None] | None = None, console=None,
          cache_dir: str | os.PathLike | None = None, **options) -> dict:
    """Train ``layout`` (a layout string, preset name or Layout) with ``options`` (the
    :class:`TrainConfig` fields), or a ready ``config``; returns the final record."""
    if config is None:
        if layout is None:
            raise UsageError("give a layout or a config")
        known = {f.name for f in fields(TrainConfig)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise UsageError(f"unknown training option(s) {', '.join(unknown)}; known: {', '.join(sorted(known - {'layout'}))}")
        config = TrainConfig(layout=str(layout), **options)
    trainer = Trainer(config, out=out, resume=resume, overwrite=overwrite, callback=callback, console=console,
                      cache_dir=cache_dir)
    return trainer.fit()


def finetune(checkpoint: str | os.PathLike, layout=None, *, out: str | os.PathLike, **options) -> dict:
    """Fine-tune from ``checkpoint`` (a run's ``checkpoint.pt`` or a ViT state dict) into
    ``layout`` (default: the checkpoint's own), typically at a new ``image_size``; the rest as
    :func:`train`.

    The weights load with :func:`~funnelbench.weights.load_vit_weights`: same-width ViT and
    Funnel-ViT layouts in either direction, the position embedding interpolated in 2D (bicubic)
    to the new patch grid, the class token's embedding kept, a head for another number of
    classes re-initialised; missing or unexpected keys are an error. The record's ``init_*``
    fields say what was loaded, resized, new and re-initialised."""
    if layout is None:
        layout = checkpoint_layout(checkpoint)
        if layout is None:
            raise UsageError(f"{checkpoint} does not say which layout it holds; pass --layout")
    return train(layout, out=out, finetune_from=str(checkpoint), **options)


__all__ = ["TrainConfig", "Trainer", "Diverged", "train", "finetune", "proxy_layout",
           "read_checkpoint", "checkpoint_layout", "lr_factor", "EPOCH_METRICS"]
