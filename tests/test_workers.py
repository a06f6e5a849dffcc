"""Many workers on one study: PostgreSQL (CI starts a real server, .ci/run) and the journal file.

Tests that need PostgreSQL read its URL from FUNNELBENCH_TEST_POSTGRES_URL. Without it they are
skipped locally, but fail where FUNNELBENCH_REQUIRE_POSTGRES is set (CI sets it): a CI run never
passes by skipping them."""

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest

from funnelbench.errors import UsageError
from funnelbench.search.workers import (JOURNAL_FILE, StorageError, open_storage, retried_from,
                                        storage_url)

REPO = str(Path(__file__).resolve().parents[1])


@pytest.fixture
def postgres_url():
    url = os.environ.get("FUNNELBENCH_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("FUNNELBENCH_REQUIRE_POSTGRES"):
            pytest.fail("FUNNELBENCH_REQUIRE_POSTGRES is set but FUNNELBENCH_TEST_POSTGRES_URL is not: "
                        "PostgreSQL did not start (see .ci/postgres.sh)")
        pytest.skip("no PostgreSQL: set FUNNELBENCH_TEST_POSTGRES_URL (.ci/postgres.sh prints one)")
    return url


def _study_name(prefix):
    """A fresh study name: tests share one database, never one study."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def test_postgres_storage_round_trip(postgres_url):
    """The driver the postgres extra declares is the one Optuna's SQLAlchemy loads for postgresql://."""
    name = _study_name("roundtrip")
    study = optuna.create_study(study_name=name, storage=postgres_url)
    study.set_user_attr("funnelbench", "search/1")
    study.tell(study.ask({"x": optuna.distributions.IntDistribution(0, 3)}), 1.0)
    again = optuna.load_study(study_name=name, storage=postgres_url)
    assert again.user_attrs["funnelbench"] == "search/1"
    assert [t.state for t in again.trials] == [optuna.trial.TrialState.COMPLETE]
    optuna.delete_study(study_name=name, storage=postgres_url)


# ----------------------------------------------------------------------------- storages


def test_default_storage_follows_the_worker_count_and_the_study_folder(tmp_path):
    out = tmp_path / "s"
    assert storage_url(None, out=out, workers=1) == f"sqlite:///{out / 'study.db'}"
    assert storage_url(None, out=out, workers=2) == f"journal:{out / JOURNAL_FILE}"
    # a study started with several workers continues in its journal with one, and the other way round
    out.mkdir()
    (out / JOURNAL_FILE).touch()
    assert storage_url(None, out=out, workers=1) == f"journal:{out / JOURNAL_FILE}"
    (out / JOURNAL_FILE).unlink()
    (out / "study.db").touch()
    with pytest.raises(UsageError, match=r"--workers 2: this study is stored in SQLite.*database is locked"):
        storage_url(None, out=out, workers=2)
    with pytest.raises(UsageError, match=r"--workers 3: --storage is SQLite") as err:
        storage_url("sqlite:///elsewhere.db", out=out, workers=3)
    assert "\n" not in str(err.value)
    assert storage_url("postgresql://u:p@h/db", out=out, workers=8) == "postgresql://u:p@h/db"


@pytest.mark.parametrize("url, says", [
    ("postgresql://funnelbench:secret@127.0.0.1:1/nothing", "Connection refused"),
    ("journal:{file}/journal.log", "File exists"),
    ("sqlite:///{file}/study.db", "unable to open database file"),
])
def test_storage_trouble_is_one_line(tmp_path, url, says):
    """PostgreSQL unreachable, a journal or SQLite folder that cannot be made: a one-line
    StorageError that names the storage (never its password)."""
    (tmp_path / "file").write_text("a file where a folder should be")
    with pytest.raises(StorageError) as err:
        open_storage(url.format(file=tmp_path / "file"))
    message = str(err.value)
    assert says in message and "\n" not in message and "secret" not in message
    assert message.startswith("storage ")


# ----------------------------------------------------------------------------- the worker loop
# A search loop without training: each trial "trains" by sleeping, so these tests time what the
# workers do (the count, heartbeats, kills, signals) and nothing else.

FAKE_LOOP = '''
import os, sys, time, types, optuna
# Import workers.py without the package's __init__ (torch): a second instead of several per process.
package = types.ModuleType("funnelbench")
package.__path__ = [os.path.join(os.environ["PYTHONPATH"], "funnelbench")]
sys.modules["funnelbench"] = package
from funnelbench.search import workers as W
url, name, n, sleep_s = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.create_study(study_name=name, storage=W.open_storage(url, heartbeat_s=1), load_if_exists=True)
trained = lambda t: t.user_attrs.get("status") == "completed"
with W.signals_interrupt(), W.Worker(study, trials=n, trained=trained, poll_s=0.2) as worker:
    for trial in worker:
        x = trial.suggest_int("x", 0, 10**9)
        print("trial", trial.number, flush=True)
        try:
            time.sleep(sleep_s)
        except W.Interrupted:
            trial.set_user_attr("status", "interrupted")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        trial.set_user_attr("status", "completed")
        study.tell(trial, x)
'''


def _fake_workers(tmp_path, url, name, n, sleep_s, count=2):
    script = tmp_path / "fake_loop.py"
    script.write_text(FAKE_LOOP)
    env = {**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"}
    procs = []
    for i in range(count):
        log = open(tmp_path / f"worker{i}.log", "w+")
        procs.append((subprocess.Popen([sys.executable, str(script), url, name, str(n), str(sleep_s)],
                                       stdout=log, stderr=subprocess.STDOUT, env=env), log))
    return procs


def _wait(procs, timeout=60):
    codes = [p.wait(timeout=timeout) for p, _ in procs]
    logs = []
    for _, log in procs:
        log.seek(0)
        logs.append(log.read())
        log.close()
    return codes, logs


def _until_running(log_path, timeout=30):
    end = time.monotonic() + timeout
    while "trial" not in log_path.read_text():
        assert time.monotonic() < end, log_path.read_text()
        time.sleep(0.05)


@pytest.fixture(params=["journal", "postgres"])
def shared_storage(request, tmp_path):
    if request.param == "postgres":
        return request.getfixturevalue("postgres_url")
    return f"journal:{tmp_path / 'study' / JOURNAL_FILE}"


def test_two_workers_hold_the_count_exactly(tmp_path, shared_storage):
    """--trials N is the study's total over all workers, not N + workers - 1."""
    name = _study_name("count")
    codes, logs = _wait(_fake_workers(tmp_path, shared_storage, name, n=5, sleep_s=0.3))
    assert codes == [0, 0], logs
    trials = optuna.load_study(study_name=name, storage=open_storage(shared_storage)).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 5
    assert sorted(t.number for t in trials) == list(range(5))
    asked = sorted(int(line.split()[1]) for log in logs for line in log.splitlines() if line.startswith("trial"))
    assert asked == list(range(5))  # each trial run by exactly one worker
    assert all("trial" in log for log in logs), logs  # both workers took part


def test_killed_worker_trial_is_failed_and_retried(tmp_path, shared_storage):
    """SIGKILL one of two workers in the middle of a trial: the live worker notices the silent
    heartbeat, records why the trial failed, runs its configuration once more and still ends the
    study with N trained trials."""
    name = _study_name("kill")
    procs = _fake_workers(tmp_path, shared_storage, name, n=4, sleep_s=1.5)
    _until_running(tmp_path / "worker1.log")
    procs[1][0].send_signal(signal.SIGKILL)
    codes, logs = _wait(procs)
    assert codes == [0, -signal.SIGKILL], logs
    trials = optuna.load_study(study_name=name, storage=open_storage(shared_storage)).trials
    killed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(killed) == 1, [(t.number, t.state) for t in trials]
    assert killed[0].user_attrs["status"] == "interrupted"
    assert killed[0].user_attrs["error"].startswith("worker lost: no heartbeat for 3 s")
    retries = [t for t in trials if retried_from(t) is not None]
    assert [(retried_from(t), t.params, t.state) for t in retries] == [
        (killed[0].number, killed[0].params, optuna.trial.TrialState.COMPLETE)]
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) == 4
    assert not any(t.state == optuna.trial.TrialState.RUNNING for t in trials)


def test_sigterm_records_the_trial_interrupted(tmp_path):
    name = _study_name("term")
    url = f"journal:{tmp_path / 'study' / JOURNAL_FILE}"
    procs = _fake_workers(tmp_path, url, name, n=3, sleep_s=30, count=1)
    _until_running(tmp_path / "worker0.log")
    procs[0][0].send_signal(signal.SIGTERM)
    codes, logs = _wait(procs)
    assert codes == [1], logs  # the fake loop lets Interrupted escape (the CLI turns it into 143)
    (trial,) = optuna.load_study(study_name=name, storage=open_storage(url)).trials
    assert (trial.state, trial.user_attrs["status"]) == (optuna.trial.TrialState.FAIL, "interrupted")
