"""The samplers learn from what they should: a start-up of feasible trainings drawn uniformly from
the layouts the budget accepts, conditional parameters (no padded decisions), every constraint
key in every trial, no made-up value in GP's model, baselines with their parameters, never a
prune after the last epoch, and an unestimated candidate that is not a training.

References that do not share the code they check: the exact feasible counts are checked against
a brute-force product over the space's decisions (tiny) and against the existing walk's layout
count; uniformity is a chi-square test of the sampler's draws against those exact counts."""

import itertools
import logging
import math
import random
from collections import Counter

import optuna
import pytest
from optuna.trial import TrialState
from test_search import PROXY, fake_trainer, finished
from typer.testing import CliRunner

import funnelbench as fb
from funnelbench.cli import app
from funnelbench.search import samplers
from funnelbench.search import study as study_mod
from funnelbench.search.budget import Budgets, over_budget
from funnelbench.search.feasible import LayoutDraws, feasible_count
from funnelbench.search.samplers import FeasibleStartSampler, make_sampler
from funnelbench.search.space import list_spaces, load_space

DEIT_TI_MACS = fb.count(fb.parse_layout("B12(197), h192")).macs  # 1.26 G: the budget of funnel-reinvest-ti's search


def without_baselines(name):
    """A shipped space's spec without its baselines (so every trial is searched)."""
    return dict(load_space(name).spec, baselines=[])


def searched(study):
    return [t for t in finished(study) if not t.user_attrs.get("baseline")]


def brute_force_layouts(space):
    """Every layout of ``space`` by the product of its decisions (no walk, no DP): the reference."""
    layouts = set()
    for n in space.counts.values:
        per_stage = []
        for i in range(n):
            stage = space.stage_decisions[i]
            keys = list(stage)
            per_stage.append([dict(zip(keys, combo)) for combo in itertools.product(*(stage[k].values for k in keys))])
        for chosen in itertools.product(*per_stage):
            layout = space.build([dict(c) for c in chosen], check=False)
            if not space.violations(layout):
                layouts.add(str(layout))
    return layouts


def chi_square_p(observed: list[int], expected: list[float]) -> float:
    """Upper tail of the chi-square statistic (Wilson-Hilferty normal approximation; no SciPy)."""
    stat = sum((o - e) ** 2 / e for o, e in zip(observed, expected))
    k = len(observed) - 1
    z = ((stat / k) ** (1 / 3) - (1 - 2 / (9 * k))) / math.sqrt(2 / (9 * k))
    return 0.5 * math.erfc(z / math.sqrt(2))


# ----------------------------------------------------------------------------- exact counts and uniform draws


def test_the_exact_feasible_count_matches_a_brute_force_enumeration_of_tiny():
    space = load_space("tiny")
    everything = brute_force_layouts(space)
    draws = LayoutDraws(space)
    assert draws.total == len(everything) == space.stats().layouts
    for budget in (1.5e6, 2.5e6, 4e6, None):
        budgets = Budgets(macs=budget)
        want = sum(1 for text in everything if not over_budget(budgets.judge(fb.parse_layout(text))[1]))
        got = feasible_count(space, budgets)
        assert got.total == want, budget
    both = Budgets(macs=3e6, params=60_000, min_macs=1.5e6)
    want = sum(1 for text in everything if not over_budget(both.judge(fb.parse_layout(text))[1]))
    assert feasible_count(space, both).total == want


def test_uniform_draws_of_tiny_cover_its_feasible_layouts_evenly():
    space = load_space("tiny")
    budgets = Budgets(macs=2.5e6)
    feasible = [t for t in brute_force_layouts(space) if not over_budget(budgets.judge(fb.parse_layout(t))[1])]
    sampler = make_sampler("random", 0, 1, space=space, budgets=budgets)
    n = 30 * len(feasible)
    seen = Counter(str(space.suggest(optuna.trial.FixedTrial(sampler.draw_params(k)))[0]) for k in range(n))
    assert set(seen) == set(feasible)  # only feasible layouts, and every one of them
    p = chi_square_p([seen[t] for t in feasible], [n / len(feasible)] * len(feasible))
    assert p > 1e-3, p


