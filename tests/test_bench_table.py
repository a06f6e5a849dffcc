"""The tabular benchmark's analysis: the searchers simulated on a table, successive halving's
promotions and cost, and the rank agreement with its bootstrap over layouts and seeds. On a fake
table whose numbers are made up here, so every expected value is derived by hand."""

from __future__ import annotations

import random

import pytest

from benchmarks import table_searchers as ts
from benchmarks.bench_table_fidelity import agreement, split_half


def _row(layout: str, seed: int, curve: list[float], test: float, epoch_s: float = 10.0) -> dict:
    return {
        "phase": "proxy",
        "status": "completed",
        "layout": layout,
        "seed": seed,
        "val_top1_by_epoch": curve,
        "test_top1": test,
        "val_top1": max(curve),
        "train_s_by_epoch": [epoch_s] * len(curve),
        "train_s": epoch_s * len(curve),
    }


def test_the_promotion_rule_takes_the_top_of_the_highest_rung_first():
    results = {0: [("a", 0.5), ("b", 0.9), ("c", 0.7), ("d", 0.1)], 1: [("b", 0.8), ("c", 0.85)]}
    # rung 1 has 2 results: floor(2/2) = 1, its best is c
    assert ts.promotable(results, 2, set()) == (1, "c")
    # c already promoted from rung 1: rung 0's top floor(4/2) = 2 are b, c; b first
    assert ts.promotable(results, 2, {(1, "c")}) == (0, "b")
    assert ts.promotable(results, 2, {(1, "c"), (0, "b")}) == (0, "c")
    assert ts.promotable(results, 2, {(1, "c"), (0, "b"), (0, "c")}) is None
    # with eta 3 rung 0's 4 results promote one (floor(4/3)), rung 1's 2 none
    assert ts.promotable(results, 3, set()) == (0, "b")
    assert ts.promotable({0: [("a", 0.5)]}, 2, set()) is None


@pytest.fixture
def fake_table():
    """Every layout of the real sub-space, two seeds each; layout i's curve rises with i, so the
    last layouts of the enumeration are the best, and epoch 1 already ranks them."""
    layouts, hand = ts.table_layouts()
    rows = []
    for i, lay in enumerate(map(str, layouts)):
        q = i / len(layouts)
        for seed in (0, 1):
            rows.append(_row(lay, seed, [0.4 + 0.3 * q, 0.5 + 0.3 * q, 0.55 + 0.3 * q, 0.6 + 0.3 * q], 0.6 + 0.3 * q))
    return ts.Table(rows), [str(lay) for lay in layouts], hand


def test_successive_halving_spends_its_budget_in_epochs_and_continues_promoted_trainings(fake_table):
    table, layouts, _ = fake_table
    jobs = ts.run_halving(0, 8, table)
    assert sum(j["epochs"] for j in jobs) == 8 * 4  # n full trainings of 4 epochs
    by_layout: dict[str, list[dict]] = {}
    for j in jobs:
        by_layout.setdefault(j["layout"], []).append(j)
    for lay, js in by_layout.items():
        # a layout climbs the rungs one at a time, each promotion paying only its extra epochs
        assert [j["rung"] for j in js] == list(range(len(js)))
        assert [j["epochs"] for j in js] == [1, 1, 2][: len(js)]
        assert [j["value"] for j in js] == [table.rows[lay][0]["val_top1_by_epoch"][e - 1] for e in (1, 2, 4)][
            : len(js)
        ]
        assert sum(j["seconds"] for j in js) == 10.0 * sum(j["epochs"] for j in js)
    assert any(len(js) == 3 for js in by_layout.values())  # some layout reached the last rung
    curve = ts.halving_curve("h", table, jobs)
    assert curve.trainings == list(range(1, 9))
    # the incumbent is the best at the highest rung: a layout that reached rung 2
    top = [lay for lay, js in by_layout.items() if len(js) == 3]
    assert curve.best[-1] == max(table.test[lay] for lay in top)
    assert curve.seconds[-1] == 8 * 40.0


