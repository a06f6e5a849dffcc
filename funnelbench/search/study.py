"""A search study, in one import: the public :func:`search` and the names a script of the
search uses (its settings, one trial, the loop, the counts, the summary).

    study = fb.search("tiny", budget_macs=5e6, trials=10, epochs=2)

Where each part lives (from the bottom floor up):

- :mod:`.vocabulary`: objectives, trial attributes, statuses, file names, the study marker;
- storage: :mod:`.faults`, :mod:`.journal`, :mod:`.storage`, :mod:`.locks`, :mod:`.folders`,
  :mod:`.readonly`;
- liveness: :mod:`.liveness` (heartbeats, stale trials, claims), :mod:`.accounting`, :mod:`.signals`;
- the search: :mod:`.pruners`, :mod:`.settings`, :mod:`.studies` (opening a study to write it),
  :mod:`.trial`, :mod:`.plan` (the frozen description workers receive), :mod:`.loop`,
  :mod:`.workers` (processes), :mod:`.run` (``search()``);
- results: :mod:`.records`, :mod:`.importances`, :mod:`.summary`, :mod:`.plots` (and
  :mod:`.report`, their one import).

This module defines nothing: it names what lives below it.
"""

from __future__ import annotations

from .accounting import counts, is_trained
from .budget import macs_text
from .folders import SAFE_NAME, check_name, study_folder
from .liveness import recover_stale
from .loop import load_proxy_data, run_loop, search_here
from .plan import SearchPlan, check_proxy, make_plan
from .pruners import (
    HYPERBAND_FACTOR,
    HYPERBAND_MIN_BRACKETS,
    MEDIAN_MIN_EPOCHS,
    TrainedMedianPruner,
    hyperband_brackets,
    make_pruner,
)
from .run import search
from .settings import FREE_PROXY_KEYS, Settings, default_study_name
from .studies import open_search_study, quiet_optuna
from .summary import best_rows, report_command, summary
from .trial import INFER_PROFILE, Context, proxy_of, run_trial, train_trial
from .vocabulary import (
    FAILED,
    MARKER,
    OBJECTIVE_ATTR,
    OBJECTIVES,
    OWNER_FILE,
    PRUNERS,
    SAMPLERS,
    SKIPPED,
    STUDY_ROOT,
    TRAINED,
    TRIAL_KEYS,
)

open_study = open_search_study  # the name this writer had (funnelbench.search.report.read_study is the reader)

__all__ = [
    "search",
    "Settings",
    "SearchPlan",
    "make_plan",
    "check_proxy",
    "open_study",
    "open_search_study",
    "quiet_optuna",
    "run_trial",
    "run_loop",
    "search_here",
    "load_proxy_data",
    "Context",
    "train_trial",
    "proxy_of",
    "INFER_PROFILE",
    "counts",
    "is_trained",
    "recover_stale",
    "summary",
    "best_rows",
    "report_command",
    "macs_text",
    "check_name",
    "study_folder",
    "SAFE_NAME",
    "default_study_name",
    "FREE_PROXY_KEYS",
    "TrainedMedianPruner",
    "make_pruner",
    "hyperband_brackets",
    "MEDIAN_MIN_EPOCHS",
    "HYPERBAND_FACTOR",
    "HYPERBAND_MIN_BRACKETS",
    "OBJECTIVES",
    "OBJECTIVE_ATTR",
    "TRIAL_KEYS",
    "TRAINED",
    "SKIPPED",
    "FAILED",
    "MARKER",
    "STUDY_ROOT",
    "OWNER_FILE",
    "SAMPLERS",
    "PRUNERS",
]
