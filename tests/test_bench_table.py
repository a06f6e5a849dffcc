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


def test_asha_on_the_table_spends_its_budget_in_epochs_and_continues_promoted_trainings(fake_table):
    table, layouts, _ = fake_table
    jobs = ts.run_asha_random(0, 8, table)
    assert sum(j["epochs"] for j in jobs) <= 8 * 4 and sum(j["epochs"] for j in jobs) > 8 * 4 - 4
    by_layout: dict[str, list[dict]] = {}
    for j in jobs:
        by_layout.setdefault(j["layout"], []).append(j)
    for lay, js in by_layout.items():
        # a layout climbs the rungs (1, 2, 4 epochs) one at a time, each promotion paying only its extra epochs
        assert [j["rung"] for j in js] == list(range(len(js)))
        assert [j["epochs"] for j in js] == [1, 1, 2][: len(js)]
        curve = table.rows[lay][0]["val_top1_by_epoch"]
        assert [j["value"] for j in js] == [curve[e - 1] for e in (1, 2, 4)][: len(js)]
        assert sum(j["seconds"] for j in js) == 10.0 * sum(j["epochs"] for j in js)
    assert any(len(js) == 3 for js in by_layout.values())  # some layout reached the last rung
    curve = ts.incumbent_curve("h", table, jobs, 4)
    assert curve.trainings == list(range(1, len(curve.trainings) + 1)) and len(curve.trainings) >= 7
    # the incumbent is the best at the highest rung: a layout that reached rung 2
    top = [lay for lay, js in by_layout.items() if len(js) == 3]
    assert curve.best[-1] == max(table.test[lay] for lay in top)


def test_a_plain_training_reads_the_best_epoch_and_costs_the_whole_schedule():
    row = _row("L", 1, [0.5, 0.7, 0.6, 0.65], 0.6, epoch_s=3.0)
    j = ts.job("L", row)
    assert (j["value"], j["epochs"], j["seconds"], j["seed"], j["rung"]) == (0.7, 4, 12.0, 1, 0)
    # a rung reads the value at its end, and a promotion costs only its extra epochs
    j = ts.job("L", row, rung=1, upto=4, before=2)
    assert (j["value"], j["epochs"], j["seconds"]) == (0.65, 2, 6.0)


def test_asha_tpe_is_the_tool_s_search_with_lookups(fake_table):
    table, _, _ = fake_table
    jobs = ts.run_tool("tpe", 0, 6, table, asha=True)
    assert 6 * 4 - 4 < sum(j["epochs"] for j in jobs) <= 6 * 4
    assert {j["rung"] for j in jobs} >= {0, 1}  # the tool promoted
    reached: dict[str, int] = {}
    for j in jobs:  # every promotion continues where the layout's previous rung stopped
        assert j["upto"] - j["epochs"] == reached.get(j["layout"], 0)
        assert j["upto"] == ts.ASHA_RUNGS[j["rung"]]
        reached[j["layout"]] = j["upto"]
    plain = ts.run_tool("random", 0, 3, table)
    assert [j["epochs"] for j in plain] == [4, 4, 4] and {j["rung"] for j in plain} == {0}


def test_a_searcher_run_on_the_table_writes_its_bands_and_resumes(fake_table, tmp_path, monkeypatch):
    import json

    table, layouts, hand = fake_table
    path = tmp_path / "table_runs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for lay in layouts for r in table.rows[lay]))
    searchers = ("evolution", "asha-random", "hand")
    argv = ["--runs", "3", "--trainings", "12", "--searchers", *searchers]
    argv += ["--table", str(path), "--out", str(tmp_path / "searchers")]
    ts.main(argv)
    text = (tmp_path / "searchers.md").read_text()
    for name in searchers:
        assert f"| {name}" in text
    assert (tmp_path / "searchers.png").stat().st_size > 0
    stored = [json.loads(line) for line in (tmp_path / "searchers_runs.jsonl").read_text().splitlines()]
    assert {(r["searcher"], r["run"]) for r in stored} == {(s, k) for s in searchers for k in range(3)}
    assert all(r["trainings"] == 12 for r in stored)  # what "complete" is judged by on a re-run
    # resumable: a second invocation reads every run back (running a searcher again would fail)
    # and writes the same table
    for name in ("run_evolution", "run_asha_random", "run_hand"):
        monkeypatch.setattr(ts, name, lambda *a, **k: pytest.fail("a stored run was run again"))
    ts.main(argv)
    after = (tmp_path / "searchers.md").read_text()
    assert after.split("Date:")[1].split("\n", 1)[1] == text.split("Date:")[1].split("\n", 1)[1]


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


