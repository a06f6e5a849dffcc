"""A search study: Optuna drives, each trial is a budget check and (maybe) a proxy training.

    study = fb.search("tiny", budget_macs=5e6, trials=10, epochs=2)

One trial (:func:`run_trial`):

1. the space suggests a point (:meth:`Space.suggest`): the full-size target layout;
2. the budgets judge its analytic counts; a candidate over any budget (or outside the space's
   own constraints) is *rejected*: recorded with ``trial.set_constraint`` and never built;
3. a layout that already finished in this study is a *repeat*: it gets the earlier result
   (``duplicate_of``) instead of a second training;
4. otherwise the objectives are measured: costs analytically, ``infer_img_per_s`` with the
   profiler, the rest by proxy training through :func:`train_trial` (the one adapter to the
   trainer), reporting the objective every epoch so the pruner can stop it.

``--trials N`` counts trained trials (completed, pruned or failed; in a cost-only study, the
evaluated ones): rejected candidates, repeats and interrupted trials are counted separately, so
re-running the same command continues until N. The study stores its settings and every trial
its facts as user attributes (``SEARCH_CONTRACT.md`` section B, :data:`TRIAL_KEYS`).

A trial that was running when its process died (SIGKILL, power loss) stays RUNNING in the
storage; the next run on this machine finds it (its worker's process is gone), records it as
``interrupted`` (FAIL) and queues its parameters again. (Many workers: ``workers.py``, later.)
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import optuna
from optuna.trial import TrialState

from ..errors import FunnelbenchError, UsageError, redact
from ..layout import Layout
from ..presets import resolve
from .budget import Budgets, macs_text, over_budget, preflight
from .samplers import make_sampler
from .space import Space, load_space
from .workers import (HEARTBEAT_S, JOURNAL_FILE, Worker, check_workers, claim_layout, is_shared, open_storage,
                      raise_if_signalled, requeue, resume_point, sole_search, storage_file, storage_lock, storage_url,
                      study_lock, workers_for)

MARKER = "search/1"
STUDY_ROOT = Path("runs") / "search"

# objective -> (direction, needs training, per-epoch metric it is reported as (or None))
OBJECTIVES = {
    "top1": ("maximize", True, "val_top1"),
    "top5": ("maximize", True, "val_top5"),
    "val_loss": ("minimize", True, "val_loss"),
    "macs": ("minimize", False, None),
    "params": ("minimize", False, None),
    "train_mem": ("minimize", False, None),
    "train_img_per_s": ("maximize", True, "train_img_per_s"),
    "infer_img_per_s": ("maximize", False, None),
}
# the trial attribute each objective reads
OBJECTIVE_ATTR = {"top1": "top1", "top5": "top5", "val_loss": "val_loss", "macs": "macs", "params": "params",
                  "train_mem": "train_mem_est_bytes", "train_img_per_s": "train_img_per_s",
                  "infer_img_per_s": "infer_img_per_s"}
SAMPLERS = ("tpe", "nsga2", "random", "gp")
PRUNERS = ("median", "hyperband", "none")
# Every trial has every key (None where not applicable). Contract B, plus duplicate_of, worker, retry_of.
TRIAL_KEYS = ("target_layout", "proxy_layout", "params", "macs", "flops", "proxy_params", "proxy_macs",
              "train_mem_est_bytes", "top1", "top5", "val_loss", "test_top1", "epochs_done", "train_img_per_s", "infer_img_per_s",
              "wall_s", "status", "error", "baseline", "over_budget", "run_dir", "duplicate_of", "worker", "retry_of")
TRAINED = ("completed", "pruned", "failed", "diverged", "oom")  # what --trials counts
# a candidate the memory estimate does not model, when the search needs its estimate: recorded
# with the reason, never built, not a training (it does not count towards --trials)
SKIPPED = "skipped"
FAILED = ("failed", "diverged", "oom", "interrupted")
# Proxy options that do not change the numbers: a study may be continued with other values.
FREE_PROXY_KEYS = ("workers", "threads", "checkpoint")
# The median pruner is the default from this many epochs on. Below it, pruning buys little and costs
# candidates: in the committed search-reinvest-ti study (4 epochs, results/search-reinvest-ti.csv)
# it stopped 13 of 40 trainings, which saved 12 of 160 epochs (7.5 %) and took those 13 (a third)
# out of the pick.
MEDIAN_MIN_EPOCHS = 8
HYPERBAND_FACTOR = 3
HYPERBAND_MIN_BRACKETS = 3  # rungs at 1, 3, 9 epochs: a schedule of 9 epochs or more
INFER_PROFILE = dict(batch_size=8, warmup=1, repeats=3, train=False, memory=False)  # the profiler's cheap settings


# ----------------------------------------------------------------------------- settings


@dataclass
class Settings:
    """What a study is: stored in its user attributes, compared when it is continued."""

    space: Space
    budgets: Budgets
    objectives: tuple[str, ...] = ("top1",)
    sampler: str = "tpe"
    seed: int = 0
    pruner: str | None = None  # None: median for one objective, none for several
    proxy: dict = field(default_factory=dict)  # TrainConfig fields + width_scale
    baselines: tuple[str, ...] = ()  # canonical; the space's first, then extra ones

    def __post_init__(self):
        if not self.objectives:
            self.objectives = ("top1",)
        for o in self.objectives:
            if o not in OBJECTIVES:
                raise UsageError(f"--objective {o}: unknown; choose from {', '.join(OBJECTIVES)}")
        if len(set(self.objectives)) != len(self.objectives):
            raise UsageError(f"--objective given twice: {', '.join(self.objectives)}")
        if self.sampler not in SAMPLERS:
            raise UsageError(f"--sampler {self.sampler}: unknown; choose from {', '.join(SAMPLERS)}")
        if self.sampler == "gp":
            import importlib.util

            if importlib.util.find_spec("scipy") is None:
                raise UsageError("--sampler gp: Optuna's GPSampler needs scipy, which is not installed; "
                                 "`pip install scipy`, or use --sampler tpe")
        if self.pruner is None:
            self.pruner = "median" if (len(self.objectives) == 1 and self.needs_training
                                       and self.proxy.get("epochs", 10) >= MEDIAN_MIN_EPOCHS) else "none"
        if self.pruner not in PRUNERS:
            raise UsageError(f"--pruner {self.pruner}: unknown; choose from {', '.join(PRUNERS)}")
        if self.pruner != "none" and len(self.objectives) > 1:
            raise UsageError(f"--pruner {self.pruner} with {len(self.objectives)} objectives: Optuna cannot prune "
                             "multi-objective studies (Trial.report raises there); use --pruner none or one --objective")
        epochs = self.proxy.get("epochs", 10)
        if self.pruner == "hyperband" and hyperband_brackets(epochs) < HYPERBAND_MIN_BRACKETS:
            raise UsageError(f"--pruner hyperband with {epochs} epochs: that is {hyperband_brackets(epochs)} bracket(s) of "
                             f"successive halving (rungs at 1, 3, 9, ... epochs), not Hyperband; give --epochs "
                             f"{HYPERBAND_FACTOR ** (HYPERBAND_MIN_BRACKETS - 1)} or more, or use --pruner median or none")
        if self.pruner != "none" and not self.needs_training:
            raise UsageError(f"--pruner {self.pruner}: the objective {self.objectives[0]} needs no training, so there is "
                             "nothing to prune; use --pruner none")
        if not 0 < self.proxy.get("width_scale", 1.0) <= 1:
            raise UsageError(f"--width-scale {self.proxy['width_scale']}: must be in (0, 1]; 0.25 trains a proxy a "
                             "quarter as wide")

    @property
    def needs_training(self) -> bool:
        return any(OBJECTIVES[o][1] for o in self.objectives)

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[o][0] for o in self.objectives]

    def to_attrs(self) -> dict:
        return {"space": self.space.name, "space_file": self.space.path, "space_spec": self.space.spec,
                "budgets": self.budgets.to_dict(), "objectives": list(self.objectives),
                "directions": self.directions, "sampler": self.sampler, "seed": self.seed, "pruner": self.pruner,
                "proxy": dict(self.proxy), "baselines": list(self.baselines)}


def _differences(stored: dict, now: dict) -> list[str]:
    """What differs between a stored study's settings and this run's, in words."""
    out = []
    for key in ("space_spec", "budgets", "objectives", "sampler", "seed", "pruner", "proxy", "baselines"):
        a, b = stored.get(key), now.get(key)
        if key == "proxy":
            a = {k: v for k, v in (a or {}).items() if k not in FREE_PROXY_KEYS}
            b = {k: v for k, v in (b or {}).items() if k not in FREE_PROXY_KEYS}
        if json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str):
            continue
        if isinstance(a, dict) and isinstance(b, dict) and key != "space_spec":
            diffs = [f"{k} {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
            out.append(f"{key} ({', '.join(diffs[:3])}{', ...' if len(diffs) > 3 else ''})")
        elif key == "space_spec":
            out.append(f"space (the study's is {stored.get('space')!r} as it was stored; this run's {now.get('space')!r} differs)")
        else:
            out.append(f"{key} ({a!r} -> {b!r})")
    return out


def default_study_name(space: Space, budgets: Budgets, objectives) -> str:
    parts = [space.name]
    for tag, value in (("macs", budgets.macs), ("min", budgets.min_macs), ("params", budgets.params)):
        if value is not None:
            parts.append(f"{tag}{_short(value)}")
    if budgets.memory_bytes is not None:
        parts.append(f"mem{budgets.memory_bytes / 2 ** 30:g}GiB")
    if list(objectives) != ["top1"]:
        parts.append("-".join(objectives))
    return "-".join(parts)


def _short(v: float) -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if v >= scale:
            return f"{v / scale:.4g}{suffix}"
    return f"{v:g}"


class TrainedMedianPruner(optuna.pruners.MedianPruner):
    """Optuna's median pruner, its start-up counted in *trained* trials.

    Optuna counts every COMPLETE trial towards ``n_startup_trials``, and a rejected candidate is
    told COMPLETE (with its constraint, so the sampler learns the infeasible region) without
    training. A search that rejects often (random search rejected 43-61 candidates per 16
    trainings in benchmarks/bench_search_quality.py's first run, before this class; docs/search.md "The
    search against random search") then judged trials against the median of one or two trained
    ones, and pruned up to 15 of 16. Here pruning waits until ``n_startup_trials`` trials have
    reported epochs and completed."""

    def __init__(self, n_startup_trials: int, n_warmup_steps: int, interval_steps: int = 1):
        super().__init__(n_startup_trials=0, n_warmup_steps=n_warmup_steps, interval_steps=interval_steps)
        self.trained_startup = n_startup_trials

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        trained = sum(1 for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.intermediate_values)
        return trained >= self.trained_startup and super().prune(study, trial)


def make_pruner(name: str, epochs: int):
    """Steps are epochs (1, 2, ...); no pruner is ever asked after the last epoch (a trial that
    trained its whole schedule is a result, :func:`_train`).

    ``median``: no trial is judged before it has run more than half its schedule (and never on
    its first epoch, the default learning-rate warm-up): a short proxy takes off at different
    epochs, and in the first committed search (results/search-reinvest-ti.md, 4 epochs) most
    layouts were still at chance after epoch 2. ``hyperband``: Optuna's, from 1 epoch to the
    whole schedule with reduction factor 3, so brackets = floor(log3(epochs)) + 1; Optuna's
    docs ask for about 4-6, and fewer than 3 (under 9 epochs) is one or two successive-halving
    rungs, not Hyperband: refused (:func:`check_pruner`)."""
    if name == "median":
        first = max(min(2, max(1, epochs)), epochs // 2 + 1)
        return TrainedMedianPruner(n_startup_trials=5, n_warmup_steps=first, interval_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=HYPERBAND_FACTOR)
    return optuna.pruners.NopPruner()


def hyperband_brackets(epochs: int) -> int:
    """Optuna's bracket count for min_resource 1, max_resource ``epochs``, reduction factor 3."""
    return int(math.floor(math.log(max(1, epochs), HYPERBAND_FACTOR) + 1e-9)) + 1


# ----------------------------------------------------------------------------- the adapter to the trainer


def train_trial(layout: Layout, *, out: Path, proxy: dict, data=None, callback: Callable[[dict], bool] | None = None,
                console=None, resume: bool = False) -> dict:
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
    import importlib

    return importlib.import_module("funnelbench.train")


def proxy_of(layout: Layout, proxy: dict) -> Layout:
    """The layout that trains for ``layout``: the trainer's rule (widths scaled, heads kept, then
    the proxy resolution)."""
    return _trainer().proxy_layout(layout, proxy.get("image_size"), proxy.get("patch_size"),
                                   width_scale=proxy.get("width_scale", 1.0))


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
    finished: dict = field(default_factory=dict)  # target layout -> number of the trial that trained it

    def __post_init__(self):
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
            a = t.user_attrs
            if a.get("status") in ("completed", "pruned") and a.get("duplicate_of") is None:
                self.finished.setdefault(a.get("target_layout"), t.number)

    def finished_trial(self, study: optuna.Study, layout: str, number: int):
        """The trial that trained ``layout`` (finished, not a repeat), looking at other workers' too."""
        if layout not in self.finished:
            self.__post_init__()
        earlier = self.finished.get(layout)
        return None if earlier is None or earlier == number else study._storage.get_trial(
            study._storage.get_trial_id_from_study_id_trial_number(study._study_id, earlier))

    def emit(self, kind: str, **info) -> None:
        if self.on_event:
            self.on_event(kind, info)


def run_trial(ctx: Context, trial: optuna.Trial) -> tuple[str, list | None, TrialState]:
    """Run one asked trial to its end; returns (status, values, state) for ``study.tell``."""
    s = ctx.settings
    trial.set_user_attr("worker", ctx.worker)  # first: a trial whose process dies is recognised as stale
    attrs = dict.fromkeys(TRIAL_KEYS)
    attrs.update(status="running", baseline=False, over_budget={}, worker=ctx.worker,
                 retry_of=trial.user_attrs.get("retry_of"))
    fixed = trial.user_attrs.get("baseline_layout")
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
        attrs.update(status=SKIPPED, error=_one_line(err), wall_s=time.time() - started)
        _set_attrs(trial, attrs)
        return SKIPPED, None, TrialState.FAIL
    attrs.update(params=costs["params"], macs=costs["macs"], flops=2 * costs["macs"],
                 train_mem_est_bytes=costs["train_mem_est_bytes"])
    excess.update(s.space.constraints(layout))  # every key in every trial, <= 0 when met
    carried = trial.constraints  # a retry carries its dead trial's (the same layout's) values
    for name, value in excess.items():
        if name not in carried:
            trial.set_constraint(name, value)
    over = over_budget(excess)
    attrs["over_budget"] = over
    if over and not attrs["baseline"]:
        attrs.update(status="rejected", wall_s=time.time() - started)
        _set_attrs(trial, attrs)
        ctx.emit("rejected", number=trial.number, layout=str(layout), over=over)
        return "rejected", _worst_values(s, attrs), TrialState.COMPLETE

    # a RUNNING trial says what it is while it runs
    mark = lambda: _set_attrs(trial, attrs)  # noqa: E731
    if attrs["baseline"]:
        earlier = None
    elif is_shared(ctx.study._storage):  # other workers: a layout one of them trains is waited for, not trained twice
        earlier = claim_layout(ctx.study, trial, str(layout), finished=ctx.finished_trial, mark=mark)
    else:
        earlier = ctx.finished.get(str(layout))
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
        attrs.update(status="interrupted", error="interrupted (Ctrl-C or a signal) while the trial ran",
                     wall_s=time.time() - started)
        _set_attrs(trial, attrs)
        raise
    except Exception as err:  # noqa: BLE001 - a trial's failure is recorded and the study goes on
        from ..measure import is_oom

        status, state = ("oom" if is_oom(err) else "failed"), TrialState.FAIL
        attrs["error"] = _one_line(err)
    attrs.update(status=status, wall_s=time.time() - started)
    _set_attrs(trial, attrs)
    if status in ("completed", "pruned"):
        ctx.finished.setdefault(str(layout), trial.number)
    values = _values(s, attrs) if state == TrialState.COMPLETE else None
    ctx.emit("trial_end", number=trial.number, status=status, attrs=attrs, values=values)
    return status, values, state


def _train(ctx: Context, trial: optuna.Trial, layout: Layout, attrs: dict) -> tuple[str, TrialState]:
    s = ctx.settings
    proxy = proxy_of(layout, s.proxy)
    from ..cost import count

    pc = count(proxy)
    run_dir = f"trial-{trial.number}"
    attrs.update(proxy_layout=str(proxy), proxy_params=pc.params, proxy_macs=pc.macs, run_dir=run_dir)
    _set_attrs(trial, {k: attrs[k] for k in ("proxy_layout", "proxy_params", "proxy_macs", "run_dir")})
    metric = OBJECTIVES[s.objectives[0]][2]
    prunes = s.pruner != "none"
    # a retry of a trial whose worker died continues from that trial's last epoch checkpoint
    dead = attrs.get("retry_of")
    history = resume_point(None if dead is None else ctx.out / f"trial-{dead}", ctx.out / run_dir)
    resume = history is not None
    history = history or []
    epochs = s.proxy.get("epochs", 10)

    def callback(metrics: dict) -> bool:
        history.append(dict(metrics))
        ctx.emit("epoch", number=trial.number, epoch=metrics["epoch"], epochs=epochs, metrics=metrics)
        if not prunes or metrics.get(metric) is None:
            return False
        trial.report(_as_reported(metric, metrics[metric]), metrics["epoch"])
        # a baseline is the reference the search is read against: it is trained to the end; a
        # trial that has trained its whole schedule is a result, never pruned
        return not attrs["baseline"] and metrics["epoch"] < epochs and trial.should_prune()

    record = train_trial(layout, out=ctx.out / run_dir, proxy=s.proxy, data=ctx.data, callback=callback,
                         console=None, resume=resume)
    _fill_metrics(attrs, record, history)
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


def _fill_metrics(attrs: dict, record: dict, history: list[dict]) -> None:
    best = max((h for h in history if h.get("val_top1") is not None), key=lambda h: h["val_top1"], default=None)
    attrs["epochs_done"] = record.get("epochs_done", len(history))
    attrs["train_img_per_s"] = record.get("train_img_per_s")
    if best is not None:
        attrs["top1"] = 100 * best["val_top1"]
        attrs["top5"] = None if best.get("val_top5") is None else 100 * best["val_top5"]
        attrs["val_loss"] = best.get("val_loss")
    # read once by the trainer after the last epoch: shown beside the objective, never an objective
    attrs["test_top1"] = None if record.get("test_top1") is None else 100 * record["test_top1"]


def _infer_speed(layout: Layout, device: str) -> float | None:
    from ..profiling import profile

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
    return [float(attrs[OBJECTIVE_ATTR[o]]) if o in ("macs", "params") or (o == "train_mem" and attrs["train_mem_est_bytes"])
            else _worst(o) for o in s.objectives]


def _repeat(ctx: Context, trial: optuna.Trial, attrs: dict, earlier) -> tuple[str, list | None, TrialState]:
    """A layout that already finished: the earlier trial's result, not a second training."""
    keep = {k: attrs[k] for k in ("worker", "retry_of", "baseline", "over_budget")}
    attrs.update({k: earlier.user_attrs.get(k) for k in TRIAL_KEYS})
    attrs.update(keep, duplicate_of=earlier.number, wall_s=0.0)
    _set_attrs(trial, attrs)
    ctx.emit("repeat", number=trial.number, of=earlier.number)
    if earlier.state == TrialState.PRUNED:
        for step, value in sorted(earlier.intermediate_values.items()):
            trial.report(value, step)
        return attrs["status"], None, TrialState.PRUNED
    return attrs["status"], list(earlier.values), TrialState.COMPLETE


def _set_attrs(trial: optuna.Trial, attrs: dict) -> None:
    """Write the attributes that changed (each write is a storage transaction)."""
    stored = trial.user_attrs
    for key, value in attrs.items():
        if key not in stored or stored[key] != value:
            trial.set_user_attr(key, value)


def _one_line(err: BaseException) -> str:
    text = redact(str(err)).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")[:500]


# ----------------------------------------------------------------------------- the study


def open_study(settings: Settings, *, study_name: str, storage: str | None, out: Path, workers: int = 1,
               heartbeat_s: int = HEARTBEAT_S) -> tuple[optuna.Study, bool]:
    """Create the study or load it; (study, created). A study with other settings is refused.
    Default storage: the study folder's SQLite file, or its journal file for several workers.
    The folder ``out`` is the study's alone (:func:`_claim_folder`): a study of another storage
    that has the same name is refused before it writes anything."""
    if storage is None:
        out.mkdir(parents=True, exist_ok=True)
    url = storage_url(storage, out=out.resolve(), workers=workers)
    shown = redact(url)
    new_file = storage_file(url)
    if new_file is not None and not new_file.exists():  # a new file holds no study yet: this one will be created
        _check_folder_free(out, url)
    storage = _storage(url, heartbeat_s)
    sampler = make_sampler(settings.sampler, settings.seed, len(settings.objectives), space=settings.space,
                           budgets=settings.budgets)
    pruner = make_pruner(settings.pruner, settings.proxy.get("epochs", 10))
    with storage_lock(storage, study_name):  # commands started together: one creates it, the others load it
        try:
            study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner)
            created = False
        except KeyError:
            _check_folder_free(out, url)
            study = optuna.create_study(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner,
                                        directions=settings.directions)
            created = True
        except Exception as err:  # noqa: BLE001 - a bad URL or an unreachable database
            raise UsageError(f"--storage {shown}: cannot open it ({_one_line(err)})") from None
        now = settings.to_attrs()
        if created:
            study.set_user_attr("funnelbench", MARKER)
            study.set_user_attr("uid", uuid.uuid4().hex)
            study.set_user_attr("settings", now)
            study.set_user_attr("out", str(out))
            for layout in settings.baselines:
                params = {}  # an extra baseline outside the space: trained by its layout alone, unseen by the sampler
                if settings.space.contains(resolve(layout)) is None:
                    params = settings.space.params_of(resolve(layout))  # only the decisions it uses
                study.enqueue_trial(params, user_attrs={"baseline_layout": layout})
            _claim_folder(out, study, url)
            return study, True
        if study.user_attrs.get("funnelbench") != MARKER:
            raise UsageError(f"study {study_name!r} in {shown} was not made by funnelbench search; choose another --study")
        diff = _differences(study.user_attrs.get("settings", {}), now)
        if diff:
            raise UsageError(f"study {study_name!r} exists with other settings: {'; '.join(diff)}; run it with the same "
                             "options to continue it, or choose another --study")
        earlier = "uid" not in study.user_attrs  # made before studies had an identity: its folder has no owner file
        if earlier:
            study.set_user_attr("uid", uuid.uuid4().hex)
        _claim_folder(out, study, url, trials_are_its_own=earlier)
    return study, False


