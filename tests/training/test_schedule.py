"""The learning-rate schedules: cosine (the lr depends on --epochs), constant (it does not, so a
run of k epochs resumed to n is the run of n epochs: what --fidelity asha's promotions need) and
wsd (warm-up, stable, a linear decay over the last 20 % of the steps)."""

import pytest
import torch
from typer.testing import CliRunner

import funnelbench as fb
from funnelbench.cli import app
from funnelbench.data import CACHE_ENV
from funnelbench.train import TrainConfig, lr_factor
from funnelbench.training.checkpoint import STABLE, resume_point
from funnelbench.training.recipe import schedule, stable_epochs

TINY = dict(train_per_class=16, val_per_class=8, batch_size=32)  # 128 / 64 images, 4 steps an epoch
TINY_FLAGS = ["--train-per-class", "16", "--val-per-class", "8", "--batch-size", "32"]
TIMING = {"train_img_per_s", "epoch_s", "eval_s"}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))


def test_constant_lr_factors_by_hand():
    kw = dict(warmup=4, lr=1e-3, min_lr=1e-5, kind="constant")
    # warm-up from lr/4, then lr, whatever the total
    assert [lr_factor(s, total=8, **kw) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert lr_factor(7, total=8, **kw) == lr_factor(7, total=800, **kw) == 1.0
    # the cosine at the same step depends on the total
    cos = dict(warmup=4, lr=1e-3, min_lr=1e-5)
    assert lr_factor(6, total=8, **cos) != lr_factor(6, total=800, **cos)


def test_the_constant_warm_up_is_not_cut_at_the_run_s_end():
    short = TrainConfig(layout="test-vit", epochs=1, warmup_epochs=2.0, schedule="constant")
    cosine = TrainConfig(layout="test-vit", epochs=1, warmup_epochs=2.0)
    assert schedule(short, 10)["warmup"] == 20  # epoch 1 of a 1-epoch run is epoch 1 of a 9-epoch run
    assert schedule(cosine, 10)["warmup"] == 10


def test_wsd_lr_factors_by_hand():
    kw = dict(warmup=2, lr=1e-3, min_lr=1e-5, kind="wsd")
    # 20 steps: warm-up over 2, --lr until step 16, then 4 steps down to --min-lr at the last
    lrs = [1e-3 * lr_factor(s, total=20, **kw) for s in range(20)]
    assert lrs[:2] == pytest.approx([5e-4, 1e-3]) and lrs[2:16] == pytest.approx([1e-3] * 14)
    assert lrs[16:] == pytest.approx([1e-3 - 0.99e-3 * k / 4 for k in (1, 2, 3, 4)])
    assert lrs[-1] == pytest.approx(1e-5)
    # a 10-step run is the 20-step run's first 8 steps (its 2 decay steps are its own)
    short = [1e-3 * lr_factor(s, total=10, **kw) for s in range(10)]
    assert short[:8] == pytest.approx(lrs[:8]) and short[8:] == pytest.approx([5.05e-4, 1e-5])


def test_a_wsd_run_holds_lr_then_ends_at_min_lr(tmp_path):
    # 2 epochs of 4 steps: warm-up over the first epoch's 4, --lr until step 6, decay over the last 2
    lrs = []
    fb.train("test-vit", out=tmp_path / "run", epochs=2, schedule="wsd", callback=lambda m: lrs.append(m["lr"]), **TINY)
    assert lrs == pytest.approx([1e-3, 1e-5])  # the rate the next step would take: after the last, --min-lr


def test_the_wsd_warm_up_is_cut_at_the_run_s_end():
    short = TrainConfig(layout="test-vit", epochs=1, warmup_epochs=2.0, schedule="wsd")
    assert schedule(short, 10)["warmup"] == 10 and schedule(short, 10)["kind"] == "wsd"


def test_the_wsd_stable_point_by_hand():
    wsd = dict(layout="test-vit", schedule="wsd")
    # 2 epochs of 4 steps, 1 warm-up epoch: the decay starts at step 8 - round(1.6) = 6, inside epoch 2
    assert stable_epochs(TrainConfig(epochs=2, **wsd), 4) == 1
    assert stable_epochs(TrainConfig(epochs=4, **wsd), 10) == 3  # decay from step 32 of 40
    assert stable_epochs(TrainConfig(epochs=5, **wsd), 10) == 4  # from step 40 of 50: the epoch's end
    # a run that is all warm-up: its end is the start of every longer run (no decay of its own)
    assert stable_epochs(TrainConfig(epochs=1, **wsd), 10) == 1
    # a run that ends inside its warm-up (cut) or decays inside its first epoch has none
    assert stable_epochs(TrainConfig(epochs=1, warmup_epochs=2.0, **wsd), 10) is None
    assert stable_epochs(TrainConfig(epochs=1, warmup_epochs=0.1, **wsd), 10) is None
    assert stable_epochs(TrainConfig(layout="test-vit", epochs=4, schedule="constant"), 10) is None
    assert stable_epochs(TrainConfig(layout="test-vit", epochs=4), 10) is None


@pytest.mark.parametrize("short, long", [(2, 4), (1, 3)], ids=["decay-in-epoch-2", "all-warm-up"])
def test_a_wsd_run_continued_from_its_stable_checkpoint_is_the_longer_run(tmp_path, short, long):
    """What --fidelity asha --schedule wsd promotes: the short run's stable checkpoint (before its
    decay) continued to more epochs is the straight longer run, value for value. (1, 3): the
    stable point is the short run's end, where its scheduler already set --min-lr for the next
    step; the continued run must take the longer run's lr there."""
    fb.train("test-vit", out=tmp_path / "short", epochs=short, schedule="wsd", **TINY)
    state = torch.load(tmp_path / "short" / STABLE, weights_only=True)
    assert state["stable"] is True and state["epoch"] == 1  # the end of epoch 1 in both cases
    history = resume_point(tmp_path / "short", tmp_path / "continued", stable=True)
    assert len(history) == 1 and not (tmp_path / "continued" / "history.csv").exists()
    lrs = []
    continued = fb.train(
        "test-vit",
        out=tmp_path / "continued",
        epochs=long,
        schedule="wsd",
        resume=True,
        callback=lambda m: lrs.append(m["epoch"]),
        **TINY,
    )
    straight = fb.train("test-vit", out=tmp_path / "long", epochs=long, schedule="wsd", **TINY)
    assert lrs == list(range(2, long + 1)) and continued["epochs_done"] == long
    a = torch.load(tmp_path / "continued" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "long" / "checkpoint.pt", weights_only=True)
    # epoch 1's row is the short run's: its "lr" is the one the short run set for the next step
    same = lambda h: [{k: v for k, v in row.items() if k != "lr" or row["epoch"] > 1} for row in _numbers(h)]  # noqa: E731
    assert same(a["history"]) == same(b["history"])
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])
    assert continued["val_top1"] == straight["val_top1"]
    # the short run's own value came after its decay: not the longer run's epoch (2, 4 only)
    short_history = torch.load(tmp_path / "short" / "checkpoint.pt", weights_only=True)["history"]
    if short == 2:
        assert short_history[-1]["lr"] == pytest.approx(1e-5) and b["history"][1]["lr"] == pytest.approx(1e-3)


