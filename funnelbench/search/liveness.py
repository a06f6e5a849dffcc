"""Liveness: noticing workers that died and what they left running.

- Heartbeats (:class:`HeartbeatThread`): every running trial's worker records one every
  ``heartbeat_s`` seconds; a trial silent for ``STALE_HEARTBEATS`` of them is stale
  (:func:`fail_stale_trials`), and so, sooner, is one whose process on this machine is gone
  (:func:`recover_stale`). Either is recorded ``interrupted`` with the reason, and its
  configuration queued once more (:func:`requeue`; the retry names its dead trial,
  :func:`retried_from`).
- Claims (:func:`claim_layout`): on a shared storage a worker marks the layout it trains under
  the study's lock; a worker that draws a layout being trained waits for it.

Above the storage floor (:mod:`.storage`, :mod:`.locks`); below the trial and the loop.
"""

from __future__ import annotations

import contextlib
import copy
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable

import optuna
from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled
from optuna.trial import FrozenTrial, TrialState

from .locks import study_lock
from .storage import MAX_RETRY, RetryStaleTrial, unwrap
from .vocabulary import INTERRUPTED, RETRY_OF, RUNG

POLL_S = 1.0  # how often an idle worker looks again while other workers' trials run


def requeue(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue a dead or interrupted trial's configuration once more (at most ``MAX_RETRY`` times
    along a chain of retries)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        RetryStaleTrial(max_retry=MAX_RETRY)(study, trial)


def retried_from(trial: optuna.Trial | FrozenTrial) -> int | None:
    """The number of the dead trial this trial retries (its configuration, and its checkpoint
    where it has one), or None."""
    if not isinstance(trial, FrozenTrial):
        trial = trial.study._storage.get_trial(trial._trial_id)
    return trial.user_attrs.get(RETRY_OF)


def stale_error(grace_s: int) -> str:
    return (
        f"worker lost: no heartbeat for {grace_s} s (its process was killed or its machine stopped); "
        f"the configuration is queued once more"
    )


def fail_stale_trials(study: optuna.Study) -> list[int]:
    """Optuna's ``fail_stale_trials`` that also says why in the trial's record (``status``
    ``interrupted`` and ``error``, written before the state: a finished trial takes no attributes).
    Of several workers failing the same trial at once exactly one succeeds (the storage refuses
    to finish a finished trial) and only that one queues the retry. Returns the failed numbers."""
    storage = study._storage
    if not is_heartbeat_enabled(storage):
        return []
    base = unwrap(storage)
    grace = base.grace_period or 2 * base.get_heartbeat_interval()
    failed = []
    for trial_id in base._get_stale_trial_ids(study._study_id):
        try:
            storage.set_trial_user_attr(trial_id, "status", INTERRUPTED)
            storage.set_trial_user_attr(trial_id, "error", stale_error(grace))
            if storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                failed.append(trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # finished meanwhile, by its own worker or by another worker's check
    callback = base.get_heartbeat_stale_trial_callback()
    numbers = []
    for trial_id in failed:
        frozen = copy.deepcopy(storage.get_trial(trial_id))
        numbers.append(frozen.number)
        if callback is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                callback(study, frozen)
    return numbers


def recover_stale(study: optuna.Study) -> list[int]:
    """RUNNING trials whose worker was a process on this machine that no longer exists: record
    them as interrupted (FAIL) and queue their parameters again. Returns their numbers."""
    host = socket.gethostname()
    stale = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get("worker") or ""
        name, _, pid = worker.rpartition(":")
        if name != host or not pid.isdigit() or process_alive(int(pid)):
            continue
        trial_id = t._trial_id
        storage = study._storage
        storage.set_trial_user_attr(trial_id, "status", INTERRUPTED)
        storage.set_trial_user_attr(trial_id, "error", f"its process ({worker}) ended before the trial finished")
        study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        requeue(study, t)
        stale.append(t.number)
    return stale


def process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_layout(
    study: optuna.Study,
    trial: optuna.Trial,
    layout: str | tuple,
    *,
    finished: Callable,
    mark: Callable[[], None],
    poll_s: float = POLL_S,
) -> FrozenTrial | None:
    """Make sure no two workers train one layout (at one rung): under the study's lock, return
    the finished trial ``finished(study, key, number)`` finds (the caller repeats its result), or
    else, if no other running trial is training ``key``, ``mark()`` this trial as training it (its
    ``target_layout``, ``rung`` and ``status`` ``running``) and return None. While another worker
    trains it, wait (failing stale trials meanwhile: that worker may die). ``layout``: the key,
    (target layout, rung) with the rung None without --fidelity asha; a bare layout means rung None."""
    key = layout if isinstance(layout, tuple) else (layout, None)
    while True:
        with study_lock(study):
            fail_stale_trials(study)
            earlier = finished(study, key, trial.number)
            if earlier is not None:
                return earlier
            busy = [
                t
                for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                if t.number != trial.number
                and t.user_attrs.get("status") == "running"
                and (t.user_attrs.get("target_layout"), t.user_attrs.get(RUNG)) == key
            ]
            if not busy:
                mark()
                return None
        time.sleep(poll_s)


class HeartbeatThread:
    """Records a trial's heartbeat now and every interval until stopped (Optuna's own thread is
    private and started only by ``Study.optimize``)."""

    def __init__(self, storage: BaseHeartbeat, trial_id: int):
        self._stop = threading.Event()
        storage.record_heartbeat(trial_id)
        interval = storage.get_heartbeat_interval()

        def beat():
            while not self._stop.wait(interval):
                with contextlib.suppress(
                    Exception
                ):  # a missed beat is retried; storage trouble surfaces in the main thread
                    storage.record_heartbeat(trial_id)

        self._thread = threading.Thread(target=beat, name=f"heartbeat-{trial_id}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


__all__ = [
    "POLL_S",
    "HeartbeatThread",
    "requeue",
    "retried_from",
    "stale_error",
    "fail_stale_trials",
    "recover_stale",
    "claim_layout",
]
