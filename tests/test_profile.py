"""``fb.profile`` through the library: record fields and units, baseline ratios, out-of-memory
retries, errors as fields, resuming, exports read back by pandas, and bad input."""

import json

import pandas as pd
import pytest
import torch

import funnelbench as fb
import funnelbench.profiling as profiling
from funnelbench.errors import LayoutError, UsageError
from funnelbench.exports import export_records
from funnelbench.profiling import COLUMNS, add_baseline_ratios

FAST = dict(batch_size=2, warmup=0, repeats=2)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run():
    """One profile of two tiny layouts against a tiny baseline, shared by the tests below."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    records = fb.profile(
        ["test-funnel", "B1(17)-1(9), h64, a2, img32, patch8"], baseline="test-vit", counters=True, **FAST
    )
    torch.set_num_threads(before)
    return records


def test_every_record_has_every_column_with_units(run):
    assert [r["name"] for r in run] == ["test-vit", "test-funnel", "B1(17)-1(9), h64, a2, img32, patch8"]
    for r in run:
        assert list(r)[: len(COLUMNS)] == COLUMNS
        assert r["error"] is None
        layout = fb.parse_layout(r["layout"])
        cost = fb.count(layout)
        assert (r["params"], r["macs"], r["flops"]) == (cost.params, cost.macs, 2 * cost.macs)
        assert r["batch_size"] == r["requested_batch_size"] == 2 and r["image_size"] == 32
        # throughput: img/s = batch / median step time; steps/s = 1 / median step time
        assert r["train_img_per_s"] == pytest.approx(2 * r["train_steps_per_s"])
        assert r["train_step_ms"] == pytest.approx(1000 / r["train_steps_per_s"])
        assert r["infer_img_per_s"] == pytest.approx(2000 / r["infer_step_ms"])
        for p in ("train", "infer"):
            assert 0 < r[f"{p}_step_ms_min"] <= r[f"{p}_step_ms"] <= r[f"{p}_step_ms_max"]
        # memory: a training step holds at least weights, gradients and AdamW's two moments
        assert r["train_peak_mem_bytes"] > 4 * 4 * cost.params
        assert r["infer_peak_mem_bytes"] > 4 * cost.params
        assert r["train_peak_mem_bytes"] == pytest.approx(r["train_mem_est_bytes"], rel=0.001)
        assert r["infer_peak_mem_bytes"] == r["infer_mem_est_bytes"]
        assert r["mem_method"] == "live tensor bytes (dispatch tracker)"
        assert r["attention_kernel"] == "cpu_flash"
        # cross-checks: FlopCounterMode (math attention) equals the analytic MACs; fvcore adds LayerNorm
        assert r["torch_macs"] == r["macs"] and r["fvcore_macs"] > r["macs"]
        assert "aten::gelu" in r["torch_skipped"]
        # environment
        assert r["device"].startswith("cpu (") and r["dtype"] == "fp32" and r["torch_version"] == torch.__version__
        assert r["compile"] == "none" and r["optimizer"] == "adamw" and r["metrics"] == "train,infer,memory,counters"
    json.dumps(run)  # plain JSON types only


def test_baseline_ratios_are_computed_from_the_measured_numbers(run):
    base, funnel = run[0], run[1]
    assert all(r["baseline"] == "B2(17), h64, a2, img32, patch8" for r in run)
    assert base["train_speedup_x"] == 1.0 and base["mem_saved_pct"] == 0.0 and base["macs_saved_pct"] == 0.0
    assert funnel["train_speedup_x"] == pytest.approx(funnel["train_steps_per_s"] / base["train_steps_per_s"])
    assert funnel["infer_speedup_x"] == pytest.approx(funnel["infer_img_per_s"] / base["infer_img_per_s"])
    assert funnel["mem_saved_pct"] == pytest.approx(
        100 * (1 - funnel["train_peak_mem_bytes"] / base["train_peak_mem_bytes"])
    )
    assert funnel["macs_saved_pct"] == pytest.approx(100 * (1 - funnel["macs"] / base["macs"]))
    assert funnel["macs_ratio_x"] == pytest.approx(base["macs"] / funnel["macs"])
    # the third layout has test-vit's weights and pools: fewer MACs, but at batch 2 the peak is
    # the optimizer step (weights, gradients, AdamW state), the same for both: no memory saved
    assert run[2]["params"] == base["params"] and run[2]["macs_saved_pct"] > 0
    assert run[2]["train_peak_phase"] == base["train_peak_phase"] == "optimizer" and run[2]["mem_saved_pct"] == 0


def test_add_baseline_ratios_by_hand():
    records = [
        {
            "layout": "a",
            "macs": 100,
            "batch_size": 8,
            "train_img_per_s": 16.0,
            "train_steps_per_s": 2.0,
            "infer_img_per_s": 10.0,
            "train_peak_mem_bytes": 1000,
            "infer_peak_mem_bytes": 100,
            "train_mem_est_bytes": 900,
        },
        {
            "layout": "b",
            "macs": 50,
            "batch_size": 8,
            "train_img_per_s": 24.0,
            "train_steps_per_s": 3.0,
            "infer_img_per_s": None,
            "train_peak_mem_bytes": 750,
            "infer_peak_mem_bytes": None,
            "train_mem_est_bytes": 600,
        },
        {
            "layout": "c",
            "macs": 400,
            "batch_size": 4,
            "train_img_per_s": 12.0,
            "train_steps_per_s": 3.0,
            "infer_img_per_s": 5.0,
            "train_peak_mem_bytes": 750,
            "infer_peak_mem_bytes": 50,
            "train_mem_est_bytes": 600,
        },
    ]
    add_baseline_ratios(records, "a")
    b, c = records[1:]
    assert b["train_speedup_x"] == 1.5 and b["mem_saved_pct"] == 25.0 and b["macs_saved_pct"] == 50.0
    assert b["macs_ratio_x"] == 2.0 and b["mem_est_saved_pct"] == pytest.approx(100 / 3)
    assert b["infer_speedup_x"] is None and b["infer_mem_saved_pct"] is None  # not measured: no ratio
    assert b["ratio_note"] is None
    # c ran 4 images a step (out of memory at 8): 12 img/s is 0.75 x a's 16, though it takes 1.5 x the steps
    assert c["train_speedup_x"] == 0.75 and c["infer_speedup_x"] == 0.5 and c["macs_ratio_x"] == 0.25
    assert c["mem_saved_pct"] is c["infer_mem_saved_pct"] is c["mem_est_saved_pct"] is None
    assert c["ratio_note"].startswith("batch 4, the baseline's 8")
    with pytest.raises(UsageError):
        add_baseline_ratios(records, "no such layout")


def test_baseline_already_listed_is_not_measured_twice():
    records = fb.profile(
        ["test-funnel", "test-vit"], baseline="B2(17), h64, a2, img32, patch8", infer=False, memory=False, **FAST
    )
    assert [r["name"] for r in records] == ["test-funnel", "test-vit"]
    assert records[1]["train_speedup_x"] == 1.0
    assert records[0]["infer_img_per_s"] is None and records[0]["train_peak_mem_bytes"] is None
    assert records[0]["train_mem_est_bytes"] is not None  # the estimate needs no measurement
    assert records[0]["metrics"] == "train"


@pytest.fixture
def no_process_warm_up(monkeypatch):
    """Tests that count calls of ``_measure`` leave out the untimed process warm-up."""
    monkeypatch.setattr(profiling, "_warm_up_process", lambda *args: None)


def test_the_first_measured_layout_is_run_once_untimed_first(monkeypatch, tmp_path):
    calls = []
    real = profiling._measure

    def spy(layout, settings, device, batch):
        calls.append((str(layout), settings.repeats, settings.memory))
        return real(layout, settings, device, batch)

    monkeypatch.setattr(profiling, "_measure", spy)
    monkeypatch.setattr(profiling, "_WARMED", set())  # a fresh process
    run_file = tmp_path / "run.jsonl"
    fb.profile(["test-vit", "test-funnel"], resume=run_file, **FAST)
    vit, funnel = str(fb.resolve("test-vit")), str(fb.resolve("test-funnel"))
    assert calls == [(vit, 1, False), (vit, 2, True), (funnel, 2, True)]
    calls.clear()
    fb.profile(["test-vit", "test-funnel"], resume=run_file, **FAST)
    assert calls == []  # everything came from the run file: nothing to warm up for


def test_out_of_memory_retries_with_a_smaller_batch(monkeypatch, no_process_warm_up):
    real = profiling._measure
    tried = []

    def fake(layout, settings, device, batch):
        tried.append(batch)
        if batch > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return real(layout, settings, device, batch)

    monkeypatch.setattr(profiling, "_measure", fake)
    [r] = fb.profile("test-vit", batch_size=8, warmup=0, repeats=1, infer=False)
    assert tried == [8, 6, 4, 3]
    assert r["batch_size"] == 3 and r["requested_batch_size"] == 8 and r["error"] is None
    assert r["train_img_per_s"] == pytest.approx(3 * r["train_steps_per_s"])
    assert r["train_mem_est_bytes"] == fb.estimate_memory("test-vit", 3).train_peak_bytes  # at the batch used


def test_ratios_after_an_out_of_memory_retry_compare_images_per_second_and_not_memory(
    monkeypatch, tmp_path, no_process_warm_up
):
    """The baseline runs out of memory above 3 images, the other layout runs the 8 asked for:
    the speed-up is images/s over images/s (steps/s would compare 8-image steps with 3-image
    ones), and the memory of 8 images is not compared with the memory of 3."""
    real = profiling._measure

    def fake(layout, settings, device, batch):
        if str(layout) == str(fb.resolve("test-vit")) and batch > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return real(layout, settings, device, batch)

    monkeypatch.setattr(profiling, "_measure", fake)
    run_file = tmp_path / "run.jsonl"
    base, funnel, same = fb.profile(
        ["test-funnel", "B1(17)-1(9), h64, a2, img32, patch8"],
        baseline="test-vit",
        batch_size=8,
        warmup=0,
        repeats=1,
        resume=run_file,
    )
    assert (base["batch_size"], funnel["batch_size"], same["batch_size"]) == (3, 8, 8)
    for r in (funnel, same):
        assert r["train_speedup_x"] == pytest.approx(r["train_img_per_s"] / base["train_img_per_s"])
        assert r["infer_speedup_x"] == pytest.approx(r["infer_img_per_s"] / base["infer_img_per_s"])
        # 8-image steps are slower than 3-image ones: the ratio of steps/s is not the speed-up
        assert r["train_speedup_x"] != pytest.approx(r["train_steps_per_s"] / base["train_steps_per_s"])
        assert r["train_peak_mem_bytes"] > 0 and r["mem_saved_pct"] is None and r["infer_mem_saved_pct"] is None
        assert r["mem_est_saved_pct"] is None
        assert r["ratio_note"].startswith("batch 8, the baseline's 3") and "memory is not compared" in r["ratio_note"]
        assert r["macs_saved_pct"] > 0  # analytic: batch-free
    assert base["ratio_note"] is None and base["mem_saved_pct"] == 0.0 and base["train_speedup_x"] == 1.0
    assert all("ratio_note" not in json.loads(line) for line in run_file.read_text().splitlines())  # run-dependent


def test_failures_become_error_fields_and_the_run_goes_on(monkeypatch, no_process_warm_up):
    real = profiling._measure

    def fake(layout, settings, device, batch):
        if layout.depth == 3:
            raise RuntimeError("something broke\nsecond line")
        if layout.depth == 2:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 10 GB")
        return real(layout, settings, device, batch)

    monkeypatch.setattr(profiling, "_measure", fake)
    broken, oom, fine = fb.profile(
        ["test-funnel", "test-vit", "B1(17), h64, a2, img32, patch8"], batch_size=2, warmup=0, repeats=1
    )
    assert broken["error"] == "RuntimeError: something broke"
    assert oom["error"].startswith("out of memory: ") and oom["batch_size"] == 1  # retried down to 1
    assert fine["error"] is None and fine["train_img_per_s"] > 0
    assert broken["params"] == fb.count("test-funnel").params  # analytic columns are still there


def test_resume_skips_finished_rows_and_loses_nothing(tmp_path, monkeypatch, no_process_warm_up):
    run_file = tmp_path / "run.jsonl"
    first = fb.profile(["test-vit"], resume=run_file, infer=False, **FAST)
    assert len(run_file.read_text().splitlines()) == 1
    with open(run_file, "a") as f:
        f.write('{"layout": "torn li')  # an interrupted write leaves a partial last line

    measured = []
    real = profiling._measure

    def counting(layout, settings, device, batch):
        measured.append(str(layout))
        return real(layout, settings, device, batch)

    monkeypatch.setattr(profiling, "_measure", counting)
    again = fb.profile(["test-vit", "test-funnel"], baseline="test-vit", resume=run_file, infer=False, **FAST)
    assert measured == [str(fb.resolve("test-funnel"))]  # test-vit came from the file
    assert again[0]["train_steps_per_s"] == first[0]["train_steps_per_s"]
    assert again[1]["train_speedup_x"] == pytest.approx(again[1]["train_steps_per_s"] / first[0]["train_steps_per_s"])
    lines = run_file.read_text().splitlines()
    assert json.loads(lines[-1])["name"] == "test-funnel"
    # a resumed row is named as this run names it (presets and layout strings may share a layout)
    [same] = fb.profile([str(fb.resolve("test-vit"))], resume=run_file, infer=False, **FAST)
    assert len(measured) == 1 and same["name"] == str(fb.resolve("test-vit"))
    assert same["train_steps_per_s"] == first[0]["train_steps_per_s"]
    # other settings are another measurement
    fb.profile(["test-vit"], resume=run_file, infer=False, batch_size=3, warmup=0, repeats=2)
    assert measured[-1] == str(fb.resolve("test-vit"))


def test_image_size_rebuilds_the_layouts():
    [r] = fb.profile("test-funnel", image_size=48, infer=False, memory=False, **FAST)
    assert r["layout"] == "B1(37)-1(19)-1(10), h64, a2, img48, patch8" and r["image_size"] == 48


def test_unmodelled_layout_is_noted_not_guessed(monkeypatch):
    from funnelbench.memory import UnmodelledLayout

    def refuse(*args, **kwargs):
        raise UnmodelledLayout("the memory estimate does not model stem='t2t'")

    monkeypatch.setattr(profiling, "estimate_memory", refuse)
    [r] = fb.profile("test-vit", infer=False, **FAST)
    assert r["train_mem_est_bytes"] is None and "stem='t2t'" in r["mem_est_note"]
    assert r["train_peak_mem_bytes"] > 0 and r["error"] is None


def test_export_round_trip_read_back_by_pandas(run, tmp_path):
    export_records(run, tmp_path / "p.csv")
    frame = pd.read_csv(tmp_path / "p.csv")
    assert list(frame.columns)[: len(COLUMNS)] == COLUMNS
    assert list(frame["params"]) == [r["params"] for r in run]
    assert list(frame["train_peak_mem_bytes"]) == [r["train_peak_mem_bytes"] for r in run]
    assert frame["train_speedup_x"].iloc[0] == 1.0
    export_records(run, tmp_path / "p.json")
    assert pd.read_json(tmp_path / "p.json")["macs"].tolist() == [r["macs"] for r in run]


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"layouts": ["nope-preset"]}, UsageError, "unknown preset"),
        ({"layouts": ["B6(197)-6(98)"]}, LayoutError, "99 (stride 2)"),
        ({"batch_size": 0}, UsageError, "batch size"),
        ({"device": "cuda"}, UsageError, "no CUDA GPU"),
        ({"dtype": "fp8"}, UsageError, "unknown dtype"),
        ({"repeats": 0}, UsageError, "repeats"),
        ({"optimizer": "lamb"}, UsageError, "optimizer"),
        ({"compile": "fast"}, UsageError, "compile mode"),
        ({"layouts": []}, UsageError, "no layouts"),
        ({"image_size": 30}, LayoutError, "not a multiple of patch size"),
        ({"train": False, "infer": False}, UsageError, "nothing to measure"),
    ],
)
def test_bad_input_raises_before_measuring(kwargs, error, words, monkeypatch):
    monkeypatch.setattr(profiling, "_measure", lambda *a: pytest.fail("measured despite bad input"))
    args = {"layouts": ["test-vit"], **kwargs}
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        fb.profile(args.pop("layouts"), **args)
