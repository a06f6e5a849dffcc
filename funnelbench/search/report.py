"""Reading a search study: its trials as flat records, the best trial or the Pareto front, counts
by state, parameter importances, and two plots (the trade-off and the best so far).

A study written by ``funnelbench search`` describes itself in Optuna's own user attributes
(tests/test_report.py lists and checks every documented one): the study holds ``funnelbench`` (the format
marker), ``settings`` (space, budgets, objectives, proxy options, baselines) and ``out``; every
trial holds its target layout, counts, metrics and ``status``. Everything here only reads:
SQLite files are opened read-only, so a report can run while workers are still writing.

    study = open_study("reinvest")                   # runs/search/reinvest/study.db or journal.log
    rep = build_report(study)                        # plain dict: settings, counts, trials, front, ...
    plot_tradeoff(rep, "pareto.png"); plot_history(rep, "history.png")
"""

from __future__ import annotations

import math
import re
import warnings
from collections import Counter
from io import BytesIO
from pathlib import Path

from ..errors import UsageError, redact
from ..exports import atomic_write, check_export_path
from .study import OBJECTIVE_ATTR, check_name

FORMAT = "search/1"  # the value of the study attribute "funnelbench"
DEFAULT_OUT_DIR = "runs/search"
SQLITE_NAME, JOURNAL_NAME = "study.db", "journal.log"
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
FIGURE_SUFFIXES = (".png", ".pdf", ".svg")

# Objective name (as in settings.objectives) -> the trial attribute (record column) it reads:
# the search's own table.
OBJECTIVE_COLUMNS = OBJECTIVE_ATTR
COSTS = ("macs", "params", "train_mem")  # objectives that are costs: the x axis of a trade-off plot
FAILED = ("failed", "diverged", "oom", "interrupted")
# The funnelbench status of a trial whose attributes do not say (e.g. still running), by Optuna state.
STATUS_OF_STATE = {"COMPLETE": "completed", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running",
                   "WAITING": "waiting"}
# Trial attributes copied into a record, in this order (units in the names; top1/top5 in %).
TRIAL_COLUMNS = ("target_layout", "params", "macs", "flops", "top1", "top5", "val_loss", "test_top1", "epochs_done",
                 "train_img_per_s", "infer_img_per_s", "train_mem_est_bytes", "wall_s")
EXTRA_COLUMNS = ("proxy_layout", "proxy_params", "proxy_macs", "run_dir")
TEXT_ATTRS = ("target_layout", "proxy_layout", "run_dir")  # the other columns are numbers
PARAM_PREFIX = "param_"  # search-space decisions: param_stage0_layers, ... (``params`` is the count)
MIN_IMPORTANCE_TRIALS = 10  # PED-ANOVA compares the best 10 % of the trials with all: below 10, one trial with a handful


# ----------------------------------------------------------------------------- opening a study

def default_storage(study_name: str, out_dir: str | Path = DEFAULT_OUT_DIR) -> str:
    """The storage ``funnelbench search`` used for ``study_name`` by default: the SQLite file
    ``<out_dir>/<study>/study.db`` or, with several workers, the journal ``journal.log`` there."""
    check_name(study_name, "--study", "give the name funnelbench search used, or --storage URL")
    folder = Path(out_dir) / study_name
    found = [p for p in (folder / SQLITE_NAME, folder / JOURNAL_NAME) if p.is_file()]
    if not found:
        raise UsageError(f"no study {study_name!r} under {str(out_dir)!r}: neither {str(folder / SQLITE_NAME)!r} nor "
                         f"{str(folder / JOURNAL_NAME)!r} exists; run funnelbench search first, or pass --out-dir or "
                         "--storage URL")
    if len(found) == 2:
        raise UsageError(f"{str(folder)!r} holds both {SQLITE_NAME} and {JOURNAL_NAME}; choose one with --storage "
                         f"sqlite:///{folder / SQLITE_NAME} or --storage {folder / JOURNAL_NAME}")
    return f"sqlite:///{found[0]}" if found[0].name == SQLITE_NAME else str(found[0])


