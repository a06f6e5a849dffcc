"""What ``funnelbench report`` and ``funnelbench search`` show of a study, as plain JSON-ready
data: the report (settings, counts, trials, front, importances), its compact table, and the
search command's summary (counts, best trial or front, the report command to run next).
Results floor.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .accounting import counts
from .importances import param_importances
from .journal import JournalHeartbeatStorage
from .records import as_text, front_trials, settings_of, state_counts, trainings_by_rung, trial_records
from .storage import unwrap
from .vocabulary import SQLITE_FILE, TRIAL_KEYS

if TYPE_CHECKING:
    import optuna


def build_report(study, *, storage: str | None = None, importances: bool = True) -> dict:
    """Everything ``funnelbench report`` shows, as plain JSON-ready data (``storage``: where
    the study was read from, for the record)."""
    settings = settings_of(study)
    front = front_trials(study)
    records = trial_records(study)
    rows, note = param_importances(study) if importances else ([], None)
    return {
        "study": study.study_name,
        "storage": storage,
        "out": as_text(study.user_attrs.get("out")),
        "settings": settings,
        "objectives": settings["objectives"],
        "directions": settings["directions"],
        "counts": state_counts(study),
        "trials": records,
        "front_trials": [t.number for t in front],
        "front": [r for n in (t.number for t in front) for r in records if r["trial"] == n],
        "importances": rows,
        "importances_note": note,
    }


def _round(x, digits: int):
    return None if x is None else round(float(x), digits)


def trial_table(records: list[dict]) -> list[dict]:
    """Compact, rounded rows (M, G, MiB; units in the names): the terminal table and the
    ``.md``/``.tex`` exports. ``.csv``/``.json`` exports get the full records."""
    rows = []
    for r in records:
        row = {
            "trial": r["trial"],
            "target_layout": r["target_layout"],
            "baseline": "yes" if r["baseline"] else "",
            "params_m": _round(None if r["params"] is None else r["params"] / 1e6, 2),
            "gmacs": _round(None if r["macs"] is None else r["macs"] / 1e9, 3),
            "top1": _round(r["top1"], 2),
            "top5": _round(r["top5"], 2),
            "val_loss": _round(r["val_loss"], 4),
            "test_top1": _round(r.get("test_top1"), 2),  # read once at the end; never the objective
            "train_img_per_s": _round(r["train_img_per_s"], 1),
            "train_mem_est_mib": _round(
                None if r["train_mem_est_bytes"] is None else r["train_mem_est_bytes"] / 2**20, 1
            ),
            "epochs_done": r["epochs_done"],
            "status": r["status"],
            "over_budget": r["over_budget"] or "",
        }
        if any(x.get("rung") is not None for x in records):  # --fidelity asha
            row["rung"] = r.get("rung")
            row["promoted_from"] = r.get("promoted_from")
        if any(x.get("error") for x in records):
            row["error"] = r["error"] or ""
        rows.append(row)
    return rows


def best_rows(study: optuna.Study) -> list[dict]:
    """The best trial (one objective) or the Pareto front (several), as ``funnelbench report``
    reads it (:func:`.records.front_trials`: feasible trials trained to the end, never a
    repeat), best first."""
    return [
        {"number": t.number, **{k: t.user_attrs.get(k) for k in TRIAL_KEYS}, "values": t.values}
        for t in front_trials(study)
    ]


def summary(study: optuna.Study) -> dict:
    """What ``funnelbench search`` prints at its end (``--json``: as it is)."""
    settings = study.user_attrs.get("settings", {})
    out = study.user_attrs.get("out")
    storage = storage_text(study)
    return {
        "study": study.study_name,
        "storage": storage,
        "out": out,
        "settings": settings,
        "counts": counts(study),
        "by_rung": trainings_by_rung(study),  # --fidelity asha: {epochs of the rung: trainings}
        "best": best_rows(study),
        "report_command": report_command(study.study_name, storage, out),
    }


def storage_text(study: optuna.Study) -> str | None:
    """The study's storage as the summary names it: ``journal:PATH`` or the database URL."""
    storage = study._storage
    if isinstance(storage, JournalHeartbeatStorage):  # the journal file
        return f"journal:{storage.path}"
    inner = unwrap(storage)
    engine = getattr(inner, "engine", None)
    return str(engine.url) if engine is not None else None


def report_command(name: str, storage: str | None, out: str | None) -> str:
    default = out and storage == f"sqlite:///{(Path(out) / SQLITE_FILE).resolve()}"
    return f"funnelbench report --study {name}" + ("" if default or storage is None else f" --storage {storage}")


__all__ = ["build_report", "trial_table", "best_rows", "summary", "storage_text", "report_command"]
