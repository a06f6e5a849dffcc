"""Trained trials per minute of `funnelbench search --space tiny` with 1 and 2 worker processes,
and the search's overhead: the wall time of each worker outside the trainer's train and
evaluation steps (model building, data hand-over, checkpoints, storage calls, the ask lock,
waiting), as a share of its trials' time.

Each run is the real command in a fresh folder (`--workers 1` on its SQLite file, `--workers 2`
on the journal file), timed from the study's own records: trials per minute over the span from
the first trial's start to the last trial's end (process start-up and the one-off data cache
build are outside it and reported apart), the trainer's `train_s` (its epochs' train and eval
steps) from each trial's record.json. Trials of about 10 s by default (2 epochs of 8 x 600
built-in images at 32 px).

    PYTHONPATH=. python benchmarks/bench_search_workers.py            # results/bench_search_workers.md (waits for a quiet machine)
    PYTHONPATH=. python benchmarks/bench_search_workers.py --quick    # a smoke run: tiny trials, prints only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from benchmarks._common import load_note, wait_for_quiet, write_result
from funnelbench.search.workers import cpu_cores, open_storage, storage_url, worker_resources

REPO = Path(__file__).resolve().parent.parent


def run_search(tmp: Path, workers: int, args, cache: Path) -> dict:
    name = f"bench-w{workers}"
    cmd = [
        sys.executable,
        "-m",
        "funnelbench",
        "search",
        "--space",
        "tiny",
        "--study",
        name,
        "--trials",
        str(args.trials),
        "--workers",
        str(workers),
        "--epochs",
        str(args.epochs),
        "--train-per-class",
        str(args.train_per_class),
        "--val-per-class",
        str(args.val_per_class),
        "--sampler",
        "random",
        "--seed",
        "0",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "FUNNELBENCH_CACHE": str(cache)}
    env.pop("OMP_NUM_THREADS", None)  # each worker sets its own share of the cores
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
    wall_s = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    import optuna

    out = tmp / "runs" / "search" / name
    study = optuna.load_study(study_name=name, storage=open_storage(storage_url(None, out=out, workers=workers)))
    per_worker = defaultdict(list)
    for t in study.trials:
        a = t.user_attrs
        if (
            a.get("run_dir") is None
            or a.get("status") not in ("completed", "pruned")
            or t.datetime_complete is None
            or a.get("duplicate_of") is not None
        ):
            continue  # rejected candidates and repeats (which carry their original's run_dir) train nothing
        record = json.loads((out / a["run_dir"] / "record.json").read_text())[0]  # a list of one record
        per_worker[a["worker"]].append(
            (t.datetime_start.timestamp(), t.datetime_complete.timestamp(), record["train_s"])
        )
    trials = [x for rows in per_worker.values() for x in rows]
    first, last = min(s for s, _, _ in trials), max(e for _, e, _ in trials)
    span_s = last - first
    trial_s = sum(e - s for s, e, _ in trials)
    train_s = sum(t for _, _, t in trials)
    # each worker from its first trial's start to its last trial's end: its trials and the gaps between them
    worker_s = sum(max(e for _, e, _ in rows) - min(s for s, _, _ in rows) for rows in per_worker.values())
    skipped = sum(
        1
        for t in study.trials
        if t.user_attrs.get("status") in ("rejected",) or t.user_attrs.get("duplicate_of") is not None
    )
    return {
        "workers": workers,
        "torch_threads_per_worker": worker_resources(0, workers)["threads"],
        "trained_trials": len(trials),
        "rejected_or_repeats": skipped,
        "command_wall_s": round(wall_s, 1),
        "span_s": round(span_s, 1),
        "trials_per_min": round(60 * len(trials) / span_s, 2),
        "mean_trial_s": round(trial_s / len(trials), 2),
        "mean_train_eval_s": round(train_s / len(trials), 2),
        "overhead_in_trial_pct": round(100 * (trial_s - train_s) / trial_s, 1),
        "overhead_with_gaps_pct": round(100 * (worker_s - train_s) / worker_s, 1),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-per-class", type=int, default=600)
    parser.add_argument("--val-per-class", type=int, default=100)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 tiny trials, prints only, no waiting")
    parser.add_argument("--no-wait", action="store_true", help="do not wait for a quiet machine")
    args = parser.parse_args(argv)
    if args.quick:
        args.trials, args.epochs, args.train_per_class, args.val_per_class = 3, 1, 16, 8
    load = None if (args.quick or args.no_wait) else wait_for_quiet()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for w in args.workers:
            run_dir = Path(tmp) / f"w{w}"
            run_dir.mkdir()
            row = run_search(run_dir, w, args, cache=Path(tmp) / "cache")  # one cache: built in the first run
            rows.append(row)
            print(json.dumps(row), flush=True)
    base = rows[0]["trials_per_min"]
    for r in rows:
        r["speedup"] = round(r["trials_per_min"] / base, 2)
    notes = [
        load_note(load),
        f"{cpu_cores()} cores; each worker gets cores / workers torch threads (at least one).",
        f"Trials: `tiny` space, random sampler (seed 0), {args.epochs} epochs of 8 x {args.train_per_class} built-in "
        f"images (val 8 x {args.val_per_class}), batch 128, fp32 on CPU.",
        "trials_per_min: trained trials over the span from the first trial's start to the last one's end "
        "(process start-up and the data cache build are in command_wall_s only).",
        "overhead_in_trial_pct: each trial's wall time (ask to tell) outside the trainer's train and eval steps "
        "(its record's train_s): model building, checkpoints, storage writes. overhead_with_gaps_pct also counts "
        "each worker's time between its trials (the ask lock, counting the study, failing stale trials).",
    ]
    if args.quick:
        import pandas as pd

        print(pd.DataFrame.from_records(rows).to_markdown(index=False))
        return
    path = write_result("bench_search_workers", rows, "Search with 1 and 2 worker processes (tiny space)", notes)
    print(path.read_text())


if __name__ == "__main__":
    main()