def _readonly_storage(storage: str):
    """An Optuna storage that only reads ``storage``: a URL or the path of a SQLite file or of a
    journal file. Nothing is created or changed: a SQLite file is opened through a read-only file
    URI (its path escaped, so a ``%``, ``?`` or ``#`` in it is part of the file's name), a
    database server without creating Optuna's tables, and a file that does not exist is an error."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if storage.startswith("journal:"):  # how funnelbench search names a journal file
        storage = storage[len("journal:"):]
    if "://" not in storage:  # a file path
        path = Path(storage)
        if not path.is_file():
            raise UsageError(f"--storage {storage!r}: no such file; give a study.db, a journal.log or a storage URL")
        if path.suffix.lower() in SQLITE_SUFFIXES:
            return _readonly_sqlite(path)
        return JournalStorage(JournalFileBackend(str(path)))
    sqlite = re.fullmatch(r"sqlite(?:\+\w+)?:///(.+)", storage, re.DOTALL)
    if sqlite and not sqlite.group(1).startswith("file:"):  # the path as written (a '?' in it is no query)
        path = Path(sqlite.group(1))
        if not path.is_file():
            raise UsageError(f"--storage {redact(storage)!r}: no such file {str(path)!r}; give the study.db that "
                             "funnelbench search wrote")
        return _readonly_sqlite(path)
    if storage.startswith("sqlite") and not sqlite:
        raise UsageError(f"--storage {storage!r}: an in-memory SQLite database holds no study; give a study.db")
    return _readonly_rdb(storage, storage)  # a server (or a SQLite file URI as given)


def _readonly_sqlite(path: Path):
    """Optuna's RDB storage on the SQLite file ``path``, read-only (``mode=ro`` in a file URI)."""
    from urllib.parse import quote

    from sqlalchemy.engine import URL

    import sqlalchemy

    from .workers import damaged_sqlite

    url = URL.create("sqlite", database="file:" + quote(str(path.absolute())), query={"mode": "ro", "uri": "true"})
    storage = _readonly_rdb(url.render_as_string(hide_password=False), str(path))
    with storage.engine.connect() as conn:  # a damaged page may read as "no study": check every page first
        problems = [" ".join(str(row[0]).split()) for row in conn.execute(sqlalchemy.text("PRAGMA quick_check")).fetchmany(3)]
    if problems != ["ok"]:
        text = "; ".join(problems).replace("*** in database main ***", "").strip(" ;")
        raise UsageError(damaged_sqlite(f"sqlite:///{path}", str(path), text).replace(" and nothing was written to it", ""))
    return storage


# Optuna's RDB storage writes its version tables into a database that lacks them: read only one that has them.
OPTUNA_TABLES = ("studies", "trials", "version_info", "alembic_version")


