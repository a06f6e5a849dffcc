"""Does ``--fidelity asha`` pay live? The plain search against ASHA on Fashion-MNIST, 2 workers.

Two arms, paired by seed, both ``funnelbench search`` itself with TPE on the full
``funnel-reinvest-ti`` space without its baselines, DeiT-Ti's MACs, the space's proxy on
Fashion-MNIST (600 training images per class), ``--workers 2`` (one torch thread each):

* ``plain``: today's default, every candidate trains the proxy's 4 epochs (cosine schedule);
* ``asha``: ``--fidelity asha --schedule wsd`` over rungs 1, 2, 4 epochs (``--reduction 2``),
  TPE fitted per rung: each rung's value after its run's own decay (the last 20 % of its steps),
  a promotion continuing the parent's stable checkpoint (before that decay; the table ranks
  with wsd rungs as well as with the cosine's epochs, with constant-rate rungs worse).

Both get the same compute in epochs: ``--trainings`` N full trainings (4N epochs), so the plain
arm runs N trials and ASHA as many rung trainings as fit in 4N epochs (it stops at the first
count whose epochs reach 4N: a rung training costs its extra epochs). Measured per run: wall
time, candidates (new layouts) and trainings per hour, and the answer's test top-1 (the best at
the highest rung reached, its test split read once after its last epoch), and since the two
arms train with different schedules (cosine against wsd), each answer re-trained at the
table's reference (``bench_table.py``: 12 cosine epochs, seeds 0 and 1; answers the table or
``bench_search_live.py`` already re-trained are read): the layouts compared on one schedule.
ASHA's trial count assumes promotions of exactly the best 1/ETA; live, a rung's ranking changes
as it fills and more are promoted, so ASHA may spend more epochs: the analysis also reads each
ASHA search as it stood at the plain search's wall time (its answer then, re-trained too). The
moonshot: at least 2x the candidates per hour at equal best-found test top-1 (the paired
difference's 95 % interval covering 0 or above it).

Resumable: the studies are journal files under ``--runs`` (a re-run continues them), every
finished search is a line of ``<out>_runs.jsonl``. Never time this while other work runs.

    PYTHONPATH=. python benchmarks/bench_asha_live.py --seeds 0 1 2 --trainings 24
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from benchmarks._common import load_average, markdown_table, run_appending, write_result
from benchmarks.bench_search_live import arm_spec, paired, retrain
from benchmarks.bench_table import BUDGET_MACS, DATA, PROXY_TRAIN_PER_CLASS, REFERENCE_SEEDS, read_rows

ARMS = ("plain", "asha")
ASHA = dict(fidelity="asha", schedule="wsd", min_epochs=1, max_epochs=4, reduction=2)


def stable_points(epochs: tuple[int, ...], warmup_epochs: float = 1.0, steps_per_epoch: int = 1000) -> tuple[int, ...]:
    """The epochs a promotion from each rung continues under the wsd schedule: each rung run's
    stable point (``recipe.stable_epochs``; 0: it has none and the promotion trains from the start)."""
    from funnelbench.train import TrainConfig
    from funnelbench.training.recipe import stable_epochs

    return tuple(
        stable_epochs(
            TrainConfig(layout="test-vit", epochs=e, schedule="wsd", warmup_epochs=warmup_epochs), steps_per_epoch
        )
        or 0
        for e in epochs
    )


def asha_trials(trainings: int, epochs: int = 4, eta: int = 2) -> int:
    """Rung trainings that spend about ``trainings`` full trainings' epochs, as ASHA with one
    worker spends them (the tool's rule replayed on a ranking that never changes its mind; a
    promotion costs its epochs from the parent's stable point)."""
    from funnelbench.search.asha import rungs, simulate

    count = iter(range(10**6))
    ladder = rungs(1, epochs, eta)
    replay = simulate(
        lambda: next(count),
        lambda key: [1.0 / (key + 1)] * epochs,
        epochs=ladder,
        eta=eta,
        trainings=trainings * epochs,
        resumes_at=stable_points(ladder),
    )
    spent = 0
    for i, t in enumerate(replay, 1):
        spent += t["epochs_trained"]
        if spent >= trainings * epochs:
            return i
    return len(replay)


def run_arm(arm: str, seed: int, trainings: int, runs: str) -> dict:
    import importlib

    from funnelbench.search.report import front_trials

    search = importlib.import_module("funnelbench.search.run").search
    name = f"asha-live-{arm}-seed{seed}"
    folder = Path(runs) / "search"
    folder.mkdir(parents=True, exist_ok=True)
    trials = asha_trials(trainings) if arm == "asha" else trainings
    started = time.time()
    study = search(
        arm_spec("tpe"),
        trials=trials,
        budget_macs=BUDGET_MACS,
        sampler="tpe",
        study=name,
        root=folder,
        seed=seed,
        data=DATA,
        train_per_class=PROXY_TRAIN_PER_CLASS,
        threads=1,
        workers=2,
        **(ASHA if arm == "asha" else {"checkpoint": "none"}),
    )
    wall = time.time() - started
    trained = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("status") in ("completed", "pruned")]
    best = front_trials(study)[0]
    epochs = sum(t.user_attrs.get("epochs_trained") or t.user_attrs.get("epochs_done") or 0 for t in trained)
    candidates = len({t.user_attrs["target_layout"] for t in trained})
    return {
        "arm": arm,
        "seed": seed,
        "study": name,
        "trainings": len(trained),
        "candidates": candidates,
        "epochs": epochs,
        "by_rung": json.dumps(_by_rung(trained)),
        "wall_s": wall,
        "candidates_per_h": 3600 * candidates / wall,
        "trainings_per_h": 3600 * len(trained) / wall,
        "pick": best.user_attrs["target_layout"],
        "pick_val_top1": best.user_attrs["top1"],
        "pick_test_top1": best.user_attrs.get("test_top1"),
        "load_1m_after": load_average(),
    }


