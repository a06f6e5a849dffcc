"""The loop of one process: ask, run, tell until the study holds its trained trials.

:class:`Worker` hands out the study's trials (queued ones first) while the trained plus the
running trials are fewer than ``--trials``, under the study's lock, with a heartbeat for each
(with ``--fidelity asha``, a promotion first where there is one: :func:`.asha.promote`);
:func:`run_loop` runs each through :func:`.trial.run_trial` and tells the study; and
:func:`search_here` is a whole search in this process from its :class:`.plan.SearchPlan` (the
single-process ``search()`` and each worker process run it).
"""

from __future__ import annotations

import gc
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator

import optuna
from optuna.storages._heartbeat import is_heartbeat_enabled
from optuna.trial import FrozenTrial, TrialState

from ..errors import redact
from .accounting import counts, is_trained
from .asha import promote, spent
from .liveness import POLL_S, HeartbeatThread, fail_stale_trials, recover_stale, requeue
from .locks import study_lock
from .settings import Settings
from .signals import raise_if_signalled, signals_held
from .storage import is_shared, unwrap
from .trial import Context, run_trial, set_attrs
from .vocabulary import INTERRUPTED, REJECTED, SKIPPED, SQLITE_FILE, TRAINED, TRIAL_KEYS


class Worker:
    """Hands out the study's trials to one worker process until it holds ``trials`` trained ones.

    ``trained(frozen_trial) -> bool`` says which finished trials count towards ``--trials`` (the
    search's rule: trained, not rejected or failed). ``before_ask(study)`` runs in the same lock
    hold as the ask, just before it (--fidelity asha queues a promotion there, so that a
    promotion is claimed once however many workers ask). Use::

        with Worker(study, trials=n, trained=counts) as worker:
            for trial in worker:   # asked under the study's lock, heartbeat running
                ...                # train, tell
    """

    def __init__(
        self,
        study: optuna.Study,
        *,
        trials: int,
        trained: Callable[[FrozenTrial], bool],
        poll_s: float = POLL_S,
        recover: Callable[[optuna.Study], list[int]] | None = None,
        on_stale: Callable[[list[int]], None] | None = None,
        before_ask: Callable[[optuna.Study], object] | None = None,
    ):
        self.study, self.trials, self.trained, self.poll_s = study, trials, trained, poll_s
        self.recover, self.on_stale, self.before_ask = recover, on_stale, before_ask
        self._beat: HeartbeatThread | None = None

        if is_shared(study._storage):
            # Workers seeded alike would propose the same candidates: each draws from its own stream
            # (Optuna's reseed_rng; with several workers the order of trials is not reproducible anyway).
            study.sampler.reseed_rng()

    def __enter__(self) -> "Worker":
        return self

    def __exit__(self, *exc) -> None:
        self._stop_heartbeat()

    def __iter__(self) -> Iterator[optuna.Trial]:
        while (trial := self.ask()) is not None:
            yield trial
            self._stop_heartbeat()
            if _may_have_built(trial.user_attrs):
                release_memory()  # ~0.2 s a call: a cost-only trial built nothing

    def counts(self) -> tuple[int, int]:
        """(trained, running) trials of the study."""
        trials = self.study.get_trials(deepcopy=False)
        trained = sum(1 for t in trials if t.state.is_finished() and self.trained(t))
        running = sum(1 for t in trials if t.state == TrialState.RUNNING)
        return trained, running

    def ask(self) -> optuna.Trial | None:
        """The next trial (queued ones first), or None once the study holds ``trials`` trained
        trials and none is running. Waits while the remaining slots are held by running trials."""
        self._stop_heartbeat()
        while True:
            raise_if_signalled()  # a signal the trainer caught (or one held back) still stops the worker
            with study_lock(self.study):
                stale = fail_stale_trials(self.study) + (self.recover(self.study) if self.recover else [])
                if stale and self.on_stale:
                    self.on_stale(stale)
                trained, running = self.counts()
                if trained + running < self.trials:
                    # a signal waits until the trial has its heartbeat (no running trial nobody watches)
                    # and is raised by the caller's raise_if_signalled, which can record the trial
                    with signals_held(), warnings.catch_warnings():
                        warnings.filterwarnings("ignore", message=".*Heartbeat.*")  # "meant for optimize()"
                        if self.before_ask is not None:
                            self.before_ask(self.study)
                        trial = self.study.ask()
                        self._start_heartbeat(trial)
                    return trial
            if trained >= self.trials or running == 0:
                return None
            time.sleep(self.poll_s)

    def _start_heartbeat(self, trial: optuna.Trial) -> None:
        base = unwrap(self.study._storage)
        if is_heartbeat_enabled(base):
            self._beat = HeartbeatThread(base, trial._trial_id)

    def _stop_heartbeat(self) -> None:
        if self._beat is not None:
            self._beat.stop()
            self._beat = None


def _may_have_built(attrs: dict) -> bool:
    """Whether a finished trial may have built a model (a proxy trained, a speed measured, or a
    failure whose traceback may hold one)."""
    return (
        attrs.get("proxy_layout") is not None
        or attrs.get("infer_img_per_s") is not None
        or attrs.get("status") not in ("completed", "rejected", "skipped")
    )


