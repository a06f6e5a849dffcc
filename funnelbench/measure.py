"""Measurement hygiene in one place: timing and peak memory of a model's training step and
inference, on CPU and CUDA.

Timing (:func:`time_steps`)
    warm-up steps first (lazy allocations, oneDNN/cuDNN kernel choice, optimizer state), then
    ``repeats`` timed repeats of ``steps`` steps each; the device is synchronised before the
    clock starts and before it stops. The result keeps every repeat, so a record can give the
    median and the spread (min, max).

Peak memory (:func:`peak_memory`)
    One step, after the warm-up (so AdamW's state exists, as in every step of a real run).
    On CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, read per
    phase (forward, backward, optimizer). On CPU: :class:`MemoryTracker`, a
    ``TorchDispatchMode`` that counts the bytes of every live tensor storage (each storage
    once, however many views share it) from creation until it is freed. Both figures mean
    the same thing: the weights, gradients, optimizer state, the input batch and everything
    the step allocates (activations saved for backward and temporaries), at the worst
    moment of the step. Neither counts the CUDA context, the caching allocator's unused
    reserve (reported separately as ``cuda_reserved``), nor (on CPU) scratch memory that a
    kernel allocates internally without making a tensor of it. CUDA rounds each block up to
    512 bytes; the CPU figure is exact bytes.

The training step is timm's benchmark step: ``zero_grad(set_to_none=True)``, forward under
autocast (unless fp32), cross-entropy on random labels, backward, optimizer step. Inference is
``eval()`` + ``torch.inference_mode()``. An out-of-memory error is recognised by
:func:`is_oom` so the caller can retry with :func:`smaller_batch`.
"""

from __future__ import annotations

import contextlib
import gc
import statistics
import time
import weakref
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

from .env import DTYPES
from .errors import UsageError

# ----------------------------------------------------------------------------- timing


def synchronize(device: torch.device) -> None:
    """Wait for queued device work (a no-op on CPU, whose ops run synchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Timing:
    """Seconds per step of each timed repeat (each repeat ran ``steps`` steps)."""

    per_step_s: tuple[float, ...]
    steps: int
    warmup: int  # untimed calls that ran before (including the settling ones)

    @property
    def median_s(self) -> float:
        return statistics.median(self.per_step_s)

    @property
    def min_s(self) -> float:
        return min(self.per_step_s)

    @property
    def max_s(self) -> float:
        return max(self.per_step_s)


def time_steps(
    step: Callable[[], object],
    device: torch.device,
    *,
    warmup: int = 2,
    repeats: int = 5,
    steps: int | None = None,
    min_repeat_s: float = 0.2,
    settle: int = 8,
) -> Timing:
    """Time ``step()``: ``warmup`` untimed calls, then ``repeats`` timed repeats.

    After the ``warmup`` calls, up to ``settle`` more untimed calls run until the step is
    steady: the last call within 10 % of the one before and of the fastest so far (the first
    model of a process warms the allocator and the kernel caches for several steps). ``steps``
    calls per repeat; ``None`` picks enough for a repeat to last ``min_repeat_s`` (from the
    fastest warm-up call), so that short steps are averaged over a few calls and are not timed
    at the clock's resolution.
    """
    if repeats < 1:
        raise UsageError(f"repeats must be at least 1, got {repeats}")

    def once() -> float:
        synchronize(device)
        t0 = time.perf_counter()
        step()
        synchronize(device)
        return time.perf_counter() - t0

    warm = [once() for _ in range(max(0, warmup))]

    def steady() -> bool:
        return len(warm) >= 2 and warm[-1] <= 1.1 * min(warm) and abs(warm[-1] - warm[-2]) <= 0.1 * warm[-2]

    while warm and len(warm) < warmup + settle and not steady():
        warm.append(once())
    if steps is None:
        steps = 1 if not warm else max(1, min(1000, int(min_repeat_s / max(min(warm), 1e-9))))
    per_step = []
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize(device)
        per_step.append((time.perf_counter() - t0) / steps)
    return Timing(tuple(per_step), steps, len(warm))


def time_interleaved(
    steps: dict[str, Callable[[], object]],
    device: torch.device,
    *,
    warmup: int = 2,
    repeats: int = 5,
    min_repeat_s: float = 0.2,
    settle: int = 8,
) -> dict[str, Timing]:
    """Time several steps side by side: each is warmed up, then the timed repeats alternate
    (A B C, C B A, A B C, ...), so that a machine that slows down mid-run slows all of them
    alike, no step always runs first, and their ratios stay fair. One :class:`Timing` per name."""
    counts, warmups = {}, {}
    for name, step in steps.items():
        warm = time_steps(step, device, warmup=warmup, repeats=1, steps=1, settle=settle)
        counts[name] = max(1, min(1000, int(min_repeat_s / max(warm.median_s, 1e-9))))
        warmups[name] = warm.warmup
    per_step: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:  # A B, B A, A B, ...: no side always goes first
            step = steps[name]
            per_step[name].append(time_steps(step, device, warmup=0, repeats=1, steps=counts[name]).median_s)
    return {name: Timing(tuple(v), counts[name], warmups[name]) for name, v in per_step.items()}


# ----------------------------------------------------------------------------- the steps


def autocast(device: torch.device, dtype: str):
    """Autocast to bf16/fp16 (weights stay fp32, as in mixed-precision training); fp32: nothing."""
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[dtype])


def make_optimizer(model: torch.nn.Module, name: str = "adamw") -> torch.optim.Optimizer:
    """AdamW (the seed paper's pre-training optimizer) or SGD with momentum 0.9 (its fine-tuning
    one), with torch's default implementation for the device (foreach on CUDA, a loop on CPU)."""
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    raise UsageError(f"unknown optimizer {name!r}; use adamw or sgd")


