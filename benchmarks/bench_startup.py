"""Start-up time of the command line, before and after the lazy imports of issue 24.

``funnelbench --version`` and ``funnelbench parse "B6(197)-6(99)"`` run as fresh processes
(``python -m funnelbench ...``, imports included, to exit), once with the package of an older
checkout (``--before``, e.g. a ``git worktree`` of main at the commit before the change) and
once with this one's (``--after``, default: the checkout this script is in), each on
``PYTHONPATH``. The runs are interleaved (before, after, after, before, ...) so that a change of
load hits both alike; ``--runs`` of each (after one untimed warm-up run of each, which fills
the file cache). Reported: median and interquartile range of the wall time, and the ratio of
the medians; the rows file has every run.

    git worktree add --detach /tmp/fb-before <commit>
    PYTHONPATH=. python -m benchmarks.bench_startup --before /tmp/fb-before
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks._common import load_1m, load_average, wait_for_quiet, write_result

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = {"--version": ["--version"], 'parse "B6(197)-6(99)"': ["parse", "B6(197)-6(99)"]}
HEAVY = ("torch", "optuna", "matplotlib", "pandas", "sqlalchemy")


def env_for(tree: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(tree)}


def run_once(tree: Path, args: list[str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "funnelbench", *args], env=env_for(tree), capture_output=True, text=True, cwd=tree
    )
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"funnelbench {' '.join(args)} failed in {tree}: {done.stderr.strip()}")
    return elapsed


def heavy_modules(tree: Path, args: list[str]) -> str:
    """Which of HEAVY the command leaves imported, run in-process by a small wrapper."""
    probe = (
        f"import sys, io, contextlib\nsys.argv = ['funnelbench', *{args!r}]\nfrom funnelbench.cli import main\n"
        f"with contextlib.redirect_stdout(io.StringIO()):\n    try:\n        main()\n    except SystemExit:\n        pass\n"
        f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules) or 'none')"
    )
    done = subprocess.run([sys.executable, "-c", probe], env=env_for(tree), capture_output=True, text=True, cwd=tree)
    return done.stdout.strip() or done.stderr.strip().splitlines()[-1]


def commit_of(tree: Path) -> str:
    head = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "-C", str(tree), "status", "--porcelain", "--", "funnelbench"], capture_output=True, text=True
    )
    return head.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def quartiles(xs: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[2]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="checkout whose package is the baseline")
    parser.add_argument("--after", type=Path, default=ROOT, help="checkout whose package is measured against it")
    parser.add_argument("--runs", type=int, default=10, help="timed runs of each command in each checkout")
    parser.add_argument("--wait-s", type=float, default=600, help="wait at most this long for a quiet machine")
    parser.add_argument("--no-wait", action="store_true", help="do not wait for the machine to be quiet")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 runs each, no waiting")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.no_wait = 2, True
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    loaded = load_1m() if args.no_wait else round(wait_for_quiet(timeout_s=args.wait_s), 2)
    load_before = load_average()
    times = {(label, which): [] for label in COMMANDS for which in trees}
    rows = []
    for label, cmd in COMMANDS.items():  # untimed: fills the file cache
        for tree in trees.values():
            run_once(tree, cmd)
    for i in range(args.runs):
        order = list(trees) if i % 2 == 0 else list(trees)[::-1]
        for label, cmd in COMMANDS.items():
            for which in order:
                s = run_once(trees[which], cmd)
                times[label, which].append(s)
                rows.append(
                    {
                        "run": i,
                        "command": f"funnelbench {label}",
                        "checkout": which,
                        "wall_s": round(s, 4),
                        "load_1m": load_1m(),
                    }
                )
    records = []
    for label, cmd in COMMANDS.items():
        medians = {}
        for which, tree in trees.items():
            xs = times[label, which]
            q1, q3 = quartiles(xs)
            medians[which] = statistics.median(xs)
            records.append(
                {
                    "command": f"funnelbench {label}",
                    "checkout": which,
                    "commit": commit_of(tree),
                    "runs": len(xs),
                    "median_s": round(medians[which], 3),
                    "iqr_s": round(q3 - q1, 3),
                    "min_s": round(min(xs), 3),
                    "heavy_modules_loaded": heavy_modules(tree, cmd),
                }
            )
        records[-1]["before_over_after_x"] = round(medians["before"] / medians["after"], 1)
        records[-2]["before_over_after_x"] = ""
    quiet = loaded < 1.5
    notes = [
        "Wall time of a fresh `python -m funnelbench ...` process, start to exit (interpreter start, imports, the "
        "command), on PYTHONPATH=<checkout>; before and after interleaved, the order swapped every run.",
        "iqr_s: interquartile range (q3 - q1) of the runs; before_over_after_x: ratio of the medians.",
        "heavy_modules_loaded: which of torch, optuna, matplotlib, pandas, sqlalchemy the command leaves in "
        "sys.modules (tests/cli/test_startup.py checks that the new one loads none).",
        f"1-min load when the runs began: {loaded:.2f}"
        + (
            ""
            if quiet or args.no_wait
            else f" (the shared machine did not get below 1.5 within {args.wait_s:.0f} s; it ran anyway)"
        )
        + (" (--no-wait: ran without waiting for a quiet machine)" if args.no_wait else "")
        + ".",
    ]
    path = write_result(
        "bench_startup",
        records,
        "Start-up time of the command line, before and after lazy imports",
        notes,
        rows=rows,
        load_before=load_before,
    )
    print(json.dumps(records, indent=1))
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
