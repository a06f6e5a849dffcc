"""Asynchronous successive halving (ASHA: Li et al., MLSys 2020, Algorithm 2), ``--fidelity asha``.

The rules are pure functions, used both by the live search and by the benchmark that replays
stored epoch curves (so the benchmark measures the tool's rule, not a copy of it):

* :func:`rungs` -- the epochs of each rung: R, R*ETA, R*ETA^2, ... up to E, and E itself as the
  last rung when it is not one of them (R=1, ETA=3, E=9: 1, 3, 9; E=10: 1, 3, 9, 10).
* :func:`promotable` -- the trial to promote, or None: from the highest rung below the top down
  to rung 0, the best trial of rung k that is in the top floor(n_k / ETA) of the n_k trainings
  completed at rung k and not yet promoted. None: the worker starts a new candidate at rung 0.
* :func:`unpromotable` -- the trials that can never be promoted any more (their checkpoints may
  go): every one at the top rung, and those ranked too low even if every training still left
  in the budget finished at their rung.

:func:`answer` is the search's answer (the best at the highest rung reached) and :func:`spent`
the checkpoints a search removes as it goes. :func:`simulate` replays ASHA with one worker on
stored epoch curves (``benchmarks/table_searchers.py``) by the same :func:`promotable`.

On a study, a rung-k training is one Optuna trial with the user attributes ``rung`` (k) and,
above rung 0, ``promoted_from`` (the trial whose checkpoint it continues). :func:`rung_table`
reads a study's trials into the rules' input, :func:`promote` queues a promotion (the caller
holds the study's lock, so that a promotion is claimed once however many workers ask), and
:func:`model_rung` is the rung whose trials a model sampler learns from (as BOHB: the highest
rung with enough completed trainings for the start-up, else rung 0).

Floor of the words: it imports only :mod:`.vocabulary` and Optuna.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable

from optuna.trial import TrialState

from ..errors import UsageError
from .vocabulary import PROMOTED_FROM, RETRY_OF, RUNG, TRAINED

ASHA_REDUCTION = 3  # --reduction's default: the best third of each rung is promoted
ASHA_MIN_EPOCHS = 1  # --min-epochs' default


def rungs(min_epochs: int, max_epochs: int, eta: int) -> tuple[int, ...]:
    """The epochs a training of each rung reaches: ``min_epochs * eta**k`` while at most
    ``max_epochs``, then ``max_epochs`` itself if it is not one of them. Refused in one line:
    max below min, a reduction below 2, fewer than 2 rungs."""
    for name, value in (("--min-epochs", min_epochs), ("--max-epochs", max_epochs), ("--reduction", eta)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise UsageError(f"{name} {value}: expected an integer")
    if min_epochs < 1:
        raise UsageError(f"--min-epochs {min_epochs}: must be at least 1")
    if max_epochs < min_epochs:
        raise UsageError(f"--max-epochs {max_epochs}: is below --min-epochs {min_epochs}; give a larger maximum")
    if eta < 2:
        raise UsageError(f"--reduction {eta}: must be at least 2 (3 keeps the best third at each rung)")
    out, epochs = [], min_epochs
    while epochs <= max_epochs:
        out.append(epochs)
        epochs *= eta
    if out[-1] != max_epochs:
        out.append(max_epochs)
    if len(out) < 2:
        raise UsageError(
            f"--min-epochs {min_epochs} --max-epochs {max_epochs}: one rung, nothing to promote; "
            f"give --max-epochs above --min-epochs (e.g. {min_epochs * eta})"
        )
    return tuple(out)


def _ranked(values: list[tuple[Hashable, float]], maximize: bool) -> list[Hashable]:
    """Ids best first (ties: in the order given, i.e. the older trial first)."""
    return [i for i, _ in sorted(values, key=lambda iv: -iv[1] if maximize else iv[1])]


def promotable(
    rung_values: dict[int, list[tuple[Hashable, float]]],
    eta: int,
    promoted: set,
    *,
    top: int,
    maximize: bool = True,
) -> Hashable | None:
    """ASHA's get_job: the id to promote from rung k to k+1, or None (start a new candidate).

    ``rung_values``: rung index -> (id, value) of every training completed at that rung;
    ``promoted``: the ids already promoted (a promotion is made once); ``top``: the index of the
    last rung (nothing is promoted from it). From rung ``top - 1`` down to 0, the first id in the
    best floor(n_k / eta) of rung k that is not in ``promoted``."""
    for k in sorted((k for k in rung_values if k < top), reverse=True):
        ranked = _ranked(rung_values[k], maximize)
        for i in ranked[: len(ranked) // eta]:
            if i not in promoted:
                return i
    return None


def unpromotable(
    rung_values: dict[int, list[tuple[Hashable, float]]],
    eta: int,
    promoted: set,
    *,
    top: int,
    remaining: int,
    maximize: bool = True,
) -> set:
    """The ids that no future promotion can choose: those at the top rung, and those not yet
    promoted whose rank r (0 = best) at rung k is at least floor((n_k + remaining) / eta): even
    if all ``remaining`` trainings left in the budget completed at rung k, r would be outside the
    best floor(n / eta) (more trainings at a rung only push a trial down)."""
    out = set()
    for k, values in rung_values.items():
        if k >= top:
            out.update(i for i, _ in values)
            continue
        ranked = _ranked(values, maximize)
        cap = (len(ranked) + max(0, remaining)) // eta
        out.update(i for i in ranked[cap:] if i not in promoted)
    return out


def simulate(
    draw: Callable[[], Hashable],
    curve: Callable[[Hashable], list[float]],
    *,
    epochs: tuple[int, ...],
    eta: int,
    trainings: int,
    maximize: bool = True,
    resumes_at: tuple[int, ...] | None = None,
) -> list[dict]:
    """ASHA replayed on stored epoch curves with one worker (the tabular benchmark): the same
    :func:`promotable` as the live search, every training a lookup. ``draw()`` is a new
    candidate (its key), ``curve(key)`` its value after each epoch (at least ``epochs[-1]`` of
    them; a prefix of the run is read as the shorter run, exact for a learning rate that does not
    depend on the run's length). ``resumes_at[k]``: the epochs of the checkpoint a promotion from
    rung k continues (default: the rung's own; under the wsd schedule its stable point, before
    the rung's decay, so the promotion trains again from there). Returns ``trainings`` trainings
    in order: ``{"key", "rung", "epochs", "epochs_trained", "value", "promoted_from"}``
    (``promoted_from``: the index of the training it continues)."""
    resumes_at = epochs if resumes_at is None else resumes_at
    done: list[dict] = []
    table: dict[int, list[tuple[int, float]]] = {}
    promoted: set[int] = set()
    while len(done) < trainings:
        parent = promotable(table, eta, promoted, top=len(epochs) - 1, maximize=maximize)
        if parent is None:
            key, rung, before = draw(), 0, 0
        else:
            promoted.add(parent)
            key, rung, before = done[parent]["key"], done[parent]["rung"] + 1, resumes_at[done[parent]["rung"]]
        value = curve(key)[epochs[rung] - 1]
        table.setdefault(rung, []).append((len(done), value))
        done.append(
            {
                "key": key,
                "rung": rung,
                "epochs": epochs[rung],
                "epochs_trained": epochs[rung] - before,
                "value": value,
                "promoted_from": parent,
            }
        )
    return done


# ----------------------------------------------------------------------------- on a study


def rung_of(trial) -> int | None:
    """A trial's rung (None: the study does not use --fidelity asha)."""
    rung = trial.user_attrs.get(RUNG)
    return rung if isinstance(rung, int) and not isinstance(rung, bool) else None


def counts_at_rung(trial) -> bool:
    """Whether a trial is a training completed at its rung: completed (not rejected, failed or a
    repeat of a trained layout) and not a baseline (baselines train at the top rung, as the
    reference, outside the promotion ladder)."""
    a = trial.user_attrs
    return (
        trial.state == TrialState.COMPLETE
        and a.get("status") == "completed"
        and a.get("duplicate_of") is None
        and not a.get("baseline")
        and rung_of(trial) is not None
        and trial.values is not None
    )


def rung_table(trials: Iterable) -> tuple[dict[int, list[tuple[int, float]]], set[int]]:
    """(rung index -> [(trial number, first objective value)] of the trainings completed there,
    the numbers of the trials already promoted: named by any trial's ``promoted_from``, whatever
    its state: waiting, running, failed or done)."""
    table: dict[int, list[tuple[int, float]]] = {}
    promoted: set[int] = set()
    for t in trials:
        parent = t.user_attrs.get(PROMOTED_FROM)
        if parent is not None:
            promoted.add(parent)
        if counts_at_rung(t):
            table.setdefault(rung_of(t), []).append((t.number, t.values[0]))
    return table, promoted


def promote(study, epochs: tuple[int, ...], eta: int) -> int | None:
    """Under the study's lock (the caller holds it): when no trial is waiting in the queue (the
    baselines and retries go first), queue the promotion :func:`promotable` finds, with its
    parent's parameters and the attributes ``rung`` and ``promoted_from``; the next ``ask`` of
    this lock hold takes it. Returns the parent's number, or None (a new candidate at rung 0)."""
    trials = study.get_trials(deepcopy=False)
    if any(t.state == TrialState.WAITING for t in trials):
        return None
    table, promoted = rung_table(trials)
    maximize = study.directions[0].name == "MAXIMIZE"
    parent = promotable(table, eta, promoted, top=len(epochs) - 1, maximize=maximize)
    if parent is None:
        return None
    source = next(t for t in trials if t.number == parent)
    study.enqueue_trial(dict(source.params), user_attrs={RUNG: rung_of(source) + 1, PROMOTED_FROM: parent})
    return parent


def _completed(t) -> bool:
    """Trained to the end of its rung (baselines included), feasible (every constraint <= 0)."""
    a = t.user_attrs
    return (
        t.state == TrialState.COMPLETE
        and a.get("status") == "completed"
        and a.get("duplicate_of") is None
        and rung_of(t) is not None
        and t.values is not None
        and all(v <= 0 for v in t.constraints.values())
    )


def answer(trials: Iterable, maximize: bool = True):
    """The search's answer with --fidelity asha: the best feasible trial trained to the end of
    the highest rung any feasible trial reached (a value at a lower fidelity never beats one at
    a higher: it is a different measurement), ties to the older trial; None without rungs."""
    done = [t for t in trials if _completed(t)]
    if not done:
        return None
    top = max(rung_of(t) for t in done)
    at_top = [t for t in done if rung_of(t) == top]
    return sorted(at_top, key=lambda t: (-t.values[0] if maximize else t.values[0], t.number))[0]


def spent(
    trials: Iterable, n_rungs: int, eta: int, *, remaining: int, final: bool = False, maximize: bool = True
) -> set[int]:
    """The trial numbers whose checkpoints no promotion or retry will read any more: the
    :func:`unpromotable` ones, completed baselines (they train at the top rung), trials whose
    promotion or retry trained (it copied the checkpoint first), and with ``final`` (the search
    is over) every finished trial; never the :func:`answer` (its checkpoint is the search's
    result, to fine-tune or train on from)."""
    trials = list(trials)
    table, promoted = rung_table(trials)
    out = unpromotable(table, eta, promoted, top=n_rungs - 1, remaining=remaining, maximize=maximize)
    for t in trials:
        a = t.user_attrs
        if a.get("baseline") and a.get("status") == "completed":
            out.add(t.number)
        if t.state.is_finished() and a.get("status") in TRAINED and a.get("duplicate_of") is None:
            out.update(n for n in (a.get(PROMOTED_FROM), a.get(RETRY_OF)) if n is not None)
        if final and t.state.is_finished():
            out.add(t.number)
    best = answer(trials, maximize)
    if best is not None:
        out.discard(best.number)
    return out


def model_rung(trials: Iterable, startup: int) -> int | None:
    """The rung a model sampler learns from (BOHB's rule): the highest rung with at least
    ``startup`` completed trainings, else rung 0; None when no trial has a rung (no asha)."""
    table, _ = rung_table(trials)
    if not table:
        return None
    enough = [k for k, values in table.items() if len(values) >= startup]
    return max(enough, default=0)


__all__ = [
    "ASHA_REDUCTION",
    "ASHA_MIN_EPOCHS",
    "rungs",
    "promotable",
    "unpromotable",
    "simulate",
    "rung_of",
    "counts_at_rung",
    "rung_table",
    "promote",
    "answer",
    "spent",
    "model_rung",
]
