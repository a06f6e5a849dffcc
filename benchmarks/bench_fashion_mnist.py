"""Real data: a small ViT and two Funnel-ViTs on Fashion-MNIST (Debian's dataset-fashion-mnist),
3 seeds each, at the tiny-proxy shape (tens of seconds a run) and at a longer schedule (a few
minutes a run), on CPU with one torch thread per run.

What it shows: how far apart the layouts are on real images, how large the seed noise is, how
long an epoch takes here, and whether validation (5,000 training images carved out: what
selection reads) tracks test (the official 10,000, never used to choose anything). The per-epoch
test top-1 is this benchmark's own measurement (an epoch hook after each epoch); the trainer
itself reads the test split once, at the end, and a search never sees it.

Resumable: every finished run is a line of the run file (JSONL); a re-run skips the runs it
holds and writes the summary from all of them.

    PYTHONPATH=. python benchmarks/bench_fashion_mnist.py --out results/fashion_mnist
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import funnelbench as fb
from benchmarks._common import load_average, machine, markdown_table, train_with_test_curve, write_result
from funnelbench.train import make_config

LAYOUTS = [
    ("ViT, 16 patch tokens throughout", "B4(17), h96, a3, img32, patch8"),
    ("Funnel-ViT, mean-pool to 8 after 2 layers", "B2(17)-2(9), h96, a3, img32, patch8"),
    ("Funnel-ViT, mean-pool to 4 after 1 layer", "B1(17)-3(5), h96, a3, img32, patch8"),
]
# The two schedules: the data subset and epochs of each (the recipe is funnelbench's default).
SHAPES = {
    "tiny": dict(train_per_class=600, val_per_class=100, epochs=4),  # 6,000 train / 1,000 val images
    "long": dict(train_per_class=1500, val_per_class=500, epochs=6),  # 15,000 train / 5,000 val images
}


def run_one(shape: str, layout: str, seed: int, data, tmp: str) -> dict:
    options = {k: v for k, v in SHAPES[shape].items() if k in ("epochs",)}
    config = make_config(
        layout,
        data="fashion-mnist",
        seed=seed,
        threads=1,
        checkpoint="none",
        train_per_class=SHAPES[shape]["train_per_class"],
        val_per_class=SHAPES[shape]["val_per_class"],
        **options,
    )
    rec = train_with_test_curve(config, os.path.join(tmp, f"{shape}-{seed}-{abs(hash(layout))}"), data=data)
    return {
        "shape": shape,
        "layout": layout,
        "seed": seed,
        "status": rec["status"],
        "train_images": rec["train_images"],
        "val_images": rec["val_images"],
        "test_images": rec["test_images"],
        "epochs": rec["epochs_done"],
        "params": rec["params"],
        "macs": rec["macs"],
        "val_top1": rec["val_top1"],
        "best_val_top1": rec["best_val_top1"],
        "best_epoch": rec["best_epoch"],
        "test_top1": rec["test_top1"],
        **{
            k: rec[k]
            for k in (
                "val_top1_by_epoch",
                "test_top1_by_epoch",
                "train_s_by_epoch",
                "val_s_by_epoch",
                "test_s_by_epoch",
            )
        },
        "train_img_per_s": rec["train_img_per_s"],
        "wall_s": rec["wall_s"],
        "threads": 1,
        "load_1m_after": round(os.getloadavg()[0], 2),
        "machine": machine(),
    }


def _mean_sd(xs: list[float]) -> str:
    if not xs:
        return ""
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{100 * statistics.mean(xs):.2f} ± {100 * sd:.2f}"


def _range(xs: list[float]) -> str:
    return f"{100 * min(xs):.1f}-{100 * max(xs):.1f}" if xs else ""


def summarize(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """One row per shape and layout (mean ± sd over seeds, ranges, seconds per epoch), and the
    per-epoch curves (mean over seeds)."""
    summary, curves = [], []
    for shape in SHAPES:
        for what, layout in LAYOUTS:
            rs = [r for r in rows if r["shape"] == shape and r["layout"] == layout and r["status"] == "completed"]
            if not rs:
                continue
            summary.append(
                {
                    "shape": shape,
                    "model": what,
                    "layout": layout,
                    "seeds": len(rs),
                    "train/val/test images": f"{rs[0]['train_images']}/{rs[0]['val_images']}/{rs[0]['test_images']}",
                    "epochs": rs[0]["epochs"],
                    "M params": round(rs[0]["params"] / 1e6, 3),
                    "MMACs": round(rs[0]["macs"] / 1e6, 1),
                    "final val top-1 % (mean ± sd)": _mean_sd([r["val_top1"] for r in rs]),
                    "test top-1 % (mean ± sd)": _mean_sd([r["test_top1"] for r in rs]),
                    "test top-1 range %": _range([r["test_top1"] for r in rs]),
                    "test - val (pts)": round(100 * statistics.mean(r["test_top1"] - r["val_top1"] for r in rs), 2),
                    "train s/epoch": round(statistics.mean(s for r in rs for s in r["train_s_by_epoch"]), 1),
                    "val s/epoch": round(statistics.mean(s for r in rs for s in r["val_s_by_epoch"]), 1),
                    "test s/pass": round(statistics.mean(s for r in rs for s in r["test_s_by_epoch"]), 1),
                    "train img/s": round(statistics.mean(r["train_img_per_s"] for r in rs)),
                    "wall s/run": round(statistics.mean(r["wall_s"] for r in rs)),
                }
            )
            for e in range(rs[0]["epochs"]):
                curves.append(
                    {
                        "shape": shape,
                        "layout": layout,
                        "epoch": e + 1,
                        "val top-1 % (mean ± sd)": _mean_sd([r["val_top1_by_epoch"][e] for r in rs]),
                        "test top-1 % (mean ± sd)": _mean_sd([r["test_top1_by_epoch"][e] for r in rs]),
                    }
                )
    return summary, curves


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--out", default="results/fashion_mnist", help="prefix of the .md, .csv and _runs.jsonl files")
    parser.add_argument("--cache-dir", default=None, help="the data cache (default: funnelbench's)")
    args = parser.parse_args(argv)

    out = Path(args.out)
    runs_path = out.with_name(out.name + "_runs.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = (
        [json.loads(line) for line in runs_path.read_text().splitlines() if line.strip()] if runs_path.exists() else []
    )
    done = {(r["shape"], r["layout"], r["seed"]) for r in rows}
    load_before = load_average()
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.shapes:
            todo = [(layout, seed) for _, layout in LAYOUTS for seed in args.seeds if (shape, layout, seed) not in done]
            if not todo:
                continue
            s = SHAPES[shape]
            data = fb.load_data(
                "fashion-mnist",
                image_size=32,
                train_per_class=s["train_per_class"],
                val_per_class=s["val_per_class"],
                cache_dir=args.cache_dir,
            )
            for layout, seed in todo:
                row = run_one(shape, layout, seed, data, tmp)
                rows.append(row)
                with open(runs_path, "a") as f:
                    f.write(json.dumps(row) + "\n")
                print(
                    f"{shape} {layout:38s} seed {seed}: val {' '.join(f'{100 * v:.1f}' for v in row['val_top1_by_epoch'])}"
                    f" | test {' '.join(f'{100 * v:.1f}' for v in row['test_top1_by_epoch'])}"
                    f" | {row['wall_s']:.0f} s, {row['train_img_per_s']:.0f} img/s",
                    flush=True,
                )
    summary, curves = summarize(rows)
    total_s = sum(r["wall_s"] for r in rows)
    notes = [
        f"Wall time of the {len(rows)} runs: {total_s / 60:.1f} min in all (this invocation: "
        f"{(time.time() - started) / 60:.1f} min); one torch thread per run, runs one after another.",
        "The machine was shared with other work (several engineers' tests on 2 cores): seconds per epoch are noisy "
        "and slower than on a quiet machine; the accuracies do not depend on it (same seed, same numbers on CPU).",
        "Data: Fashion-MNIST from Debian's package (28 px grey, replicated to 3 channels, padded to 32 px). "
        "Validation: carved from the 60,000 training images (a fixed, stratified, seeded share per class; "
        "the tiny shape uses 100 per class of it, the long one the default 500); training images: a subset of the rest "
        "(--train-per-class, --subset-seed 0); test: the official 10,000, read after every epoch by this benchmark "
        "only (the trainer reads it once, at the end).",
        "Recipe: funnelbench's defaults (AdamW 1e-3, 1 warm-up epoch, cosine, label smoothing 0.1, random crop "
        "with 4 px padding, horizontal flips), batch 128, fp32.",
        f"Per-run rows (per-epoch val and test top-1, seconds per epoch): {runs_path.name}; per-epoch means: "
        f"{out.name}_curves.csv.",
    ]
    write_result(
        out.name,
        summary,
        "Fashion-MNIST: a ViT and two Funnel-ViTs, 3 seeds, two schedules",
        notes,
        rows=curves,
        rows_suffix="_curves",
        load_before=load_before,
        folder=out.parent,
        argv=sys.argv[1:] if argv is None else argv,
    )
    print(markdown_table(summary))


if __name__ == "__main__":
    main()
