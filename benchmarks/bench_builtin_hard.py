"""Is the harder built-in dataset (``--data builtin-hard``) learnable on a CPU, and where does a
short proxy stand on it? Two layouts (DeiT-Ti's and the best hand funnel of the committed
search, at the search's proxy: 32 px, 8 px patches, widths x 1/4, lr 2e-3), each at the 20-epoch
reference schedule and at two 4-epoch proxies (batch 128 and batch 32, four times the steps), and
at 16 px with 4 px patches (the search's default proxy, 4 epochs, and its 20-epoch counterpart).

Each run trains into ``--runs/<schedule>/<layout>/``; a run whose history has all its epochs is
read, not trained again, so the script resumes. ``--no-train`` only writes the summary of what
exists (a run cut short shows the epochs it has).

    PYTHONPATH=. python benchmarks/bench_builtin_hard.py --runs /work/runs/builtin-hard --out results/builtin_hard
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from benchmarks.bench_proxy_fidelity import _slug

LAYOUTS = ("B12(197), h192", "B6(197)-6(50), max, h192")
BASE = {
    "image_size": 32,
    "patch_size": 8,
    "width_scale": 0.25,
    "lr": 2e-3,
    "train_per_class": 1000,
    "data": "builtin-hard",
}
SCHEDULES = {
    "reference (20 epochs, batch 128)": {"epochs": 20, "batch_size": 128},
    "proxy (4 epochs, batch 128)": {"epochs": 4, "batch_size": 128},
    "proxy (4 epochs, batch 32)": {"epochs": 4, "batch_size": 32},
    # the search's default proxy since the fidelity study (16 px, 4 px patches), and its
    # 20-epoch reference: does the smaller image keep what this set's classes need?
    "default proxy (4 epochs at 16 px)": {"epochs": 4, "batch_size": 128, "image_size": 16, "patch_size": 4},
    "20 epochs at 16 px": {"epochs": 20, "batch_size": 128, "image_size": 16, "patch_size": 4},
}


def _folder(runs: str, schedule: str, layout: str) -> Path:
    return Path(runs) / _slug(schedule) / _slug(layout)


def _history(folder: Path):
    import pandas as pd

    path = folder / "history.csv"
    return pd.read_csv(path) if path.exists() else None


def train_one(schedule: str, layout: str, runs: str) -> None:
    import torch

    torch.set_num_threads(1)
    import funnelbench as fb
    from funnelbench.search.study import train_trial

    proxy = {**BASE, **SCHEDULES[schedule], "seed": 0, "threads": 1, "checkpoint": "none"}
    data = fb.load_data(proxy["data"], image_size=proxy["image_size"], train_per_class=proxy["train_per_class"])
    train_trial(layout, out=_folder(runs, schedule, layout), data=data, proxy=proxy)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", default="runs/builtin-hard")
    ap.add_argument("--out", default="results/builtin_hard")
    ap.add_argument("--no-train", action="store_true", help="only summarise the runs that exist")
    args = ap.parse_args()
    todo = []
    for schedule, s in SCHEDULES.items():
        for layout in LAYOUTS:
            h = _history(_folder(args.runs, schedule, layout))
            if h is None or len(h) < s["epochs"]:
                todo.append((schedule, layout))
    if todo and not args.no_train:
        with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
            list(pool.map(train_one, *zip(*todo), [args.runs] * len(todo)))
    rows = []
    for schedule, s in SCHEDULES.items():
        for layout in LAYOUTS:
            h = _history(_folder(args.runs, schedule, layout))
            if h is None:
                continue
            curve = " ".join(f"{100 * v:.1f}" for v in h["val_top1"])
            rows.append(
                {
                    "schedule": schedule,
                    "layout": layout,
                    "epochs_done": len(h),
                    "best_top1_pct": round(100 * h["val_top1"].max(), 2),
                    "top1_pct_per_epoch": curve,
                }
            )
    from benchmarks._common import write_result

    notes = [
        "Data: synthetic-arrangement-hard, 16 classes (chance 6.25 %), 16,000 training / 4,000 validation images "
        "at 32 px (16 px in the 16 px rows); seed 0; one torch thread per run, two runs at a time.",
        "On the first built-in set the same two layouts reach 99.45 % and 99.90 % at the reference schedule "
        "(seed 0), where every layout that learns at all ends within 2 points of 100 % "
        "(results/proxy_fidelity.md): too easy to rank layouts. Here the reference leaves room (85 %), but a "
        "4-epoch proxy is still at or near chance: a proxy for this set needs more epochs.",
        "At 16 px with 4 px patches (the search's default proxy since results/proxy_fidelity.md) the "
        "same scenes are rasterised at 16 px; the 20-epoch runs there show how much of "
        "the task survives the smaller image, and the 4-epoch default proxy whether it leaves chance.",
        "Synthetic data: this says whether a layout can learn the task on this proxy, nothing about ImageNet.",
    ]
    write_result(
        Path(args.out).name,
        rows,
        "The harder built-in dataset: learnable at 20 epochs, barely at 4",
        notes,
        folder=Path(args.out).parent,
        argv=[a for a in sys.argv[1:] if a != "--no-train"],
    )
    print(Path(args.out).with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
