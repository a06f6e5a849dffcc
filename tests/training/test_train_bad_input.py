"""Every numeric option of `train` and `finetune` through negative, zero, NaN, infinite, huge
and malformed values: a one-line error that names the option, exit code 2, nothing written
(no run folder, no data cache). The values a run accepts are left out (0 is a valid seed)."""

import pytest
from typer.testing import CliRunner

from funnelbench.cli import app

runner = CliRunner()

NEG, ZERO, NAN, INF, HUGE, FLOAT_HUGE = "-1", "0", "nan", "inf", "99999999999999999999", "1e400"
MALFORMED_INT = ("abc", "1.5", "", "nan")  # click refuses these before funnelbench sees them
MALFORMED_FLOAT = ("abc", "1.2.3")

# option -> values that must be refused (besides the malformed ones of its type)
INT_OPTIONS = {
    "--epochs": (NEG, ZERO, HUGE),
    "--batch-size": (NEG, ZERO, HUGE),
    "--seed": (NEG, HUGE),
    "--subset-seed": ("-2", HUGE),
    "--classes": (NEG, ZERO, "1", HUGE),
    "--train-per-class": (NEG, ZERO, HUGE),
    "--val-per-class": (NEG, ZERO, HUGE),
    "--image-size": (NEG, ZERO, "4", HUGE),
    "--patch-size": (NEG, ZERO, HUGE),
    "--randaugment": (NEG, HUGE),
    "--randaugment-magnitude": (NEG, "40", HUGE),
    "--crop-pad": (NEG, HUGE),
    "--workers": (NEG, HUGE),
    "--threads": (NEG, ZERO, HUGE),
    "--test-per-class": (NEG, ZERO, HUGE),
}
FLOAT_OPTIONS = {
    "--lr": (NEG, ZERO, NAN, INF, "-inf", FLOAT_HUGE),
    "--min-lr": (NEG, NAN, INF, "0.5"),  # 0.5 > --lr
    "--weight-decay": (NEG, NAN, INF),
    "--warmup-epochs": (NEG, NAN, INF, FLOAT_HUGE),
    "--label-smoothing": ("-0.1", "1", NAN, INF),
    "--clip-grad": (NEG, NAN, INF),
    "--mixup": (NEG, NAN, INF),
    "--cutmix": (NEG, NAN, INF),
    "--width-scale": (NEG, ZERO, "1.5", NAN, INF),
}
CHOICE_OPTIONS = {"--dtype": ("fp8", ""), "--device": ("tpu",), "--checkpoint": ("sometimes",)}

CASES = (
    [(opt, v, False) for opt, vs in INT_OPTIONS.items() for v in vs]
    + [(opt, v, True) for opt in INT_OPTIONS for v in MALFORMED_INT]
    + [(opt, v, False) for opt, vs in FLOAT_OPTIONS.items() for v in vs]
    + [(opt, v, True) for opt in FLOAT_OPTIONS for v in MALFORMED_FLOAT]
    + [(opt, v, False) for opt, vs in CHOICE_OPTIONS.items() for v in vs]
)


@pytest.mark.parametrize("command", ["train", "finetune"])
@pytest.mark.parametrize("option, value, malformed", CASES)
def test_bad_numbers_are_one_line_exit_2_and_write_nothing(tmp_path, monkeypatch, command, option, value, malformed):
    monkeypatch.setenv("FUNNELBENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    head = (
        ["train", "test-vit"]
        if command == "train"
        else ["finetune", str(tmp_path / "source.pt"), "--layout", "test-vit"]
    )
    result = runner.invoke(app, [*head, "--out", str(out), "--epochs", "1", f"{option}={value}"])
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert "Traceback" not in result.output and option in err
    # click's own parse errors become one line in the CLI's error boundary (cli/_common.py);
    # every value that parses is refused by TrainConfig with a one-line message.
    assert err.startswith("error: ") and "\n" not in err, err
    assert not out.exists() and not (tmp_path / "cache").exists()


def test_min_lr_above_lr_says_how_the_schedule_works(tmp_path):
    result = runner.invoke(app, ["train", "test-vit", "--out", str(tmp_path / "r"), "--lr", "1e-4", "--min-lr", "1e-3"])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: --min-lr 0.001: is above --lr 0.0001; the cosine decays from --lr down to --min-lr"
    )