class TrainStep:
    """One training step of ``model`` on a fixed random batch, split in phases so that a
    memory tracker can tell where the peak is (``phase`` is called with each phase's name)."""

    def __init__(
        self,
        model: torch.nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        device: torch.device,
        dtype: str,
    ):
        self.model, self.x, self.y, self.optimizer = model, x, y, optimizer
        self.device, self.dtype = device, dtype

    def __call__(self, phase: Callable[[str], None] = lambda name: None) -> None:
        phase("forward")
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device, self.dtype):
            loss = F.cross_entropy(self.model(self.x), self.y)
        phase("backward")
        loss.backward()
        del loss
        phase("optimizer")
        self.optimizer.step()


class InferStep:
    """One forward pass in ``eval()`` mode under ``torch.inference_mode()``."""

    def __init__(self, model: torch.nn.Module, x: torch.Tensor, device: torch.device, dtype: str):
        self.model, self.x, self.device, self.dtype = model, x, device, dtype

    def __call__(self, phase: Callable[[str], None] = lambda name: None) -> None:
        phase("forward")
        with torch.inference_mode(), autocast(self.device, self.dtype):
            self.model(self.x)


# ----------------------------------------------------------------------------- CPU memory tracker

CATEGORIES = ("weights", "grads", "optimizer_state", "inputs", "activations")


