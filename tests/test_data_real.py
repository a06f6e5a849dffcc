"""Real data: Fashion-MNIST from Debian's package (the real files: skipped locally only when the
package is missing, failed where FUNNELBENCH_REQUIRE_FASHION_MNIST is set, as CI does), idx
folders and downsampled-ImageNet batches (small files in the exact format), and the three splits:
validation chooses, the test split is read once at the end and never reaches a callback, a
pruner or a search's objective."""

import gzip
import json
import os

import numpy as np
import pytest
from data_files import FASHION_MNIST_DIR, write_batches, write_idx
from typer.testing import CliRunner

import funnelbench as fb
from funnelbench import data as D
from funnelbench.cli import app
from funnelbench.train import EPOCH_METRICS, Trainer, make_config

runner = CliRunner()


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv(D.CACHE_ENV, str(tmp_path / "cache"))


@pytest.fixture
def fashion_mnist():
    """The Debian package's folder; skipped when it is missing, unless CI requires it."""
    if not (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        if os.environ.get("FUNNELBENCH_REQUIRE_FASHION_MNIST"):
            pytest.fail(
                f"FUNNELBENCH_REQUIRE_FASHION_MNIST is set but {FASHION_MNIST_DIR} has no Fashion-MNIST: "
                "install Debian's dataset-fashion-mnist (.ci/run does)"
            )
        pytest.skip("Debian's dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")
    return FASHION_MNIST_DIR


def _raw_idx(path):
    raw = gzip.open(path).read()
    n, rows, cols = np.frombuffer(raw[4:16], ">u4")
    return np.frombuffer(raw[16:], np.uint8).reshape(n, rows, cols)


# ----------------------------------------------------------------------------- Fashion-MNIST


def test_fashion_mnist_splits_the_real_files_three_ways(fashion_mnist):
    data = fb.load_data("fashion-mnist", image_size=32, train_per_class=30, test_per_class=40)
    assert data.name == "fashion-mnist" and data.num_classes == 10 and data.classes[0] == "T-shirt/top"
    assert data.hflip_ok  # a flipped shoe is a shoe
    # validation: 500 per class carved from the 60,000 training images; test: the official t10k
    assert np.bincount(data.val.labels).tolist() == [500] * 10
    assert np.bincount(data.train.labels).tolist() == [30] * 10 and np.bincount(data.test.labels).tolist() == [40] * 10
    assert "carved from the training images: 500 per class" in data.val_from and "t10k" in data.test_from
    # 28 px grey -> 3 identical channels, padded with 2 black px per side
    test = _raw_idx(fashion_mnist / "t10k-images-idx3-ubyte.gz")
    labels = np.frombuffer(gzip.open(fashion_mnist / "t10k-labels-idx1-ubyte.gz").read()[8:], np.uint8)
    first = np.flatnonzero(labels == 0)[:40]  # the subset keeps order within a class
    row = int(np.flatnonzero(data.test.labels == 0)[0])
    image = data.test.images[data.test.index[row]]
    assert image.shape == (3, 32, 32) and (image[0] == image[1]).all() and (image[0] == image[2]).all()
    assert image[:, :2].max() == 0 and image[:, :, -2:].max() == 0
    assert any((image[0, 2:30, 2:30] == test[i]).all() for i in first)


def test_fashion_mnist_validation_is_fixed_and_disjoint_from_training(fashion_mnist):
    source = D.open_source("fashion-mnist")
    chosen = list(range(10))
    a = D.split_plan(
        source, chosen, test_split=None, train_per_class=100, val_per_class=None, test_per_class=None, subset_seed=0
    )
    b = D.split_plan(
        source, chosen, test_split=None, train_per_class=None, val_per_class=50, test_per_class=None, subset_seed=7
    )
    assert a["val"].native == a["train"].native == "train" and a["test"].native == "test"
    assert len(a["val"].items) == 5000 and len(a["test"].items) == 10000 and len(b["train"].items) == 59500
    assert not set(a["val"].items) & set(a["train"].items) and not set(b["val"].items) & set(b["train"].items)
    # the same validation images whatever the subset seed; a smaller carve is a subset of the larger one
    assert set(b["val"].items) <= set(a["val"].items)
    # --no-test-split: validation on the official test images, no test split
    c = D.split_plan(
        source, chosen, test_split=False, train_per_class=None, val_per_class=None, test_per_class=None, subset_seed=0
    )
    assert set(c) == {"train", "val"} and c["val"].native == "test" and len(c["train"].items) == 60000


def test_fashion_mnist_second_load_decodes_nothing(fashion_mnist, monkeypatch):
    first = fb.load_data("fashion-mnist", image_size=16, train_per_class=5, val_per_class=5, test_per_class=5)
    monkeypatch.setattr(D, "read_idx", lambda path, magic: pytest.fail(f"decoded {path} again"))
    again = fb.load_data("fashion-mnist", image_size=16, train_per_class=5, val_per_class=5, test_per_class=5)
    for split in ("train", "val", "test"):
        assert getattr(again, split).cache_path == getattr(first, split).cache_path
        assert (np.asarray(getattr(again, split).images) == np.asarray(getattr(first, split).images)).all()


def test_train_on_fashion_mnist_records_val_and_test_top1(fashion_mnist, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "train",
            "test-vit",
            "--data",
            "fashion-mnist",
            "--epochs",
            "1",
            "--train-per-class",
            "10",
            "--val-per-class",
            "5",
            "--test-per-class",
            "8",
            "--batch-size",
            "20",
            "--out",
            str(out),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["dataset"] == "fashion-mnist" and record["status"] == "completed"
    assert (record["train_images"], record["val_images"], record["test_images"]) == (100, 50, 80)
    assert 0 <= record["val_top1"] <= 1 and 0 <= record["test_top1"] <= 1 and record["test_epoch"] == 1
    assert record["hflip"] is True and "t10k" in record["test_from"] and "carved" in record["val_from"]
    assert record["crop_pad"] == 0  # centred, size-normalised images: no padded random crop unless asked
    assert "test" not in (out / "history.csv").read_text().splitlines()[0]  # per epoch: validation only


# ----------------------------------------------------------------------------- idx folders


@pytest.mark.parametrize("gz", [True, False])
def test_an_idx_folder_trains_and_does_not_flip_by_default(tmp_path, gz):
    written = write_idx(tmp_path / "mnist", n_train=40, n_test=20, gz=gz)
    data = fb.load_data(tmp_path / "mnist", image_size=28, val_per_class=1)
    assert data.name == f"idx:{tmp_path / 'mnist'}" and not data.hflip_ok  # digits change under a flip
    assert data.classes == [str(i) for i in range(10)]
    assert (data.test.images[:, 0] == written["t10k"][0]).all()  # 28 px: as is
    assert data.test.labels.tolist() == written["t10k"][1].tolist()
    resized = fb.load_data(tmp_path / "mnist", image_size=16, val_per_class=1)
    assert resized.train.images.shape[1:] == (3, 16, 16)


def test_the_crop_default_follows_the_source_and_the_flag_wins(tmp_path):
    from funnelbench.training.recipe import make_augment

    write_idx(tmp_path / "mnist", n_train=40, n_test=20, gz=True)
    idx = fb.load_data(tmp_path / "mnist", image_size=32, val_per_class=1)
    builtin = fb.load_data(None, image_size=32, train_per_class=2, val_per_class=1, cache_dir=tmp_path / "c")
    assert not idx.crop_ok and builtin.crop_ok
    assert make_augment(make_config("test-vit"), idx, 32).crop_pad == 0
    assert make_augment(make_config("test-vit"), builtin, 32).crop_pad == 4  # image size / 8
    assert make_augment(make_config("test-vit", crop_pad=3), idx, 32).crop_pad == 3


# ----------------------------------------------------------------------------- downsampled ImageNet


@pytest.mark.parametrize("fmt", ["npz", "pickle"])
def test_downsampled_imagenet_reads_planes_and_splits_three_ways(tmp_path, fmt):
    written = write_batches(tmp_path / "imagenet8", size=8, classes=4, per_class=6, val_per_class=3, fmt=fmt)
    data = fb.load_data(tmp_path / "imagenet8", image_size=8, val_per_class=2)
    assert data.kind == "downsampled-imagenet" and data.classes == ["1", "2", "3", "4"]
    # the official val_data is the test split, in order, labels from 1 made 0-based
    images, labels = written["val"]
    assert (np.asarray(data.test.images) == images).all() and data.test.labels.tolist() == (labels - 1).tolist()
    # validation carved from the training batches (2 per class), training on the rest: together all of them
    assert np.bincount(data.val.labels).tolist() == [2] * 4 and np.bincount(data.train.labels).tolist() == [4] * 4
    seen = {x.tobytes() for split in (data.train, data.val) for x in np.asarray(split.images)}
    assert seen == {x.tobytes() for x in written["train"][0]}
    # --classes K takes the first K (ImageNet16-120 style), --train-per-class subsets
    first = fb.load_data(tmp_path / "imagenet8", image_size=16, classes=3, train_per_class=2, val_per_class=1)
    assert first.classes == ["1", "2", "3"] and first.train.images.shape[1:] == (3, 16, 16)
    assert np.bincount(first.train.labels).tolist() == [2] * 3 and len(first.test) == 9


def test_downsampled_imagenet_second_load_opens_no_batch_file(tmp_path, monkeypatch):
    write_batches(tmp_path / "imagenet8", fmt="pickle")
    first = fb.load_data(tmp_path / "imagenet8", image_size=8, val_per_class=1)
    monkeypatch.setattr(D, "read_batch", lambda path, **k: pytest.fail(f"opened {path} again"))
    again = fb.load_data(tmp_path / "imagenet8", image_size=8, val_per_class=1)
    assert again.test.cache_path == first.test.cache_path and len(again.train) == len(first.train)


def test_a_downsampled_imagenet_folder_trains_from_the_command_line(tmp_path):
    write_batches(tmp_path / "imagenet8", classes=3, per_class=8)
    result = runner.invoke(
        app,
        [
            "train",
            "test-vit",
            "--data",
            str(tmp_path / "imagenet8"),
            "--epochs",
            "1",
            "--val-per-class",
            "2",
            "--batch-size",
            "6",
            "--out",
            str(tmp_path / "run"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["dataset"] == f"downsampled-imagenet:{tmp_path / 'imagenet8'}"
    assert (record["train_images"], record["val_images"], record["test_images"]) == (18, 6, 9)
    assert record["test_top1"] is not None and record["test_from"] == "the official val_data"


# ----------------------------------------------------------------------------- the three splits


def test_builtin_data_gets_a_test_split_only_when_asked_and_keeps_its_old_splits(tmp_path):
    old = fb.load_data(None, image_size=16, train_per_class=4, val_per_class=3)
    assert old.test is None and old.test_from.startswith("none")
    three = fb.load_data(None, image_size=16, train_per_class=4, val_per_class=3, test_split=True, test_per_class=2)
    assert three.train.cache_path == old.train.cache_path and three.val.cache_path == old.val.cache_path
    assert len(three.test) == 16 and np.bincount(three.test.labels).tolist() == [2] * 8
    assert not {x.tobytes() for x in np.asarray(three.test.images)} & {x.tobytes() for x in np.asarray(old.val.images)}


def test_imagefolder_with_a_test_split_carves_validation_from_train(tmp_path):
    from PIL import Image

    for split, n in (("train", 5), ("val", 2)):
        for c in ("cat", "dog"):
            (tmp_path / "tree" / split / c).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (12, 12), (i * 40, 0, 0)).save(tmp_path / "tree" / split / c / f"{i}.png")
    plain = fb.load_data(tmp_path / "tree", image_size=8)
    assert (len(plain.train), len(plain.val), plain.test) == (10, 4, None)
    three = fb.load_data(tmp_path / "tree", image_size=8, test_split=True, val_per_class=1)
    assert (len(three.train), len(three.val), len(three.test)) == (8, 2, 4) and three.test_from == "val/"


def test_the_test_split_is_read_once_after_every_callback_and_never_reaches_one(tmp_path, monkeypatch):
    """The callback (what a search's pruner and objective read) sees validation metrics only; the
    test split is evaluated once, after the last callback, and lands in the record."""
    events = []
    real_evaluate = Trainer.evaluate
    monkeypatch.setattr(
        Trainer, "evaluate", lambda self, split="val": events.append(split) or real_evaluate(self, split)
    )
    seen = []

    def callback(row):
        seen.append(dict(row))
        events.append("callback")

    data = fb.load_data(None, image_size=32, train_per_class=4, val_per_class=2, test_split=True, test_per_class=2)
    config = make_config("test-vit", epochs=3, batch_size=16, test_split=True)
    with Trainer(config, out=tmp_path / "run", data=data, callback=callback) as trainer:
        record = trainer.fit()
    assert events == ["val", "callback"] * 3 + ["test"]
    assert all(set(row) == {"epoch", *EPOCH_METRICS} for row in seen)
    assert record["test_epoch"] == 3 and record["test_images"] == 16 and record["test_top1"] is not None
    # a pruned run is not a final result: no test number
    pruned = fb.train(
        "test-vit", out=tmp_path / "pruned", data=data, epochs=2, batch_size=16, callback=lambda row: "prune"
    )
    assert pruned["status"] == "pruned" and pruned["test_top1"] is None and events[-1] == "val"


def test_a_search_shows_test_top1_but_its_pruner_and_objective_read_validation(tmp_path, monkeypatch):
    import optuna

    reported = []
    real_report = optuna.trial.Trial.report
    monkeypatch.setattr(
        optuna.trial.Trial,
        "report",
        lambda self, value, step: reported.append((self.number, step, value)) or real_report(self, value, step),
    )
    write_batches(tmp_path / "imagenet8", classes=3, per_class=8, val_per_class=6, seed=3)
    study = fb.search(
        "tiny",
        trials=2,
        pruner="median",
        data=str(tmp_path / "imagenet8"),
        epochs=2,
        val_per_class=2,
        batch_size=6,
        root=tmp_path / "runs",
    )
    trained = [t for t in study.trials if t.user_attrs.get("run_dir") and t.user_attrs["status"] == "completed"]
    assert trained
    differs = False
    for t in trained:
        run = tmp_path / study.user_attrs["out"] / t.user_attrs["run_dir"]
        record = json.loads((run / "record.json").read_text())[0]
        history = [line.split(",") for line in (run / "history.csv").read_text().splitlines()]
        val = [100 * float(row[history[0].index("val_top1")]) for row in history[1:]]
        assert t.user_attrs["test_top1"] == pytest.approx(100 * record["test_top1"])
        assert t.value == pytest.approx(max(val)) == pytest.approx(t.user_attrs["top1"])
        assert [v for n, _, v in reported if n == t.number] == pytest.approx(val)
        differs |= t.user_attrs["test_top1"] != pytest.approx(t.value)
    assert differs  # otherwise the checks above could not tell the splits apart
    from funnelbench.search.report import trial_records, trial_table

    table = trial_table(trial_records(study))
    assert all("test_top1" in row for row in table)
    assert {round(t.user_attrs["test_top1"], 2) for t in trained} <= {row["test_top1"] for row in table}
