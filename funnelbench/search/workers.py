"""Worker processes: ``--workers N`` on one machine, N processes sharing one study.

The way Optuna's documentation recommends: worker *processes* (threads share the GIL), one
shared storage (:mod:`.storage`: the journal file by default, a database server for many
machines; SQLite is refused), and for each storage the means to notice a worker that died
(:mod:`.liveness`). ``--trials N`` is the study's total of trained trials over all workers;
each worker asks only while trained plus running trials are fewer (:class:`.loop.Worker`).

- :func:`search_in_workers`: the parent; the study was created (its baselines queued) and the
  data cache built here, once, before any worker starts. Each worker receives the one frozen
  :class:`.plan.SearchPlan` and runs :func:`search_worker`: it opens the study again from the
  plan's URL and runs the single-process search (:func:`.loop.search_here`) on it.
- :func:`run_workers`: N processes (``spawn``: no forked torch state); worker i gets cores / N
  torch threads or, where there are GPUs, sees only GPU i. SIGINT and SIGTERM reach every
  worker: its running trial is recorded failed (``interrupted``), it stops, and the command
  exits 130 / 143. Re-running the command continues the study.

The storage, liveness and signal names this module once held are re-exported at its end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable

import optuna

from ..errors import FunnelbenchError, UsageError, redact
from .accounting import counts
from .faults import StorageError, one_line, storage_errors

# The storage, liveness, loop and signal names this module held before they had modules of their
# own (benchmarks, tests and scripts import them from here); see __all__.
from .journal import JournalHeartbeatStorage, repair_torn_tail
from .liveness import POLL_S, claim_layout, fail_stale_trials, recover_stale, requeue, retried_from
from .locks import sole_search, storage_lock, study_lock
from .loop import Worker, release_memory, search_here
from .plan import SearchPlan
from .signals import Interrupted, raise_if_signalled, signals_interrupt
from .storage import (
    HEARTBEAT_S,
    MAX_RETRY,
    STALE_HEARTBEATS,
    check_sqlite,
    is_shared,
    open_storage,
    storage_file,
    storage_url,
    url_of,
)
from .studies import load_search_study, quiet_optuna
from .vocabulary import JOURNAL_FILE

# ----------------------------------------------------------------------------- this machine's share


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def gpu_ids() -> list[str]:
    """The GPUs this process may use (respecting CUDA_VISIBLE_DEVICES); [] without CUDA."""
    try:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        count = 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [v.strip() for v in visible.split(",") if v.strip()] if visible else [str(i) for i in range(count)]
    return ids[:count]


def check_workers(workers: int) -> None:
    """Refuse more worker processes than this machine's CPU cores or GPUs, whichever is more: each
    is a whole torch process (about 700 MB on a CPU), more CPU workers than cores only take turns,
    and the GPU rule is one worker per GPU (several share a GPU round robin up to the cores)."""
    if workers < 1:
        raise UsageError(f"--workers {workers}: must be at least 1")
    cores = cpu_cores()
    if workers > cores:
        gpus = gpu_ids()
        if workers <= len(gpus):
            return
        raise UsageError(
            f"--workers {workers}: this machine has {cores} CPU core(s)"
            + (f" and {len(gpus)} GPU(s)" if gpus else " and no GPU")
            + f", and each worker is a whole training process; use --workers {max(cores, len(gpus))} "
            "or fewer"
        )


def workers_for(workers: int, trials_left: int) -> int:
    """The worker processes worth starting: no more than the trials left to train (at least one,
    which finds the study done and stops)."""
    return max(1, min(workers, trials_left))


def worker_resources(index: int, workers: int, *, cores: int | None = None, gpus: list[str] | None = None) -> dict:
    """What worker ``index`` of ``workers`` may use: ``{"threads": n, "cuda_visible_devices": id | None}``.
    With GPUs worker i sees only GPU i (round robin when there are more workers than GPUs; one
    torch thread each feeds its GPU); without, the cores are shared out (at least one thread)."""
    cores = cpu_cores() if cores is None else cores
    gpus = gpu_ids() if gpus is None else gpus
    threads = max(1, cores // workers)
    if gpus:
        return {"threads": threads, "cuda_visible_devices": gpus[index % len(gpus)]}
    return {"threads": threads, "cuda_visible_devices": None}


# ----------------------------------------------------------------------------- processes


def _worker_main(index: int, workers: int, resources: dict, target: Callable, kwargs: dict, errors) -> None:
    """A worker process: its share of the machine, then ``target(**kwargs)`` (the search loop)."""
    if resources["cuda_visible_devices"] is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = resources["cuda_visible_devices"]
    os.environ["FUNNELBENCH_WORKER"] = f"{index}/{workers}"
    import torch

    torch.set_num_threads(resources["threads"])
    code = 0
    with signals_interrupt():
        try:
            target(**kwargs)
        except Interrupted as stop:
            code = stop.exit_code
        except KeyboardInterrupt:
            code = 130
        except FunnelbenchError as err:
            errors.put(str(err))
            code = 2
        except storage_errors() as err:
            errors.put(
                f"storage: {one_line(err)}; the study keeps every finished trial: re-run the command to continue"
            )
            code = 2
        except Exception as err:  # noqa: BLE001 - a bug or unknown trouble: one line in the parent (exit 1)
            if os.environ.get("FUNNELBENCH_DEBUG", "") not in ("", "0"):
                import traceback

                traceback.print_exc()
            errors.put(f"{UNEXPECTED}{type(err).__name__}: {one_line(err)}")
            code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # no atexit handlers of a half-torn-down torch


def run_workers(workers: int, target: Callable, kwargs: dict) -> list[str]:
    """Run ``target(**kwargs)`` in ``workers`` processes and wait for all of them.

    ``target`` must be a module-level function (each process imports it by name). SIGINT and
    SIGTERM to this process reach every worker; once they have stopped, :class:`Interrupted` is
    raised here (exit code 130 / 143). A worker's one-line error is raised here as a
    :class:`FunnelbenchError` (once, however many workers had it). Returns one line per worker
    that died otherwise (killed, crashed): the caller judges from the study whether the others
    finished its work (a dead worker's trial is retried by the live ones)."""
    ctx = multiprocessing.get_context("spawn")
    errors = ctx.SimpleQueue()  # written at once (a Queue's feeder thread may not outlive os._exit)
    procs = [
        ctx.Process(
            target=_worker_main,
            name=f"funnelbench-worker-{i}",
            args=(i, workers, worker_resources(i, workers), target, kwargs, errors),
        )
        for i in range(workers)
    ]
    received: list[int] = []

    def forward(signum, frame):
        if signum not in received:
            received.append(signum)
        for p in procs:
            if p.pid is not None and p.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signum)

    before = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for p in procs:
            p.start()
        for p in procs:
            while p.exitcode is None:
                p.join(timeout=0.5)
    finally:
        for s, h in before.items():
            signal.signal(s, h)
    messages = []
    while not errors.empty():
        messages.append(errors.get())
    if received:
        raise Interrupted(received[0])
    if messages:
        if messages[0].startswith(UNEXPECTED):
            raise WorkerCrashed(messages[0][len(UNEXPECTED) :])
        raise (StorageError if messages[0].startswith("storage") else FunnelbenchError)(messages[0])
    return [f"worker {i} (pid {p.pid}) {_describe_exit(p.exitcode)}" for i, p in enumerate(procs) if p.exitcode != 0]


