"""The harder built-in dataset, ``synthetic-arrangement-hard``: its classes found again from the
pixels alone, its determinism, and that it never shares a cache entry with the first one."""

import math

import numpy as np
import torch

import funnelbench as fb
from funnelbench import data as D


def test_hard_set_is_deterministic_cycles_16_classes_and_is_not_the_first_set():
    x1, y1 = D.render_arrangement_hard("train", 0, 300, 32)
    x2, _ = D.render_arrangement_hard("train", 0, 300, 32)
    assert x1.shape == (300, 3, 32, 32) and torch.equal(x1, x2)
    assert torch.equal(y1, torch.arange(300) % 16)
    part, _ = D.render_arrangement_hard("train", 250, 270, 32)
    assert torch.equal(part, x1[250:270])
    easy, _ = D.render_arrangement("train", 0, 300, 32)
    assert not torch.equal(x1, easy)


def test_hard_class_is_the_direction_and_the_distance_from_the_square_to_the_disc():
    """Found from the pixels: the red square's and the blue disc's centroids at 128 px give the
    sector (45 degrees) and the distance, near (< 0.23 image widths) or far. The classes have no
    gap between them, so scenes within 3 degrees or 0.01 widths of a boundary (where a centroid's
    error may cross it) are left out; most scenes are not."""
    x, y = D.render_arrangement_hard("val", 0, 256, 128)
    img = x.permute(0, 2, 3, 1).numpy().astype(int)
    checked = 0
    for i in range(len(y)):
        r, g, b = img[i, ..., 0], img[i, ..., 1], img[i, ..., 2]
        red = (r > 200) & (g < 100) & (b < 100)  # the orange decoy has g >= 120
        blue = (b > 200) & (r < 100) & (g < 160)  # the cyan decoy has g >= 170 where b > 200
        assert red.sum() > 20 and blue.sum() > 20, i
        ys, xs = np.nonzero(red)
        ax, ay = xs.mean(), ys.mean()
        ys, xs = np.nonzero(blue)
        bx, by = xs.mean(), ys.mean()
        angle = math.degrees(math.atan2(-(by - ay), bx - ax)) % 360
        dist = math.hypot(bx - ax, by - ay) / 128
        if abs((angle + 22.5) % 45 - 22.5) > 22.5 - 3 or abs(dist - 0.23) < 0.01:
            continue
        label = int(y[i])
        assert round(angle / 45) % 8 == label % 8, (i, angle, label)
        assert (dist > 0.23) == (label >= 8), (i, dist, label)
        checked += 1
    assert checked > 0.6 * len(y)


def test_hard_set_has_its_own_name_note_classes_and_cache_entry(tmp_path, monkeypatch):
    monkeypatch.setenv(D.CACHE_ENV, str(tmp_path / "cache"))
    hard = fb.load_data("builtin-hard", image_size=32, train_per_class=8, val_per_class=4)
    assert hard.name == "synthetic-arrangement-hard" and hard.num_classes == 16 and not hard.hflip_ok
    assert hard.classes[0] == "east near" and hard.classes[8] == "east far" and "ImageNet" in hard.note
    assert (
        fb.load_data("synthetic-arrangement-hard", image_size=32, train_per_class=8, val_per_class=4).name == hard.name
    )
    easy = fb.load_data("builtin", image_size=32, train_per_class=8, val_per_class=4)
    entries = sorted(p.name for p in (tmp_path / "cache").iterdir() if not p.name.startswith("."))
    assert any(e.startswith("synthetic-arrangement-hard-") for e in entries)
    assert not np.array_equal(hard.train.images[:8], easy.train.images[:8])
