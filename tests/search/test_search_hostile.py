"""Hostile and damaged input to the search, as a careless or hostile user would give it.

Space files that would exhaust the machine (huge ranges, alias bombs, huge files, files that
cannot be read), studies funnelbench did not write or that are damaged (SQLite pages, journal
lines, a worker killed mid-write), and exceptions funnelbench did not expect: each is one line
``error: ...`` with exit code 2 (the user's input) or 1 (funnelbench's fault), never a
traceback, in bounded time and memory, and no trial written before the damage is lost.

Every check that could take the machine down on a regression runs under :func:`bounded`: an
alarm after ``BOUND_S`` seconds and a ceiling on the address space, so a regression fails the
test instead of hanging it or waking the kernel's OOM killer.
"""

import contextlib
import json
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from funnelbench.cli import app
from funnelbench.errors import UsageError
from funnelbench.search import report as rp
from funnelbench.search import space as space_mod
from funnelbench.search import workers
from funnelbench.search.space import LARGEST, MAX_SPACE_BYTES, load_space

BOUND_S = 20  # seconds any refusal may take on a busy 2-core machine (the old code ran past 10 minutes)
BOUND_BYTES = 2 * 2**30  # address space a command may add (the old code was killed for memory)
TINY = (space_mod.spaces_dir() / "tiny.yaml").read_text()
COST_ONLY = ["--space", "tiny", "--objective", "macs", "--pruner", "none"]  # a search that trains nothing


