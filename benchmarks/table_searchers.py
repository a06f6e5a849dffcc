"""Searchers on the tabular benchmark (``bench_table.py``'s proxy phase): each run hundreds of
times, a training looked up from the table (a random one of its stored seeds) instead of run,
as NAS-Bench-201 does. Random search and TPE are the tool's own: ``funnelbench.search.search``
itself (the same sampler, budgets, start-up and trial protocol as ``funnelbench search``) with
the trainer replaced by the lookup. Regularized evolution (Real et al., AAAI 2019: an aging
population, a tournament, a mutation of one decision that stays within the budget) and "train
every hand layout, pick by proxy" are written here: the tool has no evolution sampler.

Regret: the best test top-1 in the sub-space minus the incumbent's (the layout with the best
proxy validation top-1 so far; its test top-1 is the mean over the table's seeds), against
trainings and against training seconds (the looked-up trainings' own seconds), with 95 % bands
(``funnelbench.search.compare``, the code behind ``funnelbench compare``); and the share of runs
that have found a top-5 % layout, and one at least as good as the best hand layout, after N.

    PYTHONPATH=. python benchmarks/table_searchers.py --runs 100 --trainings 40
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks._common import markdown_table, write_result
from benchmarks.bench_table import BUDGET_MACS, MIN_MACS, SPACE, read_rows, table_layouts
from funnelbench.search.asha import rungs

SEARCHERS = ("random", "tpe", "evolution", "halving", "hand")
HALVING_ETA = 2
# epochs of the 4-epoch proxy at which successive halving judges: 1, 2, 4 (search --fidelity asha's
# rungs for --min-epochs 1 --max-epochs 4 --reduction 2)
HALVING_RUNGS = rungs(1, 4, HALVING_ETA)


class Table:
    """The proxy phase's rows by layout: what a lookup returns and what the truth is."""

    def __init__(self, rows: list[dict]):
        self.rows: dict[str, list[dict]] = {}
        for r in rows:
            if r["phase"] == "proxy" and r["status"] == "completed":
                self.rows.setdefault(r["layout"], []).append(r)
        self.test = {k: 100 * statistics.mean(r["test_top1"] for r in v) for k, v in self.rows.items()}
        ranked = sorted(self.test.values(), reverse=True)
        self.best = ranked[0]
        self.top5 = ranked[max(0, round(0.05 * len(ranked)) - 1)]  # the test top-1 of the last of the top 5 %

    def lookup(self, layout: str, rng: random.Random) -> dict:
        return rng.choice(self.rows[layout])


def incumbent_curve(name: str, table: Table, trainings: list[tuple[str, dict]]):
    """A :class:`Curve` of the incumbent's test top-1 after each training (layout, looked-up row)."""
    from funnelbench.search.compare import Curve

    curve = Curve(name, "top1", True)
    best_val, best_layout, spent = None, None, 0.0
    for i, (layout, row) in enumerate(trainings, 1):
        spent += row["train_s"]
        val = max(row["val_top1_by_epoch"])
        if best_val is None or val > best_val:
            best_val, best_layout = val, layout
        curve.trainings.append(i)
        curve.seconds.append(spent)
        curve.best.append(table.test[best_layout])
    return curve


def run_tool(sampler: str, seed: int, n: int, table: Table) -> list[tuple[str, dict]]:
    """``funnelbench.search.search`` on the sub-space (no baselines), every training a lookup."""
    import importlib

    from funnelbench.search import load_space

    # (``funnelbench.search`` the attribute is the function: reach the modules by name)
    loop, trial, run = (importlib.import_module(f"funnelbench.search.{m}") for m in ("loop", "trial", "run"))
    search = run.search

    rng = random.Random(f"{sampler}-{seed}")
    trained: list[tuple[str, dict]] = []

    def lookup(layout, *, out, proxy, data=None, callback=None, console=None, resume=False):
        row = table.lookup(str(layout), rng)
        for epoch, val in enumerate(row["val_top1_by_epoch"], 1):
            if callback is not None and callback({"epoch": epoch, "val_top1": val}):
                break
        trained.append((str(layout), row))
        return {"status": "completed", "epochs_done": len(row["val_top1_by_epoch"]), "test_top1": row["test_top1"]}

    trial.train_trial, loop.load_proxy_data = lookup, lambda settings: None
    spec = dict(load_space(SPACE).spec, baselines=[])
    with tempfile.TemporaryDirectory() as tmp:
        search(
            spec,
            trials=n,
            budget_macs=BUDGET_MACS,
            min_macs=MIN_MACS,
            sampler=sampler,
            pruner="none",
            seed=seed,
            root=tmp,
            study=f"{sampler}-{seed}",
        )
    return trained