def _readonly_rdb(url: str, given: str):
    """Optuna's RDB storage on ``url`` if the database already holds Optuna's tables (opening one
    that does not would create them), else a :class:`UsageError` naming ``given``."""
    import sqlalchemy
    from optuna.storages import RDBStorage

    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        tables = set(sqlalchemy.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    missing = [t for t in OPTUNA_TABLES if t not in tables]
    if missing:
        raise UsageError(f"cannot read the storage {redact(given)}: it is not an Optuna storage (no {', '.join(missing)} "
                         "table); give the study.db, journal.log or database that funnelbench search wrote")
    return RDBStorage(url, skip_table_creation=True)


def open_study(study_name: str, storage: str | None = None, out_dir: str | Path = DEFAULT_OUT_DIR):
    """Load a study written by ``funnelbench search`` (read-only).

    ``storage`` is an Optuna storage URL or a file path; by default it is found from the study's
    folder (:func:`default_storage`). A missing study, a study of another tool and a study with
    no trials are each a :class:`UsageError` with a one-line message (passwords redacted)."""
    import optuna
    import sqlalchemy.exc

    url = storage or default_storage(study_name, out_dir)
    shown = redact(url)
    try:
        opened = _readonly_storage(url)
        names = optuna.study.get_all_study_names(opened)
        if study_name not in names:
            held = ", ".join(repr(n) for n in names[:10]) or "no study"
            raise UsageError(f"no study {study_name!r} in {shown}: it holds {held}; pass one of those with --study")
        study = optuna.load_study(study_name=study_name, storage=opened)
        study.get_trials(deepcopy=False)  # everything is read here, so that a damaged file is one line here
        marker = study.user_attrs.get("funnelbench")
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError, OSError, ValueError,
            ImportError, RuntimeError) as err:
        if isinstance(err, UsageError):
            raise
        raise UsageError(_unreadable(url, err)) from None
    if marker is None:
        raise UsageError(f"study {study_name!r} in {shown} was not written by funnelbench search (it has no "
                         f"'funnelbench' study attribute); open it with optuna-dashboard {shown}")
    if marker != FORMAT:
        raise UsageError(f"study {study_name!r} is in the format {marker!r}, which this funnelbench does not know "
                         f"(it reads {FORMAT!r}); upgrade funnelbench")
    if not study.get_trials(deepcopy=False):
        raise UsageError(f"study {study_name!r} in {shown} has no trials yet; run funnelbench search --study "
                         f"{study_name} (or wait for its workers)")
    return study


def _unreadable(url: str, err: BaseException) -> str:
    """One line for a storage that cannot be read: a damaged journal says where and how to keep
    what comes before the damage; a damaged SQLite file how SQLite reads back what it can."""
    from .workers import _one_line, _redact, damaged_sqlite, journal_damage

    path = url[len("journal:"):] if url.startswith("journal:") else url if "://" not in url else None
    if path is not None and Path(path).suffix.lower() not in SQLITE_SUFFIXES and Path(path).is_file() \
            and isinstance(err, ValueError):
        return journal_damage(Path(path), err)
    text = _one_line(err)
    if "malformed" in text or "not a database" in text:
        return damaged_sqlite(url, path or url.split(":///", 1)[-1], text).replace(" and nothing was written to it", "")
    return f"cannot read the storage {_redact(url)}: {text}"


# ----------------------------------------------------------------------------- records

def settings_of(study) -> dict:
    """The search's settings (space, budgets, objectives, ...) with the objectives and
    directions filled in from Optuna when absent."""
    stored = study.user_attrs.get("settings")
    settings = dict(stored) if isinstance(stored, dict) else {}
    objectives = settings.get("objectives")
    if not (isinstance(objectives, list) and len(objectives) == len(study.directions)
            and all(isinstance(o, str) for o in objectives)):
        settings["objectives"] = (["top1"] if len(study.directions) == 1 else
                                  [f"value{i}" for i in range(len(study.directions))])
    settings["directions"] = [d.name.lower() for d in study.directions]  # Optuna's own, always right
    budgets = settings.get("budgets") if isinstance(settings.get("budgets"), dict) else {}
    settings["budgets"] = {k: (_text if k in ("memory_device", "memory_dtype") else _number)(v)
                           for k, v in budgets.items()}
    for key, kind in (("baselines", list), ("proxy", dict)):
        if not isinstance(settings.get(key), kind):
            settings[key] = kind()
    return settings


# Reading a study attribute by attribute: a study another program wrote (or edited) may hold any
# JSON under any name; a value of the wrong kind reads as missing, never as a crash.

