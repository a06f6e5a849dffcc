"""``funnelbench report`` and :mod:`funnelbench.search.report` on studies built with Optuna's own
API, written exactly as the search contract says a ``funnelbench search`` study is written:
study attributes ``funnelbench``/``settings``/``out``, every trial attribute present (null where
not applicable), rejected candidates COMPLETE with a positive constraint, baselines over budget
trained with a positive constraint, pruned PRUNED, failures FAIL."""

import json
import random
import struct
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, IntDistribution
from typer.testing import CliRunner

import funnelbench as fb
from funnelbench.cli import app
from funnelbench.errors import UsageError
from funnelbench.search import report as rp

optuna.logging.set_verbosity(optuna.logging.WARNING)
runner = CliRunner()
BUDGET = 1.0e9  # MACs: DeiT-Ti (1.25 G) is over it, B6(197)-6(99), h192 (0.94 G) within
DISTRIBUTIONS = {
    "stage0_layers": IntDistribution(2, 8),
    "stage1_layers": IntDistribution(2, 8),
    "stage0_mlp": CategoricalDistribution([384, 768, 1536]),
    "pool": CategoricalDistribution(["mean", "max"]),
}
BASELINES = {
    "B12(197), h192": ({}, 72.0),  # over budget, and the highest top-1: must never be best
    "B6(197)-6(99), h192": ({"stage0_layers": 6, "stage1_layers": 6, "stage0_mlp": 768, "pool": "mean"}, 60.0),
}

# What contract B documents (independent of funnelbench.search.report: this is the contract's own list).
STUDY_KEYS = ("funnelbench", "settings", "out")
SETTINGS_KEYS = (
    "space",
    "space_file",
    "space_spec",
    "budgets",
    "objectives",
    "directions",
    "sampler",
    "seed",
    "pruner",
    "proxy",
    "baselines",
)
BUDGET_KEYS = ("macs", "min_macs", "params", "memory_bytes", "memory_batch", "memory_device", "memory_dtype")
TRIAL_KEYS = (
    "target_layout",
    "proxy_layout",
    "params",
    "macs",
    "flops",
    "proxy_params",
    "proxy_macs",
    "train_mem_est_bytes",
    "top1",
    "top5",
    "val_loss",
    "epochs_done",
    "train_img_per_s",
    "infer_img_per_s",
    "wall_s",
    "status",
    "error",
    "baseline",
    "over_budget",
    "run_dir",
)
STATUSES = {"completed", "pruned", "rejected", "failed", "diverged", "oom", "interrupted", None}


def layout_of(p: dict) -> str:
    text = f"B{p['stage0_layers']}(197, m{p['stage0_mlp']})-{p['stage1_layers']}(99), h192"
    return str(fb.parse_layout(text + (", max" if p["pool"] == "max" else "")))


def fake_top1(p: dict) -> float:
    """Synthetic accuracy: depth of the first stage matters most, the rest a little."""
    return 40.0 + 3.0 * p["stage0_layers"] + 0.3 * p["stage1_layers"] + (0.5 if p["pool"] == "max" else 0.0)


def attrs(layout: str, status, *, top1=None, epochs=None, baseline=False, error=None, number=0) -> dict:
    """Every documented trial attribute, null where not applicable."""
    cost = fb.count(layout)
    over = {"macs": (cost.macs - BUDGET) / BUDGET} if cost.macs > BUDGET else {}
    trained = top1 is not None
    return {
        "target_layout": layout,
        "proxy_layout": layout + ", img32, patch4",
        "params": cost.params,
        "macs": cost.macs,
        "flops": 2 * cost.macs,
        "proxy_params": cost.params // 16,
        "proxy_macs": cost.macs // 100,
        "train_mem_est_bytes": 3 * 2**30 + cost.params * 16,
        "top1": top1,
        "top5": None if not trained else min(100.0, top1 + 20),
        "val_loss": None if not trained else 5 - top1 / 25,
        "epochs_done": epochs,
        "train_img_per_s": None if not trained else 1e12 / cost.macs,
        "infer_img_per_s": None,
        "wall_s": None if not trained else 30.0,
        "status": status,
        "error": error,
        "baseline": baseline,
        "over_budget": over,
        "run_dir": f"trial-{number}",
    }


