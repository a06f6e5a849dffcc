"""The pruners, with epochs as steps: Optuna's median pruner counted in trained trials, and
Hyperband from one epoch to the whole schedule.
"""

from __future__ import annotations

import math

import optuna
from optuna.trial import TrialState

# The median pruner is the default from this many epochs on. Below it, pruning buys little and costs
# candidates: in the committed search-reinvest-ti study (4 epochs, results/search-reinvest-ti.csv)
# it stopped 13 of 40 trainings, which saved 12 of 160 epochs (7.5 %) and took those 13 (a third)
# out of the pick.
MEDIAN_MIN_EPOCHS = 8
HYPERBAND_FACTOR = 3
HYPERBAND_MIN_BRACKETS = 3  # rungs at 1, 3, 9 epochs: a schedule of 9 epochs or more


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
        trained = sum(
            1 for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.intermediate_values
        )
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
    rungs, not Hyperband: refused (:class:`.settings.Settings`)."""
    if name == "median":
        first = max(min(2, max(1, epochs)), epochs // 2 + 1)
        return TrainedMedianPruner(n_startup_trials=5, n_warmup_steps=first, interval_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=HYPERBAND_FACTOR)
    return optuna.pruners.NopPruner()


def hyperband_brackets(epochs: int) -> int:
    """Optuna's bracket count for min_resource 1, max_resource ``epochs``, reduction factor 3."""
    return int(math.floor(math.log(max(1, epochs), HYPERBAND_FACTOR) + 1e-9)) + 1


__all__ = [
    "TrainedMedianPruner",
    "make_pruner",
    "hyperband_brackets",
    "MEDIAN_MIN_EPOCHS",
    "HYPERBAND_FACTOR",
    "HYPERBAND_MIN_BRACKETS",
]
