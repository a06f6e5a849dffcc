"""Datasets: the built-in synthetic data, ImageFolder and CIFAR folders, subsets, the uint8
cache, and the batches the trainer reads (sharding and augmentation)."""

import hashlib
import json
import math
import os
import pickle
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import funnelbench as fb
from funnelbench import data as D


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv(D.CACHE_ENV, str(tmp_path / "cache"))


# ----------------------------------------------------------------------------- built-in


def test_builtin_is_deterministic_balanced_and_split():
    x1, y1 = D.render_arrangement("train", 0, 300, 32)
    x2, y2 = D.render_arrangement("train", 0, 300, 32)
    assert x1.dtype == torch.uint8 and x1.shape == (300, 3, 32, 32)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert torch.equal(y1, torch.arange(300) % 8)
    xv, _ = D.render_arrangement("val", 0, 300, 32)
    assert not torch.equal(x1, xv)
    # Any range renders the same pixels as the whole (chunks have their own seeds).
    part, _ = D.render_arrangement("train", 250, 270, 32)
    assert torch.equal(part, x1[250:270])


def _centroid(mask):
    ys, xs = np.nonzero(mask)
    return xs.mean(), ys.mean()


def test_builtin_class_is_the_direction_from_the_square_to_the_disc():
    """Found independently from the pixels: red square, blue disc, angle between centroids."""
    x, y = D.render_arrangement("val", 0, 200, 64)
    img = x.permute(0, 2, 3, 1).numpy().astype(int)
    for i in range(len(y)):
        r, g, b = img[i, ..., 0], img[i, ..., 1], img[i, ..., 2]
        red = (r > 200) & (g < 100) & (b < 100)
        blue = (b > 200) & (r < 100) & (g < 180)
        assert red.sum() > 10 and blue.sum() > 10
        (ax, ay), (bx, by) = _centroid(red), _centroid(blue)
        angle = math.degrees(math.atan2(-(by - ay), bx - ax)) % 360
        assert round(angle / 45) % 8 == y[i], (i, angle)


def test_builtin_subset_and_names():
    data = fb.load_data(image_size=32, train_per_class=8, val_per_class=4)
    assert data.name == "synthetic-arrangement" and "ImageNet" in data.note and not data.hflip_ok
    assert data.classes == list(D.DIRECTIONS)
    assert np.bincount(data.train.labels).tolist() == [8] * 8
    assert np.bincount(data.val.labels).tolist() == [4] * 8
    four = fb.load_data(image_size=32, train_per_class=8, val_per_class=4, classes=4, subset_seed=3)
    assert four.num_classes == 4 and set(four.train.labels.tolist()) == {0, 1, 2, 3}
    assert set(four.classes) < set(D.DIRECTIONS)


# ----------------------------------------------------------------------------- the cache


def test_second_load_reads_the_cache_not_the_source(tmp_path, monkeypatch):
    first = fb.load_data(image_size=32, train_per_class=4, val_per_class=2)
    monkeypatch.setattr(D, "render_arrangement", lambda *a, **k: pytest.fail("decoded again"))
    second = fb.load_data(image_size=32, train_per_class=4, val_per_class=2)
    assert second.train.cache_path == first.train.cache_path
    assert np.array_equal(second.train.images, first.train.images)
    assert second.train.images.dtype == np.uint8 and second.train.images.shape == (32, 3, 32, 32)
    assert str(second.train.cache_path).startswith(str(tmp_path / "cache"))


def test_cache_is_keyed_by_size_and_subset(tmp_path):
    paths = {
        fb.load_data(image_size=s, train_per_class=n, val_per_class=2).train.cache_path
        for s, n in ((32, 4), (40, 4), (32, 5))
    }
    assert len(paths) == 3
    other = fb.load_data(image_size=32, train_per_class=4, val_per_class=2, cache_dir=tmp_path / "elsewhere")
    assert str(other.train.cache_path).startswith(str(tmp_path / "elsewhere"))