def test_a_searcher_run_on_the_table_writes_its_bands(fake_table, tmp_path):
    import json

    table, layouts, hand = fake_table
    path = tmp_path / "table_runs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for lay in layouts for r in table.rows[lay]))
    out = tmp_path / "searchers"
    ts.main(
        [
            "--runs",
            "3",
            "--trainings",
            "12",
            "--searchers",
            "evolution",
            "halving",
            "hand",
            "--table",
            str(path),
            "--out",
            str(out),
        ]
    )
    text = (tmp_path / "searchers.md").read_text()
    for name in ("evolution", "halving", "hand"):
        assert f"| {name}" in text
    assert (tmp_path / "searchers.png").stat().st_size > 0
    # resumable: evolution's runs are stored and read back, giving the same table
    stored = [json.loads(line) for line in (tmp_path / "searchers_runs.jsonl").read_text().splitlines()]
    assert {(r["searcher"], r["run"]) for r in stored} == {(s, k) for s in ("evolution", "hand") for k in range(3)}
    ts.main(
        [
            "--runs",
            "3",
            "--trainings",
            "12",
            "--searchers",
            "evolution",
            "halving",
            "hand",
            "--table",
            str(path),
            "--out",
            str(out),
        ]
    )
    assert (tmp_path / "searchers.md").read_text().split("Date:")[1].split("\n", 1)[1] == text.split("Date:")[1].split(
        "\n", 1
    )[1]


def test_agreement_is_perfect_for_the_same_ranking_and_its_interval_carries_seed_noise():
    rng = random.Random(0)
    truth = {f"L{i}": [float(i)] for i in range(30)}
    same = agreement(truth, truth, draws=200)
    assert same["layouts"] == 30
    assert same["Kendall tau"].startswith("1.000 [1.000, 1.000]")
    # a score whose seeds scatter by more than the gaps between layouts: the point estimate of
    # the means stays high, the interval (which resamples seeds) reaches well below it
    noisy = {k: [v[0] + rng.gauss(0, 8), v[0] + rng.gauss(0, 8)] for k, v in truth.items()}
    result = agreement(noisy, truth, draws=300)
    value, interval = result["Kendall tau"].split(" [")
    lo, hi = (float(x) for x in interval.rstrip("]").split(", "))
    assert lo < float(value) - 0.1 and lo < hi
    # the reverse ranking: tau -1
    assert agreement({k: [-v[0]] for k, v in truth.items()}, truth, draws=50)["Kendall tau"].startswith("-1.000")


def test_split_half_pairs_the_first_and_second_seed_of_layouts_that_have_both():
    first, second = split_half({"a": [1.0, 2.0], "b": [3.0], "c": [4.0, 5.0, 6.0]})
    assert first == {"a": [1.0], "c": [4.0]} and second == {"a": [2.0], "c": [5.0]}


def test_the_live_comparison_pairs_by_seed_with_a_t_interval_and_the_detectable_effect():
    from benchmarks.bench_search_live import paired

    # d = 1, 2, 2: mean 5/3, sd 1/sqrt(3); t(0.975, 2) = 4.303, t(0.8, 2) = 1.061
    result = paired({0: 80.0, 1: 81.0, 2: 82.0, 3: 90.0}, {0: 79.0, 1: 79.0, 2: 80.0})
    assert result["seeds"] == 3 and result["mean diff"] == 1.67
    half = 4.3027 * (1 / 3**0.5) / 3**0.5
    assert result["95 % CI"] == f"[{5 / 3 - half:.2f}, {5 / 3 + half:.2f}]"
    assert result["excludes 0"] == "yes"
    assert result["detectable (80 % power)"] == round((4.3027 + 1.0607) / 3, 2)
    assert paired({0: 1.0, 1: 3.0}, {0: 2.0, 1: 1.0})["excludes 0"] == "no"
    assert paired({0: 1.0}, {0: 2.0})["95 % CI"] == ""
