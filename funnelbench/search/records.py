"""A study's trials as flat records: the search's settings as stored, one record per trial
(state, status, target layout and counts, proxy metrics, budget excess, error, the space's
decisions as ``param_<name>``), the trials best first, the best trial or Pareto front, and the
counts by outcome in words, and the budgets in words (:func:`budget_text`).

Results floor: it only reads a study (:mod:`.readonly` opens one), and a study another program
wrote or edited may hold any JSON under any name: a value of the wrong kind reads as missing,
never as a crash.
"""

from __future__ import annotations

import math
from collections import Counter

from ..tables import human
from .accounting import counts as search_counts
from .accounting import is_trained as search_is_trained
from .asha import answer, rung_of
from .vocabulary import FAILED, STATUS_OF_STATE

# Trial attributes copied into a record, in this order (units in the names; top1/top5 in %).
TRIAL_COLUMNS = (
    "target_layout",
    "params",
    "macs",
    "flops",
    "top1",
    "top5",
    "val_loss",
    "test_top1",
    "epochs_done",
    "train_img_per_s",
    "infer_img_per_s",
    "train_mem_est_bytes",
    "wall_s",
    "epochs_trained",
    "image_epochs",
    "rung",
    "promoted_from",
)
EXTRA_COLUMNS = ("proxy_layout", "proxy_params", "proxy_macs", "run_dir")
TEXT_ATTRS = ("target_layout", "proxy_layout", "run_dir")  # the other columns are numbers
PARAM_PREFIX = "param_"  # search-space decisions: param_stage0_layers, ... (``params`` is the count)


def budget_text(budgets: dict) -> str:
    """A study's budgets (``settings_of(study)["budgets"]``, as stored) in words, as ``funnelbench
    report`` heads its table: '1.26 GMACs (= 2.52 GFLOPs as 2 x MACs); 22.00 M params', or 'none'."""
    parts = []
    if budgets.get("macs"):
        parts.append(f"{budgets['macs'] / 1e9:.2f} GMACs (= {2 * budgets['macs'] / 1e9:.2f} GFLOPs as 2 x MACs)")
    if budgets.get("min_macs"):
        parts.append(f"at least {budgets['min_macs'] / 1e9:.2f} GMACs")
    if budgets.get("params"):
        parts.append(f"{human(budgets['params'])} params")
    if budgets.get("memory_bytes"):
        parts.append(
            f"{budgets['memory_bytes'] / 2**30:.1f} GiB training memory at batch {budgets.get('memory_batch')} "
            f"({budgets.get('memory_device')}, {budgets.get('memory_dtype')})"
        )
    return "; ".join(parts) or "none"


def settings_of(study) -> dict:
    """The search's settings (space, budgets, objectives, ...) with the objectives and
    directions filled in from Optuna when absent."""
    stored = study.user_attrs.get("settings")
    settings = dict(stored) if isinstance(stored, dict) else {}
    objectives = settings.get("objectives")
    if not (
        isinstance(objectives, list)
        and len(objectives) == len(study.directions)
        and all(isinstance(o, str) for o in objectives)
    ):
        settings["objectives"] = (
            ["top1"] if len(study.directions) == 1 else [f"value{i}" for i in range(len(study.directions))]
        )
    settings["directions"] = [d.name.lower() for d in study.directions]  # Optuna's own, always right
    budgets = settings.get("budgets") if isinstance(settings.get("budgets"), dict) else {}
    settings["budgets"] = {
        k: (as_text if k in ("memory_device", "memory_dtype") else as_number)(v) for k, v in budgets.items()
    }
    for key, kind in (("baselines", list), ("proxy", dict)):
        if not isinstance(settings.get(key), kind):
            settings[key] = kind()
    return settings


# Reading a study attribute by attribute: a study another program wrote (or edited) may hold any
# JSON under any name; a value of the wrong kind reads as missing, never as a crash.


