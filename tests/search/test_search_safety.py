"""A study owns its files and nothing else: its folder is never another study's, names cannot
leave the study root, the same command twice does not train twice, `report` never writes,
passwords never print, and worker processes are bounded (issue 27)."""

import json
import os
import select
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

import funnelbench as fb
from funnelbench.cli import app
from funnelbench.errors import UsageError

REPO = str(Path(__file__).resolve().parents[2])
PROXY = dict(epochs=1, train_per_class=8, val_per_class=4, batch_size=16, threads=1)  # a real training, under a second
PROXY_ARGS = ["--epochs", "1", "--train-per-class", "8", "--val-per-class", "4", "--batch-size", "16", "--threads", "1"]
COST_ONLY = ["--objective", "macs", "--pruner", "none"]  # a search that trains nothing: seconds


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_line_error(result, *needles):
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.stderr, result.stderr


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- a study's folder is its own


@pytest.fixture
def first_study():
    """A finished study ``ok1`` on the default storage, with one trained trial folder."""
    fb.search("tiny", study="ok1", trials=1, **PROXY)
    folder = Path("runs/search/ok1")
    assert (folder / "trial-0" / "record.json").is_file()
    return folder, {k: v for k, v in snapshot(folder).items() if k.startswith("trial-")}


def test_a_study_of_the_same_name_in_another_storage_is_refused_before_it_writes(first_study, tmp_path):
    folder, trials = first_study
    elsewhere = tmp_path / "elsewhere.db"
    one_line_error(
        run(
            "search",
            "--space",
            "tiny",
            "--study",
            "ok1",
            "--trials",
            "1",
            "--storage",
            f"sqlite:///{elsewhere}",
            *PROXY_ARGS,
        ),
        "runs/search/ok1 belongs to study 'ok1'",
        "choose another --study",
    )
    assert not elsewhere.exists()  # refused before its storage was made
    # a SQLite file that already holds a study of that name (another folder's): refused once it is read
    fb.search(
        "tiny",
        study="ok1",
        trials=1,
        root="other",
        objectives=("macs",),
        pruner="none",
        storage=f"sqlite:///{elsewhere}",
    )
    with pytest.raises(UsageError, match="belongs to study 'ok1'"):
        fb.search("tiny", study="ok1", trials=1, storage=f"sqlite:///{elsewhere}", objectives=("macs",), pruner="none")
    assert {k: v for k, v in snapshot(folder).items() if k.startswith("trial-")} == trials


def test_a_journal_study_and_a_sqlite_study_never_share_a_folder(first_study):
    folder, trials = first_study
    journal = folder / "journal.log"
    with pytest.raises(UsageError, match="belongs to study 'ok1'"):
        fb.search("tiny", study="ok1", trials=2, storage=f"journal:{journal}", **PROXY)
    assert not journal.exists()
    # and the other way round: a journal study's folder takes no SQLite study
    fb.search(
        "tiny",
        study="j1",
        trials=1,
        workers=1,
        storage=f"journal:{Path('runs/search/j1/journal.log').resolve()}",
        objectives=("macs",),
        pruner="none",
    )
    with pytest.raises(UsageError, match="belongs to study 'j1'"):
        fb.search(
            "tiny",
            study="j1",
            trials=1,
            storage="sqlite:///runs/search/j1/study.db",
            objectives=("macs",),
            pruner="none",
        )
    assert not Path("runs/search/j1/study.db").exists()
    assert {k: v for k, v in snapshot(folder).items() if k.startswith("trial-")} == trials


def test_trial_folders_whose_study_is_gone_are_not_overwritten(first_study):
    folder, trials = first_study
    (folder / "study.db").unlink()
    one_line_error(
        run("search", "--space", "tiny", "--study", "ok1", "--trials", "1", *PROXY_ARGS),
        "runs/search/ok1 belongs to study 'ok1'",
        "choose another --study",
    )
    (folder / "owner.json").unlink()  # a folder from before owner files: its trial folders still count
    one_line_error(
        run("search", "--space", "tiny", "--study", "ok1", "--trials", "1", *PROXY_ARGS),
        "runs/search/ok1 holds trial folders (trial-0)",
        "choose another --study",
    )
    assert not (folder / "study.db").exists()
    assert {k: v for k, v in snapshot(folder).items() if k.startswith("trial-")} == trials


