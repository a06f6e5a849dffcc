"""The analytic memory estimate against the CPU tracker: saved activations byte for byte,
peaks within a percent, for random tiny layouts, fp32 and bf16 autocast, fused and math
attention; and what it refuses to guess."""

import contextlib
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import tiny_layouts
from torch.nn.attention import SDPBackend, sdpa_kernel

import funnelbench as fb
from funnelbench.errors import UsageError
from funnelbench.measure import InferStep, MemoryTracker, TrainStep, autocast, make_optimizer, peak_memory
from funnelbench.memory import UnmodelledLayout, _param_sizes, estimate_memory, max_batch_size, unmodelled_parts

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


def backend(attention):
    return sdpa_kernel(SDPBackend.MATH) if attention == "math" else contextlib.nullcontext()


def measured(layout, batch, dtype, attention, optimizer="adamw"):
    """(activations saved at the end of the forward pass, training peak, inference peak)."""
    torch.manual_seed(0)
    model = fb.build_model(layout)
    x = torch.randn(batch, 3, layout.image_size, layout.image_size)
    y = torch.randint(0, 1000, (batch,))
    with backend(attention):
        tracker = MemoryTracker()
        with tracker:
            # buffers too: a view of one (the Performer's random features) is not an activation
            tracker.register(list(model.parameters()) + list(model.buffers()), "weights")
            tracker.register((x, y), "inputs")
            with autocast(CPU, dtype):
                loss = F.cross_entropy(model(x), y)
            saved = tracker.current["activations"]
        del loss
        model.eval()
        infer, _ = peak_memory(InferStep(model, x, CPU, dtype), CPU, model, (x,))
        model.train()
        opt = make_optimizer(model, optimizer)
        step = TrainStep(model, x, y, opt, CPU, dtype)
        step()
        train, _ = peak_memory(step, CPU, model, (x, y), opt)
    return saved, train, infer


# The stems the estimate models; the backbone's parts are all modelled.
MODELLED_STEMS = ("patch", "t2t_t", "t2t", "ps")


@given(
    tiny_layouts(stems=MODELLED_STEMS),
    st.integers(1, 6),
    st.sampled_from(["fp32", "bf16"]),
    st.sampled_from(["fused", "math"]),
)
@settings(max_examples=25, deadline=None)
def test_estimate_matches_the_tracker_on_random_layouts(text, batch, dtype, attention):
    """Saved activations are exact; the peaks depend on which gradient is in flight at the worst
    moment, which the estimate models for the layer's MLP and attention: within a few percent
    even for odd layouts like an MLP of width 1 (250 random layouts with patch and T2T stems:
    -2.3 % to +3.4 %; in fp32, 120 with the Performer T2T stem: -0.2 % to 0, 200 with the PS
    stem: -0.7 % to 0)."""
    layout = fb.parse_layout(text)
    if layout.stem.kind != "patch" and dtype != "fp32":  # the T2T and PS stems under autocast are not modelled
        with pytest.raises(UnmodelledLayout, match="autocast"):
            estimate_memory(layout, batch, dtype=dtype, attention=attention)
        return
    model = fb.build_model(layout)
    saved, train, infer = measured(layout, batch, dtype, attention)
    est = estimate_memory(layout, batch, dtype=dtype, attention=attention)
    assert est.activations_bytes == saved, (est.activations_bytes, saved)
    # the parameter tensors (AdamW's per-tensor counters and scratch follow them) and the buffers
    assert _param_sizes(layout, 1000) == [p.numel() for p in model.parameters()]
    assert est.buffers_bytes == sum(b.untyped_storage().nbytes() for b in model.buffers())
    # the math kernel's backward is modelled more roughly (which gradient buffers of the
    # attention matrix coexist depends on the kernel): within 8 % instead of 5 %
    tolerance = 0.05 if attention == "fused" else 0.08
    assert abs(est.train_peak_bytes - train.bytes) <= tolerance * train.bytes, (est, train)
    assert est.weights_bytes == 4 * fb.count(layout).params
    if attention == "fused":  # the math kernel's scratch is invisible to the tracker in inference mode
        assert abs(est.infer_peak_bytes - infer.bytes) <= 0.02 * infer.bytes, (est.infer_peak_bytes, infer)
    else:
        assert est.infer_peak_bytes >= 0.99 * infer.bytes, (est.infer_peak_bytes, infer)