class MemoryTracker(TorchDispatchMode):
    """Live tensor bytes through a piece of code, with the peak and what made it up.

    Every tensor an operator returns is tracked by its storage (views share one), from the
    moment it is created until its storage is freed (a weak reference's callback). Tensors
    that exist before (weights, optimizer state, the input) are registered with
    :meth:`register` and a category; everything created inside counts as ``activations``
    (saved for backward or temporary), except gradients, which :meth:`watch_grads` moves to
    ``grads`` as autograd accumulates them. The operators seen are counted in ``ops``.
    """

    def __init__(self):
        super().__init__()
        self._serial: WeakIdKeyDictionary = WeakIdKeyDictionary()  # storage -> serial number
        self._entries: dict[int, list] = {}  # serial -> [bytes, category]
        self._refs: dict[int, weakref.ref] = {}
        self._next = 0
        self._hooks: list = []
        self.current = dict.fromkeys(CATEGORIES, 0)
        self.current_bytes = 0
        self.peak_bytes = 0
        self.peak_by_category = dict(self.current)
        self.peak_phase: str | None = None
        self.phase: str | None = None
        self.phase_peaks: dict[str, int] = {}  # phase -> highest total while it was current
        self.ops: Counter = Counter()

    # -- bookkeeping
    def _add(self, storage, category: str) -> None:
        serial = self._serial.get(storage)
        if serial is not None:  # already tracked: its size may have changed (resize_, out=)
            entry = self._entries[serial]
            delta = storage.nbytes() - entry[0]
            if delta:
                entry[0] += delta
                self._change(entry[1], delta)
            return
        self._next += 1
        serial = self._next
        self._serial[storage] = serial
        nbytes = storage.nbytes()
        self._entries[serial] = [nbytes, category]
        self._refs[serial] = weakref.ref(storage, lambda _, s=serial: self._free(s))
        self._change(category, nbytes)

    def _free(self, serial: int) -> None:
        entry = self._entries.pop(serial, None)
        self._refs.pop(serial, None)
        if entry is not None:
            self._change(entry[1], -entry[0])

    def _change(self, category: str, delta: int) -> None:
        self.current[category] += delta
        self.current_bytes += delta
        if self.current_bytes > self.peak_bytes:
            self.peak_bytes = self.current_bytes
            self.peak_by_category = dict(self.current)
            self.peak_phase = self.phase
        if self.phase is not None and self.current_bytes > self.phase_peaks[self.phase]:
            self.phase_peaks[self.phase] = self.current_bytes

    def _recategorize(self, tensor: torch.Tensor, category: str) -> None:
        serial = self._serial.get(tensor.untyped_storage())
        if serial is None:
            self._add(tensor.untyped_storage(), category)
            return
        entry = self._entries[serial]
        if entry[1] != category:
            self._change(entry[1], -entry[0])
            entry[1] = category
            self._change(category, entry[0])

    # -- API
    def register(self, tensors, category: str) -> None:
        """Track tensors that already exist (weights, optimizer state, inputs)."""
        if category not in CATEGORIES:
            raise ValueError(f"unknown category {category!r}")
        for t in tree_leaves(tensors):
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                self._recategorize(t, category)

    def watch_grads(self, params) -> None:
        """Count each parameter's gradient as ``grads`` once autograd has accumulated it."""
        for p in params:
            if p.requires_grad:
                if p.grad is not None:
                    self.register(p.grad, "grads")
                self._hooks.append(
                    p.register_post_accumulate_grad_hook(lambda param: self._recategorize(param.grad, "grads"))
                )

    def set_phase(self, name: str) -> None:
        """Name the part of the step that runs from now on (``forward``, ``backward``, ...)."""
        self.phase = name
        self.phase_peaks[name] = max(self.phase_peaks.get(name, 0), self.current_bytes)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops[func.__name__] += 1
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                self._add(t.untyped_storage(), "activations")
        return out

    def __exit__(self, *exc):
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        result = super().__exit__(*exc)
        self._refs.clear()  # storages freed later no longer call back into this tracker
        return result


class OpRecorder(TorchDispatchMode):
    """Counts the aten operators that run (to see which attention kernel was chosen)."""

    def __init__(self):
        super().__init__()
        self.ops: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func.__name__] += 1
        return func(*args, **(kwargs or {}))


# aten operator -> the name we record. Fused kernels save (q, k, v, output, logsumexp) for
# backward; the math path saves the (B, heads, N, M) attention matrix as well.
ATTENTION_KERNELS = {
    "_scaled_dot_product_flash_attention_for_cpu": "cpu_flash",
    "_scaled_dot_product_flash_attention": "flash",
    "_scaled_dot_product_efficient_attention": "efficient",
    "_scaled_dot_product_cudnn_attention": "cudnn",
    "_scaled_dot_product_fused_attention_overrideable": "fused_overrideable",
}