def test_the_same_study_continues_in_its_own_folder(first_study):
    """Continuing is not refused: the folder is the study's own (also for a study from before
    owner files, which claims its folder when it is continued)."""
    folder, _ = first_study
    assert fb.search("tiny", study="ok1", trials=2, **PROXY).user_attrs["uid"]
    # a study from before owner files: no uid, no owner.json
    with sqlite3.connect(folder / "study.db") as db:
        db.execute("DELETE FROM study_user_attributes WHERE key = 'uid'")
    db.close()
    (folder / "owner.json").unlink()
    study = fb.search("tiny", study="ok1", trials=3, **PROXY)
    assert json.loads((folder / "owner.json").read_text())["uid"] == study.user_attrs["uid"]
    assert sum(1 for t in study.trials if t.user_attrs.get("run_dir")) >= 3


def test_a_study_on_another_postgres_database_is_refused(postgres_url, tmp_path):
    """The same name in two storages that cannot be told apart by a path: told apart by the study's
    identity (its ``uid`` attribute, written into the folder's owner.json)."""
    import uuid

    name = f"same-{uuid.uuid4().hex[:10]}"
    fb.search("tiny", study=name, trials=1, objectives=("macs",), pruner="none")
    with pytest.raises(UsageError, match=f"runs/search/{name} belongs to study '{name}' in sqlite:"):
        fb.search("tiny", study=name, trials=1, objectives=("macs",), pruner="none", storage=postgres_url)
    # nothing was created there either
    assert name not in optuna.study.get_all_study_names(postgres_url)


# ----------------------------------------------------------------------------- the same command twice

HOLD = """
import sys, time, importlib
import funnelbench as fb
trainer = importlib.import_module("funnelbench.train")
def train(*a, callback=None, **k):
    print("training", flush=True)
    time.sleep(60)
trainer.train = train
fb.search("tiny", study="twice", trials=2, epochs=1, train_per_class=8, val_per_class=4)
"""