def _number(value):
    """A finite int or float, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def _text(value):
    return value if isinstance(value, str) else None


def _over(value) -> dict | None:
    """The ``over_budget`` attribute: {budget name: excess as a number}, or None."""
    if not isinstance(value, dict):
        return None
    return {str(k): v for k, v in value.items() if _number(v) is not None}


def _status(trial) -> str:
    """The funnelbench status of a trial: its attribute, or what its Optuna state implies;
    ``repeat`` for a candidate whose layout had already been trained (the search copied that
    trial's result instead of training it twice: ``repeat_of`` names it)."""
    status = _text(trial.user_attrs.get("status"))
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


def _score(trial, index: int = 0):
    """The trial's value for objective ``index`` if it was trained to the end, else None (a
    rejected trial is COMPLETE in Optuna, with values that mean nothing)."""
    if trial.state.name != "COMPLETE" or _status(trial) != "completed" or trial.values is None:
        return None
    return trial.values[index]


def trial_record(trial) -> dict:
    """One flat record of a trial: number, Optuna state, funnelbench status, baseline mark, the
    target layout with its counts and proxy metrics, budget excess, error, and every decision
    of the space as ``param_<name>``."""
    a = trial.user_attrs
    record = {"trial": trial.number, "state": trial.state.name, "status": _status(trial),
              "baseline": a.get("baseline") is True}
    record.update({k: (_text if k in TEXT_ATTRS else _number)(a.get(k)) for k in TRIAL_COLUMNS})
    record["repeat_of"] = _number(a.get("duplicate_of"))
    record["feasible"] = _feasible(trial)
    record["over_budget"] = _over_budget_text(_over(a.get("over_budget")))
    record["error"] = _text(a.get("error"))
    record.update({k: (_text if k in TEXT_ATTRS else _number)(a.get(k)) for k in EXTRA_COLUMNS})
    record.update({PARAM_PREFIX + k: v for k, v in trial.params.items()})
    return record


def sorted_trials(study) -> list:
    """Every trial, best first by the first objective; trials without a value (pruned, rejected,
    failed, running) after them by number."""
    maximize = study.directions[0].name == "MAXIMIZE"
    trials = study.get_trials(deepcopy=False)
    scored = [t for t in trials if _score(t) is not None]
    scored.sort(key=lambda t: (-_score(t) if maximize else _score(t), t.number))
    return scored + [t for t in trials if _score(t) is None]


def trial_records(study) -> list[dict]:
    """Flat records of every trial, sorted as :func:`sorted_trials`. Records have the union of
    every trial's ``param_*`` columns (None where a trial lacks a decision)."""
    records = [trial_record(t) for t in sorted_trials(study)]
    params = sorted({k for r in records for k in r if k.startswith(PARAM_PREFIX)})
    return [{**{k: v for k, v in r.items() if not k.startswith(PARAM_PREFIX)}, **{p: r.get(p) for p in params}}
            for r in records]


def front_trials(study) -> list:
    """The best trial (one objective) or the Pareto front (several), from feasible trials only
    (every constraint <= 0: never a rejected candidate or a baseline over budget), best first by
    the first objective. Optuna's ``study.best_trials`` decides; trials not trained to the end
    are left out."""
    front = [t for t in study.best_trials if _score(t) is not None]
    maximize = study.directions[0].name == "MAXIMIZE"
    return sorted(front, key=lambda t: (-_score(t) if maximize else _score(t), t.number))


def state_counts(study) -> dict:
    """The search's own counts (:func:`funnelbench.search.study.counts`: ``trained`` is what
    ``--trials`` counts, i.e. completed, pruned and failed trainings, never a repeat), plus the
    trials in all, the baselines trained to the end, which budget rejected how many, and the
    failures by status and error."""
    from .study import counts

    trials = study.get_trials(deepcopy=False)
    rejected_by = Counter(name for t in trials if _status(t) == "rejected"
                          for name in (_over(t.user_attrs.get("over_budget")) or {"unknown budget": None}))
    failures = Counter((_status(t), _text(t.user_attrs.get("error")) or "") for t in trials if _status(t) in FAILED)
    return {
        "trials": len(trials),
        **counts(study),
        "baselines": sum(1 for t in trials if t.user_attrs.get("baseline") is True and _status(t) == "completed"),
        "rejected_by": dict(sorted(rejected_by.items())),
        "failures": [{"status": s, "error": e or None, "trials": n} for (s, e), n in failures.most_common()],
    }


def counts_line(counts: dict) -> str:
    """'42 trials: 31 trained (24 completed, 6 pruned, 1 failed; 2 baselines), 11 rejected by the
    budget (macs 11)'."""
    inner = [f"{counts['completed']} completed"] + [f"{counts[k]} {k}" for k in ("pruned", "failed") if counts[k]]
    trained = f"{counts['trained']} trained ({', '.join(inner)}" + (
        f"; {counts['baselines']} baselines)" if counts["baselines"] else ")")
    parts = [trained]
    if counts["rejected"]:
        by = ", ".join(f"{k} {n}" for k, n in counts["rejected_by"].items())
        parts.append(f"{counts['rejected']} rejected by the budget ({by})")
    if counts["repeats"]:
        parts.append(f"{counts['repeats']} repeat{'s' if counts['repeats'] != 1 else ''} of a trained layout")
    for key in ("running", "waiting"):
        if counts[key]:
            parts.append(f"{counts[key]} {key}")
    return f"{counts['trials']} trials: " + ", ".join(parts)


# ----------------------------------------------------------------------------- importances

def param_importances(study) -> tuple[list[dict], str | None]:
    """Which decisions mattered: Optuna's PED-ANOVA importances (deterministic, no extra
    packages) per objective, over the trials trained to the end. Returns rows
    ``{"objective", "param", "importance"}`` (each objective's importances sum to 1, largest
    first) and a note when they cannot be computed (too few trials, no decision varied)."""
    import optuna
    from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances

    trained = [t for t in study.get_trials(deepcopy=False) if _score(t) is not None]
    if len(trained) < MIN_IMPORTANCE_TRIALS:
        return [], (f"importances need at least {MIN_IMPORTANCE_TRIALS} trained trials ({len(trained)} so far)")
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
                raw = get_param_importances(copy, evaluator=PedAnovaImportanceEvaluator(), normalize=False,
                                            target=lambda t, i=i, sign=sign: sign * t.values[i])
            total = sum(raw.values())
            if total <= 0:
                continue
            rows += [{"objective": name, "param": p, "importance": v / total}
                     for p, v in sorted(raw.items(), key=lambda kv: -kv[1])]
    finally:
        optuna.logging.set_verbosity(verbosity)
    return rows, (None if rows else "no decision separates the best trials from the others")


# ----------------------------------------------------------------------------- the report

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
        "out": _text(study.user_attrs.get("out")),
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
            "train_mem_est_mib": _round(None if r["train_mem_est_bytes"] is None else r["train_mem_est_bytes"] / 2 ** 20, 1),
            "epochs_done": r["epochs_done"],
            "status": r["status"],
            "over_budget": r["over_budget"] or "",
        }
        if any(x.get("error") for x in records):
            row["error"] = r["error"] or ""
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- plots

