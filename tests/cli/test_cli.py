"""The CLI through typer's CliRunner: output, --json, and one-line errors with exit code 2."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

import funnelbench as fb
from funnelbench.cli import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, list(args))


def test_parse_table():
    result = run("parse", "B6(197, m4096)-6(99)-2(50, m1536)")
    assert result.exit_code == 0, result.output
    assert "B6(197, m4096)-6(99)-2(50, m1536)" in result.output
    assert "mean/2 pqo" in result.output
    assert "15.67 GMACs" in result.output and "31.33 GFLOPs" in result.output
    assert 'call "FLOPs"' in result.output  # the convention is stated


def test_parse_json_matches_library():
    result = run("parse", "B6(197)-6(99), max", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    cost = fb.count("B6(197)-6(99), max")
    assert data["layout"] == "B6(197)-6(99), max"
    assert (data["params"], data["macs"], data["flops"]) == (cost.params, cost.macs, 2 * cost.macs)
    assert [p["part"] for p in data["parts"]] == ["embed", "stage1", "stage2", "head"]
    assert sum(p["macs"] for p in data["parts"]) == cost.macs
    assert data["parts"][2]["pool"] == "max" and data["parts"][2]["stride"] == 2


def test_parse_a_preset_name():
    result = run("parse", "deit-s", "--json")
    assert json.loads(result.stdout)["layout"] == "B12(197), h384"


def test_presets_lists_paper_layouts_with_paper_numbers():
    result = run("presets", "--json")
    assert result.exit_code == 0
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    for name in ("vit-b16", "deit-ti", "deit-s", "deit-b"):
        assert name in rows
    layouts = {r["layout"] for r in rows.values()}
    for text in ("B6(197)-6(99), max", "B4(197)-4(99)-4(50), max", "B6(197, m4096)-6(99)-2(50, m1536)"):
        assert str(fb.parse_layout(text)) in layouts
    assert rows["deit-s"]["paper_gmacs"] == 4.6 and round(rows["deit-s"]["macs"] / 1e9, 1) == 4.6


def test_presets_pattern_and_table():
    result = run("presets", "funnel-*")
    assert result.exit_code == 0
    assert "funnel-b6-6-max" in result.output and "deit-s" not in result.output


@pytest.mark.parametrize(
    "args, words",
    [
        (["parse", "B6(197)-6(98)"], ["column 11", "99 (stride 2)"]),
        (["parse", ""], ["empty"]),
        (["parse", "vit-b"], ["unknown preset", "vit-b16"]),
        (["parse", "B6(197, q5)"], ["unknown option"]),
        (["parse", "B6(197", "--json"], ["not closed"]),
        (["parse", "B6(197, h1.5)"], ["has a fraction", "expected an integer"]),
        (["parse", "B12(197), max"], ["no stage pools", "'max' has no effect"]),
        # what click finds while reading the command line is one line too
        (["pars", "B12(197)"], ["no such command 'pars'", "--help"]),
        (["parse"], ["missing argument", "parse --help"]),
        (["parse", "B12(197)", "--nope"], ["no such option: --nope"]),
        (["parse", "B12(197)", "--num-classes", "ten"], ["'--num-classes'", "integer"]),
        (["--versio"], ["no such option", "--version"]),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, words):
    result = run(*args)
    assert result.exit_code == 2
    assert result.stdout == ""
    err = result.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    for word in words:
        assert word in err


def test_python_dash_m_works():
    out = subprocess.run(
        [sys.executable, "-m", "funnelbench", "parse", "B12(197)", "--json"], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout)["params"] == 86_567_656
    bad = subprocess.run([sys.executable, "-m", "funnelbench", "parse", "B12(196)"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
