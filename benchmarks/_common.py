"""What the benchmark scripts share: the machine description, waiting for a quiet machine,
and writing a result file with the command that made it."""

from __future__ import annotations

import datetime
import os
import sys
import time
from pathlib import Path

import torch

from funnelbench.env import device_name
from funnelbench.exports import atomic_write, export_records

RESULTS = Path(__file__).resolve().parent.parent / "results"


def machine() -> str:
    """'cpu (Intel(R) Xeon(R) Processor, 2 threads), torch 2.14.1+cu130, load 0.42'."""
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return f"{device_name(dev)}, torch {torch.__version__}, 1-min load {os.getloadavg()[0]:.2f}"


def load_1m() -> float:
    return round(os.getloadavg()[0], 2)


def wait_for_quiet(limit: float = 1.5, timeout_s: float = 900, poll_s: float = 30) -> float:
    """Wait (up to ``timeout_s``) for the 1-minute load average to fall below ``limit``; return it."""
    start = time.time()
    load = os.getloadavg()[0]
    while load >= limit and time.time() - start < timeout_s:
        print(f"waiting for a quiet machine: 1-min load {load:.2f} >= {limit}", file=sys.stderr, flush=True)
        time.sleep(poll_s)
        load = os.getloadavg()[0]
    return load


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, '1.02 0.87 0.55' ('' where there are none)."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return ""


def markdown_table(records: list[dict]) -> str:
    import pandas as pd

    return pd.DataFrame.from_records(records).to_markdown(index=False)


def write_result(
    name: str,
    records: list[dict],
    title: str,
    notes: list[str],
    *,
    rows: list[dict] | None = None,
    rows_suffix: str = "_rows",
    load_before: str | None = None,
    folder: str | os.PathLike = RESULTS,
    argv: list[str] | None = None,
) -> Path:
    """The one results writer of the benchmarks: ``<folder>/<name>.md`` (title, the command that
    made it, machine, date, load average before and after when ``load_before`` is given, the
    table of ``records``, the notes) and ``<name>.csv`` of ``records``; with ``rows`` (per run or
    per round), also ``<name><rows_suffix>.csv``. Every file is written atomically."""
    folder = Path(folder)
    export_records(records, folder / f"{name}.csv")
    if rows is not None:
        export_records(rows, folder / f"{name}{rows_suffix}.csv")
    script = os.path.relpath(os.path.abspath(sys.argv[0]), RESULTS.parent)
    command = "PYTHONPATH=. python " + " ".join([script, *(sys.argv[1:] if argv is None else argv)])
    load = (
        f"Load average (1/5/15 min) before: {load_before}, after: {load_average()}  \n"
        if load_before is not None
        else ""
    )
    text = (
        f"# {title}\n\n"
        f"Command: `{command}`  \n"
        f"Machine: {machine()}  \n"
        f"{load}"
        f"Date: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}\n\n"
        + markdown_table(records)
        + "\n\n"
        + "\n".join(f"- {n}" for n in notes)
        + "\n"
    )
    return atomic_write(folder / f"{name}.md", text)


def timing_arguments(doc: str, repeats: int, warmup: int, quick: str):
    """The options of a timing benchmark: --repeats, --warmup, --quick (a smoke run with one or
    two repeats, no waiting) and --no-wait. Returns the parsed arguments and the 1-minute load
    at the start (None when the run did not wait for a quiet machine)."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--warmup", type=int, default=warmup)
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--no-wait", action="store_true", help="do not wait for the machine to be quiet")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.warmup = min(args.repeats, 2), 1
    load = None if (args.quick or args.no_wait) else wait_for_quiet()
    return args, load


def load_note(load: float | None) -> str:
    return f"1-min load before the run: {load:.2f}" if load is not None else "Smoke run (--quick or --no-wait)."


def before_measuring(args) -> float:
    """Before each measured group: wait again for a quiet machine (unless a smoke run) and
    return the load, which the row records next to the load after it."""
    return load_1m() if (args.quick or args.no_wait) else round(wait_for_quiet(), 2)


def train_with_test_curve(config, out: str | os.PathLike, *, data=None, cache_dir=None, test_every: int = 1) -> dict:
    """Train ``config`` (a TrainConfig) into ``out`` and return its record with the per-epoch
    history: ``val_top1_by_epoch``, ``test_top1_by_epoch`` (the benchmark's own measurement: an
    epoch hook reads the test split after every ``test_every``-th epoch, None in between; the
    last epoch's is the trainer's own read at the end; nothing decides on it), seconds per epoch
    and the wall time. The test split must exist (Fashion-MNIST, idx, downsampled ImageNet)."""
    from funnelbench.training import Trainer

    tests: dict[int, dict] = {}  # epoch -> the test read after it

    started = time.time()
    with Trainer(config, out=out, data=data, overwrite=True, cache_dir=cache_dir) as trainer:
        evaluate = trainer.evaluate

        def evaluate_and_keep(split: str = "val") -> dict:  # the hook's reads and the trainer's last one
            metrics = evaluate(split)
            if split == "test":
                tests[trainer.epoch] = metrics
            return metrics

        trainer.evaluate = evaluate_and_keep
        trainer.epoch_hooks.append(
            lambda row: row["epoch"] % test_every == 0 and row["epoch"] < config.epochs and trainer.evaluate("test")
        )
        rec = trainer.fit()
        history = list(trainer.history)
    epochs = [h["epoch"] for h in history]
    return {
        **rec,
        "val_top1_by_epoch": [h["val_top1"] for h in history],
        "test_top1_by_epoch": [tests[e]["test_top1"] if e in tests else None for e in epochs],
        "train_s_by_epoch": [h["epoch_s"] for h in history],
        "val_s_by_epoch": [h["eval_s"] for h in history],
        "test_s_by_epoch": [tests[e]["eval_s"] if e in tests else None for e in epochs],
        "wall_s": time.time() - started,
    }


def run_appending(jobs: int, calls: list[tuple], runs_path: Path, describe) -> list[dict]:
    """Run ``fn(*args)`` for every ``(fn, *args)`` in ``calls``, ``jobs`` processes at a time;
    each finished row gets the machine, is appended to the run file at once (an interrupted
    benchmark keeps what finished) and printed as ``describe(i, row)``. Returns the new rows."""
    import json
    from concurrent.futures import ProcessPoolExecutor, as_completed

    new = []
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(*call) for call in calls]
        for i, future in enumerate(as_completed(futures), 1):
            row = future.result()
            row["machine"] = machine()
            new.append(row)
            with open(runs_path, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(describe(i, row), flush=True)
    return new
