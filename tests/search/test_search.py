"""The search: budgets decided before anything is built, baselines first and once, the same seed
giving the same candidates, killed studies continued to exactly N trials, pruning, refusals,
cost-only searches, and the study's attributes (docs/search.md, "Studies: storage, continuing, records")."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

import funnelbench as fb
from funnelbench.cli import app
from funnelbench.search import samplers
from funnelbench.search import study as study_mod
from funnelbench.search.study import TRIAL_KEYS

REPO = Path(__file__).resolve().parents[2]
PROXY = dict(epochs=1, train_per_class=8, val_per_class=4, batch_size=16)  # 64 / 32 built-in images: under a second
PROXY_ARGS = ["--epochs", "1", "--train-per-class", "8", "--val-per-class", "4", "--batch-size", "16"]
CHEAPEST_TINY = "B1(17)-1(9), h64, m128, a2, img32, patch8"  # 1.23 MMACs
# tiny without baselines (the rejection test must not train a baseline over the budget)
BARE = {
    "name": "bare",
    "shared": {"image_size": 32, "patch_size": 8},
    "stages": {
        "count": {"min": 1, "max": 3},
        "layers": [1, 2],
        "stride": 2,
        "hidden": [64, 96],
        "head_dim": 32,
        "mlp_ratio": [2, 4],
        "pool": ["mean", "max"],
    },
    "constraints": {"total_layers": {"min": 2, "max": 4}},
}


def run(*args):
    return CliRunner().invoke(app, list(args))


def finished(study):
    return [t for t in study.trials if t.state not in (TrialState.RUNNING, TrialState.WAITING)]


def fake_trainer(monkeypatch, curve):
    """Replace the trainer the adapter calls (contract A: ``train(config=..., data=...,
    callback=...)``, the callback returning PRUNE prunes): ``curve(i, epoch)`` is the val top-1
    (0-1) of that epoch of the i-th training (0-based)."""
    import importlib

    trainer = importlib.import_module("funnelbench.train")
    calls = []

    def train(layout=None, *, out, config, data=None, overwrite=False, callback=None, console=None):
        calls.append(config.layout)
        for epoch in range(1, config.epochs + 1):
            top1 = curve(len(calls) - 1, epoch)
            metrics = {
                "epoch": epoch,
                "train_loss": 1.0,
                "val_loss": 2.0 - top1,
                "val_top1": top1,
                "val_top5": min(1.0, top1 + 0.2),
                "lr": 1e-3,
                "train_img_per_s": 100.0,
                "epoch_s": 0.0,
                "eval_s": 0.0,
            }
            if callback(metrics) == trainer.PRUNE:
                return {"status": "pruned", "epochs_done": epoch, "train_img_per_s": 100.0}
        return {"status": "completed", "epochs_done": config.epochs, "train_img_per_s": 100.0}

    monkeypatch.setattr(trainer, "train", train)
    return calls


# ----------------------------------------------------------------------------- budgets


def test_rejected_candidates_build_no_model_and_train_nothing(monkeypatch, one_thread):
    import importlib

    trainer = importlib.import_module("funnelbench.train")
    built = []
    real_build = trainer.build_model

    def build(layout, **kw):
        built.append(str(layout))
        return real_build(layout, **kw)

    monkeypatch.setattr(trainer, "build_model", build)
    # TPE from the first ask (its uniform feasible start-up would propose nothing over the budget)
    monkeypatch.setattr(samplers, "STARTUP_TRAININGS", 0)
    study = fb.search(BARE, trials=2, budget_macs=1.5e6, **PROXY)
    trials = finished(study)
    rejected = [t for t in trials if t.user_attrs["status"] == "rejected" and "macs" in t.user_attrs["over_budget"]]
    trained = [t for t in trials if t.user_attrs["status"] == "completed" and t.user_attrs["duplicate_of"] is None]
    assert len(trained) == 2 and rejected, [t.user_attrs["status"] for t in trials]
    assert sorted(built) == sorted(t.user_attrs["target_layout"] for t in trained)  # only the trained were built
    out = Path(study.user_attrs["out"])
    for t in rejected:
        a = t.user_attrs
        assert t.state == TrialState.COMPLETE and t.constraints["macs"] > 0
        assert a["macs"] > 1.5e6 and a["over_budget"]["macs"] == pytest.approx((a["macs"] - 1.5e6) / 1.5e6)
        assert a["run_dir"] is None and a["proxy_layout"] is None and a["top1"] is None
        assert not (out / f"trial-{t.number}").exists()
        assert a["target_layout"] not in built
    for t in trained:
        assert t.constraints["macs"] <= 0 and (out / t.user_attrs["run_dir"] / "record.json").is_file()
    assert study.best_trial.user_attrs["status"] == "completed"


def test_unreachable_budget_names_the_cheapest_layout_and_writes_nothing(tmp_path):
    result = run("search", "--space", "tiny", "--budget-flops", "1M")
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1
    assert CHEAPEST_TINY in line and "1.23 MMACs, i.e. 2.47 MFLOPs as 2 x MACs" in line and "1.00 MMACs" in line, line
    result = run("search", "--space", "tiny", "--budget-params", "100K")
    assert (
        result.exit_code == 2
        and "145.58 k params" in result.stderr
        and "B2(17), h64, m128, a2, img32, patch8" in result.stderr
    )
    result = run("search", "--space", "tiny", "--min-flops", "7M")
    assert result.exit_code == 2 and "reaches the floor" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_a_budget_that_keeps_little_warns_with_the_share():
    from funnelbench.search.budget import Budgets, preflight

    space = fb.load_space("tiny")
    warning = preflight(space, Budgets(macs=1.3e6))
    assert warning and "keeps about" in warning and "% of space tiny" in warning
    assert preflight(space, Budgets(macs=10e6)) is None


def test_cost_only_search_trains_nothing_and_states_the_budget_both_ways(monkeypatch, tmp_path):
    fake_trainer(monkeypatch, lambda i, epoch: 1 / 0)  # any training would fail the test
    result = run(
        "search",
        "--space",
        "tiny",
        "--objective",
        "macs",
        "--objective",
        "params",
        "--trials",
        "8",
        "--budget-flops",
        "3M",
        "--pruner",
        "none",
    )
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    assert first.startswith("budget: at most 3.00 MMACs, i.e. 6.00 MFLOPs as 2 x MACs"), first
    assert (
        "Pareto front (macs, params)" in result.output
        and "funnelbench report --study tiny-macs3M-macs-params" in result.output
    )
    study = optuna.load_study(
        study_name="tiny-macs3M-macs-params",
        storage=f"sqlite:///{tmp_path}/runs/search/tiny-macs3M-macs-params/study.db",
    )
    done = [
        t for t in finished(study) if t.user_attrs["status"] == "completed" and t.user_attrs["duplicate_of"] is None
    ]
    assert len(done) == 8
    for t in done:
        assert t.values == [t.user_attrs["macs"], t.user_attrs["params"]] and t.user_attrs["run_dir"] is None
        assert t.user_attrs["macs"] == fb.count(t.user_attrs["target_layout"]).macs
    assert not list((tmp_path / "runs/search/tiny-macs3M-macs-params").glob("trial-*"))
    front = {t.number for t in study.best_trials}
    assert front and all(study.trials[n].constraints["macs"] <= 0 for n in front)
    # --json: the summary
    result = run(
        "search",
        "--space",
        "tiny",
        "--objective",
        "macs",
        "--objective",
        "params",
        "--trials",
        "8",
        "--budget-flops",
        "3M",
        "--json",
    )
    info = json.loads(result.stdout)
    assert info["counts"]["trained"] == 8 and info["settings"]["objectives"] == ["macs", "params"]


# ----------------------------------------------------------------------------- refusals


def test_multi_objective_with_a_pruner_is_refused(tmp_path):
    result = run("search", "--objective", "top1", "--objective", "macs", "--pruner", "median", *PROXY_ARGS)
    assert result.exit_code == 2
    assert (
        "Optuna cannot prune multi-objective studies" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    )
    result = run("search", "--objective", "top1", "--objective", "macs", "--pruner", "hyperband")
    assert result.exit_code == 2 and "--pruner hyperband with 2 objectives" in result.stderr
    result = run("search", "--objective", "accuracy")
    assert result.exit_code == 2 and "--objective accuracy: unknown" in result.stderr
    import importlib.util

    if importlib.util.find_spec("scipy") is None:  # Optuna's GP sampler needs it; it is not a dependency
        result = run("search", "--sampler", "gp", "--objective", "macs")
        assert result.exit_code == 2 and "GPSampler needs scipy" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_other_settings_on_an_existing_study_name_what_differs():
    args = ["search", "--study", "s", "--objective", "macs", "--trials", "2"]
    assert run(*args).exit_code == 0
    result = run(*args, "--budget-flops", "5M")
    assert result.exit_code == 2
    assert "study 's' exists with other settings: budgets (macs None -> 5000000.0)" in result.stderr
    result = run(*args[:-2], "--trials", "3", "--objective", "params")
    assert result.exit_code == 2 and "objectives (['macs'] -> ['macs', 'params'])" in result.stderr


# ----------------------------------------------------------------------------- baselines, seeds, pruning


def test_baselines_run_first_and_once_even_over_budget(monkeypatch):
    fake_trainer(monkeypatch, lambda i, epoch: 0.5)
    extra = "B2(17)-2(9), h96, a3, img32, patch8"  # 5.1 MMACs: over the budget
    kw = dict(budget_macs=3e6, baselines=[extra], **{**PROXY, "epochs": 2})
    study = fb.search("tiny", trials=4, **kw)
    trials = finished(study)
    space = fb.load_space("tiny")
    names = [str(b) for b in space.baselines] + [extra]
    assert [t.user_attrs["target_layout"] for t in trials[:3]] == names
    assert all(t.user_attrs["baseline"] for t in trials[:3]) and not any(t.user_attrs["baseline"] for t in trials[3:])
    over = trials[2]
    assert over.user_attrs["status"] == "completed" and over.user_attrs["over_budget"]["macs"] > 0
    assert over.constraints["macs"] > 0 and over.number not in {t.number for t in study.best_trials}
    # continued to 5: the baselines are not run again
    study = fb.search("tiny", trials=5, **kw)
    assert sum(t.user_attrs.get("baseline", False) for t in study.trials) == 3
    assert study_mod.counts(study)["trained"] == 5


def test_same_seed_gives_the_same_candidates():
    def sequence(name, seed):
        study = fb.search("tiny", trials=6, objectives=("macs",), budget_macs=2.5e6, study=name, seed=seed)
        return [t.user_attrs["target_layout"] for t in study.trials]

    a, b, c = sequence("a", 0), sequence("b", 0), sequence("c", 1)
    assert a == b and a != c


def test_a_pruner_prunes_a_hopeless_trial(monkeypatch):
    """Six trainings learn well; the seventh stays at 1 % and is pruned after its second epoch
    (the first, the warm-up, is never judged)."""
    calls = fake_trainer(monkeypatch, lambda i, epoch: 0.01 if i == 6 else 0.5 + 0.1 * epoch)
    study = fb.search("tiny", trials=7, objectives=("top1",), pruner="median", **{**PROXY, "epochs": 3})
    assert len(calls) == 7
    trained = [t for t in study.trials if t.user_attrs["run_dir"] and t.user_attrs["duplicate_of"] is None]
    t = trained[6]
    assert t.state == TrialState.PRUNED and t.user_attrs["status"] == "pruned"
    assert t.user_attrs["epochs_done"] == 2 and t.intermediate_values == {1: pytest.approx(1.0), 2: pytest.approx(1.0)}
    assert all(x.state == TrialState.COMPLETE for x in trained[:6])
    assert study.trials[0].intermediate_values == {
        1: pytest.approx(60.0),
        2: pytest.approx(70.0),
        3: pytest.approx(80.0),
    }
    assert study_mod.counts(study)["pruned"] == 1 and study_mod.counts(study)["trained"] == 7


def test_a_baseline_is_never_pruned_and_the_pruner_waits_for_half_the_schedule(monkeypatch):
    """The space's baselines are the reference: trained to the end even when hopeless. A 4-epoch
    proxy is judged from its third epoch on."""
    assert study_mod.make_pruner("median", 4)._n_warmup_steps == 3
    assert study_mod.make_pruner("median", 10)._n_warmup_steps == 6
    assert study_mod.make_pruner("median", 3)._n_warmup_steps == 2
    # trainings 0 and 1 are tiny's two baselines; baseline 1 stays at 1 %, as does the 8th training
    calls = fake_trainer(monkeypatch, lambda i, epoch: 0.01 if i in (1, 7) else 0.5 + 0.1 * epoch)
    study = fb.search("tiny", trials=8, objectives=("top1",), pruner="median", **{**PROXY, "epochs": 3})
    assert len(calls) == 8
    trained = [t for t in study.trials if t.user_attrs["run_dir"] and t.user_attrs["duplicate_of"] is None]
    assert trained[1].user_attrs["baseline"] and trained[1].state == TrialState.COMPLETE
    assert trained[1].user_attrs["epochs_done"] == 3 and trained[1].user_attrs["top1"] == pytest.approx(1.0)
    assert not trained[7].user_attrs["baseline"] and trained[7].state == TrialState.PRUNED


def test_the_median_pruner_waits_for_trained_trials_not_rejected_ones():
    """A rejected candidate is a COMPLETE trial that never trained. Five of them and one trained
    trial must not arm the pruner: Optuna's own MedianPruner would then judge every trial against
    that one (random search pruned 15 of 16 trainings that way)."""
    from optuna.trial import create_trial

    curve = {1: 50.0, 2: 70.0, 3: 90.0, 4: 90.0}
    pruner = study_mod.make_pruner("median", 4)
    study = optuna.create_study(direction="maximize", pruner=pruner, sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        study.add_trial(create_trial(value=0.0))  # rejected: told with the worst value, no epochs
    study.add_trial(create_trial(value=90.0, intermediate_values=curve))

    def judged(value: float) -> bool:
        trial = study.ask()
        for step in (1, 2, 3):
            trial.report(value, step)
        pruned = trial.should_prune()
        study.tell(trial, state=TrialState.PRUNED)
        return pruned

    assert not judged(10.0)
    study.pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=3)
    assert judged(10.0)  # what Optuna's own start-up count does here
    study.pruner = pruner
    for _ in range(4):
        study.add_trial(create_trial(value=90.0, intermediate_values=curve))
    assert judged(10.0) and not judged(95.0)  # five trained trials: now it judges


# ----------------------------------------------------------------------------- records and resume


def test_every_trial_has_every_attribute_and_the_study_its_settings(monkeypatch):
    fake_trainer(monkeypatch, lambda i, epoch: 0.4)
    study = fb.search("tiny", trials=3, budget_macs=2e6, width_scale=0.5, **PROXY)
    assert study.user_attrs["funnelbench"] == "search/1"
    s = study.user_attrs["settings"]
    assert s["space"] == "tiny" and s["space_spec"]["name"] == "tiny" and s["objectives"] == ["top1"]
    # 1 epoch: no pruner by default (below MEDIAN_MIN_EPOCHS it saves little and costs candidates)
    assert s["directions"] == ["maximize"] and s["sampler"] == "tpe" and s["seed"] == 0 and s["pruner"] == "none"
    assert s["budgets"]["macs"] == 2e6 and s["proxy"]["width_scale"] == 0.5 and s["proxy"]["epochs"] == 1
    assert s["baselines"] == [str(b) for b in fb.load_space("tiny").baselines]
    assert study.user_attrs["out"] == str(Path("runs/search/tiny-macs2M"))
    for t in finished(study):
        assert set(TRIAL_KEYS) <= set(t.user_attrs), t.number
        json.dumps(t.user_attrs)
        a = t.user_attrs
        assert a["flops"] == 2 * a["macs"]
        if a["status"] == "completed" and a["duplicate_of"] is None:
            assert a["proxy_layout"] != a["target_layout"]  # widths halved
            assert (
                fb.parse_layout(a["proxy_layout"]).stages[0].hidden
                == fb.parse_layout(a["target_layout"]).stages[0].hidden // 2
            )
            assert a["top1"] == pytest.approx(40.0) and a["run_dir"] == f"trial-{t.number}"


def test_ctrl_c_records_the_trial_interrupted_and_the_next_run_retries_it(monkeypatch):
    def curve(i, epoch):
        if i == 2:
            raise KeyboardInterrupt
        return 0.5

    fake_trainer(monkeypatch, curve)
    with pytest.raises(KeyboardInterrupt):
        fb.search("tiny", trials=4, **PROXY)
    fake_trainer(monkeypatch, lambda i, epoch: 0.5)
    study = fb.search("tiny", trials=4, **PROXY)
    stopped = [t for t in study.trials if t.user_attrs.get("status") == "interrupted"]
    assert len(stopped) == 1 and stopped[0].state == TrialState.FAIL and "interrupted" in stopped[0].user_attrs["error"]
    retry = [t for t in study.trials if t.user_attrs.get("retry_of") == stopped[0].number]
    assert len(retry) == 1 and retry[0].user_attrs["target_layout"] == stopped[0].user_attrs["target_layout"]
    assert study_mod.counts(study)["trained"] == 4


def test_a_killed_study_continues_to_exactly_n_trained_trials_and_repeats_none(tmp_path):
    """SIGKILL while the third trial trains; the same command then finishes the study."""
    args = [
        sys.executable,
        "-m",
        "funnelbench",
        "search",
        "--space",
        "tiny",
        "--trials",
        "4",
        "--study",
        "k",
        *PROXY_ARGS,
        "--epochs",
        "3",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    folder = tmp_path / "runs/search/k"
    deadline = time.time() + 120
    while len(list(folder.glob("trial-*"))) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    storage = f"sqlite:///{folder / 'study.db'}"
    killed = optuna.load_study(study_name="k", storage=storage)
    running = [t.number for t in killed.trials if t.state == TrialState.RUNNING]
    assert len(running) == 1  # the third training, killed within 50 ms of its folder appearing
    killed_number = running[0]
    before = {t.number: t.user_attrs["target_layout"] for t in finished(killed)}

    result = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "were running when their process ended" in result.stdout
    study = optuna.load_study(study_name="k", storage=storage)
    trials = finished(study)
    assert all(t.state != TrialState.RUNNING for t in study.trials)
    trained = [
        t for t in trials if t.user_attrs["status"] in ("completed", "pruned") and t.user_attrs["duplicate_of"] is None
    ]
    assert len(trained) == 4
    layouts = [t.user_attrs["target_layout"] for t in trained]
    assert len(set(layouts)) == 4  # no layout trained twice
    for number, layout in before.items():  # what finished before the kill was kept, not run again
        assert study.trials[number].user_attrs["target_layout"] == layout
    interrupted = study.trials[killed_number]
    assert interrupted.state == TrialState.FAIL and interrupted.user_attrs["status"] == "interrupted"
    retry = [t for t in trials if t.user_attrs.get("retry_of") == killed_number]
    assert len(retry) == 1 and retry[0].user_attrs["target_layout"] == interrupted.user_attrs["target_layout"]


def test_memory_budget_and_measured_inference_speed_without_training(monkeypatch, one_thread):
    fake_trainer(monkeypatch, lambda i, epoch: 1 / 0)  # nothing may train
    budget = 12 * 2**20  # the cheapest tiny layout needs 9.1 MiB at batch 64 (CPU rules), the ViT baseline 13.0
    study = fb.search(
        "tiny",
        trials=3,
        objectives=("train_mem", "infer_img_per_s"),
        budget_memory=budget,
        memory_batch=64,
        memory_device="cpu",
        study="mem",
    )
    assert study.user_attrs["settings"]["directions"] == ["minimize", "maximize"]
    for t in finished(study):
        a = t.user_attrs
        est = fb.estimate_memory(a["target_layout"], 64, device="cpu").train_peak_bytes
        assert a["train_mem_est_bytes"] == est
        assert t.constraints["memory"] == pytest.approx((est - budget) / budget)
        if a["status"] == "completed" and a["duplicate_of"] is None:
            assert a["infer_img_per_s"] > 0 and t.values == [est, a["infer_img_per_s"]]
        elif a["status"] == "rejected":  # over the memory budget, or outside the space's depth range
            assert (est > budget) == ("memory" in a["over_budget"]) and a["infer_img_per_s"] is None
        if not a["baseline"]:  # the uniform start-up applies the memory budget before a trial exists
            assert est <= budget and a["status"] == "completed"
    vit = finished(study)[0]  # the baseline over the memory budget: measured anyway, never the best
    assert (
        vit.user_attrs["baseline"]
        and vit.constraints["memory"] > 0
        and vit.number not in {t.number for t in study.best_trials}
    )


# ----------------------------------------------------------------------------- the space's proxy section


def test_the_spaces_proxy_section_is_the_default_and_a_given_option_wins(monkeypatch):
    calls = []
    fake_trainer(monkeypatch, lambda i, epoch: 0.4)
    import importlib

    trainer = importlib.import_module("funnelbench.train")
    real = trainer.train
    monkeypatch.setattr(trainer, "train", lambda **kw: (calls.append(kw["config"]), real(**kw))[1])
    space = {
        **BARE,
        "name": "with-proxy",
        "proxy": {
            "epochs": 3,
            "lr": 0.004,
            "width_scale": 0.5,
            "train_per_class": 8,
            "val_per_class": 4,
            "batch_size": 16,
        },
    }
    study = fb.search(space, trials=1, study="space-proxy")
    proxy = study.user_attrs["settings"]["proxy"]
    assert (proxy["epochs"], proxy["lr"], proxy["width_scale"], proxy["train_per_class"]) == (3, 0.004, 0.5, 8)
    assert calls[0].epochs == 3 and calls[0].lr == 0.004 and calls[0].width_scale == 0.5
    # what the command gives wins, option by option; the rest still comes from the space
    study = fb.search(space, trials=1, study="space-proxy-given", epochs=1, width_scale=1.0, lr=None)
    proxy = study.user_attrs["settings"]["proxy"]
    assert (proxy["epochs"], proxy["lr"], proxy["width_scale"], proxy["batch_size"]) == (1, 0.004, 1.0, 16)


def test_the_search_command_takes_unset_options_from_the_spaces_proxy(tmp_path, monkeypatch):
    fake_trainer(monkeypatch, lambda i, epoch: 0.4)
    space = tmp_path / "p.yaml"
    import yaml

    space.write_text(
        yaml.safe_dump(
            {
                **BARE,
                "name": "p",
                "proxy": {"epochs": 2, "lr": 0.003, "train_per_class": 8, "val_per_class": 4, "batch_size": 16},
            }
        )
    )
    result = run("search", "--space", str(space), "--trials", "1", "--study", "cli-proxy")
    assert result.exit_code == 0, result.output
    proxy = optuna.load_study(study_name="cli-proxy", storage="sqlite:///runs/search/cli-proxy/study.db").user_attrs[
        "settings"
    ]["proxy"]
    assert (proxy["epochs"], proxy["lr"], proxy["width_scale"]) == (2, 0.003, 1.0)
    result = run("search", "--space", str(space), "--trials", "1", "--study", "cli-proxy-2", "--epochs", "1")
    assert result.exit_code == 0, result.output
    proxy = optuna.load_study(
        study_name="cli-proxy-2", storage="sqlite:///runs/search/cli-proxy-2/study.db"
    ).user_attrs["settings"]["proxy"]
    assert (proxy["epochs"], proxy["lr"]) == (1, 0.003)
    assert "Default: the space's proxy section, else 10." in " ".join(run("search", "--help").output.split()).replace(
        "│ ", ""
    ).replace(" │", "")


@pytest.mark.parametrize(
    "proxy, message",
    [
        ({"epoch": 2}, "key proxy.epoch: unknown key (did you mean epochs?)"),
        ({"seed": 3}, "key proxy.seed: unknown key"),
        ({"epochs": 0}, "key proxy.epochs: must be between 1 and 100000"),
        ({"lr": "fast"}, "key proxy.lr: expected a number"),
        ({"width_scale": 2}, "key proxy.width_scale: must be in (0, 1]"),
        ([1, 2], "key proxy: a mapping of training options"),
    ],
)
def test_a_bad_proxy_section_is_one_line_naming_the_key(tmp_path, proxy, message):
    import yaml

    space = tmp_path / "bad.yaml"
    space.write_text(yaml.safe_dump({**BARE, "name": "bad", "proxy": proxy}))
    result = run("spaces", str(space))
    assert result.exit_code == 2 and message in result.output and len(result.output.strip().splitlines()) == 1, (
        result.output
    )


def test_a_proxy_that_cannot_train_the_space_is_refused_before_any_trial(tmp_path):
    import yaml

    space = tmp_path / "bad.yaml"
    space.write_text(yaml.safe_dump({**BARE, "name": "bad", "proxy": {"image_size": 30}}))
    result = run("search", "--space", str(space), "--trials", "1")
    assert result.exit_code == 2, result.output
    assert (
        "the proxy cannot train this space's layouts: --image-size 30 is not a multiple of --patch-size 8"
        in result.output
    )
    assert not Path("runs").exists()


def test_a_search_with_a_test_split_on_built_in_data_records_test_top1(one_thread):
    """--test-split reaches the search's data loader (it was refused for built-in data) and
    test top-1 is recorded beside the objective, never as it."""
    study = fb.search("tiny", trials=1, baselines=(), test_split=True, test_per_class=4, **PROXY)
    t = [t for t in finished(study) if t.user_attrs["status"] == "completed"][0]
    assert t.user_attrs["test_top1"] is not None and t.values == [t.user_attrs["top1"]]
