"""A tabular benchmark of token-pooling ViTs on Fashion-MNIST: every layout of the sub-space
``funnel-table-ti`` within DeiT-Ti's MACs, trained at the search's proxy (the space's proxy section, 600 training images per class) with 2 seeds, every
epoch's validation and test top-1 stored with the seconds it took; then a reference of about 30
of them (the proxy's top 10, 14 drawn at random, every hand layout) at 3x the proxy's epochs.

The table is what NAS-Bench-201 is for cell search: searchers run on it hundreds of times,
looking a training up instead of running it (a random one of its stored seeds), so their regret
curves have confidence bands; and it is a dataset others can reuse (``results/table_fashion_mnist_runs.jsonl``).

How the sub-space was chosen (``funnelbench/spaces/funnel-table-ti.yaml``): the decisions of
``funnel-reinvest-ti`` (1-3 stages, 2-12 layers, 8-16 in all, stride 2 or 4 into the second stage,
mean or max pooling) at h192 / m768 with depths in steps of two, the third stage's pool always 2x
and one pooling operator per model, kept where the layout's MACs are between 0.7 G and DeiT-Ti's
1.26 G: 173 layouts, 6 of them the paper's hand designs.

Resumable: every finished training is a line of the run file; a re-run skips what it holds.
One torch thread per training, ``--jobs`` trainings at a time.

    PYTHONPATH=. python benchmarks/bench_table.py --phase proxy
    PYTHONPATH=. python benchmarks/bench_table.py --phase reference
    PYTHONPATH=. python benchmarks/bench_table.py --phase constant   # the same layouts, --schedule constant
    PYTHONPATH=. python benchmarks/bench_table.py --phase wsd        # ... --schedule wsd, 1, 2 and 4 epochs
    PYTHONPATH=. python benchmarks/bench_table.py --phase summary
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import load_average, markdown_table, run_appending, train_with_test_curve, write_result
from funnelbench.search.asha import rungs

SPACE = "funnel-table-ti"
BUDGET_MACS, MIN_MACS = 1.26e9, 0.7e9
DATA = "fashion-mnist"
PROXY_SEEDS = (0, 1)
REFERENCE_SEEDS = (0, 1)
# The proxy trains on 600 images per class (6,000: about 40 s of training on one core); the
# reference on the same images for 3x the epochs (a cosine schedule of 12 epochs; about 2 min),
# reading the test split after every 4th epoch. Cut from 2.5x the images for 4x the epochs
# (~10 min a training, ~5 h for the phase on 2 cores) so the reference and the live runs'
# re-trainings fit the sessions; it ranks the layouts by a longer training, not by more data.
PROXY_TRAIN_PER_CLASS = 600
REFERENCE = {"train_per_class": 600, "epochs_factor": 3}
REFERENCE_TOP, REFERENCE_RANDOM = 10, 14
# The epochs of the 4-epoch proxy at which successive halving judges: 1, 2, 4 (search --fidelity
# asha's rungs for --min-epochs 1 --max-epochs 4 --reduction 2). table_searchers reads the stored
# curves at these epochs; --phase wsd trains the reference's layouts for each of them with
# --schedule wsd, each run decaying at its own end: what a rung of ASHA would read if its result
# came after a short decay branched from the stable run (phases "wsd-1", "wsd-2", "wsd-4")
ASHA_ETA = 2
ASHA_RUNGS = rungs(1, 4, ASHA_ETA)


def table_layouts() -> tuple[list, list[str]]:
    """The sub-space's layouts within the budgets (the tool's own enumeration and budget judge),
    and the hand layouts among them."""
    from funnelbench.search import load_space
    from funnelbench.search.budget import Budgets, over_budget
    from funnelbench.search.feasible import LayoutDraws

    space = load_space(SPACE)
    budgets = Budgets(macs=BUDGET_MACS, min_macs=MIN_MACS)
    layouts = [lay for lay in LayoutDraws(space).layouts() if not over_budget(budgets.judge(lay)[1])]
    hand = [str(b) for b in space.baselines if str(b) in {str(lay) for lay in layouts}]
    return layouts, hand


def proxy_options(phase: str) -> dict:
    """The training options of a phase: the space's proxy section (what ``funnelbench search``
    trains), on Fashion-MNIST; the reference trains longer on more images."""
    from funnelbench.search import load_space

    options = {
        **load_space(SPACE).proxy,
        "data": DATA,
        "train_per_class": PROXY_TRAIN_PER_CLASS,
        "threads": 1,
        "checkpoint": "none",
    }
    if phase == "reference":
        options["train_per_class"] = REFERENCE["train_per_class"]
        options["epochs"] = options["epochs"] * REFERENCE["epochs_factor"]
    if phase == "constant":  # the proxy with the schedule --fidelity asha trains with (issue 25)
        options["schedule"] = "constant"
    if phase.startswith("wsd-"):  # a rung's epochs, warm-up / stable / decay
        options["schedule"], options["epochs"] = "wsd", int(phase.removeprefix("wsd-"))
    return options


def train_one(phase: str, layout: str, seed: int, cache_dir) -> dict:
    from funnelbench.cost import count
    from funnelbench.layout import parse_layout
    from funnelbench.train import make_config, proxy_layout

    options = proxy_options(phase)
    config = make_config(layout, seed=seed, **options)
    with tempfile.TemporaryDirectory() as tmp:
        test_every = proxy_options("proxy")["epochs"] if phase == "reference" else 1
        rec = train_with_test_curve(config, os.path.join(tmp, "run"), cache_dir=cache_dir, test_every=test_every)
    full = count(parse_layout(layout))
    proxy = proxy_layout(layout, config.image_size, config.patch_size, config.width_scale)
    return {
        "phase": phase,
        "layout": layout,
        "seed": seed,
        "status": rec["status"],
        "macs": full.macs,
        "params": full.params,
        "proxy_layout": str(proxy),
        "proxy_macs": rec["macs"],
        "proxy_params": rec["params"],
        "epochs": rec["epochs_done"],
        "train_images": rec["train_images"],
        "val_images": rec["val_images"],
        "test_images": rec["test_images"],
        "val_top1": rec["val_top1"],
        "test_top1": rec["test_top1"],
        **{
            k: rec[k]
            for k in (
                "val_top1_by_epoch",
                "test_top1_by_epoch",
                "train_s_by_epoch",
                "val_s_by_epoch",
                "test_s_by_epoch",
                "wall_s",
            )
        },
        "train_s": sum(rec["train_s_by_epoch"]),
        "train_img_per_s": rec["train_img_per_s"],
        "options": {k: v for k, v in options.items() if k not in ("threads", "checkpoint")},
        "load_1m_after": round(os.getloadavg()[0], 2),
    }


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def reference_layouts(rows: list[dict], hand: list[str]) -> list[str]:
    """The proxy's top ``REFERENCE_TOP`` by mean validation top-1, ``REFERENCE_RANDOM`` drawn
    (seed 0) from the rest, and every hand layout."""
    proxy = _means(rows, "proxy", "val_top1")
    ranked = sorted(proxy, key=proxy.get, reverse=True)
    top = ranked[:REFERENCE_TOP]
    rest = sorted(set(ranked) - set(top) - set(hand))
    drawn = random.Random(0).sample(rest, min(REFERENCE_RANDOM, len(rest)))
    return list(dict.fromkeys(top + drawn + hand))


def _means(rows: list[dict], phase: str, key: str) -> dict[str, float]:
    by: dict[str, list[float]] = {}
    for r in rows:
        if r["phase"] == phase and r["status"] == "completed":
            by.setdefault(r["layout"], []).append(r[key])
    return {k: statistics.mean(v) for k, v in by.items()}


def summary(rows: list[dict], layouts: list, hand: list[str]) -> list[dict]:
    from funnelbench.cost import count

    out = []
    for lay in layouts:
        text = str(lay)
        rs = {
            p: [r for r in rows if r["layout"] == text and r["phase"] == p and r["status"] == "completed"]
            for p in ("proxy", "reference")
        }
        c = count(lay)

        def mean(p, k):
            return round(100 * statistics.mean(r[k] for r in rs[p]), 2) if rs[p] else None

        out.append(
            {
                "layout": text,
                "hand": text in hand,
                "GMACs": round(c.macs / 1e9, 3),
                "M params": round(c.params / 1e6, 2),
                "stages": len(lay.stages),
                "proxy seeds": len(rs["proxy"]),
                "proxy val top-1": mean("proxy", "val_top1"),
                "proxy test top-1": mean("proxy", "test_top1"),
                "proxy train s": round(statistics.mean(r["train_s"] for r in rs["proxy"]), 1) if rs["proxy"] else None,
                "reference seeds": len(rs["reference"]),
                "reference val top-1": mean("reference", "val_top1"),
                "reference test top-1": mean("reference", "test_top1"),
            }
        )
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phase", choices=("proxy", "reference", "constant", "wsd", "summary"), default="proxy")
    parser.add_argument(
        "--out", default="results/table_fashion_mnist", help="prefix of the .md, .csv and _runs.jsonl files"
    )
    parser.add_argument("--jobs", type=int, default=2, help="trainings at a time (one torch thread each)")
    parser.add_argument("--limit", type=int, default=None, help="train at most this many now (the rest on a re-run)")
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args(argv)

    out = Path(args.out)
    runs_path = out.with_name(out.name + "_runs.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = read_rows(runs_path)
    layouts, hand = table_layouts()
    done = {(r["phase"], r["layout"], r["seed"]) for r in rows}
    if args.phase == "proxy":
        todo = [("proxy", str(lay), s) for s in PROXY_SEEDS for lay in layouts]
    elif args.phase in ("reference", "constant", "wsd"):
        proxy_done = {(r["layout"], r["seed"]) for r in rows if r["phase"] == "proxy"}
        if len(proxy_done) < len(layouts) * len(PROXY_SEEDS):
            sys.exit(
                f"error: the proxy phase has {len(proxy_done)} of {len(layouts) * len(PROXY_SEEDS)} trainings; "
                "finish it first (--phase proxy)"
            )
        # constant: the reference's layouts at the proxy with --schedule constant; does a rung
        # (epoch k of it) rank them as well as epoch k of the cosine proxy? (bench_table_fidelity.py)
        seeds = REFERENCE_SEEDS if args.phase == "reference" else PROXY_SEEDS
        phases = [f"wsd-{e}" for e in ASHA_RUNGS] if args.phase == "wsd" else [args.phase]
        todo = [(p, lay, s) for s in seeds for p in phases for lay in reference_layouts(rows, hand)]
    else:
        todo = []
    todo = [t for t in todo if t not in done][: args.limit]
    load_before = load_average()
    started = time.time()
    if todo:
        print(f"{len(todo)} trainings to run ({len(done)} in {runs_path})", flush=True)
        rows += run_appending(
            args.jobs,
            [(train_one, *t, args.cache_dir) for t in todo],
            runs_path,
            lambda i, row: (
                f"[{i}/{len(todo)}] {row['phase']} {row['layout']:40s} seed {row['seed']}: val "
                f"{100 * row['val_top1']:.1f} test {100 * row['test_top1']:.1f} | {row['train_s']:.0f} s"
            ),
        )
    table = summary(rows, layouts, hand)
    n_proxy = sum(r["phase"] == "proxy" for r in rows)
    n_ref = sum(r["phase"] == "reference" for r in rows)
    total = sum(r["wall_s"] for r in rows)
    notes = [
        f"{len(layouts)} layouts of `{SPACE}` with {MIN_MACS / 1e9:.2f}-{BUDGET_MACS / 1e9:.2f} GMACs (full size), "
        f"{len(hand)} of them the paper's hand designs; {n_proxy} proxy trainings and {n_ref} reference trainings "
        f"stored, {total / 3600:.2f} h of run time in all ({args.jobs} at a time, one torch thread each).",
        f"Proxy: the space's proxy section ({proxy_options('proxy')}), seeds {PROXY_SEEDS}. Reference: "
        f"{REFERENCE['train_per_class']} images per class, {REFERENCE['epochs_factor']}x the epochs, seeds "
        f"{REFERENCE_SEEDS}, on the proxy's top {REFERENCE_TOP}, {REFERENCE_RANDOM} drawn at random and the hand layouts.",
        "Validation: carved from the training images (what a search reads); test: the official 10,000 (read after "
        "every epoch by this benchmark, never by a decision). Per-training rows with per-epoch curves and seconds: "
        f"{runs_path.name}.",
    ]
    write_result(
        out.name,
        table,
        "A tabular benchmark of token-pooling ViTs on Fashion-MNIST",
        notes,
        load_before=load_before,
        folder=out.parent,
        argv=sys.argv[1:] if argv is None else argv,
    )
    print(f"{n_proxy} proxy, {n_ref} reference trainings; this invocation {(time.time() - started) / 60:.1f} min")
    if args.phase == "summary":
        print(markdown_table(table))


if __name__ == "__main__":
    main()