def test_the_same_command_twice_on_a_sqlite_study_is_refused():
    """Two terminals (or a cron overlap) on the default SQLite study: the second command is
    refused while the first runs, so no layout is trained twice."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": REPO},
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        assert ready and proc.stdout.readline().strip() == "training", proc.poll()
        result = run(
            "search",
            "--space",
            "tiny",
            "--study",
            "twice",
            "--trials",
            "2",
            "--epochs",
            "1",
            "--train-per-class",
            "8",
            "--val-per-class",
            "4",
        )
        one_line_error(
            result, "study 'twice' is being searched by another process", f":{proc.pid})", "SQLite serves one process"
        )
        study = optuna.load_study(study_name="twice", storage="sqlite:///runs/search/twice/study.db")
        assert [t.state.name for t in study.trials if t.state.name != "WAITING"] == ["RUNNING"]
    finally:
        proc.kill()
        proc.wait()


# ----------------------------------------------------------------------------- duplicate baselines


def test_a_baseline_listed_twice_in_a_space_file_is_trained_once(tmp_path):
    spec = Path(REPO, "spaces", "tiny.yaml").read_text()
    first = str(fb.load_space("tiny").baselines[0])
    path = tmp_path / "twice.yaml"
    path.write_text(spec.replace("baselines:", f'baselines:\n  - "{first}"', 1))
    assert len(fb.load_space(str(path)).baselines) == len(fb.load_space("tiny").baselines)
    study = fb.search(str(path), study="twice-b", trials=4, objectives=("macs",), pruner="none")
    baselines = [t.user_attrs["target_layout"] for t in study.trials if t.user_attrs.get("baseline")]
    assert sorted(baselines) == sorted(str(b) for b in fb.load_space("tiny").baselines)


# ----------------------------------------------------------------------------- names


@pytest.mark.parametrize("name", ["../../escape", "{tmp}/absolute", ".", "..", "a\nb", "a/b", "x" * 101, "a b"])
def test_a_study_name_that_is_not_a_folder_name_is_refused(tmp_path, monkeypatch, name):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    result = run("search", "--space", "tiny", "--study", name.format(tmp=tmp_path), "--trials", "1", *COST_ONLY)
    one_line_error(result, "--study", "only letters, digits, '.', '_' and '-'")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == [Path("work")]


def test_a_space_name_that_is_not_a_folder_name_is_refused(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    space = tmp_path / "evil.yaml"
    space.write_text(Path(REPO, "spaces", "tiny.yaml").read_text().replace("name: tiny", "name: ../../x", 1))
    one_line_error(run("search", "--space", space, "--trials", "1", *COST_ONLY), "space name", "'../../x'")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["evil.yaml", "work"]
    # a safe name is fine, and its study lives under runs/search
    study = fb.search("tiny", study="ok.1_a-b", trials=1, objectives=("macs",), pruner="none")
    assert Path("runs/search/ok.1_a-b/study.db").is_file() and study.study_name == "ok.1_a-b"


# ----------------------------------------------------------------------------- report only reads


def funnelbench_study(url: str, name: str) -> None:
    """A small study as funnelbench search writes it (no WAL: the file's bytes are all there is)."""
    study = optuna.create_study(study_name=name, storage=url)
    study.set_user_attr("funnelbench", "search/1")
    study.set_user_attr("settings", {"objectives": ["top1"], "directions": ["maximize"]})
    trial = study.ask()
    trial.set_user_attr("status", "completed")
    trial.set_user_attr("target_layout", "B2(17), h64, a2, img32, patch8")
    study.tell(trial, 50.0)


@pytest.mark.parametrize("name", ["q?z.db", "a%41b.db", "h#x.db"])
def test_report_reads_a_study_whose_path_holds_uri_characters_and_writes_nothing(tmp_path, name):
    from sqlalchemy.engine import URL

    folder = tmp_path / "store"
    folder.mkdir()
    path = folder / name
    funnelbench_study(URL.create("sqlite", database=str(path)).render_as_string(), "qz")
    assert sorted(p.name for p in folder.iterdir()) == [name]
    before = snapshot(folder)
    for storage in (str(path), f"sqlite:///{path}"):
        result = run("report", "--study", "qz", "--storage", storage, "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["counts"]["trials"] == 1
        assert snapshot(folder) == before


def test_report_never_writes_an_empty_file_or_another_programs_database(tmp_path):
    folder = tmp_path / "store"
    folder.mkdir()
    (folder / "empty#1.db").write_bytes(b"")
    with sqlite3.connect(folder / "other 100%.db") as other:
        other.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
        other.execute("INSERT INTO notes (text) VALUES ('mine')")
    other.close()
    before = snapshot(folder)
    for name in ("empty#1.db", "other 100%.db", "q?z.db"):
        if name == "q?z.db":
            (folder / "empty#1.db").rename(folder / name)
            before = snapshot(folder)
        for storage in (str(folder / name), f"sqlite:///{folder / name}"):
            result = run("report", "--study", "x", "--storage", storage)
            one_line_error(result, name)
            assert snapshot(folder) == before, storage
    with sqlite3.connect(folder / "other 100%.db") as other:
        assert [r[0] for r in other.execute("SELECT name FROM sqlite_master WHERE type='table'")] == ["notes"]
    other.close()


# ----------------------------------------------------------------------------- passwords

PLANTED = "Pl4nted-s3cret"


@pytest.fixture
def planted_url(postgres_url, monkeypatch):
    """The test database's URL with a planted password; the real one is put back only where the
    driver connects, so everything funnelbench does sees the planted one."""
    import sqlalchemy
    from sqlalchemy import event

    real = sqlalchemy.make_url(postgres_url)

    def connect(dialect, conn_rec, cargs, cparams):
        if cparams.get("password") == PLANTED:
            cparams["password"] = real.password

    event.listen(sqlalchemy.engine.Engine, "do_connect", connect)
    yield real.set(password=PLANTED).render_as_string(hide_password=False)
    event.remove(sqlalchemy.engine.Engine, "do_connect", connect)


def test_no_command_prints_or_records_a_password(planted_url, tmp_path):
    import uuid

    name = f"pw-{uuid.uuid4().hex[:10]}"
    unreachable = f"postgresql://funnelbench:{PLANTED}@127.0.0.1:1/nothing"
    malformed = f"postgresql://funnelbench:{PLANTED}@localhost:notaport/db"
    outputs = []
    for args in (
        ["search", "--space", "tiny", "--study", name, "--trials", "2", *COST_ONLY, "--storage", planted_url],
        ["search", "--space", "tiny", "--study", name, "--trials", "3", *COST_ONLY, "--storage", planted_url, "--json"],
        ["report", "--study", name, "--storage", planted_url, "--export", tmp_path / "r.csv"],
        ["report", "--study", name, "--storage", planted_url, "--json", "--export", tmp_path / "r.json"],
        ["report", "--study", "nope", "--storage", planted_url],
        ["search", "--space", "tiny", "--study", name, "--trials", "3", "--storage", planted_url],  # other settings
        ["search", "--space", "tiny", "--trials", "1", *COST_ONLY, "--storage", unreachable],
        ["report", "--study", name, "--storage", unreachable],
        ["report", "--study", name, "--storage", unreachable, "--json"],
        ["search", "--space", "tiny", "--trials", "1", *COST_ONLY, "--storage", malformed],
        ["report", "--study", name, "--storage", malformed],
    ):
        result = run(*args)
        outputs.append((args[0], result.exit_code, result.output))
    assert [code for _, code, _ in outputs] == [0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2], outputs
    for command, _, text in outputs:
        assert PLANTED not in text, (command, text)
        assert "Traceback" not in text
    assert "funnelbench:***@" in outputs[0][2] and "funnelbench:***@" in outputs[2][2]
    files = [tmp_path / "r.csv", tmp_path / "r.json", *Path("runs").rglob("*")]
    assert all(PLANTED not in p.read_text(errors="replace") for p in files if p.is_file())
    study = optuna.load_study(study_name=name, storage=planted_url)
    assert PLANTED not in json.dumps(study.user_attrs) + json.dumps([t.user_attrs for t in study.trials])
    optuna.delete_study(study_name=name, storage=planted_url)


# ----------------------------------------------------------------------------- worker processes


def test_more_workers_than_cores_are_refused(monkeypatch):
    from funnelbench.search import workers

    monkeypatch.setattr(workers, "cpu_cores", lambda: 2)
    monkeypatch.setattr(workers, "gpu_ids", lambda: [])
    one_line_error(
        run("search", "--space", "tiny", "--trials", "8", "--workers", "3", *COST_ONLY),
        "--workers 3: this machine has 2 CPU core(s) and no GPU",
        "use --workers 2 or fewer",
    )
    assert not Path("runs").exists()
    # one worker per GPU is the rule where there are more GPUs than cores
    monkeypatch.setattr(workers, "gpu_ids", lambda: ["0", "1", "2", "3"])
    workers.check_workers(4)
    with pytest.raises(UsageError, match="2 CPU core\\(s\\) and 4 GPU\\(s\\).*use --workers 4 or fewer"):
        workers.check_workers(5)


def test_no_more_workers_than_trials_left_are_started(monkeypatch):
    from funnelbench.search import workers

    started = []
    monkeypatch.setattr(workers, "cpu_cores", lambda: 8)
    monkeypatch.setattr(workers, "run_workers", lambda n, target, kwargs: started.append(n) or [])
    events = []
    fb.search(
        "tiny",
        study="few",
        trials=2,
        workers=4,
        objectives=("macs",),
        pruner="none",
        on_event=lambda kind, info: events.append((kind, info)),
    )
    assert started == [2]
    start = dict(events)["start"]
    assert start["workers"] == 2 and start["workers_asked"] == 4