def test_random_search_on_funnel_reinvest_ti_draws_uniformly_from_the_layouts_within_deit_ti_macs():
    """Cells (stages, first-stage width) against the exact count of each cell, from sub-spaces."""
    space = load_space("funnel-reinvest-ti")
    budgets = Budgets(macs=DEIT_TI_MACS)
    spec = dict(space.spec, baselines=[])
    exact = {}
    for hidden in (192, 256):
        sub = dict(spec, stages=dict(spec["stages"], per_stage={"stage0": {"hidden": hidden}}))
        for stages, count in feasible_count(load_space(sub), budgets).by_stages.items():
            exact[(stages, hidden)] = count
    total = feasible_count(space, budgets).total
    assert sum(exact.values()) == total and total > 100_000
    sampler = make_sampler("random", 3, 1, space=space, budgets=budgets)
    n = 1500
    cells = Counter()
    for k in range(n):
        layout = space.suggest(optuna.trial.FixedTrial(sampler.draw_params(k)))[0]
        assert not over_budget(budgets.judge(layout)[1]) and space.contains(layout) is None
        cells[(len(layout.stages), layout.stages[0].hidden)] += 1
    keys = [k for k in exact if exact[k] * n / total >= 5]  # cells the test can see
    rare = sum(cells[k] for k in exact if k not in keys)
    assert rare <= 5 + 3 * math.sqrt(sum(exact[k] for k in exact if k not in keys) * n / total + 1)
    p = chi_square_p([cells[k] for k in keys], [exact[k] * n / total for k in keys])
    assert p > 1e-3, (p, cells, exact)


def test_random_search_trains_only_feasible_layouts_and_the_same_seed_draws_the_same():
    def run(name, seed):
        study = fb.search(
            without_baselines("funnel-reinvest-ti"),
            trials=12,
            objectives=("macs",),
            sampler="random",
            budget_macs=DEIT_TI_MACS,
            study=name,
            seed=seed,
        )
        return searched(study)

    a, b, c = run("r0", 0), run("r0b", 0), run("r1", 1)
    assert len(a) == 12 and all(t.user_attrs["status"] == "completed" for t in a)  # none rejected, none wasted
    assert all(t.user_attrs["sampled_by"] == "uniform" for t in a)
    layouts = [[t.user_attrs["target_layout"] for t in s] for s in (a, b, c)]
    assert layouts[0] == layouts[1] != layouts[2]


def test_spaces_says_how_many_layouts_meet_a_budget():
    result = CliRunner().invoke(app, ["spaces", "funnel-reinvest-ti", "--budget-flops", str(DEIT_TI_MACS)])
    assert result.exit_code == 0, result.output
    total = feasible_count(load_space("funnel-reinvest-ti"), Budgets(macs=DEIT_TI_MACS)).total
    assert f"{total:,} of 2,329,384 layouts" in result.output.replace("\n", " ")


# ----------------------------------------------------------------------------- defect 1: the start-up


def test_tpe_starts_with_ten_feasible_trainings_whatever_the_baselines_and_rejections():
    """funnel-reinvest-ti's 11 baselines under DeiT-Ti's MACs: the first 10
    searched trials are uniform feasible draws (none rejected), and TPE models from the 11th.
    Before, Optuna's start-up counted the baselines, and TPE modelled from the first searched trial."""
    study = fb.search("funnel-reinvest-ti", trials=24, objectives=("macs",), budget_macs=DEIT_TI_MACS, study="su")
    rest = searched(study)
    first = rest[:10]
    assert all(t.user_attrs["sampled_by"] == "uniform" and t.user_attrs["status"] == "completed" for t in first)
    assert all(t.user_attrs["sampled_by"] == "TPESampler" for t in rest[10:])
    assert sum(t.user_attrs.get("baseline", False) for t in finished(study)) == 11


def test_a_rejected_candidate_does_not_count_towards_the_start_up():
    space = load_space("tiny")
    study = optuna.create_study()
    sampler = FeasibleStartSampler(space, Budgets(), optuna.samplers.RandomSampler(seed=0), startup=2)
    for status in ("rejected", "rejected", "rejected", "completed"):
        t = study.ask()
        t.set_user_attr("status", status)
        study.tell(t, 0.0)
    running = study.ask()
    assert sampler._in_startup(study, study._storage.get_trial(running._trial_id))  # one training of two
    running.set_user_attr("status", "running")
    nxt = study.ask()  # the running one counts, so parallel workers do not all draw at start-up
    assert not sampler._in_startup(study, study._storage.get_trial(nxt._trial_id))


# ----------------------------------------------------------------------------- defect 2: no frozen decisions


