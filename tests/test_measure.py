"""Measurement hygiene: the CPU memory tracker against hand-computed tensor budgets, timing,
out-of-memory handling, the attention kernel and torch's FlopCounterMode cross-check."""

import contextlib

import pytest
import torch
import torch.nn.functional as F
from timm.utils import decay_batch_step
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

import funnelbench as fb
from funnelbench import measure
from funnelbench.counters import torch_flop_count
from funnelbench.errors import UsageError
from funnelbench.measure import (
    InferStep,
    MemoryTracker,
    TrainStep,
    attention_kernel,
    is_oom,
    make_optimizer,
    peak_memory,
    smaller_batch,
    time_interleaved,
    time_steps,
)

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_mlp():
    """Linear(8 -> 16), ReLU, Linear(16 -> 4): 128 + 16 + 64 + 4 = 212 parameters, 848 bytes."""
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


def test_tracker_matches_a_hand_computed_training_step():
    """Budget of one AdamW step of ``tiny_mlp`` at batch 4 (fp32, bytes):

    weights 848, inputs 4 x 8 x 4 = 128 (x) + 4 x 8 = 32 (int64 labels) = 160.
    Forward: h = x W1^T + b1 (4 x 16 = 256), r = relu(h) (256; ReLU saves its output, so h is
    freed after it), logits 64, log-softmax 64, loss + total weight 8. Worst forward moment:
    h and r together, 848 + 160 + 512 = 1520. Saved at the end: r + log-softmax + 8 = 328.
    Optimizer step: weights + grads (848) + AdamW's exp_avg and exp_avg_sq (1696) + four
    4-byte step counters (16) + inputs + the CPU loop's sqrt and division temporaries of the
    largest tensor, W1 (2 x 512): 848 + 848 + 1712 + 160 + 1024 = 4592, the step's peak.
    """
    torch.manual_seed(0)
    model = tiny_mlp()
    x, y = torch.randn(4, 8), torch.randint(0, 4, (4,))
    opt = make_optimizer(model)
    step = TrainStep(model, x, y, opt, CPU, "fp32")
    step()  # creates AdamW's state, as the warm-up does
    peak, ops = peak_memory(step, CPU, model, (x, y), opt)
    assert peak.bytes == 4592
    assert peak.phase == "optimizer"
    assert peak.by_category == {
        "weights": 848,
        "grads": 848,
        "optimizer_state": 1712,
        "inputs": 160,
        "activations": 1024,
    }
    assert peak.by_phase["forward"] < peak.by_phase["optimizer"]
    assert ops["addmm.default"] == 2

    tracker = MemoryTracker()
    with tracker:
        tracker.register(list(model.parameters()), "weights")
        tracker.register((x, y), "inputs")
        loss = F.cross_entropy(model(x), y)
        assert tracker.current == {"weights": 848, "grads": 0, "optimizer_state": 0, "inputs": 160, "activations": 328}
        assert tracker.peak_bytes == 1520
        del loss  # the graph and everything it saved is freed
        assert tracker.current["activations"] == 0


def test_tracker_counts_a_storage_once_and_follows_frees():
    tracker = MemoryTracker()
    with tracker:
        a = torch.zeros(100)  # 400 bytes
        views = [a.view(10, 10), a[::2], a.reshape(4, 25)]  # views share the storage
        assert tracker.current_bytes == 400
        b = a + 1
        assert tracker.current_bytes == 800
        del a, views
        assert tracker.current_bytes == 400  # only b is left
        a = torch.ones(10, dtype=torch.bfloat16)
        assert tracker.current_bytes == 420
        del a, b
        assert tracker.current_bytes == 0
    assert tracker.peak_bytes == 800


def test_inference_peak_is_weights_input_and_largest_live_activations():
    """tiny_mlp in inference at batch 4: weights 848 + x 128 + h 256 + relu(h) 256 = 1488."""
    model = tiny_mlp().eval()
    x = torch.randn(4, 8)
    peak, _ = peak_memory(InferStep(model, x, CPU, "fp32"), CPU, model, (x,))
    assert peak.bytes == 848 + 128 + 256 + 256
    assert peak.by_category["grads"] == peak.by_category["optimizer_state"] == 0