def test_interrupted_cache_build_resumes_where_it_stopped(tmp_path, monkeypatch):
    real_read = D._Builtin.read
    starts = []

    def read_then_die(self, split, items, size, workers):
        starts.append(len(items))
        for i, chunk in enumerate(real_read(self, split, items, size, workers)):
            if split == "train" and i == 1 and len(starts) == 1:
                raise KeyboardInterrupt
            yield chunk

    monkeypatch.setattr(D._Builtin, "read", read_then_die)
    with pytest.raises(KeyboardInterrupt):
        fb.load_data(image_size=16, train_per_class=40, val_per_class=2)  # 320 images: 2 chunks
    cache = tmp_path / "cache"
    folders = [p.name for p in cache.iterdir() if p.is_dir()]  # the train split's build, not an entry yet
    assert len(folders) == 1 and folders[0].startswith(f".{D.BUILTIN}-train-") and folders[0].endswith(".partial")
    resumed = fb.load_data(image_size=16, train_per_class=40, val_per_class=2)
    assert starts[:2] == [320, 320 - D.CHUNK]  # the second build read only what was missing
    fresh = fb.load_data(image_size=16, train_per_class=40, val_per_class=2, cache_dir=tmp_path / "fresh")
    assert np.array_equal(resumed.train.images, fresh.train.images)
    assert np.array_equal(resumed.train.labels, fresh.train.labels)


# ----------------------------------------------------------------------------- concurrent builds


# Run in two OS processes: load the same cold entries at the same moment (every read of the
# sources slowed down, so the builds overlap), wait for the other process to finish too, then
# hash what each one got (its memory map would show another process's later writes) and count
# the chunks it read from the sources.
_BUILD_IN_CHILD = r"""
import hashlib, json, sys, time
from pathlib import Path
import funnelbench as fb
from funnelbench import data as D

folder, me, tree = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
reads = []
for cls in (D._Builtin, D._ImageFolder):
    def slow(self, *args, _read=cls.read):
        for chunk in _read(self, *args):
            reads.append(1)
            time.sleep(0.1)
            yield chunk
    cls.read = slow

def all_there(prefix):
    deadline = time.time() + 60
    while len(list(folder.glob(prefix + "-*"))) < 2 and time.time() < deadline:
        time.sleep(0.002)

(folder / f"ready-{me}").touch()
all_there("ready")
loaded = {"builtin": fb.load_data(image_size=16, train_per_class=70, val_per_class=2),
          "tree": fb.load_data(tree, image_size=16)}
(folder / f"done-{me}").touch()
all_there("done")
print(json.dumps({"reads": len(reads), "arrays": {
    name: {split: [hashlib.sha256(a.tobytes()).hexdigest() for a in (s.images, s.index, s.labels)]
           for split, s in (("train", d.train), ("val", d.val))} for name, d in loaded.items()}}))
"""


def _digests(data):
    return {
        split: [hashlib.sha256(a.tobytes()).hexdigest() for a in (s.images, s.index, s.labels)]
        for split, s in (("train", data.train), ("val", data.val))
    }