def test_a_chain_of_wsd_continuations_is_the_longest_run(tmp_path):
    """1 epoch (all warm-up) -> 2 epochs -> 4 epochs, each continued from the last one's stable
    checkpoint: the 2-epoch run starts at its own stable point (epoch 1), so it keeps that state
    as its stable.pt; the chain ends as the straight 4-epoch run. A retry's copy of a run folder
    takes its stable.pt along."""
    fb.train("test-vit", out=tmp_path / "one", epochs=1, schedule="wsd", **TINY)
    for source, target, epochs in (("one", "two", 2), ("two", "four", 4)):
        resume_point(tmp_path / source, tmp_path / target, stable=True)
        fb.train("test-vit", out=tmp_path / target, epochs=epochs, schedule="wsd", resume=True, **TINY)
        assert torch.load(tmp_path / target / STABLE, weights_only=True)["epoch"] == {2: 1, 4: 3}[epochs]
    straight = fb.train("test-vit", out=tmp_path / "straight", epochs=4, schedule="wsd", **TINY)
    a = torch.load(tmp_path / "four" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])
    assert a["history"][-1]["val_top1"] == straight["val_top1"]
    resume_point(tmp_path / "four", tmp_path / "retry")
    assert (tmp_path / "retry" / STABLE).is_file() and (tmp_path / "retry" / "history.csv").is_file()