def attention_kernel(ops: Counter) -> str:
    """The SDPA kernel(s) that ran, from the operators counted; ``math`` when attention was
    computed from plain matmuls and softmax, ``none`` without attention."""
    found = sorted(
        {name for op, name in ATTENTION_KERNELS.items() if any(k.startswith(op + ".") or k == op for k in ops)}
    )
    if found:
        return "+".join(found)
    if any(k.startswith(("_softmax", "_safe_softmax", "softmax")) for k in ops):
        return "math"
    return "none"


def is_fused_kernel(kernel: str) -> bool:
    """Whether a recorded kernel saves only output + logsumexp (not the attention matrix)."""
    return kernel not in ("math", "none") and "math" not in kernel


# ----------------------------------------------------------------------------- peak memory


@dataclass(frozen=True)
class PeakMemory:
    """The peak of one step: total bytes, the phase it happened in and, where known, what it
    was made of (``weights``, ``grads``, ``optimizer_state``, ``inputs``, ``activations``)."""

    bytes: int
    phase: str | None
    method: str
    by_category: dict = field(default_factory=dict)
    by_phase: dict = field(default_factory=dict)
    reserved_bytes: int | None = None  # CUDA: the caching allocator's peak reservation


CPU_METHOD = "live tensor bytes (dispatch tracker)"
CUDA_METHOD = "cuda max_memory_allocated"


def optimizer_state(optimizer: torch.optim.Optimizer | None) -> list[torch.Tensor]:
    if optimizer is None:
        return []
    return [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]


def peak_memory(
    step, device: torch.device, model: torch.nn.Module, inputs, optimizer: torch.optim.Optimizer | None = None
) -> tuple[PeakMemory, Counter]:
    """Run ``step(phase)`` once and return its peak memory and the operators it ran (CPU).

    ``inputs`` are the tensors the step reads (the batch); they, the model's weights and
    buffers and the optimizer's state are counted from the start, as they are on a GPU.
    """
    gc.collect()
    if device.type == "cuda":
        return _peak_memory_cuda(step, device), Counter()
    tracker = MemoryTracker()
    with tracker:
        tracker.register(list(model.parameters()) + list(model.buffers()), "weights")
        tracker.register(optimizer_state(optimizer), "optimizer_state")
        tracker.register(inputs, "inputs")
        tracker.watch_grads(model.parameters())
        step(tracker.set_phase)
    peak = PeakMemory(
        tracker.peak_bytes, tracker.peak_phase, CPU_METHOD, dict(tracker.peak_by_category), dict(tracker.phase_peaks)
    )
    return peak, tracker.ops


def _peak_memory_cuda(step, device: torch.device) -> PeakMemory:
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    by_phase: dict[str, int] = {}
    reserved = 0
    state = {"name": None}

    def phase(name):
        torch.cuda.synchronize(device)
        if state["name"] is not None:
            by_phase[state["name"]] = torch.cuda.max_memory_allocated(device)
        state["name"] = name
        torch.cuda.reset_peak_memory_stats(device)

    step(phase)
    torch.cuda.synchronize(device)
    by_phase[state["name"]] = torch.cuda.max_memory_allocated(device)
    reserved = torch.cuda.max_memory_reserved(device)
    name, peak = max(by_phase.items(), key=lambda kv: kv[1])
    return PeakMemory(peak, name, CUDA_METHOD, {}, by_phase, reserved)


# ----------------------------------------------------------------------------- out of memory


def is_oom(err: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the CPU allocator's "can't allocate memory"."""
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    text = str(err).lower()
    return isinstance(err, (RuntimeError, MemoryError)) and (
        "out of memory" in text
        or "can't allocate memory" in text
        or "cannot allocate memory" in text
        or isinstance(err, MemoryError)
    )


def smaller_batch(batch_size: int) -> int:
    """The next batch size to try after running out of memory, 0 after 1: timm's
    ``decay_batch_step`` (256 -> 192 -> 128 -> 96 -> 64 -> 48 -> ... -> 8 -> 6 -> 4 -> 3 -> 2 -> 1)."""
    if batch_size <= 1:
        return 0
    base = 1 << ((batch_size - 1).bit_length() - 1)  # largest power of two < batch_size
    step = max(base // 2, 1)
    return base + (batch_size - base - 1) // step * step


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
