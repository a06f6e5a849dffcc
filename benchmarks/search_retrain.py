"""Re-train a search's pick and the best hand layout with fresh seeds, at the search's own schedule.

A search picks its best layout on one seed, so that trial's top-1 is biased upwards (the
winner's curse). This script reads a finished study, takes the best searched layout (a trained
trial within every budget, not a baseline) and the best hand layout (the best baseline within
every budget), and trains each with ``--seeds`` fresh seeds at exactly the proxy settings the
study stored. Every finished run is appended to ``<out>.jsonl`` at once, so an interrupted run
resumes where it stopped; the summary (mean and spread per layout) goes to ``<out>.md``/``.csv``.

    PYTHONPATH=. python benchmarks/search_retrain.py --study reinvest-ti --out-dir /work/runs/runs/search \
        --seeds 1 2 3 --out results/search-reinvest-ti-retrain
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import funnelbench as fb
from benchmarks._common import write_result
from funnelbench.search.report import front_trials, open_study
from funnelbench.search.study import train_trial


def picks(study) -> dict[str, str]:
    """{'search': layout, 'hand': layout}: the best feasible searched trial and the best feasible baseline."""
    best = [t for t in front_trials(study) if not t.user_attrs.get("baseline")]
    hand = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.user_attrs.get("baseline")
        and t.user_attrs.get("status") == "completed"
        and all(v <= 0 for v in t.constraints.values())
    ]
    if not best or not hand:
        raise SystemExit("the study has no trained searched trial or no trained baseline within budget yet")
    sign = 1 if study.directions[0].name == "MAXIMIZE" else -1
    top = max(hand, key=lambda t: sign * t.values[0])
    if best[0].values[0] * sign < top.values[0] * sign:  # the front holds baselines too: take the best non-baseline
        searched = [
            t
            for t in study.get_trials(deepcopy=False)
            if not t.user_attrs.get("baseline")
            and t.user_attrs.get("status") == "completed"
            and t.user_attrs.get("duplicate_of") is None
            and all(v <= 0 for v in t.constraints.values())
        ]
        best = sorted(searched, key=lambda t: -sign * t.values[0])
    return {
        "search": best[0].user_attrs["target_layout"],
        "hand": top.user_attrs["target_layout"],
        "search_trial": best[0].number,
        "hand_trial": top.number,
        "search_top1_in_study": best[0].user_attrs["top1"],
        "hand_top1_in_study": top.user_attrs["top1"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--study", required=True)
    ap.add_argument("--out-dir", default="runs/search", help="folder that holds the study's folder")
    ap.add_argument("--storage", default=None)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--out", default="results/search-retrain", help="results path without suffix")
    ap.add_argument("--runs", default="runs/search-retrain", help="folder for the training runs")
    args = ap.parse_args()

    study = open_study(args.study, args.storage, args.out_dir)
    chosen = picks(study)
    proxy = dict(study.user_attrs["settings"]["proxy"])
    out = Path(args.out)
    log = out.with_suffix(".jsonl")
    done = {}
    if log.exists():
        for line in log.read_text().splitlines():
            row = json.loads(line)
            done[(row["pick"], row["layout"], row["seed"])] = row
    data = fb.load_data(
        proxy.get("data"),
        image_size=proxy["image_size"],
        classes=proxy.get("classes"),
        train_per_class=proxy.get("train_per_class"),
        val_per_class=proxy.get("val_per_class"),
        subset_seed=proxy.get("subset_seed", 0),
    )
    rows = []
    for pick in ("search", "hand"):
        layout = chosen[pick]
        for seed in args.seeds:
            key = (pick, layout, seed)
            if key not in done:
                started = time.time()
                # the search's own adapter to the trainer: the trial's schedule exactly, another seed
                rec = train_trial(
                    layout,
                    out=Path(args.runs) / f"{pick}-seed{seed}",
                    data=data,
                    proxy={**proxy, "seed": seed, "checkpoint": "none"},
                )
                row = {
                    "pick": pick,
                    "layout": layout,
                    "seed": seed,
                    "top1": round(100 * rec["best_val_top1"], 2),
                    "final_top1": round(100 * rec["val_top1"], 2),
                    "status": rec["status"],
                    "wall_s": round(time.time() - started, 1),
                }
                log.parent.mkdir(parents=True, exist_ok=True)
                with open(log, "a") as f:
                    f.write(json.dumps(row) + "\n")
                done[key] = row
                print(json.dumps(row), flush=True)
            rows.append(done[key])
    summary = []
    for pick in ("search", "hand"):
        tops = [r["top1"] for r in rows if r["pick"] == pick]
        summary.append(
            {
                "pick": pick,
                "layout": chosen[pick],
                "trial": chosen[f"{pick}_trial"],
                "top1_in_study_seed0": chosen[f"{pick}_top1_in_study"],
                "macs": fb.count(chosen[pick]).macs,
                "seeds": len(tops),
                "top1_mean": round(statistics.mean(tops), 2),
                "top1_std": round(statistics.stdev(tops), 2) if len(tops) > 1 else None,
                "top1_min": min(tops),
                "top1_max": max(tops),
            }
        )
    diff = summary[0]["top1_mean"] - summary[1]["top1_mean"]
    notes = [
        f"Proxy (the study's own settings): {json.dumps({k: proxy[k] for k in ('image_size', 'patch_size', 'width_scale', 'epochs', 'batch_size', 'lr', 'train_per_class', 'val_per_class') if k in proxy})}.",
        f"Fresh seeds {args.seeds} (the search trained each layout once, with seed {proxy.get('seed', 0)}).",
        f"Search pick minus best hand layout: {diff:+.2f} points of top-1 (mean over seeds); "
        "top1_std is the sample standard deviation over seeds.",
        "Built-in synthetic data: this says how the layouts rank on this proxy task, nothing about ImageNet.",
    ]
    write_result(
        out.name,
        summary,
        f"Re-training the search's pick and the best hand layout ({args.study})",
        notes,
        rows=rows,
        folder=out.parent,
    )
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