def run_evolution(seed: int, n: int, table: Table, population: int = 10, sample: int = 3) -> list[tuple[str, dict]]:
    """Regularized evolution on the sub-space: an aging population; each child mutates one
    decision of the best of ``sample`` drawn members, redrawn until it is a new point of the space
    within the budgets; the start is uniform feasible draws (the tool's own :class:`LayoutDraws`)."""

    rng = random.Random(f"evolution-{seed}")
    space, feasible, by_params, choices = _evolution_space()
    trained, pop = [], []
    seen = set()
    while len(trained) < n:
        if len(pop) < population:
            layout = rng.choice([lay for lay in feasible if lay not in seen] or feasible)
        else:
            parent = max(rng.sample(pop, sample), key=lambda p: p[1])[0]
            params = dict(space.params_of(space_layout(parent)))
            layout = None
            for _ in range(200):
                k = rng.choice(sorted(params))
                child = {**params, k: rng.choice(sorted(choices[k] - {params[k]}, key=str) or [params[k]])}
                layout = by_params.get(tuple(sorted(child.items())))
                if layout is not None and layout not in seen:
                    break
            if layout is None:
                layout = rng.choice(feasible)
        seen.add(layout)
        row = table.lookup(layout, rng)
        trained.append((layout, row))
        pop.append((layout, max(row["val_top1_by_epoch"])))
        if len(pop) > population:
            pop.pop(0)  # aging: the oldest goes, not the worst
    return trained


@functools.lru_cache(maxsize=1)
def _evolution_space():
    """The sub-space, its feasible layouts, the layout of each point and every decision's values."""
    from funnelbench.search import load_space
    from funnelbench.search.budget import Budgets, over_budget
    from funnelbench.search.feasible import LayoutDraws

    space = load_space(SPACE)
    budgets = Budgets(macs=BUDGET_MACS, min_macs=MIN_MACS)
    feasible = [str(lay) for lay in LayoutDraws(space).layouts() if not over_budget(budgets.judge(lay)[1])]
    by_params = {tuple(sorted(space.params_of(space_layout(lay)).items())): lay for lay in feasible}
    choices: dict[str, set] = {}
    for key in by_params:
        for k, v in key:
            choices.setdefault(k, set()).add(v)
    return space, feasible, by_params, choices


def space_layout(text: str):
    from funnelbench.layout import parse_layout

    return parse_layout(text)


def promotable(results: dict[int, list[tuple[str, float]]], eta: int, promoted: set) -> tuple[int, str] | None:
    """ASHA's promotion rule (Li et al., MLSys 2020, Algorithm 2), from the highest rung down:
    a layout in the top floor(n/eta) of the n results of its rung that is not yet promoted from
    it; None when there is none (then a new layout starts at the bottom rung). The rule is the
    tool's own (:func:`funnelbench.search.asha.promotable`, what ``search --fidelity asha``
    promotes by), here with (rung, layout) as the id and every rung given promotable."""
    from funnelbench.search.asha import promotable as rule

    ids = {rung: [((rung, layout), value) for layout, value in rs] for rung, rs in results.items()}
    return rule(ids, eta, promoted, top=max(results, default=0) + 1)


def run_halving(seed: int, n: int, table: Table, rungs=HALVING_RUNGS, eta: int = HALVING_ETA) -> list[dict]:
    """Asynchronous successive halving (one worker) on the stored epoch curves: new layouts are
    uniform feasible draws (what ``--sampler random`` draws) trained to the first rung; whenever a
    layout is in the top 1/eta of its rung it continues to the next (the same stored training read
    further, so a promotion costs only its extra epochs). Stops once the epochs spent equal ``n``
    full trainings. Returns the rung jobs: layout, its looked-up row, the rung's epoch, the epochs
    and seconds the job cost."""
    rng = random.Random(f"halving-{seed}")
    _, feasible, _, _ = _evolution_space()
    results: dict[int, list[tuple[str, float]]] = {}
    promoted: set = set()
    rows: dict[str, dict] = {}
    jobs: list[dict] = []
    spent, budget = 0, n * rungs[-1]
    while spent < budget:
        pick = promotable({k: v for k, v in results.items() if k < len(rungs) - 1}, eta, promoted)
        if pick is not None:
            rung, layout = pick
            promoted.add(pick)
            rung += 1
        else:
            unseen = [lay for lay in feasible if lay not in rows]
            if not unseen:
                break
            layout, rung = rng.choice(unseen), 0
            rows[layout] = table.lookup(layout, rng)
        row = rows[layout]
        first, last = (rungs[rung - 1] if rung else 0), rungs[rung]
        value = row["val_top1_by_epoch"][last - 1]
        results.setdefault(rung, []).append((layout, value))
        jobs.append(
            {
                "layout": layout,
                "row": row,
                "rung": rung,
                "value": value,
                "epochs": last - first,
                "seconds": sum(row["train_s_by_epoch"][first:last]),
            }
        )
        spent += last - first
    return jobs


