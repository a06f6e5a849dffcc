"""What only a GPU can check: the memory estimate's CUDA rules against measured peaks, the
profiler's CUDA path (allocator peaks, a real out-of-memory retry) and DDP over NCCL.

The CUDA rules of :mod:`funnelbench.memory` (AdamW's all-tensors-at-once update, LayerNorm in
fp32 under autocast, the fused kernels' saved tensors) were derived from torch's CUDA code and
checked against CPU measurements only; these tests are where they meet a GPU. Run them all at
once on a machine with a GPU (two for the DDP test):

    pytest -m cuda

``make test`` (and CI) leave them out (``-m "not cuda"`` in pyproject's addopts); without a
GPU ``pytest -m cuda`` skips them with the reason.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

import funnelbench as fb
import funnelbench.profiling as profiling
from funnelbench.measure import CUDA_METHOD, is_fused_kernel

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.parametrize(
    "name, batch, dtype",
    [
        ("deit-ti", 32, "fp32"),
        ("deit-s", 32, "fp32"),
        ("funnel-b6-6", 16, "fp32"),
        ("funnel-b4-4-4-max", 16, "fp32"),
        ("deit-s", 32, "bf16"),
        ("hvt-s-1", 16, "fp32"),
    ],
)
def test_the_estimate_with_cuda_rules_matches_the_measured_cuda_peak(name, batch, dtype):
    """The profiler estimates with the rules of the device it runs on (``device="cuda"``) and
    measures ``max_memory_allocated`` per phase: within 5 % for the training peak (not in the
    estimate: cuBLAS workspaces, allocator rounding) and the same phase."""
    if dtype == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    [r] = fb.profile(name, device="cuda", dtype=dtype, batch_size=batch, warmup=1, repeats=1, oom_retry=False)
    assert r["error"] is None, r["error"]
    assert r["device"].startswith("cuda") and r["mem_method"] == CUDA_METHOD
    est = fb.estimate_memory(
        name, batch, device="cuda", dtype=dtype, attention="fused" if is_fused_kernel(r["attention_kernel"]) else "math"
    )
    assert r["train_mem_est_bytes"] == est.train_peak_bytes  # the profiler used the CUDA rules
    assert r["train_peak_mem_bytes"] == pytest.approx(est.train_peak_bytes, rel=0.05)
    assert r["train_peak_phase"] == est.train_peak_phase
    assert r["infer_peak_mem_bytes"] == pytest.approx(est.infer_peak_bytes, rel=0.05)
    assert r["cuda_reserved_peak_bytes"] >= r["train_peak_mem_bytes"]


def test_profile_on_cuda_times_measures_and_compares():
    records = fb.profile(["test-funnel"], baseline="test-vit", device="cuda", batch_size=8, warmup=1, repeats=2)
    for r in records:
        assert r["error"] is None and r["train_img_per_s"] > 0 and r["infer_img_per_s"] > 0
        assert r["train_peak_mem_bytes"] > 16 * r["params"]  # weights, gradients, AdamW's two moments
        assert r["cuda_version"] == torch.version.cuda and r["attention_kernel"]
    assert records[1]["train_speedup_x"] == pytest.approx(records[1]["train_img_per_s"] / records[0]["train_img_per_s"])


def test_a_real_out_of_memory_is_retried_with_smaller_batches():
    """ViT-B/16 at 2**16 images a step does not fit any GPU: torch's OutOfMemoryError is caught
    and the batch lowered until a step fits."""
    [r] = fb.profile("vit-b16", device="cuda", batch_size=2**16, warmup=0, repeats=1, infer=False, memory=False)
    assert r["error"] is None, r["error"]
    assert r["requested_batch_size"] == 2**16 and 1 <= r["batch_size"] < 2**16
    assert r["train_img_per_s"] > 0


def test_the_fake_out_of_memory_hook_agrees_with_the_real_one(monkeypatch):
    """The CPU tests fake CUDA's out-of-memory error; here the same hook runs the CUDA path."""
    real, tried = profiling._measure, []

    def fake(layout, settings, device, batch):
        tried.append(batch)
        if batch > 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return real(layout, settings, device, batch)

    monkeypatch.setattr(profiling, "_measure", fake)
    [r] = fb.profile("test-vit", device="cuda", batch_size=8, warmup=0, repeats=1)
    assert tried[-2:] == [6, 4] and r["batch_size"] == 4 and r["error"] is None


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_two_nccl_processes_match_one_gpu(tmp_path):
    """torchrun with 2 GPUs (NCCL), each rank half the global batch: the same steps as one GPU,
    up to floating-point summation order (and TF32, if on)."""
    flags = [
        "--train-per-class",
        "16",
        "--val-per-class",
        "8",
        "--batch-size",
        "32",
        "--epochs",
        "2",
        "--device",
        "cuda",
        "--dtype",
        "fp32",
    ]
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
            "train",
            "test-vit",
            *flags,
            "--out",
            str(tmp_path / "ddp"),
        ],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    single = fb.train(
        "test-vit",
        out=tmp_path / "one",
        epochs=2,
        device="cuda",
        dtype="fp32",
        train_per_class=16,
        val_per_class=8,
        batch_size=32,
    )
    record = json.loads((tmp_path / "ddp" / "record.json").read_text())[0]
    assert record["world_size"] == 2 and single["world_size"] == 1
    for key in ("train_loss", "val_loss"):
        assert record[key] == pytest.approx(single[key], rel=1e-3)
