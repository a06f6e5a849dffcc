"""``funnelbench compare`` and :mod:`funnelbench.search.compare` on small studies made here:
written through Optuna's API as ``funnelbench search`` writes them (so every number below is
derived by hand), and two real searches of the tiny space."""

import json
import math
import struct
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.distributions import IntDistribution
from typer.testing import CliRunner

from funnelbench.cli import app
from funnelbench.search import compare as cp
from funnelbench.search.report import open_study

optuna.logging.set_verbosity(optuna.logging.WARNING)
runner = CliRunner()
DIST = {"x": IntDistribution(0, 100)}


def settings(sampler: str, seed: int, objectives=("top1",)) -> dict:
    directions = ["maximize" if o == "top1" else "minimize" for o in objectives]
    return {
        "space": "synthetic",
        "space_file": None,
        "space_spec": {"name": "synthetic"},
        "budgets": {"macs": 1e9},
        "objectives": list(objectives),
        "directions": directions,
        "sampler": sampler,
        "seed": seed,
        "pruner": "none",
        "proxy": {"epochs": 3, "seed": seed, "threads": 1},
        "baselines": [],
    }


def make_study(storage: str, name: str, sampler: str, seed: int, steps: list, objectives=("top1",)):
    """``steps``: (kind, value) in order; kind completed / pruned / rejected / over (a trained
    baseline over the budget) / failed. Every training takes 10 s (wall_s)."""
    directions = ["maximize" if o == "top1" else "minimize" for o in objectives]
    study = optuna.create_study(storage=storage, study_name=name, directions=directions)
    study.set_user_attr("funnelbench", "search/1")
    study.set_user_attr("settings", settings(sampler, seed, objectives))
    for i, (kind, value) in enumerate(steps):
        values = list(value) if isinstance(value, tuple) else [value]
        status = {"over": "completed"}.get(kind, kind)
        attrs = {
            "status": status,
            "wall_s": None if kind == "rejected" else 10.0,
            "baseline": kind == "over",
            "top1": values[0],
        }
        constraint = {"macs": 0.5 if kind in ("over", "rejected") else -0.5}
        if kind in ("completed", "over", "rejected"):
            trial = optuna.trial.create_trial(
                values=values, params={"x": i}, distributions=DIST, user_attrs=attrs, constraints=constraint
            )
        elif kind == "pruned":
            trial = optuna.trial.create_trial(
                state=optuna.trial.TrialState.PRUNED,
                params={"x": i},
                distributions=DIST,
                user_attrs=attrs,
                intermediate_values={0: values[0]},
            )
        else:
            trial = optuna.trial.create_trial(
                state=optuna.trial.TrialState.FAIL,
                params={"x": i},
                distributions=DIST,
                user_attrs={**attrs, "error": "boom"},
            )
        study.add_trial(trial)
    return study


# Two configurations (tpe, random), two seeds each. Rejected candidates are not trainings; the
# pruned and failed trials and the baseline over budget are trainings that never become best.
STUDIES = {
    "tpe-0": (
        "tpe",
        0,
        [
            ("completed", 50.0),
            ("rejected", 99.0),
            ("completed", 60.0),
            ("pruned", 70.0),
            ("completed", 55.0),
            ("completed", 70.0),
        ],
    ),
    "tpe-1": (
        "tpe",
        1,
        [("over", 90.0), ("completed", 40.0), ("completed", 65.0), ("failed", 0.0), ("completed", 66.0)],
    ),
    "random-0": ("random", 0, [("completed", 30.0), ("completed", 35.0), ("completed", 45.0), ("completed", 50.0)]),
    "random-1": (
        "random",
        1,
        [("completed", 40.0), ("completed", 41.0), ("rejected", 99.0), ("completed", 42.0), ("completed", 60.0)],
    ),
}
# best so far after each training, by hand from the steps above
BEST = {
    "tpe-0": [50, 60, 60, 60, 70],
    "tpe-1": [None, 40, 65, 65, 66],
    "random-0": [30, 35, 45, 50],
    "random-1": [40, 41, 42, 60],
}


