"""One trial (:func:`run_trial`), and the one adapter to the trainer (:func:`train_trial`):

1. the space suggests a point (:meth:`Space.suggest`): the full-size target layout;
2. the budgets judge its analytic counts; a candidate over any budget (or outside the space's
   own constraints) is *rejected*: recorded with ``trial.set_constraint`` and never built;
3. a layout that already finished in this study is a *repeat*: it gets the earlier result
   (``duplicate_of``) instead of a second training (with other workers: :func:`.liveness.claim_layout`);
4. otherwise the objectives are measured: costs analytically, ``infer_img_per_s`` with the
   profiler, the rest by proxy training through :func:`train_trial`, reporting the objective
   every epoch so the pruner can stop it. A retry of a dead worker's trial resumes from its
   last epoch checkpoint (:func:`resume_point`). With ``--fidelity asha`` a trial trains to its
   rung's epochs; a promotion (:func:`.asha.promote`) continues its parent's checkpoint, and
   (layout, rung) is what a repeat repeats.

Every trial ends with every key of :data:`.vocabulary.TRIAL_KEYS` as a user attribute.
"""

from __future__ import annotations

import importlib
import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import TrialState

from ..cost import count
from ..errors import FunnelbenchError
from ..layout import Layout
from ..presets import resolve
from .budget import over_budget
from .faults import error_line
from .liveness import claim_layout
from .settings import Settings
from .storage import is_shared
from .vocabulary import (
    BASELINE_LAYOUT,
    OBJECTIVE_ATTR,
    OBJECTIVES,
    PROMOTED_FROM,
    REJECTED,
    RUNG,
    SKIPPED,
    TRIAL_KEYS,
)

INFER_PROFILE = dict(batch_size=8, warmup=1, repeats=3, train=False, memory=False)  # the profiler's cheap settings


# ----------------------------------------------------------------------------- the adapter to the trainer


def train_trial(
    layout: Layout,
    *,
    out: Path,
    proxy: dict,
    data=None,
    callback: Callable[[dict], bool] | None = None,
    console=None,
    resume: bool = False,
) -> dict:
    """The one place the search calls the trainer (contract A): train the proxy of ``layout``
    (full size; ``proxy`` holds the training options and ``width_scale``) into ``out`` on the
    already loaded ``data``; ``callback(metrics)`` after every epoch returns True to prune.
    ``resume``: continue the run whose checkpoint is in ``out`` (a retried trial).
    Returns the trainer's record (``status`` ``completed``, ``pruned``, ``diverged``, ...)."""
    trainer = _trainer()
    config = trainer.make_config(layout, **proxy)

    def on_epoch(metrics):
        return trainer.PRUNE if callback is not None and callback(metrics) else trainer.CONTINUE

    again = {"resume": True} if resume else {"overwrite": True}
    return trainer.train(config=config, out=out, data=data, callback=on_epoch, console=console, **again)


def _trainer():
    """The trainer module (``funnelbench.train``; the package's ``train`` attribute is the function)."""
    return importlib.import_module("funnelbench.train")


def proxy_of(layout: Layout, proxy: dict) -> Layout:
    """The layout that trains for ``layout``: the trainer's rule (widths scaled, heads kept, then
    the proxy resolution)."""
    return _trainer().proxy_layout(
        layout, proxy.get("image_size"), proxy.get("patch_size"), width_scale=proxy.get("width_scale", 1.0)
    )


def resume_point(source: Path | None, target: Path, *, stable: bool = False) -> list[dict] | None:
    """Prepare a retried trial to continue where its dead predecessor stopped (the checkpoint
    manager's :func:`funnelbench.training.checkpoint.resume_point`: the last epoch checkpoint and
    history of ``source`` copied into ``target``; ``stable``: its wsd stable checkpoint instead;
    None to train from the start)."""
    from ..training.checkpoint import resume_point as from_checkpoint  # torch: only when a trial resumes

    return from_checkpoint(source, target, stable=stable)


# ----------------------------------------------------------------------------- one trial