def settings(objectives=("top1",), directions=("maximize",)) -> dict:
    return {
        "space": "synthetic",
        "space_file": None,
        "space_spec": {"stages": 2, "stage0_layers": [2, 8], "stage0_mlp": [384, 768, 1536]},
        "budgets": {
            "macs": BUDGET,
            "min_macs": None,
            "params": None,
            "memory_bytes": None,
            "memory_batch": None,
            "memory_device": "cuda",
            "memory_dtype": "fp32",
        },
        "objectives": list(objectives),
        "directions": list(directions),
        "sampler": "tpe",
        "seed": 0,
        "pruner": "median" if len(objectives) == 1 else "none",
        "proxy": {"width_scale": 0.25, "epochs": 3, "image_size": 32, "patch_size": 4},
        "baselines": list(BASELINES),
    }


def build_study(storage, name, objectives=("top1",), n=24, seed=0):
    """Baselines first, then ``n`` sampled candidates: over budget -> rejected, every 7th pruned,
    one out of memory; the rest trained."""
    directions = ["maximize" if o == "top1" else "minimize" for o in objectives]
    study = optuna.create_study(storage=storage, study_name=name, directions=directions)
    study.set_user_attr("funnelbench", "search/1")
    study.set_user_attr("settings", settings(objectives, directions))
    study.set_user_attr("out", f"runs/search/{name}")

    def values(top1, macs):
        return [top1 if o == "top1" else macs for o in objectives]

    rng = random.Random(seed)
    number = 0
    for layout, (params, top1) in BASELINES.items():
        layout = str(fb.parse_layout(layout))
        if "top1" not in objectives:  # a cost-only search trains nothing
            top1 = None
        a = attrs(layout, "completed", top1=top1, epochs=3, baseline=True, number=number)
        study.add_trial(
            optuna.trial.create_trial(
                values=values(top1, a["macs"]),
                params=params,
                distributions={k: DISTRIBUTIONS[k] for k in params},
                user_attrs=a,
                constraints={"macs": a["over_budget"].get("macs", (a["macs"] - BUDGET) / BUDGET)},
            )
        )
        number += 1
    for i in range(n):
        p = {
            "stage0_layers": rng.randint(2, 8),
            "stage1_layers": rng.randint(2, 8),
            "stage0_mlp": rng.choice([384, 768, 1536]),
            "pool": rng.choice(["mean", "max"]),
        }
        if i == 5:  # the one that runs out of memory: within budget
            p = {"stage0_layers": 3, "stage1_layers": 3, "stage0_mlp": 384, "pool": "mean"}
        layout = layout_of(p)
        macs = fb.count(layout).macs
        common = dict(params=p, distributions=DISTRIBUTIONS)
        if macs > BUDGET:  # never built: COMPLETE with a positive constraint; its values mean nothing
            a = attrs(layout, "rejected", number=number)
            trial = optuna.trial.create_trial(
                values=values(99.0, macs), user_attrs=a, constraints={"macs": (macs - BUDGET) / BUDGET}, **common
            )
        elif i % 7 == 3 and "top1" in objectives:
            a = attrs(layout, "pruned", top1=fake_top1(p) - 20, epochs=1, number=number)
            trial = optuna.trial.create_trial(
                state=optuna.trial.TrialState.PRUNED, user_attrs=a, intermediate_values={0: a["top1"]}, **common
            )
        elif i == 5:
            a = attrs(layout, "oom", number=number, error="out of memory at batch 64")
            trial = optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, user_attrs=a, **common)
        else:
            trained = "top1" in objectives  # a cost-only search trains nothing
            a = attrs(
                layout,
                "completed",
                top1=fake_top1(p) if trained else None,
                epochs=3 if trained else None,
                number=number,
            )
            trial = optuna.trial.create_trial(
                values=values(a["top1"], macs), user_attrs=a, constraints={"macs": (macs - BUDGET) / BUDGET}, **common
            )
        study.add_trial(trial)
        number += 1
    return study


