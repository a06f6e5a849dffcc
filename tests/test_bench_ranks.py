"""The rank statistics of benchmarks/bench_proxy_fidelity.py against published reference values
(SciPy's documented examples) and pandas' own Spearman."""

from pathlib import Path

import pandas as pd
import pytest

from benchmarks._ranks import bootstrap_interval, kendall_tau, mid_ranks, paired_difference_interval, spearman_rho


def test_kendall_tau_b_matches_scipys_documented_example_with_ties():
    # scipy.stats.kendalltau docs: x1 = [12, 2, 1, 12, 2], x2 = [1, 4, 7, 1, 0] -> tau-b = -0.47140452079103173
    assert kendall_tau([12, 2, 1, 12, 2], [1, 4, 7, 1, 0]) == pytest.approx(-0.47140452079103173, abs=1e-12)


def test_kendall_tau_counts_a_tie_in_one_ranking_only_against_that_side():
    # pairs of x=[1,2,2,3], y=[1,3,2,4]: 5 concordant, 0 discordant, 1 tied in x only -> 5 / sqrt(6 * 5)
    assert kendall_tau([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(5 / 30**0.5, abs=1e-12)
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == -1
    assert kendall_tau([1, 1, 1], [1, 2, 3]) is None


def test_spearman_matches_scipys_documented_example_and_pandas():
    # scipy.stats.spearmanr docs: spearmanr([1,2,3,4,5], [5,6,7,8,7]) -> 0.8207826816681233
    assert spearman_rho([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(0.8207826816681233, abs=1e-12)
    x, y = [3.1, 2.0, 2.0, 9.5, 4.4, 0.1, 4.4], [10, 30, 20, 20, 50, 0, 40]
    # with ties: Pearson of pandas' own average ranks (pandas' method="spearman" needs SciPy)
    reference = pd.Series(x).rank().corr(pd.Series(y).rank())
    assert spearman_rho(x, y) == pytest.approx(reference, abs=1e-12)
    # without ties: the textbook 1 - 6 sum d^2 / (n (n^2 - 1))
    a, b = [4, 1, 3, 2, 6, 5], [3, 1, 2, 4, 5, 6]
    d2 = sum((p - q) ** 2 for p, q in zip(a, b))
    assert spearman_rho(a, b) == pytest.approx(1 - 6 * d2 / (6 * 35), abs=1e-12)
    assert mid_ranks([10, 20, 20, 5]) == [2.0, 3.5, 3.5, 1.0]


def test_bootstrap_interval_brackets_the_statistic_and_is_degenerate_for_perfect_agreement():
    x = list(range(12))
    assert bootstrap_interval(x, x) == (1.0, 1.0)
    y = [0, 2, 1, 3, 5, 4, 6, 9, 7, 8, 11, 10]
    lo, hi = bootstrap_interval(x, y)
    assert lo <= kendall_tau(x, y) <= hi and lo < kendall_tau(x, y)


def test_paired_difference_interval_cancels_what_two_scorings_share():
    ref = list(range(12))
    noisy = [0, 2, 1, 3, 5, 4, 6, 9, 7, 8, 11, 10]
    # the same scoring twice: every resample differs by exactly 0
    assert paired_difference_interval(noisy, noisy, ref) == (0.0, 0.0)
    # perfect against reversed, on distinct values: tau 1 - (-1) = 2 in every resample with 2+ distinct layouts
    lo, hi = paired_difference_interval(ref, ref[::-1], ref)
    assert lo == hi == 2.0
    # perfect against noisy: never worse, the point difference inside, and a spread
    lo, hi = paired_difference_interval(ref, noisy, ref)
    assert 0 <= lo <= 1 - kendall_tau(noisy, ref) <= hi and lo < hi
    with pytest.raises(ValueError):
        paired_difference_interval(ref, ref[:3], ref)


def test_the_fidelity_summary_ranks_what_it_has(tmp_path):
    """bench_proxy_fidelity's analysis on made-up rows: a proxy that orders the layouts as the
    long runs do gets tau 1, one that reverses them -1, and a layout without long runs is left out."""
    import json

    import benchmarks.bench_proxy_fidelity as bench

    layouts = [{"layout": f"L{i}", "kind": "space" if i < 4 else "hand", "macs": 10 - i, "params": i} for i in range(6)]
    rows = []
    for i, lay in enumerate(layouts):
        for seed in (0, 1):
            rows.append(
                {
                    "config": "proxy",
                    "layout": lay["layout"],
                    "seed": seed,
                    "top1": 10.0 * i + seed,
                    "val_loss": 1.0 - 0.1 * i,
                    "sum_train_loss": 5.0 - i,
                    "wall_s": 2.0,
                    "proxy_macs": 100,
                }
            )
            # a candidate proxy trained on every layout that orders them backwards
            rows.append(
                {
                    "config": "image-16",
                    "layout": lay["layout"],
                    "seed": seed,
                    "top1": 60.0 - i,
                    "val_loss": 1.0,
                    "sum_train_loss": 5.0,
                    "wall_s": 2.0,
                    "proxy_macs": 100,
                }
            )
            if i < 5:  # L5 has no long run yet
                rows.append(
                    {
                        "config": "long",
                        "layout": lay["layout"],
                        "seed": seed,
                        "top1": 50.0 + i + seed / 10,
                        "val_loss": 0.5,
                        "sum_train_loss": 1.0,
                        "wall_s": 10.0,
                    }
                )
    out = tmp_path / "fidelity"
    bench.analyse(rows, layouts, out, argv=[])
    table = {r["scoring"]: r for r in __import__("csv").DictReader(open(out.with_suffix(".csv")))}
    assert table["proxy, seed 0"]["layouts"] == "5" and float(table["proxy, seed 0"]["kendall_tau"]) == 1.0
    assert float(table["MACs alone (more = better)"]["kendall_tau"]) == -1.0
    assert float(table["params alone (more = better)"]["kendall_tau"]) == 1.0
    assert float(table["long seed 0 vs long seed 1 (the ceiling)"]["kendall_tau"]) == 1.0
    assert float(table["image-16, mean of 2 seeds"]["kendall_tau"]) == -1.0
    assert float(table["image-16 seed 0 vs image-16 seed 1"]["kendall_tau"]) == 1.0
    md = out.with_suffix(".md").read_text()
    assert out.with_suffix(".png").exists() and "One knob at a time" in md
    assert "-2.00 to -2.00" in md  # image-16 against the proxy, paired: reversed against perfect, every resample
    json.dumps(rows)


def test_the_spaces_default_proxy_is_the_one_the_fidelity_benchmark_measured():
    """The README and `search --help` say funnel-reinvest-ti's default proxy is the measured one:
    its grid, width, epochs and learning rate from the fidelity benchmark, its batch size from the
    real-data recipe benchmark (bench_proxy_recipe's new recipe): changing either without the
    other must fail here."""
    import benchmarks.bench_proxy_fidelity as bench
    import benchmarks.bench_proxy_recipe as recipe
    import funnelbench as fb

    proxy = fb.load_space(bench.SPACE).proxy
    measured = bench.settings(bench.DEFAULT_CONFIG)
    expected = {k: v for k, v in measured.items() if k != "train_per_class"}
    assert {**expected, "batch_size": recipe.NEW_RECIPE["batch_size"]} == proxy
    assert recipe.SEARCH_PROXY["lr"] == proxy["lr"]  # the recipe was measured at the space's learning rate
    assert bench.DEFAULT_CONFIG in bench.FULL_CONFIGS  # measured on every layout, with both seeds
    from funnelbench.data import BUILTIN_TRAIN_PER_CLASS

    assert measured["train_per_class"] == BUILTIN_TRAIN_PER_CLASS  # the data default, which the space leaves alone


def test_the_search_quality_summary_sets_each_arms_picks_beside_the_best_hand_layout(tmp_path):
    """bench_search_quality's analysis on made-up rows: each arm's mean and spread over its search
    seeds' picks at the long schedule, the best hand layout within the budget by its long runs, and
    a hand layout over the budget left out."""
    import csv
    import json
    from types import SimpleNamespace

    import benchmarks.bench_search_quality as bench

    hand = {"B12(197), h192": 90.0, "B6(197)-6(50), max, h192": 95.0, "B12(197), h384": 99.0}  # the last: 4.6 GMACs
    fidelity = tmp_path / "fidelity.jsonl"
    rows = [{"config": "long", "layout": h, "seed": s, "top1": v + s} for h, v in hand.items() for s in (0, 1)]
    rows += [{"config": "image-16", "layout": h, "seed": 0, "top1": 100 - v} for h, v in hand.items()]
    rows += [{"config": "proxy", "layout": h, "seed": 0, "top1": v} for h, v in hand.items()]  # not the default
    fidelity.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "fidelity-layouts.json").write_text(json.dumps([{"layout": h, "kind": "hand"} for h in hand]))
    picks = {("tpe", 0): "A", ("tpe", 1): "B", ("random", 0): "C", ("random", 1): "D"}
    long_of = {"A": 96.0, "B": 98.0, "C": 80.0, "D": 90.0}
    searches = [
        {
            "sampler": sa,
            "seed": se,
            "pick": p,
            "pick_gmacs": 1.0,
            "pick_proxy_top1": 50.0,
            "trained": 16,
            "pruned": 0,
            "rejected": 3,
            "search_wall_s": 1.0,
            "proxy": "{}",
        }
        for (sa, se), p in picks.items()
    ]
    retrain = [{"layout": p, "seed": s, "top1": long_of[p] + (1 if s else -1)} for p in long_of for s in (0, 1)]
    out = tmp_path / "quality"
    bench.analyse(searches, retrain, bench.read_rows(fidelity), out, SimpleNamespace(fidelity=str(fidelity), trials=16))
    summary = {r["arm"]: r for r in csv.DictReader(open(out.with_suffix(".csv")))}
    tpe, rnd = summary["tpe search (2 seeds)"], summary["random search (2 seeds)"]
    assert float(tpe["long_top1_mean"]) == 97.0 and float(tpe["min"]) == 96.0 and float(tpe["max"]) == 98.0
    assert float(rnd["long_top1_mean"]) == 85.0 and float(rnd["long_top1_sd_over_search_seeds"]) == round(50**0.5, 2)
    best = summary["best hand layout by the long schedule: B6(197)-6(50), max, h192"]
    assert float(best["long_top1_mean"]) == 95.5  # not the 99 % layout: it is over the budget
    assert "hand layout the default proxy (seed 0) ranks first: B12(197), h192" in summary


def test_the_cost_benchmark_times_one_epoch_per_distinct_epoch_and_scales_by_epochs():
    """bench_proxy_cost times one epoch for each set of settings that changes an epoch's cost:
    the epoch-count variations share the proxy's epoch; image size, width and data share each
    get their own. Its layouts are the cheapest, a middle and the dearest of the fidelity study."""
    import json

    import benchmarks.bench_proxy_cost as cost
    import benchmarks.bench_proxy_fidelity as bench

    groups = {tuple(sorted(configs)) for configs in cost.epoch_groups().values()}
    assert groups == {("epochs-2", "epochs-8", "long", "proxy"), ("data-50%",), ("width-0.5",), ("image-16",)}
    layouts = json.loads((Path(bench.__file__).parent.parent / "results" / "proxy_fidelity-layouts.json").read_text())
    macs = {r["layout"]: r["macs"] for r in layouts}
    picked = cost.timing_layouts()
    assert len(set(picked)) == 3 and macs[picked[0]] == min(macs.values()) and macs[picked[2]] == max(macs.values())