OWNER_FILE = "owner.json"  # in a study's folder: which study (its "uid" attribute) the folder belongs to


def _claim_folder(out: Path, study: optuna.Study, url: str, *, trials_are_its_own: bool = False) -> None:
    """Make ``out`` the folder of ``study`` (identified by its ``uid`` attribute, written to
    ``out/owner.json``), or refuse: a folder that belongs to another study, or that holds another
    storage's study file, is never written to, so no trial of one study replaces another's
    record, history or checkpoint. ``trials_are_its_own``: a study from before owner files,
    whose trial folders are taken to be its own."""
    uid = study.user_attrs["uid"]
    owner = _owner_of(out)
    if owner is not None:
        if owner.get("uid") != uid:
            raise UsageError(_taken(out, owner, url))
        return
    _check_folder_free(out, url, trials_are_its_own=trials_are_its_own)
    from ..exports import atomic_write

    atomic_write(out / OWNER_FILE, json.dumps({"study": study.study_name, "uid": uid, "storage": redact(url)},
                                              indent=1) + "\n")


def _check_folder_free(out: Path, url: str, *, trials_are_its_own: bool = False) -> None:
    """Refuse a study the folder ``out`` cannot be given to: one that belongs to another study
    (its owner file), one that holds the SQLite or journal file of a study in another storage,
    or one with trial folders of a study whose storage is gone (unless ``trials_are_its_own``)."""
    owner = _owner_of(out)
    if owner is not None:
        raise UsageError(_taken(out, owner, url))
    mine = storage_file(url)
    for name in ("study.db", JOURNAL_FILE):
        other = out / name
        if other.exists() and (mine is None or other.absolute() != mine):
            raise UsageError(f"{out} holds {name}, the storage of another study of this name, and its trial folders; "
                             f"this search's study is in {redact(url)} and would write its trials over them: choose "
                             f"another --study (or move {out} away)")
    trials = sorted(p.name for p in out.glob("trial-*")) if out.is_dir() else []
    if trials and not trials_are_its_own:
        raise UsageError(f"{out} holds trial folders ({', '.join(trials[:3])}{', ...' if len(trials) > 3 else ''}) of "
                         f"a study that is not in {redact(url)} (its storage was moved or deleted); a new study would "
                         f"write its trials over them: choose another --study (or move {out} away)")