def sqlite_url(name: str) -> str:
    folder = Path("runs/search") / name
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'study.db'}"


def run(*args):
    return runner.invoke(app, ["report", *args])


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    """A finished one-objective study ("fin") and a two-objective one ("mo"), built once (the
    SQLite writes take seconds) and copied into each test's runs/search/<name>/study.db."""
    folder = tmp_path_factory.mktemp("studies")
    for name, objectives in (("fin", ("top1",)), ("mo", ("top1", "macs"))):
        build_study(f"sqlite:///{folder / name}.db", name, objectives)
    return folder


def place(templates, name: str):
    target = Path(sqlite_url(name)[len("sqlite:///") :])
    target.write_bytes((templates / f"{name}.db").read_bytes())
    return optuna.load_study(study_name=name, storage=f"sqlite:///{target}")


@pytest.fixture
def finished(templates):
    """The finished one-objective study in its default place (runs/search/fin/study.db)."""
    return place(templates, "fin")


def trained_feasible(study):
    return [t for t in study.trials if t.user_attrs["status"] == "completed" and t.user_attrs["macs"] <= BUDGET]


def test_records_of_a_finished_study(finished):
    study = rp.open_study("fin")  # the storage found from the study's folder
    rep = rp.build_report(study)
    records = rep["trials"]
    assert len(records) == len(finished.trials)
    first = records[0]
    for col in (
        "trial",
        "state",
        "status",
        "baseline",
        "target_layout",
        "params",
        "macs",
        "flops",
        "top1",
        "top5",
        "val_loss",
        "epochs_done",
        "train_img_per_s",
        "train_mem_est_bytes",
        "feasible",
        "over_budget",
        "error",
        "param_stage0_layers",
        "param_pool",
    ):
        assert col in first
    # trained trials first, by top-1 (the baseline over budget among them), then the rest by number
    trained = [r for r in records if r["status"] == "completed"]
    assert records[: len(trained)] == trained
    assert [r["top1"] for r in trained] == sorted((r["top1"] for r in trained), reverse=True)
    assert trained[0]["target_layout"] == "B12(197), h192" and trained[0]["baseline"] and not trained[0]["feasible"]
    assert trained[0]["over_budget"] == "macs +25.4%"
    rest = records[len(trained) :]
    assert [r["trial"] for r in rest] == sorted(r["trial"] for r in rest)
    assert all(r["top1"] is None for r in rest if r["status"] == "rejected")
    # the best: the feasible trained trial with the highest top-1 (never the baseline over budget)
    best = max(trained_feasible(finished), key=lambda t: t.user_attrs["top1"])
    assert rep["front_trials"] == [best.number] and rep["front"][0]["top1"] == best.user_attrs["top1"]
    # counts, against the attributes as written
    statuses = [t.user_attrs["status"] for t in finished.trials]
    counts = rep["counts"]
    completed, pruned = statuses.count("completed"), statuses.count("pruned")
    # trained = what --trials counts: completed, pruned and failed trainings (the oom one)
    assert (
        counts["trained"],
        counts["completed"],
        counts["pruned"],
        counts["rejected"],
        counts["failed"],
        counts["baselines"],
        counts["repeats"],
    ) == (completed + pruned + 1, completed, pruned, statuses.count("rejected"), 1, 2, 0)
    assert counts["rejected_by"] == {"macs": statuses.count("rejected")}
    assert counts["failures"] == [{"status": "oom", "error": "out of memory at batch 64", "trials": 1}]
    assert rp.counts_line(counts).startswith(
        f"{len(statuses)} trials: {completed + pruned + 1} trained "
        f"({completed} completed, {pruned} pruned, 1 failed; 2 baselines)"
    )


def test_importances_name_the_decision_that_mattered(finished):
    rows, note = rp.param_importances(finished)
    assert note is None
    assert rows[0] == {**rows[0], "objective": "top1", "param": "stage0_layers"}  # the synthetic top-1 follows it
    assert sum(r["importance"] for r in rows) == pytest.approx(1.0)
    assert rp.param_importances(finished) == (rows, note)  # deterministic
    few = build_study(None, "few", n=3)
    assert rp.param_importances(few) == (
        [],
        f"importances need at least {rp.MIN_IMPORTANCE_TRIALS} trained trials; {len(trained_feasible(few)) + 1} so far",
    )


