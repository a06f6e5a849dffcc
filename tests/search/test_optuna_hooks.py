"""Every private Optuna name funnelbench relies on, one test each, so an Optuna upgrade fails here
instead of in a user's study. The tested release is pinned in constraints.txt; when one of these
fails after an upgrade, fix the one place that uses the name (named in each test) and re-pin.

    grep -rnoE "\\._[a-z_]+" funnelbench/search   # the uses
"""

import importlib.metadata
import json

import optuna
from optuna.trial import TrialState

from funnelbench.search import samplers as samplers_mod


def test_the_pinned_optuna_is_the_one_installed():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "constraints.txt").read_text()
    pins = dict(line.strip().split("==") for line in text.splitlines() if "==" in line and not line.startswith("#"))
    assert importlib.metadata.version("optuna") == pins["optuna"]


def test_study_storage_trial_id_and_study_id():
    """study._storage, trial._trial_id, study._study_id (study.py finished_trial, workers.py)."""
    study = optuna.create_study()
    trial = study.ask()
    study._storage.set_trial_user_attr(trial._trial_id, "k", 1)
    tid = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, trial.number)
    assert tid == trial._trial_id and study._storage.get_trial(tid).user_attrs == {"k": 1}


def test_study_get_trials_takes_deepcopy_states_and_use_cache():
    """study._get_trials(deepcopy=, states=, use_cache=): what TPE and GP call, and what
    samplers._ModelView filters."""
    study = optuna.create_study()
    study.tell(study.ask(), 1.0)
    trials = study._get_trials(deepcopy=False, states=(TrialState.COMPLETE,), use_cache=True)
    assert [t.value for t in trials] == [1.0]


def test_tpe_and_gp_read_the_trials_through_study_get_trials(monkeypatch):
    """The model samplers must see the study only through _get_trials/get_trials, which the view
    filters: a hidden trial must not reach them."""
    study = optuna.create_study()
    for v in (1.0, 2.0, 3.0, 4.0):
        t = study.ask()
        t.suggest_float("x", 0, 1)
        study.tell(t, v)
    view = samplers_mod._ModelView(study, hide_rejected=False)
    seen = []
    real = study._get_trials

    def spy(*a, **k):
        out = real(*a, **k)
        seen.append(len(out))
        return out

    monkeypatch.setattr(study, "_get_trials", spy)
    tpe = optuna.samplers.TPESampler(seed=0, n_startup_trials=0, multivariate=True, group=True)
    trial = study.ask()
    frozen = study._storage.get_trial(trial._trial_id)
    tpe.sample_relative(view, frozen, tpe.infer_relative_search_space(view, frozen))
    assert seen  # TPE went through _get_trials (so through the view's filter)


def test_enqueued_parameters_are_the_fixed_params_system_attr():
    """study.enqueue_trial stores "fixed_params" (samplers.FeasibleStartSampler skips such trials)."""
    study = optuna.create_study()
    study.enqueue_trial({"x": 1}, user_attrs={"baseline_layout": "B1(17)"})
    trial = study.ask()
    frozen = study._storage.get_trial(trial._trial_id)
    assert frozen.system_attrs["fixed_params"] == {"x": 1} and frozen.user_attrs["baseline_layout"] == "B1(17)"


def test_before_trial_comes_before_the_trials_parameters_are_sampled():
    """FeasibleStartSampler decides a trial's draw in before_trial and serves it from
    sample_independent: Optuna must call them in that order, with a FrozenTrial carrying _trial_id."""
    calls = []

    class Spy(optuna.samplers.RandomSampler):
        def before_trial(self, study, trial):
            calls.append(("before", trial._trial_id))

        def sample_independent(self, study, trial, name, dist):
            calls.append(("sample", trial._trial_id))
            return super().sample_independent(study, trial, name, dist)

    study = optuna.create_study(sampler=Spy(seed=0))
    trial = study.ask()
    trial.suggest_int("x", 0, 3)
    assert calls == [("before", trial._trial_id), ("sample", trial._trial_id)]


def test_cached_storage_wraps_its_backend():
    """optuna.storages._cached_storage._CachedStorage and its _backend (workers._unwrap)."""
    from optuna.storages._cached_storage import _CachedStorage

    storage = optuna.storages.get_storage("sqlite:///:memory:")
    assert isinstance(storage, _CachedStorage) and isinstance(storage._backend, optuna.storages.RDBStorage)


def test_heartbeat_base_and_stale_trial_ids(tmp_path):
    """optuna.storages._heartbeat.BaseHeartbeat, is_heartbeat_enabled and _get_stale_trial_ids
    (workers.JournalHeartbeatStorage, fail_stale_trials)."""
    from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'h.db'}", heartbeat_interval=1, grace_period=1)
    assert isinstance(storage, BaseHeartbeat) and is_heartbeat_enabled(storage)
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    storage.record_heartbeat(trial._trial_id)
    assert storage._get_stale_trial_ids(study._study_id) == []
    assert storage.get_heartbeat_interval() == 1


def test_the_retry_callback_copies_the_dead_trials_system_attrs():
    """RetryHeartbeatStaleTrialCallback enqueues the dead trial's parameters, and its system attrs
    (constraints included): run_trial skips constraint keys a retry already carries."""
    study = optuna.create_study()
    trial = study.ask()
    trial.suggest_int("x", 0, 3)
    trial.set_constraint("macs", -0.5)
    study.tell(trial, state=TrialState.FAIL)
    optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)(study, study.trials[0])
    retry = study.ask()
    assert retry.constraints == {"macs": -0.5} and retry.suggest_int("x", 0, 3) == study.trials[0].params["x"]


def test_hyperband_keeps_its_resources_in_private_fields():
    """HyperbandPruner._min_resource / _max_resource (tests of make_pruner read them)."""
    pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=9, reduction_factor=3)
    assert (pruner._min_resource, pruner._max_resource) == (1, 9)


def test_tpe_and_gp_share_their_proposals_through_relative_params_system_attrs():
    """Both write the relative proposal into the trial's system attrs (constant liar); the search
    does not read them, but relies on sample_relative being callable once in before_trial."""
    study = optuna.create_study()
    for v in range(3):
        t = study.ask()
        t.suggest_int("x", 0, 9)
        study.tell(t, float(v))
    gp = optuna.samplers.GPSampler(seed=0, n_startup_trials=0)
    trial = study.ask()
    frozen = study._storage.get_trial(trial._trial_id)
    params = gp.sample_relative(study, frozen, gp.infer_relative_search_space(study, frozen))
    assert set(params) == {"x"}
    stored = study._storage.get_trial(trial._trial_id).system_attrs
    assert any(k.startswith("gp:relative_params") or "relative_params" in k for k in stored), stored
    json.dumps(params)