def test_a_cost_only_tpe_search_tries_every_value_of_the_third_stage():
    study = fb.search(
        without_baselines("funnel-reinvest-ti"),
        trials=60,
        objectives=("macs",),
        budget_macs=DEIT_TI_MACS,
        study="third",
    )
    three = [t for t in searched(study) if t.params.get("n_stages") == 3]
    assert len(three) >= 10
    space = load_space("funnel-reinvest-ti")
    for key in ("stride", "pool", "hidden", "mlp"):
        values = {t.params[f"stage2_{key}"] for t in three}
        assert values == set(space.stage_decisions[2][key].values), (key, values)
    for t in searched(study):  # nothing padded: only the stages a layout has, no stage-0 pool
        assert "stage0_pool" not in t.params
        assert not any(p.startswith(f"stage{i}_") for p in t.params for i in range(t.params["n_stages"], 3))


def test_baselines_are_enqueued_with_only_the_decisions_they_use(tmp_path):
    study = fb.search("funnel-reinvest-ti", trials=11, objectives=("macs",), study="bl", root=tmp_path)
    space = load_space("funnel-reinvest-ti")
    for t in finished(study):
        layout = fb.parse_layout(t.user_attrs["target_layout"])
        assert t.user_attrs["baseline"] and t.params == space.params_of(layout)
        assert t.params["n_stages"] == len(layout.stages) and "stage0_pool" not in t.params


# ----------------------------------------------------------------------------- defect 3: every sampler on every space


@pytest.mark.parametrize("sampler", ["gp", "tpe", "nsga2", "random"])
def test_every_sampler_runs_a_cost_only_search_on_every_shipped_space(sampler, tmp_path, monkeypatch):
    """Past the start-up (shortened here to 3 trainings, NSGA-II's population to 4) every model
    samples; before, GP raised "The number of constraints must be the same for all trials"."""
    monkeypatch.setattr(samplers, "STARTUP_TRAININGS", 3)
    monkeypatch.setattr(samplers, "NSGA2_POPULATION", 4)
    model = {"gp": "GPSampler", "tpe": "TPESampler", "nsga2": "NSGAIISampler", "random": "uniform"}[sampler]
    for name in list_spaces():
        space = load_space(name)
        budget = space.stats().cheapest_macs[1] * 2.5
        study = fb.search(
            without_baselines(name),
            trials=6,
            objectives=("macs",),
            sampler=sampler,
            budget_macs=budget,
            study=f"{sampler}-{name}",
            root=tmp_path,
        )
        trials = finished(study)
        # a small space can run out of new layouts (a converged model proposes repeats): the search then stops
        assert study_mod.counts(study)["trained"] >= 5, name
        assert any(t.user_attrs["sampled_by"].startswith(model) for t in trials[4:]), name
        keys = {tuple(sorted(t.constraints)) for t in trials}
        assert len(keys) == 1, (name, keys)  # every trial sets every constraint key


@pytest.mark.parametrize("sampler", ["gp", "tpe", "nsga2", "random"])
def test_every_sampler_runs_a_short_trained_search_on_tiny(sampler, tmp_path, one_thread):
    study = fb.search(
        "tiny", trials=3, sampler=sampler, budget_macs=2.5e6, study=f"t-{sampler}", root=tmp_path, **PROXY
    )
    assert study_mod.counts(study)["trained"] == 3
    assert all(t.user_attrs["status"] in ("completed", "rejected") for t in finished(study))


