"""The trial accounting: which trials count towards ``--trials`` and a study's trials by
outcome (trained, completed, pruned, rejected, skipped, failed, repeats, running, waiting).

The loop, the worker processes and the report all count with these two functions.
"""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from .vocabulary import COUNT_KEYS, FAILED, REJECTED, SKIPPED, TRAINED


def counts(study: optuna.Study) -> dict:
    """Trials by outcome: trained (what --trials counts), completed, pruned, rejected, failed, repeats."""
    c = dict.fromkeys(COUNT_KEYS, 0)
    for t in study.get_trials(deepcopy=False):
        status = t.user_attrs.get("status")
        if t.state == TrialState.WAITING:
            c["waiting"] += 1
        elif t.state == TrialState.RUNNING:
            c["running"] += 1
        elif t.user_attrs.get("duplicate_of") is not None:
            c["repeats"] += 1
        elif status in (REJECTED, SKIPPED):
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
    return (
        t.user_attrs.get("duplicate_of") is None
        and t.user_attrs.get("status") in TRAINED
        and t.state != TrialState.RUNNING
    )


__all__ = ["counts", "is_trained"]
