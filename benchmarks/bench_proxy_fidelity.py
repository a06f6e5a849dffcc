"""How far to trust the search's proxy: does a short, small, low-resolution training rank layouts
the way a 5x longer training does?

Layouts: ``--layouts`` points of the ``funnel-reinvest-ti`` space within DeiT-Ti's MACs (sampled
at random, then picked at evenly spaced MACs quantiles), plus the space's baselines (the
Funnel-ViT paper's Table 2 and 4 rows, widths x 1/4). Each trains at:

- ``proxy``: the proxy the committed search used (32 px, 8 px patches, widths x 1/4, 4 epochs of
  the built-in data, lr 2e-3), two seeds;
- ``long``: the same with 5x the epochs (20), two seeds: the reference ranking;
- one knob of the proxy changed at a time (epochs, image size, width, share of the data), one seed,
  on ``--knob-layouts`` of the layouts (spread over the MACs range), compared on those layouts.

Every finished run is appended to ``<out>.jsonl`` at once (two worker processes, one torch thread
each), so a killed run resumes where it stopped; ``--analyse`` (or the end of a run) writes
``<out>.md``/``.csv`` and a scatter plot from whatever rows exist.

    PYTHONPATH=. python benchmarks/bench_proxy_fidelity.py --out results/proxy_fidelity --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

from benchmarks._ranks import bootstrap_interval, kendall_tau, paired_difference_interval, spearman_rho

SPACE = "funnel-reinvest-ti"
BUDGET_MACS = 1_260_000_000  # DeiT-Ti, B12(197), h192, is 1.254 GMACs
PROXY = {
    "image_size": 32,
    "patch_size": 8,
    "width_scale": 0.25,
    "epochs": 4,
    "lr": 2e-3,
    "batch_size": 128,
    "train_per_class": 1000,
}
LONG_FACTOR = 5
# name: (what changes from PROXY, seeds, what it says). The order is the order of the work: the
# proxy and the reference on every layout first, then one knob at a time on --knob-layouts of them.
CONFIGS = {
    "proxy": ({}, (0, 1), "the committed search's proxy"),
    "long": ({"epochs": PROXY["epochs"] * LONG_FACTOR}, (0, 1), f"{LONG_FACTOR}x the epochs: the reference"),
    "epochs-8": ({"epochs": 8}, (0,), "epochs x 2"),
    "data-50%": ({"train_per_class": 500}, (0,), "half the training images"),
    "width-0.5": ({"width_scale": 0.5}, (0,), "widths x 1/2 instead of x 1/4"),
    "image-16": (
        {"image_size": 16, "patch_size": 4},
        (0, 1),
        "16 px with 4 px patches: the same 4 x 4 grid, a quarter of the pixels, at the same cost",
    ),
    "epochs-2": ({"epochs": 2}, (0,), "epochs / 2"),
}
# trained on every layout; the others on --knob-layouts of them. image-16 joined after its first
# 12 layouts ranked as well as the proxy at the same cost: a candidate for the default.
FULL_CONFIGS = ("proxy", "long", "image-16")
# the configuration funnel-reinvest-ti's proxy section is (tests/test_bench_ranks.py ties the two):
# it ranked the 27 layouts better than "proxy" with both seeds, beyond the paired bootstrap's noise
DEFAULT_CONFIG = "image-16"
CHANCE_PCT = 12.5  # 8 classes
TRAINED_PCT = 98.0  # a layout "trains" when both its long runs reach this top-1


def settings(config: str) -> dict:
    return {**PROXY, **CONFIGS[config][0]}


def choose_layouts(n: int, seed: int = 0) -> list[dict]:
    """``n`` distinct points of the space within the budget, at evenly spaced MACs quantiles, and the
    space's baselines: [{"layout", "kind", "macs", "params"}]."""
    import optuna

    import funnelbench as fb
    from funnelbench.search.space import load_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space(SPACE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    found = {}
    for _ in range(3000):
        trial = study.ask()
        layout, broken = space.suggest(trial)
        study.tell(trial, 0.0)
        c = fb.count(layout)
        if not broken and c.macs <= BUDGET_MACS:
            found.setdefault(str(layout), (c.macs, c.params))
    hand = [str(b) for b in space.baselines]
    pool = sorted((m, p, text) for text, (m, p) in found.items() if text not in hand)
    picks = [pool[round(i * (len(pool) - 1) / (n - 1))] for i in range(n)]
    rows = [{"layout": t, "kind": "space", "macs": m, "params": p} for m, p, t in picks]
    for text in hand:
        c = fb.count(text)
        rows.append({"layout": text, "kind": "hand", "macs": c.macs, "params": c.params})
    return rows


# ----------------------------------------------------------------------------- the work

_DATA: dict = {}


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")


def run_one(config: str, layout: str, seed: int, runs: str, data: str | None = None) -> dict:
    """Train one layout at one configuration and seed on ``data`` (None: the built-in data); the
    row the JSONL file keeps."""
    import funnelbench as fb
    from funnelbench.search.study import train_trial

    proxy = {**settings(config), "data": data}
    key = (data, proxy["image_size"], proxy["train_per_class"])
    if key not in _DATA:
        _DATA[key] = fb.load_data(data, image_size=proxy["image_size"], train_per_class=proxy["train_per_class"])
    out = Path(runs) / config / f"{_slug(layout)}-seed{seed}"
    started = time.time()
    rec = train_trial(
        layout, out=out, data=_DATA[key], proxy={**proxy, "seed": seed, "threads": 1, "checkpoint": "none"}
    )
    import pandas as pd

    history = pd.read_csv(out / "history.csv")
    return {
        "config": config,
        "layout": layout,
        "seed": seed,
        "data": rec["dataset"],
        "status": rec["status"],
        "top1": round(100 * rec["best_val_top1"], 2),
        "final_top1": round(100 * rec["val_top1"], 2),
        "val_loss": round(rec["val_loss"], 4),
        "sum_train_loss": round(float(history["train_loss"].sum()), 4),
        "epochs": rec["epochs_done"],
        "proxy_layout": rec["layout"],
        "proxy_macs": rec["macs"],
        "proxy_params": rec["params"],
        "train_s": round(rec["train_s"], 1),
        "wall_s": round(time.time() - started, 1),
        "load_1m": round(os.getloadavg()[0], 2),
    }


def read_rows(log: Path) -> list[dict]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def work(
    layouts: list[dict], configs: list[str], log: Path, runs: str, workers: int, knob_layouts: int, data: str | None
) -> None:
    done = {(r["config"], r["layout"], r["seed"]) for r in read_rows(log)}
    # layouts in an interleaved MACs order, so a partial run (and the knobs' subset) spans the range
    order = layouts[::2] + layouts[1::2]
    # seed-major: every layout's first seed before any second seed, so a partial run ranks them all
    jobs = [
        (c, row["layout"], s)
        for c in configs
        for s in CONFIGS[c][1]
        for row in (order if c in FULL_CONFIGS else order[:knob_layouts])
        if (c, row["layout"], s) not in done
    ]
    print(f"{len(done)} runs done, {len(jobs)} to go", flush=True)
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker) as pool:
        futures = {pool.submit(run_one, c, lay, s, runs, data): (c, lay, s) for c, lay, s in jobs}
        for i, fut in enumerate(as_completed(futures), 1):
            row = fut.result()
            with open(log, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(
                f"[{i}/{len(jobs)}] {row['config']:10s} seed {row['seed']} {row['top1']:6.2f} % "
                f"{row['wall_s']:6.1f} s  {row['layout']}",
                flush=True,
            )


# ----------------------------------------------------------------------------- the analysis


def _mean(values):
    values = [v for v in values if v is not None]
    return statistics.mean(values) if values else None


def _fmt(v, digits=3):
    return "" if v is None else f"{v:.{digits}f}"


def agreement(name: str, score: dict, reference: dict, note: str) -> dict:
    """tau and rho of ``score`` against ``reference`` (both {layout: value}, higher = better) over
    the layouts both have, with a 90 % bootstrap interval of tau."""
    common = [k for k in reference if k in score]
    x, y = [score[k] for k in common], [reference[k] for k in common]
    ci = bootstrap_interval(x, y) if len(common) > 2 else None
    return {
        "scoring": name,
        "layouts": len(common),
        "kendall_tau": _fmt(kendall_tau(x, y)),
        "tau_90pct_interval": "" if ci is None else f"{ci[0]:.2f} to {ci[1]:.2f}",
        "spearman_rho": _fmt(spearman_rho(x, y)),
        "what": note,
    }


def _pairs(score: dict, reference: dict) -> tuple[list, list]:
    common = [k for k in reference if k in score]
    return [score[k] for k in common], [reference[k] for k in common]


def paired(name: str, a: dict, b: dict, reference: dict) -> dict:
    """tau(a) - tau(b) against ``reference`` on the layouts all three have, with a paired
    bootstrap interval (both resampled together)."""
    common = [k for k in reference if k in a and k in b]
    x, y, ref = [a[k] for k in common], [b[k] for k in common], [reference[k] for k in common]
    ci = paired_difference_interval(x, y, ref) if len(common) > 2 else None
    diff = None if len(common) < 2 else kendall_tau(x, ref) - kendall_tau(y, ref)
    return {
        "scoring": name,
        "layouts": len(common),
        "kendall_tau": _fmt(diff),
        "tau_90pct_interval": "" if ci is None else f"{ci[0]:.2f} to {ci[1]:.2f}",
        "spearman_rho": "",
        "what": "the difference of their taus, paired: an interval above 0 says it ranks better beyond "
        "the noise of which layouts were drawn",
    }


def analyse(rows: list[dict], layouts: list[dict], out: Path, argv: list[str]) -> None:
    from benchmarks._common import write_result

    kinds = {r["layout"]: r for r in layouts}
    by = {}
    for r in rows:
        by.setdefault(r["config"], {}).setdefault(r["layout"], {})[r["seed"]] = r
    long = by.get("long", {})
    # the reference: the mean of the long seeds a layout has (both, once the run is complete)
    long_mean = {k: _mean([r["top1"] for r in v.values()]) for k, v in long.items()}
    both = sum(len(v) == len(CONFIGS["long"][1]) for v in long.values())

    def seed_score(config, seed, field="top1", sign=1):
        return {k: sign * v[seed][field] for k, v in by.get(config, {}).items() if seed in v}

    def seeds_mean(config):
        return {
            k: _mean([r["top1"] for r in v.values()])
            for k, v in by.get(config, {}).items()
            if len(v) == len(CONFIGS[config][1])
        }

    table = []
    for s in CONFIGS["proxy"][1]:
        table.append(
            agreement(
                f"proxy, seed {s}",
                seed_score("proxy", s),
                long_mean,
                "one proxy run per layout, as the search trains it",
            )
        )
    table.append(agreement("proxy, mean of 2 seeds", seeds_mean("proxy"), long_mean, "twice the proxy's cost"))
    # the other proxies trained on every layout, with both seeds: candidates for the default
    candidates = [c for c in FULL_CONFIGS if c not in ("proxy", "long") and c in by]
    for c in candidates:
        for s in CONFIGS[c][1]:
            table.append(agreement(f"{c}, seed {s}", seed_score(c, s), long_mean, CONFIGS[c][2]))
        table.append(agreement(f"{c}, mean of 2 seeds", seeds_mean(c), long_mean, "twice its cost"))
    table.append(
        agreement("MACs alone (more = better)", {k: kinds[k]["macs"] for k in kinds}, long_mean, "nothing trained")
    )
    table.append(
        agreement("params alone (more = better)", {k: kinds[k]["params"] for k in kinds}, long_mean, "nothing trained")
    )
    table.append(
        agreement(
            "the proxy's final validation loss, seed 0 (less = better)",
            seed_score("proxy", 0, "val_loss", -1),
            long_mean,
            "the same run, a smoother signal than top-1",
        )
    )
    table.append(
        agreement(
            "sum of the proxy's training losses, seed 0 (less = better)",
            seed_score("proxy", 0, "sum_train_loss", -1),
            long_mean,
            "the proxy run's own loss curve",
        )
    )
    # the layouts that train: where the proxy must rank more than "takes off or not"
    trained = {
        k: v
        for k, v in long_mean.items()
        if len(long.get(k, {})) == len(CONFIGS["long"][1]) and min(r["top1"] for r in long[k].values()) >= TRAINED_PCT
    }
    for c in ["proxy"] + candidates:
        for s in CONFIGS[c][1]:
            table.append(
                agreement(
                    f"{c}, seed {s}, only the layouts that train",
                    seed_score(c, s),
                    trained,
                    f"the layouts both long runs take to >= {TRAINED_PCT:.0f} %",
                )
            )
    table.append(
        agreement(
            "long seed 0 vs long seed 1 (the ceiling)",
            seed_score("long", 0),
            seed_score("long", 1),
            "two seeds of the reference itself: one run cannot predict another run better",
        )
    )
    for c in ["proxy"] + candidates:
        # like for like with the ceiling: one run against one long run, averaged over the seed pairs
        runs = [seed_score(c, s) for s in CONFIGS[c][1]]
        long_runs = [seed_score("long", t) for t in CONFIGS["long"][1]]
        pairs = [
            kendall_tau(*_pairs(run, long_run))
            for run in runs
            for long_run in long_runs
            if len(_pairs(run, long_run)[0]) > 2
        ]
        table.append(
            {
                "scoring": f"{c}, one run against one long run",
                "layouts": len(long_mean),
                "kendall_tau": _fmt(_mean(pairs)),
                "tau_90pct_interval": "",
                "spearman_rho": "",
                "what": f"the mean tau over its {len(pairs)} (seed, long seed) pairs: comparable with the ceiling",
            }
        )
    table.append(
        agreement(
            "long seed 0 vs long seed 1, only the layouts that train",
            {k: v for k, v in seed_score("long", 0).items() if k in trained},
            seed_score("long", 1),
            "the ceiling where the differences are smallest",
        )
    )
    table.append(
        agreement(
            "proxy seed 0 vs proxy seed 1",
            seed_score("proxy", 0),
            seed_score("proxy", 1),
            "the proxy's own repeatability",
        )
    )
    for c in candidates:
        table.append(
            agreement(f"{c} seed 0 vs {c} seed 1", seed_score(c, 0), seed_score(c, 1), "its own repeatability")
        )
    knob_layouts = {k for c in CONFIGS if c not in FULL_CONFIGS for k in by.get(c, {})}
    for c in candidates:
        for s in CONFIGS[c][1]:
            table.append(paired(f"{c} minus proxy, seed {s}", seed_score(c, s), seed_score("proxy", s), long_mean))
        for s in CONFIGS[c][1]:
            unseen = {k: v for k, v in long_mean.items() if k not in knob_layouts}
            row = agreement(
                f"{c}, seed {s}, only the layouts the knobs did not train",
                seed_score(c, s),
                unseen,
                f"proxy on the same layouts: {_fmt(kendall_tau(*_pairs(seed_score('proxy', s), unseen)))}",
            )
            table.append(row)

    knobs = []
    for config, (change, seeds, what) in CONFIGS.items():
        if config == "long" or config not in by:
            continue
        score = seed_score(config, 0)
        same = {k: v for k, v in seed_score("proxy", 0).items() if k in score}
        row = agreement(config, score, long_mean, what)
        row_base = agreement("proxy", same, long_mean, "")
        diff = paired(config, score, same, long_mean)["tau_90pct_interval"]
        med = _median_s(by[config], 0)
        # compute: training images x epochs x the proxy's MACs, over the same layouts (measured
        # seconds came under different loads and only give an order of magnitude)
        work_of = lambda c: (
            sum(by[c][k][0]["proxy_macs"] for k in score) * settings(c)["epochs"] * settings(c)["train_per_class"]
        )  # noqa: E731
        knobs.append(
            {
                "proxy": config,
                "change": json.dumps(change) if change else "(the proxy)",
                "layouts": row["layouts"],
                "kendall_tau": row["kendall_tau"],
                "tau_of_the_proxy_on_these_layouts": row_base["kendall_tau"],
                "tau_minus_proxy_90pct_interval": diff,
                "spearman_rho": row["spearman_rho"],
                "mean_top1_pct": _fmt(_mean(score.values()), 1),
                "layouts_above_chance": sum(v > CHANCE_PCT + 2.5 for v in score.values()),
                "compute_vs_proxy": _fmt(work_of(config) / work_of("proxy"), 2),
                "median_s_per_trial": _fmt(med, 1),
            }
        )

    per_layout = []
    for lay, info in kinds.items():
        row = {
            "layout": lay,
            "kind": info["kind"],
            "gmacs": round(info["macs"] / 1e9, 3),
            "mparams": round(info["params"] / 1e6, 2),
        }
        for config in CONFIGS:
            for s in CONFIGS[config][1]:
                r = by.get(config, {}).get(lay, {}).get(s)
                row[f"{config}_s{s}" if len(CONFIGS[config][1]) > 1 else config] = "" if r is None else r["top1"]
        per_layout.append(row)
    per_layout.sort(key=lambda r: -(long_mean.get(r["layout"]) or -1))

    noise = [abs(v[0]["top1"] - v[1]["top1"]) for v in long.values() if 0 in v and 1 in v]
    spread = statistics.stdev(long_mean.values()) if len(long_mean) > 2 else None
    notes = [
        f"Reference: the mean best validation top-1 of the `long` runs ({LONG_FACTOR}x the proxy's epochs, seeds "
        f"{CONFIGS['long'][1]}) of {len(long_mean)} layouts ({sum(kinds[k]['kind'] == 'hand' for k in long_mean)} of "
        f"them the paper's hand layouts; {both} with both seeds, the rest with seed 0 alone). Top-1 is the best "
        "validation top-1 over the epochs, the search's objective.",
        f"`proxy`: the committed search's proxy, {json.dumps(PROXY)}; seeds {CONFIGS['proxy'][1]}; one torch "
        "thread per run, two runs at a time. The other rows change one setting of it.",
        f"`{DEFAULT_CONFIG}` is funnel-reinvest-ti's default proxy since this study. It first ran on the "
        "12 knob layouts with seed 0 like the other variations, and was then trained on every layout with "
        "both seeds because it ranked those 12 as well as the proxy at the same cost: its other 15 layouts "
        "and its seed 1 were not looked at when it was chosen.",
        f"Worker time: {sum(r['wall_s'] for r in rows) / 3600:.1f} h over {len(rows)} runs, two at a time "
        "on the 2 cores (the wall time is about half), run over three sessions; the rows resume.",
        "Kendall's tau-b (ties corrected) and Spearman's rho, computed in benchmarks/_ranks.py (tested in "
        "tests/test_bench_ranks.py); the interval is a 90 % percentile bootstrap over the layouts. "
        "`tau_minus_proxy_90pct_interval` resamples a variation and the proxy (seed 0 each) on the same "
        "layouts together: an interval that excludes 0 says the variation ranks differently beyond that noise.",
        "Seconds per trial are wall times measured while another run and, for the proxy and long runs, "
        "other work shared the 2 cores: an order of magnitude only. `compute_vs_proxy` is exact: training "
        "images x epochs x the proxy layouts' MACs, against the proxy's on the same layouts.",
        "A variation with few `layouts_above_chance` ranks ties at chance: its tau says nothing.",
        "Built-in synthetic data: how layouts rank on this task, nothing about ImageNet.",
    ]
    if noise:
        notes.append(
            f"Noise against signal: two seeds of the long schedule differ by {statistics.mean(noise):.2f} "
            f"points of top-1 on average (max {max(noise):.2f}); the layouts' mean top-1 spread with a "
            f"standard deviation of {_fmt(spread, 2)} points."
        )
    sections = [
        ("Rank agreement with the long schedule", table),
        ("One knob at a time", knobs),
        ("Per layout: best validation top-1 %", per_layout),
    ]
    records = table
    extra = "\n\n".join(f"## {title}\n\n" + _markdown(recs) for title, recs in sections[1:] if recs)
    path = write_result(
        out.name,
        records,
        "Proxy fidelity: the search's proxy against 5x longer training",
        notes,
        rows=per_layout,
        rows_suffix="_per_layout",
        folder=out.parent,
        argv=argv,
    )
    text = (
        path.read_text()
        + "\n"
        + extra
        + "\n\n![each layout's rank by a run against its rank by the long schedule]("
        + out.name
        + ".png)\n"
    )
    path.write_text(text)
    _plot(by, long_mean, kinds, out.with_suffix(".png"))
    print(text)


def _median_s(by_layout: dict, seed: int):
    values = [v[seed]["wall_s"] for v in by_layout.values() if seed in v]
    return statistics.median(values) if values else None


def _markdown(records):
    from benchmarks._common import markdown_table

    return markdown_table(records)


def _plot(by: dict, long_mean: dict, kinds: dict, path: Path) -> None:
    """One panel per configuration trained on every layout: each layout's rank by that run against
    its rank by the long mean (1 = best; ranks, because 20 layouts sit within 2 points of 100 %)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmarks._ranks import mid_ranks

    def ranks(scores: dict) -> dict:
        keys = list(scores)
        return dict(zip(keys, mid_ranks([-scores[k] for k in keys])))

    panels = [c for c in FULL_CONFIGS if c in by]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 3.3), constrained_layout=True, squeeze=False)
    for ax, config in zip(axes[0], panels):
        # the long panel is the ceiling: seed 0 against seed 1 (not against a mean that contains it)
        seeds = (0,) if config == "long" else CONFIGS[config][1]
        reference = {k: v[1]["top1"] for k, v in by["long"].items() if 1 in v} if config == "long" else long_mean
        taus = []
        for seed, marker in zip(seeds, "os"):
            common = [k for k, v in by[config].items() if k in reference and seed in v]
            x = ranks({k: reference[k] for k in common})
            y = ranks({k: by[config][k][seed]["top1"] for k in common})
            taus.append(kendall_tau([x[k] for k in common], [y[k] for k in common]))
            for kind, color in (("space", "tab:blue"), ("hand", "tab:red")):
                ks = [k for k in common if kinds[k]["kind"] == kind]
                ax.scatter(
                    [x[k] for k in ks],
                    [y[k] for k in ks],
                    s=14,
                    marker=marker,
                    color=color,
                    alpha=0.75,
                    label=f"{kind} layouts, seed {seed}",
                )
        n = len(long_mean)
        ax.plot([1, n], [1, n], color="grey", lw=0.5, ls=":")
        epochs = settings(config)["epochs"]
        px = settings(config)["image_size"]
        ax.set_title(f"{config} ({epochs} epochs, {px} px): tau " + ", ".join(f"{t:.2f}" for t in taus), fontsize=8)
        ax.set_xlabel(
            "rank by long seed 1 (the ceiling)" if config == "long" else "rank by the long schedule (mean of 2 seeds)",
            fontsize=8,
        )
        ax.set_ylabel(f"rank by {config}", fontsize=8)
        ax.invert_xaxis()
        ax.invert_yaxis()
        ax.legend(fontsize=6, loc="lower right")
    fig.savefig(path, dpi=150)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="results/proxy_fidelity", help="results path without suffix")
    ap.add_argument("--runs", default="runs/proxy-fidelity", help="folder for the training runs")
    ap.add_argument("--layouts", type=int, default=16, help="points of the space (the hand layouts come on top)")
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument(
        "--data",
        default=None,
        help="the data every run trains on (default: the built-in data); builtin-hard is the harder built-in set",
    )
    ap.add_argument("--knob-layouts", type=int, default=12, help="layouts the one-knob variations train")
    ap.add_argument("--workers", type=int, default=2, help="runs at a time, one torch thread each")
    ap.add_argument("--analyse", action="store_true", help="only write the summary from the rows so far")
    args = ap.parse_args()

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    chosen = out.with_name(out.name + "-layouts.json")
    if chosen.exists():
        layouts = json.loads(chosen.read_text())
    else:
        layouts = choose_layouts(args.layouts)
        chosen.write_text(json.dumps(layouts, indent=1) + "\n")
    log = out.with_suffix(".jsonl")
    if not args.analyse:
        started = time.time()
        work(layouts, args.configs, log, args.runs, args.workers, args.knob_layouts, args.data)
        print(f"wall time {time.time() - started:.0f} s", flush=True)
    analyse(read_rows(log), layouts, out, argv=[a for a in sys.argv[1:] if a != "--analyse"])


if __name__ == "__main__":
    main()