def as_number(value):
    """A finite int or float, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def as_text(value):
    return value if isinstance(value, str) else None


def _over(value) -> dict | None:
    """The ``over_budget`` attribute: {budget name: excess as a number}, or None."""
    if not isinstance(value, dict):
        return None
    return {str(k): v for k, v in value.items() if as_number(v) is not None}


def status_of(trial) -> str:
    """The funnelbench status of a trial: its attribute, or what its Optuna state implies;
    ``repeat`` for a candidate whose layout had already been trained (the search copied that
    trial's result instead of training it twice: ``repeat_of`` names it)."""
    status = as_text(trial.user_attrs.get("status"))
    if trial.state.name in ("RUNNING", "WAITING"):
        return STATUS_OF_STATE[trial.state.name]
    if trial.user_attrs.get("duplicate_of") is not None:
        return "repeat"
    return status or STATUS_OF_STATE.get(trial.state.name, trial.state.name.lower())


def _feasible(trial) -> bool:
    """Optuna's rule: feasible when every constraint value is <= 0 (no constraints: feasible)."""
    return all(v <= 0 for v in trial.constraints.values())


def _over_budget_text(over: dict | None) -> str | None:
    """{"macs": 0.123} -> 'macs +12.3%'; {} -> '' (within every budget); None when unknown."""
    if over is None:
        return None
    return ", ".join(f"{name} {100 * float(x):+.1f}%" for name, x in sorted(over.items()))


def final_value(trial, index: int = 0):
    """The trial's value for objective ``index`` if it was trained to the end, else None (a
    rejected trial is COMPLETE in Optuna, with values that mean nothing)."""
    if trial.state.name != "COMPLETE" or status_of(trial) != "completed" or trial.values is None:
        return None
    return trial.values[index]


def trial_record(trial) -> dict:
    """One flat record of a trial: number, Optuna state, funnelbench status, baseline mark, the
    target layout with its counts and proxy metrics, budget excess, error, and every decision
    of the space as ``param_<name>``."""
    a = trial.user_attrs
    record = {
        "trial": trial.number,
        "state": trial.state.name,
        "status": status_of(trial),
        "baseline": a.get("baseline") is True,
    }
    record.update({k: (as_text if k in TEXT_ATTRS else as_number)(a.get(k)) for k in TRIAL_COLUMNS})
    record["repeat_of"] = as_number(a.get("duplicate_of"))
    record["feasible"] = _feasible(trial)
    record["over_budget"] = _over_budget_text(_over(a.get("over_budget")))
    record["error"] = as_text(a.get("error"))
    record.update({k: (as_text if k in TEXT_ATTRS else as_number)(a.get(k)) for k in EXTRA_COLUMNS})
    record.update({PARAM_PREFIX + k: v for k, v in trial.params.items()})
    return record


def sorted_trials(study) -> list:
    """Every trial, best first by the first objective (with --fidelity asha, the highest rung
    first: a value at a lower fidelity is another measurement); trials without a value (pruned,
    rejected, failed, running) after them by number."""
    maximize = study.directions[0].name == "MAXIMIZE"
    trials = study.get_trials(deepcopy=False)
    scored = [t for t in trials if final_value(t) is not None]
    scored.sort(key=lambda t: (-(rung_of(t) or 0), -final_value(t) if maximize else final_value(t), t.number))
    return scored + [t for t in trials if final_value(t) is None]


def trial_records(study) -> list[dict]:
    """Flat records of every trial, sorted as :func:`sorted_trials`. Records have the union of
    every trial's ``param_*`` columns (None where a trial lacks a decision)."""
    records = [trial_record(t) for t in sorted_trials(study)]
    params = sorted({k for r in records for k in r if k.startswith(PARAM_PREFIX)})
    return [
        {**{k: v for k, v in r.items() if not k.startswith(PARAM_PREFIX)}, **{p: r.get(p) for p in params}}
        for r in records
    ]


def front_trials(study) -> list:
    """The best trial (one objective) or the Pareto front (several), from feasible trials only
    (every constraint <= 0: never a rejected candidate or a baseline over budget), best first by
    the first objective. Optuna's ``study.best_trials`` decides; trials not trained to the end
    are left out. With --fidelity asha: :func:`.asha.answer`, the best at the highest rung reached."""
    trials = study.get_trials(deepcopy=False)
    if any(rung_of(t) is not None for t in trials):
        best = answer(trials, study.directions[0].name == "MAXIMIZE")
        return [] if best is None else [best]
    front = [t for t in study.best_trials if final_value(t) is not None]
    maximize = study.directions[0].name == "MAXIMIZE"
    return sorted(front, key=lambda t: (-final_value(t) if maximize else final_value(t), t.number))


def state_counts(study) -> dict:
    """The search's own counts (:func:`funnelbench.search.accounting.counts`: ``trained`` is what
    ``--trials`` counts, i.e. completed, pruned and failed trainings, never a repeat), plus the
    trials in all, the baselines trained to the end, which budget rejected how many, and the
    failures by status and error."""
    trials = study.get_trials(deepcopy=False)
    rejected_by = Counter(
        name
        for t in trials
        if status_of(t) == "rejected"
        for name in (_over(t.user_attrs.get("over_budget")) or {"unknown budget": None})
    )
    failures = Counter(
        (status_of(t), as_text(t.user_attrs.get("error")) or "") for t in trials if status_of(t) in FAILED
    )
    return {
        "trials": len(trials),
        **search_counts(study),
        "baselines": sum(1 for t in trials if t.user_attrs.get("baseline") is True and status_of(t) == "completed"),
        "by_rung": trainings_by_rung(study),
        "image_epochs": sum(
            as_number(t.user_attrs.get("image_epochs")) or 0 for t in trials if t.user_attrs.get("duplicate_of") is None
        ),
        "rejected_by": dict(sorted(rejected_by.items())),
        "failures": [{"status": s, "error": e or None, "trials": n} for (s, e), n in failures.most_common()],
    }


def trainings_by_rung(study) -> dict:
    """--fidelity asha: {epochs of the rung: trainings that trained to it}, lowest rung first
    (trainings: what --trials counts; baselines at the top rung); {} without rungs."""
    settings = settings_of(study)
    fidelity = settings.get("fidelity") if isinstance(settings.get("fidelity"), dict) else {}
    epochs = fidelity.get("rungs") if isinstance(fidelity.get("rungs"), list) else []
    out: dict = {}
    for t in study.get_trials(deepcopy=False):
        rung = rung_of(t)
        if rung is None or not search_is_trained(t):
            continue
        key = epochs[rung] if 0 <= rung < len(epochs) else f"rung {rung}"
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: (isinstance(kv[0], str), kv[0])))