class FakeClock:
    """``measure.time`` for a test: ``perf_counter`` reads a number that steps advance, so the
    timings are exact whatever else the machine is doing."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def step(self, durations):
        durations = iter(durations)

        def advance():
            self.now += next(durations)

        return advance


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(measure, "time", fake)
    return fake


def test_time_steps_runs_warmup_then_repeats(clock):
    calls = []
    timing = time_steps(lambda: calls.append(1), CPU, warmup=3, repeats=4, steps=2, settle=0)
    assert len(calls) == 3 + 4 * 2
    assert len(timing.per_step_s) == 4 and timing.steps == 2 and timing.warmup == 3
    assert timing.min_s <= timing.median_s <= timing.max_s
    # a step of 2**-14 s is repeated 16 times, so that a repeat lasts min_repeat_s = 2**-10 s
    auto = time_steps(clock.step([2**-14] * 100), CPU, warmup=1, repeats=2, min_repeat_s=2**-10, settle=0)
    assert auto.steps == 16 and auto.per_step_s == (2**-14, 2**-14)
    with pytest.raises(UsageError):
        time_steps(lambda: None, CPU, repeats=0)


def test_warmup_goes_on_while_the_step_is_still_getting_faster(clock):
    step = clock.step([0.08, 0.05, 0.03, 0.02] + [0.02] * 20)
    timing = time_steps(step, CPU, warmup=1, repeats=2, steps=1)
    assert timing.warmup == 5  # 0.08 -> 0.05 -> 0.03 -> 0.02 got faster each time; 0.02 -> 0.02 did not
    assert timing.median_s == pytest.approx(0.02, abs=1e-12)


def test_smaller_batch_is_timms_decay():
    for b in range(1, 300):
        assert smaller_batch(b) == decay_batch_step(b)
    seq, b = [], 256
    while b:
        seq.append(b)
        b = smaller_batch(b)
    assert seq[:6] == [256, 192, 128, 96, 64, 48] and seq[-1] == 1


@pytest.mark.parametrize(
    "err, oom",
    [
        (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
        (
            RuntimeError(
                "[enforce fail at alloc_cpu.cpp:118] data. DefaultCPUAllocator: can't allocate memory: "
                "you tried to allocate 1000000000000 bytes."
            ),
            True,
        ),
        (MemoryError(), True),
        (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), False),
        (ValueError("out of memory"), False),
    ],
)
def test_is_oom(err, oom):
    assert is_oom(err) is oom


def test_a_real_cpu_allocation_failure_is_recognised():
    with pytest.raises(RuntimeError) as info:
        torch.empty(1 << 62, dtype=torch.uint8)
    assert is_oom(info.value)


def test_attention_kernel_is_read_from_the_operators_that_ran():
    model = fb.build_model("test-funnel")
    x = torch.randn(2, 3, 32, 32)
    for backend, expected in ((None, "cpu_flash"), (SDPBackend.MATH, "math")):
        tracker = MemoryTracker()
        with sdpa_kernel(backend) if backend else contextlib.nullcontext(), tracker:
            model(x).sum().backward()
        assert attention_kernel(tracker.ops) == expected
    assert attention_kernel({"addmm.default": 3}) == "none"


@pytest.mark.parametrize("name", ["test-vit", "test-funnel", "test-funnel-proj"])
def test_flop_counter_mode_equals_analytic_macs_with_math_attention(name):
    """FlopCounterMode counts 2 x MACs; with math attention it sees every matmul the analytic
    count has, and nothing else (it has no LayerNorm formula)."""
    layout = fb.resolve(name)
    model = fb.build_model(layout)
    ref = torch_flop_count(model, layout.image_size)
    assert ref.macs == fb.count(layout).macs
    assert ref.flops == fb.count(layout).flops
    assert "aten::native_layer_norm" in ref.skipped and "aten::gelu" in ref.skipped  # listed, not dropped
    assert not any(op in ref.skipped for op in ("aten::view", "aten::t", "aten::transpose"))

    # Without forcing math, torch 2.14 has no formula for CPU flash attention: it counts zero
    # for exactly the two attention matmuls (2 N M d MACs per layer) and says so.
    fused = torch_flop_count(model, layout.image_size, force_math=False)
    attention = sum(2 * s.tokens * s.tokens * s.hidden * s.layers for s in layout.stages)
    if any(s.pools and s.pqo for s in layout.stages):
        prev = layout.stages[0]
        for s in layout.stages[1:]:
            if s.pools and s.pqo:
                attention += 2 * s.tokens * (prev.tokens - s.tokens) * s.hidden
            prev = s
    assert fused.macs == ref.macs - attention
    assert fused.skipped["aten::_scaled_dot_product_flash_attention_for_cpu"] == layout.depth


def test_time_interleaved_alternates_the_steps():
    order = []
    steps = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    timings = time_interleaved(steps, CPU, warmup=1, repeats=3, min_repeat_s=0, settle=0)
    assert order == ["a", "a", "b", "b"] + [
        "a",
        "b",
        "b",
        "a",
        "a",
        "b",
    ]  # warm-up (+ one sizing step) each, then alternating
    assert set(timings) == {"a", "b"} and all(len(t.per_step_s) == 3 and t.steps == 1 for t in timings.values())
