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
    "--epochs": (NEG, ZERO, HUGE), "--batch-size": (NEG, ZERO, HUGE), "--seed": (NEG, HUGE),
    "--subset-seed": ("-2", HUGE), "--classes": (NEG, ZERO, "1", HUGE), "--train-per-class": (NEG, ZERO, HUGE),
    "--val-per-class": (NEG, ZERO, HUGE), "--image-size": (NEG, ZERO, "4", HUGE), "--patch-size": (NEG, ZERO, HUGE),
    "--randaugment": (NEG, HUGE), "--randaugment-magnitude": (NEG, "40", HUGE), "--crop-pad": (NEG, HUGE),
    "--workers": (NEG, HUGE), "--threads": (NEG, ZERO, HUGE),
}
FLOAT_OPTIONS = {
    "--lr": (NEG, ZERO, NAN, INF, "-inf", FLOAT_HUGE), "--min-lr": (NEG, NAN, INF, "0.5"),  # 0.5 > --lr
    "--weight-decay": (NEG, NAN, INF), "--warmup-epochs": (NEG, NAN, INF, FLOAT_HUGE),
    "--label-smoothing": ("-0.1", "1", NAN, INF), "--clip-grad": (NEG, NAN, INF), "--mixup": (NEG, NAN, INF),
    "--cutmix": (NEG, NAN, INF), "--width-scale": (NEG, ZERO, "1.5", NAN, INF),
}
CHOICE_OPTIONS = {"--dtype": ("fp8", ""), "--device": ("tpu",), "--checkpoint": ("sometimes",)}

CASES = ([(opt, v, False) for opt, vs in INT_OPTIONS.items() for v in vs]
         + [(opt, v, True) for opt in INT_OPTIONS for v in MALFORMED_INT]
         + [(opt, v, False) for opt, vs in FLOAT_OPTIONS.items() for v in vs]
         + [(opt, v, True) for opt in FLOAT_OPTIONS for v in MALFORMED_FLOAT]
         + [(opt, v, False) for opt, vs in CHOICE_OPTIONS.items() for v in vs])


@pytest.mark.parametrize("command", ["train", "finetune"])
@pytest.mark.parametrize("option, value, malformed", CASES)
def test_bad_numbers_are_one_line_exit_2_and_write_nothing(tmp_path, monkeypatch, command, option, value, malformed):
    monkeypatch.setenv("FUNNELBENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    head = ["train", "test-vit"] if command == "train" else ["finetune", str(tmp_path / "source.pt"), "--layout", "test-vit"]
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
    assert result.stderr.strip() == ("error: --min-lr 0.001: is above --lr 0.0001; the cosine decays from --lr down to "
                                     "--min-lr")
