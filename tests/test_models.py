"""Built models: shapes, pooling semantics, pool-query-only, and equality with timm's ViT."""

import pytest
import timm
import torch

import funnelbench as fb
from funnelbench.models import TokenPool


@pytest.mark.parametrize("name", fb.list_presets("test-*"))
def test_forward_backward_every_parameter_gets_a_gradient(name):
    model = fb.build_model(name, num_classes=7)
    x = torch.randn(3, 3, 32, 32)
    out = model(x)
    assert out.shape == (3, 7)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_sequence_lengths_follow_the_layout():
    model = fb.build_model("B1(17)-1(9)-1(5), h64, a2, img32, patch8")
    lengths = []
    for block in model.blocks:
        block.register_forward_hook(lambda m, inp, out: lengths.append(out.shape[1]))
    model(torch.randn(1, 3, 32, 32))
    assert lengths == [17, 9, 5]


def test_token_pool_keeps_class_token_and_pools_pairs():
    x = torch.arange(2 * 7 * 1, dtype=torch.float).reshape(1, 7, 2)  # cls + 6 tokens, 2 channels
    mean = TokenPool("mean", 2, prefix=1)(x)
    assert torch.equal(mean[:, 0], x[:, 0])  # class token untouched
    assert torch.equal(mean[:, 1:], (x[:, 1::2] + x[:, 2::2]) / 2)
    mx = TokenPool("max", 3, prefix=1)(x)
    assert torch.equal(mx[:, 1:], torch.maximum(torch.maximum(x[:, 1::3], x[:, 2::3]), x[:, 3::3]))


def test_token_pool_ceil_mode_pools_the_last_short_window():
    x = torch.arange(5, dtype=torch.float).reshape(1, 5, 1)  # 5 tokens, no prefix
    assert TokenPool("mean", 2, prefix=0)(x).flatten().tolist() == [0.5, 2.5, 4.0]
    assert TokenPool("max", 2, prefix=0)(x).flatten().tolist() == [1.0, 3.0, 4.0]


def test_pool_query_only_changes_the_function_but_not_the_weights():
    torch.manual_seed(1)
    a = fb.build_model("B1(17)-1(9), h64, a2, img32, patch8").eval()
    b = fb.build_model("B1(17)-1(9), h64, a2, img32, patch8, nopqo").eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(a(x), b(x))


def test_pool_query_only_matches_explicit_attention():
    """The pqo layer computed by hand: queries from the pooled tokens, keys/values from all."""
    torch.manual_seed(2)
    model = fb.build_model("B1(17)-1(9), h64, a2, img32, patch8").eval()
    block, trans = model.blocks[1], model.transitions["1"]
    x = torch.randn(2, 17, 64)
    pooled = torch.cat([x[:, :1], (x[:, 1::2] + x[:, 2::2]) / 2], 1)
    q_in, kv_in = block.norm1(pooled), block.norm1(x)
    W, bias = block.attn.qkv.weight, block.attn.qkv.bias
    q = (q_in @ W[:64].T + bias[:64]).reshape(2, 9, 2, 32).transpose(1, 2)
    k = (kv_in @ W[64:128].T + bias[64:128]).reshape(2, 17, 2, 32).transpose(1, 2)
    v = (kv_in @ W[128:].T + bias[128:]).reshape(2, 17, 2, 32).transpose(1, 2)
    att = torch.softmax(q @ k.transpose(-1, -2) / 32**0.5, -1) @ v
    h = pooled + block.attn.proj(att.transpose(1, 2).reshape(2, 9, 64))
    expected = h + block.mlp(block.norm2(h))
    with torch.no_grad():
        new, kv = trans(x)
        assert torch.allclose(block(new, kv), expected, atol=1e-5)


def test_avg_head_has_no_class_token():
    model = fb.build_model("B1(16)-1(8), h64, a2, img32, patch8, avg", num_classes=3)
    assert model.cls_token is None and model.pos_embed.shape == (1, 16, 64)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)


def test_wrong_image_size_is_a_clear_error():
    with pytest.raises(fb.UsageError, match="32x32"):
        fb.build_model("test-vit")(torch.randn(1, 3, 64, 64))


def test_bad_num_classes():
    with pytest.raises(fb.UsageError):
        fb.build_model("test-vit", num_classes=0)


def test_same_as_timm_vision_transformer_small():
    """Same widths, same weights -> same logits as timm's VisionTransformer."""
    ref = timm.create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, num_classes=10
    ).eval()
    ours = fb.build_model("test-vit", num_classes=10).eval()
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
    fb.load_vit_weights(ours, ref.state_dict())
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(ours(x), ref(x), atol=1e-5)