AXIS_LABELS = {
    "top1": "proxy top-1 (%)", "top5": "proxy top-5 (%)", "val_loss": "proxy val loss",
    "macs": "GMACs (= FLOPs as the papers count)", "params": "params (M)", "train_mem": "est. training memory (GiB)",
    "train_img_per_s": "train img/s", "infer_img_per_s": "inference img/s",
}
AXIS_SCALES = {"macs": 1e-9, "params": 1e-6, "train_mem": 2 ** -30}
AXIS_UNITS = {"macs": "GMACs", "params": "M params", "train_mem": "GiB"}
MAXIMIZED = ("top1", "top5", "train_img_per_s", "infer_img_per_s")
BUDGET_OF_AXIS = {"macs": ("macs", "min_macs"), "params": ("params",), "train_mem": ("memory_bytes",)}
PAPER_STYLE = {"font.size": 7, "axes.labelsize": 7, "axes.titlesize": 7, "xtick.labelsize": 6.5,
               "ytick.labelsize": 6.5, "legend.fontsize": 6, "axes.linewidth": 0.6, "lines.linewidth": 0.9,
               "savefig.dpi": 300, "font.family": "DejaVu Sans"}
COLUMN_WIDTH_IN = 3.5  # one column of a two-column paper


def plot_axes(rep: dict) -> tuple[str, str]:
    """(x, y) objective names of the trade-off plot: the study's two objectives (the cost on x),
    else MACs on x and the first objective (top-1 if that is a cost) on y."""
    objectives = [o for o in rep["objectives"] if o in OBJECTIVE_COLUMNS]
    if len(objectives) == 2 and len(rep["objectives"]) == 2:
        first, second = objectives
        return (first, second) if first in COSTS and second not in COSTS else (second, first)
    y = objectives[0] if objectives and objectives[0] not in COSTS else "top1"
    if y == "top1" and objectives and not any(r["top1"] is not None for r in rep["trials"] if r["status"] == "completed"):
        y = objectives[0]  # a cost-only search trains nothing: its objective against MACs (or params)
    return ("params" if y == "macs" else "macs"), y


