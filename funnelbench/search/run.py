"""The public ``search()``: run (or continue) a search until the study holds its trained trials.

    study = fb.search("tiny", budget_macs=5e6, trials=10, epochs=2)

The arguments become one :class:`.plan.SearchPlan` (:func:`.plan.make_plan`: the space walked,
the budgets pre-checked, the proxy checked); the study is created or loaded, its settings
compared (:func:`.studies.open_search_study`); trials a killed run left running are recorded
``interrupted`` and queued again (:func:`.liveness.recover_stale`); then the search runs here
(:func:`.loop.search_here`) or in ``workers`` processes (:func:`.workers.search_in_workers`),
each of which receives the plan.

``--trials N`` counts trained trials (completed, pruned or failed; in a cost-only study, the
evaluated ones): rejected candidates, repeats and interrupted trials are counted separately, so
re-running the same command continues until N. The study stores its settings and every trial
its facts as user attributes (:data:`.vocabulary.TRIAL_KEYS`).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import optuna

from ..errors import UsageError
from .accounting import counts
from .liveness import recover_stale
from .locks import sole_search, study_lock
from .loop import load_proxy_data, search_here
from .plan import make_plan
from .storage import HEARTBEAT_S
from .studies import open_search_study, quiet_optuna
from .workers import check_workers, search_in_workers, workers_for


def search(
    space="tiny",
    *,
    trials: int = 20,
    budget_macs: float | None = None,
    min_macs: float | None = None,
    budget_params: float | None = None,
    budget_memory: int | None = None,
    memory_batch: int = 64,
    memory_device: str = "cuda",
    memory_dtype: str = "fp32",
    objectives=("top1",),
    sampler: str = "tpe",
    pruner: str | None = None,
    baselines=(),
    width_scale: float | None = None,
    study: str | None = None,
    storage: str | None = None,
    root: str | os.PathLike | None = None,
    on_event: Callable[[str, dict], None] | None = None,
    workers: int = 1,
    heartbeat_s: int = HEARTBEAT_S,
    worker_events: Callable[[], Callable[[str, dict], None]] | None = None,
    fidelity: str = "none",
    min_epochs: int | None = None,
    max_epochs: int | None = None,
    reduction: int | None = None,
    **train_options,
) -> optuna.Study:
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
    ``worker_events``: a picklable factory of each worker process's ``on_event``.
    ``fidelity="asha"``: asynchronous successive halving (:mod:`.asha`) over rungs from
    ``min_epochs`` (default 1) to ``max_epochs`` (default ``epochs``) by factor ``reduction``
    (default 3); it needs ``schedule="constant"``, and ``trials`` then counts the trainings
    of every rung."""
    if trials < 1:
        raise UsageError(f"--trials {trials}: must be at least 1")
    check_workers(workers)
    plan = make_plan(
        space,
        trials=trials,
        budget_macs=budget_macs,
        min_macs=min_macs,
        budget_params=budget_params,
        budget_memory=budget_memory,
        memory_batch=memory_batch,
        memory_device=memory_device,
        memory_dtype=memory_dtype,
        objectives=objectives,
        sampler=sampler,
        pruner=pruner,
        baselines=baselines,
        width_scale=width_scale,
        study=study,
        storage=storage,
        root=root,
        heartbeat_s=heartbeat_s,
        fidelity=fidelity,
        min_epochs=min_epochs,
        max_epochs=max_epochs,
        reduction=reduction,
        **train_options,
    )
    settings = plan.settings
    quiet_optuna()
    opt_study, created = open_search_study(
        settings, study_name=plan.study, storage=storage, out=plan.out, workers=workers, heartbeat_s=heartbeat_s
    )
    with sole_search(opt_study._storage, plan.study):  # SQLite: a second process on the study is refused
        with study_lock(opt_study):
            stale = recover_stale(opt_study)
        if workers > 1:
            c = counts(opt_study)
            return search_in_workers(
                opt_study,
                workers_for(workers, trials - c["trained"] - c["running"]),
                plan,
                warm=(lambda: load_proxy_data(settings)) if settings.needs_training else None,
                start=dict(
                    study=plan.study,
                    out=str(plan.out),
                    created=created,
                    trials=trials,
                    warning=plan.warning,
                    stale=stale,
                    budgets=settings.budgets,
                    settings=settings,
                    space=settings.space,
                    workers_asked=workers,
                ),
                on_event=on_event,
                worker_events=worker_events,
            )
        return search_here(plan, opt_study, created=created, stale=stale, on_event=on_event)


__all__ = ["search"]