def test_two_processes_building_the_same_entry_get_what_one_process_builds(tmp_path, monkeypatch):
    tree = _image_tree(tmp_path / "tree", per_class=40)  # 160 training images: 3 reads of 64
    env = {**os.environ, "PYTHONPATH": str(Path(fb.__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _BUILD_IN_CHILD, str(tmp_path), str(i), str(tree)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    reads = []
    for cls in (D._Builtin, D._ImageFolder):

        def counted(self, *args, _read=cls.read):
            for chunk in _read(self, *args):
                reads.append(1)
                yield chunk

        monkeypatch.setattr(cls, "read", counted)
    alone = tmp_path / "alone"
    expected = {
        "builtin": _digests(fb.load_data(image_size=16, train_per_class=70, val_per_class=2, cache_dir=alone)),
        "tree": _digests(fb.load_data(tree, image_size=16, cache_dir=alone)),
    }
    assert [r["arrays"] for r in results] == [expected, expected]
    assert sum(r["reads"] for r in results) == len(reads) == 8  # built once: the other process waited
    again = {
        "builtin": _digests(fb.load_data(image_size=16, train_per_class=70, val_per_class=2)),
        "tree": _digests(fb.load_data(tree, image_size=16)),
    }  # the shared cache, read back
    assert again == expected
    cache = Path(os.environ[D.CACHE_ENV])
    entries = sorted(p.name for p in cache.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(entries) == 5  # 2 splits x 2 sources, and the tree's listing index
    assert not [p for p in cache.iterdir() if ".partial" in p.name or ".trash" in p.name]


def test_a_killed_build_leaves_no_lock_and_resumes(tmp_path, monkeypatch):
    """A process killed (SIGKILL) while it builds: the operating system drops its lock, and the
    next build reads only the images it had not written."""
    child = (
        "import time\nimport funnelbench as fb\nfrom funnelbench import data as D\n"
        "real = D._Builtin.read\n"
        "def slow(self, *args):\n"
        "    for chunk in real(self, *args):\n"
        "        yield chunk\n"
        "        time.sleep(60)\n"
        "D._Builtin.read = slow\n"
        "fb.load_data(image_size=16, train_per_class=40, val_per_class=2)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(fb.__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", child], env=env)
    cache = Path(os.environ[D.CACHE_ENV])
    deadline = time.time() + 120
    while not any(
        json.loads(p.read_text() or "{}").get("done") == D.CHUNK for p in cache.glob(".*.partial/partial.json")
    ):
        assert proc.poll() is None and time.time() < deadline, "the builder never wrote its first chunk"
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    real_read, starts = D._Builtin.read, []
    monkeypatch.setattr(
        D._Builtin,
        "read",
        lambda self, split, items, *a: starts.append(len(items)) or real_read(self, split, items, *a),
    )
    resumed = fb.load_data(image_size=16, train_per_class=40, val_per_class=2)
    assert starts == [320 - D.CHUNK, 16]  # train: the rest only; val: all of it
    fresh = fb.load_data(image_size=16, train_per_class=40, val_per_class=2, cache_dir=tmp_path / "fresh")
    assert np.array_equal(resumed.train.images, fresh.train.images)


# ----------------------------------------------------------------------------- ImageFolder


def _image_tree(root, classes=("cat", "dog", "emu", "owl"), per_class=3, val_per_class=2, sizes=((40, 30), (24, 52))):
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", val_per_class)):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                w, h = sizes[i % len(sizes)]
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")
    return root


def test_imagefolder_resize_and_centre_crop_like_torchvision(tmp_path):
    from torchvision import transforms as T

    root = _image_tree(tmp_path / "tree")
    data = fb.load_data(root, image_size=16)
    assert data.kind == "imagefolder" and data.classes == ["cat", "dog", "emu", "owl"] and data.hflip_ok
    assert len(data.train) == 12 and len(data.val) == 8
    ref = T.Compose([T.Resize(16), T.CenterCrop(16), T.PILToTensor()])
    for pos, path in ((0, "train/cat/0.png"), (4, "train/dog/1.png")):
        x, label = data.train.take([pos])
        assert torch.equal(x[0], ref(Image.open(root / path).convert("RGB")))
        assert label.item() == ["cat", "dog"].index(path.split("/")[1])


def test_imagefolder_subset_is_seeded(tmp_path):
    root = _image_tree(tmp_path / "tree", per_class=4)
    a = fb.load_data(root, image_size=16, classes=2, train_per_class=2, subset_seed=0)
    b = fb.load_data(root, image_size=16, classes=2, train_per_class=2, subset_seed=0)
    assert a.classes == b.classes and len(a.train) == 4 and len(a.val) == 4
    assert np.array_equal(a.train.images, b.train.images)
    picks = {
        tuple(fb.load_data(root, image_size=16, classes=2, train_per_class=2, subset_seed=s).classes) for s in range(6)
    }
    assert len(picks) > 1


def test_unreadable_image_is_skipped_and_counted(tmp_path):
    root = _image_tree(tmp_path / "tree")
    (root / "train" / "dog" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.warns(UserWarning, match="skipped 1 unreadable train image"):
        data = fb.load_data(root, image_size=16)
    assert len(data.train) == 12 and data.skipped == 1 and "broken.jpg" in data.train.skipped[0]
    with warnings.catch_warnings(record=True) as caught:  # from the cache: still counted
        warnings.simplefilter("always")
        again = fb.load_data(root, image_size=16)
    assert again.skipped == 1 and caught


def _age_folders(root, days=1):
    """Date every folder of a tree back (a fresh folder's time is not trusted: see _scan_class)."""
    old = time.time() - days * 86400
    for folder in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        os.utime(folder, (old, old))


def _new_png(path, seed):
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(path, "PNG")


def test_replaced_images_make_a_new_entry_and_what_is_not_seen(tmp_path):
    from torchvision import transforms as T

    ref = T.Compose([T.Resize(16), T.CenterCrop(16), T.PILToTensor()])
    root = _image_tree(tmp_path / "tree")
    _age_folders(root)
    first = fb.load_data(root, image_size=16)
    cat0, dog1 = root / "train" / "cat" / "0.png", root / "train" / "dog" / "1.png"

    # Replaced through a rename (rsync, mv, most tools that write files whole): a new entry.
    _new_png(tmp_path / "incoming.png", 1)
    os.replace(tmp_path / "incoming.png", dog1)
    renamed = fb.load_data(root, image_size=16)
    assert renamed.train.cache_path != first.train.cache_path
    assert renamed.val.cache_path == first.val.cache_path
    assert torch.equal(renamed.train.take([4])[0][0], ref(Image.open(dog1).convert("RGB")))

    # Overwritten in place (same name, same folder time): not seen, as the README says ...
    _age_folders(root)
    stale = fb.load_data(root, image_size=16)
    _new_png(cat0, 2)
    assert fb.load_data(root, image_size=16).train.cache_path == stale.train.cache_path
    # ... until the class folder is touched.
    os.utime(cat0.parent)
    touched = fb.load_data(root, image_size=16)
    assert touched.train.cache_path not in (stale.train.cache_path, first.train.cache_path)
    assert torch.equal(touched.train.take([0])[0][0], ref(Image.open(cat0).convert("RGB")))


def test_a_cache_hit_lists_no_class_folder_and_stats_no_image(tmp_path, monkeypatch):
    root = _image_tree(tmp_path / "tree", per_class=6)
    _age_folders(root)
    first = fb.load_data(root, image_size=16)
    stats, scandirs = [], []
    real_stat, real_scandir = os.stat, os.scandir
    monkeypatch.setattr(os, "stat", lambda p, *a, **k: stats.append(str(p)) or real_stat(p, *a, **k))
    monkeypatch.setattr(os, "scandir", lambda *a, **k: scandirs.append(a) or real_scandir(*a, **k))
    monkeypatch.setattr(D, "_scan_class", lambda folder: pytest.fail(f"listed {folder} again"))
    again = fb.load_data(root, image_size=16)
    assert again.train.cache_path == first.train.cache_path and again.val.cache_path == first.val.cache_path
    assert scandirs == [] and not [p for p in stats if p.endswith(".png")]
    assert any(p.endswith("train/cat") for p in stats)  # the folders' times were checked
    monkeypatch.undo()
    (root / "val" / "owl" / "new.png").write_bytes((root / "val" / "owl" / "0.png").read_bytes())  # a file added
    assert len(fb.load_data(root, image_size=16).val) == len(first.val) + 1


@pytest.mark.parametrize(
    "setup, words",
    [
        (lambda r: None, ["no such file"]),
        (lambda r: (r / "train" / "a").mkdir(parents=True) or (r / "val" / "a").mkdir(parents=True), ["no images"]),
        (
            lambda r: _image_tree(r, classes=("a", "b")) and (r / "val" / "b").rename(r / "val" / "c"),
            ["different classes", "only in train: b", "only in val: c"],
        ),
        (lambda r: (r / "x").mkdir(parents=True), ["not an ImageFolder tree"]),
        (lambda r: r.parent.mkdir(exist_ok=True) or r.write_text("x"), ["is a file"]),
    ],
)
def test_bad_data_folders_are_one_line_errors(tmp_path, setup, words):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(fb.UsageError) as err:
        fb.load_data(root, image_size=16)
    assert "\n" not in str(err.value)
    for word in words:
        assert word in str(err.value)


def test_too_many_classes_is_an_error(tmp_path):
    with pytest.raises(fb.UsageError, match="--classes 9"):
        fb.load_data(image_size=16, classes=9, train_per_class=2, val_per_class=2)


# ----------------------------------------------------------------------------- CIFAR


def _fake_cifar10(root, per_batch=3):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3 * 32 * 32), dtype=np.uint8)
        labels = rng.integers(0, 10, per_batch).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels}, f)
        written[name] = (data.reshape(-1, 3, 32, 32), labels)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": names}, f)
    return written


