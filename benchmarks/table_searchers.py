"""Searchers on the tabular benchmark (``bench_table.py``'s proxy phase): each run hundreds of
times, a training looked up from the table (a random one of its stored seeds) instead of run,
as NAS-Bench-201 does. Random search and TPE are the tool's own: ``funnelbench.search.search``
itself (the same sampler, budgets, start-up and trial protocol as ``funnelbench search``) with
the trainer replaced by the lookup; so is ``asha-tpe`` (``--fidelity asha`` over 1, 2, 4 epochs
with reduction 2: TPE per rung, promotions continuing the same looked-up training). ``asha-random``
replays ASHA with uniform feasible draws through the tool's promotion rule
(``funnelbench.search.asha.simulate``). Regularized evolution (Real et al., AAAI 2019: an aging
population, a tournament, a mutation of one decision that stays within the budget) and "train
every hand layout, pick by proxy" are written here: the tool has no evolution sampler.

Every searcher gets the same compute: ``--trainings`` N full proxy trainings, i.e. 4N epochs (a
rung of ASHA costs its extra epochs). Regret: the best test top-1 in the sub-space minus the
incumbent's (the layout with the best proxy validation top-1 so far at the highest rung reached;
its test top-1 is the mean over the table's seeds), against full-training equivalents and against
training seconds (the looked-up epochs' own seconds), with 95 % bands (``funnelbench.search.compare``,
the code behind ``funnelbench compare``); and the share of runs that have found a top-5 % layout,
and one at least as good as the best hand layout, after N.

The table's curves come from a 4-epoch cosine schedule: ASHA reads epoch k of it as a k-epoch
run, which is exact only for a schedule that does not depend on the run's length (``--schedule
constant``, what ``--fidelity asha`` trains with); so the ASHA rows here say how well the cosine
curves' early epochs pick, not yet what the live ASHA search does.

    PYTHONPATH=. python benchmarks/table_searchers.py --runs 100 --trainings 40 --jobs 2
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

from benchmarks._common import markdown_table, run_appending, write_result
from benchmarks.bench_table import ASHA_ETA, ASHA_RUNGS, BUDGET_MACS, MIN_MACS, SPACE, read_rows, table_layouts

SEARCHERS = ("random", "tpe", "evolution", "asha-random", "asha-tpe", "hand")


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


def job(layout: str, row: dict, *, rung: int = 0, upto: int | None = None, before: int = 0) -> dict:
    """One training of a searcher: ``layout`` trained (looked up in ``row``) from epoch ``before``
    to ``upto`` (the whole schedule by default). ``value`` is what the searcher reads: at a rung
    of successive halving the validation top-1 at the rung's end; after the whole schedule the
    best epoch's (the search's ``top1``). ``seconds``: the training seconds of those epochs."""
    curve = row["val_top1_by_epoch"]
    upto = len(curve) if upto is None else upto
    value = max(curve) if upto == len(curve) and rung == 0 else curve[upto - 1]
    return {
        "layout": layout,
        "seed": row["seed"],
        "rung": rung,
        "upto": upto,
        "epochs": upto - before,
        "value": value,
        "seconds": sum(row["train_s_by_epoch"][before:upto]),
    }


def incumbent_curve(name: str, table: Table, jobs: list[dict], epochs_per_training: int):
    """A :class:`Curve` of the incumbent's test top-1 (the mean over the table's seeds) after each
    full-training equivalent (``epochs_per_training`` epochs spent; a plain search's n-th training).
    The incumbent: the best by value at the highest rung reached so far (a plain search has one
    rung); the x axis in seconds: the trainings' own seconds, summed."""
    from funnelbench.search.compare import Curve

    curve = Curve(name, "top1", True)
    best: dict | None = None
    epochs, seconds, n = 0, 0.0, 1
    for j in jobs:
        epochs += j["epochs"]
        seconds += j["seconds"]
        if best is None or (j["rung"], j["value"]) > (best["rung"], best["value"]):
            best = j
        while epochs >= n * epochs_per_training:
            curve.trainings.append(n)
            curve.seconds.append(seconds)
            curve.best.append(table.test[best["layout"]])
            n += 1
    return curve


def run_tool(sampler: str, seed: int, n: int, table: Table, *, asha: bool = False) -> list[dict]:
    """``funnelbench.search.search`` on the sub-space (no baselines), every training a lookup.
    With ``asha``: ``--fidelity asha`` over :data:`ASHA_RUNGS` (TPE per rung as the tool fits it);
    a layout's promotions read further along the same looked-up training, and cost only their
    extra epochs. ``n`` trainings of the whole schedule, or their epochs when ``asha``."""
    import importlib

    from funnelbench.search import load_space

    # (``funnelbench.search`` the attribute is the function: reach the modules by name)
    loop, trial, run = (importlib.import_module(f"funnelbench.search.{m}") for m in ("loop", "trial", "run"))
    search = run.search

    rng = random.Random(f"{'asha-' if asha else ''}{sampler}-{seed}")
    jobs: list[dict] = []
    rows: dict[str, dict] = {}  # a layout's looked-up training: its promotions continue it
    reached: dict[str, int] = {}

    def lookup(layout, *, out, proxy, data=None, callback=None, console=None, resume=False):
        text = str(layout)
        row = rows.setdefault(text, table.lookup(text, rng))
        upto, before = proxy["epochs"], reached.get(text, 0)
        for epoch in range(before + 1, upto + 1):
            if callback is not None and callback({"epoch": epoch, "val_top1": row["val_top1_by_epoch"][epoch - 1]}):
                break
        rung = ASHA_RUNGS.index(upto) if asha else 0
        jobs.append(job(text, row, rung=rung, upto=upto, before=before))
        reached[text] = upto
        curve = row["val_top1_by_epoch"]
        return {"status": "completed", "epochs_done": upto, "test_top1": row["test_top1"], "val_top1": curve[upto - 1]}

    trial.train_trial, loop.load_proxy_data = lookup, lambda settings: None
    # a lookup leaves nothing to free: without this, gc.collect after every trial (~0.4 s with torch
    # imported) is a third of a run's time
    loop.release_memory = lambda: None
    spec = dict(load_space(SPACE).spec, baselines=[])
    options = (
        dict(
            fidelity="asha",
            min_epochs=ASHA_RUNGS[0],
            max_epochs=ASHA_RUNGS[-1],
            reduction=ASHA_ETA,
            schedule="constant",
        )
        if asha
        else {}
    )
    # ASHA's trainings are rung jobs: enough of them to spend n full trainings' epochs (each costs >= 1 epoch)
    trials = n * ASHA_RUNGS[-1] if asha else n
    with tempfile.TemporaryDirectory() as tmp:
        search(
            spec,
            trials=trials,
            budget_macs=BUDGET_MACS,
            min_macs=MIN_MACS,
            sampler=sampler,
            pruner="none",
            seed=seed,
            root=tmp,
            study=f"{sampler}-{seed}",
            **options,
        )
    return _within(jobs, n * ASHA_RUNGS[-1])


def _within(jobs: list[dict], epochs: int) -> list[dict]:
    """The first jobs whose epochs together stay within ``epochs``."""
    out, spent = [], 0
    for j in jobs:
        if spent + j["epochs"] > epochs:
            break
        out.append(j)
        spent += j["epochs"]
    return out


def run_evolution(seed: int, n: int, table: Table, population: int = 10, sample: int = 3) -> list[dict]:
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
        trained.append(job(layout, table.lookup(layout, rng)))
        pop.append((layout, trained[-1]["value"]))
        if len(pop) > population:
            pop.pop(0)  # aging: the oldest goes, not the worst
    return trained


@functools.lru_cache(maxsize=1)
def _evolution_space():
    """The sub-space, its feasible layouts, the layout of each point and every decision's values."""
    from funnelbench.search import load_space

    space = load_space(SPACE)
    feasible = [str(lay) for lay in table_layouts()[0]]  # the table's layouts: the same enumeration and budgets
    by_params = {tuple(sorted(space.params_of(space_layout(lay)).items())): lay for lay in feasible}
    choices: dict[str, set] = {}
    for key in by_params:
        for k, v in key:
            choices.setdefault(k, set()).add(v)
    return space, feasible, by_params, choices


def space_layout(text: str):
    from funnelbench.layout import parse_layout

    return parse_layout(text)


def run_asha_random(seed: int, n: int, table: Table) -> list[dict]:
    """ASHA with random candidates, replayed on the stored epoch curves by the tool's own rule
    (:func:`funnelbench.search.asha.simulate`, the :func:`~funnelbench.search.asha.promotable` that
    ``search --fidelity asha`` promotes by) over :data:`ASHA_RUNGS`: a new layout is a uniform
    feasible draw (what ``--sampler random`` draws) looked up once, its promotions read further
    along that training and cost only their extra epochs; ``n`` full trainings' epochs."""
    from funnelbench.search.asha import simulate

    rng = random.Random(f"asha-random-{seed}")
    _, feasible, _, _ = _evolution_space()
    rows: dict[str, dict] = {}

    def draw() -> str:
        layout = rng.choice([lay for lay in feasible if lay not in rows] or feasible)
        rows.setdefault(layout, table.lookup(layout, rng))
        return layout

    replay = simulate(
        draw,
        lambda layout: rows[layout]["val_top1_by_epoch"],
        epochs=ASHA_RUNGS,
        eta=ASHA_ETA,
        trainings=n * ASHA_RUNGS[-1],
    )
    jobs = [
        job(t["key"], rows[t["key"]], rung=t["rung"], upto=t["epochs"], before=t["epochs"] - t["epochs_trained"])
        for t in replay
    ]
    return _within(jobs, n * ASHA_RUNGS[-1])


def run_hand(seed: int, hand: list[str], table: Table) -> list[dict]:
    rng = random.Random(f"hand-{seed}")
    return [job(h, table.lookup(h, rng)) for h in hand]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--trainings", type=int, default=40)
    parser.add_argument("--searchers", nargs="+", default=list(SEARCHERS), choices=SEARCHERS)
    parser.add_argument("--table", default="results/table_fashion_mnist_runs.jsonl")
    parser.add_argument("--out", default="results/table_searchers")
    parser.add_argument("--jobs", type=int, default=2, help="searcher runs at a time (processes)")
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
    budget = args.trainings * ASHA_RUNGS[-1]  # epochs: n full trainings of the proxy
    # a stored run is complete when it was made for at least this many trainings (ASHA's may end a
    # few epochs short of the budget: its last rung job does not fit); rows stored before the
    # field was written were all made with --trainings 40
    complete = lambda r: r is not None and (r["searcher"] == "hand" or r.get("trainings", 40) >= args.trainings)  # noqa: E731
    todo = [(n, s) for n in args.searchers for s in range(args.runs) if not complete(done.get((n, s)))]
    if todo:
        print(f"{len(todo)} searcher runs to go ({args.jobs} at a time)", flush=True)
        for r in run_appending(
            args.jobs,
            [(run_searcher, n, s, args.trainings, table, hand) for n, s in todo],
            runs_path,
            lambda i, r: f"[{i}/{len(todo)}] {r['searcher']} run {r['run']}: {len(r['jobs'])} trainings",
        ):
            done[(r["searcher"], r["run"])] = r
    groups = {}
    for name in args.searchers:
        curves = []
        for seed in range(args.runs):
            jobs = [dict(j, seconds=_seconds(by_seed[(j["layout"], j["seed"])], j)) for j in done[(name, seed)]["jobs"]]
            curves.append(incumbent_curve(f"{name}-{seed}", table, _within(jobs, budget), ASHA_RUNGS[-1]))
        groups[name] = curves
        print(f"{name}: {len(curves)} runs", flush=True)
    rows = compare_rows(groups, checkpoints=(5, 10, 20, 30, 40))
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
            "best after N: the incumbent's test top-1 (mean [95 % t band] over runs); best at the end: after the "
            "searcher's last training (its 'trainings' column); regret: the sub-space's best minus it.",
        ],
        folder=out.parent,
        argv=sys.argv[1:] if argv is None else argv,
    )
    print(markdown_table(rows))


def run_searcher(name: str, seed: int, trainings: int, table: Table, hand: list[str]) -> dict:
    """One run of a searcher: the line the run file stores (its trainings without seconds, which
    the table gives back)."""
    if name == "hand":
        jobs = run_hand(seed, hand, table)
    elif name == "evolution":
        jobs = run_evolution(seed, trainings, table)
    elif name == "asha-random":
        jobs = run_asha_random(seed, trainings, table)
    else:
        jobs = run_tool(name.removeprefix("asha-"), seed, trainings, table, asha=name.startswith("asha-"))
    return {
        "phase": "run",
        "searcher": name,
        "run": seed,
        "trainings": trainings,
        "jobs": [{k: v for k, v in j.items() if k != "seconds"} for j in jobs],
    }


def _seconds(row: dict, j: dict) -> float:
    return sum(row["train_s_by_epoch"][j["upto"] - j["epochs"] : j["upto"]])


if __name__ == "__main__":
    main()
