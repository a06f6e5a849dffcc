"""The trainer: determinism, exact resume after a kill, NaN handling, the per-epoch callback,
the recipe's schedule, error paths, the CLI, and DDP with two gloo processes."""

import csv
import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from typer.testing import CliRunner

import funnelbench as fb
from funnelbench.cli import app
from funnelbench.data import CACHE_ENV
from funnelbench.train import EPOCH_METRICS, TrainConfig, Trainer, lr_factor, proxy_layout

train_module = sys.modules["funnelbench.train"]  # (funnelbench.train, the attribute, is the function)

TINY = dict(train_per_class=16, val_per_class=8, batch_size=32)  # 128 / 64 images, 4 steps an epoch
TINY_FLAGS = ["--train-per-class", "16", "--val-per-class", "8", "--batch-size", "32"]
TIMING = {"train_img_per_s", "epoch_s", "eval_s"}
runner = CliRunner()


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))


def numbers(history):
    """The history without wall-clock columns."""
    return [{k: v for k, v in row.items() if k not in TIMING} for row in history]


def read_history(out):
    with open(out / "history.csv") as f:
        return [
            {k: (v if k == "status" else None if v == "" else float(v)) for k, v in row.items()}
            for row in csv.DictReader(f)
        ]


def weights(out):
    return torch.load(out / "checkpoint.pt", weights_only=True)["model"]


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


# ----------------------------------------------------------------------------- recipe pieces


def test_proxy_resolution_keeps_the_token_grid():
    small = proxy_layout("B6(197)-6(99)", 56, 4)
    assert [s.tokens for s in small.stages] == [197, 99]
    assert (small.image_size, small.patch_size) == (56, 4)
    assert str(proxy_layout("test-vit")) == str(fb.resolve("test-vit"))
    assert [s.tokens for s in proxy_layout("test-funnel", 48).stages] == [37, 19, 10]
    with pytest.raises(fb.UsageError, match="not a multiple"):
        proxy_layout("test-vit", 30, 8)


def test_warmup_then_cosine():
    kw = dict(warmup=10, total=110, lr=1e-3, min_lr=1e-5)
    assert lr_factor(0, **kw) == pytest.approx(0.1) and lr_factor(9, **kw) == pytest.approx(1.0)
    assert lr_factor(10, **kw) == pytest.approx(1.0)
    assert lr_factor(60, **kw) * 1e-3 == pytest.approx((1e-3 + 1e-5) / 2)  # half-way down the cosine
    assert lr_factor(110, **kw) * 1e-3 == pytest.approx(1e-5)
    assert lr_factor(35, **kw) * 1e-3 == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi / 4)))


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("epochs", 0, "--epochs 0"),
        ("lr", -1.0, "--lr -1.0"),
        ("label_smoothing", 1.0, "[0, 1)"),
        ("dtype", "fp8", "use one of auto, fp32"),
        ("mixup", -0.2, "must not be negative"),
    ],
)
def test_bad_hyperparameters_are_usage_errors(field, value, words):
    with pytest.raises(fb.UsageError, match=words.replace("[", r"\[").replace(")", r"\)")):
        TrainConfig(layout="test-vit", **{field: value})


# ----------------------------------------------------------------------------- determinism and resume


def test_same_seed_same_metrics_and_weights(tmp_path):
    a = fb.train("test-vit", out=tmp_path / "a", epochs=2, **TINY)
    b = fb.train("test-vit", out=tmp_path / "b", epochs=2, **TINY)
    c = fb.train("test-vit", out=tmp_path / "c", epochs=2, seed=1, **TINY)
    assert numbers(read_history(tmp_path / "a")) == numbers(read_history(tmp_path / "b"))
    assert same_weights(weights(tmp_path / "a"), weights(tmp_path / "b"))
    assert a["train_loss"] == b["train_loss"] and a["train_loss"] != c["train_loss"]
    assert a["status"] == "completed" and a["epochs_done"] == 2 and len(read_history(tmp_path / "a")) == 2
    for key in (
        "layout",
        "dataset",
        "params",
        "macs",
        "lr",
        "batch_size",
        "seed",
        "val_top1",
        "val_top5",
        "train_img_per_s",
        "device",
        "dtype",
        "torch_version",
    ):
        assert key in a
    assert a["dataset"] == "synthetic-arrangement" and "ImageNet" in a["dataset_note"]
    assert a["params"] == fb.count("test-vit", num_classes=8).params