def release_memory() -> None:
    """Free what the last trial left (Optuna's ``gc_after_trial``): objects caught in reference
    cycles, such as a failed trial's model held by its traceback, and the CUDA caching
    allocator's blocks, so an out-of-memory trial does not carry into the next one."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def run_loop(ctx: Context, trials: int) -> None:
    """Ask, run, tell until the study holds ``trials`` trained trials (or the space has nothing
    new). Any number of processes may run it on one study: :class:`workers.Worker` asks only
    while trained plus running trials are fewer than ``trials``, and fails and queues again the
    trials of dead workers."""
    study = ctx.study
    c = counts(study)  # this process's view, kept up to date here: reading every trial back each time is slow
    idle = 0  # trials in a row that trained nothing (rejected, repeats)
    limit = max(200, 20 * trials)
    epochs, eta = ctx.settings.rungs, ctx.settings.reduction
    with Worker(
        study,
        trials=trials,
        trained=is_trained,
        recover=recover_stale,
        on_stale=lambda numbers: ctx.emit("stale", numbers=numbers),
        before_ask=None if epochs is None else (lambda s: promote(s, epochs, eta)),
    ) as worker:
        for trial in worker:
            try:
                raise_if_signalled()  # one that arrived while the trial was handed out
                status, values, state = run_trial(ctx, trial)
            except KeyboardInterrupt:  # Ctrl-C, SIGTERM: recorded interrupted, queued again for the next run
                if trial.user_attrs.get("status") != INTERRUPTED:  # stopped before its training began
                    set_attrs(
                        trial,
                        {
                            **dict.fromkeys(TRIAL_KEYS),
                            **trial.user_attrs,
                            "status": INTERRUPTED,
                            "error": "interrupted (Ctrl-C or a signal) before the trial trained",
                        },
                    )
                study.tell(trial, state=TrialState.FAIL)
                requeue(study, study._storage.get_trial(trial._trial_id))
                raise
            if state == TrialState.COMPLETE:
                study.tell(trial, values)
            else:
                study.tell(trial, state=state)
            if trial.user_attrs.get("duplicate_of") is not None:
                c["repeats"] += 1
            elif status in ("completed", "pruned", REJECTED, SKIPPED):
                c[status] += 1
            else:
                c["failed"] += 1
            if status in TRAINED and trial.user_attrs.get("duplicate_of") is None:
                c["trained"] += 1
                idle = 0
            else:
                idle += 1
            ctx.emit("progress", counts=dict(c), trials=trials)
            if epochs is not None:
                remove_spent_checkpoints(ctx, trials)
            if idle >= limit:
                ctx.emit("stalled", idle=idle)
                break


def remove_spent_checkpoints(ctx: Context, trials: int, *, final: bool = False) -> list[int]:
    """--fidelity asha: delete the checkpoints no promotion will continue any more
    (:func:`.asha.spent`: the top rung's, those of promoted trials whose promotion trained,
    those ranked too low for the trainings left; ``final``, once no trial runs: every one) but
    the answer's (the best trial at the highest rung reached). Returns the trial numbers."""
    from ..training.checkpoint import remove_checkpoint  # the trainer's files: only a training search comes here

    study = ctx.study
    with study_lock(study):  # no worker reads a parent's checkpoint while it is judged
        frozen = study.get_trials(deepcopy=False)
        if final and any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in frozen):
            final = False  # another worker still trains: the end is its to sweep
        done = sum(1 for t in frozen if is_trained(t))
        numbers = spent(
            frozen,
            len(ctx.settings.rungs),
            ctx.settings.reduction,
            remaining=trials - done,
            final=final,
            maximize=study.directions[0].name == "MAXIMIZE",
        )
        removed = []
        for t in frozen:
            run_dir = t.user_attrs.get("run_dir")
            if t.number in numbers and run_dir and remove_checkpoint(ctx.out / run_dir):
                removed.append(t.number)
    return removed


def load_proxy_data(settings: Settings):
    """The proxy's data, loaded once per process (every trial trains at the same resolution)."""
    from ..data import load_data  # torch: only a search that trains loads data

    p = settings.proxy
    image = p.get("image_size") or settings.space.shared.get("image_size", 224)
    return load_data(
        p.get("data"),
        image_size=image,
        classes=p.get("classes"),
        train_per_class=p.get("train_per_class"),
        val_per_class=p.get("val_per_class"),
        subset_seed=p.get("subset_seed", 0),
        test_split=p.get("test_split"),
        test_per_class=p.get("test_per_class"),
        workers=p.get("workers") or min(8, os.cpu_count() or 1),
    )  # decoding into the cache: use the cores


def search_here(
    plan, study: optuna.Study, *, created: bool, stale: list[int], on_event: Callable[[str, dict], None] | None = None
) -> optuna.Study:
    """The search of ``plan`` in this process on the opened ``study``: the proxy's data loaded
    once, the ``start`` event, the loop, the ``end`` event. Returns the study."""
    settings = plan.settings
    data = load_proxy_data(settings) if settings.needs_training else None
    ctx = Context(settings, study, plan.out, data=data, on_event=on_event)
    ctx.emit(
        "start",
        study=plan.study,
        out=str(plan.out),
        storage=redact(plan.storage or f"sqlite:///{plan.out / SQLITE_FILE}"),
        created=created,
        trials=plan.trials,
        counts=counts(study),
        warning=plan.warning,
        stale=stale,
        budgets=settings.budgets,
        settings=settings,
        space=settings.space,
    )
    run_loop(ctx, plan.trials)
    if settings.rungs is not None:
        remove_spent_checkpoints(ctx, plan.trials, final=True)
    ctx.emit("end", counts=counts(study), study=study)
    return study


__all__ = ["Worker", "run_loop", "search_here", "load_proxy_data", "release_memory"]
