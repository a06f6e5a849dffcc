"""Does the real tool's search beat random search and the hand layouts on Fashion-MNIST?

Three arms, paired by seed k (the seed of the search's sampler and of its proxy trainings):

* ``tpe`` and ``random``: ``funnelbench search`` itself on the full ``funnel-reinvest-ti`` space
  without its baselines (every trial a searched one), DeiT-Ti's MACs as the budget, the space's
  proxy on Fashion-MNIST (600 training images per class, as the table), ``--trials`` trainings;
* ``hand``: the same tool trains every hand layout of the space (its baselines) at the same proxy
  and picks the best feasible one: what a user without a search would do.

Each arm's pick is then re-trained at the table's reference schedule (``bench_table.py``: the
proxy's 600 images per class for 3x its epochs, seeds 0 and 1) and measured on the official test split; a pick
the table's reference phase already trained is read from the table. The claim is the paired
difference over seeds with a 95 % t interval, and the smallest difference the design could
detect (80 % power, two-sided 5 %).

Resumable: the studies are SQLite files under ``--runs`` (a re-run continues them), every
finished search and re-training is a line of ``<out>_runs.jsonl``.

    PYTHONPATH=. python benchmarks/bench_search_live.py --seeds 0 1 2 3 4 --trials 24
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

from benchmarks._common import markdown_table, run_appending, write_result
from benchmarks.bench_table import (
    BUDGET_MACS,
    DATA,
    PROXY_TRAIN_PER_CLASS,
    REFERENCE_SEEDS,
    read_rows,
    train_one,
)

SPACE = "funnel-reinvest-ti"
ARMS = ("tpe", "random", "hand")


def arm_spec(arm: str) -> dict:
    """The space a run of ``arm`` searches: without baselines for the samplers; for ``hand`` the
    baselines only (the run trains exactly them)."""
    from funnelbench.search import load_space

    spec = dict(load_space(SPACE).spec)
    if arm != "hand":
        spec["baselines"] = []
    spec["name"] = f"{SPACE}-{arm}"
    return spec


def run_arm(arm: str, seed: int, trials: int, runs: str) -> dict:
    """Run (or continue) one search of ``arm``; its pick, counts and seconds."""
    import importlib

    from funnelbench.search.report import front_trials, state_counts

    search = importlib.import_module("funnelbench.search.run").search
    spec = arm_spec(arm)
    name = f"live-{arm}-seed{seed}"
    folder = Path(runs) / "search"
    folder.mkdir(parents=True, exist_ok=True)
    started = time.time()
    study = search(
        spec,
        trials=len(spec["baselines"]) if arm == "hand" else trials,
        budget_macs=BUDGET_MACS,
        sampler="random" if arm == "hand" else arm,
        study=name,
        storage=f"sqlite:///{(folder / (name + '.db')).resolve()}",
        root=folder,
        seed=seed,
        data=DATA,
        train_per_class=PROXY_TRAIN_PER_CLASS,
        threads=1,
        checkpoint="none",
    )
    best = front_trials(study)[0]
    counts = state_counts(study)
    trained = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("status") in ("completed", "pruned")]
    return {
        "kind": "search",
        "arm": arm,
        "seed": seed,
        "study": name,
        "pick": best.user_attrs["target_layout"],
        "pick_proxy_val_top1": best.user_attrs["top1"],
        "pick_proxy_test_top1": best.user_attrs.get("test_top1"),
        "pick_gmacs": best.user_attrs["macs"] / 1e9,
        "trained": counts["trained"],
        "pruned": counts["pruned"],
        "rejected": counts["rejected"],
        "training_s": sum(t.user_attrs.get("wall_s") or 0.0 for t in trained),
        "search_wall_s": time.time() - started,
    }


def retrain(layout: str, seed: int, cache_dir) -> dict:
    """One re-training of a pick at the table's reference schedule (``bench_table.train_one``)."""
    return {"kind": "retrain", **train_one("reference", layout, seed, cache_dir)}


# ----------------------------------------------------------------------------- the comparison


def t_quantile(p: float, df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(p, df))


def paired(a: dict[int, float], b: dict[int, float]) -> dict:
    """The paired difference a - b over the seeds both have: mean, 95 % t interval, and the
    smallest true difference the design detects with 80 % power (two-sided 5 %)."""
    seeds = sorted(set(a) & set(b))
    d = [a[s] - b[s] for s in seeds]
    n = len(d)
    if n < 2:
        mean = _r(statistics.mean(d)) if d else ""
        return {"seeds": n, "mean diff": mean, "95 % CI": "", "excludes 0": "", "detectable (80 % power)": ""}
    mean, sd = statistics.mean(d), statistics.stdev(d)
    half = t_quantile(0.975, n - 1) * sd / math.sqrt(n)
    detectable = (t_quantile(0.975, n - 1) + t_quantile(0.8, n - 1)) * sd / math.sqrt(n)
    return {
        "seeds": n,
        "mean diff": _r(mean),
        "95 % CI": f"[{mean - half:.2f}, {mean + half:.2f}]",
        "excludes 0": "yes" if (mean - half > 0 or mean + half < 0) else "no",
        "detectable (80 % power)": _r(detectable),
    }