def _value(record: dict, name: str):
    v = record.get(OBJECTIVE_COLUMNS[name])
    return None if v is None else v * AXIS_SCALES.get(name, 1.0)


def tradeoff_front(points: list[tuple[float, float, int]], x_min: bool, y_max: bool) -> list[int]:
    """The trials (third element) no other point beats on both axes, sorted along x."""
    sx, sy = (1 if x_min else -1), (-1 if y_max else 1)
    front, best = [], math.inf
    for x, y, n in sorted(points, key=lambda p: (sx * p[0], sy * p[1])):
        if sy * y < best:
            front.append(n)
            best = sy * y
    return front


def check_figure_path(path: str | Path) -> Path:
    """Fail early on an unknown figure suffix or an unwritable folder."""
    path = Path(path)
    if path.suffix.lower() not in FIGURE_SUFFIXES:
        raise UsageError(f"cannot plot to {str(path)!r}: unknown suffix {path.suffix or '(none)'!r}; use one of "
                         f"{', '.join(FIGURE_SUFFIXES)}")
    check_export_path(path.with_suffix(".csv"))  # the same folder checks as the exports
    if path.is_dir():
        raise UsageError(f"cannot write {str(path)!r}: it is a folder; choose a file name")
    return path


def _save(fig, path: str | Path) -> Path:
    path = check_figure_path(path)
    buf = BytesIO()
    fig.savefig(buf, format=path.suffix.lower()[1:], bbox_inches="tight", pad_inches=0.02)
    return atomic_write(path, buf.getvalue())


def _short_layout(layout: str) -> str:
    """'B6(197)-6(99), h192, a3' -> 'B6(197)-6(99)\\nh192, a3': two lines fit beside a point."""
    head, _, rest = (layout or "?").partition(", ")
    return head + ("\n" + rest if rest else "")