def _study(name: str, runs: str):
    import optuna

    from funnelbench.search.storage import open_storage
    from funnelbench.search.vocabulary import JOURNAL_FILE

    path = Path(runs) / "search" / name / JOURNAL_FILE
    return optuna.load_study(study_name=name, storage=open_storage(f"journal:{path}"))


def _span(trials) -> tuple:
    """(the first trial's start, the seconds from it to the last trial's end)."""
    start = min(t.datetime_start for t in trials if t.datetime_start)
    end = max(t.datetime_complete for t in trials if t.datetime_complete)
    return start, (end - start).total_seconds()


def at_wall_time(name: str, runs: str, seconds: float | None = None) -> dict:
    """A search as it stood ``seconds`` after its first trial started (None: at its end): its
    answer then (``asha.answer``: the best at the highest rung reached among the trials finished
    by then; a plain search has one rung), the candidates and epochs trained by then."""
    from funnelbench.search.asha import answer

    trials = _study(name, runs).get_trials(deepcopy=False)
    start, span = _span(trials)
    seconds = span if seconds is None else seconds
    done = [t for t in trials if t.datetime_complete and (t.datetime_complete - start).total_seconds() <= seconds]
    trained = [
        t for t in done if t.user_attrs.get("status") == "completed" and t.user_attrs.get("duplicate_of") is None
    ]
    plain = [t for t in trained if t.user_attrs.get("rung") is None]
    best = answer(done) if not plain else max(plain, key=lambda t: (t.values[0], -t.number), default=None)
    return {
        "seconds": min(seconds, span),
        "pick": None if best is None else best.user_attrs["target_layout"],
        "pick_test_top1": None if best is None else best.user_attrs.get("test_top1"),
        "candidates": len({t.user_attrs["target_layout"] for t in trained}),
        "epochs": sum(t.user_attrs.get("epochs_trained") or 0 for t in trained),
    }