def test_cifar10_python_folder_through_torchvision(tmp_path):
    written = _fake_cifar10(tmp_path / "c10")
    for given in (tmp_path / "c10", tmp_path / "c10" / "cifar-10-batches-py"):
        data = fb.load_data(given, image_size=32)
        assert data.kind == "cifar" and data.name.startswith("cifar10:") and data.num_classes == 10
        assert data.classes[0] == "airplane"
        images, labels = written["test_batch"]
        x, y = data.val.take(np.arange(3))
        assert torch.equal(x, torch.from_numpy(images)) and y.tolist() == labels
        assert len(data.train) == 15
    small = fb.load_data(tmp_path / "c10", image_size=16)
    assert small.train.images.shape == (15, 3, 16, 16)


def test_broken_cifar_folder_is_a_usage_error(tmp_path):
    (tmp_path / "c" / "cifar-10-batches-py").mkdir(parents=True)
    with pytest.raises(fb.UsageError, match="cannot read cifar10"):
        fb.load_data(tmp_path / "c", image_size=32)


# ----------------------------------------------------------------------------- batches


def test_ranks_take_consecutive_slices_of_the_same_global_batches():
    one = D.ShardedBatchSampler(70, 16, seed=5)
    two = [D.ShardedBatchSampler(70, 16, rank=r, world=2, seed=5) for r in range(2)]
    for s in [one, *two]:
        s.set_epoch(3)
    batches = list(one)
    assert len(batches) == 70 // 16 and all(len(index) == len(seeds) == 16 for index, seeds in batches)
    for k, (a, b) in enumerate(zip(*two)):
        for part in range(2):  # same samples, same augmentation seeds
            assert np.array_equal(np.concatenate([a[part], b[part]]), batches[k][part])
    one.set_epoch(4)
    assert not np.array_equal(next(iter(one))[0], batches[0][0])
    with pytest.raises(fb.UsageError, match="not divisible"):
        D.ShardedBatchSampler(70, 15, world=2)