@pytest.fixture
def studies(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    for name, (sampler, seed, steps) in STUDIES.items():
        make_study(url, name, sampler, seed, steps)
    return url


def test_curves_count_trainings_and_keep_the_best_feasible_value(studies):
    for name, best in BEST.items():
        curve = cp.study_curve(open_study(name, studies))
        assert curve.trainings == list(range(1, len(best) + 1)), name
        assert curve.best == best, name
        assert curve.seconds == [10.0 * i for i in curve.trainings], name
        assert curve.at_seconds(25.0) == best[1] and curve.at_seconds(5.0) is None


def test_groups_differ_by_sampler_and_bands_are_t_intervals(studies):
    groups = cp.group_curves([cp.study_curve(open_study(n, studies)) for n in STUDIES])
    assert sorted(groups) == ["sampler=random", "sampler=tpe"]
    assert sorted(c.name for c in groups["sampler=tpe"]) == ["tpe-0", "tpe-1"]
    # after 3 trainings: tpe 60 and 65 -> mean 62.5, sd 3.5355, t(0.975, 1) = 12.7062: half 31.766
    mean, lo, hi = cp.band_series(groups["sampler=tpe"], [3])[0]
    assert mean == pytest.approx(62.5)
    assert hi - mean == pytest.approx(12.7062 * math.sqrt(12.5) / math.sqrt(2), rel=1e-4)
    assert mean - lo == pytest.approx(hi - mean)
    # after 1 training, tpe-1 has nothing feasible yet: no band there
    assert cp.band_series(groups["sampler=tpe"], [1]) == [None]
    rows = {r["configuration"]: r for r in cp.compare_rows(groups)}
    assert rows["sampler=tpe"]["trainings"] == "5"
    assert rows["sampler=random"]["trainings"] == "4"
    # at the end of the shortest random search (4): 50 and 60 -> 55.0 +- 12.7062 * 7.0711 / 1.4142
    assert rows["sampler=random"]["best at the end"] == "55.0 [-8.5, 118.5]"
    # a row's own end is not a column of its own (it left the other rows' cells empty)
    assert list(rows["sampler=random"])[-1] == list(rows["sampler=tpe"])[-1] == "best at the end"
    assert "best after 4" not in rows["sampler=random"] and rows["sampler=tpe"]["best after 5"]


def test_one_configuration_is_all_and_a_lone_study_has_no_band(studies):
    groups = cp.group_curves([cp.study_curve(open_study("tpe-0", studies))])
    assert list(groups) == ["all"]
    assert cp.band([70.0]) == (70.0, 70.0, 70.0)


def test_hypervolume_by_hand():
    # maximise top-1, minimise MACs; reference (0.5, 4): the union of [0.5,0.7]x[3,4] and [0.5,0.6]x[2,4] = 0.3
    assert cp.hypervolume([[0.6, 2.0], [0.7, 3.0]], ["maximize", "minimize"], [0.5, 4.0]) == pytest.approx(0.3)
    # a dominated point adds nothing; a point beyond the reference counts nothing
    assert cp.hypervolume(
        [[0.6, 2.0], [0.7, 3.0], [0.55, 3.5], [0.4, 1.0]], ["maximize", "minimize"], [0.5, 4.0]
    ) == pytest.approx(0.3)
    # three objectives (Optuna's WFG): one point, a 1 x 2 x 3 box
    assert cp.hypervolume([[1.0, 1.0, 1.0]], ["minimize"] * 3, [2.0, 3.0, 4.0]) == pytest.approx(6.0)


def test_multi_objective_studies_compare_by_hypervolume(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'mo.db'}"
    make_study(url, "mo-0", "nsga2", 0, [("completed", (60.0, 2.0)), ("completed", (70.0, 3.0))], ("top1", "macs"))
    make_study(url, "mo-1", "nsga2", 1, [("completed", (50.0, 1.0)), ("pruned", (0.0, 0.0))], ("top1", "macs"))
    curves = [cp.study_curve(open_study(n, url)) for n in ("mo-0", "mo-1")]
    cp.group_curves(curves)
    # reference: worst top-1 50 - 0.1 * 20 = 48, worst MACs 3 + 0.1 * 2 = 3.2
    assert curves[0].best[0] == pytest.approx((60 - 48) * (3.2 - 2.0))
    assert curves[0].best[1] == pytest.approx((60 - 48) * (3.2 - 2.0) + (70 - 60) * (3.2 - 3.0))
    assert curves[1].best == [pytest.approx(2 * 2.2), pytest.approx(2 * 2.2)]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_cli_table_plot_and_export(studies, tmp_path):
    result = runner.invoke(app, ["compare", *STUDIES, "--storage", studies, "--plot", "c.png", "--export", "c.csv"])
    assert result.exit_code == 0, result.output
    assert "sampler=tpe" in result.output and "sampler=random" in result.output
    assert "68.0" in result.output  # tpe after its 5 trainings: 70 and 66
    width, height = png_size(tmp_path / "c.png")
    assert width > 500 and height > 150
    points = pd.read_csv(tmp_path / "c.csv")
    assert len(points) == sum(len(b) for b in BEST.values())
    assert points[points.search == "tpe-1"].best.tolist()[1:] == [40, 65, 65, 66]
    result = runner.invoke(app, ["compare", *STUDIES, "--storage", studies, "--json"])
    doc = json.loads(result.output)
    assert {r["configuration"] for r in doc["configurations"]} == {"sampler=tpe", "sampler=random"}


@pytest.mark.parametrize(
    "args, needle",
    [
        (["nope", "tpe-0"], "no study 'nope'"),
        (["tpe-0", "tpe-0"], "named twice"),
        (["tpe-0", "--plot", "c.gif"], ".gif"),
        (["tpe-0", "--export", "c.xlsx"], ".xlsx"),
    ],
)
def test_bad_input_is_one_line(studies, args, needle):
    result = runner.invoke(app, ["compare", *args, "--storage", studies])
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert "Traceback" not in result.output


def test_mixed_objectives_are_refused(tmp_path, monkeypatch, studies):
    make_study(studies, "mo", "nsga2", 0, [("completed", (60.0, 2.0))], ("top1", "macs"))
    result = runner.invoke(app, ["compare", "tpe-0", "mo", "--storage", studies])
    assert result.exit_code == 2 and "different things" in result.output


def test_two_real_searches_compare(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for seed in (0, 1):
        result = runner.invoke(
            app,
            [
                "search",
                "--space",
                "tiny",
                "--trials",
                "3",
                "--study",
                f"real-{seed}",
                "--epochs",
                "1",
                "--train-per-class",
                "8",
                "--val-per-class",
                "4",
                "--batch-size",
                "16",
                "--seed",
                str(seed),
            ],
        )
        assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["compare", "real-0", "real-1", "--plot", "real.png"])
    assert result.exit_code == 0, result.output
    assert "all" in result.output
    curves = [
        cp.study_curve(open_study(f"real-{s}", f"sqlite:///{tmp_path}/runs/search/real-{s}/study.db")) for s in (0, 1)
    ]
    # the two baselines of the tiny space and 3 searched trainings; seconds add up
    assert all(len(c.trainings) >= 3 for c in curves)
    assert all(c.seconds == sorted(c.seconds) and c.seconds[-1] > 0 for c in curves)
    assert all(c.best[-1] is not None and 0 <= c.best[-1] <= 100 for c in curves)
    assert "best at the end" in result.output
    assert (tmp_path / "real.png").exists()