def test_a_wsd_run_extends_only_from_its_stable_checkpoint(tmp_path):
    runner = CliRunner()
    out = tmp_path / "run"
    flags = ["--schedule", "wsd", *TINY_FLAGS]
    assert runner.invoke(app, ["train", "test-vit", "--out", out, "--epochs", "2", *flags]).exit_code == 0
    assert (out / STABLE).is_file()
    # its last checkpoint has decayed: not the start of a longer run
    more = runner.invoke(app, ["train", "test-vit", "--out", out, "--epochs", "4", "--resume", *flags])
    err = more.stderr.strip()
    assert more.exit_code == 2 and "\n" not in err and "Traceback" not in err
    assert "wsd schedule" in err and f"a wsd run extends from its {STABLE}" in err
    # its stable checkpoint is the start of runs at least as long as itself, not shorter
    long = fb.train("test-vit", out=tmp_path / "long", epochs=4, schedule="wsd", **TINY)
    resume_point(tmp_path / "long", tmp_path / "shorter", stable=True)  # stable at epoch 3 of 4
    fewer = runner.invoke(
        app, ["train", "test-vit", "--out", tmp_path / "shorter", "--epochs", "3", "--resume", *flags]
    )
    assert fewer.exit_code == 2 and "runs of 4 epochs or more" in fewer.stderr, fewer.stderr
    assert long["status"] == "completed"
    # --checkpoint none writes no stable checkpoint either
    fb.train("test-vit", out=tmp_path / "none", epochs=2, schedule="wsd", checkpoint="none", **TINY)
    assert not (tmp_path / "none" / STABLE).exists()


def test_an_unknown_schedule_is_one_line():
    with pytest.raises(fb.UsageError, match="--schedule step: use one of cosine, constant, wsd"):
        TrainConfig(layout="test-vit", schedule="step")


def _numbers(history):
    """The history's numbers (not the wall clock, not the status: epoch 2 ended the short run)."""
    return [{k: v for k, v in row.items() if k not in TIMING | {"status"}} for row in history]


def test_a_constant_run_resumed_to_more_epochs_is_the_longer_run(tmp_path):
    fb.train("test-vit", out=tmp_path / "short", epochs=2, schedule="constant", **TINY)
    lrs = []
    resumed = fb.train(
        "test-vit",
        out=tmp_path / "short",
        epochs=4,
        schedule="constant",
        resume=True,
        callback=lambda m: lrs.append((m["epoch"], m["lr"])),
        **TINY,
    )
    straight = fb.train("test-vit", out=tmp_path / "long", epochs=4, schedule="constant", **TINY)
    assert [e for e, _ in lrs] == [3, 4] and resumed["epochs_done"] == 4
    a = torch.load(tmp_path / "short" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "long" / "checkpoint.pt", weights_only=True)
    assert _numbers(a["history"]) == _numbers(b["history"])
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])
    assert resumed["val_top1"] == straight["val_top1"]


def test_a_cosine_run_is_not_extended_and_a_constant_one_not_shortened(tmp_path):
    runner = CliRunner()
    out = tmp_path / "run"
    assert runner.invoke(app, ["train", "test-vit", "--out", out, "--epochs", "1", *TINY_FLAGS]).exit_code == 0
    more = runner.invoke(app, ["train", "test-vit", "--out", out, "--epochs", "2", "--resume", *TINY_FLAGS])
    err = more.stderr.strip()
    assert more.exit_code == 2 and "\n" not in err and "Traceback" not in err
    assert "cosine schedule, whose learning rate depends on --epochs" in err and "--schedule constant" in err
    out2 = tmp_path / "constant"
    flags = ["--schedule", "constant", *TINY_FLAGS]
    assert runner.invoke(app, ["train", "test-vit", "--out", out2, "--epochs", "2", *flags]).exit_code == 0
    fewer = runner.invoke(app, ["train", "test-vit", "--out", out2, "--epochs", "1", "--resume", *flags])
    assert fewer.exit_code == 2 and "has already trained 2 epochs" in fewer.stderr