def plot_tradeoff(rep: dict, path: str | Path) -> Path:
    """Trade-off plot at a paper's column width: every trained trial a point (within budget in
    colour, over budget grey), pruned trials grey crosses (their partial top-1), baselines as labelled diamonds, the front of
    the feasible trials as a step line, the budget as a dashed line."""
    import matplotlib
    from matplotlib.figure import Figure

    x_name, y_name = plot_axes(rep)
    x_min, y_max = x_name not in MAXIMIZED, y_name in MAXIMIZED
    trained = [r for r in rep["trials"] if r["status"] == "completed"
               and _value(r, x_name) is not None and _value(r, y_name) is not None]
    pruned = [r for r in rep["trials"] if r["status"] == "pruned"
              and _value(r, x_name) is not None and _value(r, y_name) is not None]
    feasible = [r for r in trained if r["feasible"]]
    if sorted(rep["objectives"]) == sorted((x_name, y_name)):  # the study's own Pareto front
        front_numbers = set(rep["front_trials"])
    else:  # one objective: the feasible trials no other beats on both axes (best top-1 for its MACs)
        front_numbers = set(tradeoff_front([(_value(r, x_name), _value(r, y_name), r["trial"]) for r in feasible],
                                           x_min, y_max))
    front = sorted((r for r in feasible if r["trial"] in front_numbers), key=lambda r: _value(r, x_name))

    with matplotlib.rc_context(PAPER_STYLE):
        fig = Figure(figsize=(COLUMN_WIDTH_IN, 2.6))
        ax = fig.add_subplot()
        grey = "#b0b0b0"
        if pruned:
            ax.scatter([_value(r, x_name) for r in pruned], [_value(r, y_name) for r in pruned], s=9, marker="x",
                       color=grey, linewidths=0.6, label="pruned (partial)", zorder=1)
        infeasible = [r for r in trained if not r["feasible"] and not r["baseline"]]
        if infeasible:
            ax.scatter([_value(r, x_name) for r in infeasible], [_value(r, y_name) for r in infeasible], s=10,
                       color=grey, label="over budget", zorder=2)
        searched = [r for r in feasible if not r["baseline"]]
        ax.scatter([_value(r, x_name) for r in searched], [_value(r, y_name) for r in searched], s=10,
                   color="#1f77b4", alpha=0.8, linewidths=0, label="within budget", zorder=3)
        if front:
            xs, ys = [_value(r, x_name) for r in front], [_value(r, y_name) for r in front]
            ax.step(xs, ys, where="post", color="#d62728", lw=0.9, zorder=4, label="Pareto front")
            ax.scatter(xs, ys, s=14, facecolors="none", edgecolors="#d62728", linewidths=0.8, zorder=5)
        baselines = [r for r in trained if r["baseline"]]
        for feasible_group, label in ((True, "baseline"), (False, "baseline over budget")):
            group = [r for r in baselines if r["feasible"] == feasible_group]
            if group:
                ax.scatter([_value(r, x_name) for r in group], [_value(r, y_name) for r in group], s=22, marker="D",
                           color="black" if feasible_group else grey, edgecolors="black", linewidths=0.5, zorder=6,
                           label=label)
        budgets = rep["settings"].get("budgets") or {}
        for axis, line in ((x_name, ax.axvline), (y_name, ax.axhline)):
            for key in BUDGET_OF_AXIS.get(axis, ()):
                if budgets.get(key):
                    limit = budgets[key] * AXIS_SCALES.get(axis, 1.0)
                    line(limit, color="#555555", ls="--", lw=0.7, zorder=1,
                         label=f"{'budget' if key != 'min_macs' else 'budget floor'} {limit:.3g} {AXIS_UNITS[axis]}")
        ax.margins(x=0.08, y=0.08)
        ax.set_xlabel(AXIS_LABELS[x_name])
        ax.set_ylabel(AXIS_LABELS[y_name])
        ax.grid(True, lw=0.3, color="#e0e0e0")
        ax.set_axisbelow(True)
        _legend(ax)
        fig.set_layout_engine("constrained")
        _label_baselines(fig, ax, [(_value(r, x_name), _value(r, y_name), _short_layout(r["target_layout"]),
                                    f"#{r['trial']}") for r in baselines])
        return _save(fig, path)


def _legend(ax) -> None:
    """Above the axes, in rows of three: never on top of a point."""
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False, handletextpad=0.3,
              columnspacing=1.0, borderaxespad=0.2)


