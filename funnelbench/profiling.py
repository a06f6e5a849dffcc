"""``profile``: measure layouts on this machine, one flat record per layout.

    import funnelbench as fb
    records = fb.profile(["B12(197), h192", "B6(197)-6(99), h192"], baseline="deit-ti", batch_size=8)

Every record has the analytic counts (``params``, ``macs``, ``flops`` = 2 x MACs), the
measured throughput (median of ``repeats`` timed repeats after ``warmup`` steps, with the
fastest and slowest repeat), the measured peak memory of a training step and of inference
(what it includes: :mod:`funnelbench.measure`), the analytic estimate next to it
(:mod:`funnelbench.memory`), the attention kernel that ran, and the environment. With a
baseline, every record also has its ratios to the baseline measured in the same run:
``train_speedup_x``, ``infer_speedup_x`` (images/s over the baseline's), ``mem_saved_pct``,
``infer_mem_saved_pct``, ``macs_saved_pct`` and ``macs_ratio_x`` (the speed-up the MACs alone
predict); memory is compared only between records measured at the same batch
(``ratio_note`` says when an out-of-memory retry left them at different ones).

A measurement that fails becomes an ``error`` field, not an exception; out of memory is
retried with a smaller batch (``batch_size`` is the batch used, ``requested_batch_size`` the
one asked for). With ``resume=FILE`` each finished record is appended to a JSON-lines file
at once, and records already there (same layout and settings) are not measured again, so an
interrupted run loses nothing it finished.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch

from .cost import count
from .env import environment, resolve_device, resolve_dtype
from .errors import UsageError
from .exports import atomic_write
from .layout import Layout, check_int, validate_layout
from .measure import (
    InferStep,
    OpRecorder,
    TrainStep,
    attention_kernel,
    autocast,
    free_memory,
    is_fused_kernel,
    is_oom,
    make_optimizer,
    peak_memory,
    smaller_batch,
    time_steps,
)
from .memory import UnmodelledLayout, estimate_memory
from .presets import resolve
from .rng import keeps_global_state

OPTIMIZERS = ("adamw", "sgd")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


@dataclass(frozen=True)
class Settings:
    """How every layout of one run is measured (part of each record, and the resume key)."""

    device: str = "auto"
    dtype: str = "fp32"
    batch_size: int = 8
    warmup: int = 2
    repeats: int = 5
    train: bool = True
    infer: bool = True
    memory: bool = True
    counters: bool = False
    compile: str | None = None
    optimizer: str = "adamw"
    num_classes: int = 1000
    oom_retry: bool = True

    def validate(self) -> torch.device:
        check_int(self.batch_size, "batch size")
        check_int(self.repeats, "repeats")
        check_int(self.warmup, "warm-up steps", minimum=0)
        check_int(self.num_classes, "num_classes")
        if self.optimizer not in OPTIMIZERS:
            raise UsageError(f"unknown optimizer {self.optimizer!r}; use {' or '.join(OPTIMIZERS)}")
        if self.compile is not None and self.compile not in COMPILE_MODES:
            raise UsageError(f"unknown compile mode {self.compile!r}; use {', '.join(COMPILE_MODES)}")
        if not (self.train or self.infer or self.counters):
            raise UsageError("nothing to measure: enable training, inference or the counters")
        resolve_dtype(self.dtype)
        return resolve_device(self.device)

    @property
    def metrics(self) -> str:
        return ",".join(name for name in ("train", "infer", "memory", "counters") if getattr(self, name))


# Column order of a record (every record has every column, None where not measured).
COLUMNS = [
    "name",
    "layout",
    "params",
    "macs",
    "flops",
    "batch_size",
    "requested_batch_size",
    "image_size",
    "num_classes",
    "train_img_per_s",
    "train_steps_per_s",
    "train_step_ms",
    "train_step_ms_min",
    "train_step_ms_max",
    "infer_img_per_s",
    "infer_step_ms",
    "infer_step_ms_min",
    "infer_step_ms_max",
    "train_peak_mem_bytes",
    "train_peak_phase",
    "train_mem_est_bytes",
    "train_mem_est_phase",
    "infer_peak_mem_bytes",
    "infer_mem_est_bytes",
    "est_weights_bytes",
    "est_optimizer_bytes",
    "est_activations_bytes",
    "mem_est_note",
    "mem_method",
    "cuda_reserved_peak_bytes",
    "fvcore_macs",
    "fvcore_skipped",
    "torch_macs",
    "torch_skipped",
    "baseline",
    "train_speedup_x",
    "infer_speedup_x",
    "mem_saved_pct",
    "infer_mem_saved_pct",
    "mem_est_saved_pct",
    "macs_saved_pct",
    "macs_ratio_x",
    "ratio_note",
    "attention_kernel",
    "compile",
    "optimizer",
    "warmup",
    "repeats",
    "train_steps_per_repeat",
    "infer_steps_per_repeat",
    "metrics",
    "device",
    "dtype",
    "torch_version",
    "cuda_version",
    "tf32",
    "threads",
    "load_1m",
    "error",
]
# Devices whose process warm-up has run (see _warm_up_process).
_WARMED: set[str] = set()

# The columns that identify a measurement (a resumed run skips records that match them).
RESUME_KEY = (
    "layout",
    "requested_batch_size",
    "device",
    "dtype",
    "compile",
    "optimizer",
    "warmup",
    "repeats",
    "metrics",
    "num_classes",
)


@keeps_global_state  # _measure seeds the global generators: the caller's come back
def profile(
    layouts: Iterable | str | Layout,
    *,
    baseline=None,
    device: str = "auto",
    dtype: str = "fp32",
    batch_size: int = 8,
    image_size: int | None = None,
    warmup: int = 2,
    repeats: int = 5,
    train: bool = True,
    infer: bool = True,
    memory: bool = True,
    counters: bool = False,
    compile: str | None = None,
    optimizer: str = "adamw",
    num_classes: int = 1000,
    oom_retry: bool = True,
    resume: str | os.PathLike | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    on_record: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Measure each layout (a preset name, layout string or :class:`Layout`); see the module
    docstring. ``baseline`` is measured first, in the same run, and is the first record unless
    it is one of ``layouts``. ``image_size`` rebuilds every layout at that resolution.
    ``progress(done, total, label)`` is called before each layout and at the end;
    ``on_record(record)`` as each record is finished. Bad input raises :class:`UsageError`
    or :class:`LayoutError` before anything is measured.
    """
    settings = Settings(
        device,
        dtype,
        batch_size,
        warmup,
        repeats,
        train,
        infer,
        memory,
        counters,
        compile,
        optimizer,
        num_classes,
        oom_retry,
    )
    dev = settings.validate()
    if isinstance(layouts, (str, Layout)):
        layouts = [layouts]
    jobs = [(_name(x), _at_size(validate_layout(resolve(x)), image_size)) for x in layouts]
    if not jobs:
        raise UsageError("no layouts to profile; give at least one layout or preset name")
    base_key = None
    if baseline is not None:
        base_layout = _at_size(validate_layout(resolve(baseline)), image_size)
        base_key = str(base_layout)
        if all(str(layout) != base_key for _, layout in jobs):
            jobs.insert(0, (_name(baseline), base_layout))
    env = environment(dev, dtype)
    env["threads"] = torch.get_num_threads() if dev.type == "cpu" else None

    done = _load_resume(resume) if resume else {}  # also creates the file: an unwritable path fails now
    records = []
    for i, (name, layout) in enumerate(jobs):
        if progress:
            progress(i, len(jobs), name)
        key = _key(
            {
                **env,
                "layout": str(layout),
                "requested_batch_size": batch_size,
                "compile": compile or "none",
                "optimizer": optimizer,
                "warmup": warmup,
                "repeats": repeats,
                "metrics": settings.metrics,
                "num_classes": num_classes,
            }
        )
        record = done.get(key)
        if record is not None:  # named as this run names it (presets may share a layout: vit-b16, deit-b)
            record = {**record, "name": name}
        else:
            if str(dev) not in _WARMED:  # once per process, not per call (a search profiles per trial)
                _warm_up_process(layout, settings, dev)
                _WARMED.add(str(dev))
            record = measure_layout(layout, settings, dev, env, name=name)
            if resume:
                _append_jsonl(resume, record)
        records.append(record)
        if on_record:
            on_record(record)
    if progress:
        progress(len(jobs), len(jobs), "done")
    if base_key is not None:
        add_baseline_ratios(records, base_key)
    return records


