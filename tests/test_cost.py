"""Analytic counts against the built model (params, exactly), fvcore (MACs) and the papers."""

import pytest
from hypothesis import given, settings
from strategies import tiny_layouts

import funnelbench as fb
from funnelbench.counters import fvcore_count


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", fb.list_presets())
def test_params_equal_built_model_for_every_preset(name):
    assert fb.count(name).params == n_params(fb.build_model(name))


@given(tiny_layouts())
@settings(max_examples=60, deadline=None)
def test_params_equal_built_model_for_random_layouts(text):
    assert fb.count(text).params == n_params(fb.build_model(text))


@given(tiny_layouts())
@settings(max_examples=30, deadline=None)
def test_macs_equal_fvcore_in_our_convention_for_random_layouts(text):
    """fvcore (with an SDPA handle) counts exactly our MACs plus the elementwise operators our
    convention leaves out (norms, grid_sample), for every stem, pool and option."""
    layout = fb.parse_layout(text)
    ref = fvcore_count(fb.build_model(layout), layout.image_size)
    assert ref.convention_macs == fb.count(layout).macs, ref.by_operator
    if layout.stem.kind == "patch":  # without a PS stem, norms are the only difference
        assert ref.macs_without_norms == fb.count(layout).macs


# Operators with a matrix product: fvcore must count them (never list them as skipped).
MATMUL_OPS = ("linear", "matmul", "bmm", "addmm", "einsum", "_convolution", "scaled_dot_product_attention")
FAMILIES = [n for n in fb.list_presets() if n.split("-")[0] in ("hvt", "t2t", "ps")]


@pytest.mark.parametrize("name", FAMILIES)
def test_family_presets_macs_equal_fvcore(name):
    """Every HVT, T2T-ViT and PS-ViT preset: fvcore's count minus norms and bilinear sampling is
    exactly ours; with them it is within 1 %; what fvcore skipped has no matrix product."""
    layout = fb.resolve(name)
    ref = fvcore_count(fb.build_model(layout), layout.image_size)
    ours = fb.count(layout).macs
    assert ref.convention_macs == ours, ref.by_operator
    assert 0 < ref.macs - ours < 0.01 * ref.macs
    assert not [op for op in ref.skipped if any(m in op for m in MATMUL_OPS)], ref.skipped
    if layout.stem.kind == "ps":
        assert ref.by_operator["grid_sampler"] > 0 and ref.by_operator["batch_norm"] > 0
        # PS-ViT's repository counts with a copy of fvcore: its README's figures are fvcore's totals,
        # norms and grid_sample included (PS-ViT-B/18: 8.77 G there, 8.74 G in our convention)
        assert round(ref.macs / 1e9, 1) == fb.PRESETS[name].paper_gmacs
    if layout.stem.kind == "t2t_t":  # T2T attention of the Transformer kind goes through SDPA too
        assert ref.by_operator["scaled_dot_product_attention"] > 2 * 3136 * 3136 * 64


@pytest.mark.parametrize(
    "name",
    [
        "deit-ti",
        "deit-s",
        "vit-b16",
        "funnel-b6-6",
        "funnel-b4-4-4-max",
        "funnel-b6-6-h1024",
        "funnel-b6m4096-6-2m1536",
        "test-funnel-proj",
    ],
)
def test_macs_within_half_percent_of_fvcore(name):
    layout = fb.resolve(name)
    ref = fvcore_count(fb.build_model(layout), layout.image_size)
    ours = fb.count(layout).macs
    assert ref.macs_without_norms == ours
    if not name.startswith("test-"):  # in a 64-wide toy model LayerNorm is a bigger share
        assert abs(ref.macs - ours) / ref.macs < 0.005
    # what a counter skipped is reported, never silently dropped; attention is counted
    assert "aten::scaled_dot_product_attention" not in ref.skipped
    assert ref.by_operator["scaled_dot_product_attention"] > 0


@pytest.mark.parametrize(
    "name, params_m, gmacs",
    [
        ("deit-ti", 5.7, 1.3),
        ("deit-s", 22.1, 4.6),
        ("deit-b", 86.6, 17.6),
        ("vit-b16", 86.6, 17.6),
    ],
)
def test_paper_numbers(name, params_m, gmacs):
    cost = fb.count(name)
    assert round(cost.params / 1e6, 1) == params_m
    assert round(cost.macs / 1e9, 1) == gmacs
    assert cost.flops == 2 * cost.macs


def test_deit_s_by_hand():
    """DeiT-S from the formulas written out: 12 layers of N=197, d=384, m=1536, patches, head."""
    N, d, m = 197, 384, 1536
    layer = N * 4 * d * d + 2 * N * N * d + 2 * N * d * m
    patch = 196 * 3 * 16 * 16 * d
    head = d * 1000
    assert fb.count("deit-s").macs == 12 * layer + patch + head == 4_598_882_304
    assert fb.count("vit-b16").params == 86_567_656  # timm's vit_base_patch16_224


def test_pool_query_only_and_projection_costs():
    """Hand-derived costs of the first layer after a pool, with and without pool-query-only,
    and of a width-changing projection."""
    d, m = 768, 3072
    full, pooled = 197, 99
    plain = lambda n, kv: n * d * d + 2 * kv * d * d + 2 * n * kv * d + n * d * d + 2 * n * d * m
    a = fb.count("B1(197)-1(99)")
    b = fb.count("B1(197)-1(99), nopqo")
    assert a.parts[2].macs == plain(pooled, full)
    assert b.parts[2].macs == plain(pooled, pooled)
    c = fb.count("B1(197)-1(99, h1024)")
    d2 = 1024
    assert c.parts[2].params - fb.count("B1(197, h1024)").parts[1].params == 768 * d2 + d2
    assert (
        c.parts[2].macs
        - (
            pooled * 4 * d2 * d2
            - pooled * 2 * d2 * d2
            + full * 2 * d2 * d2
            + 2 * pooled * full * d2
            + 2 * pooled * d2 * 4096
        )
        == full * 768 * d2
    )


def test_funnel_saves_macs_not_params():
    vit, funnel = fb.count("vit-b16"), fb.count("funnel-b6-6")
    assert funnel.params == vit.params
    assert 0.70 < funnel.macs / vit.macs < 0.80


def test_count_rejects_unknown_names():
    with pytest.raises(fb.UsageError, match="unknown preset 'vit-b'.*vit-b16"):
        fb.count("vit-b")
    with pytest.raises(fb.LayoutError):
        fb.count("B6(197)-6(98)")
