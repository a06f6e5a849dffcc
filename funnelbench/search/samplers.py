"""The search's samplers: uniform feasible draws first, then Optuna's model, which learns only
from what it should.

    sampler = make_sampler("tpe", seed=0, n_objectives=1, space=space, budgets=budgets)

Every sampler is a :class:`FeasibleStartSampler` around one of Optuna's:

* **Start-up in trainings.** Until ``startup`` searched trials have trained (completed or pruned,
  not rejected, not a repeat, not a baseline; running ones count, so parallel workers do not all
  draw), each new trial is a uniform draw from the layouts the budgets accept
  (:class:`~.feasible.LayoutDraws`): no start-up draw is wasted on a layout the budget rejects.
  Optuna's own start-up (``n_startup_trials``) counts every COMPLETE trial, rejected candidates
  and baselines included: random search rejects about three asks in four under DeiT-Ti's MACs,
  so TPE's "10 random start-up trials" held 2-3 trainings, and the committed
  ``search-reinvest-ti`` study's 11 baselines used it up entirely. Here the model sampler is
  built with ``n_startup_trials=0`` and asked only after the start-up.
* ``random`` is the start-up forever: every trial a uniform draw of the feasible layouts,
  reproducible by seed (the draw of trial *k* depends on the seed and *k* only).
* **What the model sees.** A trial without parameters (a baseline that is not a point of the
  space) is hidden from every model: Optuna would otherwise take the intersection of the
  trials' parameters as empty and fall back to independent sampling for the rest of the study.
  GP is also not shown rejected candidates: it fits its regression to every COMPLETE trial's
  value, and a rejected one's value is made up. TPE and NSGA-II see them as infeasible
  (``trial.set_constraint``), which both handle without reading their values. Since GP cannot
  learn the infeasible region, its proposal is completed here into a layout the budgets accept:
  GP chooses the parameters it models, the others are drawn at random until the layout is
  within the budgets; failing that, only its first stage and stage count are kept, then only
  its stage count, then a uniform feasible draw (``sampled_by`` says which).
* **After a model's repeat, a new layout.** A proposal of a layout already trained is told the
  earlier result instead of training again (``duplicate_of``); the next new candidate is then a
  uniform feasible draw of a layout not trained yet (SMAC's random interleaving, applied only
  when the model is stuck). On a small space TPE otherwise locks onto its best layout: each
  repeat adds one more copy of it to TPE's good group, so the next proposal repeats it again
  (on the 173-layout Fashion-MNIST table, a 40-training TPE search made 1,001 repeats in 1,150
  asks). With --fidelity asha the model reads one rung (BOHB) and cannot see rung 0 at all, so
  there the rule reads rung 0's candidates (nine asks in ten were repeats once it read rung 1).
* **Conditional parameters.** A trial has only the parameters of the stages its layout has
  (:meth:`Space.suggest`); TPE runs with ``group=True``, Optuna's route for such spaces.
  Optuna's GP has no conditional parameters: it models the ones every trial has (the stage
  count and the first stage) and draws the others at random.
"""

from __future__ import annotations

import random
import warnings
import zlib

import optuna
from optuna.samplers import BaseSampler
from optuna.trial import TrialState

from .asha import model_rung, rung_of
from .budget import Budgets, over_budget
from .feasible import BudgetTooTight, LayoutDraws
from .space import Space
from .vocabulary import PROMOTED_FROM

STARTUP_TRAININGS = 10  # TPE's and GP's uniform feasible start-up, in trainings
NSGA2_POPULATION = 20
TRAINED_STATUSES = ("completed", "pruned")  # a searched trial that trained (what the start-up counts)
UNSEEN_TRIES = 50  # uniform draws tried for a layout not yet trained, after the model proposed a repeat
COMPLETION_TRIES = 200  # random completions of a GP proposal tried for one within the budgets
SAMPLED_BY = "sampled_by"  # a trial's user attribute: "uniform" (a feasible draw) or the model's name


def make_sampler(
    name: str, seed: int, n_objectives: int, *, space: Space | None = None, budgets: Budgets | None = None
) -> BaseSampler:
    """The samplers, configured explicitly (Optuna's defaults changed between versions). Without a
    ``space`` (a study opened only to read it) the plain Optuna sampler."""
    with warnings.catch_warnings():  # group=True and constant_liar are "experimental" in Optuna 5
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "tpe":
            # multivariate: the stage parameters interact (depth against width); group: a trial has
            # only its own stages' parameters. constant_liar: a running trial counts as a bad one,
            # so parallel workers do not all pick the same point.
            model = optuna.samplers.TPESampler(
                seed=seed, n_startup_trials=0, multivariate=True, group=True, constant_liar=True
            )
            startup = STARTUP_TRAININGS
        elif name == "nsga2":
            # its first generation: uniform feasible draws (a population of trainings, not of asks)
            model = optuna.samplers.NSGAIISampler(seed=seed, population_size=NSGA2_POPULATION)
            startup = NSGA2_POPULATION
        elif name == "gp":
            model = optuna.samplers.GPSampler(seed=seed, n_startup_trials=0)
            startup = STARTUP_TRAININGS
        else:
            model, startup = None, None
    if space is None:
        return model or optuna.samplers.RandomSampler(seed=seed)
    return FeasibleStartSampler(
        space, budgets or Budgets(), model, startup=startup, seed=seed, hide_rejected=name == "gp"
    )