def dominated(a, b):
    """Whether b dominates a in (top1 max, macs min)."""
    return b[0] >= a[0] and b[1] <= a[1] and (b[0] > a[0] or b[1] < a[1])


def test_pareto_front_of_a_multi_objective_study(templates):
    study = place(templates, "mo")
    rep = rp.build_report(rp.open_study("mo"))
    points = {t.number: (t.user_attrs["top1"], t.user_attrs["macs"]) for t in trained_feasible(study)}
    expected = {n for n, p in points.items() if not any(dominated(p, q) for q in points.values())}
    assert set(rep["front_trials"]) == expected and len(expected) >= 2
    assert rep["front_trials"][0] == max(expected, key=lambda n: points[n][0])  # best first by top-1
    assert all(not r["baseline"] or r["feasible"] for r in rep["front"])
    # the plot's own front (of its axes, the study's two objectives) is the same set
    assert rp.plot_axes(rep) == ("macs", "top1")
    plotted = rp.tradeoff_front([(points[n][1], points[n][0], n) for n in points], x_min=True, y_max=True)
    assert set(plotted) == expected
    rows, note = rp.param_importances(study)
    assert note is None and {r["objective"] for r in rows} == {"top1", "macs"}


def test_a_study_still_being_written_reads_without_writing():
    study = build_study(sqlite_url("live"), "live", n=4)
    told = study.ask()  # ask/tell, as a worker does
    layout = str(fb.parse_layout("B4(197)-4(99)-4(50), h192, max"))
    for k, v in attrs(layout, "completed", top1=55.0, epochs=3, number=told.number).items():
        told.set_user_attr(k, v)
    told.set_constraint("macs", (fb.count(layout).macs - BUDGET) / BUDGET)
    study.tell(told, 55.0)
    running = study.ask()
    for k, v in attrs("B6(197)-6(99), h192", None, number=running.number).items():
        running.set_user_attr(k, v)
    db = Path("runs/search/live/study.db")
    before = db.read_bytes()
    result = run("--study", "live", "--json")
    assert result.exit_code == 0, result.output
    rep = json.loads(result.stdout)
    [live] = [r for r in rep["trials"] if r["trial"] == running.number]
    assert live["state"] == "RUNNING" and live["status"] == "running" and rep["counts"]["running"] == 1
    assert rep["trials"][-1]["trial"] == running.number
    assert any(r["trial"] == told.number and r["status"] == "completed" for r in rep["trials"])
    assert db.read_bytes() == before and sorted(p.name for p in db.parent.iterdir()) == ["study.db"]
    result = run("--study", "live")
    assert result.exit_code == 0 and "running" in result.stdout and "1 running" in result.stdout


def test_exports_read_back_with_pandas(finished, tmp_path):
    out = tmp_path / "out"
    result = run("--study", "fin", "--export", str(out / "all.csv"), "--front", str(out / "front.csv"), "--top", "3")
    assert result.exit_code == 0, result.output
    rep = rp.build_report(rp.open_study("fin"))
    frame = pd.read_csv(out / "all.csv")
    assert len(frame) == len(finished.trials)  # every trial, whatever --top shows
    assert frame["trial"].tolist() == [r["trial"] for r in rep["trials"]]
    assert frame["macs"].tolist() == [r["macs"] for r in rep["trials"]]
    assert frame["top1"].dropna().tolist() == [r["top1"] for r in rep["trials"] if r["top1"] is not None]
    assert pd.read_csv(out / "front.csv")["trial"].tolist() == rep["front_trials"]
    for suffix in (".json", ".md", ".tex"):
        assert run("--study", "fin", "--export", str(out / f"all{suffix}")).exit_code == 0
    assert pd.read_json(out / "all.json")["target_layout"].tolist() == [r["target_layout"] for r in rep["trials"]]
    md = (out / "all.md").read_text()
    assert "train_mem_est_mib" in md and "gmacs" in md and "B12(197), h192" in md
    assert r"train\_img\_per\_s" in (out / "all.tex").read_text()
    # the terminal: top 3 of the trials, the best trial, failures, importances, the conventions
    text = result.stdout
    assert "top 3 of" in text and "best trial" in text and "oom: out of memory at batch 64" in text
    assert "stage0_layers" in text and 'call "FLOPs"' in text and "optuna-dashboard sqlite:///" in text
    assert "1.00 GMACs (= 2.00 GFLOPs as 2 x MACs)" in text


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("name", ["fin", "mo"])
def test_plots_are_written(templates, tmp_path, name):
    place(templates, name)
    plot, history = tmp_path / "f" / "plot.png", tmp_path / "f" / "history.png"
    result = run("--study", name, "--plot", str(plot), "--history", str(history))
    assert result.exit_code == 0, result.output
    for path in (plot, history):
        width, height = png_size(path)
        assert 900 <= width <= 1150 and 400 <= height <= 900  # ~3.5 in at 300 dpi
        assert 20_000 < path.stat().st_size < 1_000_000
    assert sorted(p.name for p in plot.parent.iterdir()) == ["history.png", "plot.png"]  # no temporary left


