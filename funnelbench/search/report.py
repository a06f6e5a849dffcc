"""Reading a search study, in one import: open it read-only, its trials as flat records, the
best trial or the Pareto front, counts by state, parameter importances, and two plots.

A study written by ``funnelbench search`` describes itself in Optuna's own user attributes
(tests/search/test_report.py lists and checks every documented one): the study holds
``funnelbench`` (the format marker), ``settings`` (space, budgets, objectives, proxy options,
baselines) and ``out``; every trial holds its target layout, counts, metrics and ``status``.
Everything here only reads: SQLite files are opened read-only, so a report can run while
workers are still writing.

    study = read_study("reinvest")                   # runs/search/reinvest/study.db or journal.log
    rep = build_report(study)                        # plain dict: settings, counts, trials, front, ...
    plot_tradeoff(rep, "pareto.png"); plot_history(rep, "history.png")

The parts: :mod:`.readonly` (opening), :mod:`.records` (records, fronts, counts),
:mod:`.importances`, :mod:`.summary` (the report as data, its table), :mod:`.plots`.
"""

from __future__ import annotations

from .importances import MIN_IMPORTANCE_TRIALS, param_importances
from .plots import (
    AXIS_LABELS,
    AXIS_SCALES,
    AXIS_UNITS,
    BUDGET_OF_AXIS,
    COLUMN_WIDTH_IN,
    FIGURE_SUFFIXES,
    PAPER_STYLE,
    check_figure_path,
    plot_axes,
    plot_history,
    plot_tradeoff,
    tradeoff_front,
)
from .readonly import OPTUNA_TABLES, default_storage, read_study, readonly_storage
from .records import (
    EXTRA_COLUMNS,
    PARAM_PREFIX,
    TEXT_ATTRS,
    TRIAL_COLUMNS,
    budget_text,
    counts_line,
    front_trials,
    settings_of,
    sorted_trials,
    state_counts,
    trial_record,
    trial_records,
)
from .summary import build_report, trial_table
from .vocabulary import (
    COSTS,
    DEFAULT_OUT_DIR,
    FAILED,
    MARKER,
    MAXIMIZED,
    OBJECTIVE_ATTR,
    SQLITE_FILE,
    SQLITE_SUFFIXES,
    STATUS_OF_STATE,
)
from .vocabulary import JOURNAL_FILE as JOURNAL_NAME
from .vocabulary import SQLITE_FILE as SQLITE_NAME

FORMAT = MARKER  # the value of the study attribute "funnelbench"
OBJECTIVE_COLUMNS = OBJECTIVE_ATTR  # objective name -> the trial attribute (record column) it reads
open_study = read_study  # the name this reader had (funnelbench.search.studies.open_search_study is the writer's)

__all__ = [
    "read_study",
    "open_study",
    "default_storage",
    "readonly_storage",
    "build_report",
    "trial_table",
    "trial_record",
    "trial_records",
    "sorted_trials",
    "front_trials",
    "state_counts",
    "counts_line",
    "budget_text",
    "settings_of",
    "param_importances",
    "plot_tradeoff",
    "plot_history",
    "plot_axes",
    "tradeoff_front",
    "check_figure_path",
    "FORMAT",
    "DEFAULT_OUT_DIR",
    "SQLITE_NAME",
    "JOURNAL_NAME",
    "SQLITE_FILE",
    "SQLITE_SUFFIXES",
    "FIGURE_SUFFIXES",
    "OBJECTIVE_COLUMNS",
    "COSTS",
    "FAILED",
    "STATUS_OF_STATE",
    "TRIAL_COLUMNS",
    "EXTRA_COLUMNS",
    "TEXT_ATTRS",
    "PARAM_PREFIX",
    "MIN_IMPORTANCE_TRIALS",
    "AXIS_LABELS",
    "AXIS_SCALES",
    "AXIS_UNITS",
    "MAXIMIZED",
    "BUDGET_OF_AXIS",
    "PAPER_STYLE",
    "COLUMN_WIDTH_IN",
    "OPTUNA_TABLES",
]