def searched_trainings(trials, exclude_number: int | None = None) -> int:
    """Searched trials that trained or are training: what the start-up counts (new candidates:
    with --fidelity asha, the trainings of rung 0)."""
    n = 0
    for t in trials:
        if t.number == exclude_number or t.user_attrs.get("baseline") or "baseline_layout" in t.user_attrs:
            continue
        if t.user_attrs.get("duplicate_of") is not None or t.user_attrs.get(PROMOTED_FROM) is not None:
            continue  # a repeat, or a promotion (--fidelity asha): not a new candidate
        if t.state == TrialState.RUNNING or t.user_attrs.get("status") in TRAINED_STATUSES:
            n += 1
    return n


class FeasibleStartSampler(BaseSampler):
    """Uniform feasible draws for the start-up (or always, for random search), then ``model``."""

    def __init__(
        self,
        space: Space,
        budgets: Budgets,
        model: BaseSampler | None,
        *,
        startup: int | None,
        seed: int = 0,
        hide_rejected: bool = False,
    ):
        self.space, self.budgets, self.model = space, budgets, model
        self.startup, self.seed, self.hide_rejected = startup, seed, hide_rejected
        self._draws: LayoutDraws | None = None
        self._fixed: dict[int, dict] = {}  # trial id -> the drawn layout's parameters

    @property
    def draws(self) -> LayoutDraws:
        if self._draws is None:
            self._draws = LayoutDraws(self.space)
        return self._draws

    # -- which trials are draws
    def _in_startup(self, study, trial) -> bool:
        if trial.system_attrs.get("fixed_params"):  # an enqueued baseline: its own parameters
            return False
        if self.model is None:
            return True
        trials = study._get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING), use_cache=False
        )
        return searched_trainings(trials, exclude_number=trial.number) < self.startup

    def draw_params(self, number: int, avoid: set[str] = frozenset()) -> dict:
        """The parameters of trial ``number``'s uniform feasible draw (the same for the same seed);
        with ``avoid``, a few draws are tried for a layout not in it (then any)."""
        for attempt in range(UNSEEN_TRIES if avoid else 1):
            rng = random.Random(f"{self.seed}:{number}" + (f":unseen{attempt}" if avoid else ""))
            try:
                layout = self.draws.draw_feasible(rng, self.budgets)
            except BudgetTooTight:
                return {}  # leave it to the model (or Optuna's random draw): the trial is judged as usual
            if str(layout) not in avoid:
                break
        return self.space.params_of(layout)

    def _after_model_repeat(self, study, trial) -> set[str] | None:
        """Whether the last new candidate (at rung 0 with --fidelity asha; not a promotion, not a
        baseline) was the model's proposal of a layout already trained (then the layouts of the
        new candidates so far, else None): see the module's "After a model's repeat"."""
        if self.model is None or trial.system_attrs.get("fixed_params"):
            return None
        trials = study._get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED), use_cache=False)
        new = [
            t
            for t in trials
            if rung_of(t) in (0, None) and t.user_attrs.get(PROMOTED_FROM) is None and not t.user_attrs.get("baseline")
        ]
        if not new:
            return None
        last = max(new, key=lambda t: t.number)
        if last.user_attrs.get("duplicate_of") is None or last.user_attrs.get(SAMPLED_BY) in (None, "uniform"):
            return None
        return {t.user_attrs.get("target_layout") for t in new}

    def before_trial(self, study, trial) -> None:
        if self._in_startup(study, trial):
            self._fixed[trial._trial_id] = self.draw_params(trial.number)
            study._storage.set_trial_user_attr(trial._trial_id, SAMPLED_BY, "uniform")
        elif (seen := self._after_model_repeat(study, trial)) is not None:
            self._fixed[trial._trial_id] = self.draw_params(trial.number, avoid=seen)
            study._storage.set_trial_user_attr(trial._trial_id, SAMPLED_BY, "uniform")
        elif self.model is not None:
            self.model.before_trial(self._view(study), trial)
            if trial.system_attrs.get("fixed_params"):
                return
            name = type(self.model).__name__
            if self.hide_rejected:  # GP: its proposal, completed into a feasible layout
                params, name = self._feasible_completion(study, trial)
                self._fixed[trial._trial_id] = params
            study._storage.set_trial_user_attr(trial._trial_id, SAMPLED_BY, name)

    def _feasible_completion(self, study, trial) -> tuple[dict, str]:
        view = self._view(study)
        relative = self.model.sample_relative(view, trial, self.model.infer_relative_search_space(view, trial))
        rng = random.Random(f"{self.seed}:{trial.number}:complete")
        name = type(self.model).__name__
        # the whole proposal, then only its first stage and stage count, then only the stage count
        kept = [
            (relative, name),
            (
                {k: v for k, v in relative.items() if k == "n_stages" or k.startswith("stage0_")},
                f"{name} (first stage)",
            ),
            ({k: v for k, v in relative.items() if k == "n_stages"}, f"{name} (stage count)"),
        ]
        for fixed, label in kept:
            for _ in range(COMPLETION_TRIES // len(kept)):
                point = _Completion(fixed, rng)
                layout, violations = self.space.suggest(point, check=False)
                if not violations and not over_budget(self.budgets.judge(layout)[1]):
                    return point.params, label
        return self.draw_params(trial.number), "uniform"

    # -- sampling
    def infer_relative_search_space(self, study, trial):
        if trial._trial_id in self._fixed or self.model is None:
            return {}
        return self.model.infer_relative_search_space(self._view(study), trial)

    def sample_relative(self, study, trial, search_space):
        if trial._trial_id in self._fixed or self.model is None or not search_space:
            return {}
        return self.model.sample_relative(self._view(study), trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        fixed = self._fixed.get(trial._trial_id)
        if fixed is not None and param_name in fixed:
            return fixed[param_name]
        if self.model is None or fixed is not None:
            seed = zlib.crc32(f"{self.seed}:{trial.number}:{param_name}".encode())
            return optuna.samplers.RandomSampler(seed=seed).sample_independent(
                study, trial, param_name, param_distribution
            )
        return self.model.sample_independent(self._view(study), trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        drawn = self._fixed.pop(trial._trial_id, None)
        if self.model is not None and drawn is None:
            self.model.after_trial(self._view(study), trial, state, values)

    def reseed_rng(self) -> None:
        if self.model is not None:
            self.model.reseed_rng()

    def _view(self, study):
        return _ModelView(study, self.hide_rejected, self.startup or 0)


class _Completion:
    """A stand-in for a trial: the model's values where it has them, random ones elsewhere."""

    def __init__(self, fixed: dict, rng: random.Random):
        self.fixed, self.rng, self.params = fixed, rng, {}

    def suggest_int(self, name, low, high, step=1):
        value = self.fixed.get(name, low + step * self.rng.randrange((high - low) // step + 1))
        self.params[name] = value
        return value

    def suggest_categorical(self, name, choices):
        value = self.fixed[name] if name in self.fixed else choices[self.rng.randrange(len(choices))]
        self.params[name] = value
        return value


class _ModelView:
    """The study as the model sampler sees it: trials it must not learn from left out. With
    ``--fidelity asha`` (trials with a ``rung``), as BOHB: the finished trials of one rung only
    (:func:`.asha.model_rung`: the highest with ``startup`` completed trainings, else rung 0), so
    a value at one fidelity is never compared with one at another (candidates rejected by a budget
    are shown at every rung: they are costs, not values); of the running trials (the constant
    liar's), only new candidates (promotions are not sampled: their parameters are fixed)."""

    def __init__(self, study, hide_rejected: bool, startup: int = 0):
        self._study, self._hide_rejected, self._startup = study, hide_rejected, startup
        self._rung_read, self._rung = False, None

    def __getattr__(self, name):
        return getattr(self._study, name)

    @property
    def rung(self) -> int | None:
        """The rung the model learns from (None: no asha, every rung)."""
        if not self._rung_read:
            self._rung = model_rung(self._study.get_trials(deepcopy=False), self._startup)
            self._rung_read = True
        return self._rung

    def _shown(self, t) -> bool:
        if t.state.is_finished() and not t.params:
            return False  # a baseline outside the space
        if t.user_attrs.get("status") == "rejected":
            # over a budget: a cost, the same at every rung. Shown whatever the model's rung, or
            # TPE, once it reads rung 1, proposes the same rejected layout again and again
            return not self._hide_rejected
        if self.rung is not None:
            rung = rung_of(t)
            if t.state.is_finished() and rung != self.rung:
                return False
            if not t.state.is_finished() and rung not in (None, 0):
                return False
        return not (self._hide_rejected and t.user_attrs.get("status") == "rejected")

    def _get_trials(self, *args, **kwargs):
        return [t for t in self._study._get_trials(*args, **kwargs) if self._shown(t)]

    def get_trials(self, *args, **kwargs):
        return [t for t in self._study.get_trials(*args, **kwargs) if self._shown(t)]

    @property
    def trials(self):
        return self.get_trials()


__all__ = ["make_sampler", "FeasibleStartSampler", "searched_trainings", "STARTUP_TRAININGS", "SAMPLED_BY"]