@pytest.mark.parametrize(
    "name, batch, dtype, optimizer",
    [
        ("test-funnel-proj", 48, "fp32", "adamw"),  # the peak is in the backward pass
        ("test-funnel", 48, "bf16", "sgd"),
        ("test-vit", 2, "fp32", "adamw"),  # the peak is in the optimizer step
        ("test-hvt", 48, "fp32", "adamw"),  # kernel-window max pools, new position embeddings, no class token
        ("test-pool2d", 48, "bf16", "sgd"),
        ("test-t2t_t", 32, "fp32", "adamw"),  # Tokens-to-Token stem (Transformer layers)
        ("test-t2t", 32, "fp32", "adamw"),  # Tokens-to-Token stem (Performer layers): the peak is in its backward
        ("test-ps", 16, "fp32", "adamw"),  # progressive sampling: the peak is in the feature extractor's backward
        (
            "B1(17), h64, a2, noqkvbias, img32, ps4, iters4, share, fe32",
            8,
            "fp32",
            "sgd",
        ),  # one layer for all iterations
    ],
)
def test_estimated_peak_and_phase_equal_the_measured_ones(name, batch, dtype, optimizer):
    layout = fb.resolve(name)
    _, train, infer = measured(layout, batch, dtype, "fused", optimizer)
    est = estimate_memory(layout, batch, dtype=dtype, optimizer=optimizer)
    assert est.train_peak_phase == train.phase
    assert abs(est.train_peak_bytes - train.bytes) <= 16  # a few scalar tensors of the loss
    assert est.infer_peak_bytes == infer.bytes
    assert est.optimizer_bytes == train.by_category["optimizer_state"]


def test_deit_ti_estimate_within_a_percent():
    _, train, _ = measured(fb.resolve("deit-ti"), 2, "fp32", "fused")
    assert abs(estimate_memory("deit-ti", 2).train_peak_bytes / train.bytes - 1) < 0.01


def test_parts_add_up_and_follow_the_layout():
    est = estimate_memory("funnel-b4-4-4-max", 16)
    names = [p.name for p in est.parts]
    assert names[0] == "embed" and names[-1] == "head"
    assert "stage2.transition" in names and "stage3.layer4" in names and len(names) == 1 + 12 + 2 + 1
    assert sum(p.saved_bytes for p in est.parts) == est.activations_bytes
    assert sum(p.params_bytes for p in est.parts) == est.weights_bytes
    # activations follow the token-layers: (4 x 197 + 4 x 99 + 4 x 50) / (12 x 197) = 0.585, plus
    # what max pooling and pool-query-only attention keep of the unpooled sequences
    ratio = est.activations_bytes / estimate_memory("vit-b16", 16).activations_bytes
    assert 0.585 < ratio < 0.63


def test_per_layer_saved_activations_follow_the_formula():
    """A ViT-B layer at fp32 keeps (8 d + 2 m) N floats, 2 x 2 N LayerNorm statistics and the
    h N logsumexp of fused attention (the module docstring's table)."""
    B, N, d, m, h = 4, 197, 768, 3072, 12
    est = estimate_memory("vit-b16", B)
    layer = next(p for p in est.parts if p.name == "stage1.layer2")
    assert layer.saved_bytes == 4 * B * N * (8 * d + 2 * m + 4 + h)
    math = next(p for p in estimate_memory("vit-b16", B, attention="math").parts if p.name == "stage1.layer2")
    # math keeps the h N N attention matrix and scaled copies of q, k, v (3 N d, as qkv);
    # fused keeps qkv and the h N logsumexp
    assert math.saved_bytes - layer.saved_bytes == 4 * B * (h * N * N - h * N)


def test_optimizer_and_device_rules():
    cpu = estimate_memory("deit-s", 1, device="cpu")
    cuda = estimate_memory("deit-s", 1, device="cuda")
    sgd = estimate_memory("deit-s", 1, optimizer="sgd")
    assert cpu.optimizer_bytes > cuda.optimizer_bytes and sgd.optimizer_bytes < cuda.optimizer_bytes
    assert cpu.optimizer_peak_bytes < cuda.optimizer_peak_bytes  # CPU loops over tensors, CUDA uses foreach
    assert (
        estimate_memory("deit-s", 64, dtype="bf16").activations_bytes < estimate_memory("deit-s", 64).activations_bytes
    )


