"""``funnelbench.data`` as a package: every name the single module had is still importable from
it, a replacement of a name in the package reaches the code that calls it, and the cache keys
and pixels are those the single module wrote (so existing caches stay valid)."""

import hashlib
import json

import pytest

import funnelbench as fb
from funnelbench import data as D

# Every name that ``funnelbench/data.py`` defined before it became a package (listed from it).
NAMES_OF_THE_MODULE = [
    "Augment",
    "BUILTIN",
    "BUILTIN_ALIASES",
    "BUILTIN_NOTE",
    "BUILTIN_TRAIN_PER_CLASS",
    "BUILTIN_VAL_PER_CLASS",
    "BatchSet",
    "CACHE_ENV",
    "CACHE_FORMAT",
    "CHUNK",
    "DIRECTIONS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "ImageData",
    "ShardedBatchSampler",
    "Split",
    "_Builtin",
    "_Cifar",
    "_DISTRACTOR_COLORS",
    "_DecodeFiles",
    "_ImageFolder",
    "_PART_RADIUS",
    "_RACY_NS",
    "_SPLIT_SEEDS",
    "_Source",
    "_build",
    "_build_or_load",
    "_collate_decoded",
    "_digest",
    "_few",
    "_open_complete",
    "_open_entry",
    "_partial_done",
    "_render_chunk",
    "_scan_class",
    "_splitmix64",
    "_unchanged",
    "_whole_batch",
    "cache_root",
    "choose_classes",
    "choose_items",
    "decode_file",
    "load_data",
    "make_loader",
    "normalize",
    "channel_stats",
    "open_source",
    "render_arrangement",
    "resize_uint8",
    "sample_seeds",
]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv(D.CACHE_ENV, str(tmp_path / "cache"))


def test_every_name_of_the_module_is_importable_from_the_package():
    missing = [name for name in NAMES_OF_THE_MODULE if not hasattr(D, name)]
    assert missing == []
    assert set(D.__all__) <= set(NAMES_OF_THE_MODULE)
    assert fb.load_data is D.load_data


def test_replacing_render_arrangement_in_the_package_replaces_what_the_source_renders(monkeypatch):
    """tests/test_data.py replaces ``funnelbench.data.render_arrangement`` to prove a second load
    reads the cache: that only proves something if the source calls the package's name."""
    monkeypatch.setattr(D, "render_arrangement", lambda *a, **k: pytest.fail("rendered through the package"))
    with pytest.raises(pytest.fail.Exception, match="rendered through the package"):
        fb.load_data(image_size=16, train_per_class=2, val_per_class=1)


def test_replacing_scan_class_in_the_package_replaces_what_the_imagefolder_lists(tmp_path, monkeypatch):
    for split in ("train", "val"):
        (tmp_path / "tree" / split / "a").mkdir(parents=True)
    monkeypatch.setattr(D, "_scan_class", lambda folder: pytest.fail(f"listed {folder.name} through the package"))
    with pytest.raises(pytest.fail.Exception, match="listed a through the package"):
        fb.load_data(tmp_path / "tree", image_size=16)


def test_cache_entries_and_pixels_are_those_of_the_single_module():
    """Entry names (a digest of the key), keys and pixels as ``funnelbench/data.py`` wrote them
    before the split (recorded from it): a cache built before is found and used after."""
    data = fb.load_data(image_size=16, train_per_class=4, val_per_class=2, classes=3, subset_seed=1)
    expected = {
        "train": ("synthetic-arrangement-train-16px-7d67ff5bad", "c5351c475bfa8993", 32, "7e979b3d7ddb347e"),
        "val": ("synthetic-arrangement-val-16px-cafbd5332c", "2ecd03018e7f93a5", 16, "1281cae9fb6ca3d8"),
    }
    for split, (entry, pixels, pool, items) in expected.items():
        s = getattr(data, split)
        assert s.cache_path.name == entry
        assert hashlib.sha256(s.images.tobytes()).hexdigest()[:16] == pixels
        assert json.loads((s.cache_path / "meta.json").read_text())["key"] == {
            "format": 1,
            "split": split,
            "size": 16,
            "classes": ["north", "north-west", "south"],
            "source": "synthetic-arrangement",
            "version": 2,
            "pool": pool,
            "items": items,
        }
