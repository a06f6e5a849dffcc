"""The search's words, each defined once: objectives (direction, what they need, the trial
attribute they read, their axis label), the trial attributes and statuses, the study's marker
and the names of its files and folders.

Every other module of :mod:`funnelbench.search` imports these names from here; this module
imports nothing of the package (and nothing heavy), so any floor may use it.
"""

from __future__ import annotations

from pathlib import Path

# ----------------------------------------------------------------------------- the study on disk

MARKER = "search/1"  # the study attribute "funnelbench": the format of a study written by funnelbench search
STUDY_ROOT = Path("runs") / "search"  # the folder of every study's folder (<root>/<study>/trial-<n>/)
DEFAULT_OUT_DIR = str(STUDY_ROOT)
SQLITE_FILE = "study.db"  # a one-worker study's storage, in its folder
JOURNAL_FILE = "journal.log"  # the study's journal, in its folder, when --workers N > 1
OWNER_FILE = "owner.json"  # in a study's folder: which study (its "uid" attribute) the folder belongs to
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")  # a storage given as a path with one of these is SQLite

# ----------------------------------------------------------------------------- objectives

# objective -> (direction, needs training, per-epoch metric it is reported as (or None))
OBJECTIVES = {
    "top1": ("maximize", True, "val_top1"),
    "top5": ("maximize", True, "val_top5"),
    "val_loss": ("minimize", True, "val_loss"),
    "macs": ("minimize", False, None),
    "params": ("minimize", False, None),
    "train_mem": ("minimize", False, None),
    "train_img_per_s": ("maximize", True, "train_img_per_s"),
    "infer_img_per_s": ("maximize", False, None),
}
# the trial attribute (record column) each objective reads
OBJECTIVE_ATTR = {
    "top1": "top1",
    "top5": "top5",
    "val_loss": "val_loss",
    "macs": "macs",
    "params": "params",
    "train_mem": "train_mem_est_bytes",
    "train_img_per_s": "train_img_per_s",
    "infer_img_per_s": "infer_img_per_s",
}
# each objective's label on a plot's axis
OBJECTIVE_LABELS = {
    "top1": "proxy top-1 (%)",
    "top5": "proxy top-5 (%)",
    "val_loss": "proxy val loss",
    "macs": "GMACs (= FLOPs as the papers count)",
    "params": "params (M)",
    "train_mem": "est. training memory (GiB)",
    "train_img_per_s": "train img/s",
    "infer_img_per_s": "inference img/s",
}
COSTS = ("macs", "params", "train_mem")  # objectives that are costs: the x axis of a trade-off plot
MAXIMIZED = tuple(o for o, (direction, _, _) in OBJECTIVES.items() if direction == "maximize")
SAMPLERS = ("tpe", "nsga2", "random", "gp")
PRUNERS = ("median", "hyperband", "none")
FIDELITIES = ("none", "asha")  # --fidelity: one training per candidate, or asynchronous successive halving

# ----------------------------------------------------------------------------- trials

# Every trial has every key (None where not applicable): its facts, plus duplicate_of, worker, retry_of,
# and the multi-fidelity ones: rung, promoted_from, epochs_trained (epochs this trial trained itself,
# not those of the checkpoint it continued) and image_epochs (epochs_trained x training images).
TRIAL_KEYS = (
    "target_layout",
    "proxy_layout",
    "params",
    "macs",
    "flops",
    "proxy_params",
    "proxy_macs",
    "train_mem_est_bytes",
    "top1",
    "top5",
    "val_loss",
    "test_top1",
    "epochs_done",
    "train_img_per_s",
    "infer_img_per_s",
    "wall_s",
    "status",
    "error",
    "baseline",
    "over_budget",
    "run_dir",
    "duplicate_of",
    "worker",
    "retry_of",
    "rung",
    "promoted_from",
    "epochs_trained",
    "image_epochs",
)
# Attributes a trial holds besides TRIAL_KEYS:
BASELINE_LAYOUT = "baseline_layout"  # an enqueued baseline's layout, as given
RETRY_OF = "retry_of"  # the number of the dead trial a retry continues (also in TRIAL_KEYS)
# --fidelity asha (also in TRIAL_KEYS; None without it): the rung a trial trains to (0 = the
# first), and the number of the trial of the rung below whose checkpoint it continues
RUNG = "rung"
PROMOTED_FROM = "promoted_from"

# A trial's status (its "status" attribute).
TRAINED = ("completed", "pruned", "failed", "diverged", "oom")  # what --trials counts
# a candidate the memory estimate does not model, when the search needs its estimate: recorded
# with the reason, never built, not a training (it does not count towards --trials)
SKIPPED = "skipped"
REJECTED = "rejected"  # over a budget or outside the space's constraints: recorded, never built
INTERRUPTED = "interrupted"  # its process ended (a kill, Ctrl-C, SIGTERM) before it finished
FAILED = ("failed", "diverged", "oom", INTERRUPTED)
# The funnelbench status of a trial whose attributes do not say (e.g. still running), by Optuna state.
STATUS_OF_STATE = {
    "COMPLETE": "completed",
    "PRUNED": "pruned",
    "FAIL": "failed",
    "RUNNING": "running",
    "WAITING": "waiting",
}
# The search's counts of a study's trials (funnelbench.search.accounting.counts), in this order.
COUNT_KEYS = ("trained", "completed", "pruned", "rejected", "skipped", "failed", "repeats", "running", "waiting")

__all__ = [
    "MARKER",
    "STUDY_ROOT",
    "DEFAULT_OUT_DIR",
    "SQLITE_FILE",
    "JOURNAL_FILE",
    "OWNER_FILE",
    "SQLITE_SUFFIXES",
    "OBJECTIVES",
    "OBJECTIVE_ATTR",
    "OBJECTIVE_LABELS",
    "COSTS",
    "MAXIMIZED",
    "SAMPLERS",
    "PRUNERS",
    "FIDELITIES",
    "TRIAL_KEYS",
    "BASELINE_LAYOUT",
    "RETRY_OF",
    "RUNG",
    "PROMOTED_FROM",
    "TRAINED",
    "SKIPPED",
    "REJECTED",
    "INTERRUPTED",
    "FAILED",
    "STATUS_OF_STATE",
    "COUNT_KEYS",
]