def test_resume_after_a_kill_gives_the_straight_run(tmp_path):
    """Kill -9 a CLI-equivalent run after epoch 1's checkpoint (in epoch 2's callback), resume it, compare with a run
    that was never interrupted: same metrics, same weights."""
    killed = tmp_path / "killed"
    script = textwrap.dedent(f"""
        import time, funnelbench as fb
        fb.train("test-funnel", out={str(killed)!r}, epochs=3, **{TINY!r},
                 callback=lambda m: time.sleep(600) if m["epoch"] == 2 else None)
    """)
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while not (killed / "history.csv").exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.time() < deadline, "the run never finished epoch 1"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert len(read_history(killed)) == 1

    epochs_run = []
    resumed = fb.train(
        "test-funnel", out=killed, resume=True, epochs=3, callback=lambda m: epochs_run.append(m["epoch"]), **TINY
    )
    straight = fb.train("test-funnel", out=tmp_path / "straight", epochs=3, **TINY)
    assert epochs_run == [2, 3]
    assert numbers(read_history(killed)) == numbers(read_history(tmp_path / "straight"))
    assert same_weights(weights(killed), weights(tmp_path / "straight"))
    assert resumed["val_top1"] == straight["val_top1"] and resumed["epochs_done"] == 3


def test_interrupted_run_writes_a_record_and_resumes(tmp_path):
    class Pruned(Exception):
        pass

    def prune(metrics):
        raise Pruned(f"pruned at epoch {metrics['epoch']}")

    with pytest.raises(Pruned):
        fb.train("test-vit", out=tmp_path / "r", epochs=2, callback=prune, **TINY)
    record = json.loads((tmp_path / "r" / "record.json").read_text())[0]
    assert record["status"] == "interrupted" and "pruned at epoch 1" in record["error"] and record["epochs_done"] == 1
    done = fb.train("test-vit", out=tmp_path / "r", epochs=2, resume=True, **TINY)
    assert done["status"] == "completed" and done["epochs_done"] == 2


def test_callback_sees_every_epoch_and_can_stop_the_run(tmp_path):
    seen = []

    def stop_after_two(metrics):
        seen.append(metrics)
        return metrics["epoch"] == 2

    record = fb.train("test-vit", out=tmp_path / "s", epochs=5, callback=stop_after_two, **TINY)
    assert [m["epoch"] for m in seen] == [1, 2]
    assert set(seen[0]) == {"epoch", *EPOCH_METRICS}
    assert record["status"] == "stopped" and record["epochs_done"] == 2
    assert seen[1]["val_top1"] == record["val_top1"]


# ----------------------------------------------------------------------------- failures


def test_nan_loss_stops_with_a_record(tmp_path):
    record = fb.train("test-vit", out=tmp_path / "n", epochs=2, lr=1e30, **TINY)
    assert record["status"] == "diverged" and "nan" in record["error"].lower() and "epoch 1" in record["error"]
    assert json.loads((tmp_path / "n" / "record.json").read_text())[0]["status"] == "diverged"
    result = cli("train", "test-vit", "--out", tmp_path / "n2", "--lr", "1e30", *TINY_FLAGS)
    assert result.exit_code == 1
    err = result.stderr.strip()
    assert err.startswith("error: the loss became nan") and "\n" not in err and "record.json" in err


