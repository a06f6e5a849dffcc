"""timm / torchvision ViT weights into funnelbench layouts."""

import pytest
import timm
import torch
import torchvision

import funnelbench as fb
from funnelbench.weights import WeightsError, resize_pos_embed


@pytest.fixture(scope="module")
def deit_s():
    torch.manual_seed(0)
    return timm.create_model("deit_small_patch16_224", pretrained=False).eval()


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))


def test_timm_deit_s_logits_match(deit_s, images):
    model = fb.build_model("deit-s").eval()
    report = fb.load_vit_weights(model, deit_s.state_dict())
    assert not report.new and not report.skipped and not report.unused
    with torch.no_grad():
        assert (model(images) - deit_s(images)).abs().max() < 1e-4


def test_same_weights_in_a_funnel_run_and_differ(deit_s, images):
    model = fb.build_model("B6(197)-6(99), h384").eval()
    fb.load_vit_weights(model, deit_s.state_dict())
    with torch.no_grad():
        out = model(images)
        assert torch.isfinite(out).all()
        assert (out - deit_s(images)).abs().max() > 1e-3
    # ... and back: the funnel's weights load into the ViT unchanged
    back = fb.build_model("deit-s").eval()
    fb.load_vit_weights(back, model.state_dict())
    with torch.no_grad():
        assert (back(images) - deit_s(images)).abs().max() < 1e-4


def test_torchvision_vit_b_16_logits_match(images):
    torch.manual_seed(0)
    ref = torchvision.models.vit_b_16().eval()
    model = fb.build_model("vit-b16").eval()
    fb.load_vit_weights(model, {"model": ref.state_dict()})  # wrapped checkpoints unwrap
    with torch.no_grad():
        assert (model(images) - ref(images)).abs().max() < 1e-4


def test_timm_vit_b16_into_three_stage_funnel(images):
    ref = timm.create_model("vit_base_patch16_224", pretrained=False)
    model = fb.build_model("funnel-b4-4-4-max").eval()
    report = fb.load_vit_weights(model, ref.state_dict())
    assert len(report.loaded) == len(model.state_dict())
    with torch.no_grad():
        assert model(images[:1]).shape == (1, 1000)


def test_width_mismatch_is_a_clear_error(deit_s):
    with pytest.raises(WeightsError, match="widths and depth must match"):
        fb.load_vit_weights(fb.build_model("deit-ti"), deit_s.state_dict())
    with pytest.raises(fb.UsageError, match="missing"):
        fb.load_vit_weights(fb.build_model("B13(197), h384"), deit_s.state_dict())


def test_other_class_count_keeps_the_new_head(deit_s):
    model = fb.build_model("deit-s", num_classes=10)
    report = fb.load_vit_weights(model, deit_s.state_dict())
    assert report.skipped == ["head.weight", "head.bias"]


def test_projection_weights_are_reported_new():
    """A plain ViT (width 64) into a funnel that widens to 96 and back (test-funnel-proj): its two
    width projections are not in the checkpoint, so they are reported new and left as
    initialised; the width-64 blocks load; the width-96 block does not fit (an error naming it,
    unless strict=False)."""
    torch.manual_seed(0)
    vit = fb.build_model("B3(17), h64, a2, img32, patch8").state_dict()
    funnel = fb.build_model("test-funnel-proj")
    before = {k: v.clone() for k, v in funnel.state_dict().items()}
    with pytest.raises(
        WeightsError, match=r"blocks\.1\.attn\.qkv\.weight: checkpoint \(192, 64\) vs model \(288, 96\)"
    ):
        fb.load_vit_weights(funnel, vit)
    assert all(torch.equal(v, before[k]) for k, v in funnel.state_dict().items())  # nothing loaded
    report = fb.load_vit_weights(funnel, vit, strict=False)
    projections = [
        "transitions.1.proj.weight",
        "transitions.1.proj.bias",
        "transitions.2.proj.weight",
        "transitions.2.proj.bias",
    ]
    assert report.new == projections
    after = funnel.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in projections)
    assert torch.equal(after["blocks.2.mlp.fc1.weight"], vit["blocks.2.mlp.fc1.weight"])  # width 64: loaded
    assert torch.equal(after["blocks.1.mlp.fc1.weight"], before["blocks.1.mlp.fc1.weight"])  # width 96: not
    # The same layout's own checkpoint holds the projections: nothing is new.
    assert fb.load_vit_weights(fb.build_model("test-funnel-proj"), funnel.state_dict()).new == []


def test_pos_embed_resize_same_grid_is_identity_and_keeps_class_token():
    pos = torch.randn(1, 1 + 14 * 14, 8)
    assert resize_pos_embed(pos, 14, prefix=1) is pos
    big = resize_pos_embed(pos, 24, prefix=1)
    assert big.shape == (1, 1 + 24 * 24, 8)
    assert torch.equal(big[:, 0], pos[:, 0])
    grid = pos[:, 1:].reshape(1, 14, 14, 8).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(grid, size=(24, 24), mode="bicubic", align_corners=False)
    assert torch.allclose(big[:, 1:], expected.permute(0, 2, 3, 1).reshape(1, 576, 8))


def test_load_into_higher_resolution_resizes(deit_s):
    model = fb.build_model(fb.resolve("deit-s").at_image_size(384))
    report = fb.load_vit_weights(model, deit_s.state_dict())
    assert report.resized == ["pos_embed"]
    assert model.pos_embed.shape == (1, 577, 384)


def test_not_a_checkpoint():
    with pytest.raises(WeightsError):
        fb.load_vit_weights(fb.build_model("test-vit"), {"model": {"x": 3}})