def invoke(*args, env=None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def one_line(result, code: int = 2, *needles: str) -> str:
    """exit ``code``, nothing on stdout, one line ``error: ...`` on stderr containing ``needles``."""
    assert result.exit_code == code, (result.exit_code, result.output, repr(result.exception))
    err = result.stderr
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err.strip()


def _address_space() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmSize")


@contextlib.contextmanager
def bounded(seconds: float = BOUND_S, memory: int = BOUND_BYTES):
    """Within the block: TimeoutError after ``seconds``, MemoryError past ``memory`` more bytes."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    ceiling = _address_space() + memory
    resource.setrlimit(resource.RLIMIT_AS, (ceiling if hard == resource.RLIM_INFINITY else min(ceiling, hard), hard))

    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    before = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def spaces_refuses(path, *needles) -> str:
    """``funnelbench spaces PATH`` refuses in one line, exit 2, within the bounds."""
    started = time.perf_counter()
    with bounded():
        result = invoke("spaces", path)
    err = one_line(result, 2, *needles)
    assert time.perf_counter() - started < BOUND_S
    return err


def tiny_with(old: str, new: str) -> str:
    assert old in TINY
    return TINY.replace(old, new)


# ----------------------------------------------------------------------------- spaces that exhaust the machine


@pytest.mark.parametrize(
    "old, new, key",
    [
        ("layers: [1, 2]", "layers: {min: 1, max: 1000000000}", "stages.layers"),  # was killed for memory (exit 137)
        ("layers: [1, 2]", "layers: {min: 1, max: 100000}", "stages.layers"),  # ran past 10 minutes
        ("count: {min: 1, max: 3}", "count: {min: 1, max: 1000000000}", "stages.count"),
        ("hidden: [64, 96]", "hidden: {min: 32, max: 4000000000, step: 32}", "stages.hidden"),
        ("mlp_ratio: [2, 4]", "mlp: {min: 1, max: 99999999}", "stages.mlp"),
        ("head_dim: 32", "heads: {min: 1, max: 10000000}", "stages.heads"),
        ("stride: 2", "stride: [2, 100000]", "stages.stride"),
        ("total_layers: {min: 2, max: 4}", "total_layers: {min: 2, max: 1000000000}", "constraints.total_layers"),
        ("image_size: 32", "image_size: 3200000", "shared.image_size"),
    ],
)
def test_a_value_past_its_documented_bound_is_one_line_naming_the_key(tmp_path, old, new, key):
    path = tmp_path / "huge.yaml"
    path.write_text(tiny_with(old, new))
    spaces_refuses(path, f"key {key}:", "past the largest")


INSTEAD = {"mlp": "mlp_ratio", "heads": "head_dim"}  # a key given in place of tiny's
STEM_FOR = {
    "token_dim": {"stem": "t2t"},
    "points": {"stem": "ps", "points": 4},
    "iters": {"stem": "ps", "points": 4},
    "fe": {"stem": "ps", "points": 4},
}


@pytest.mark.parametrize("key", sorted(set(LARGEST) - {"n_stages", "total_layers"}))
def test_every_bounded_number_is_refused_past_its_bound(key):
    spec = yaml.safe_load(TINY)
    spec.pop("baselines")
    section = "shared" if key in space_mod.SHARED_KEYS else "stages"
    if key in STEM_FOR:
        spec["shared"].pop("patch_size")
        spec["shared"].update(STEM_FOR[key])
    spec[section].pop(INSTEAD.get(key, ""), None)
    spec[section][key] = LARGEST[key] + 1
    with pytest.raises(UsageError, match=f"key {section}.{key}: .*past the largest {key} .*\\({LARGEST[key]}\\)"):
        load_space(spec)


def test_a_space_whose_exact_walk_would_take_too_long_is_refused_with_the_count(tmp_path):
    # every number within its bound, but 32 stages of 64 layer counts and 4 widths: far too many paths
    path = tmp_path / "wide.yaml"
    path.write_text(
        tiny_with("count: {min: 1, max: 3}", "count: {min: 1, max: 32}")
        .replace("layers: [1, 2]", "layers: {min: 1, max: 64}")
        .replace("hidden: [64, 96]", "hidden: [64, 96, 128, 160]")
        .replace("total_layers: {min: 2, max: 4}", "total_layers: {min: 2, max: 400}")
        .replace("image_size: 32", "image_size: 224")
    )
    err = spaces_refuses(path, "key stages:", "walking this space exactly would take up to", "steps")
    assert "stage0_layers" in err  # the widest decision, to narrow first


def test_the_shipped_spaces_are_far_below_the_walk_bound():
    for name in space_mod.list_spaces():
        space = load_space(name)
        assert space_mod.walk_steps(space) < space_mod.MAX_WALK_STEPS / 2, name


def _alias_bomb(levels: int = 9, width: int = 9) -> str:
    lines = [f"a0: &a0 [{', '.join(['x'] * width)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    "text, needle",
    [
        (_alias_bomb(), "expands to more than 20,000 values"),  # 9 ** 9 values from 600 bytes
        ("name: x\nstages: &a {count: 2, hidden: [64, *a]}\n", "refers to the anchor it is inside of"),
        ("stages: " + "[" * 5000 + "]" * 5000 + "\n", "nested"),
        ("stages:\n  count: 1" + "0" * 5000 + "\n", "not a value funnelbench can read"),
        (TINY + "\nproxy: {epochs: 1}\n" + "#" * MAX_SPACE_BYTES, "larger than 256 KiB"),
    ],
)
def test_yaml_that_would_exhaust_the_loader_is_one_line(tmp_path, text, needle):
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    spaces_refuses(path, needle)


def test_a_50_mb_space_file_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "big.yaml"
    with open(path, "w") as f:
        f.write(TINY)
        f.write(("# padding " * 100 + "\n") * 50_000)  # 50 MB
    spaces_refuses(path, "larger than 256 KiB")


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda tmp: "/proc/self/mem", "cannot read it"),  # a file whose read is an I/O error
        (lambda tmp: tmp, "is not a file"),  # a folder (was: "does not exist")
        (lambda tmp: "/dev/zero", "is not a file"),  # endless: never read
        (lambda tmp: (tmp / "bin.yaml").write_bytes(b"name: \xff\xfe\x00\n") and tmp / "bin.yaml", "not UTF-8"),
    ],
)
def test_a_space_path_that_cannot_be_read_as_text_is_one_line(tmp_path, make, needle):
    spaces_refuses(make(tmp_path), needle)


# ----------------------------------------------------------------------------- the fuzz test

HOSTILE_VALUES = st.one_of(
    st.integers(-(10**12), 10**12),
    st.sampled_from([10**18, 10**400, -1, 0, 1, 2, 3, 4, 8, 16, 32, 64, 96]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=30),
    st.sampled_from(["mean", "max", "mean2d", "max2d", "cls", "avg", "patch", "t2t", "ps", "sincos", "none"]),
)
VALUES = st.recursive(
    HOSTILE_VALUES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.fixed_dictionaries({"min": inner, "max": inner}, optional={"step": inner}),
        st.dictionaries(st.text(max_size=12), inner, max_size=4),
    ),
    max_leaves=12,
)
PATHS = st.sampled_from(
    [
        ("name",),
        ("description",),
        ("shared",),
        ("shared", "image_size"),
        ("shared", "patch_size"),
        ("shared", "stem"),
        ("shared", "points"),
        ("shared", "head"),
        ("shared", "pos"),
        ("stages",),
        ("stages", "count"),
        ("stages", "layers"),
        ("stages", "stride"),
        ("stages", "hidden"),
        ("stages", "head_dim"),
        ("stages", "heads"),
        ("stages", "mlp_ratio"),
        ("stages", "mlp"),
        ("stages", "pool"),
        ("stages", "kernel"),
        ("stages", "tie"),
        ("stages", "per_stage"),
        ("stages", "per_stage", "stage1"),
        ("stages", "per_stage", "stage0", "layers"),
        ("constraints",),
        ("constraints", "total_layers"),
        ("baselines",),
        ("proxy",),
        ("proxy", "epochs"),
        ("proxy", "image_size"),
        ("unknown",),
    ]
)


@st.composite
def hostile_space_texts(draw) -> str:
    """tiny.yaml with a few keys set to hostile values, or YAML written to hurt the loader."""
    kind = draw(st.sampled_from(["edit", "edit", "edit", "bomb", "raw"]))
    if kind == "bomb":
        return _alias_bomb(draw(st.integers(2, 12)), draw(st.integers(2, 12)))
    if kind == "raw":
        return draw(st.binary(max_size=200)).decode("latin-1")
    spec = yaml.safe_load(TINY)
    for _ in range(draw(st.integers(1, 3))):
        *parents, last = draw(PATHS)
        node = spec
        for key in parents:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[last] = draw(VALUES)
    return yaml.safe_dump(spec, allow_unicode=True)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(text=hostile_space_texts())
@example(text=tiny_with("layers: [1, 2]", "layers: {min: 1, max: 1000000000}"))
@example(text=_alias_bomb())
@example(text="stages: &a [*a]\n")
@example(text=tiny_with("hidden: [64, 96]", "hidden: [64, 96]\n  tie: [[hidden]]"))
@example(text=tiny_with("count: {min: 1, max: 3}", "count: 1" + "0" * 5000))
@example(text=tiny_with("description: 32 px", "description: '[/bold] [red' #"))  # text, not rich markup
def test_fuzzed_space_files_are_one_line_exit_2_in_bounded_time_and_memory(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fuzz") / "space.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    started = time.perf_counter()
    with bounded():
        result = invoke("spaces", path)
    assert time.perf_counter() - started < BOUND_S
    if result.exit_code == 0:  # a valid space: shown, nothing on stderr
        assert result.stderr == "" and "distinct layouts" in result.stdout
    else:
        one_line(result, 2, "space")


# ----------------------------------------------------------------------------- studies that are not ours, or damaged


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A finished cost-only study (nothing trained) in SQLite and in a journal file."""
    root = tmp_path_factory.mktemp("template")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        for args in (["--study", "s"], ["--study", "j", "--storage", f"journal:{root}/j.log"]):
            result = invoke("search", *COST_ONLY, "--trials", "4", *args)
            assert result.exit_code == 0, result.output
    finally:
        os.chdir(cwd)
    return root


def test_a_study_of_another_program_with_the_marker_is_read_attribute_by_attribute(tmp_path):
    url = f"sqlite:///{tmp_path}/foreign.db"
    study = optuna.create_study(storage=url, study_name="foreign")
    study.set_user_attr("funnelbench", "search/1")
    study.set_user_attr("settings", {"budgets": {"macs": "lots"}, "proxy": "fast", "objectives": 3})

    def objective(trial):
        for key, value in {
            "macs": "a lot",
            "params": [1],
            "top1": "high",
            "status": {"a": 1},
            "over_budget": "yes",
            "baseline": "no",
            "target_layout": 7,
            "duplicate_of": "x",
            "error": [1, 2],
        }.items():
            trial.set_user_attr(key, value)
        return trial.suggest_float("x", 0, 1)

    study.optimize(objective, n_trials=12)
    result = invoke("report", "--study", "foreign", "--storage", url)
    assert result.exit_code == 0, (result.output, result.exception)  # was a TypeError traceback in trial_table
    assert "12 trials" in result.stdout
    rep = rp.build_report(rp.open_study("foreign", url))
    assert {r["macs"] for r in rep["trials"]} == {None} and {r["baseline"] for r in rep["trials"]} == {False}
    assert rep["settings"]["budgets"] == {"macs": None} and rep["settings"]["proxy"] == {}


def _damage(path: Path, where: str) -> None:
    """Garbage over one page that a report reads: the trials table's first page ("middle"), or the
    last page of the trials' attributes, where the newest writes land ("tail")."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        size = db.execute("PRAGMA page_size").fetchone()[0]
        table, pick = ("trials", "min") if where == "middle" else ("trial_user_attributes", "max")
        page = db.execute(f"SELECT {pick}(pageno) FROM dbstat WHERE name = ?", (table,)).fetchone()[0]
    data = bytearray(path.read_bytes())
    data[(page - 1) * size + 100 : page * size] = b"\xde\xad" * ((size - 100) // 2)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("where", ["middle", "tail"])
def test_a_damaged_sqlite_study_is_one_line_for_report_and_search(template, tmp_path, where):
    db = tmp_path / "study.db"
    with (
        contextlib.closing(sqlite3.connect(template / "runs/search/s/study.db")) as src,
        contextlib.closing(sqlite3.connect(db)) as dst,
    ):
        src.backup(dst)  # the study as SQLite sees it (a plain copy of study.db may miss what is still in its WAL)
    _damage(db, where)
    before = db.read_bytes()
    url = f"sqlite:///{db}"
    one_line(invoke("report", "--study", "s", "--storage", url), 2, "damaged", ".recover")  # was 3 tracebacks
    err = one_line(
        invoke("search", *COST_ONLY, "--trials", "6", "--study", "s", "--storage", url),
        2,
        f"sqlite:///{db}",
        "damaged",
        ".recover",
    )
    assert "object at 0x" not in err
    assert db.read_bytes() == before  # nothing written into it


def _journal_study(template, tmp_path) -> Path:
    journal = tmp_path / "journal.log"
    shutil.copy(template / "j.log", journal)
    return journal


def _trials(journal: Path, name: str = "j") -> list:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


@pytest.mark.parametrize(
    "garbage",
    [b"\xff\xfe\x00 not text\n", b'{"op_code": 4, "worker_id": "x", "trial_i\n'],
    ids=["bytes", "truncated json"],
)
def test_a_damaged_journal_says_where_and_the_fix_keeps_every_trial_before_it(template, tmp_path, garbage):
    journal = _journal_study(template, tmp_path)
    intact = journal.read_bytes()
    done = [(t.number, t.values, t.user_attrs["target_layout"]) for t in _trials(journal)]
    journal.write_bytes(intact + garbage + b'{"op_code": 0, "worker_id": "w", "study_name": "later"}\n')
    url, line = f"journal:{journal}", intact.count(b"\n") + 1
    err = one_line(
        invoke("search", *COST_ONLY, "--trials", "6", "--study", "j", "--storage", url),
        2,
        f"journal:{journal} is damaged at line {line} (byte {len(intact)})",
        "operations before it",
    )
    one_line(invoke("report", "--study", "j", "--storage", url), 2, "is damaged at line")
    fix = err.split("keep them with '", 1)[1].split("'", 1)[0]  # the command the message gives
    subprocess.run(fix, shell=True, check=True)
    assert [(t.number, t.values, t.user_attrs["target_layout"]) for t in _trials(journal)] == done
    assert (tmp_path / "journal.log.damaged").read_bytes().startswith(intact)


def test_a_torn_last_line_is_cut_off_and_kept_aside(tmp_path):
    journal = tmp_path / "journal.log"
    journal.write_bytes(b'{"a": 1}\n{"b": 2}\n{"op_code": 5, "tri')
    assert workers.repair_torn_tail(journal) == len(b'{"op_code": 5, "tri')
    assert journal.read_bytes() == b'{"a": 1}\n{"b": 2}\n'
    (kept,) = tmp_path.glob("journal.log.torn-*")
    assert kept.read_bytes() == b'{"op_code": 5, "tri'
    assert workers.repair_torn_tail(journal) == 0  # a whole journal is left alone
    assert journal.read_bytes() == b'{"a": 1}\n{"b": 2}\n'


HALF_A_LINE = textwrap.dedent("""
    import os, sys, time
    line = b'{"op_code": 8, "worker_id": "killed", "trial_id": 3, "user_attr": {"status": "completed"}}\\n'
    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)
    os.write(fd, line[: len(line) // 2])  # half a line reaches the file ...
    print("written", flush=True)
    time.sleep(60)  # ... and the writer is killed before the rest
""")


def test_a_worker_killed_while_writing_the_journal_loses_nothing_and_two_workers_continue(template, tmp_path):
    journal = _journal_study(template, tmp_path)
    done = [(t.number, t.values, t.user_attrs["target_layout"]) for t in _trials(journal)]
    writer = subprocess.Popen([sys.executable, "-c", HALF_A_LINE, str(journal)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "written"
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert not journal.read_bytes().endswith(b"\n")  # the torn tail a killed writer leaves
    # before the repair, two workers appended onto the torn line, died with tracebacks and left a
    # journal no one could read
    result = invoke(
        "search", *COST_ONLY, "--trials", "6", "--study", "j", "--storage", f"journal:{journal}", "--workers", "2"
    )
    assert result.exit_code == 0, (result.output, repr(result.exception))
    assert "Traceback" not in result.output and "its last line was torn" in result.stderr
    trials = _trials(journal)
    assert [(t.number, t.values, t.user_attrs["target_layout"]) for t in trials[: len(done)]] == done
    assert (
        sum(1 for t in trials if t.user_attrs.get("status") == "completed" and t.user_attrs.get("duplicate_of") is None)
        == 6
    )
    assert invoke("report", "--study", "j", "--storage", f"journal:{journal}").exit_code == 0
    assert len(list(tmp_path.glob("journal.log.torn-*"))) == 1


# ----------------------------------------------------------------------------- every exception that escapes


def _raise(err):
    def boom(*args, **kwargs):
        raise err

    return boom


def _sqlalchemy_error():
    import sqlalchemy.exc

    return sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("disk I/O error"))


def _numpy_error():
    import numpy

    return numpy.linalg.LinAlgError("Matrix is not positive definite")


ESCAPES = [  # (command, the function it calls that raises, the exception)
    (["spaces", "tiny"], "funnelbench.search.space.load_space", ValueError("Optuna says no\nsecond line")),
    (["spaces", "tiny"], "funnelbench.search.space.load_space", yaml.YAMLError("a yaml problem")),
    (["search", *COST_ONLY, "--trials", "2"], "funnelbench.search.study.search", _numpy_error()),
    (["search", *COST_ONLY, "--trials", "2"], "funnelbench.search.study.search", RecursionError("too deep")),
    (["report", "--study", "x"], "funnelbench.cli.report_cmds.default_storage", _sqlalchemy_error()),
    (["report", "--study", "x"], "funnelbench.cli.report_cmds.default_storage", KeyError("settings")),
]


@pytest.mark.parametrize("args, target, err", ESCAPES, ids=[f"{a[0]} {type(e).__name__}" for a, _, e in ESCAPES])
def test_an_unexpected_exception_is_one_line_exit_1_naming_the_debug_switch(monkeypatch, args, target, err):
    module, name = target.rsplit(".", 1)
    monkeypatch.setattr(
        sys.modules[module] if module in sys.modules else __import__(module, fromlist=[name]), name, _raise(err)
    )
    monkeypatch.delenv("FUNNELBENCH_DEBUG", raising=False)
    line = one_line(invoke(*args), 1, type(err).__name__, "FUNNELBENCH_DEBUG=1", "--debug")
    assert "second line" not in line
    # the traceback on request: the exception itself leaves the command
    for switch, env in (([], {"FUNNELBENCH_DEBUG": "1"}), (["--debug"], None)):
        result = invoke(*switch, *args, env=env)
        assert result.exit_code == 1 and result.exception is err, (result.output, result.exception)
    monkeypatch.delenv("FUNNELBENCH_DEBUG", raising=False)  # --debug set it for this process


def test_an_unexpected_exception_in_a_worker_process_is_one_line_in_the_parent():
    # json.loads(s="{") raises JSONDecodeError in the worker, as an Optuna sampler's ValueError would
    with pytest.raises(workers.WorkerCrashed) as info:
        workers.run_workers(1, json.loads, {"s": "{"})
    assert "\n" not in str(info.value) and "JSONDecodeError" in str(info.value)