def test_a_cost_only_study_plots_its_objective():
    build_study(sqlite_url("cost"), "cost", objectives=("macs",), n=8)
    rep = rp.build_report(rp.open_study("cost"))
    assert rp.plot_axes(rep) == ("params", "macs")
    trained = [r for r in rep["trials"] if r["status"] == "completed" and r["feasible"]]
    assert rep["front"][0]["macs"] == min(r["macs"] for r in trained)  # minimised
    result = run("--study", "cost", "--plot", "cost.png", "--history", "history.png")
    assert result.exit_code == 0, result.output
    assert png_size(Path("cost.png"))[0] > 900 and png_size(Path("history.png"))[0] > 900


def test_study_attributes_are_json_readable_through_optuna_alone(finished):
    """What optuna-dashboard and a notebook see: the documented attributes, plain JSON."""
    study = optuna.load_study(study_name="fin", storage="sqlite:///runs/search/fin/study.db")
    assert set(STUDY_KEYS) <= set(study.user_attrs) and study.user_attrs["funnelbench"] == "search/1"
    for key in STUDY_KEYS:
        assert json.loads(json.dumps(study.user_attrs[key])) == study.user_attrs[key]
    s = study.user_attrs["settings"]
    assert set(SETTINGS_KEYS) <= set(s) and set(BUDGET_KEYS) <= set(s["budgets"])
    assert len(s["objectives"]) == len(s["directions"]) == len(study.directions)
    for trial in study.trials:
        assert set(TRIAL_KEYS) <= set(trial.user_attrs), trial.number
        assert json.loads(json.dumps(trial.user_attrs, allow_nan=False)) == trial.user_attrs
        a = trial.user_attrs
        assert a["status"] in STATUSES and isinstance(a["baseline"], bool) and isinstance(a["over_budget"], dict)
        assert a["macs"] is None or a["flops"] == 2 * a["macs"]
        if a["status"] == "rejected":
            assert trial.state.name == "COMPLETE" and max(trial.constraints.values()) > 0
    assert all(
        t.number not in {x.number for x in study.best_trials} for t in study.trials if t.user_attrs["over_budget"]
    )