def test_the_first_bad_step_is_named_without_a_read_per_step(tmp_path, monkeypatch):
    """The loss turns NaN at step 2 of 4; the on-device flag is read once, at the epoch's end,
    and still names step 2."""
    reads = []
    real_read = Trainer._raise_if_diverged

    def counted(self, *args):
        reads.append(self.epoch)
        return real_read(self, *args)

    monkeypatch.setattr(Trainer, "_raise_if_diverged", counted)
    with Trainer(TrainConfig(layout="test-vit", epochs=1, **TINY), out=tmp_path / "r") as trainer:
        assert trainer.steps_per_epoch == 4 < trainer.check_every
        real_loss, calls = trainer.criterion, []

        def nan_at_step_2(logits, y):
            calls.append(1)
            loss = real_loss(logits, y)
            return loss * float("nan") if len(calls) == 2 else loss

        trainer.criterion = nan_at_step_2
        record = trainer.fit()
    assert record["status"] == "diverged" and "loss became nan at epoch 1, step 2 " in record["error"]
    assert len(calls) == 4 and reads == [0]  # every step ran; one read


@pytest.mark.parametrize(
    "args, words",
    [
        (["--data", "/no/such/folder"], ["--data /no/such/folder", "no such file"]),
        (["--image-size", "30"], ["not a multiple of --patch-size 8"]),
        (["--resume"], ["--resume", "no checkpoint"]),
        (["--batch-size", "4096"], ["larger than the 128 training images"]),
        (["--dtype", "fp8"], ["--dtype fp8"]),
        (["--out", "file.txt"], ["is a file"]),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, words):
    (tmp_path / "file.txt").write_text("x")
    result = cli("train", "test-vit", "--out", tmp_path / "run", *TINY_FLAGS, *args)
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    for word in words:
        assert word in err


def test_an_existing_run_is_not_overwritten_or_resumed_with_other_options(tmp_path):
    out = tmp_path / "run"
    assert cli("train", "test-vit", "--out", out, "--epochs", "1", *TINY_FLAGS).exit_code == 0
    again = cli("train", "test-vit", "--out", out, "--epochs", "1", *TINY_FLAGS)
    assert again.exit_code == 2 and "--resume" in again.stderr and "--overwrite" in again.stderr
    other = cli("train", "test-vit", "--out", out, "--epochs", "1", "--lr", "0.002", "--resume", *TINY_FLAGS)
    assert other.exit_code == 2 and "lr=0.001" in other.stderr
    assert cli("train", "test-vit", "--out", out, "--epochs", "1", "--overwrite", *TINY_FLAGS).exit_code == 0


# ----------------------------------------------------------------------------- the command


@pytest.mark.parametrize("command", ["train", "finetune"])
def test_every_config_field_is_an_option(command):
    """The options are made from TrainConfig's fields: a new field cannot miss the CLI."""
    import typer.main

    from funnelbench.train import TrainConfig as Config

    group = typer.main.get_command(app)
    options = {opt for p in group.commands[command].params if p.param_type_name == "option" for opt in p.opts}
    for f in dataclasses.fields(Config):
        if f.name in ("layout", "finetune_from"):  # the commands' own arguments
            continue
        assert "--" + f.name.replace("_", "-") in options, f.name
        assert f.metadata["help"] and f.metadata["panel"] in ("Data", "Recipe", "Augmentation", "Run")


def test_train_command_json_and_files(tmp_path):
    out = tmp_path / "run"
    result = cli("train", "test-funnel", "--out", out, "--epochs", "2", "--json", *TINY_FLAGS)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["layout"] == str(fb.resolve("test-funnel")) and record["epochs_done"] == 2
    assert record["dataset"] == "synthetic-arrangement" and record["hflip"] is False and record["crop_pad"] == 4
    assert "synthetic" in result.stderr and "ImageNet" in result.stderr  # named honestly on screen too
    assert [row["epoch"] for row in read_history(out)] == [1.0, 2.0]
    assert json.loads((out / "record.json").read_text())[0]["val_top1"] == record["val_top1"]
    default = cli("train", "test-vit", "--epochs", "1", *TINY_FLAGS)  # default --out under runs/
    assert default.exit_code == 0 and "runs/train-" in default.stdout


def test_train_on_an_imagefolder_tree_with_a_broken_image(tmp_path):
    from test_data import _image_tree

    root = _image_tree(tmp_path / "tree", classes=("cat", "dog"), per_class=8, val_per_class=4)
    (root / "train" / "cat" / "broken.jpg").write_bytes(b"not a jpeg")
    result = cli(
        "train", "test-vit", "--data", root, "--epochs", "1", "--batch-size", "8", "--out", tmp_path / "r", "--json"
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["dataset"] == f"imagefolder:{root}" and record["num_classes"] == 2
    assert record["train_images"] == 16 and record["skipped_images"] == 1
    assert record["hflip"] is True and record["val_top5"] is None  # flips on for real data; top-5 needs > 5 classes
    assert "warning: skipped 1 unreadable train image" in result.stderr


def test_proxy_resolution_from_the_command_line(tmp_path):
    result = cli(
        "train",
        "B1(17)-1(9), h32, a2, img32, patch8",
        "--image-size",
        "16",
        "--patch-size",
        "4",
        "--epochs",
        "1",
        "--out",
        tmp_path / "r",
        "--json",
        *TINY_FLAGS,
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["layout"] == "B1(17)-1(9), h32, a2, img16, patch4" and record["image_size"] == 16


# ----------------------------------------------------------------------------- DDP


def test_two_gloo_processes_match_one_process(tmp_path):
    """torchrun with 2 CPU processes (gloo), the per-rank batch halved, MixUp and CutMix on (they
    mix the gathered global batch): the same steps as one process, so the same metrics up to
    floating-point summation order; rank 0 alone logs and
    prints its record (--json: stdout is one JSON document)."""
    args = [
        "train",
        "test-vit",
        "--epochs",
        "2",
        "--device",
        "cpu",
        "--json",
        "--mixup",
        "0.8",
        "--cutmix",
        "1.0",
        *TINY_FLAGS,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "funnelbench",
            *args,
            "--out",
            str(tmp_path / "ddp"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    assert ddp.stderr.count("epoch   1/2") == 1 and ddp.stderr.count("epoch   2/2") == 1
    printed = json.loads(ddp.stdout)  # one JSON document: rank 0's record alone
    single = fb.train("test-vit", out=tmp_path / "one", epochs=2, device="cpu", mixup=0.8, cutmix=1.0, **TINY)
    record = json.loads((tmp_path / "ddp" / "record.json").read_text())[0]
    assert printed["train_img_per_s"] == record["train_img_per_s"]
    assert record["world_size"] == 2 and single["world_size"] == 1
    for key in ("train_loss", "val_loss"):
        assert record[key] == pytest.approx(single[key], rel=1e-4)
    assert abs(record["val_top1"] - single["val_top1"]) <= 1 / 64
    for a, b in zip(read_history(tmp_path / "ddp"), read_history(tmp_path / "one")):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)


# ----------------------------------------------------------------------------- nothing lost


def test_overwrite_keeps_the_old_run_until_the_new_one_writes(tmp_path, monkeypatch):
    out = tmp_path / "good"
    files = ("checkpoint.pt", "history.csv", "record.json")
    assert cli("train", "test-vit", "--out", out, "--epochs", "2", *TINY_FLAGS).exit_code == 0
    old = {name: (out / name).read_bytes() for name in files}
    bad = cli("train", "B6(197)-6(98)", "--out", out, "--overwrite", *TINY_FLAGS)  # a layout error
    assert bad.exit_code == 2 and bad.stderr.startswith("error: ")
    assert {name: (out / name).read_bytes() for name in files} == old

    def interrupted(self, epoch, progress=None):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:  # a new run that dies before its first write
        m.setattr(Trainer, "train_epoch", interrupted)
        with pytest.raises(KeyboardInterrupt):
            fb.train("test-vit", out=out, overwrite=True, epochs=1, **TINY)
    assert {name: (out / name).read_bytes() for name in files} == old

    still_there = []
    record = fb.train(
        "test-vit",
        out=out,
        overwrite=True,
        epochs=1,
        seed=1,
        **TINY,
        callback=lambda m: still_there.append(all((out / n).read_bytes() == old[n] for n in files)),
    )
    assert still_there == [True]  # after the new run's first epoch, before its first write
    assert record["seed"] == 1 and len(read_history(out)) == 1
    assert torch.load(out / "checkpoint.pt", weights_only=True)["config"]["seed"] == 1
    assert sorted(p.name for p in out.iterdir()) == sorted(files)  # no temporary file left


def test_out_of_memory_is_one_line_exit_1_and_an_oom_record(tmp_path, monkeypatch):
    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore text")

    with monkeypatch.context() as m:
        m.setattr(Trainer, "train_epoch", oom)
        result = cli("train", "test-vit", "--out", tmp_path / "r", *TINY_FLAGS)
    assert result.exit_code == 1
    err = result.stderr.strip()
    assert err.startswith("error: out of memory in epoch 1 (CUDA out of memory. Tried to allocate 2.00 GiB)")
    assert "smaller --batch-size" in err and "\n" not in err and "record.json" in err
    record = json.loads((tmp_path / "r" / "record.json").read_text())[0]
    assert record["status"] == "oom" and record["epochs_done"] == 0 and "smaller --batch-size" in record["error"]

    with monkeypatch.context() as m:  # a model too large to build
        m.setattr(train_module, "build_model", oom)
        record = fb.train("test-vit", out=tmp_path / "b", epochs=1, **TINY)
    assert record["status"] == "oom" and "while building the model" in record["error"]
    assert json.loads((tmp_path / "b" / "record.json").read_text())[0]["status"] == "oom"


def test_resume_refuses_where_auto_now_means_another_device_or_dtype(tmp_path):
    out = tmp_path / "r"
    fb.train("test-vit", out=out, epochs=2, callback=lambda m: "stop", **TINY)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert (state["device_type"], state["dtype_resolved"]) == ("cpu", "fp32")
    state.update(device_type="cuda", dtype_resolved="bf16")  # as if it had run on a GPU
    torch.save(state, out / "checkpoint.pt")
    with pytest.raises(
        fb.UsageError, match="trained in bf16 on cuda, but --device auto / --dtype auto now mean fp32 on cpu"
    ):
        fb.train("test-vit", out=out, epochs=2, resume=True, **TINY)


# ----------------------------------------------------------------------------- the recipe's options


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    return fb.load_data(
        None, image_size=32, train_per_class=4, val_per_class=2, cache_dir=tmp_path_factory.mktemp("cache")
    )


SMALL = dict(epochs=1, batch_size=16, checkpoint="none")  # 32 images: 2 steps


@pytest.mark.parametrize(
    "options",
    [
        dict(mixup=0.8),
        dict(cutmix=1.0),
        dict(mixup=0.8, cutmix=1.0),
        dict(randaugment=2),
        dict(dtype="bf16"),
        dict(dtype="fp16"),
    ],
    ids=["mixup", "cutmix", "mixup+cutmix", "randaugment", "bf16", "fp16"],
)
def test_recipe_options_train_change_the_numbers_and_repeat(tmp_path, small_data, options):
    plain = fb.train("test-vit", data=small_data, out=tmp_path / "plain", **SMALL)
    a = fb.train("test-vit", data=small_data, out=tmp_path / "a", **SMALL, **options)
    b = fb.train("test-vit", data=small_data, out=tmp_path / "b", **SMALL, **options)
    assert a["status"] == "completed" and math.isfinite(a["train_loss"])
    assert a["train_loss"] == b["train_loss"] and a["val_loss"] == b["val_loss"]  # deterministic
    assert a["train_loss"] != plain["train_loss"]  # the option took effect
    assert a["dtype"] == options.get("dtype", "fp32")


def test_fp16_takes_the_gradient_scaler_path(tmp_path, small_data):
    with Trainer(TrainConfig(layout="test-vit", dtype="fp16", **SMALL), out=tmp_path / "r", data=small_data) as trainer:
        assert trainer.scaler.is_enabled()
        trainer.fit()
        assert trainer.scaler.get_scale() > 0 and trainer.scaler.state_dict()["scale"] > 0


def test_results_do_not_depend_on_the_workers(tmp_path, small_data):
    """Loader processes draw each sample's augmentation from (seed, epoch, position) alone."""
    zero = fb.train("test-vit", data=small_data, out=tmp_path / "w0", randaugment=1, **SMALL)
    two = fb.train("test-vit", data=small_data, out=tmp_path / "w2", randaugment=1, workers=2, **SMALL)
    assert zero["train_loss"] == two["train_loss"] and zero["val_loss"] == two["val_loss"]