@pytest.mark.parametrize("name", ["test-vit", "test-funnel-proj"])
def test_cuda_adamw_rules_equal_foreach_adamw_measured_on_cpu(name):
    """On CUDA torch's AdamW runs its foreach implementation; the same code runs on CPU with
    foreach=True, so the CUDA rules are measured here with the CPU tracker: its state and its
    peak in the optimizer step, less the 4-byte step counter per tensor that CUDA keeps on the
    host. (Not a GPU measurement: CUDA's allocator rounding and workspaces are not in it.)"""
    layout = fb.resolve(name)
    torch.manual_seed(0)
    model = fb.build_model(layout)
    x = torch.randn(2, 3, layout.image_size, layout.image_size)
    y = torch.randint(0, 1000, (2,))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05, foreach=True)
    step = TrainStep(model, x, y, opt, CPU, "fp32")
    step()
    peak, _ = peak_memory(step, CPU, model, (x, y), opt)
    counters = [t for state in opt.state.values() for k, t in state.items() if k == "step"]
    assert len(counters) == len(list(model.parameters())) and all(t.device == CPU for t in counters)
    est = estimate_memory(layout, 2, device="cuda")
    assert est.optimizer_bytes == sum(t.nbytes for state in opt.state.values() for k, t in state.items() if k != "step")
    assert est.optimizer_peak_bytes == peak.by_phase["optimizer"] - sum(t.nbytes for t in counters)


def test_max_batch_size_is_the_largest_that_fits():
    budget = 16 * 2**30
    b = max_batch_size("vit-b16", budget, device="cuda")
    assert estimate_memory("vit-b16", b, device="cuda").train_peak_bytes <= budget
    assert estimate_memory("vit-b16", b + 1, device="cuda").train_peak_bytes > budget
    assert max_batch_size("vit-b16", 10 * 2**20) == 0  # not even the weights fit


def test_an_unknown_stem_is_reported():
    layout = fb.resolve("test-ps")
    odd = dataclasses.replace(layout, stem=dataclasses.replace(layout.stem, kind="conv"))
    assert any(p.startswith("stem=Stem(kind='conv'") for p in unmodelled_parts(odd)), unmodelled_parts(odd)


@pytest.mark.parametrize("name", ["test-t2t", "test-t2t_t", "test-ps"])
def test_stems_under_autocast_are_refused_not_guessed(name):
    assert unmodelled_parts(fb.resolve(name)) == [] and estimate_memory(name, 2).activations_bytes > 0
    for dtype in ("bf16", "fp16"):
        with pytest.raises(UnmodelledLayout, match=f"does not model the .* stem under {dtype} autocast"):
            estimate_memory(name, 2, dtype=dtype)


def test_odd_parts_are_reported_not_guessed():
    layout = fb.resolve("test-funnel-proj")
    assert unmodelled_parts(layout) == []
    odd = dataclasses.replace(layout, stages=(dataclasses.replace(layout.stages[0], pool="median"),))
    assert unmodelled_parts(odd) == ["stage 1 pool='median'"]
    with pytest.raises(UnmodelledLayout, match="does not model stage 1 pool='median'"):
        estimate_memory(odd, 2)
    assert unmodelled_parts(dataclasses.replace(layout, head="max", pos="rope")) == ["head='max'", "pos='rope'"]


@pytest.mark.parametrize("name", [n for n in fb.list_presets() if not n.startswith("test-")])
def test_every_preset_is_modelled_and_its_weights_are_the_built_models(name):
    """Every shipped preset is modelled (what is not is refused: the tests above), and the
    estimate's weights and buffers are those of the model built on the meta device (no memory):
    the module's own tensors, not the estimate's parameter count."""
    assert unmodelled_parts(fb.resolve(name)) == []
    est = estimate_memory(name, 2)
    with torch.device("meta"):
        model = fb.build_model(name)
    assert est.weights_bytes == sum(p.numel() * p.element_size() for p in model.parameters())
    assert est.buffers_bytes == sum(b.numel() * b.element_size() for b in model.buffers())
    assert est.activations_bytes > 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"batch_size": 0},
        {"dtype": "fp8"},
        {"device": "tpu"},
        {"attention": "flash"},
        {"optimizer": "lamb"},
    ],
)
def test_bad_arguments(kwargs):
    args = {"batch_size": 2, **kwargs}
    with pytest.raises(UsageError):
        estimate_memory("test-vit", args.pop("batch_size"), **args)