@dataclass
class Context:
    """What every trial of one process shares."""

    settings: Settings
    study: optuna.Study
    out: Path  # the study's folder
    data: object = None  # loaded once per process (contract A)
    on_event: Callable[[str, dict], None] | None = None
    console: object = None
    worker: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    # (target layout, rung) -> number of the trial that trained it; the rung is None without
    # --fidelity asha, and a promotion (the same layout at the next rung) is not a repeat
    finished: dict = field(default_factory=dict)

    def __post_init__(self):
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
            a = t.user_attrs
            if a.get("status") in ("completed", "pruned") and a.get("duplicate_of") is None:
                self.finished.setdefault((a.get("target_layout"), a.get(RUNG)), t.number)

    def finished_trial(self, study: optuna.Study, key: tuple, number: int):
        """The trial that trained ``key`` = (layout, rung) (finished, not a repeat), looking at
        other workers' too."""
        if key not in self.finished:
            self.__post_init__()
        earlier = self.finished.get(key)
        return (
            None
            if earlier is None or earlier == number
            else study._storage.get_trial(
                study._storage.get_trial_id_from_study_id_trial_number(study._study_id, earlier)
            )
        )

    def emit(self, kind: str, **info) -> None:
        if self.on_event:
            self.on_event(kind, info)


def run_trial(ctx: Context, trial: optuna.Trial) -> tuple[str, list | None, TrialState]:
    """Run one asked trial to its end; returns (status, values, state) for ``study.tell``."""
    s = ctx.settings
    trial.set_user_attr("worker", ctx.worker)  # first: a trial whose process dies is recognised as stale
    attrs = dict.fromkeys(TRIAL_KEYS)
    attrs.update(
        status="running", baseline=False, over_budget={}, worker=ctx.worker, retry_of=trial.user_attrs.get("retry_of")
    )
    fixed = trial.user_attrs.get(BASELINE_LAYOUT)
    if s.rungs is not None:  # --fidelity asha: a promotion's rung was set when it was queued
        top = len(s.rungs) - 1  # baselines, the reference, train the whole schedule
        attrs.update(
            rung=top if fixed is not None else trial.user_attrs.get(RUNG, 0),
            promoted_from=trial.user_attrs.get(PROMOTED_FROM),
        )
    if fixed is not None:  # a baseline: its layout as given (it need not be a point of the space)
        layout = resolve(fixed)
        attrs["baseline"] = True
        if s.space.contains(layout) is None:
            s.space.suggest(trial)  # its enqueued parameters, so the sampler learns from it
        # else: no parameters, and the samplers do not see it (samplers._ModelView)
    else:
        layout, _ = s.space.suggest(trial)
    attrs["target_layout"] = str(layout)
    started = time.time()
    try:
        costs, excess = s.budgets.judge(layout, need_memory="train_mem" in s.objectives, want_memory=True)
    except FunnelbenchError as err:  # the memory estimate does not model this layout: nothing was built
        attrs.update(status=SKIPPED, error=error_line(err), wall_s=time.time() - started)
        set_attrs(trial, attrs)
        return SKIPPED, None, TrialState.FAIL
    attrs.update(
        params=costs["params"],
        macs=costs["macs"],
        flops=2 * costs["macs"],
        train_mem_est_bytes=costs["train_mem_est_bytes"],
    )
    excess.update(s.space.constraints(layout))  # every key in every trial, <= 0 when met
    carried = trial.constraints  # a retry carries its dead trial's (the same layout's) values
    for name, value in excess.items():
        if name not in carried:
            trial.set_constraint(name, value)
    over = over_budget(excess)
    attrs["over_budget"] = over
    if over and not attrs["baseline"]:
        attrs.update(status=REJECTED, wall_s=time.time() - started)
        set_attrs(trial, attrs)
        ctx.emit("rejected", number=trial.number, layout=str(layout), over=over)
        return REJECTED, _worst_values(s, attrs), TrialState.COMPLETE

    # a RUNNING trial says what it is while it runs
    mark = lambda: set_attrs(trial, attrs)  # noqa: E731
    key = (str(layout), attrs["rung"])
    if attrs["baseline"]:
        earlier = None
    elif is_shared(ctx.study._storage):  # other workers: a layout one of them trains is waited for, not trained twice
        earlier = claim_layout(ctx.study, trial, key, finished=ctx.finished_trial, mark=mark)
    else:
        earlier = ctx.finished.get(key)
        earlier = None if earlier is None else ctx.study.trials[earlier]
    if earlier is not None:
        return _repeat(ctx, trial, attrs, earlier)
    mark()

    ctx.emit("trial_start", number=trial.number, layout=str(layout), baseline=attrs["baseline"])
    status, state = "completed", TrialState.COMPLETE
    try:
        if "infer_img_per_s" in s.objectives:
            attrs["infer_img_per_s"] = _infer_speed(layout, s.proxy.get("device", "auto"))
        if s.needs_training:
            status, state = _train(ctx, trial, layout, attrs)
        else:
            attrs["proxy_layout"] = None
    except KeyboardInterrupt:
        attrs.update(
            status="interrupted",
            error="interrupted (Ctrl-C or a signal) while the trial ran",
            wall_s=time.time() - started,
        )
        set_attrs(trial, attrs)
        raise
    except Exception as err:  # noqa: BLE001 - a trial's failure is recorded and the study goes on
        from ..measure import is_oom  # torch: only once a trial failed

        status, state = ("oom" if is_oom(err) else "failed"), TrialState.FAIL
        attrs["error"] = error_line(err)
    attrs.update(status=status, wall_s=time.time() - started)
    set_attrs(trial, attrs)
    if status in ("completed", "pruned"):
        ctx.finished.setdefault(key, trial.number)
    values = _values(s, attrs) if state == TrialState.COMPLETE else None
    ctx.emit("trial_end", number=trial.number, status=status, attrs=attrs, values=values)
    return status, values, state