def test_the_fidelity_report_sets_constant_and_wsd_rungs_beside_the_same_epoch_of_the_cosine_proxy():
    from benchmarks.bench_table_fidelity import fidelity_rows, paired_agreement

    rows = []
    for i in range(12):
        lay = f"B{i + 1}(197), h192"
        for seed in (0, 1):
            # the cosine proxy's first epoch ranks the layouts backwards, the constant one's rightly;
            # both end right; the reference's test top-1 rises with i
            cosine = [0.5 - 0.01 * i, 0.5 + 0.01 * i, 0.6 + 0.01 * i, 0.7 + 0.01 * i]
            constant = [0.4 + 0.01 * i, 0.5 + 0.01 * i, 0.55 + 0.01 * i, 0.6 + 0.01 * i]
            # a 1-epoch wsd run ranks them rightly, a 2-epoch one backwards
            wsd1, wsd2 = [0.45 + 0.01 * i], [0.4, 0.6 - 0.01 * i]
            phases = (("proxy", cosine), ("constant", constant), ("wsd-1", wsd1), ("wsd-2", wsd2))
            for phase, curve in (*phases, ("reference", [0.8 + 0.01 * i])):
                rows.append({**_row(lay, seed, curve, curve[-1] + 0.001 * seed), "phase": phase, "val_top1": curve[-1]})
    table = {(r["scoring"], r["target"]): r for r in fidelity_rows(rows, [], draws=50)}
    ref = "reference test top-1"
    assert table[("cosine proxy, epoch 1", ref)]["Kendall tau"].startswith("-1.000")
    assert table[("constant proxy, epoch 1 (rung)", ref)]["Kendall tau"].startswith("1.000")
    # 2 exactly on the layouts; a bootstrap draw repeats layouts, whose ties pull tau-b in a little
    diff = table[("constant proxy, epoch 1 (rung)", ref)]["minus the cosine's tau (paired)"]
    assert diff.startswith("2.000 [") and float(diff.split("[")[1].split(",")[0]) > 1.5
    assert table[("constant proxy, epoch 4 (rung)", ref)]["minus the cosine's tau (paired)"].startswith("0.000")
    # wsd's rungs: read from their own runs, set beside the cosine's epoch 1 and 2; no 4-epoch run here
    assert table[("wsd proxy, 1 epoch with its decay (rung)", ref)]["Kendall tau"].startswith("1.000")
    assert table[("wsd proxy, 2 epochs with its decay (rung)", ref)]["Kendall tau"].startswith("-1.000")
    assert table[("wsd proxy, 2 epochs with its decay (rung)", ref)]["minus the cosine's tau (paired)"].startswith(
        "-2.000"
    )
    assert not any(name.startswith("wsd proxy, 4") for name, _ in table)
    assert table[("ceiling: seed 0 vs seed 1 of the reference test top-1", ref)]["layouts"] == 12
    assert paired_agreement({"a": [1.0]}, {"a": [1.0]}, {"a": [1.0]}) == "n/a"


def test_the_live_asha_benchmark_gives_asha_the_plain_search_s_epochs():
    from benchmarks.bench_asha_live import asha_trials

    # one 4-epoch training's worth: c0 and c1 train 1 epoch each, c0 (the better) is promoted to
    # 2 epochs (+1), then c2 starts (+1): 4 epochs in 4 trainings
    assert asha_trials(1) == 4
    # under wsd a promotion to 4 epochs continues the 2-epoch run's stable point, epoch 1 (3
    # epochs, not 2): with reduction 2 a candidate costs 1 + 1/2 + 3/4 = 2.25 epochs on average;
    # 24 trainings' 96 epochs: 44 candidates, 22 promoted once (1 epoch), 10 twice (3 epochs):
    # 44 + 22 + 30 = 96 epochs in 76 trainings
    assert asha_trials(24) == 76


def test_the_test_curve_reads_the_test_split_every_k_epochs_and_once_after_the_last(tmp_path, monkeypatch):
    """The reference phase reads the test split every ``test_every`` epochs; the last epoch's
    value is the trainer's own read at the end (the same number, not a second pass)."""
    from data_files import write_idx

    import funnelbench as fb
    from benchmarks._common import train_with_test_curve
    from funnelbench.data import CACHE_ENV
    from funnelbench.train import make_config
    from funnelbench.training import trainer as trainer_module

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    write_idx(tmp_path / "mnist", n_train=40, n_test=20)
    data = fb.load_data(tmp_path / "mnist", image_size=16, val_per_class=1)
    splits = []
    read = trainer_module.evaluate_split
    monkeypatch.setattr(trainer_module, "evaluate_split", lambda *a, **kw: splits.append(kw["split"]) or read(*a, **kw))
    config = make_config("test-vit", epochs=3, image_size=16, batch_size=16, checkpoint="none", threads=1)
    rec = train_with_test_curve(config, tmp_path / "every2", data=data, test_every=2)
    assert splits.count("test") == 2 and splits.count("val") == 3  # after epoch 2, and the trainer's at the end
    assert rec["test_top1_by_epoch"][0] is None and rec["test_top1_by_epoch"][1] is not None
    assert rec["test_top1_by_epoch"][2] == rec["test_top1"] and rec["test_s_by_epoch"][2] > 0
    splits.clear()
    rec = train_with_test_curve(config, tmp_path / "every1", data=data)
    assert splits.count("test") == 3 and None not in rec["test_top1_by_epoch"]
    assert rec["test_top1_by_epoch"][-1] == rec["test_top1"]
