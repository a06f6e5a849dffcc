"""Trial overhead: what a search worker pays per trial besides training and evaluation steps.

20 consecutive tiny proxy trials in one process, as a search worker runs them: the data loaded
once and injected (``fb.train(..., data=...)``), one CPU thread per trial (``threads=1``), the
checkpoint written once at the end (``checkpoint="last"``) and removed when the trial is done
(``remove_checkpoint``). For each trial, wall time (the ``fb.train`` call plus the removal)
against the time inside its training and evaluation steps (the record's ``train_s``, the sum
of the epochs' ``epoch_s`` and ``eval_s``); the rest is overhead: set-up (config checks, model
build, loaders, optimizer), the checkpoint, history and record writes, and release.

Targets: overhead at most 5 % of a trial of about 10 s of steps, over 20 trials; the 20th trial
no slower than the 2nd (nothing accumulates). Timings are only meaningful on a quiet machine:

    PYTHONPATH=. python benchmarks/bench_trial_overhead.py            # results/bench_trial_overhead.md
    PYTHONPATH=. python benchmarks/bench_trial_overhead.py --quick    # smoke run: 3 short trials
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

import funnelbench as fb
from benchmarks._common import load_1m, wait_for_quiet, write_result
from funnelbench.train import remove_checkpoint

LAYOUT = "B2(17)-2(9), h96, a3, img32, patch8"  # a small Funnel-ViT at 32 px


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--train-per-class",
        type=int,
        default=512,
        help="built-in data, 8 classes: 4096 images, 32 steps of 128 per epoch (~10 s of steps "
        "over 3 epochs on one thread of a 2020s CPU; adjust to land near 10 s)",
    )
    parser.add_argument("--val-per-class", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 trials of 1 epoch on 32 images, no waiting")
    parser.add_argument("--no-wait", action="store_true", help="do not wait for the machine to be quiet")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.epochs, args.train_per_class, args.val_per_class, args.batch_size = 3, 1, 4, 2, 16
    load = None if (args.quick or args.no_wait) else wait_for_quiet()

    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = fb.load_data(
            None,
            image_size=32,
            train_per_class=args.train_per_class,
            val_per_class=args.val_per_class,
            cache_dir=Path(tmp) / "cache",
        )
        for i in range(args.trials):
            out = Path(tmp) / "study" / f"trial-{i}"
            start = time.perf_counter()
            record = fb.train(
                LAYOUT,
                data=data,
                out=out,
                epochs=args.epochs,
                batch_size=args.batch_size,
                seed=i,
                checkpoint="last",
                threads=1,
            )
            remove_checkpoint(out)
            wall = time.perf_counter() - start
            steps = record["train_s"]
            rows.append(
                {
                    "trial": i + 1,
                    "wall_s": round(wall, 3),
                    "steps_s": round(steps, 3),
                    "overhead_s": round(wall - steps, 3),
                    "overhead_pct": round(100 * (wall - steps) / wall, 2),
                    "status": record["status"],
                }
            )
            print(
                f"trial {i + 1:>2}: {wall:7.3f} s, steps {steps:7.3f} s, overhead {wall - steps:6.3f} s "
                f"({100 * (wall - steps) / wall:.2f} %)",
                flush=True,
            )

    total_wall = sum(r["wall_s"] for r in rows)
    total_overhead = sum(r["overhead_s"] for r in rows)
    second, last = rows[min(1, len(rows) - 1)], rows[-1]
    summary = {
        "trials": len(rows),
        "epochs": args.epochs,
        "train_images": 8 * args.train_per_class,
        "batch_size": args.batch_size,
        "median_wall_s": round(statistics.median(r["wall_s"] for r in rows), 3),
        "median_steps_s": round(statistics.median(r["steps_s"] for r in rows), 3),
        "overhead_pct_all": round(100 * total_overhead / total_wall, 2),
        "overhead_pct_max": max(r["overhead_pct"] for r in rows),
        "last_over_second_wall": round(last["wall_s"] / second["wall_s"], 3),
        "last_over_second_overhead_s": round(last["overhead_s"] - second["overhead_s"], 3),
    }
    summary["target_met"] = summary["overhead_pct_all"] <= 5 and last["wall_s"] <= second["wall_s"] * 1.02
    print(summary)
    if not args.quick:
        notes = [
            f"Layout `{LAYOUT}`, built-in data at 32 px, one torch thread; data loaded once and injected, "
            "checkpoint `last` then removed, as a search worker runs trials.",
            "overhead = wall time of `fb.train` + `remove_checkpoint` minus the record's `train_s` (training "
            "and evaluation steps). Targets: overhead_pct_all <= 5; the last trial's wall time no more than "
            "2 % above the 2nd's (timing noise).",
            f"1-min load before: {load}, after: {load_1m()}.",
        ]
        write_result(
            "bench_trial_overhead", [summary], "Per-trial overhead of the trainer (20 trials, one process)", notes
        )
        write_result("bench_trial_overhead_trials", rows, "Per-trial times", notes)


if __name__ == "__main__":
    main()