def test_gp_never_fits_a_rejected_candidate_and_the_cli_runs_it(tmp_path):
    space = load_space("tiny")
    study = optuna.create_study(direction="maximize")
    for status, value in (("completed", 50.0), ("rejected", 0.0), ("completed", 60.0)):
        t = study.ask()
        t.suggest_int("stage0_layers", 1, 2)
        t.set_user_attr("status", status)
        study.tell(t, value)
    gp = make_sampler("gp", 0, 1, space=space, budgets=Budgets())
    tpe = make_sampler("tpe", 0, 1, space=space, budgets=Budgets())
    assert [t.values for t in gp._view(study).get_trials()] == [[50.0], [60.0]]
    assert len(tpe._view(study).get_trials()) == 3  # TPE sees it, as infeasible (its value is never read)
    result = CliRunner().invoke(
        app,
        [
            "search",
            "--space",
            "funnel-reinvest-ti",
            "--sampler",
            "gp",
            "--objective",
            "macs",
            "--trials",
            "12",
            "--budget-flops",
            "1.26G",
            "--study",
            "gp",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output


# ----------------------------------------------------------------------------- defect 4: an extra baseline


def test_an_extra_baseline_in_the_space_carries_its_parameters_and_one_outside_is_hidden_from_the_model(caplog):
    inside, outside = "B8(197)-4(99), h192", "B2(17), h64, a2, img32, patch8"
    with caplog.at_level(logging.WARNING, logger="optuna"):
        study = fb.search(
            "funnel-reinvest-ti",
            trials=15,
            objectives=("macs",),
            budget_macs=DEIT_TI_MACS,
            study="xb",
            baselines=(inside, outside),
        )
    by_layout = {t.user_attrs["target_layout"]: t for t in finished(study)}
    assert by_layout[inside].params == load_space("funnel-reinvest-ti").params_of(fb.parse_layout(inside))
    assert by_layout[outside].params == {}
    # the model's intersection search space is not emptied by the parameter-less baseline
    sampler = study.sampler
    trial = study.ask()
    space = sampler.model.infer_relative_search_space(sampler._view(study), study._storage.get_trial(trial._trial_id))
    assert space  # TPE (group=True) decomposes into the groups of co-occurring parameters
    assert not any("independent sampling" in r.getMessage() for r in caplog.records)
    assert optuna.logging.get_verbosity() == optuna.logging.WARNING  # Optuna's warnings are not silenced


# ----------------------------------------------------------------------------- defect 5: pruning


def test_a_trial_that_trained_its_whole_schedule_is_never_pruned(monkeypatch):
    """Six good trainings, then one that is fine at epoch 3 and bad at its last (4th) epoch: the
    median pruner judges from epoch 3 and, before, pruned it at epoch 4 with its compute spent."""
    fake_trainer(monkeypatch, lambda i, epoch: 0.9 if i < 6 or epoch < 4 else 0.01)
    study = fb.search("tiny", trials=8, pruner="median", budget_macs=2.5e6, study="last", **{**PROXY, "epochs": 4})
    assert all(t.state != TrialState.PRUNED for t in finished(study))
    late = [t for t in searched(study) if t.user_attrs["status"] == "completed"]
    assert late and all(t.user_attrs["epochs_done"] == 4 for t in late)


def test_hyperband_needs_a_schedule_with_brackets():
    result = CliRunner().invoke(
        app, ["search", "--space", "tiny", "--pruner", "hyperband", "--epochs", "4", "--trials", "2"]
    )
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "--pruner hyperband with 4 epochs" in result.output and "--epochs 9 or more" in result.output
    assert [study_mod.hyperband_brackets(e) for e in (4, 8, 9, 26, 27)] == [2, 2, 3, 3, 4]
    pruner = study_mod.make_pruner("hyperband", 27)
    assert (
        pruner._min_resource == 1 and pruner._max_resource == 27
    )  # Optuna's private fields (tests/search/test_optuna_hooks.py)


def test_the_default_pruner_follows_the_schedule():
    space = load_space("tiny")
    short = study_mod.Settings(space, Budgets(), proxy={"epochs": 4})
    long = study_mod.Settings(space, Budgets(), proxy={"epochs": 8})
    assert short.pruner == "none" and long.pruner == "median"


# ----------------------------------------------------------------------------- defect 6: counting


def test_a_candidate_the_memory_estimate_cannot_judge_is_skipped_and_not_counted(monkeypatch):
    real = Budgets.memory_of

    def memory_of(self, layout):
        if len(layout.stages) == 3:
            raise fb.errors.FunnelbenchError("the estimate does not model this layout (made up for the test)")
        return real(self, layout)

    monkeypatch.setattr(Budgets, "memory_of", memory_of)
    study = fb.search("tiny", trials=4, objectives=("train_mem",), study="skip", baselines=())
    c = study_mod.counts(study)
    assert c["trained"] == 4 and c["skipped"] >= 1 and c["failed"] == 0
    skipped = [t for t in finished(study) if t.user_attrs["status"] == "skipped"]
    assert all("made up for the test" in t.user_attrs["error"] for t in skipped)


def test_the_numbering_of_layouts_is_one_to_one_and_draws_follow_it():
    # funnel-table-ti: 315 layouts (the tabular benchmark enumerates them); every one a point of
    # the space, none twice, and the count agrees with the space's own walk
    space = load_space("funnel-table-ti")
    draws = LayoutDraws(space)
    layouts = draws.layouts()
    assert len(layouts) == draws.total == space.stats().layouts == 315
    assert len({str(lay) for lay in layouts}) == 315
    assert all(space.contains(lay) is None for lay in layouts[::7])
    assert str(space.build(draws.values_at(42))) == str(layouts[42])
    with pytest.raises(IndexError):
        draws.values_at(315)
    # a draw is the layout at a uniform index: the same generator state gives the same layout
    assert str(draws.draw(random.Random(3))) == str(layouts[random.Random(3).randrange(315)])