def _load() -> float | None:
    """The 1-minute load average when the measurement starts (a busy machine gives noisy timings)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _name(x) -> str:
    return x.strip() if isinstance(x, str) else str(x)


def _at_size(layout: Layout, image_size: int | None) -> Layout:
    if image_size is None or image_size == layout.image_size:
        return layout
    check_int(image_size, "image size")
    return layout.at_image_size(image_size)


# ----------------------------------------------------------------------------- one layout


def measure_layout(
    layout: Layout, settings: Settings, device: torch.device, env: dict, name: str | None = None
) -> dict:
    """One record: counts, estimate and measurements of ``layout`` (errors recorded, not raised)."""
    cost = count(layout, num_classes=settings.num_classes)
    record = dict.fromkeys(COLUMNS)
    record.update(
        name=name or str(layout),
        layout=str(layout),
        params=cost.params,
        macs=cost.macs,
        flops=cost.flops,
        requested_batch_size=settings.batch_size,
        image_size=layout.image_size,
        num_classes=settings.num_classes,
        compile=settings.compile or "none",
        optimizer=settings.optimizer,
        warmup=settings.warmup,
        repeats=settings.repeats,
        metrics=settings.metrics,
        **env,
    )
    record["load_1m"] = _load()
    batch = settings.batch_size
    while True:
        try:
            record.update(_measure(layout, settings, device, batch))
            record["batch_size"] = batch
            break
        except Exception as err:  # noqa: BLE001 - every failure becomes the record's error field
            free_memory(device)
            if is_oom(err) and settings.oom_retry and smaller_batch(batch) > 0:
                batch = smaller_batch(batch)
                continue
            record["batch_size"] = batch
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            record["error"] = ("out of memory: " if is_oom(err) else f"{type(err).__name__}: ") + first
            break
    if settings.counters:
        record.update(_counters(layout, settings.num_classes))
    record.update(_estimate(layout, settings, device, record))
    return record


def _measure(layout: Layout, settings: Settings, device: torch.device, batch: int) -> dict:
    from .models import build_model

    out: dict = {}
    torch.manual_seed(0)
    random.seed(0)
    model = build_model(layout, num_classes=settings.num_classes).to(device)
    run = torch.compile(model, mode=settings.compile) if settings.compile else model
    x = torch.randn(batch, 3, layout.image_size, layout.image_size, device=device)
    y = torch.randint(0, settings.num_classes, (batch,), device=device)
    # Memory on CPU is tracked through the dispatcher, which compiled code bypasses.
    track_memory = settings.memory and not (settings.compile and device.type == "cpu")
    if settings.memory and not track_memory:
        out["mem_method"] = "not measured: compiled code on CPU bypasses the tracker"
    # One untimed forward pass of the eager model under an operator recorder names the attention
    # kernel (under inference_mode the dispatcher would only show the generic SDPA operator).
    try:
        kernel = _kernel(model, x, device, settings.dtype)
        # Training first: inference measured first in a fresh process runs ~10 % slow on CPU
        # (the allocator has not yet seen a training step's large buffers).
        if settings.train:
            model.train()
            opt = make_optimizer(model, settings.optimizer)
            step = TrainStep(run, x, y, opt, device, settings.dtype)
            step()  # untimed: creates the optimizer state (and compiles, with torch.compile)
            timing = time_steps(step, device, warmup=settings.warmup, repeats=settings.repeats)
            out.update(_timing("train", timing, batch))
            if track_memory:
                peak, _ = peak_memory(step, device, model, (x, y), opt)
                out.update(
                    train_peak_mem_bytes=peak.bytes,
                    train_peak_phase=peak.phase,
                    mem_method=peak.method,
                    cuda_reserved_peak_bytes=peak.reserved_bytes,
                )
            # Inference's peak must not include training's leftovers (it is read from the allocator on CUDA).
            del opt, step
            model.zero_grad(set_to_none=True)
            free_memory(device)
        if settings.infer:
            model.eval()
            step = InferStep(run, x, device, settings.dtype)
            if settings.compile:
                step()  # untimed: compiles
            timing = time_steps(step, device, warmup=settings.warmup, repeats=settings.repeats)
            out.update(_timing("infer", timing, batch))
            if track_memory:
                peak, _ = peak_memory(step, device, model, (x,))
                out.update(infer_peak_mem_bytes=peak.bytes, mem_method=peak.method)
    finally:
        del model, run, x, y
        free_memory(device)
    out["attention_kernel"] = kernel
    return out


def _warm_up_process(layout: Layout, settings: Settings, device: torch.device) -> None:
    """The first model a process runs is slower for a while (allocator, kernel caches, thread
    pools), which would handicap the first row, usually the baseline. Run the first layout's
    steps once, untimed, before measuring anything."""
    quick = Settings(**{**settings.__dict__, "warmup": 2, "repeats": 1, "memory": False, "counters": False})
    try:
        _measure(layout, quick, device, settings.batch_size)
    except Exception:  # noqa: BLE001 - the real measurement reports any failure
        free_memory(device)


def _kernel(model: torch.nn.Module, x: torch.Tensor, device: torch.device, dtype: str) -> str:
    """Name the attention kernel a forward pass of ``model`` uses (one untimed pass)."""
    recorder = OpRecorder()
    with torch.no_grad(), autocast(device, dtype), recorder:
        model(x)
    return attention_kernel(recorder.ops)


def _timing(prefix: str, timing, batch: int) -> dict:
    cols = {
        f"{prefix}_img_per_s": batch / timing.median_s,
        f"{prefix}_step_ms": 1000 * timing.median_s,
        f"{prefix}_step_ms_min": 1000 * timing.min_s,
        f"{prefix}_step_ms_max": 1000 * timing.max_s,
        f"{prefix}_steps_per_repeat": timing.steps,
    }
    if prefix == "train":
        cols["train_steps_per_s"] = 1 / timing.median_s
    return cols


def _counters(layout: Layout, num_classes: int) -> dict:
    from .counters import format_skipped, fvcore_count, torch_flop_count
    from .models import build_model

    model = build_model(layout, num_classes=num_classes)
    out = {}
    try:
        ref = fvcore_count(model, layout.image_size)
        out.update(fvcore_macs=ref.macs, fvcore_skipped=format_skipped(ref.skipped))
    except Exception as err:  # noqa: BLE001
        out["fvcore_skipped"] = f"fvcore failed: {type(err).__name__}: {err}"
    ref = torch_flop_count(model, layout.image_size)
    out.update(torch_macs=ref.macs, torch_skipped=format_skipped(ref.skipped))
    return out


def _estimate(layout: Layout, settings: Settings, device: torch.device, record: dict) -> dict:
    kernel = record.get("attention_kernel")
    attention = "fused" if kernel is None or is_fused_kernel(kernel) else "math"
    try:
        est = estimate_memory(
            layout,
            record["batch_size"] or settings.batch_size,
            dtype=settings.dtype,
            device=device.type,
            attention=attention,
            optimizer=settings.optimizer,
            num_classes=settings.num_classes,
        )
    except UnmodelledLayout as err:
        return {"mem_est_note": str(err)}
    out = est.record()
    if settings.compile:
        out["mem_est_note"] = "estimate of the eager model; compiled code may save less"
    return out


# ----------------------------------------------------------------------------- baseline ratios


def add_baseline_ratios(records: list[dict], baseline: str) -> list[dict]:
    """Fill the ratio columns of every record against the record whose layout is ``baseline``
    (canonical string); None where either side was not measured.

    Speed-ups compare images/s (at the same batch that is the ratio of steps/s too), so they
    stay fair when an out-of-memory retry left a record and the baseline at different batches;
    the memory ratios would compare peaks of different batches, so they are left empty then,
    and ``ratio_note`` says why."""
    base = next((r for r in records if r["layout"] == baseline), None)
    if base is None:
        raise UsageError(f"baseline {baseline!r} is not among the records")

    def ratio(a, b):
        return a / b if a is not None and b else None

    def saved(a, b):
        return 100 * (1 - a / b) if a is not None and b else None

    for r in records:
        r["baseline"] = baseline
        r["train_speedup_x"] = ratio(r.get("train_img_per_s"), base.get("train_img_per_s"))
        r["infer_speedup_x"] = ratio(r.get("infer_img_per_s"), base.get("infer_img_per_s"))
        same_batch = r.get("batch_size") == base.get("batch_size")
        for col, measured in (
            ("mem_saved_pct", "train_peak_mem_bytes"),
            ("infer_mem_saved_pct", "infer_peak_mem_bytes"),
            ("mem_est_saved_pct", "train_mem_est_bytes"),
        ):
            r[col] = saved(r.get(measured), base.get(measured)) if same_batch else None
        r["ratio_note"] = None
        if not same_batch and not r.get("error") and not base.get("error"):
            r["ratio_note"] = (
                f"batch {r['batch_size']}, the baseline's {base['batch_size']} (out of memory at a larger "
                "batch): speed-ups compare images/s; memory is not compared"
            )
        r["macs_saved_pct"] = saved(r["macs"], base["macs"])
        r["macs_ratio_x"] = ratio(base["macs"], r["macs"])
    return records


# ----------------------------------------------------------------------------- resume


def _key(values: dict) -> tuple:
    return tuple(str(values.get(k)) for k in RESUME_KEY)


def _load_resume(path) -> dict:
    """Records of a JSON-lines run file by their resume key (a torn last line is ignored)."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"--resume {str(path)!r} is a folder; give a file such as profile-run.jsonl")
    records = {}
    if not path.exists():
        atomic_write(path, "")
        return records
    if not os.access(path, os.W_OK):
        raise UsageError(f"cannot append to {str(path)!r}: the file is not writable; choose another run file")
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and not record.get("error"):
                record.setdefault("num_classes", 1000)
                records[_key(record)] = record
    return records


def _append_jsonl(path, record: dict) -> None:
    """Append one record as a line, flushed to disk before the next measurement starts."""
    path = Path(path)
    clean = {
        k: v
        for k, v in record.items()
        if k not in ("baseline", "macs_ratio_x", "ratio_note") and not k.endswith(("_speedup_x", "_saved_pct"))
    }
    try:
        torn = not _ends_with_newline(path)  # an interrupted write: start a fresh line
        with open(path, "a") as f:
            f.write(("\n" if torn else "") + json.dumps(clean, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        raise UsageError(f"cannot append to {str(path)!r}: {err.strerror or err}; choose a writable path") from None


def _ends_with_newline(path) -> bool:
    with open(path, "rb") as f:
        if f.seek(0, os.SEEK_END) == 0:
            return True
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"
