"""``funnelbench profile``, ``reproduce`` and ``memory`` through typer's CliRunner, and
``fb.reproduce`` with the paper's stored tables."""

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import funnelbench as fb
import funnelbench.papers as papers
from funnelbench.cli import app
from funnelbench.errors import UsageError
from funnelbench.papers import paper_rows
from funnelbench.units import parse_bytes

runner = CliRunner()
FAST = ["--batch-size", "2", "--warmup", "0", "--repeats", "1"]


pytestmark = pytest.mark.usefixtures("one_thread")


def run(*args):
    return runner.invoke(app, list(args))


def test_profile_table_states_its_conventions():
    result = run("profile", "test-funnel", "--baseline", "test-vit", *FAST)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "test-vit" in out and "test-funnel" in out
    assert "attention cpu_flash" in out and "adamw" in out
    assert 'call "FLOPs"' in out and "optimizer state" in out and "median" in out
    assert "1.00x" in out  # the baseline's own speed-up


def test_profile_json_matches_the_library_and_exports(tmp_path):
    result = run("profile", "test-vit", *FAST, "--no-infer", "--json", "--export", str(tmp_path / "p.csv"))
    assert result.exit_code == 0, result.output
    [record] = json.loads(result.stdout)
    assert "[1/1] test-vit" in result.stderr  # progress goes to stderr
    assert record["layout"] == "B2(17), h64, a2, img32, patch8"
    assert record["params"] == fb.count("test-vit").params and record["infer_img_per_s"] is None
    frame = pd.read_csv(tmp_path / "p.csv")
    assert frame["macs"].tolist() == [fb.count("test-vit").macs]
    assert frame["train_peak_mem_bytes"].tolist() == [record["train_peak_mem_bytes"]]


def test_profile_compile_times_the_compiled_model(monkeypatch):
    """``--compile MODE``: the mode reaches torch.compile, the compiled module is the one timed
    (dynamo captures its graphs), and the record says so and says why peak memory is not
    measured on CPU. Inductor's code generation takes a minute for even the smallest model on a
    busy 2-core machine, so the compiler runs with the aot_eager backend here (dynamo and AOT
    autograd, no code generation); `funnelbench profile test-vit --compile default` runs the real
    one."""
    import torch._dynamo

    modes, real_compile = [], torch.compile

    def compile_without_codegen(model, mode=None, **kwargs):
        modes.append(mode)
        return real_compile(model, backend="aot_eager", **kwargs)

    monkeypatch.setattr(torch, "compile", compile_without_codegen)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    result = run("profile", "test-vit", *FAST, "--compile", "max-autotune", "--json")
    assert result.exit_code == 0, result.output
    [record] = json.loads(result.stdout)
    assert modes and set(modes) == {"max-autotune"} and record["compile"] == "max-autotune"  # (and its warm-up)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 2  # forward (inference) and training
    assert record["train_img_per_s"] > 0 and record["infer_img_per_s"] > 0
    assert record["train_peak_mem_bytes"] is None and record["infer_peak_mem_bytes"] is None
    assert record["mem_method"] == "not measured: compiled code on CPU bypasses the tracker"
    torch._dynamo.reset()


@pytest.mark.parametrize("suffix", [".md", ".tex"])
def test_markdown_and_latex_exports_hold_the_table(tmp_path, suffix):
    path = tmp_path / f"t{suffix}"
    result = run("profile", "test-vit", "test-funnel", "--baseline", "test-vit", *FAST, "--export", str(path))
    assert result.exit_code == 0, result.output
    text = path.read_text()
    for col in ("train_img_per_s", "train_peak_mem_mib", "mem_saved_pct", "macs_saved_pct"):
        assert col.replace("_", r"\_") in text if suffix == ".tex" else col in text
    if suffix == ".md":
        assert text.startswith("funnelbench profile") and "| test-funnel" in text


def test_resume_through_the_cli(tmp_path):
    run_file = tmp_path / "run.jsonl"
    first = run("profile", "test-vit", *FAST, "--no-infer", "--resume", str(run_file), "--json")
    second = run("profile", "test-vit", *FAST, "--no-infer", "--resume", str(run_file), "--json")
    assert first.exit_code == second.exit_code == 0
    a, b = (json.loads(r.stdout)[0] for r in (first, second))
    assert a["train_steps_per_s"] == b["train_steps_per_s"]  # the second run read the first one's row
    assert len(run_file.read_text().splitlines()) == 1