def test_journal_storage_is_found_from_the_study_folder():
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    folder = Path("runs/search/j")
    folder.mkdir(parents=True)
    build_study(JournalStorage(JournalFileBackend(str(folder / "journal.log"))), "j", n=3)
    assert rp.default_storage("j") == str(folder / "journal.log")
    result = run("--study", "j", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["counts"]["trials"] == 5


def one_line_error(result, *needles):
    assert result.exit_code == 2, result.output
    assert result.stdout == "" and result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    for needle in needles:
        assert needle in result.stderr, result.stderr


def test_bad_studies_are_one_line_errors(tmp_path):
    export = tmp_path / "x.csv"
    one_line_error(
        run("--study", "nope", "--export", str(export)),
        "no study 'nope' under 'runs/search'",
        "run funnelbench search first",
    )
    url = sqlite_url("other")
    optuna.create_study(storage=url, study_name="other").optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    one_line_error(
        run("--study", "other", "--export", str(export)), "not written by funnelbench search", f"optuna-dashboard {url}"
    )
    one_line_error(run("--study", "typo", "--storage", url), "no study 'typo'", "it holds 'other'")
    empty = optuna.create_study(storage=url, study_name="empty")
    empty.set_user_attr("funnelbench", "search/1")
    one_line_error(run("--study", "empty", "--storage", url), "study 'empty'", "has no trials yet")
    one_line_error(run("--study", "x", "--storage", "sqlite:///nothere/study.db"), "no such file")
    one_line_error(
        run("--study", "other", "--storage", url, "--plot", str(tmp_path / "p.jpg")), "unknown suffix '.jpg'"
    )
    assert not export.exists() and not Path("nothere").exists()
    with pytest.raises(UsageError, match="has no trials yet"):
        rp.open_study("empty", url)


def test_a_real_search_study_reads_through_optuna_alone_and_reports(tmp_path):
    """The contract end to end: a study written by ``fb.search`` itself (real proxy trainings,
    tiny), read back through Optuna's public API alone and through ``funnelbench report``."""
    fb.search(
        "tiny",
        trials=3,
        budget_macs=3e6,
        epochs=1,
        train_per_class=8,
        val_per_class=4,
        batch_size=16,
        study="real",
        threads=1,
    )
    loaded = optuna.load_study(study_name="real", storage=f"sqlite:///{Path('runs/search/real/study.db').resolve()}")
    assert loaded.user_attrs["funnelbench"] == "search/1" and set(STUDY_KEYS) <= set(loaded.user_attrs)
    s = loaded.user_attrs["settings"]
    assert set(SETTINGS_KEYS) <= set(s) and set(BUDGET_KEYS) <= set(s["budgets"]) and s["budgets"]["macs"] == 3e6
    trained = []
    for trial in loaded.trials:
        a = trial.user_attrs
        assert set(TRIAL_KEYS) <= set(a), trial.number
        assert json.loads(json.dumps(a, allow_nan=False)) == a and a["status"] in STATUSES
        assert a["flops"] == 2 * a["macs"] == 2 * fb.count(a["target_layout"]).macs
        b = s["budgets"]  # every trial carries the estimate at the study's memory batch, budget or not
        assert (
            a["train_mem_est_bytes"]
            == fb.estimate_memory(
                a["target_layout"], b["memory_batch"], device=b["memory_device"], dtype=b["memory_dtype"]
            ).train_peak_bytes
        )
        if a["status"] == "rejected":
            assert trial.state.name == "COMPLETE" and max(trial.constraints.values()) > 0 and a["run_dir"] is None
        if a["status"] == "completed" and not a.get("duplicate_of"):
            trained.append(trial)
            assert Path("runs/search/real", a["run_dir"], "record.json").exists()
            assert 0 <= a["top1"] <= 100 and a["epochs_done"] == 1 and a["proxy_layout"].endswith("img32, patch8")
    assert len(trained) >= 3
    result = run("--study", "real", "--json")
    assert result.exit_code == 0, result.output
    rep = json.loads(result.stdout)
    assert rep["counts"]["trained"] >= 3 and {r["trial"] for r in rep["trials"]} >= {t.number for t in trained}
    repeats = [r for r in rep["trials"] if r["status"] == "repeat"]
    assert len(repeats) == rep["counts"]["repeats"] and all(r["repeat_of"] is not None for r in repeats)
    assert not set(rep["front_trials"]) & {r["trial"] for r in repeats}


def test_journal_storage_named_as_the_search_prints_it():
    """``funnelbench search --workers N`` prints ``--storage journal:PATH``; the report takes it."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    folder = Path("elsewhere")
    folder.mkdir()
    build_study(JournalStorage(JournalFileBackend(str(folder / "journal.log"))), "jp", n=3)
    result = run("--study", "jp", "--storage", f"journal:{folder.resolve() / 'journal.log'}", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["counts"]["trials"] == 5