UNEXPECTED = "unexpected: "  # a worker's message about an exception that is not the user's


class WorkerCrashed(RuntimeError):
    """A worker process ended with an exception funnelbench did not expect (the CLI: one line, exit 1)."""


def _describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"ended with exit code {code}"


# ----------------------------------------------------------------------------- the search in N processes


def search_in_workers(
    study: optuna.Study,
    workers: int,
    plan: SearchPlan,
    *,
    warm: Callable[[], object] | None,
    start: dict,
    on_event=None,
    worker_events=None,
) -> optuna.Study:
    """The parent process of ``funnelbench search --workers N``: the study is created (and its
    baselines queued) before this, once; the data cache is built here, once, so every worker
    maps the same bytes; then N processes run the single-process search (:func:`search_worker`)
    of ``plan`` on the shared storage. Returns the study when every worker stopped."""
    emit = on_event or (lambda kind, info: None)
    url = url_of(study._storage)
    emit("start", {**start, "counts": counts(study), "storage": redact(url), "workers": workers})
    if warm is not None:
        warm()  # the data, loaded once here and dropped: the workers find it in the cache
    plan = dataclasses.replace(plan, url=url)
    lost = run_workers(workers, search_worker, {"plan": plan, "events": worker_events})
    c = counts(study)
    if lost:
        emit("workers_lost", {"lines": lost})
        if c["trained"] < plan.trials:
            raise WorkersLost(
                f"{'; '.join(lost)}: the study holds {c['trained']} of {plan.trials} trained trials "
                f"(every finished one is kept); re-run the command to continue"
            )
    emit("end", {"counts": c, "study": study})
    return study


class WorkersLost(FunnelbenchError):
    """Worker processes ended (killed, crashed) before the study held its trials."""


def search_worker(plan: SearchPlan, events) -> None:
    """One worker process: the study of ``plan`` opened from its URL, the trials its dead
    predecessors left running failed and queued, then the single-process search on it."""
    quiet_optuna()
    study = load_search_study(plan.settings, study_name=plan.study, url=plan.url, heartbeat_s=plan.heartbeat_s)
    with study_lock(study):
        stale = recover_stale(study)
    search_here(
        dataclasses.replace(plan, storage=plan.url),
        study,
        created=False,
        stale=stale,
        on_event=events() if events is not None else None,
    )


__all__ = [
    "cpu_cores",
    "gpu_ids",
    "check_workers",
    "workers_for",
    "worker_resources",
    "run_workers",
    "WorkerCrashed",
    "WorkersLost",
    "search_in_workers",
    "search_worker",
    "UNEXPECTED",
    # re-exported
    "JournalHeartbeatStorage",
    "repair_torn_tail",
    "POLL_S",
    "claim_layout",
    "fail_stale_trials",
    "requeue",
    "retried_from",
    "sole_search",
    "storage_lock",
    "study_lock",
    "Worker",
    "release_memory",
    "raise_if_signalled",
    "Interrupted",
    "signals_interrupt",
    "HEARTBEAT_S",
    "MAX_RETRY",
    "STALE_HEARTBEATS",
    "check_sqlite",
    "is_shared",
    "open_storage",
    "storage_file",
    "storage_url",
    "url_of",
    "JOURNAL_FILE",
    "StorageError",
    "storage_errors",
    "one_line",
]