@pytest.mark.parametrize(
    "args, words",
    [
        (["profile", "nope"], ["unknown preset"]),
        (["profile", "B6(197)-6(98)"], ["column 11", "99 (stride 2)"]),
        (["profile", "test-vit", "--batch-size", "0"], ["batch size"]),
        (["profile", "test-vit", "--device", "cuda"], ["no CUDA GPU"]),
        (["profile", "test-vit", "--dtype", "fp8"], ["unknown dtype"]),
        (["profile", "test-vit", "--export", "out.xlsx"], ["unknown suffix", ".csv"]),
        (["profile", "test-vit", "--export", "/proc/nope/out.csv"], ["cannot write"]),
        (["profile", "test-vit", "--resume", "."], ["is a folder"]),
        (["profile", "test-vit", "--resume", "/proc/nope/run.jsonl"], ["cannot write"]),
        (["reproduce", "other-paper"], ["unknown paper", "funnel-vit"]),
        (["reproduce", "--tables", "9"], ["no table 9"]),
        (["reproduce", "--tables", "two"], ["table numbers"]),
        (["memory", "test-vit", "--budget", "lots"], ["--budget", "cannot read", "16GiB"]),
        (["memory", "test-vit", "--batch-size", "0"], ["batch size"]),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(args, words, tmp_path):
    result = run(*args)
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    for word in words:
        assert word in err
    assert not Path("out.xlsx").exists() and list(Path(".").iterdir()) == []


def test_paper_tables_are_stored_as_printed():
    rows = paper_rows("funnel-vit")
    assert len(rows) == 5 + 4 + 8 and {r["table"] for r in rows} == {2, 3, 4}
    t2 = {r["row"]: r for r in rows if r["table"] == 2}
    assert t2["B12(197) (ViT)"]["paper_memory_gb"] == 12.38 and t2["B12(197) (ViT)"]["is_baseline"]
    # the paper's text: two blocks save 25.8 % memory and run 23 % faster (in time per step),
    # three blocks save 40 % and run 37.5 % faster
    two, three = t2["B6(197)-6(99), mean"], t2["B4(197)-4(99)-4(50), max"]
    assert round(100 * (1 - two["paper_memory_gb"] / 12.38), 1) == 25.8
    assert round(100 * (1 - 2.0 / two["paper_steps_per_s"])) == 23
    assert round(100 * (1 - three["paper_memory_gb"] / 12.38)) == 40
    assert 100 * (1 - 2.0 / three["paper_steps_per_s"]) == 37.5
    assert {r["layout"] for r in rows if r["table"] == 3} == {"B12(577), img384", "B6(577)-6(289), img384"}
    assert all(r["optimizer"] == ("sgd" if r["table"] == 3 else "adamw") for r in rows)
    assert [r["layout"] for r in paper_rows("funnel-vit", [4])][3] == "B6(197)-6(99), h1024"


TINY_PAPER = """table,row,layout,optimizer,paper_memory_gb,paper_steps_per_s,baseline
7,ViT,test-vit,adamw,0.004,2.0,yes
7,funnel,test-funnel,adamw,0.003,3.0,
8,ViT sgd,test-vit,sgd,0.003,4.0,yes
8,ViT sgd again,test-vit,sgd,0.003,4.0,
"""


def test_reproduce_joins_paper_rows_with_measured_ratios(monkeypatch):
    monkeypatch.setattr(papers, "paper_text", lambda paper: TINY_PAPER)
    rows = fb.reproduce("funnel-vit", tables=[7, 8], warmup=0, repeats=1, batch_size=2, infer=False)
    assert [r["row"] for r in rows] == ["ViT", "funnel", "ViT sgd", "ViT sgd again"]
    vit, funnel, sgd, _ = rows
    assert vit["paper_mem_saved_pct"] == 0 and funnel["paper_mem_saved_pct"] == pytest.approx(25)
    assert funnel["paper_speedup_x"] == 1.5
    assert vit["train_speedup_x"] == 1.0 and funnel["train_speedup_x"] > 0
    assert funnel["macs_ratio_x"] == pytest.approx(fb.count("test-vit").macs / fb.count("test-funnel").macs)
    assert funnel["mem_est_saved_pct"] is not None and funnel["error"] is None
    # table 8 is measured with SGD: momentum is one buffer per weight instead of AdamW's two
    assert sgd["optimizer"] == "sgd" and sgd["train_mem_est_bytes"] < vit["train_mem_est_bytes"]
    assert vit["est_batch_at_paper_mem"] == fb.memory.max_batch_size("test-vit", int(0.004 * 2**30), device="cuda")


def test_reproduce_cli_prints_paper_and_ours(monkeypatch, tmp_path):
    monkeypatch.setattr(papers, "paper_text", lambda paper: TINY_PAPER)
    result = run("reproduce", "--tables", "7", *FAST, "--export", str(tmp_path / "r.md"))
    assert result.exit_code == 0, result.output
    assert "paper mem saved %" in result.output and "funnel" in result.output
    assert "paper_speedup_x" in (tmp_path / "r.md").read_text()
    with pytest.raises(UsageError, match="reproduce sets baseline"):
        fb.reproduce("funnel-vit", tables=[7], baseline="test-vit")


def test_memory_command_and_budget():
    result = run("memory", "vit-b16", "deit-s", "--batch-size", "64", "--budget", "16GiB", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["layout"] for r in rows] == ["B12(197)", "B12(197), h384"]
    # one default for the command and the library: the CPU rules (the ones checked against measurements)
    est = fb.estimate_memory("vit-b16", 64)
    assert rows[0]["train_peak_bytes"] == est.train_peak_bytes and rows[0]["device"] == est.device == "cpu"
    assert rows[0]["max_batch_size"] == fb.memory.max_batch_size("vit-b16", 16 * 2**30)
    assert rows[1]["max_batch_size"] > rows[0]["max_batch_size"]
    cuda = json.loads(run("memory", "vit-b16", "--batch-size", "64", "--device", "cuda", "--json").stdout)[0]
    assert (
        cuda["device"] == "cuda"
        and cuda["train_peak_bytes"] == fb.estimate_memory("vit-b16", 64, device="cuda").train_peak_bytes
    )
    # AdamW's step counters: one 4-byte tensor per parameter tensor on the CPU, kept on the host with CUDA
    assert rows[0]["optimizer_bytes"] - cuda["optimizer_bytes"] == 4 * len(list(fb.build_model("vit-b16").parameters()))
    table = run("memory", "funnel-b6-6", "--dtype", "bf16")
    assert table.exit_code == 0 and "train peak MiB" in table.output and "cpu rules" in table.output
    assert "cuda rules (derived, not yet checked on a GPU)" in run("memory", "deit-s", "--device", "cuda").output


def test_memory_command_reports_unmodelled_layouts_and_estimates_the_rest():
    """A layout the estimate does not model gets a row saying so (the others are estimated);
    when no layout can be estimated, the command fails with the reason."""
    # every stem is modelled in fp32; the T2T and PS stems are not under autocast
    result = run("memory", "test-ps", "test-hvt", "--batch-size", "4", "--dtype", "bf16", "--json")
    assert result.exit_code == 0, result.output
    ps, hvt = json.loads(result.stdout)
    assert "does not model the progressive-sampling stem under bf16" in ps["error"] and "train_peak_bytes" not in ps
    assert hvt["train_peak_bytes"] == fb.estimate_memory("test-hvt", 4, dtype="bf16").train_peak_bytes
    table = run("memory", "test-ps", "test-hvt", "--batch-size", "4", "--dtype", "bf16")
    assert table.exit_code == 0 and "not modelled" in table.output and "test-ps: the memory estimate" in table.output
    alone = run("memory", "test-t2t", "--dtype", "bf16")
    assert alone.exit_code == 2 and alone.stderr.startswith("error: the memory estimate does not model the Performer")


@pytest.mark.parametrize(
    "text, value",
    [("16GiB", 16 * 2**30), ("24 GB", 24 * 10**9), ("512MiB", 2**29), ("1e9", 10**9), ("80g", 80 * 10**9)],
)
def test_parse_bytes(text, value):
    assert parse_bytes(text) == value