# ----------------------------------------------------------------------------- real data files

from data_files import write_batch, write_batches, write_file, write_idx  # noqa: E402


def _truncate(path):
    path.write_bytes(path.read_bytes()[:-100])


def _corrupt_middle(path):
    raw = bytearray(path.read_bytes())
    for i in range(len(raw) // 2, len(raw) // 2 + 8):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


def _wrong_magic(path):
    raw = bytearray(path.read_bytes())
    raw[3] = 0x01  # 2049 (labels) where images should be: 2051
    path.write_bytes(bytes(raw))


def _fewer_labels(folder):
    import struct

    write_file(folder / "train-labels-idx1-ubyte", struct.pack(">II", 2049, 19) + bytes(range(19)), gz=False)


def _wide_batch(folder):
    import numpy as np

    write_batch(folder / "train_data_batch_2", np.zeros((4, 3 * 8 * 8 + 1), np.uint8), [1, 2, 3, 4])


# (how the folder is made, what breaks it, extra arguments, words the one-line error must hold)
BAD_FILES = {
    "truncated idx": ("idx-raw", lambda f: _truncate(f / "train-images-idx3-ubyte"), [], ("truncated",)),
    "truncated gzip idx": ("idx-gz", lambda f: _truncate(f / "t10k-images-idx3-ubyte.gz"), [], ("truncated",)),
    "corrupt gzip idx": (
        "idx-gz",
        lambda f: _corrupt_middle(f / "train-images-idx3-ubyte.gz"),
        ["--val-per-class", "1"],
        ("corrupt",),
    ),
    "wrong magic": (
        "idx-raw",
        lambda f: _wrong_magic(f / "train-images-idx3-ubyte"),
        [],
        ("magic number 2049", "2051"),
    ),
    "count mismatch": ("idx-raw", _fewer_labels, [], ("20 images", "19 labels")),
    "idx classes above": ("idx-gz", lambda f: None, ["--classes", "11"], ("--classes 11", "10 classes")),
    "batch width": ("batches", _wide_batch, [], ("train_data_batch_2", "193 values")),
    "batch classes above": ("batches", lambda f: None, ["--classes", "5"], ("--classes 5", "4 classes")),
    "carve too large": ("idx-gz", lambda f: None, ["--val-per-class", "2"], ("--val-per-class 2", "2 training images")),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_data_files_are_one_line_exit_2_and_write_nothing(tmp_path, monkeypatch, case):
    kind, damage, extra, words = BAD_FILES[case]
    folder = tmp_path / "data"
    if kind == "batches":
        write_batches(folder, classes=4, per_class=2, val_per_class=1, batches=1, fmt="npz")
    else:
        write_idx(folder, n_train=20, n_test=10, gz=kind == "idx-gz")
    damage(folder)
    monkeypatch.setenv("FUNNELBENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    result = runner.invoke(
        app, ["train", "test-vit", "--data", str(folder), "--out", str(out), "--epochs", "1", *extra]
    )
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in result.output, err
    assert all(w in err for w in words), err
    assert not out.exists()
    # no cache entry (a downsampled folder's listing index may be kept, as an ImageFolder's is)
    cached = [p.name for p in (tmp_path / "cache").rglob("*")] if (tmp_path / "cache").exists() else []
    assert [p for p in cached if p not in ("downsampled-index",) and not p.startswith("data-")] == [], cached


def test_fashion_mnist_without_the_package_says_how_to_install_it(tmp_path, monkeypatch):
    from funnelbench import data as D

    monkeypatch.setattr(D, "FASHION_MNIST_DIR", tmp_path / "not-installed")
    monkeypatch.setenv("FUNNELBENCH_CACHE", str(tmp_path / "cache"))
    result = runner.invoke(app, ["train", "test-vit", "--data", "fashion-mnist", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    err = result.stderr.strip()
    assert "\n" not in err and "apt-get install dataset-fashion-mnist" in err and "--data PATH" in err, err
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_test_per_class_without_a_test_split_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("FUNNELBENCH_CACHE", str(tmp_path / "cache"))
    result = runner.invoke(app, ["train", "test-vit", "--test-per-class", "3", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: --test-per-class 3: there is no test split (validation is on the val images "
        "(rendered from a seed of their own)); add --test-split"
    )
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()
