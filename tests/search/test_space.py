"""Search spaces: every bad-space case is a one-line error naming the file, the key and its line;
the shipped spaces load from anywhere; counts and extremes match brute force; every point is a
valid layout."""

import itertools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

import funnelbench as fb
from funnelbench.cli import app
from funnelbench.search.space import list_spaces, load_space

REPO = Path(__file__).resolve().parents[2]
SHIPPED = ["funnel-reinvest", "funnel-reinvest-ti", "funnel-table-ti", "hvt-scale", "t2t-deep-narrow", "tiny"]
GOOD = """\
name: good
shared:
  image_size: 32
  patch_size: 8
stages:
  count: {min: 1, max: 3}
  layers: [1, 2]
  stride: 2
  hidden: [64, 96]
  head_dim: 32
  mlp_ratio: [2, 4]
  pool: [mean, max]
constraints:
  total_layers: {min: 2, max: 4}
baselines:
  - B2(17), h64, a2, img32, patch8
"""


def write(tmp_path, text, name="space.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def refuse(tmp_path, text):
    """Load through the CLI: exit 2, one line on stderr naming the file."""
    path = write(tmp_path, text)
    result = CliRunner().invoke(app, ["spaces", str(path)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: space ") and str(path) in lines[0], result.stderr
    assert not (tmp_path / "runs").exists()
    return lines[0]


@pytest.mark.parametrize(
    "old, new, key, line, words",
    [
        ("name: good", "name: good\nstagez: {}", "stagez", 2, "unknown key"),  # unknown top-level key
        ("  hidden: [64, 96]", "  hiden: [64, 96]", "stages.hiden", 9, "did you mean hidden"),  # unknown stage key
        ("  hidden: [64, 96]", "  hidden: wide", "stages.hidden", 9, "'wide' is not valid"),  # wrong type
        ("  hidden: [64, 96]", "  hidden: []", "stages.hidden", 9, "empty list"),  # empty choice list
        ("  layers: [1, 2]", "  layers: {min: 3, max: 2}", "stages.layers", 7, "min 3 is above max 2"),
        ("  pool: [mean, max]", "  pool: [mean, avg]", "stages.pool", 12, "'avg' is not valid"),  # not a layout part
        ("  head_dim: 32", "  heads: [3]", "stages.heads", 10, "not divisible by 3 heads"),  # 64 / 3 heads
        (
            "  count: {min: 1, max: 3}",
            "  count: {min: 1, max: 6}",
            "stages.stride",
            8,
            "as many as before",
        ),  # 17 -> ... -> 1 -> 1
        ("  stride: 2", "  stride: [2, 5]", "stages.stride", 8, "writes as stride 4"),  # 16 / 5 -> 4 tokens = stride 4
        ("  patch_size: 8", "  patch_size: 5", "shared.image_size", 3, "not a multiple"),
        (
            "  total_layers: {min: 2, max: 4}",
            "  total_layers: {min: 7, max: 9}",
            "constraints.total_layers",
            14,
            "no point",
        ),
        (
            "  - B2(17), h64, a2, img32, patch8",
            "  - B2(17), h128, a4, img32, patch8",
            "baselines[0]",
            16,
            "not a point of the space",
        ),
        (
            "  - B2(17), h64, a2, img32, patch8",
            "  - B2(16), h64, a2, img32, patch8, avg",
            "baselines[0]",
            16,
            "shared options differ",
        ),
        (
            "  - B2(17), h64, a2, img32, patch8",
            "  - B2(18), h64, img32, patch8",
            "baselines[0]",
            16,
            "first stage has 18 tokens",
        ),
        (
            "  - B2(17), h64, a2, img32, patch8",
            "  - B2(17)-2(9)-1(5), h64, a2, img32, patch8",
            "baselines[0]",
            16,
            "total_layers",
        ),
    ],
)
def test_every_bad_space_case_is_one_line_naming_file_key_and_line(tmp_path, old, new, key, line, words):
    assert old in GOOD
    message = refuse(tmp_path, GOOD.replace(old, new))
    assert f"line {line}, key {key}:" in message, message
    assert words in message, message


def test_more_bad_spaces(tmp_path):
    assert "not valid YAML" in refuse(tmp_path, "stages: [1, 2\n")
    assert "line 14, key stages.per_stage.stage0.stride" in refuse(
        tmp_path, GOOD.replace("  pool: [mean, max]", "  pool: [mean, max]\n  per_stage:\n    stage0: {stride: 2}")
    )
    assert "stage5 does not exist" in refuse(
        tmp_path, GOOD.replace("  pool: [mean, max]", "  pool: [mean, max]\n  per_stage:\n    stage5: {layers: 1}")
    )
    assert "give mlp or mlp_ratio, not both" in refuse(
        tmp_path, GOOD.replace("  mlp_ratio: [2, 4]", "  mlp_ratio: [2, 4]\n  mlp: 128")
    )
    assert "missing key count" in refuse(tmp_path, GOOD.replace("  count: {min: 1, max: 3}\n", ""))
    assert "given twice" in refuse(tmp_path, GOOD.replace("  stride: 2", "  stride: 2\n  stride: 2"))
    assert "the file is empty" in refuse(tmp_path, "")
    assert "max 6 is not min 1 plus a multiple of step 2" in refuse(
        tmp_path, GOOD.replace("[1, 2]", "{min: 1, max: 6, step: 2}")
    )


def test_unknown_space_name_and_missing_file_are_one_line_errors(tmp_path):
    result = CliRunner().invoke(app, ["spaces", "tinyy"])
    assert result.exit_code == 2 and "unknown space 'tinyy' (did you mean tiny?)" in result.stderr
    result = CliRunner().invoke(app, ["spaces", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "does not exist" in result.stderr


def test_counts_and_extremes_match_brute_force(tmp_path):
    """The exact walk against enumerating every combination of decisions."""
    space = load_space(write(tmp_path, GOOD))
    layouts = set()
    options = list(itertools.product((1, 2), (64, 96), (2, 4), ("mean", "max")))
    for n in (1, 2, 3):
        for combo in itertools.product(options, repeat=n):
            chosen = [
                dict(
                    layers=l,
                    hidden=h,
                    mlp_ratio=r,
                    pool=p,
                    head_dim=32,
                    stride=2,
                    pqo=True,
                    kernel=0,
                    newpos=False,
                    qkv_bias=True,
                )
                for l, h, r, p in combo
            ]
            layout = space.build(chosen)
            if 2 <= layout.depth <= 4:
                layouts.add(layout)
    stats = space.stats()
    assert stats.layouts == len(layouts) == 1156
    macs = {l: fb.count(l).macs for l in layouts}
    params = {l: fb.count(l).params for l in layouts}
    assert stats.cheapest_macs[1] == min(macs.values()) and macs[stats.cheapest_macs[0]] == min(macs.values())
    assert stats.dearest_macs[1] == max(macs.values())
    assert stats.cheapest_params[2] == min(params.values()) and stats.dearest_params[2] == max(params.values())


def test_tied_decisions_and_hvt_pools_count_exactly():
    """hvt-scale ties the width across stages and pools with kernel 3: random points never
    leave the counted set, and a tied width is one parameter."""
    space = load_space("hvt-scale")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(300):
        trial = study.ask()
        layout, violations = space.suggest(trial)
        study.tell(trial, 0.0)
        assert len({s.hidden for s in layout.stages}) == 1
        if not violations:
            seen.add(layout)
            assert space.contains(layout) is None
    assert "hidden" in study.trials[0].params and "stage0_hidden" not in study.trials[0].params
    assert len(seen) <= space.stats().layouts


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_spaces_load_and_every_sampled_point_is_a_valid_layout(name):
    space = load_space(name)
    assert space.baselines, name
    for b in space.baselines:  # baselines are points, and their parameters give them back
        assert space.suggest(optuna.trial.FixedTrial(space.params_of(b)))[0] == b
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(40):
        trial = study.ask()
        layout, violations = space.suggest(trial)  # suggest round-trips every layout through the grammar
        assert fb.parse_layout(str(layout)) == layout
        study.tell(trial, 0.0)
        # a trial carries the decisions its layout uses and no others (conditional parameters):
        # no stage beyond its count, no pool operator for a stage that does not pool
        n = len(layout.stages)
        assert not any(p.startswith(f"stage{i}_") for p in trial.params for i in range(n, space.max_stages))
        for i, s in enumerate(layout.stages):
            if not s.pools:
                assert not {f"stage{i}_{k}" for k in ("pool", "pqo", "kernel", "newpos")} & set(trial.params)
        if not violations:
            assert space.params_of(layout) == trial.params


def test_shipped_list_and_one_space_through_the_cli():
    assert list_spaces() == SHIPPED
    result = CliRunner().invoke(app, ["spaces"])
    assert result.exit_code == 0 and all(n in result.output for n in SHIPPED)
    result = CliRunner().invoke(app, ["spaces", "funnel-reinvest"])
    assert result.exit_code == 0, result.output
    assert "2,329,384 distinct layouts" in result.output
    assert "B2(197)-2(50)-4(14), m1536" in result.output  # the cheapest in MACs (3.07 G)
    assert "B6(197, m4096)-6(99)-2(50, m1536)" in result.output  # a Table 4 baseline


def test_root_spaces_folder_is_the_package_data_not_a_copy():
    assert (REPO / "spaces").resolve() == (REPO / "funnelbench" / "spaces").resolve()


def test_shipped_space_found_by_name_after_install_without_a_checkout(tmp_path):
    """pip install (not editable) into a folder, then load a space from another cwd."""
    import shutil

    source, target = tmp_path / "src", tmp_path / "site"  # a copy: pip builds in the source tree
    shutil.copytree(REPO / "funnelbench", source / "funnelbench", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    code = "import funnelbench as fb; s = fb.load_space('funnel-reinvest-ti'); print(fb.__file__, len(s.baselines))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(target)},
    )
    file, n = out.stdout.split()
    assert file.startswith(str(target)) and n == "11"