def _train(ctx: Context, trial: optuna.Trial, layout: Layout, attrs: dict) -> tuple[str, TrialState]:
    s = ctx.settings
    proxy = proxy_of(layout, s.proxy)
    pc = count(proxy)
    run_dir = f"trial-{trial.number}"
    attrs.update(proxy_layout=str(proxy), proxy_params=pc.params, proxy_macs=pc.macs, run_dir=run_dir)
    set_attrs(trial, {k: attrs[k] for k in ("proxy_layout", "proxy_params", "proxy_macs", "run_dir")})
    metric = OBJECTIVES[s.objectives[0]][2]
    prunes = s.pruner != "none"
    reports = prunes or s.rungs is not None  # asha: the intermediate values are the epoch curve
    # a retry of a trial whose worker died continues from that trial's last epoch checkpoint; a
    # promotion (asha) from its parent's, when its own dead predecessor left none: under the wsd
    # schedule from the parent's stable checkpoint (before its rung's decay), so that the
    # promotion is the longer wsd run (none: the parent had no whole epoch before its decay, and
    # the promotion trains from the start)
    dead, parent = attrs.get("retry_of"), attrs.get("promoted_from")
    history = resume_point(None if dead is None else ctx.out / f"trial-{dead}", ctx.out / run_dir)
    if history is None and parent is not None:
        stable = s.proxy.get("schedule") == "wsd"
        history = resume_point(ctx.out / f"trial-{parent}", ctx.out / run_dir, stable=stable)
    resume = history is not None
    history = history or []
    before = len(history)  # epochs of the checkpoint it continues: not this trial's compute
    epochs = s.proxy.get("epochs", 10) if s.rungs is None else s.rungs[attrs["rung"]]
    proxy_options = {**s.proxy, "epochs": epochs}

    def callback(metrics: dict) -> bool:
        history.append(dict(metrics))
        ctx.emit("epoch", number=trial.number, epoch=metrics["epoch"], epochs=epochs, metrics=metrics)
        if not reports or metrics.get(metric) is None:
            return False
        if not prunes:
            trial.report(_as_reported(metric, metrics[metric]), metrics["epoch"])
            return False
        trial.report(_as_reported(metric, metrics[metric]), metrics["epoch"])
        # a baseline is the reference the search is read against: it is trained to the end; a
        # trial that has trained its whole schedule is a result, never pruned
        return not attrs["baseline"] and metrics["epoch"] < epochs and trial.should_prune()

    record = train_trial(
        layout,
        out=ctx.out / run_dir,
        proxy=proxy_options,
        data=ctx.data,
        callback=callback,
        console=None,
        resume=resume,
    )
    _fill_metrics(attrs, record, history, last=s.rungs is not None)
    attrs["epochs_trained"] = max(0, (attrs["epochs_done"] or 0) - before)
    images = record.get("train_images")
    attrs["image_epochs"] = None if images is None else attrs["epochs_trained"] * images
    status = record.get("status", "failed")
    if status == "pruned":
        return "pruned", TrialState.PRUNED
    if status == "completed":
        return "completed", TrialState.COMPLETE
    attrs["error"] = record.get("error") or f"training ended with status {status}"
    return ("diverged" if status == "diverged" else "oom" if status == "oom" else "failed"), TrialState.FAIL


