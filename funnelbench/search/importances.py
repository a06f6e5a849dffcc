"""Which decisions of the space mattered: Optuna's PED-ANOVA parameter importances per
objective, over the trials trained to the end; with --fidelity asha over the trainings of one
rung (values after 1 and after 9 epochs are different measurements). Results floor.
"""

from __future__ import annotations

import warnings

from .asha import counts_at_rung, model_rung, rung_of
from .records import final_value, settings_of

MIN_IMPORTANCE_TRIALS = (
    10  # PED-ANOVA compares the best 10 % of the trials with all: below 10, one trial with a handful
)


def param_importances(study) -> tuple[list[dict], str | None]:
    """Which decisions mattered: Optuna's PED-ANOVA importances (deterministic, no extra
    packages) per objective, over the trials trained to the end. Returns rows
    ``{"objective", "param", "importance"}`` (each objective's importances sum to 1, largest
    first) and a note when they cannot be computed (too few trials, no decision varied). With
    --fidelity asha the trials are those completed at the highest rung with at least
    ``MIN_IMPORTANCE_TRIALS`` of them (else rung 0; BOHB's rule, :func:`.asha.model_rung`), and
    each row's objective names the rung."""
    import optuna
    from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances

    trained = [t for t in study.get_trials(deepcopy=False) if final_value(t) is not None]
    rung = model_rung(trained, MIN_IMPORTANCE_TRIALS)  # None: not --fidelity asha
    if rung is not None:
        trained = [t for t in trained if counts_at_rung(t) and rung_of(t) == rung]
    if len(trained) < MIN_IMPORTANCE_TRIALS:
        where = "" if rung is None else f" at one rung (rung {rung})"
        return [], (f"importances need at least {MIN_IMPORTANCE_TRIALS} trained trials{where}; {len(trained)} so far")
    if not any(t.params for t in trained):
        return [], "no trial has search-space decisions to rank"
    objectives = settings_of(study)["objectives"]
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        copy = optuna.create_study(directions=study.directions)  # in memory: the trained trials alone
        copy.add_trials(trained)
        rows = []
        for i, (name, direction) in enumerate(zip(objectives, study.directions)):
            sign = -1.0 if direction.name == "MAXIMIZE" else 1.0  # PED-ANOVA ranks low targets as good
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "target given", "same quantiles", experimental argument
                raw = get_param_importances(
                    copy,
                    evaluator=PedAnovaImportanceEvaluator(),
                    normalize=False,
                    target=lambda t, i=i, sign=sign: sign * t.values[i],
                )
            total = sum(raw.values())
            if total <= 0:
                continue
            rows += [
                {"objective": name if rung is None else f"{name} at rung {rung}", "param": p, "importance": v / total}
                for p, v in sorted(raw.items(), key=lambda kv: -kv[1])
            ]
    finally:
        optuna.logging.set_verbosity(verbosity)
    return rows, (None if rows else "no decision separates the best trials from the others")


__all__ = ["param_importances", "MIN_IMPORTANCE_TRIALS"]
