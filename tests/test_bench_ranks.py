"""The rank statistics of benchmarks/bench_proxy_fidelity.py against published reference values
(SciPy's documented examples) and pandas' own Spearman."""

import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from _ranks import bootstrap_interval, kendall_tau, mid_ranks, spearman_rho  # noqa: E402


def test_kendall_tau_b_matches_scipys_documented_example_with_ties():
    # scipy.stats.kendalltau docs: x1 = [12, 2, 1, 12, 2], x2 = [1, 4, 7, 1, 0] -> tau-b = -0.47140452079103173
    assert kendall_tau([12, 2, 1, 12, 2], [1, 4, 7, 1, 0]) == pytest.approx(-0.47140452079103173, abs=1e-12)


def test_kendall_tau_counts_a_tie_in_one_ranking_only_against_that_side():
    # pairs of x=[1,2,2,3], y=[1,3,2,4]: 5 concordant, 0 discordant, 1 tied in x only -> 5 / sqrt(6 * 5)
    assert kendall_tau([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(5 / 30 ** 0.5, abs=1e-12)
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


def test_the_fidelity_summary_ranks_what_it_has(tmp_path):
    """bench_proxy_fidelity's analysis on made-up rows: a proxy that orders the layouts as the
    long runs do gets tau 1, one that reverses them -1, and a layout without long runs is left out."""
    import json

    import bench_proxy_fidelity as bench

    layouts = [{"layout": f"L{i}", "kind": "space" if i < 4 else "hand", "macs": 10 - i, "params": i} for i in range(6)]
    rows = []
    for i, lay in enumerate(layouts):
        for seed in (0, 1):
            rows.append({"config": "proxy", "layout": lay["layout"], "seed": seed, "top1": 10.0 * i + seed,
                         "val_loss": 1.0 - 0.1 * i, "sum_train_loss": 5.0 - i, "wall_s": 2.0, "proxy_macs": 100})
            if i < 5:  # L5 has no long run yet
                rows.append({"config": "long", "layout": lay["layout"], "seed": seed, "top1": 50.0 + i + seed / 10,
                             "val_loss": 0.5, "sum_train_loss": 1.0, "wall_s": 10.0})
    out = tmp_path / "fidelity"
    bench.analyse(rows, layouts, out, argv=[])
    table = {r["scoring"]: r for r in __import__("csv").DictReader(open(out.with_suffix(".csv")))}
    assert table["proxy, seed 0"]["layouts"] == "5" and float(table["proxy, seed 0"]["kendall_tau"]) == 1.0
    assert float(table["MACs alone (more = better)"]["kendall_tau"]) == -1.0
    assert float(table["params alone (more = better)"]["kendall_tau"]) == 1.0
    assert float(table["long seed 0 vs long seed 1 (the ceiling)"]["kendall_tau"]) == 1.0
    assert out.with_suffix(".png").exists() and "One knob at a time" in out.with_suffix(".md").read_text()
    json.dumps(rows)


def test_the_spaces_default_proxy_is_the_one_the_fidelity_benchmark_measured():
    """The README and `search --help` say funnel-reinvest-ti's default proxy is the measured one:
    changing either without the other must fail here."""
    import bench_proxy_fidelity as bench

    import funnelbench as fb

    proxy = fb.load_space(bench.SPACE).proxy
    assert {k: v for k, v in bench.PROXY.items() if k != "train_per_class"} == proxy
    from funnelbench.data import BUILTIN_TRAIN_PER_CLASS

    assert bench.PROXY["train_per_class"] == BUILTIN_TRAIN_PER_CLASS  # the data default, which the space leaves alone
