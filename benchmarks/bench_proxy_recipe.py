"""Why the small-ViT proxy learns slowly on real data, one factor at a time, and the recipe that
fixes it: Fashion-MNIST (Debian's dataset-fashion-mnist), the proxy's data shape (600 training
images per class, 4 epochs), 3 seeds per setting, one torch thread per run and two runs at a
time, with a linear classifier and a one-hidden-layer MLP on the same images and epochs as floors.

Every setting changes one thing from funnelbench's default recipe on the README's example model
``B4(17), h96, a3, img32, patch8`` (AdamW 1e-3, one warm-up epoch, cosine, label smoothing 0.1,
random crop with image/8 px padding, horizontal flips, ImageNet standardisation, class-token
head, batch 128); the recipe is chosen on the validation split (200 per class carved from the
training images) and the test split (the official 10,000) is read once per run, at its end.

Resumable: every finished run is a line of the run file (JSONL); a re-run skips what it holds.

    PYTHONPATH=. python benchmarks/bench_proxy_recipe.py --out results/proxy_recipe
    PYTHONPATH=. python benchmarks/bench_proxy_recipe.py --out results/proxy_recipe --group recipe
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

from benchmarks._common import load_average, markdown_table, run_appending, write_result

BASE = "B4(17), h96, a3, img32, patch8"
SHAPE = dict(train_per_class=600, val_per_class=200, epochs=4)

# (group, setting, what changes, layout, training options): one factor at a time from the default.
SETTINGS = [
    ("factor", "default", "funnelbench's default recipe", BASE, {}),
    ("factor", "lr 3e-3", "peak learning rate 3e-3", BASE, {"lr": 3e-3}),
    ("factor", "lr 6e-3", "peak learning rate 6e-3", BASE, {"lr": 6e-3}),
    ("factor", "warm-up 0.25", "warm-up 0.25 epoch instead of 1", BASE, {"warmup_epochs": 0.25}),
    ("factor", "no label smoothing", "label smoothing 0", BASE, {"label_smoothing": 0.0}),
    ("factor", "no flips", "no horizontal flips", BASE, {"hflip": False}),
    ("factor", "no crop", "no padded random crop", BASE, {"crop_pad": 0}),
    ("factor", "no augmentation", "neither flips nor crops", BASE, {"hflip": False, "crop_pad": 0}),
    ("factor", "data norm", "standardise with the training images' own mean and sd", BASE, {"norm": "data"}),
    (
        "factor",
        "avg head",
        "mean of the final tokens instead of a class token",
        "B4(16), h96, a3, img32, patch8, avg",
        {},
    ),
    (
        "factor",
        "img28 patch7",
        "28 px (no padding), 7 px patches: the same 4 x 4 grid",
        "B4(17), h96, a3, img28, patch7",
        {},
    ),
    (
        "factor",
        "img28 patch4",
        "28 px, 4 px patches: a 7 x 7 grid (49 tokens, ~3x the compute)",
        "B4(50), h96, a3, img28, patch4",
        {},
    ),
    ("factor", "deeper, narrower", "8 layers of h64 (about the same MACs)", "B8(17), h64, a2, img32, patch8", {}),
    ("factor", "shallower, wider", "2 layers of h136 (about the same MACs)", "B2(17), h136, a4, img32, patch8", {}),
    ("factor", "batch 64", "batch 64 (twice the steps)", BASE, {"batch_size": 64}),
    ("factor", "batch 32", "batch 32 (four times the steps)", BASE, {"batch_size": 32}),
]
# Round 2: the padded random crop was the factor that mattered (+21 points without it); the
# others again, on top of no crop, to find what adds to it.
NO_CROP = {"crop_pad": 0}
SETTINGS += [
    ("recipe", "no crop, lr 3e-3", "no crop, peak learning rate 3e-3", BASE, {**NO_CROP, "lr": 3e-3}),
    ("recipe", "no crop, batch 64", "no crop, batch 64", BASE, {**NO_CROP, "batch_size": 64}),
    ("recipe", "no crop, batch 32", "no crop, batch 32", BASE, {**NO_CROP, "batch_size": 32}),
    (
        "recipe",
        "no crop, data norm",
        "no crop, the training images' own mean and sd",
        BASE,
        {**NO_CROP, "norm": "data"},
    ),
    ("recipe", "no crop, img28 patch7", "no crop, 28 px with 7 px patches", "B4(17), h96, a3, img28, patch7", NO_CROP),
]
# Round 3: the search's own proxy (funnel-table-ti's proxy section: 16 px, 4 px patches, widths
# x 1/4, lr 2e-3) of three hand layouts, with today's recipe and the new one, and at 28 px / 7 px
# (the same 4 x 4 grid on the unresized images).
NEW_RECIPE = {"crop_pad": 0, "batch_size": 32}
SEARCH_PROXY = {"lr": 2e-3}
for _hand in ("B12(17), h48, a3", "B6(17)-6(9), h48, a3", "B4(17)-4(9)-4(5), max, h48, a3"):
    for _grid, _size in (("img16, patch4", 16), ("img28, patch7", 28)):
        for _recipe, _options in (("default", {}), ("new", NEW_RECIPE)):
            if _size == 28 and _recipe == "default":
                continue
            SETTINGS.append(
                (
                    "search-proxy",
                    f"{_hand.split(',')[0]} {_grid.split(',')[0]} {_recipe}",
                    f"{_hand}, {_grid}: the search's proxy, {_recipe} recipe",
                    f"{_hand}, {_grid}",
                    {**SEARCH_PROXY, **_options},
                )
            )
SEEDS = (0, 1, 2)


def data_for(image_size: int, cache_dir):
    import funnelbench as fb

    return fb.load_data(
        "fashion-mnist",
        image_size=image_size,
        train_per_class=SHAPE["train_per_class"],
        val_per_class=SHAPE["val_per_class"],
        cache_dir=cache_dir,
    )


def run_vit(setting: tuple, seed: int, cache_dir) -> dict:
    """One training of a setting (in a worker process, one torch thread)."""
    from funnelbench.train import Trainer, make_config

    group, name, what, layout, options = setting
    if "crop_pad" not in options:  # the default recipe when this benchmark was made: image size / 8 on every source
        import funnelbench as fb

        options = {**options, "crop_pad": fb.parse_layout(layout).image_size // 8}
    config = make_config(
        layout,
        data="fashion-mnist",
        seed=seed,
        threads=1,
        checkpoint="none",
        train_per_class=SHAPE["train_per_class"],
        val_per_class=SHAPE["val_per_class"],
        epochs=SHAPE["epochs"],
        **options,
    )
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        with Trainer(config, out=os.path.join(tmp, "run"), cache_dir=cache_dir) as trainer:
            rec = trainer.fit()
            history = list(trainer.history)
    return {
        "group": group,
        "setting": name,
        "what": what,
        "layout": layout,
        "options": options,
        "seed": seed,
        "status": rec["status"],
        "params": rec["params"],
        "macs": rec["macs"],
        "train_images": rec["train_images"],
        "val_images": rec["val_images"],
        "test_images": rec["test_images"],
        "val_top1": rec["val_top1"],
        "test_top1": rec["test_top1"],
        "val_top1_by_epoch": [h["val_top1"] for h in history],
        "train_img_per_s": rec["train_img_per_s"],
        "train_s": sum(h["epoch_s"] for h in history),
        "wall_s": time.time() - started,
        "load_1m_after": round(os.getloadavg()[0], 2),
    }


def run_floor(kind: str, seed: int, cache_dir, size: int = 32) -> dict:
    """A linear classifier or a one-hidden-layer MLP (256 units) on the same training images and
    epochs (the grey channel of the 32 px images, standardised; AdamW 1e-3, batch 128), plain PyTorch."""
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    data = data_for(size, cache_dir)

    def xy(split):
        x, y = split.take(range(len(split)))
        return x[:, 0].reshape(len(split), -1).float() / 255, y

    xtr, ytr = xy(data.train)
    mean, sd = xtr.mean(), xtr.std()
    model = (
        torch.nn.Linear(xtr.shape[1], 10)
        if kind == "linear"
        else torch.nn.Sequential(torch.nn.Linear(xtr.shape[1], 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    )
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    started = time.time()
    g = torch.Generator().manual_seed(seed)
    for _ in range(SHAPE["epochs"]):
        for idx in torch.randperm(len(ytr), generator=g).split(128):
            loss = torch.nn.functional.cross_entropy(model((xtr[idx] - mean) / sd), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    train_s = time.time() - started

    def top1(split):
        x, y = xy(split)
        with torch.no_grad():
            return (model((x - mean) / sd).argmax(1) == y).float().mean().item()

    return {
        "group": "floor",
        "setting": f"{kind} floor" + ("" if size == 32 else f" {size}px"),
        "what": f"{kind} classifier on the {size} px pixels",
        "layout": "",
        "options": {},
        "seed": seed,
        "status": "completed",
        "params": sum(p.numel() for p in model.parameters()),
        "macs": sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight")),
        "train_images": len(ytr),
        "val_images": len(data.val),
        "test_images": len(data.test),
        "val_top1": top1(data.val),
        "test_top1": top1(data.test),
        "val_top1_by_epoch": [],
        "train_img_per_s": SHAPE["epochs"] * len(ytr) / train_s,
        "train_s": train_s,
        "wall_s": train_s,
        "load_1m_after": round(os.getloadavg()[0], 2),
    }


def cost_rows(repeats: int, cache_dir) -> list[dict]:
    """Training images per second of the search's proxy (B6(17)-6(9) at 16 px, one thread) at
    batch 128 and batch 32, one epoch each, interleaved in one process so both see the same load."""
    import funnelbench as fb

    data = data_for(16, cache_dir)
    rows = []
    for r in range(repeats):
        for batch in (128, 32):
            rec = fb.train(
                "B6(17)-6(9), h48, a3, img16, patch4",
                out=tempfile.mkdtemp(),
                data=data,
                epochs=1,
                batch_size=batch,
                crop_pad=0,
                threads=1,
                checkpoint="none",
                overwrite=True,
            )
            rows.append(
                {
                    "repeat": r,
                    "batch": batch,
                    "train_img_per_s": rec["train_img_per_s"],
                    "load_1m": round(os.getloadavg()[0], 2),
                }
            )
            print(rows[-1], flush=True)
    return rows


def _work(item, cache_dir):
    kind, setting, seed = item
    if kind == "floor":
        return run_floor(setting[0], seed, cache_dir, setting[1])
    return run_vit(setting, seed, cache_dir)


def _mean_sd(xs):
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{100 * statistics.mean(xs):.1f} ± {100 * sd:.1f}"


def summarize(rows: list[dict]) -> list[dict]:
    """One row per setting: val and test top-1 (mean ± sd over seeds), the change of the val mean
    against the default, cost."""
    by = {}
    for r in rows:
        if r["status"] == "completed":
            by.setdefault((r["group"], r["setting"]), []).append(r)
    default = by.get(("factor", "default"))
    default_val = statistics.mean(r["val_top1"] for r in default) if default else None
    default_rate = statistics.mean(r["train_img_per_s"] for r in default) if default else None

    def base_of(group, name):
        """The search proxy's rows compare with the same layout's default recipe, the rest with the default."""
        if group == "search-proxy":
            rs = by.get((group, name.rsplit(" ", 2)[0] + " img16 default"))
            return (
                (statistics.mean(r["val_top1"] for r in rs), statistics.mean(r["train_img_per_s"] for r in rs))
                if rs
                else (None, None)
            )
        return default_val, default_rate

    out = []
    for (group, name), rs in by.items():
        val = statistics.mean(r["val_top1"] for r in rs)
        rate = statistics.mean(r["train_img_per_s"] for r in rs)
        base_val, base_rate = base_of(group, name)
        out.append(
            {
                "group": group,
                "setting": name,
                "what": rs[0]["what"],
                "layout": rs[0]["layout"],
                "seeds": len(rs),
                "MMACs": round(rs[0]["macs"] / 1e6, 2),
                "val top-1 %": _mean_sd([r["val_top1"] for r in rs]),
                "vs default (val pts)": ""
                if base_val is None or group == "floor"
                else f"{100 * (val - base_val):+.1f}",
                "test top-1 %": _mean_sd([r["test_top1"] for r in rs]),
                "train img/s": round(rate),
                "cost vs default": "" if base_rate is None or group == "floor" else f"{base_rate / rate:.2f}x",
                "train s/run": round(statistics.mean(r["train_s"] for r in rs), 1),
            }
        )
    return out


def out_name(args) -> str:
    return Path(args.out).name


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="results/proxy_recipe", help="prefix of the .md, .csv and _runs.jsonl files")
    parser.add_argument("--group", nargs="+", default=["floor", "factor"], help="which groups of settings to run")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one torch thread each)")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument(
        "--cost",
        type=int,
        default=0,
        metavar="REPEATS",
        help="only measure the images per second at batch 128 and 32, interleaved, REPEATS times",
    )
    args = parser.parse_args(argv)
    if args.cost:
        rows = cost_rows(args.cost, args.cache_dir)
        ratios = [a["train_img_per_s"] / b["train_img_per_s"] for a, b in zip(rows[::2], rows[1::2])]
        write_result(
            out_name(args) + "_cost",
            rows,
            "The search proxy's training speed at batch 128 and 32",
            [
                f"Batch 128 over batch 32, images per second, per interleaved pair: "
                f"{', '.join(f'{x:.2f}' for x in ratios)} (median {statistics.median(ratios):.2f}).",
                "One process, one torch thread, 6,000 Fashion-MNIST images at 16 px, one epoch each; the machine was "
                "shared with other work, so only the ratio within a pair means something.",
            ],
            folder=Path(args.out).parent,
            argv=sys.argv[1:] if argv is None else argv,
        )
        return

    out = Path(args.out)
    runs_path = out.with_name(out.name + "_runs.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = (
        [json.loads(line) for line in runs_path.read_text().splitlines() if line.strip()] if runs_path.exists() else []
    )
    done = {(r["setting"], r["seed"]) for r in rows}
    todo = []
    if "floor" in args.group:
        todo += [("floor", (kind, size), seed) for size in (32, 16) for kind in ("linear", "mlp") for seed in SEEDS]
    todo += [("vit", s, seed) for s in SETTINGS if s[0] in args.group for seed in SEEDS]

    def name(t):
        return (f"{t[1][0]} floor" + ("" if t[1][1] == 32 else f" {t[1][1]}px")) if t[0] == "floor" else t[1][1]

    todo = [t for t in todo if (name(t), t[2]) not in done]
    for size in {32, 28, 16}:
        data_for(size, args.cache_dir)  # build the caches once, before the workers start
    load_before = load_average()
    started = time.time()
    rows += run_appending(
        args.jobs,
        [(_work, item, args.cache_dir) for item in todo],
        runs_path,
        lambda i, row: (
            f"{row['setting']:22s} seed {row['seed']}: val {100 * row['val_top1']:.1f} test "
            f"{100 * row['test_top1']:.1f} | {row['train_s']:.0f} s, {row['train_img_per_s']:.0f} img/s"
        ),
    )
    summary = summarize(rows)
    total = sum(r["wall_s"] for r in rows)
    notes = [
        f"{len(rows)} runs, {total / 60:.1f} min of run time in all (this invocation {(time.time() - started) / 60:.1f} min "
        f"of wall time, {args.jobs} runs at a time, one torch thread each).",
        "Data: Fashion-MNIST, 600 training images per class (6,000), validation 200 per class carved from the training "
        "images (2,000; what the recipe is chosen on), test the official 10,000 (read once per run, at its end). "
        "Images are 28 px grey replicated to 3 channels, padded to 32 px (img28 settings: unpadded).",
        "Cost: img/s is measured with two runs sharing the 2 cores (and other work at times): compare the ratios "
        "within this table, not with other files.",
    ]
    notes.append(
        "Made by: `--group floor factor` (round 1), `--group recipe` (round 2), `--group floor search-proxy` "
        "(round 3), one after another on 2 cores shared with other work; `--group none` rewrites this summary "
        "from the run file; `--cost 3` measures the speed of batch 32 (proxy_recipe_cost.md)."
    )
    notes.append(
        "vs default: the change of the mean validation top-1 against the default recipe on the same model "
        "(the search proxy's rows: against the same layout's default); cost vs default likewise."
    )
    write_result(
        out.name,
        summary,
        "The proxy's recipe on Fashion-MNIST, one factor at a time (3 seeds)",
        notes,
        load_before=load_before,
        folder=out.parent,
        argv=sys.argv[1:] if argv is None else argv,
    )
    print(markdown_table(summary))


if __name__ == "__main__":
    main()
