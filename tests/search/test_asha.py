"""--fidelity asha: the rung arithmetic, the promotion rule on studies built by hand, a real
search on the built-in data (promotions continue their parent's epochs), every bad setting in
one line, and two worker processes with a kill -9 during a promotion (docs/search.md,
"Multi-fidelity: --fidelity asha")."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.distributions import IntDistribution
from optuna.trial import TrialState, create_trial
from typer.testing import CliRunner

import funnelbench as fb
from funnelbench.cli import app
from funnelbench.search import asha
from funnelbench.search.accounting import is_trained
from funnelbench.search.samplers import _ModelView
from funnelbench.search.workers import JOURNAL_FILE, open_storage

REPO = str(Path(__file__).resolve().parents[2])
ASHA = ["--fidelity", "asha", "--schedule", "constant"]

# ----------------------------------------------------------------------------- the rules


def test_rungs_are_powers_of_the_reduction_then_the_maximum():
    assert asha.rungs(1, 9, 3) == (1, 3, 9)
    assert asha.rungs(1, 10, 3) == (1, 3, 9, 10)  # the maximum itself is the last rung
    assert asha.rungs(2, 8, 2) == (2, 4, 8)
    assert asha.rungs(1, 2, 3) == (1, 2)
    assert asha.rungs(3, 20, 4) == (3, 12, 20)


@pytest.mark.parametrize(
    "args, says",
    [
        ((3, 2, 3), "--max-epochs 2: is below --min-epochs 3"),
        ((1, 9, 1), "--reduction 1: must be at least 2"),
        ((4, 4, 3), "one rung, nothing to promote"),
        ((0, 4, 3), "--min-epochs 0: must be at least 1"),
    ],
)
def test_bad_rungs_are_one_line(args, says):
    with pytest.raises(fb.UsageError, match=says):
        asha.rungs(*args)


def test_promotable_from_the_highest_rung_down():
    rung0 = [(0, 50.0), (1, 70.0), (2, 60.0), (3, 40.0), (4, 80.0), (5, 30.0), (6, 65.0)]
    # 7 at rung 0: the best floor(7/3) = 2 are 4 (80) and 1 (70); 4 is promoted already
    assert asha.promotable({0: rung0}, 3, set(), top=2) == 4
    assert asha.promotable({0: rung0, 1: [(7, 85.0)]}, 3, {4}, top=2) == 1
    assert asha.promotable({0: rung0, 1: [(7, 85.0)]}, 3, {4, 1}, top=2) is None  # a new candidate
    # three at rung 1: its best goes to rung 2 before rung 0's next
    rung1 = [(7, 85.0), (8, 75.0), (9, 90.0)]
    assert asha.promotable({0: rung0 + [(10, 99.0)], 1: rung1}, 3, {4, 1, 6}, top=2) == 9
    # nothing from the top rung; minimising ranks the other way
    assert asha.promotable({1: rung1}, 3, set(), top=1) is None
    assert asha.promotable({0: rung0}, 3, set(), top=1, maximize=False) == 5


def test_unpromotable_given_the_trainings_left():
    rung0 = [(0, 50.0), (1, 70.0), (2, 60.0), (3, 40.0), (4, 80.0), (5, 30.0), (6, 65.0)]
    # ranked 4, 1, 6, 2, 0, 3, 5: with 2 trainings left at most floor(9/3) = 3 are ever promoted
    assert asha.unpromotable({0: rung0, 1: [(7, 85.0)]}, 3, {4}, top=1, remaining=2) == {2, 0, 3, 5, 7}
    assert asha.unpromotable({0: rung0}, 3, set(), top=1, remaining=100) == set()


# ----------------------------------------------------------------------------- on a study built by hand

DIST = {"x": IntDistribution(0, 100)}


def _trial(x, value, rung, *, parent=None, state=TrialState.COMPLETE, status="completed", **extra):
    return create_trial(
        params={"x": x},
        distributions=DIST,
        value=value if state == TrialState.COMPLETE else None,
        state=state,
        user_attrs={"rung": rung, "promoted_from": parent, "status": status, "duplicate_of": None, **extra},
    )


def _study(trials):
    study = optuna.create_study(direction="maximize")
    for t in trials:
        study.add_trial(t)
    return study


def test_promote_queues_the_parent_s_parameters_once():
    values = [50, 70, 60, 40, 80, 30, 65]
    study = _study([_trial(i, float(v), 0) for i, v in enumerate(values)])
    assert asha.promote(study, (1, 3, 9), 3) == 4  # the best of 7 at rung 0
    (queued,) = study.get_trials(states=(TrialState.WAITING,))
    assert queued.system_attrs["fixed_params"] == {"x": 4} and queued.user_attrs == {"rung": 1, "promoted_from": 4}
    assert asha.promote(study, (1, 3, 9), 3) is None  # a trial waits: it goes first
    trial = study.ask()
    assert trial.number == queued.number and trial.suggest_int("x", 0, 100) == 4
    # a promotion whose training failed (or runs, or waits) still counts: never made twice
    study.tell(trial, state=TrialState.FAIL)
    assert asha.promote(study, (1, 3, 9), 3) == 1
    study.ask()
    assert asha.promote(study, (1, 3, 9), 3) is None  # 2 of 7 promoted: the next is a new candidate


def test_rejected_repeats_and_baselines_are_not_rungs_trainings():
    study = _study(
        [
            _trial(0, 0.0, 0, status="rejected"),
            _trial(1, 99.0, 0, duplicate_of=2),
            _trial(2, 99.0, 0),
            _trial(3, 98.0, 2, baseline=True),
            _trial(4, 10.0, 0),
            _trial(5, 20.0, 0),
        ]
    )
    table, promoted = asha.rung_table(study.trials)
    assert table == {0: [(2, 99.0), (4, 10.0), (5, 20.0)]} and promoted == set()


def test_the_answer_is_the_best_at_the_highest_rung_reached():
    study = _study([_trial(0, 95.0, 0), _trial(1, 60.0, 0), _trial(2, 85.0, 1, parent=0), _trial(3, 99.0, 0)])
    assert asha.answer(study.trials).number == 2  # 85 at 3 epochs, not 99 at 1
    from funnelbench.search.records import front_trials

    assert [t.number for t in front_trials(study)] == [2]


def test_checkpoints_spent_keep_the_answer():
    trials = [_trial(i, float(v), 0) for i, v in enumerate([50, 70, 60, 40, 80, 30, 65])]
    trials += [_trial(4, 85.0, 1, parent=4), _trial(1, 75.0, 1, parent=1)]  # trials 7 and 8, at the top rung
    study = _study(trials)
    # 4 and 1 were promoted (their children trained); 7 and 8 are at the top; 2, 0, 3, 5 rank out
    assert asha.spent(study.trials, 2, 3, remaining=2) == {4, 1, 8, 2, 0, 3, 5}  # 7 is the answer
    assert asha.spent(study.trials, 2, 3, remaining=2, final=True) == set(range(9)) - {7}


def test_the_model_sees_one_rung():
    trials = [_trial(i, float(i), 0) for i in range(6)]
    trials += [_trial(4, 9.0, 1, parent=4), _trial(5, 8.0, 1, parent=5)]
    study = _study(trials)
    rung_of = lambda view: sorted({t.user_attrs["rung"] for t in view.get_trials()})  # noqa: E731
    assert rung_of(_ModelView(study, False, startup=2)) == [1]  # two completed at rung 1
    assert rung_of(_ModelView(study, False, startup=3)) == [0]
    # a candidate rejected by a budget is a cost, the same at every rung: the rung-1 model sees it
    # (hidden, TPE at rung 1 proposed the same rejected layout hundreds of times in a row)
    study.add_trial(_trial(50, -1.0, 0, status="rejected"))
    view = _ModelView(study, False, startup=2)
    assert sorted(t.params["x"] for t in view.get_trials() if t.user_attrs["rung"] == 0) == [50]
    assert rung_of(view) == [0, 1] and len(view.get_trials()) == 3
    assert [t.params["x"] for t in _ModelView(study, True, startup=2).get_trials()] == [4, 5]  # GP hides them
    plain = optuna.create_study()
    plain.add_trial(create_trial(params={"x": 1}, distributions=DIST, value=1.0))
    assert len(_ModelView(plain, False, startup=2).get_trials()) == 1  # no rungs: every trial


@pytest.mark.parametrize("rung", [0, None], ids=["asha", "plain"])
def test_after_the_models_repeat_a_new_layout_is_drawn(rung):
    """On a small space the model proposes layouts already trained again and again (plain TPE on
    the Fashion-MNIST table: 1,001 repeats in 1,150 asks; with --fidelity asha the rung-1 model
    cannot see rung 0 at all). After a model's proposal that repeated a trained layout (at rung 0
    with asha), the next new candidate is a uniform draw of a layout not trained yet; after any
    other, the model proposes."""
    from funnelbench.search import load_space
    from funnelbench.search.budget import Budgets
    from funnelbench.search.samplers import SAMPLED_BY, make_sampler

    space = load_space("tiny")
    sampler = make_sampler("tpe", seed=0, n_objectives=1, space=space)
    study = optuna.create_study(sampler=sampler, direction="maximize")
    layouts = [str(sampler.draws.draw_feasible(random.Random(i), Budgets())) for i in range(10)]

    def candidate(layout, by="uniform", repeat_of=None):
        attrs = {"rung": rung, "promoted_from": None, "status": "completed", "baseline": False}
        attrs.update({"duplicate_of": repeat_of, "target_layout": layout, SAMPLED_BY: by})
        return create_trial(value=1.0, user_attrs=attrs)

    def sampled_by(trial):
        return study._storage.get_trial(trial._trial_id).user_attrs[SAMPLED_BY]

    for layout in layouts:  # the start-up: 10 trained candidates
        study.add_trial(candidate(layout))
    study.add_trial(candidate(layouts[3], by="TPESampler", repeat_of=3))
    trial = study.ask()
    assert sampled_by(trial) == "uniform"
    drawn = sampler._fixed[trial._trial_id]
    assert drawn and drawn not in [space.params_of(fb.parse_layout(lay)) for lay in layouts]
    study.tell(trial, state=TrialState.FAIL)  # not a candidate that finished: the rule reads the last one
    study.add_trial(candidate("B1(17)-1(9)", by="TPESampler"))  # the model's proposal, new
    assert sampled_by(study.ask()) == "TPESampler"
    study.add_trial(candidate(layouts[0], repeat_of=0))  # a uniform draw that repeated: the model again
    assert sampled_by(study.ask()) == "TPESampler"


def test_importances_read_one_rung():
    """Values after 1 epoch and after 2 are different measurements: PED-ANOVA reads the highest
    rung with 10 trainings (else rung 0). Here rung 0 follows ``x`` and rung 1 follows ``y``."""
    from optuna.distributions import IntDistribution as Int

    from funnelbench.search.importances import param_importances

    dist = {"x": Int(0, 100), "y": Int(0, 100)}

    def trial(x, y, rung, value):
        return create_trial(
            params={"x": x, "y": y},
            distributions=dist,
            value=value,
            user_attrs={"rung": rung, "promoted_from": None, "status": "completed", "duplicate_of": None},
        )

    grid = [(x, y) for x in range(0, 100, 10) for y in range(0, 100, 20)]  # 50 points, x and y independent
    low = [trial(x, y, 0, float(x)) for x, y in grid]
    draw = random.Random(0)
    high = [trial(x, y, 1, float(y)) for x, y in draw.sample(grid, 20)]  # 20 at rung 1
    rows, note = param_importances(_study(low + high))
    assert note is None and rows[0]["param"] == "y" and rows[0]["objective"] == "top1 at rung 1"
    rows, _ = param_importances(_study(low + high[:9]))  # 9 at rung 1: not enough, rung 0
    assert rows[0]["param"] == "x" and rows[0]["objective"] == "top1 at rung 0"
    rows, note = param_importances(_study(low[:5] + high[:9]))  # 5 at rung 0
    assert rows == [] and note == "importances need at least 10 trained trials at one rung (rung 0); 5 so far"


def test_the_history_line_is_the_answer_so_far():
    from funnelbench.search.plots import best_so_far

    def rec(n, value, rung, feasible=True):
        return {"trial": n, "top1": value, "rung": rung, "feasible": feasible}

    records = [rec(0, 70.0, 0), rec(1, 90.0, 0), rec(2, 80.0, 1), rec(3, 99.0, 0, False), rec(4, 85.0, 1)]
    # 90 after 1 epoch is replaced by 80 after 2 (the higher rung), then 85 at that rung
    assert best_so_far(records, "top1", True) == ([0, 1, 2, 4], [70.0, 90.0, 80.0, 85.0])
    plain = [{k: v for k, v in r.items() if k != "rung"} for r in records]
    assert best_so_far(plain, "top1", True) == ([0, 1, 2, 4], [70.0, 90.0, 90.0, 90.0])
    assert best_so_far(plain, "top1", False) == ([0, 1, 2, 4], [70.0, 70.0, 70.0, 70.0])


# ----------------------------------------------------------------------------- bad settings


def run(*args):
    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize(
    "args, says",
    [
        (["--min-epochs", "3", "--max-epochs", "2", "--epochs", "4"], "--max-epochs 2: is below --min-epochs 3"),
        (["--reduction", "1", "--epochs", "4"], "--reduction 1: must be at least 2"),
        (["--max-epochs", "9", "--epochs", "4"], "--max-epochs 9: longer than the proxy's schedule (--epochs 4)"),
        (["--min-epochs", "2", "--epochs", "2"], "one rung, nothing to promote"),
        (["--epochs", "4", "--pruner", "median"], "--fidelity asha with --pruner median"),
        (["--epochs", "4", "--sampler", "nsga2"], "--fidelity asha with --sampler nsga2"),
        (["--epochs", "4", "--objective", "top1", "--objective", "macs"], "it promotes by one trained objective"),
        (["--epochs", "4", "--checkpoint", "none"], "--fidelity asha with --checkpoint none"),
    ],
)
def test_bad_asha_settings_are_one_line_exit_2(tmp_path, args, says):
    result = run("search", "--trials", "2", *ASHA, *args)
    err = result.stderr.strip()
    assert result.exit_code == 2, result.output
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    assert says in err, err
    assert not (tmp_path / "runs").exists()  # refused before anything was written


def test_asha_with_the_cosine_schedule_a_wsd_rung_in_the_warm_up_and_rungs_without_asha_are_refused(tmp_path):
    cosine = run("search", "--trials", "2", "--fidelity", "asha", "--epochs", "3")
    assert cosine.exit_code == 2 and "use --schedule wsd (each rung decays from a stable checkpoint) or constant" in (
        cosine.stderr
    )
    # wsd: a first rung that ends inside the warm-up cuts it, and is no start of a longer run
    args = ("--fidelity", "asha", "--epochs", "4", "--schedule", "wsd", "--warmup-epochs", "1.5")
    wsd = run("search", "--trials", "2", *args)
    err = wsd.stderr.strip()
    assert wsd.exit_code == 2 and "\n" not in err and "Traceback" not in err
    assert "--min-epochs 1: the first rung ends inside the 1.5-epoch warm-up" in err and "--min-epochs 2 or more" in err
    assert not (tmp_path / "runs").exists()
    plain = run("search", "--trials", "2", "--min-epochs", "1", "--epochs", "3")
    assert plain.exit_code == 2 and "--min-epochs: rungs need --fidelity asha" in plain.stderr
    unknown = run("search", "--trials", "2", "--fidelity", "bohb")
    assert unknown.exit_code == 2 and "--fidelity bohb: unknown; choose from none, asha" in unknown.stderr


# ----------------------------------------------------------------------------- a real search

PROXY = dict(train_per_class=8, val_per_class=4, batch_size=16, threads=1)  # 64 / 32 built-in images


def _by_rung(study):
    out = {}
    for t in study.trials:
        if is_trained(t):
            out[t.user_attrs["rung"]] = out.get(t.user_attrs["rung"], 0) + 1
    return out


def _checkpoints(out):
    return sorted(int(p.parent.name.split("-")[1]) for p in out.glob("trial-*/checkpoint.pt"))


def test_a_real_search_promotes_by_continuing_the_parent_s_run(tmp_path, monkeypatch):
    monkeypatch.setenv("FUNNELBENCH_CACHE", str(tmp_path / "cache"))
    epochs_seen = {}
    study = fb.search(
        "tiny",
        trials=9,
        epochs=3,
        fidelity="asha",
        schedule="constant",
        study="real",
        on_event=lambda kind, info: (
            kind == "epoch" and epochs_seen.setdefault(info["number"], []).append(info["epoch"])
        ),
        **PROXY,
    )
    trials = {t.number: t for t in study.trials}
    assert sum(is_trained(t) for t in trials.values()) == 9
    by_rung = _by_rung(study)
    assert by_rung[0] >= 3 and by_rung[1] >= 3  # the 2 baselines train at the top rung, and promotions
    promoted = [t for t in trials.values() if t.user_attrs["promoted_from"] is not None]
    assert promoted and len({t.user_attrs["promoted_from"] for t in promoted}) == len(promoted)
    child = promoted[0]
    parent = trials[child.user_attrs["promoted_from"]]
    assert child.params == parent.params and parent.user_attrs["rung"] == 0 and child.user_attrs["rung"] == 1
    assert epochs_seen[parent.number] == [1] and epochs_seen[child.number] == [2, 3]  # continued, not retrained
    assert child.user_attrs["epochs_done"] == 3 and child.user_attrs["epochs_trained"] == 2
    assert child.user_attrs["image_epochs"] == 2 * 64 and parent.user_attrs["image_epochs"] == 64
    assert sorted(child.intermediate_values) == [2, 3]
    # the promoted run is the 3-epoch run of its layout: same curve, same objective (its last epoch)
    from funnelbench.search.trial import train_trial

    settings = study.user_attrs["settings"]
    straight = train_trial(
        fb.resolve(child.user_attrs["target_layout"]), out=tmp_path / "straight", proxy=settings["proxy"]
    )
    assert child.values[0] == pytest.approx(100 * straight["val_top1"])
    # the answer is the best at the top rung; every other checkpoint is gone at the end
    from funnelbench.search.records import front_trials

    (best,) = front_trials(study)
    assert best.user_attrs["rung"] == 1
    assert _checkpoints(tmp_path / "runs" / "search" / "real") == [best.number]
    # the report and compare: trainings by rung (in epochs), compute in image-epochs
    from funnelbench.search.compare import compare_rows, study_curve
    from funnelbench.search.records import counts_line, state_counts

    counts = state_counts(study)
    assert counts["by_rung"] == {1: by_rung[0], 3: by_rung[1]}
    assert counts["image_epochs"] == 64 * sum(t.user_attrs["epochs_trained"] for t in trials.values() if is_trained(t))
    assert f"trainings by rung: {by_rung[0]} of 1 epoch, {by_rung[1]} of 3 epochs" in counts_line(counts)
    curve = study_curve(study)
    assert curve.by_rung == counts["by_rung"] and curve.image_epochs[-1] == counts["image_epochs"]
    assert curve.best[-1] == best.values[0]  # the best at the highest rung, never a 1-epoch value
    (row,) = compare_rows({"asha": [curve]})
    assert row["trainings by rung (epochs: mean)"] == f"1: {by_rung[0]}, 3: {by_rung[1]}"


def test_a_wsd_search_promotes_from_the_parent_s_stable_checkpoint(tmp_path, monkeypatch):
    """Rungs 1, 2 and 4 epochs of 4 steps, a 1-epoch warm-up: the 1-epoch rung is all warm-up (its
    stable point is its end); a 2-epoch rung decays from step 6 (inside epoch 2), so its stable
    point is epoch 1's end, which is where it started from. Its promotion continues from there
    (epochs 2-4, 3 trained), and is the straight 4-epoch wsd run of its layout."""
    monkeypatch.setenv("FUNNELBENCH_CACHE", str(tmp_path / "cache"))
    epochs_seen = {}
    study = fb.search(
        "tiny",
        trials=9,
        epochs=4,
        fidelity="asha",
        schedule="wsd",
        min_epochs=1,
        reduction=2,
        study="wsd",
        on_event=lambda kind, info: (
            kind == "epoch" and epochs_seen.setdefault(info["number"], []).append(info["epoch"])
        ),
        **PROXY,
    )
    trials = {t.number: t for t in study.trials}
    (child, *_) = [
        t for t in trials.values() if t.user_attrs["rung"] == 2 and t.user_attrs["promoted_from"] is not None
    ]
    parent = trials[child.user_attrs["promoted_from"]]
    grandparent = trials[parent.user_attrs["promoted_from"]]
    assert [t.user_attrs["rung"] for t in (grandparent, parent)] == [0, 1]
    assert [epochs_seen[t.number] for t in (grandparent, parent, child)] == [[1], [2], [2, 3, 4]]
    assert [t.user_attrs["epochs_trained"] for t in (grandparent, parent, child)] == [1, 1, 3]
    assert child.user_attrs["epochs_done"] == 4 and child.user_attrs["image_epochs"] == 3 * 64
    from funnelbench.search.trial import train_trial

    proxy = study.user_attrs["settings"]["proxy"]
    layout = fb.resolve(child.user_attrs["target_layout"])
    straight = train_trial(layout, out=tmp_path / "straight", proxy=proxy)
    assert child.values[0] == pytest.approx(100 * straight["val_top1"])
    # the parent's value is its own 2-epoch run's, after its decay
    short = train_trial(layout, out=tmp_path / "short", proxy={**proxy, "epochs": 2})
    assert parent.values[0] == pytest.approx(100 * short["val_top1"])
    # at the end only the answer keeps checkpoints (its last and its stable one)
    from funnelbench.search.records import front_trials

    (best,) = front_trials(study)
    folder = tmp_path / "runs" / "search" / "wsd"
    assert _checkpoints(folder) == [best.number]
    assert sorted(p.parent.name for p in folder.glob("trial-*/stable.pt")) == [f"trial-{best.number}"]


def test_simulate_charges_a_promotion_from_its_resume_point():
    from funnelbench.search.asha import simulate

    count = iter(range(100))
    kw = dict(epochs=(1, 2, 4), eta=2, trainings=12)
    curve = lambda key: [1.0 / (key + 1)] * 4  # noqa: E731 - the first candidates stay best
    plain = simulate(lambda: next(count), curve, **kw)
    count = iter(range(100))
    wsd = simulate(lambda: next(count), curve, resumes_at=(1, 1, 4), **kw)
    assert [t["rung"] for t in plain] == [t["rung"] for t in wsd]  # the same promotions
    spent = {(t["rung"], t["epochs_trained"]) for t in plain} | {(-1 - t["rung"], t["epochs_trained"]) for t in wsd}
    # a promotion to 4 epochs continues epoch 2 (constant) or epoch 1 (the 2-epoch wsd run's stable point)
    assert spent == {(0, 1), (1, 1), (2, 2), (-1, 1), (-2, 1), (-3, 3)}


# ----------------------------------------------------------------------------- two workers and a kill -9

WORKER_ARGS = [
    "--space",
    "tiny",
    "--epochs",
    "4",
    "--min-epochs",
    "1",
    "--reduction",
    "4",  # rungs at 1 and 4 epochs: a promotion trains 3 epochs, time to catch it mid-way
    "--train-per-class",
    "48",
    "--val-per-class",
    "4",
    "--batch-size",
    "16",
    "--heartbeat",
    "1",
    # wsd, the recommended schedule: a promotion starts from its parent's stable checkpoint (the
    # 1-epoch rung is all warm-up: its end), then writes its own epochs' checkpoints
    "--fidelity",
    "asha",
    "--schedule",
    "wsd",
]


def _search(tmp_path, *args):
    env = {**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1", "FUNNELBENCH_CACHE": str(tmp_path / "cache")}
    return subprocess.Popen(
        [sys.executable, "-m", "funnelbench", "search", *WORKER_ARGS, *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _promotion_mid_way(study, out, proc, timeout=120):
    """A running promotion that has trained an epoch of its own (its history: the parent's
    epoch and one more), or None once the command ended without one."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            run_dir = t.user_attrs.get("run_dir")
            if t.user_attrs.get("promoted_from") is None or not run_dir:
                continue
            history = out / run_dir / "history.csv"
            if history.exists() and len(history.read_text().splitlines()) >= 3:
                return t
        time.sleep(0.05)
    return None