def _as_reported(metric: str, value: float) -> float:
    """Accuracies in %, the rest as they are."""
    return 100 * value if metric in ("val_top1", "val_top5") else value


def _fill_metrics(attrs: dict, record: dict, history: list[dict], *, last: bool = False) -> None:
    """The trial's metrics from its best epoch by val top-1 (``last``: from its last epoch, the
    rung's end, as --fidelity asha compares trainings)."""
    scored = [h for h in history if h.get("val_top1") is not None]
    best = (scored[-1] if scored else None) if last else max(scored, key=lambda h: h["val_top1"], default=None)
    attrs["epochs_done"] = record.get("epochs_done", len(history))
    attrs["train_img_per_s"] = record.get("train_img_per_s")
    if best is not None:
        attrs["top1"] = 100 * best["val_top1"]
        attrs["top5"] = None if best.get("val_top5") is None else 100 * best["val_top5"]
        attrs["val_loss"] = best.get("val_loss")
    # read once by the trainer after the last epoch: shown beside the objective, never an objective
    attrs["test_top1"] = None if record.get("test_top1") is None else 100 * record["test_top1"]


def _infer_speed(layout: Layout, device: str) -> float | None:
    from ..profiling import profile  # torch: only for the inference-speed objective

    rec = profile([layout], device=device, **INFER_PROFILE)[0]
    if rec.get("error"):
        raise RuntimeError(f"measuring inference speed: {rec['error']}")
    return rec.get("infer_img_per_s")


def _values(s: Settings, attrs: dict) -> list[float]:
    out = []
    for o in s.objectives:
        v = attrs.get(OBJECTIVE_ATTR[o])
        out.append(_worst(o) if v is None or (isinstance(v, float) and math.isnan(v)) else float(v))
    return out


def _worst(objective: str) -> float:
    return 0.0 if OBJECTIVES[objective][0] == "maximize" else float("inf")


def _worst_values(s: Settings, attrs: dict) -> list[float]:
    """A rejected trial's values: its costs where they are objectives, the worst value for the
    rest (it is infeasible, so no sampler, best trial or front uses them as results)."""
    return [
        float(attrs[OBJECTIVE_ATTR[o]])
        if o in ("macs", "params") or (o == "train_mem" and attrs["train_mem_est_bytes"])
        else _worst(o)
        for o in s.objectives
    ]


def _repeat(ctx: Context, trial: optuna.Trial, attrs: dict, earlier) -> tuple[str, list | None, TrialState]:
    """A layout that already finished: the earlier trial's result, not a second training."""
    keep = {k: attrs[k] for k in ("worker", "retry_of", "baseline", "over_budget", "rung", "promoted_from")}
    attrs.update({k: earlier.user_attrs.get(k) for k in TRIAL_KEYS})
    attrs.update(keep, duplicate_of=earlier.number, wall_s=0.0)
    set_attrs(trial, attrs)
    ctx.emit("repeat", number=trial.number, of=earlier.number)
    if earlier.state == TrialState.PRUNED:
        for step, value in sorted(earlier.intermediate_values.items()):
            trial.report(value, step)
        return attrs["status"], None, TrialState.PRUNED
    return attrs["status"], list(earlier.values), TrialState.COMPLETE


def set_attrs(trial: optuna.Trial, attrs: dict) -> None:
    """Write the attributes that changed (each write is a storage transaction)."""
    stored = trial.user_attrs
    for key, value in attrs.items():
        if key not in stored or stored[key] != value:
            trial.set_user_attr(key, value)


__all__ = ["Context", "run_trial", "train_trial", "proxy_of", "resume_point", "set_attrs", "INFER_PROFILE"]