def _label_baselines(fig, ax, points: list[tuple[float, float, str, str]]) -> None:
    """Write each baseline's layout beside its point where it covers the fewest points and no
    other label: of four places (above or below, right or left), the first that is clear, and
    inside the axes. Where the layout fits nowhere without covering another label (many
    baselines close together), the short label (its trial number, ``#3``) is written instead;
    the report's table names every trial."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw_without_rendering()  # lay the figure out, so that data map to their final place
    frame = ax.get_window_extent(renderer)
    dots = ax.transData.transform([(x, y) for c in ax.collections for x, y in c.get_offsets()]) \
        if ax.collections else []
    taken = []
    places = ((4, 3, "left", "bottom"), (4, -3, "left", "top"), (-4, 3, "right", "bottom"), (-4, -3, "right", "top"))
    for x, y, long_text, short_text in points:
        best = None
        for text, dx, dy, ha, va in [(long_text, *p) for p in places] + [(short_text, *p) for p in places]:
            if text is short_text and best is not None and best[0] < 10:
                break  # the layout found a place clear of other labels
            label = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=5.5, ha=ha,
                                va=va, zorder=7)
            box = label.get_window_extent(renderer)
            outside = box.x0 < frame.x0 or box.x1 > frame.x1 or box.y0 < frame.y0 or box.y1 > frame.y1
            cost = 100 * outside + 10 * sum(box.overlaps(t) for t in taken) + \
                sum(box.contains(px, py) for px, py in dots)
            if best is None or cost < best[0]:
                if best is not None:
                    best[1].remove()
                best = (cost, label, box)
            else:
                label.remove()
            if cost == 0:
                break
        taken.append(best[2])


def plot_history(rep: dict, path: str | Path) -> Path:
    """The first objective of every trained trial against its trial number, with the best
    feasible value so far as a step line; over budget and baselines marked."""
    import matplotlib
    from matplotlib.figure import Figure

    name = rep["objectives"][0]
    maximize = rep["directions"][0] == "maximize"
    column = OBJECTIVE_COLUMNS.get(name, name)
    scale = AXIS_SCALES.get(name, 1.0)
    trained = sorted((r for r in rep["trials"] if r["status"] == "completed" and r.get(column) is not None),
                     key=lambda r: r["trial"])
    best, xs, ys = None, [], []
    for r in trained:
        if r["feasible"]:
            v = r[column] * scale
            best = v if best is None or (v > best if maximize else v < best) else best
            xs.append(r["trial"])
            ys.append(best)
    with matplotlib.rc_context(PAPER_STYLE):
        fig = Figure(figsize=(COLUMN_WIDTH_IN, 2.2))
        ax = fig.add_subplot()
        grey = "#b0b0b0"
        for group, style in (([r for r in trained if r["feasible"] and not r["baseline"]],
                              dict(color="#1f77b4", s=9, label="within budget")),
                             ([r for r in trained if not r["feasible"] and not r["baseline"]],
                              dict(color=grey, s=9, label="over budget")),
                             ([r for r in trained if r["baseline"] and r["feasible"]],
                              dict(color="black", marker="D", s=16, label="baseline")),
                             ([r for r in trained if r["baseline"] and not r["feasible"]],
                              dict(color=grey, marker="D", s=16, edgecolors="black", label="baseline over budget"))):
            if group:
                ax.scatter([r["trial"] for r in group], [r[column] * scale for r in group],
                           linewidths=0.5 if "edgecolors" in style else 0, **style)
        if xs:
            last = max(r["trial"] for r in rep["trials"])
            ax.step(xs + [last], ys + [ys[-1]], where="post", color="#d62728", lw=0.9, label="best so far (within budget)")
        ax.set_xlabel("trial number")
        ax.set_ylabel(AXIS_LABELS.get(name, name))
        ax.grid(True, lw=0.3, color="#e0e0e0")
        ax.set_axisbelow(True)
        _legend(ax)
        fig.set_layout_engine("constrained")
        return _save(fig, path)