def rung_text(by_rung: dict) -> str:
    """{1: 12, 3: 4, 9: 1} -> '12 of 1 epoch, 4 of 3 epochs, 1 of 9 epochs'."""
    return ", ".join(
        f"{n} of {e} epoch{'' if e == 1 else 's'}" if isinstance(e, int) else f"{n} at {e}" for e, n in by_rung.items()
    )


def counts_line(counts: dict) -> str:
    """'42 trials: 31 trained (24 completed, 6 pruned, 1 failed; 2 baselines), 11 rejected by the
    budget (macs 11)'."""
    inner = [f"{counts['completed']} completed"] + [f"{counts[k]} {k}" for k in ("pruned", "failed") if counts[k]]
    trained = f"{counts['trained']} trained ({', '.join(inner)}" + (
        f"; {counts['baselines']} baselines)" if counts["baselines"] else ")"
    )
    parts = [trained]
    if counts["rejected"]:
        by = ", ".join(f"{k} {n}" for k, n in counts["rejected_by"].items())
        parts.append(f"{counts['rejected']} rejected by the budget ({by})")
    if counts["repeats"]:
        parts.append(f"{counts['repeats']} repeat{'s' if counts['repeats'] != 1 else ''} of a trained layout")
    for key in ("running", "waiting"):
        if counts[key]:
            parts.append(f"{counts[key]} {key}")
    if counts.get("by_rung"):
        parts.append(f"trainings by rung: {rung_text(counts['by_rung'])}")
    if counts.get("image_epochs"):
        parts.append(f"compute {human(counts['image_epochs'])} image-epochs")
    return f"{counts['trials']} trials: " + ", ".join(parts)


__all__ = [
    "settings_of",
    "as_number",
    "as_text",
    "status_of",
    "final_value",
    "trial_record",
    "sorted_trials",
    "trial_records",
    "front_trials",
    "state_counts",
    "trainings_by_rung",
    "rung_text",
    "counts_line",
    "TRIAL_COLUMNS",
    "EXTRA_COLUMNS",
    "TEXT_ATTRS",
    "PARAM_PREFIX",
]