def halving_curve(name: str, table: Table, jobs: list[dict], epochs_per_training: int = HALVING_RUNGS[-1]):
    """A :class:`Curve` of successive halving in full-training equivalents (``epochs_per_training``
    epochs each): after the n-th equivalent, the test top-1 of the incumbent, the best layout by
    validation at the highest rung reached so far."""
    from funnelbench.search.compare import Curve

    curve = Curve(name, "top1", True)
    best: tuple[int, float, str] | None = None
    epochs, seconds, n = 0, 0.0, 1
    for job in jobs:
        epochs += job["epochs"]
        seconds += job["seconds"]
        key = (job["rung"], job["value"], job["layout"])
        if best is None or key[:2] > best[:2]:
            best = key
        while epochs >= n * epochs_per_training:
            curve.trainings.append(n)
            curve.seconds.append(seconds)
            curve.best.append(table.test[best[2]])
            n += 1
    return curve


def run_hand(seed: int, hand: list[str], table: Table) -> list[tuple[str, dict]]:
    rng = random.Random(f"hand-{seed}")
    return [(h, table.lookup(h, rng)) for h in hand]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--trainings", type=int, default=40)
    parser.add_argument("--searchers", nargs="+", default=list(SEARCHERS), choices=SEARCHERS)
    parser.add_argument("--table", default="results/table_fashion_mnist_runs.jsonl")
    parser.add_argument("--out", default="results/table_searchers")
    args = parser.parse_args(argv)

    from funnelbench.search.compare import band, compare_rows, curve_rows, plot_compare

    table = Table(read_rows(Path(args.table)))
    layouts, hand = table_layouts()
    missing = [str(lay) for lay in layouts if str(lay) not in table.rows]
    if missing:
        sys.exit(
            f"error: the table lacks {len(missing)} of {len(layouts)} layouts (e.g. {missing[0]}); finish "
            "bench_table.py --phase proxy first"
        )
    best_hand = max(table.test[h] for h in hand)
    # resumable: every finished run is a line (its trainings as layout and looked-up seed)
    runs_path = Path(args.out).with_name(Path(args.out).name + "_runs.jsonl")
    runs_path.parent.mkdir(parents=True, exist_ok=True)
    done = {(r["searcher"], r["run"]): r for r in read_rows(runs_path)} if runs_path.exists() else {}
    by_seed = {(layout, r["seed"]): r for layout, rs in table.rows.items() for r in rs}
    groups = {}
    for name in args.searchers:
        curves = []
        for seed in range(args.runs):
            stored = done.get((name, seed))
            if name == "halving":
                curves.append(halving_curve(f"{name}-{seed}", table, run_halving(seed, args.trainings, table)))
                continue  # deterministic given the seed and cheap (no tool search): not stored
            if stored is not None and (name == "hand" or len(stored["trained"]) >= args.trainings):
                trained = [(lay, by_seed[(lay, s)]) for lay, s in stored["trained"]][: args.trainings]
            else:
                if name == "hand":
                    trained = run_hand(seed, hand, table)
                elif name == "evolution":
                    trained = run_evolution(seed, args.trainings, table)
                else:
                    trained = run_tool(name, seed, args.trainings, table)
                with open(runs_path, "a") as f:
                    f.write(
                        json.dumps(
                            {
                                "phase": "run",
                                "searcher": name,
                                "run": seed,
                                "trained": [[lay, r["seed"]] for lay, r in trained],
                            }
                        )
                        + "\n"
                    )
            curves.append(incumbent_curve(f"{name}-{seed}", table, trained))
        groups[name] = curves
        print(f"{name}: {len(curves)} runs", flush=True)
    rows = compare_rows(groups, checkpoints=(5, 10, 20, 30))
    for row in rows:
        curves = groups[row["configuration"]]
        for n in sorted({n for n in (10, 20, args.trainings) if n <= args.trainings}):
            at = [c.at(min(n, len(c.best))) for c in curves]
            row[f"P(top 5 %) after {n}"] = f"{sum(v >= table.top5 for v in at) / len(at):.2f}"
            row[f"P(>= best hand) after {n}"] = f"{sum(v >= best_hand for v in at) / len(at):.2f}"
            mean, lo, hi = band([table.best - v for v in at])
            row[f"regret after {n} (pts)"] = f"{mean:.2f} [{lo:.2f}, {hi:.2f}]"
    out = Path(args.out)
    plot_compare(
        groups,
        out.with_suffix(".png"),
        title="incumbent's test top-1 on the Fashion-MNIST table",
        hline=(best_hand, "best hand layout"),
        ylabel="incumbent's test top-1 %",
    )
    Path(out.with_name(out.name + "_curves.jsonl")).write_text(
        "".join(json.dumps(r) + "\n" for r in curve_rows(groups))
    )
    write_result(
        out.name,
        rows,
        "Searchers on the Fashion-MNIST table: the incumbent's test top-1",
        [
            f"{len(table.rows)} layouts; best test top-1 in the sub-space {table.best:.2f} %, top 5 % from "
            f"{table.top5:.2f} %, best hand layout {best_hand:.2f} %.",
            f"{args.runs} runs per searcher, {args.trainings} trainings each (hand: its {len(hand)} layouts); a training "
            "is looked up from a random one of the table's seeds.",
            "best after N: the incumbent's test top-1 (mean [95 % t band] over runs); regret: the sub-space's best minus it.",
        ],
        folder=out.parent,
        argv=sys.argv[1:] if argv is None else argv,
    )
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