def test_evaluation_sees_every_sample_once():
    shards = [D.ShardedBatchSampler(37, 8, rank=r, world=2, shuffle=False, drop_last=False) for r in range(2)]
    seen = sorted(i for s in shards for index, _ in s for i in index.tolist())
    assert seen == list(range(37))


def test_augmentation_is_a_crop_of_the_padded_image_and_a_flip():
    x = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    seeds = D.sample_seeds(0, 0, np.arange(6))
    assert torch.equal(D.Augment()(x, seeds), x)
    crop = D.Augment(crop_pad=2)(x, seeds)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    offsets = set()
    for i in range(6):
        hits = [(a, b) for a in range(5) for b in range(5) if torch.equal(crop[i], padded[i, :, a : a + 8, b : b + 8])]
        assert hits
        offsets.add(hits[0])
    assert len(offsets) > 1
    flipped = D.Augment(hflip=True)(x, seeds)
    assert all(torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(-1)) for i in range(6))
    assert not torch.equal(flipped, x)
    assert torch.equal(
        D.Augment(crop_pad=2, hflip=True, randaugment=2)(x, seeds),
        D.Augment(crop_pad=2, hflip=True, randaugment=2)(x, seeds),
    )


def test_normalize_matches_the_formula():
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    mean = torch.tensor(D.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(D.IMAGENET_STD).view(1, 3, 1, 1)
    assert torch.allclose(D.normalize(x), (x.float() / 255 - mean) / std, atol=1e-6)


def test_channel_stats_are_the_mean_and_sd_of_the_rows_that_hold_images():
    # Two images of a constant grey 51 (0.2) and two of 153 (0.6), one unreadable row (255) left
    # out by the index: mean 0.4, sd 0.2 in every channel; a 5000-image split read in chunks agrees.
    images = np.stack([np.full((3, 4, 4), v, np.uint8) for v in (51, 153, 255, 51, 153)])
    split = D.Split(images=images, index=np.array([0, 1, 3, 4]), labels=np.zeros(4, np.int64))
    mean, sd = D.channel_stats(split)
    assert mean == pytest.approx((0.4, 0.4, 0.4), abs=1e-9)
    assert sd == pytest.approx((0.2, 0.2, 0.2), abs=1e-9)
    rng = np.random.default_rng(0)
    big = rng.integers(0, 256, size=(5000, 3, 2, 2), dtype=np.uint8)
    mean, sd = D.channel_stats(D.Split(images=big, index=np.arange(5000), labels=np.zeros(5000, np.int64)))
    x = big.astype(np.float64) / 255
    assert mean == pytest.approx(tuple(x.mean(axis=(0, 2, 3))), abs=1e-9)
    assert sd == pytest.approx(tuple(x.std(axis=(0, 2, 3))), abs=1e-9)