def analyse(rows: list[dict], table_rows: list[dict], out: Path, args) -> list[dict]:
    searches = {(r["arm"], r["seed"]): r for r in rows if r["kind"] == "search"}
    ref: dict[str, dict[int, float]] = {}
    for r in table_rows + [r for r in rows if r["kind"] == "retrain"]:
        if r["phase"] == "reference" and r["status"] == "completed":
            ref.setdefault(r["layout"], {})[r["seed"]] = 100 * r["test_top1"]

    def pick_value(arm, seed):
        s = searches.get((arm, seed))
        v = ref.get(s["pick"], {}) if s else {}
        return statistics.mean(v.values()) if s and len(v) == len(REFERENCE_SEEDS) else None

    per_arm = {arm: {seed: v for seed in args.seeds if (v := pick_value(arm, seed)) is not None} for arm in ARMS}
    detail = [
        {
            "arm": arm,
            "seed": seed,
            "pick": searches[(arm, seed)]["pick"],
            "GMACs": _r(searches[(arm, seed)]["pick_gmacs"]),
            "proxy val top-1": _r(searches[(arm, seed)]["pick_proxy_val_top1"]),
            "reference test top-1": _r(per_arm[arm].get(seed)),
            "trainings": searches[(arm, seed)]["trained"],
            "rejected": searches[(arm, seed)]["rejected"],
            "training min": _r(searches[(arm, seed)]["training_s"] / 60),
        }
        for arm in ARMS
        for seed in args.seeds
        if (arm, seed) in searches
    ]
    summary = [
        {"comparison": f"{a} - {b}", **paired(per_arm[a], per_arm[b])}
        for a, b in (("tpe", "hand"), ("random", "hand"), ("tpe", "random"))
    ]
    for arm in ARMS:
        values = list(per_arm[arm].values())
        summary.append(
            {
                "comparison": f"{arm} picks alone",
                "seeds": len(values),
                "mean diff": _r(statistics.mean(values)) if values else "",
                "95 % CI": (
                    f"sd {statistics.stdev(values):.2f}, range {min(values):.2f}-{max(values):.2f}"
                    if len(values) > 1
                    else ""
                ),
                "excludes 0": "",
                "detectable (80 % power)": "",
            }
        )
    notes = [
        f"Space {SPACE} (the samplers without its baselines), DeiT-Ti's {BUDGET_MACS / 1e9:.2f} GMACs; "
        f"{args.trials} trainings per search; the hand arm trains the space's hand layouts at the same proxy and "
        "picks the best within the budget.",
        f"Proxy: the space's proxy section on {DATA}, {PROXY_TRAIN_PER_CLASS} training images per class; the "
        "search's seed seeds its sampler and its trainings. Each pick re-trained at the table's reference "
        f"schedule (bench_table.py), seeds {list(REFERENCE_SEEDS)}, test top-1 on the official 10,000 (mean of the seeds).",
        "Paired over the search seed: 'mean diff' in test top-1 points, its 95 % t interval, and the smallest "
        "true difference this many seeds detects with 80 % power at two-sided 5 % (from the observed sd).",
    ]
    write_result(
        out.name,
        summary,
        "The live search against random search and the hand layouts on Fashion-MNIST",
        notes,
        rows=detail,
        rows_suffix="_picks",
        folder=out.parent,
        argv=sys.argv[1:],
    )
    print(markdown_table(summary))
    if detail:
        print(markdown_table(detail))
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--trials", type=int, default=24, help="trainings per search (TPE and random)")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--out", default="results/search_live")
    parser.add_argument("--runs", default="runs/search-live", help="the studies' folder (SQLite files)")
    parser.add_argument("--table", default="results/table_fashion_mnist_runs.jsonl")
    parser.add_argument("--jobs", type=int, default=2, help="searches / trainings at a time, one torch thread each")
    parser.add_argument("--analyse", action="store_true", help="only write the summary from what is stored")
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args(argv)

    out = Path(args.out)
    runs_path = out.with_name(out.name + "_runs.jsonl")
    runs_path.parent.mkdir(parents=True, exist_ok=True)
    rows = read_rows(runs_path)
    table_rows = read_rows(Path(args.table))
    if not args.analyse:
        done = {(r["arm"], r["seed"]) for r in rows if r["kind"] == "search"}
        todo = [(a, s) for s in args.seeds for a in args.arms if (a, s) not in done]
        if todo:
            print(f"{len(todo)} searches to run", flush=True)
            rows += run_appending(
                args.jobs,
                [(run_arm, a, s, args.trials, args.runs) for a, s in todo],
                runs_path,
                lambda i, r: (
                    f"[{i}/{len(todo)}] {r['arm']} seed {r['seed']}: pick {r['pick']} "
                    f"(proxy val {r['pick_proxy_val_top1']:.1f}) after {r['trained']} trainings, "
                    f"{r['search_wall_s'] / 60:.1f} min"
                ),
            )
        known = {(r["layout"], r["seed"]) for r in table_rows + rows if r.get("phase") == "reference"}
        picks = {r["pick"] for r in rows if r["kind"] == "search" and r["arm"] in args.arms and r["seed"] in args.seeds}
        todo = sorted((p, s) for p in picks for s in REFERENCE_SEEDS if (p, s) not in known)
        if todo:
            print(f"{len(todo)} re-trainings to run", flush=True)
            rows += run_appending(
                args.jobs,
                [(retrain, p, s, args.cache_dir) for p, s in todo],
                runs_path,
                lambda i, r: (
                    f"[{i}/{len(todo)}] re-trained {r['layout']} seed {r['seed']}: test "
                    f"{100 * r['test_top1']:.2f} | {r['wall_s'] / 60:.1f} min"
                ),
            )
    analyse(rows, table_rows, out, args)


def _r(v):
    return "" if v is None else round(v, 2)


if __name__ == "__main__":
    main()