def _by_rung(trials) -> dict:
    out: dict[str, int] = {}
    for t in trials:
        key = str(t.user_attrs.get("rung", "-"))
        out[key] = out.get(key, 0) + 1
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trainings", type=int, default=24, help="full trainings' worth of epochs per search")
    parser.add_argument("--out", default="results/asha_live")
    parser.add_argument("--runs", default="runs/asha-live")
    parser.add_argument("--analyse", action="store_true")
    parser.add_argument(
        "--known",
        nargs="+",
        default=["results/table_fashion_mnist_runs.jsonl", "results/search_live_runs.jsonl"],
        help="run files whose reference re-trainings are read instead of trained again",
    )
    args = parser.parse_args(argv)

    out = Path(args.out)
    runs_path = out.with_name(out.name + "_runs.jsonl")
    runs_path.parent.mkdir(parents=True, exist_ok=True)
    rows = read_rows(runs_path)
    done = {(r.get("arm"), r.get("seed")) for r in rows if r.get("kind", "search") == "search"}
    if not args.analyse:
        for seed in args.seeds:  # one search at a time: each uses both cores
            for arm in ARMS:
                if (arm, seed) in done:
                    continue
                row = {"kind": "search", **run_arm(arm, seed, args.trainings, args.runs)}
                rows.append(row)
                with open(runs_path, "a") as f:
                    f.write(json.dumps(row) + "\n")
                print(
                    f"{arm} seed {seed}: {row['candidates']} candidates, {row['trainings']} trainings in "
                    f"{row['wall_s'] / 60:.1f} min; pick {row['pick']} test {row['pick_test_top1']}",
                    flush=True,
                )
    searches = [r for r in rows if r.get("kind", "search") == "search"]
    # equal wall time: each asha search as it stood when the plain search of its seed had run as
    # long (from first trial start to last trial end, both arms measured the same way)
    plain_span = {r["seed"]: at_wall_time(r["study"], args.runs) for r in searches if r["arm"] == "plain"}
    for r in searches:
        if r["arm"] == "asha" and r["seed"] in plain_span:
            r["at_plain_time"] = at_wall_time(r["study"], args.runs, plain_span[r["seed"]]["seconds"])
            r["at_plain_time"]["plain_epochs"] = plain_span[r["seed"]]["epochs"]
    reference = [r for f in args.known for r in read_rows(Path(f)) if r.get("phase") == "reference"]
    reference += [r for r in rows if r.get("kind") == "retrain"]
    if not args.analyse:  # each answer at the table's reference schedule, both seeds
        known = {(r["layout"], r["seed"]) for r in reference}
        picks = {r["pick"] for r in searches} | {r["at_plain_time"]["pick"] for r in searches if "at_plain_time" in r}
        todo = sorted({(p, s) for p in picks for s in REFERENCE_SEEDS} - known)
        if todo:
            print(f"{len(todo)} re-trainings at the reference to run", flush=True)
            new = run_appending(
                2,
                [(retrain, p, s, None) for p, s in todo],
                runs_path,
                lambda i, r: (
                    f"[{i}/{len(todo)}] re-trained {r['layout']} seed {r['seed']}: test {100 * r['test_top1']:.2f}"
                ),
            )
            rows += new
            reference += new
    at_reference: dict[str, dict[int, float]] = {}
    for r in reference:
        if r["status"] == "completed":
            at_reference.setdefault(r["layout"], {})[r["seed"]] = 100 * r["test_top1"]

    def reference_top1(layout):
        ref = at_reference.get(layout, {})
        return statistics.mean(ref.values()) if len(ref) == len(REFERENCE_SEEDS) else None

    by = {}
    for r in searches:
        row = {**r, "pick_reference_top1": reference_top1(r["pick"])}
        now = r.get("at_plain_time") or {"pick": r["pick"], "candidates": r["candidates"], "epochs": r["epochs"]}
        row.update(
            {
                "equal_time_pick": now["pick"],
                "equal_time_candidates": now["candidates"],
                "equal_time_epochs": now["epochs"],
                "equal_time_reference_top1": reference_top1(now["pick"]),
            }
        )
        row.pop("at_plain_time", None)
        by[(r["arm"], r["seed"])] = row
    summary = []
    for key, label in (
        ("candidates_per_h", "candidates per hour"),
        ("epochs", "epochs trained (whole search)"),
        ("wall_s", "wall seconds (whole search)"),
        ("pick_test_top1", "answer's test top-1 % (its own proxy run)"),
        ("pick_reference_top1", "answer's test top-1 % (re-trained at the reference)"),
        ("equal_time_candidates", "candidates at the plain search's wall time"),
        ("equal_time_epochs", "epochs trained at the plain search's wall time"),
        ("equal_time_reference_top1", "answer at the plain search's wall time, re-trained at the reference (%)"),
    ):
        values = {
            arm: {s: by[(arm, s)][key] for s in args.seeds if (arm, s) in by and by[(arm, s)][key] is not None}
            for arm in ARMS
        }
        ratio = [values["asha"][s] / values["plain"][s] for s in values["asha"] if s in values["plain"]]
        summary.append(
            {
                "measure": label,
                "plain (mean)": round(statistics.mean(values["plain"].values()), 2) if values["plain"] else "",
                "asha (mean)": round(statistics.mean(values["asha"].values()), 2) if values["asha"] else "",
                "asha / plain (per seed)": ", ".join(f"{r:.2f}" for r in ratio),
                **{f"asha - plain: {k}": v for k, v in paired(values["asha"], values["plain"]).items()},
            }
        )
    write_result(
        out.name,
        summary,
        "--fidelity asha against the plain search, live on Fashion-MNIST with 2 workers",
        [
            f"TPE on funnel-reinvest-ti without baselines, DeiT-Ti's {BUDGET_MACS / 1e9:.2f} GMACs, {DATA} "
            f"{PROXY_TRAIN_PER_CLASS}/class, 2 workers, one torch thread each; equal compute: {args.trainings} full "
            f"4-epoch trainings' epochs per search (asha: {asha_trials(args.trainings)} rung trainings at most).",
            "asha: --schedule wsd (each rung's value after its own decay; a promotion continues the parent's "
            "stable checkpoint, so 1 + 1 + 3 epochs for a layout promoted twice), rungs 1, 2, 4 epochs, --reduction 2; "
            "plain: the cosine proxy, 4 epochs.",
            "The answer's test top-1: the search's best trial (at the highest rung reached), the official test "
            "split read once after its last epoch; then the same answer re-trained at the table's reference "
            f"(bench_table.py, seeds {list(REFERENCE_SEEDS)}, mean), the layouts on one schedule; paired by seed "
            "with a 95 % t interval.",
            "At the plain search's wall time: each ASHA search as it stood when the plain search of its seed had run "
            "as long (both from the first trial's start to the last trial's end; ASHA's --trials is set for equal "
            "epochs under a ranking that never changes, and real promotions can exceed it), its answer then "
            "re-trained at the reference the same way.",
        ],
        rows=list(by.values()),
        rows_suffix="_searches",
        folder=out.parent,
        argv=sys.argv[1:] if argv is None else argv,
    )
    print(markdown_table(summary))


if __name__ == "__main__":
    main()
