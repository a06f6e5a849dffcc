"""Reproduce a seed paper's memory and speed tables on this machine.

    rows = fb.reproduce("funnel-vit", tables=(2, 4), batch_size=8)

The paper's own numbers ship with the package (``resources/``). Each paper row becomes one
flat record: the paper's memory and steps/s and its ratios to the table's baseline row, next
to ours, measured in one run with :func:`funnelbench.profile` (every table's layouts against
its baseline): measured memory saved, estimated memory saved, training speed-up and the
speed-up the MACs alone predict.

Absolute numbers cannot match (the paper does not give its batch size or hardware), so the
ratios are what to compare. Memory ratios depend on the batch: at a small batch the weights,
gradients and AdamW state (the same for most rows) dominate, and pooling saves a smaller
share. ``est_batch_at_paper_mem`` is the batch at which the analytic estimate of the
baseline (fp32, CUDA, AdamW) reaches the paper's baseline memory, and
``est_mem_saved_pct_at_paper_batch`` the saving the estimate predicts at that batch.
"""

from __future__ import annotations

import csv
from importlib import resources
from typing import Callable

from .errors import UsageError
from .memory import UnmodelledLayout, estimate_memory, max_batch_size
from .presets import resolve
from .profiling import profile

PAPERS = {
    "funnel-vit": (
        "funnel_vit_tables.csv",
        "Funnel Vision Transformer for image classification (seed 000), Tables 2-4",
    ),
}
GIB = 2**30  # the paper's "G" taken as GiB


def paper_text(paper: str) -> str:
    """The CSV text of a paper's stored tables."""
    if paper not in PAPERS:
        raise UsageError(f"unknown paper {paper!r}; choose one of {', '.join(PAPERS)}")
    return resources.files("funnelbench").joinpath("resources", PAPERS[paper][0]).read_text()


def paper_rows(paper: str = "funnel-vit", tables=None) -> list[dict]:
    """The stored rows of a paper's tables (all tables when ``tables`` is None)."""
    text = paper_text(paper)
    rows = []
    for r in csv.DictReader(text.splitlines()):
        rows.append(
            {
                "table": int(r["table"]),
                "row": r["row"],
                "layout": str(resolve(r["layout"])),
                "optimizer": r["optimizer"],
                "paper_memory_gb": float(r["paper_memory_gb"]),
                "paper_steps_per_s": float(r["paper_steps_per_s"]),
                "is_baseline": r["baseline"] == "yes",
            }
        )
    available = sorted({r["table"] for r in rows})
    if tables is not None:
        tables = [int(t) for t in tables]
        unknown = [t for t in tables if t not in available]
        if unknown:
            raise UsageError(
                f"{paper} has no table {', '.join(map(str, unknown))}; its tables are {', '.join(map(str, available))}"
            )
        rows = [r for r in rows if r["table"] in tables]
    return rows


def reproduce(
    paper: str = "funnel-vit",
    tables=(2, 4),
    *,
    progress: Callable[[int, int, str], None] | None = None,
    on_record: Callable[[dict], None] | None = None,
    **profile_kwargs,
) -> list[dict]:
    """Profile every layout of the chosen tables against its table's baseline and return one
    record per paper row (see the module docstring). ``profile_kwargs`` go to
    :func:`funnelbench.profile` (``batch_size``, ``repeats``, ``resume``, ``device``, ...)."""
    rows = paper_rows(paper, tables)
    for key in ("baseline", "optimizer", "image_size"):
        if key in profile_kwargs:
            raise UsageError(f"reproduce sets {key} from the paper's tables; leave it out")
    # One profile run per (baseline, optimizer): each table is measured against its own baseline.
    groups: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        base = next(b["layout"] for b in rows if b["table"] == r["table"] and b["is_baseline"])
        layouts = groups.setdefault((base, r["optimizer"]), [])
        if r["layout"] not in layouts:
            layouts.append(r["layout"])
    total = sum(len(v) for v in groups.values())
    measured: dict[tuple[str, str], dict] = {}
    offset = 0
    for (base, optimizer), layouts in groups.items():

        def group_progress(done, _total, label, offset=offset):
            if progress and label != "done":
                progress(offset + done, total, label)

        for rec in profile(
            layouts, baseline=base, optimizer=optimizer, progress=group_progress, on_record=on_record, **profile_kwargs
        ):
            measured[(rec["layout"], optimizer)] = rec
        offset += len(layouts)
    if progress:
        progress(total, total, "done")

    out = []
    for r in rows:
        base_row = next(b for b in rows if b["table"] == r["table"] and b["is_baseline"])
        rec = measured[(r["layout"], r["optimizer"])]
        out.append(
            {
                "paper": paper,
                "table": r["table"],
                "row": r["row"],
                "layout": r["layout"],
                "optimizer": r["optimizer"],
                "paper_memory_gb": r["paper_memory_gb"],
                "paper_mem_saved_pct": 100 * (1 - r["paper_memory_gb"] / base_row["paper_memory_gb"]),
                "mem_saved_pct": rec.get("mem_saved_pct"),
                "mem_est_saved_pct": rec.get("mem_est_saved_pct"),
                **_at_paper_batch(r, base_row),
                "paper_steps_per_s": r["paper_steps_per_s"],
                "paper_speedup_x": r["paper_steps_per_s"] / base_row["paper_steps_per_s"],
                "train_speedup_x": rec.get("train_speedup_x"),
                "macs_ratio_x": rec.get("macs_ratio_x"),
                "train_peak_mem_bytes": rec.get("train_peak_mem_bytes"),
                "train_mem_est_bytes": rec.get("train_mem_est_bytes"),
                "train_steps_per_s": rec.get("train_steps_per_s"),
                "params": rec.get("params"),
                "macs": rec.get("macs"),
                "batch_size": rec.get("batch_size"),
                "image_size": rec.get("image_size"),
                "attention_kernel": rec.get("attention_kernel"),
                "repeats": rec.get("repeats"),
                "device": rec.get("device"),
                "dtype": rec.get("dtype"),
                "torch_version": rec.get("torch_version"),
                "error": rec.get("error"),
            }
        )
    return out


def _at_paper_batch(row: dict, base_row: dict) -> dict:
    """The estimate's memory saving at the batch where the baseline needs the paper's memory."""
    try:
        kw = dict(dtype="fp32", device="cuda", optimizer=row["optimizer"])
        batch = max_batch_size(base_row["layout"], int(base_row["paper_memory_gb"] * GIB), **kw)
        if batch < 1:
            return {"est_batch_at_paper_mem": None, "est_mem_saved_pct_at_paper_batch": None}
        base = estimate_memory(base_row["layout"], batch, **kw).train_peak_bytes
        ours = estimate_memory(row["layout"], batch, **kw).train_peak_bytes
        return {"est_batch_at_paper_mem": batch, "est_mem_saved_pct_at_paper_batch": 100 * (1 - ours / base)}
    except UnmodelledLayout:
        return {"est_batch_at_paper_mem": None, "est_mem_saved_pct_at_paper_batch": None}