def test_a_kill_9_during_a_promotion_trains_nothing_twice(tmp_path):
    for attempt in range(3):  # should every promotion end before the poll sees it, again on a fresh study
        name = f"kill-{attempt}"
        out = tmp_path / "runs" / "search" / name
        proc = _search(tmp_path, "--trials", "10", "--workers", "2", "--study", name)
        journal = out / JOURNAL_FILE
        end = time.monotonic() + 60
        while not (journal.exists() and name in optuna.study.get_all_study_names(open_storage(f"journal:{journal}"))):
            assert proc.poll() is None and time.monotonic() < end, proc.communicate()
            time.sleep(0.1)
        study = optuna.load_study(study_name=name, storage=open_storage(f"journal:{journal}"))
        victim = _promotion_mid_way(study, out, proc)
        if victim is not None:
            os.kill(int(victim.user_attrs["worker"].rsplit(":", 1)[1]), signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stdout + stderr
        if victim is not None:
            break
    assert victim is not None, "no promotion was caught mid-way in three searches"
    assert "killed by SIGKILL" in stdout + stderr
    trials = {t.number: t for t in study.get_trials()}
    assert not any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials.values())
    trained = [t for t in trials.values() if is_trained(t)]
    assert len(trained) == 10  # the requested number of trainings
    keys = [(t.user_attrs["target_layout"], t.user_attrs["rung"]) for t in trained]
    assert len(set(keys)) == len(keys), keys  # no layout trained twice at one rung
    parents = [t.user_attrs["promoted_from"] for t in trained if t.user_attrs["promoted_from"] is not None]
    assert len(set(parents)) == len(parents), parents  # no promotion made twice
    dead = trials[victim.number]
    assert dead.state == TrialState.FAIL and dead.user_attrs["status"] == "interrupted"
    (retry,) = [t for t in trials.values() if t.user_attrs["retry_of"] == victim.number]
    assert retry.user_attrs["status"] == "completed" and retry.params == dead.params
    assert (retry.user_attrs["rung"], retry.user_attrs["promoted_from"]) == (1, dead.user_attrs["promoted_from"])
    # resumed from the dead promotion's own last epoch: the epochs it trained are not trained again
    parent = trials[dead.user_attrs["promoted_from"]]
    assert parent.user_attrs["epochs_done"] == 1 and retry.user_attrs["epochs_done"] == 4
    assert retry.user_attrs["epochs_trained"] <= 2  # the dead one trained at least its epoch 2
    # checkpoints: only the answer's is left
    from funnelbench.search.records import front_trials

    assert _checkpoints(out) == [t.number for t in front_trials(study)]


def test_a_study_stored_before_fidelity_and_schedule_continues():
    """Settings stored before --fidelity and --schedule existed read as none and cosine."""
    from funnelbench.search.settings import Settings, differences
    from funnelbench.search.space import load_space

    space = load_space("tiny")
    now = Settings(space, _budgets(), proxy={"epochs": 2, "schedule": "cosine"})
    stored = {k: v for k, v in now.to_attrs().items() if k != "fidelity"}
    stored["proxy"] = {"epochs": 2}
    assert differences(stored, now.to_attrs()) == []
    asha_now = Settings(space, _budgets(), proxy={"epochs": 3, "schedule": "constant"}, fidelity="asha")
    assert asha_now.rungs == (1, 3) and asha_now.pruner == "none"
    assert differences(stored, asha_now.to_attrs())[-1].startswith("fidelity (kind 'none' -> 'asha'")


def _budgets():
    from funnelbench.search.budget import Budgets

    return Budgets()