def _owner_of(out: Path) -> dict | None:
    try:
        owner = json.loads((out / OWNER_FILE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"study": "?", "uid": None, "storage": f"an unreadable {out / OWNER_FILE}"}
    return owner if isinstance(owner, dict) else {"study": "?", "uid": None, "storage": "?"}


def _taken(out: Path, owner: dict, url: str) -> str:
    return (f"{out} belongs to study {owner.get('study')!r} in {owner.get('storage')} (its trial folders, records and "
            f"checkpoints); this search's study is in {redact(url)} and would write its trials over them: choose another "
            f"--study (or move {out} away)")


def _storage(url: str, heartbeat_s: int = HEARTBEAT_S):
    """An Optuna storage for ``url`` (with a heartbeat: :func:`workers.open_storage`). SQLite gets
    write-ahead logging without a sync per commit
    (every trial writes ~25 attributes, each a transaction: ~20 ms with a sync, well under 1 ms
    without). A killed process loses nothing it committed; a power cut may lose the last commits
    but never corrupts the file."""
    try:
        storage = open_storage(url, heartbeat_s=heartbeat_s)
    except FunnelbenchError:  # already one line that names the storage (a damaged file, a bad URL)
        raise
    except Exception as err:  # noqa: BLE001 - a malformed URL, an unwritable folder, a file that is not a database
        raise UsageError(f"--storage {redact(url)}: cannot open it ({_one_line(err)})") from None
    if not url.startswith("sqlite:"):
        return storage
    from sqlalchemy import event

    def pragmas(conn, _record):
        cursor = conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(storage.engine, "connect", pragmas)
    storage.engine.dispose()
    return storage


def counts(study: optuna.Study) -> dict:
    """Trials by outcome: trained (what --trials counts), completed, pruned, rejected, failed, repeats."""
    c = dict.fromkeys(("trained", "completed", "pruned", "rejected", "skipped", "failed", "repeats", "running",
                       "waiting"), 0)
    for t in study.get_trials(deepcopy=False):
        status = t.user_attrs.get("status")
        if t.state == TrialState.WAITING:
            c["waiting"] += 1
        elif t.state == TrialState.RUNNING:
            c["running"] += 1
        elif t.user_attrs.get("duplicate_of") is not None:
            c["repeats"] += 1
        elif status in ("rejected", SKIPPED):
            c[status] += 1
        elif status in FAILED:
            c["failed"] += 1
        elif status in ("completed", "pruned"):
            c[status] += 1
        if is_trained(t):
            c["trained"] += 1
    return c


def is_trained(t) -> bool:
    """Whether a trial counts towards ``--trials``."""
    return t.user_attrs.get("duplicate_of") is None and t.user_attrs.get("status") in TRAINED \
        and t.state != TrialState.RUNNING


def recover_stale(study: optuna.Study) -> list[int]:
    """RUNNING trials whose worker was a process on this machine that no longer exists: record
    them as interrupted (FAIL) and queue their parameters again. Returns their numbers."""
    host = socket.gethostname()
    stale = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get("worker") or ""
        name, _, pid = worker.rpartition(":")
        if name != host or not pid.isdigit() or _alive(int(pid)):
            continue
        trial_id = t._trial_id
        storage = study._storage
        storage.set_trial_user_attr(trial_id, "status", "interrupted")
        storage.set_trial_user_attr(trial_id, "error", f"its process ({worker}) ended before the trial finished")
        study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        requeue(study, t)
        stale.append(t.number)
    return stale


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def search(space="tiny", *, trials: int = 20, budget_macs: float | None = None, min_macs: float | None = None,
           budget_params: float | None = None, budget_memory: int | None = None, memory_batch: int = 64,
           memory_device: str = "cuda", memory_dtype: str = "fp32", objectives=("top1",), sampler: str = "tpe",
           pruner: str | None = None, baselines=(), width_scale: float | None = None, study: str | None = None,
           storage: str | None = None, root: str | os.PathLike | None = None,
           on_event: Callable[[str, dict], None] | None = None, workers: int = 1, heartbeat_s: int = HEARTBEAT_S,
           worker_events: Callable[[], Callable[[str, dict], None]] | None = None, **train_options) -> optuna.Study:
    """Run (or continue) a search until ``trials`` trials are trained; returns the Optuna study.

    ``space``: a shipped space's name, a ``.yaml`` path, a dict or a :class:`Space`. Budgets
    judge the full-size layout: ``budget_macs`` (the papers' "FLOPs"), ``min_macs``,
    ``budget_params``, ``budget_memory`` (bytes of the estimated training peak at
    ``memory_batch`` on ``memory_device`` in ``memory_dtype``). ``train_options``: every
    :class:`~funnelbench.train.TrainConfig` field (``epochs``, ``image_size``, ``data``, ...);
    what is not given (or None) comes from the space's ``proxy`` section, then from the
    trainer's defaults (``width_scale``: the space's, else 1).
    ``on_event(kind, info)`` sees the progress (``start``, ``trial_start``, ``epoch``,
    ``trial_end``, ``rejected``, ``repeat``, ``end``). ``seed`` (a training option, 0 by
    default) seeds the sampler too. ``workers``: processes sharing the study (:mod:`.workers`);
    ``worker_events``: a picklable factory of each worker process's ``on_event``."""
    from ..train import TrainConfig

    if trials < 1:
        raise UsageError(f"--trials {trials}: must be at least 1")
    check_workers(workers)
    space = space if isinstance(space, Space) else load_space(space)
    check_name(space.name, f"space name (the name: of {space.path})" if space.path else "space name",
               "rename the space" + (" or give --study NAME" if study is None else ""))
    # the proxy: the options given, then the space's proxy section, then the trainer's defaults
    train_options = {**{k: v for k, v in space.proxy.items() if k != "width_scale"},
                     **{k: v for k, v in train_options.items() if v is not None}}
    if width_scale is None:
        width_scale = space.proxy.get("width_scale", 1.0)
    budgets = Budgets(budget_macs, min_macs, budget_params, budget_memory, memory_batch, memory_device, memory_dtype)
    known = set(TrainConfig.__dataclass_fields__) - {"layout", "finetune_from"}
    unknown = sorted(set(train_options) - known)
    if unknown:
        raise UsageError(f"unknown training option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    # Every training option, defaults included (so the CLI and the API store the same settings),
    # checked now rather than in the first trial.
    config = TrainConfig(layout=str(space.stats().cheapest_macs[0]),
                         **{k: v for k, v in train_options.items() if v is not None})
    proxy = {k: v for k, v in asdict(config).items() if k not in ("layout", "finetune_from")}
    proxy["width_scale"] = float(width_scale)
    extra = []
    for b in baselines:
        text = str(resolve(b))
        if text not in extra:
            extra.append(text)
    names = [str(b) for b in space.baselines]
    seed = train_options.get("seed") or 0
    settings = Settings(space, budgets, tuple(objectives), sampler, seed, pruner, proxy,
                        tuple(names + [b for b in extra if b not in names]))
    warning = preflight(space, budgets)
    _check_proxy(space, settings)
    study_name = check_name(study or default_study_name(space, budgets, settings.objectives), "--study",
                            "choose another --study")
    out = study_folder(root, study_name)
    quiet_optuna()
    opt_study, created = open_study(settings, study_name=study_name, storage=storage, out=out, workers=workers,
                                    heartbeat_s=heartbeat_s)
    with sole_search(opt_study._storage, study_name):  # SQLite: a second process on the study is refused
        with study_lock(opt_study):
            stale = recover_stale(opt_study)
        if workers > 1:
            from .workers import search_in_workers

            c = counts(opt_study)
            return search_in_workers(opt_study, workers_for(workers, trials - c["trained"] - c["running"]), dict(
                space=space, trials=trials, budget_macs=budget_macs, min_macs=min_macs, budget_params=budget_params,
                budget_memory=budget_memory, memory_batch=memory_batch, memory_device=memory_device,
                memory_dtype=memory_dtype, objectives=objectives, sampler=sampler, pruner=pruner, baselines=baselines,
                width_scale=width_scale, study=study_name, root=root, heartbeat_s=heartbeat_s, **train_options),
                warm=(lambda: _load_data_once(settings)) if settings.needs_training else None,
                start=dict(study=study_name, out=str(out), created=created, trials=trials, warning=warning, stale=stale,
                           budgets=budgets, settings=settings, space=space, workers_asked=workers),
                on_event=on_event, worker_events=worker_events)
        data = _load_data_once(settings) if settings.needs_training else None
        ctx = Context(settings, opt_study, out, data=data, on_event=on_event)
        c = counts(opt_study)
        ctx.emit("start", study=study_name, out=str(out), storage=redact(storage or f"sqlite:///{out / 'study.db'}"),
                 created=created, trials=trials, counts=c, warning=warning, stale=stale, budgets=budgets,
                 settings=settings, space=space)
        run_loop(ctx, trials)
        ctx.emit("end", counts=counts(opt_study), study=opt_study)
        return opt_study


# A study's name is its folder's name (runs/search/<study>/), and a space's name the default study's.
SAFE_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")


def check_name(name: str, what: str, fix: str) -> str:
    """``name`` if it is a safe folder name (letters, digits, ``.``, ``_``, ``-``; 1 to 100 of them;
    not ``.`` or ``..``), else a one-line :class:`UsageError` naming ``what`` and the ``fix``."""
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name) or name in (".", ".."):
        raise UsageError(f"{what} {name!r}: a name here is a folder's name, so it may hold only letters, digits, '.', "
                         f"'_' and '-' (1 to 100 of them, not '.' or '..'); {fix}")
    return name


def study_folder(root: str | os.PathLike | None, study_name: str) -> Path:
    """The study's folder, ``<root>/<study>`` (root: ``runs/search``), checked to lie directly
    under the root; every trial folder is a ``trial-<number>`` inside it."""
    root = STUDY_ROOT if root is None else Path(root)
    out = root / study_name
    if Path(os.path.normpath(out.absolute())).parent != Path(os.path.normpath(root.absolute())):
        raise UsageError(f"--study {study_name!r}: its folder {out} would not be inside {root}; choose another --study")
    return out


def quiet_optuna() -> None:
    """Optuna's INFO lines (one per trial) off; its warnings stay, but for the ones judged harmless
    here: a trial told twice after a kill (``skip_if_finished``) and the experimental options."""
    import logging
    import warnings

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    logging.getLogger("optuna").addFilter(_HarmlessOptunaWarnings())


class _HarmlessOptunaWarnings:
    """Named Optuna warnings the search expects (each one looked at): everything else shows."""

    EXPECTED = ("was already finished",)  # Study.tell(skip_if_finished=True) on a trial a stale-trial pass ended

    def filter(self, record) -> bool:
        return not any(text in record.getMessage() for text in self.EXPECTED)


def run_loop(ctx: Context, trials: int) -> None:
    """Ask, run, tell until the study holds ``trials`` trained trials (or the space has nothing
    new). Any number of processes may run it on one study: :class:`workers.Worker` asks only
    while trained plus running trials are fewer than ``trials``, and fails and queues again the
    trials of dead workers."""
    study = ctx.study
    c = counts(study)  # this process's view, kept up to date here: reading every trial back each time is slow
    idle = 0  # trials in a row that trained nothing (rejected, repeats)
    limit = max(200, 20 * trials)
    with Worker(study, trials=trials, trained=is_trained, recover=recover_stale,
                on_stale=lambda numbers: ctx.emit("stale", numbers=numbers)) as worker:
        for trial in worker:
            try:
                raise_if_signalled()  # one that arrived while the trial was handed out
                status, values, state = run_trial(ctx, trial)
            except KeyboardInterrupt:  # Ctrl-C, SIGTERM: recorded interrupted, queued again for the next run
                if trial.user_attrs.get("status") != "interrupted":  # stopped before its training began
                    _set_attrs(trial, {**dict.fromkeys(TRIAL_KEYS), **trial.user_attrs, "status": "interrupted",
                                       "error": "interrupted (Ctrl-C or a signal) before the trial trained"})
                study.tell(trial, state=TrialState.FAIL)
                requeue(study, study._storage.get_trial(trial._trial_id))
                raise
            if state == TrialState.COMPLETE:
                study.tell(trial, values)
            else:
                study.tell(trial, state=state)
            if trial.user_attrs.get("duplicate_of") is not None:
                c["repeats"] += 1
            elif status in ("completed", "pruned", "rejected", SKIPPED):
                c[status] += 1
            else:
                c["failed"] += 1
            if status in TRAINED and trial.user_attrs.get("duplicate_of") is None:
                c["trained"] += 1
                idle = 0
            else:
                idle += 1
            ctx.emit("progress", counts=dict(c), trials=trials)
            if idle >= limit:
                ctx.emit("stalled", idle=idle)
                break


def _check_proxy(space: Space, settings: Settings) -> None:
    """The proxy resolution must express every pool of the space (checked on the token counts
    alone, before anything trains), and the baselines must have a proxy."""
    if not settings.needs_training:
        return
    image, patch = settings.proxy.get("image_size"), settings.proxy.get("patch_size")
    if image or patch:
        from .space import _SpaceError, _walk

        try:
            _walk(space, check_only=True, image_size=image or space.shared.get("image_size", 224),
                  patch_size=patch)
        except _SpaceError as err:
            raise UsageError(f"--image-size {image} --patch-size {patch}: at the proxy resolution {err.message} "
                             f"(key {err.key} of space {space.name}); choose a proxy grid that keeps the space's pools") from None
    try:  # e.g. an image size that is not a multiple of the patch size
        proxy_of(space.stats().cheapest_macs[0], settings.proxy)
    except FunnelbenchError as err:
        raise UsageError(f"the proxy cannot train this space's layouts: {err}") from None
    for b in settings.baselines:
        try:
            proxy_of(resolve(b), settings.proxy)
        except FunnelbenchError as err:
            raise UsageError(f"baseline {b}: no proxy at these options ({err})") from None


def _load_data_once(settings: Settings):
    """The proxy's data, loaded once per process (every trial trains at the same resolution)."""
    from ..data import load_data

    p = settings.proxy
    image = p.get("image_size") or settings.space.shared.get("image_size", 224)
    return load_data(p.get("data"), image_size=image, classes=p.get("classes"), train_per_class=p.get("train_per_class"),
                     val_per_class=p.get("val_per_class"), subset_seed=p.get("subset_seed", 0),
                     test_split=p.get("test_split"), test_per_class=p.get("test_per_class"),
                     workers=p.get("workers") or min(8, os.cpu_count() or 1))  # decoding into the cache: use the cores


# ----------------------------------------------------------------------------- summaries


def best_rows(study: optuna.Study) -> list[dict]:
    """The best trial (one objective) or the Pareto front (several), as ``funnelbench report``
    reads it (:func:`funnelbench.search.report.front_trials`: feasible trials trained to the
    end, never a repeat), best first."""
    from .report import front_trials

    return [{"number": t.number, **{k: t.user_attrs.get(k) for k in TRIAL_KEYS}, "values": t.values}
            for t in front_trials(study)]


def summary(study: optuna.Study) -> dict:
    settings = study.user_attrs.get("settings", {})
    out = study.user_attrs.get("out")
    storage = _storage_url(study)
    return {"study": study.study_name, "storage": storage, "out": out, "settings": settings, "counts": counts(study),
            "best": best_rows(study),
            "report_command": report_command(study.study_name, storage, out)}


def _storage_url(study: optuna.Study) -> str | None:
    storage = study._storage
    if getattr(storage, "path", None) is not None:  # the journal file (workers.JournalHeartbeatStorage)
        return f"journal:{storage.path}"
    inner = getattr(storage, "_backend", storage)
    engine = getattr(inner, "engine", None)
    return str(engine.url) if engine is not None else None


def report_command(name: str, storage: str | None, out: str | None) -> str:
    default = out and storage == f"sqlite:///{(Path(out) / 'study.db').resolve()}"
    return f"funnelbench report --study {name}" + ("" if default or storage is None else f" --storage {storage}")


__all__ = ["Settings", "search", "run_trial", "run_loop", "open_study", "counts", "summary", "best_rows",
           "train_trial", "proxy_of", "OBJECTIVES", "TRIAL_KEYS", "macs_text"]
