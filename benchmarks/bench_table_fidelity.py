"""How well do cheap scores rank the layouts of the Fashion-MNIST table (``bench_table.py``)?

Scorings of each layout: the proxy's validation top-1 (what the search reads; mean over its
seeds), the proxy's validation top-1 after each epoch (what a rung of successive halving reads),
MACs and params alone, and three zero-cost scores at initialisation (``_zero_cost.py``: synflow,
grad-norm, NASWOT; computed once per layout here and stored, resumable). Targets: the reference's
test top-1 (the longer schedule, ``--phase reference``) where the table has it, and the proxy's
own test top-1 (the official test split) for every layout.

Each agreement is Kendall's tau-b and Spearman's rho with a 90 % bootstrap interval over layouts
*and* seeds: a draw resamples the layouts with replacement and, for each, the stored seeds of each
phase with replacement (so the interval carries the seed noise of both sides). The ceiling: how
well one seed of a phase ranks the layouts like another seed of the same phase.

    PYTHONPATH=. python benchmarks/bench_table_fidelity.py
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
from pathlib import Path

from benchmarks._common import markdown_table, write_result
from benchmarks._ranks import kendall_tau, spearman_rho
from benchmarks.bench_table import (
    ASHA_RUNGS,
    DATA,
    PROXY_TRAIN_PER_CLASS,
    SPACE,
    proxy_options,
    read_rows,
    table_layouts,
)

ZERO_COST = ("synflow", "grad_norm", "naswot")
ZERO_COST_BATCH = 64  # images in the minibatch of grad-norm and NASWOT (NASWOT's paper uses 128 at 32 px)


# ----------------------------------------------------------------------------- the zero-cost scores


def zero_cost_rows(layouts: list[str], path: Path, *, seed: int = 0) -> list[dict]:
    """Every layout's zero-cost scores (the proxy model at initialisation with ``seed``, one fixed
    minibatch of the proxy's training images); computed for the layouts ``path`` lacks and appended
    to it, one line per layout."""
    rows = {r["layout"]: r for r in read_rows(path)}
    todo = [lay for lay in layouts if lay not in rows]
    if todo:
        import torch

        torch.set_num_threads(1)
        x, y = _minibatch(seed)
        from benchmarks._zero_cost import scores
        from funnelbench.train import proxy_layout

        options = proxy_options("proxy")
        for i, lay in enumerate(todo, 1):
            proxy = proxy_layout(lay, options["image_size"], options["patch_size"], options["width_scale"])
            row = {"layout": lay, "proxy_layout": str(proxy), "seed": seed, **scores(proxy, x, y, seed=seed)}
            row["load_1m_after"] = round(os.getloadavg()[0], 2)
            rows[lay] = row
            with open(path, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"[{i}/{len(todo)}] {lay}: " + ", ".join(f"{k} {row[k]:.4g}" for k in ZERO_COST), flush=True)
    return [rows[lay] for lay in layouts]


def _minibatch(seed: int):
    """One normalised minibatch of the proxy's training images (the trainer's data and normalisation)."""
    import tempfile

    import torch

    from funnelbench.data import normalize
    from funnelbench.train import Trainer, make_config

    options = {**proxy_options("proxy"), "epochs": 1}
    config = make_config("B12(197), h192", seed=seed, **options)
    with tempfile.TemporaryDirectory() as tmp, Trainer(config, out=os.path.join(tmp, "run"), overwrite=True) as t:
        generator = torch.Generator().manual_seed(seed)
        pick = torch.randperm(len(t.data.train), generator=generator)[:ZERO_COST_BATCH]
        x, y = t.data.train.take(pick.numpy())
        return normalize(x, *t.norm_stats), y


# ----------------------------------------------------------------------------- agreement with a bootstrap over layouts and seeds


def seed_values(rows: list[dict], phase: str, key) -> dict[str, list[float]]:
    """layout -> one value per stored seed of ``phase`` (``key``: a row field or a function of the row)."""
    out: dict[str, list[float]] = {}
    for r in rows:
        if r["phase"] == phase and r["status"] == "completed":
            out.setdefault(r["layout"], []).append(key(r) if callable(key) else r[key])
    return out


def agreement(
    score: dict[str, list[float]],
    target: dict[str, list[float]],
    *,
    draws: int = 1000,
    seed: int = 0,
    joint: bool = False,
):
    """Kendall tau-b and Spearman rho of the per-layout means of ``score`` and ``target`` (each a
    list of per-seed values; one value for a deterministic score), with 90 % percentile bootstrap
    intervals resampling layouts and, within each, seeds. ``joint``: score and target are read
    from the same trainings (value i of each from run i), so a draw resamples the runs together.
    Resampling two seeds with replacement gives one seed's noise half the time: the interval is
    conservative (wider, and lower than the estimate on the means) where layouts have 2 seeds."""
    layouts = sorted(set(score) & set(target))
    xs = [statistics.mean(score[k]) for k in layouts]
    ys = [statistics.mean(target[k]) for k in layouts]
    rng = random.Random(seed)
    taus, rhos = [], []
    for _ in range(draws):
        pick = [layouts[rng.randrange(len(layouts))] for _ in layouts]
        bx, by = [], []
        for k in pick:
            if joint and len(score[k]) == len(target[k]):
                runs = [rng.randrange(len(score[k])) for _ in score[k]]
                bx.append(statistics.mean(score[k][i] for i in runs))
                by.append(statistics.mean(target[k][i] for i in runs))
            else:
                bx.append(statistics.mean(rng.choices(score[k], k=len(score[k]))))
                by.append(statistics.mean(rng.choices(target[k], k=len(target[k]))))
        for stat, out in ((kendall_tau, taus), (spearman_rho, rhos)):
            v = stat(bx, by)
            if v is not None:
                out.append(v)
    return {
        "layouts": len(layouts),
        "Kendall tau": _with_interval(kendall_tau(xs, ys), taus),
        "Spearman rho": _with_interval(spearman_rho(xs, ys), rhos),
    }


def paired_agreement(a: dict, b: dict, target: dict, *, draws: int = 1000, seed: int = 0) -> str:
    """Kendall tau(a, target) - tau(b, target) on the layouts all three have, with a 90 %
    bootstrap interval resampling layouts and, within each, the seeds of every side together
    (what the two scorings share cancels)."""
    layouts = sorted(set(a) & set(b) & set(target))
    if len(layouts) < 3:
        return "n/a"

    def tau(pick, sample):
        ys = [sample(target[k]) for k in pick]
        return kendall_tau([sample(a[k]) for k in pick], ys), kendall_tau([sample(b[k]) for k in pick], ys)

    ta, tb = tau(layouts, statistics.mean)
    rng = random.Random(seed)
    diffs = []
    for _ in range(draws):
        pick = [layouts[rng.randrange(len(layouts))] for _ in layouts]
        va, vb = tau(pick, lambda v: statistics.mean(rng.choices(v, k=len(v))))
        if va is not None and vb is not None:
            diffs.append(va - vb)
    return _with_interval(None if ta is None or tb is None else ta - tb, diffs)


def split_half(values: dict[str, list[float]]) -> tuple[dict, dict]:
    """The first and the second stored seed of every layout that has two (the seed-to-seed ceiling)."""
    both = {k: v for k, v in values.items() if len(v) >= 2}
    return {k: v[:1] for k, v in both.items()}, {k: v[1:2] for k, v in both.items()}


def _with_interval(value, draws: list[float]) -> str:
    if value is None or not draws:
        return "n/a"
    draws = sorted(draws)
    lo, hi = draws[int(0.05 * (len(draws) - 1))], draws[int(0.95 * (len(draws) - 1))]
    return f"{value:.3f} [{lo:.3f}, {hi:.3f}]"


# ----------------------------------------------------------------------------- the report


def fidelity_rows(rows: list[dict], zero: list[dict], *, draws: int) -> list[dict]:
    proxy_val = seed_values(rows, "proxy", "val_top1")
    proxy_test = seed_values(rows, "proxy", "test_top1")
    reference = seed_values(rows, "reference", "test_top1")
    epochs = max((len(r["val_top1_by_epoch"]) for r in rows if r["phase"] == "proxy"), default=0)
    by_epoch = {
        e: seed_values(
            rows, "proxy", lambda r, e=e: r["val_top1_by_epoch"][e - 1] if len(r["val_top1_by_epoch"]) >= e else None
        )
        for e in range(1, epochs + 1)
    }
    fixed = {}
    from funnelbench.cost import count
    from funnelbench.layout import parse_layout

    for layout in proxy_val:
        c = count(parse_layout(layout))
        fixed.setdefault("MACs (full size)", {})[layout] = [c.macs]
        fixed.setdefault("params (full size)", {})[layout] = [c.params]
    for z in zero:
        for k in ZERO_COST:
            fixed.setdefault(f"zero-cost {k}", {})[z["layout"]] = [z[k]]

    scorings = {"proxy val top-1 (4 epochs)": proxy_val}
    scorings.update({f"proxy val top-1 after epoch {e}": v for e, v in by_epoch.items() if e < epochs})
    scorings.update(fixed)
    targets = {"proxy test top-1": proxy_test}
    if reference:
        targets = {"reference test top-1": reference, **targets}
    out = []
    for target_name, target in targets.items():
        first, second = split_half(target)
        if first:
            out.append(
                {
                    "scoring": f"ceiling: seed 0 vs seed 1 of the {target_name}",
                    "target": target_name,
                    **agreement(first, second, draws=draws),
                }
            )
        for name, score in scorings.items():
            joint = target_name == "proxy test top-1" and name.startswith("proxy val")  # the same trainings
            out.append({"scoring": name, "target": target_name, **agreement(score, target, draws=draws, joint=joint)})
        out += rung_rows(rows, by_epoch, target, target_name, draws=draws)
    return out


def rung_rows(rows: list[dict], by_epoch: dict, target: dict, target_name: str, *, draws: int) -> list[dict]:
    """What a rung of --fidelity asha reads, against epoch k of the 4-epoch cosine proxy on the
    same layouts (the reference's): epoch k of a ``--schedule constant`` run (phase constant: what
    asha trains today), and a k-epoch ``--schedule wsd`` run that decays at its own end (phase
    wsd-k: what a rung would read from a short decay branched off the stable run)."""
    rungs: dict[str, tuple[int, dict]] = {}
    for e in by_epoch if seed_values(rows, "constant", "val_top1") else ():
        const = seed_values(rows, "constant", lambda r, e=e: r["val_top1_by_epoch"][e - 1])
        rungs[f"constant proxy, epoch {e} (rung)"] = (e, const)
    for e in ASHA_RUNGS:
        wsd = seed_values(rows, f"wsd-{e}", "val_top1")
        if wsd and e in by_epoch:
            rungs[f"wsd proxy, {e} epoch{'s' if e > 1 else ''} with its decay (rung)"] = (e, wsd)
    out = []
    for e in sorted({e for e, _ in rungs.values()}):
        at_e = {name: score for name, (k, score) in rungs.items() if k == e}
        cos = {k: v for k, v in by_epoch[e].items() if any(k in score for score in at_e.values())}
        out.append(
            {"scoring": f"cosine proxy, epoch {e}", "target": target_name, **agreement(cos, target, draws=draws)}
        )
        for name, score in at_e.items():
            out.append(
                {
                    "scoring": name,
                    "target": target_name,
                    **agreement(score, target, draws=draws),
                    "minus the cosine's tau (paired)": paired_agreement(score, cos, target, draws=draws),
                }
            )
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", default="results/table_fashion_mnist_runs.jsonl")
    parser.add_argument("--zero-cost", default="results/table_zero_cost_runs.jsonl", help="the zero-cost run file")
    parser.add_argument("--out", default="results/table_fidelity")
    parser.add_argument("--draws", type=int, default=1000, help="bootstrap draws")
    args = parser.parse_args(argv)

    rows = read_rows(Path(args.table))
    layouts, hand = table_layouts()
    trained = {r["layout"] for r in rows if r["phase"] == "proxy"}
    zero = zero_cost_rows([str(lay) for lay in layouts], Path(args.zero_cost))
    zero = [z for z in zero if z["layout"] in trained]
    table = fidelity_rows(rows, zero, draws=args.draws)
    n_ref = len({r["layout"] for r in rows if r["phase"] == "reference"})
    out = Path(args.out)
    write_result(
        out.name,
        table,
        "How well cheap scores rank the Fashion-MNIST table's layouts",
        [
            f"{len(trained)} of {len(layouts)} layouts of `{SPACE}` have proxy trainings, {n_ref} a reference "
            f"(`results/table_fashion_mnist_runs.jsonl`). Proxy: the space's proxy on {DATA}, "
            f"{PROXY_TRAIN_PER_CLASS} images per class.",
            "Kendall tau-b and Spearman rho of per-layout means, [90 % bootstrap interval over layouts and, within "
            "each, seeds]. The ceiling row: one seed of the target against another (how well any score could do).",
            "The proxy's validation against its own test top-1 shares the trainings (their seed noise is common, "
            "so it overstates fidelity; the runs are resampled together); the ceiling row is the honest yardstick "
            "until the reference exists. Resampling 2 seeds with replacement makes the intervals conservative.",
            "Epoch k of the proxy is epoch k of its 4-epoch cosine schedule (what a rung of successive halving "
            "reads from these curves), not a k-epoch schedule. Rungs: epoch k of a --schedule constant run, and "
            "a k-epoch --schedule wsd run (its last 20 % of steps decaying); 'minus the cosine's tau': the "
            "paired difference on the same layouts and seeds.",
            f"Zero-cost scores: the proxy model at initialisation (seed 0), one minibatch of {ZERO_COST_BATCH} "
            f"training images; median {statistics.median(z['zero_cost_s'] for z in zero):.2f} s per layout for "
            "the three together (one thread)."
            if zero
            else "No zero-cost scores yet.",
        ],
        folder=out.parent,
        argv=sys.argv[1:] if argv is None else argv,
    )
    print(markdown_table(table))


if __name__ == "__main__":
    main()
