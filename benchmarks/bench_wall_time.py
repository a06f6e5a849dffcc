"""Wall-time targets of issue 3.

* The analytic count of params and MACs of every preset together: well under 1 s (it feeds the
  search's feasibility check). Timed in this process, best of 20 rounds, after one warm round.
* One ``funnelbench profile`` of a DeiT-Ti layout at batch 8 on CPU with all metrics (training
  and inference throughput, peak memory, the estimate, fvcore and FlopCounterMode
  cross-checks): under 30 s wall, timed as a fresh process from start to exit (imports
  included).

    PYTHONPATH=. python benchmarks/bench_wall_time.py
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import funnelbench as fb
from benchmarks._common import load_1m, load_note, machine, wait_for_quiet, write_result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-wait", action="store_true")
    args = parser.parse_args()
    load = None if args.no_wait else wait_for_quiet()
    names = fb.list_presets()
    fb.count(names[0])
    rounds = []
    for _ in range(20):
        t0 = time.perf_counter()
        for name in names:
            fb.count(name)
        rounds.append(time.perf_counter() - t0)
    count_s = min(rounds)

    cmd = [
        sys.executable,
        "-m",
        "funnelbench",
        "profile",
        "deit-ti",
        "--batch-size",
        "8",
        "--counters",
        "--device",
        "cpu",
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    if not args.no_wait:
        load = wait_for_quiet()
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    profile_s = time.perf_counter() - t0
    load_after = load_1m()
    if out.returncode:
        raise SystemExit(out.stderr)
    print(out.stdout)
    rows = [
        {
            "target": f"count all {len(names)} presets",
            "limit_s": 1.0,
            "measured_s": round(count_s, 5),
            "per_layout_us": round(1e6 * count_s / len(names), 1),
            "met": count_s < 1.0,
        },
        {
            "target": "funnelbench profile deit-ti --batch-size 8 --counters (fresh process)",
            "limit_s": 30.0,
            "measured_s": round(profile_s, 2),
            "per_layout_us": None,
            "met": profile_s < 30.0,
            "load_after": load_after,
        },
    ]
    notes = [
        "count: best of 20 rounds over every preset in this process; profile: wall time of `"
        + " ".join(["python", *cmd[1:]])
        + "` from start to exit, with its default 2 warm-up steps and 5 timed "
        "repeats for training and for inference, peak memory of both, the estimate and both MAC counters.",
        load_note(load),
        "The profile's own output:\n\n```\n" + out.stdout.strip() + "\n```",
    ]
    path = write_result("bench_wall_time", rows, "Wall-time targets: analytic counts and one DeiT-Ti profile", notes)
    print(f"wrote {path}; {machine()}")


if __name__ == "__main__":
    main()
