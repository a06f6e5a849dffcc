"""Bad numbers never end in a traceback.

Every numeric option of every command but train and finetune (those are in
``tests/training/test_train_bad_input.py``; the search's hostile space files and damaged studies
are in ``tests/search/test_search_hostile.py``) gets negative, zero, NaN, infinite, huge and malformed values:
each is one line ``error: ...`` naming the option, exit code 2, nothing on stdout, nothing
written, nothing measured. The library functions behind the commands refuse the same values
with a :class:`UsageError`, so a script gets the same answer as the command line.
"""

import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

import funnelbench as fb
import funnelbench.profiling as profiling
from funnelbench.cli import app
from funnelbench.memory import max_batch_size

runner = CliRunner()

NEGATIVE, ZERO, NAN, INF, HUGE, FRACTION, WORD = "-1", "0", "nan", "inf", "99999999999999999999", "1.5", "lots"
INTS = [NEGATIVE, ZERO, NAN, INF, HUGE, FRACTION, WORD, "1e3", "", "0x10"]

# command line before the option -> {option: (word the message names, bad values)}
OPTIONS = {
    ("parse", "B12(197)"): {"--num-classes": ("classes", INTS)},
    ("profile", "test-vit"): {
        "--batch-size": ("batch", INTS),
        "--image-size": ("image", INTS),
        "--warmup": ("warm", [v for v in INTS if v != ZERO]),  # no warm-up is allowed
        "--repeats": ("repeats", INTS),
        "--num-classes": ("classes", INTS),
    },
    ("reproduce",): {
        "--batch-size": ("batch", INTS),
        "--warmup": ("warm", [v for v in INTS if v != ZERO]),
        "--repeats": ("repeats", INTS),
        "--tables": ("table", [NEGATIVE, ZERO, NAN, INF, HUGE, FRACTION, WORD, "", "2,", "2,,4"]),
    },
    ("search", "--space", "tiny", "--objective", "macs"): {
        "--trials": (
            "trials",
            [v for v in INTS if v != HUGE],
        ),  # a huge total is allowed: the search stops when the space is exhausted
        "--memory-batch": ("batch", INTS),
        "--heartbeat": ("heartbeat", INTS),
        "--width-scale": ("width", [NEGATIVE, ZERO, NAN, INF, HUGE, WORD, ""]),
        "--budget-flops": ("flops", [NEGATIVE, ZERO, NAN, INF, "1e400", "1.2.3G", WORD, ""]),
        "--min-flops": ("flops", [NEGATIVE, ZERO, NAN, INF, "1e400", WORD, ""]),
        "--budget-params": ("params", [NEGATIVE, ZERO, NAN, INF, "1e400", WORD, ""]),
        "--budget-memory": ("memory", [NEGATIVE, ZERO, NAN, INF, "1e400GiB", "16 GiBs", WORD, ""]),
    },
    ("report", "--study", "s"): {"--top": ("top", [NEGATIVE, NAN, INF, FRACTION, WORD, ""])},  # a huge --top shows all
    ("memory", "test-vit"): {
        "--batch-size": ("batch", INTS),
        "--num-classes": ("classes", INTS),
        "--budget": (
            "budget",
            [NEGATIVE, ZERO, NAN, INF, "1e400", "1e20GiB", "1.2.3GB", "16 GiBs", WORD, "", "-16GiB"],
        ),
    },
}
CASES = [
    (command, option, word, value)
    for command, options in OPTIONS.items()
    for option, (word, values) in options.items()
    for value in values
]


@pytest.fixture
def nothing_measured(monkeypatch):
    """A bad value must be refused before any model is built or timed."""

    def refuse(*args, **kwargs):
        raise AssertionError("measured despite bad input")

    monkeypatch.setattr(profiling, "_measure", refuse)
    monkeypatch.setattr(profiling, "_warm_up_process", refuse)


@pytest.mark.parametrize("command, option, word, value", CASES, ids=[f"{c[0]} {o} {v!r}" for c, o, _, v in CASES])
def test_every_numeric_option_refuses_bad_values_in_one_line(command, option, word, value, nothing_measured):
    export = ["--export", "out.csv"] if command[0] in ("profile", "reproduce") else []
    result = runner.invoke(app, [*command, option, value, *export])
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert result.stdout == ""
    err = result.stderr
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert word in err.lower(), err
    assert list(Path(".").iterdir()) == []  # nothing written (the test runs in an empty folder)


BAD_COUNTS = [0, -1, 1.5, 8.0, True, float("nan"), float("inf"), 10**20, "8"]


@pytest.mark.parametrize("value", BAD_COUNTS, ids=repr)
@pytest.mark.parametrize(
    "call",
    [
        lambda v: fb.count("test-vit", num_classes=v),
        lambda v: fb.build_model("test-vit", num_classes=v),
        lambda v: fb.build_model("test-vit", in_chans=v),
        lambda v: fb.estimate_memory("test-vit", v),
        lambda v: fb.estimate_memory("test-vit", 2, num_classes=v),
        lambda v: max_batch_size("test-vit", v),
        lambda v: max_batch_size("test-vit", 2**30, limit=v),
        lambda v: fb.profile("test-vit", batch_size=v),
        lambda v: fb.profile("test-vit", repeats=v),
        lambda v: fb.profile("test-vit", num_classes=v),
        lambda v: fb.profile("test-vit", image_size=v),
    ],
    ids=[
        "count num_classes",
        "build_model num_classes",
        "build_model in_chans",
        "estimate_memory batch_size",
        "estimate_memory num_classes",
        "max_batch_size budget",
        "max_batch_size limit",
        "profile batch_size",
        "profile repeats",
        "profile num_classes",
        "profile image_size",
    ],
)
def test_library_arguments_the_cli_checks_are_checked_in_the_library(call, value, nothing_measured):
    with pytest.raises(fb.FunnelbenchError) as info:
        call(value)
    assert "\n" not in str(info.value)


def test_profile_warmup_may_be_zero_but_not_negative(nothing_measured):
    for bad in (-1, 1.5, math.inf, 10**7):
        with pytest.raises(fb.UsageError, match="warm-up"):
            fb.profile("test-vit", warmup=bad)
