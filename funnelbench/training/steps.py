"""The epoch steps: :func:`train_steps` (one training epoch: forward, backward, clipping,
optimizer and schedule steps, no host sync per step), :class:`NonFiniteWatch` (the first step
whose loss or gradient norm is NaN or infinite, kept on the device and read every few steps),
:func:`evaluate_split` (loss, top-1 and top-5 on a split), and how an epoch fails:
:class:`Diverged`, :class:`OutOfMemory` and :func:`oom_message`."""

from __future__ import annotations

import math
import time
from typing import Callable

import torch
import torch.nn.functional as F

from ..data import normalize
from ..env import resolve_dtype
from ..errors import FunnelbenchError
from .config import TrainConfig
from .recipe import lr_factor, schedule


class Diverged(FunnelbenchError):
    """The loss (or the gradient norm) became NaN or infinite."""


class OutOfMemory(FunnelbenchError):
    """Out of memory while building the model, its loaders or its optimizer. The run's record
    (status ``oom``) is written and carried in ``record``."""

    def __init__(self, record: dict):
        super().__init__(record["error"])
        self.record = record


def one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


def oom_message(err: BaseException, where: str) -> str:
    return f"out of memory {where} ({one_line(err)}); use a smaller --batch-size (or a smaller --image-size or model)"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class NonFiniteWatch:
    """The non-finite watch of an epoch: on the device, the first step whose loss (or gradient
    norm) is not finite, and those two values. With fp16 an infinite gradient is the scaler's
    business (it skips the step) and only the loss counts; otherwise a non-finite loss on any
    rank makes the all-reduced gradient non-finite on every rank, and the gradient norm catches
    it everywhere. Only :meth:`read` waits for the device."""

    def __init__(self, device: torch.device, fp16: bool):
        self.fp16 = fp16
        self.first_bad = torch.full((), -1, dtype=torch.int64, device=device)  # first step with a non-finite value
        self.bad_values = torch.zeros(2, device=device)  # its loss and gradient norm

    def see(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        finite = torch.isfinite(loss) if self.fp16 else torch.isfinite(loss) & torch.isfinite(grad_norm)
        new = (self.first_bad < 0) & ~finite
        self.first_bad = torch.where(new, step, self.first_bad)
        self.bad_values = torch.where(new, torch.stack([loss, grad_norm.float()]), self.bad_values)

    def read(self, ranks) -> tuple[int, float, float] | None:
        """(step, loss, gradient norm) of the first bad step, agreed over the ranks (the
        earliest), so that all of them stop together; None when every step was finite."""
        never = torch.iinfo(torch.int64).max
        step = int(ranks.all_min(torch.where(self.first_bad < 0, never, self.first_bad).reshape(1)).item())
        if step == never:
            return None
        loss, norm = self.bad_values.tolist()
        return step, loss, norm


def diverged(bad: tuple[int, float, float], *, epoch: int, config: TrainConfig, steps_per_epoch: int) -> Diverged:
    """The error that names the first bad step of ``epoch`` (from :meth:`NonFiniteWatch.read`)."""
    step, loss, norm = bad
    what = f"loss became {loss}" if not math.isfinite(loss) else f"gradient norm became {norm}"
    lr = config.lr * lr_factor(epoch * steps_per_epoch + step, **schedule(config, steps_per_epoch))
    return Diverged(
        f"the {what} at epoch {epoch + 1}, step {step + 1} (lr {lr:.3g}); "
        "the run stopped: lower --lr, lengthen --warmup-epochs or keep --clip-grad on"
    )


def train_steps(
    *,
    model: torch.nn.Module,
    ddp: torch.nn.Module,
    loader,
    optimizer,
    scheduler,
    scaler,
    criterion,
    mix: Callable | None,
    norm_stats,
    dtype: str,
    clip_grad: float,
    ranks,
    steps: int,
    check_every: int,
    check: Callable[[NonFiniteWatch], None],
    progress=None,
) -> dict:
    """Train the ``steps`` batches of ``loader`` (``ddp`` is what the steps call, ``model`` its
    parameters' owner; ``mix(x, y, step)`` mixes a batch); ``check(watch)`` reads the
    :class:`NonFiniteWatch` every ``check_every`` steps and at the end (it raises to stop).
    No step waits for the device: the clipping is tensor-only. Returns the epoch's train
    metrics, summed over ranks."""
    device = ranks.device
    autocast = torch.autocast(device.type, dtype=resolve_dtype(dtype), enabled=dtype != "fp32")
    loss_sum = torch.zeros((), device=device)
    watch = NonFiniteWatch(device, fp16=scaler.is_enabled())
    params = [p for p in model.parameters() if p.requires_grad]
    # On CPU reading the norm costs nothing: clip (a pass over the gradients) only when needed.
    # Elsewhere always multiply by min(1, clip / norm) on the device (no host sync).
    clip_on_host = device.type == "cpu"
    images = 0
    sync(device)
    start = time.perf_counter()
    for step, (x, y) in enumerate(loader):
        x = normalize(x.to(device, non_blocking=True), *norm_stats)
        y = y.to(device, non_blocking=True)
        if mix is not None:
            x, y = mix(x, y, step)
        with autocast:
            loss = criterion(ddp(x), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        grads = [p.grad for p in params if p.grad is not None]
        grad_norm = torch.nn.utils.get_total_norm(grads, foreach=not clip_on_host or None)
        if clip_grad > 0 and (not clip_on_host or clip_grad < grad_norm):
            torch.nn.utils.clip_grads_with_norm_(params, clip_grad, grad_norm, foreach=not clip_on_host or None)
        value = loss.detach().float()
        watch.see(step, value, grad_norm)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        loss_sum += value
        images += x.shape[0]
        if progress:
            progress.advance(loss)
        if (step + 1) % check_every == 0 or step + 1 == steps:
            check(watch)
    sync(device)
    seconds = time.perf_counter() - start
    totals = ranks.all_sum(torch.stack([loss_sum, torch.tensor(float(images), device=device)]))
    return {
        "train_loss": float(totals[0]) / (steps * ranks.world),
        "lr": optimizer.param_groups[0]["lr"],
        "train_img_per_s": float(totals[1]) / seconds,
        "epoch_s": seconds,
    }


@torch.inference_mode()
def evaluate_split(
    model: torch.nn.Module, loader, *, split: str, num_classes: int, norm_stats, dtype: str, ranks
) -> dict:
    """Loss (no label smoothing), top-1 and top-5 accuracy (top-5 only with more than 5
    classes) of ``model`` on ``loader``, summed over ranks: ``{split}_loss``, ``{split}_top1``,
    ``{split}_top5``, ``eval_s``."""
    device = ranks.device
    model.eval()
    autocast = torch.autocast(device.type, dtype=resolve_dtype(dtype), enabled=dtype != "fp32")
    k = min(5, num_classes)
    sums = torch.zeros(4, device=device, dtype=torch.float64)  # loss, top-1, top-k, n
    sync(device)
    start = time.perf_counter()
    for x, y in loader:
        x = normalize(x.to(device, non_blocking=True), *norm_stats)
        y = y.to(device, non_blocking=True)
        with autocast:
            logits = model(x)
        logits = logits.float()
        top = logits.topk(k, dim=1).indices
        hit = top == y[:, None]
        sums += torch.stack(
            [
                F.cross_entropy(logits, y, reduction="sum").double(),
                hit[:, 0].sum().double(),
                hit.any(1).sum().double(),
                torch.tensor(float(len(y)), device=device, dtype=torch.float64),
            ]
        )
    sync(device)
    seconds = time.perf_counter() - start
    loss, top1, topk, n = ranks.all_sum(sums).tolist()
    return {
        f"{split}_loss": loss / n,
        f"{split}_top1": top1 / n,
        f"{split}_top5": topk / n if num_classes > 5 else None,
        "eval_s": seconds,
    }


__all__ = ["train_steps", "evaluate_split", "NonFiniteWatch", "Diverged", "OutOfMemory", "oom_message", "diverged"]
