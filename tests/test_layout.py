"""The layout grammar: a table of good strings, a table of bad strings, round trips, fuzzing."""

import dataclasses
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import tiny_layouts

import funnelbench as fb
from funnelbench.layout import (
    POOL_OPS,
    Stage,
    format_layout,
    infer_stride,
    layout_problem,
    pooled_length,
    ps_feature_size,
    validate_layout,
)
from funnelbench.memory import UnmodelledLayout

# Every layout string of the Funnel-ViT seed's Tables 2, 3 and 4, verbatim, with the stages it
# means: (layers, tokens, hidden, mlp, heads, pool, stride, pqo).
PAPER = {
    "B12(197)": [(12, 197, 768, 3072, 12, "none", 1, False)],
    "B6(197)-6(99), max": [(6, 197, 768, 3072, 12, "none", 1, False), (6, 99, 768, 3072, 12, "max", 2, True)],
    "B6(197)-6(99), mean": [(6, 197, 768, 3072, 12, "none", 1, False), (6, 99, 768, 3072, 12, "mean", 2, True)],
    "B4(197)-4(99)-4(50), max": [
        (4, 197, 768, 3072, 12, "none", 1, False),
        (4, 99, 768, 3072, 12, "max", 2, True),
        (4, 50, 768, 3072, 12, "max", 2, True),
    ],
    "B6(197)-6(50), max": [(6, 197, 768, 3072, 12, "none", 1, False), (6, 50, 768, 3072, 12, "max", 4, True)],
    "B6(197)-6(99)-4(50)": [
        (6, 197, 768, 3072, 12, "none", 1, False),
        (6, 99, 768, 3072, 12, "mean", 2, True),
        (4, 50, 768, 3072, 12, "mean", 2, True),
    ],
    "B6(197, h1024)-6(99, h1024)": [
        (6, 197, 1024, 4096, 16, "none", 1, False),
        (6, 99, 1024, 4096, 16, "mean", 2, True),
    ],
    "B6(197, m4096)-6(99, m4096)": [(6, 197, 768, 4096, 12, "none", 1, False), (6, 99, 768, 4096, 12, "mean", 2, True)],
    "B6(197)-6(99)-4(50, m1536)": [
        (6, 197, 768, 3072, 12, "none", 1, False),
        (6, 99, 768, 3072, 12, "mean", 2, True),
        (4, 50, 768, 1536, 12, "mean", 2, True),
    ],
    "B6(197)-6(99)-2(50, m1536)": [
        (6, 197, 768, 3072, 12, "none", 1, False),
        (6, 99, 768, 3072, 12, "mean", 2, True),
        (2, 50, 768, 1536, 12, "mean", 2, True),
    ],
    "B6(197, m4096)-6(99)-2(50, m1536)": [
        (6, 197, 768, 4096, 12, "none", 1, False),
        (6, 99, 768, 3072, 12, "mean", 2, True),
        (2, 50, 768, 1536, 12, "mean", 2, True),
    ],
}


FUNNEL_FIELDS = ("layers", "tokens", "hidden", "mlp", "heads", "pool", "stride", "pqo")


@pytest.mark.parametrize("text", PAPER)
def test_paper_layouts_parse_verbatim(text):
    layout = fb.parse_layout(text)
    assert [tuple(getattr(s, f) for f in FUNNEL_FIELDS) for s in layout.stages] == PAPER[text]
    # the fields added for HVT, T2T-ViT and PS-ViT keep the Funnel-ViT defaults
    assert all((s.kernel, s.newpos, s.qkv_bias) == (0, False, True) for s in layout.stages)
    assert layout.stem == fb.layout.Stem() and layout.pos == "learned"
    assert (layout.image_size, layout.patch_size, layout.head) == (224, 16, "cls")


# More good strings: text -> (canonical form, a check on the parsed layout)
GOOD = {
    "B12(197), h384": ("B12(197), h384", lambda l: l.stages[0] == Stage(12, 197, 384, 1536, 6)),
    "B12(197, h384)": ("B12(197), h384", lambda l: l.stages[0].heads == 6),
    "12(197)": ("B12(197)", lambda l: l.depth == 12),
    "B 6 ( 197 ) - 6 ( 99 ) ,max": ("B6(197)-6(99), max", lambda l: l.stages[1].pool == "max"),
    "B6(197)-6(99, nopqo)": ("B6(197)-6(99), nopqo", lambda l: not l.stages[1].pqo),
    "B6(197)-6(99, pqo=off)-2(50)": (
        "B6(197)-6(99, nopqo)-2(50)",
        lambda l: [s.pqo for s in l.stages] == [False, False, True],
    ),
    "B6(197, hidden=512, heads=8, mlp=1000)": (
        "B6(197), h512, m1000",
        lambda l: l.stages[0] == Stage(6, 197, 512, 1000, 8),
    ),
    "B4(65)-4(33), h192, img32, patch4": ("B4(65)-4(33), h192, img32, patch4", lambda l: l.num_patches == 64),
    "B4(64)-4(32), h192, img=32, patch=4, head=avg": (
        "B4(64)-4(32), h192, img32, patch4, avg",
        lambda l: l.head == "avg",
    ),
    "B12(577), img384": ("B12(577), img384", lambda l: l.grid == 24),
    "B6(197)-6(99, max)-2(50), mean": (
        "B6(197)-6(99, max)-2(50)",
        lambda l: [s.pool for s in l.stages] == ["none", "max", "mean"],
    ),
    "B2(197)-2(67)-2(23)": ("B2(197)-2(67)-2(23)", lambda l: [s.stride for s in l.stages] == [1, 3, 3]),
    "B2(197)-2(99)-2(26)": ("B2(197)-2(99)-2(26)", lambda l: l.stages[2].stride == 4),  # 98 -> 25 (ceil mode)
    "B2(197)-2(50)-2(26)": ("B2(197)-2(50)-2(26)", lambda l: l.stages[2].stride == 2),  # 49 -> 25 (ceil mode)
    "B6(197)-6(197, h1024)": ("B6(197)-6(197, h1024)", lambda l: not l.stages[1].pools and l.stages[1].heads == 16),
    "B1(197), a1": ("B1(197), a1", lambda l: l.stages[0].heads == 1),
    # HVT: max pool with window 3, stride 2, no padding (196 -> 97 -> 48 -> 23 -> 11), a new position embedding per pool
    "B1(196)-11(97), pool=max, kernel=3, pqo=off, newpos=on, hidden=384, head=avg": (
        "B1(196)-11(97), max, k3, nopqo, newpos, h384, avg",
        lambda l: (
            (l.stages[1].pool, l.stages[1].stride, l.stages[1].kernel, l.stages[1].pqo, l.stages[1].newpos)
            == ("max", 2, 3, False, True)
            and l.num_prefix_tokens == 0
        ),
    ),
    "B1(196)-3(97)-3(48)-3(23)-2(11), h384, max, k3, nopqo, newpos, avg": (
        "B1(196)-3(97)-3(48)-3(23)-2(11), max, k3, nopqo, newpos, h384, avg",
        lambda l: [s.stride for s in l.stages] == [1, 2, 2, 2, 2] and l.depth == 12,
    ),
    "B1(197)-1(195, max, k3)": ("B1(197)-1(195), max, k3", lambda l: l.stages[1].pools and l.stages[1].stride == 1),
    # T2T-ViT: Tokens-to-Token stem, sinusoid position embedding by default, no qkv bias
    "B14(197), h384, m1152, noqkvbias, t2t": (
        "B14(197), h384, m1152, noqkvbias, t2t",
        lambda l: (
            (l.stem.kind, l.stem.token_dim, l.pos, l.grid, l.stages[0].qkv_bias) == ("t2t", 64, "sincos", 14, False)
        ),
    ),
    "B14(197), h384, m1152, qkvbias=off, stem=t2t_t, tok=32": (
        "B14(197), h384, m1152, noqkvbias, t2t_t, tok32",
        lambda l: (l.stem.kind, l.stem.token_dim) == ("t2t_t", 32),
    ),
    "B12(197), t2t, pos=sincos": ("B12(197), t2t", lambda l: l.pos == "sincos"),
    "B12(197), t2t, pos=learned": ("B12(197), t2t, pos=learned", lambda l: l.pos == "learned"),
    "B5(17), t2t, img64, h64": ("B5(17), h64, img64, t2t", lambda l: l.grid == 4),
    # PS-ViT: progressive sampling of n x n points on a conv feature map, no position embedding after the stem
    "B10(197), h384, m1152, noqkvbias, ps14": (
        "B10(197), h384, m1152, noqkvbias, ps14",
        lambda l: (l.stem.points, l.stem.iters, l.stem.share, l.stem.fe_width, l.pos) == (14, 4, False, 256, "none"),
    ),
    "B8(197), h192, m576, noqkvbias, ps=14, iters=2, share=on, fe=192": (
        "B8(197), h192, m576, noqkvbias, ps14, iters2, share, fe192",
        lambda l: (l.stem.iters, l.stem.share, l.stem.fe_width) == (2, True, 192),
    ),
    "B10(101), ps10, h384": ("B10(101), h384, ps10", lambda l: l.num_patches == 100),
    "B12(197), ps14, pos=learned": ("B12(197), ps14, pos=learned", lambda l: l.pos == "learned"),
    "B12(197), pos=sincos": ("B12(197), pos=sincos", lambda l: l.stem.kind == "patch" and l.pos == "sincos"),
    # mixing parts: a T2T stem with funnel stages, progressive sampling with HVT pooling
    "B7(197)-7(99), h384, m1152, t2t": (
        "B7(197)-7(99), h384, m1152, t2t",
        lambda l: (l.stem.kind, l.stages[1].pool, l.stages[1].stride) == ("t2t", "mean", 2),
    ),
    "B2(196)-2(97, max, k3, nopqo, newpos), h384, ps14, avg": (
        "B2(196)-2(97), max, k3, nopqo, newpos, h384, ps14, avg",
        lambda l: l.stages[1].newpos and l.stem.kind == "ps",
    ),
    # 2D pooling of the patch grid: 14x14 -> 7x7 -> 4x4 (ceil mode)
    "B4(197)-4(50, mean2d)-4(17, max2d)": (
        "B4(197)-4(50)-4(17, max2d), mean2d",
        lambda l: [s.stride for s in l.stages] == [1, 2, 2] and l.stages[2].pool2d,
    ),
    "B4(197)-4(50, mean2d, k2)": ("B4(197)-4(50), mean2d, k2", lambda l: l.stages[1].kernel == 2),
    "B4(197)-4(37, max2d, k3)": (
        "B4(197)-4(37), max2d, k3",
        lambda l: l.stages[1].stride == 2,
    ),  # (14 - 3) // 2 + 1 = 6
    # per-stage qkv bias
    "B12(197, noqkvbias)-1(197, h384)": (
        "B12(197, noqkvbias)-1(197, h384)",
        lambda l: [s.qkv_bias for s in l.stages] == [False, True],
    ),
}


@pytest.mark.parametrize("text", GOOD)
def test_good_layouts(text):
    canonical, check = GOOD[text]
    layout = fb.parse_layout(text)
    assert str(layout) == canonical
    assert check(layout)
    assert fb.parse_layout(canonical) == layout


# Bad strings: text -> (1-based column the error points at, words the message must contain)
BAD = {
    "": (1, "empty"),
    "   ": (1, "empty"),
    "B6(197)-6(98)": (11, "cannot be reached", "99 (stride 2)"),
    "B6(197)-6(200)": (11, "more than the 197"),
    "B6(196)": (4, "197"),
    "B6(197": (7, "not closed"),
    "B6(197))": (8, "unbalanced ')'"),
    "B6197)": (6, "'('"),
    "B6((197)": (4, "token count"),
    "B0(197)": (2, "at least 1"),
    "B6(0)": (4, "at least 1"),
    "B6(197, h0)": (10, "at least 1"),
    "B6(197, h1000)": (9, "not divisible", "a10"),
    "B6(197, h768, a7)": (15, "not divisible"),
    "B6(197), a5": (10, "not divisible"),
    "B6(197, x5)": (9, "unknown option"),
    "B6(197), fancy": (10, "unknown option"),
    "B6(197, pool=avg)": (14, "mean, max"),
    "B6(197, max)": (9, "does not pool"),
    "B6(197)-6(197, max)": (16, "does not pool"),
    "B6(197, img384)": (9, "whole model"),
    "B6(197), img225": (10, "not a multiple"),
    "B6(197, h5, h6)": (13, "repeats"),
    "B6(197)-": (9, "ends too early"),
    "B6(197)x": (8, "unexpected 'x'"),
    "B6(197)--6(99)": (9, "number of layers"),
    "B6(197)-6(99),": (15, "ends too early"),
    "B6(197,h=)": (10, "a number"),
    "B6(-5)": (4, "token count"),
    "B6(197, h99999999999)": (10, "too large"),
    "B6(197)\u00e9": (8, "unexpected"),
    "b6(197)": (1, "unexpected 'b6'"),
    # stems
    "B14(197), t2t, img200": (16, "multiple of 16", "img192"),
    "B14(196), t2t": (5, "T2T stem", "197"),
    "B1(5), t2t, img32, tok1": (20, "random features", "tok2"),
    "B14(197), ps60": (11, "larger than the 56x56 feature map"),
    "B1(197), ps14, img222": (16, "multiple of 4"),
    "B10(196), ps14": (5, "14x14 points", "197"),
    "B1(197), ps14, iters0": (21, "at least 1"),
    "B1(197), t2t, patch8": (15, "patch stem"),
    "B1(197), iters3": (10, "ps stem only"),
    "B1(197), share": (10, "ps stem only"),
    "B1(197), tok32": (10, "t2t stem only"),
    "B1(197), t2t, ps14": (15, "second stem"),
    "B1(197), stem=ps": (15, "patch, t2t, t2t_t"),
    "B1(197, ps14)": (9, "whole model"),
    "B1(197), pos=random": (14, "learned, sincos, none"),
    # pools
    "B1(196)-11(98), max, k3, h384, avg": (12, "cannot be reached", "in windows of 3", "97 (stride 2)"),
    "B1(4)-1(2)-1(1), max, k3, img8, patch4, avg": (23, "leave no tokens"),
    "B1(16)-1(7, k3)-1(3, k9), img32, patch8, avg": (22, "leave no tokens", "at most 7"),
    "B1(197)-1(99, k0)": (16, "at least 1"),
    "B1(197)-1(197, newpos)": (16, "does not pool"),
    "B1(197)-1(197, k3)": (16, "does not pool"),
    "B6(197)-6(99)-4(25, mean2d)": (21, "square grid"),
    "B4(197)-4(51, mean2d)": (11, "cannot be reached", "50 (stride 2)", "17 (stride 4)"),
    "B1(197)-1(99, qkvbias, qkvbias)": (24, "repeats"),
}


@pytest.mark.parametrize("text", BAD)
def test_bad_layouts(text):
    column, *words = BAD[text]
    with pytest.raises(fb.LayoutError) as info:
        fb.parse_layout(text)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.pos + 1 == column, str(err)
    message = str(err)
    assert "\n" not in message
    assert repr(text) in message  # quotes the input
    assert f"column {column}" in message
    assert "expected" in message  # says what was expected
    for word in words:
        assert word in message
    assert err.caret().splitlines()[1].index("^") == err.pos


def test_not_a_string():
    with pytest.raises(fb.LayoutError):
        fb.parse_layout(197)


@pytest.mark.parametrize(
    "name, size, tokens",
    [
        ("hvt-s-1", 384, [576, 287]),  # (576 - 3) // 2 + 1
        ("hvt-s-4", 160, [100, 49, 24, 11, 5]),
        ("t2t-vit-14", 384, [577]),
        ("ps-vit-b-14", 384, [197]),  # the same 14 x 14 points on a 96 x 96 feature map
        ("test-pool2d", 64, [65, 17, 5]),  # 8x8 -> 4x4 -> 2x2 grids + class token
    ],
)
def test_at_image_size_for_every_stem_and_pool(name, size, tokens):
    layout = fb.resolve(name)
    big = layout.at_image_size(size)
    assert [s.tokens for s in big.stages] == tokens
    assert (big.stem, big.pos, big.head) == (layout.stem, layout.pos, layout.head)
    assert [(s.pool, s.stride, s.kernel) for s in big.stages] == [(s.pool, s.stride, s.kernel) for s in layout.stages]
    assert big.at_image_size(layout.image_size) == layout


@pytest.mark.parametrize(
    "name, size, words",
    [
        ("t2t-vit-14", 200, "multiple of 16"),
        ("ps-vit-b-14", 32, "larger than the 8x8 feature map"),
        ("hvt-s-4", 64, "leaves no tokens"),  # 16 -> 7 -> 3 -> 1 -> nothing
        ("vit-b16", 100, "not a multiple"),
    ],
)
def test_at_image_size_errors(name, size, words):
    with pytest.raises(fb.LayoutError, match=words):
        fb.resolve(name).at_image_size(size)


def test_pooled_length_and_infer_stride_match_torch_pools():
    """The arithmetic the parser uses is what torch's pools compute."""
    import torch
    import torch.nn.functional as F

    for n in range(1, 40):
        x = torch.zeros(1, 1, n)
        for stride in range(1, n + 1):
            assert pooled_length(n, stride) == F.max_pool1d(x, stride, stride, ceil_mode=True).shape[-1]
            for k in (2, 3, 5):
                if k <= n:
                    new = F.max_pool1d(x, k, stride).shape[-1]
                    assert pooled_length(n, stride, k) == new
                    s = infer_stride(n, new, k)
                    assert s is not None and s <= stride and pooled_length(n, s, k) == new
                else:
                    assert pooled_length(n, stride, k) == 0 and infer_stride(n, 1, k) is None


def test_stem_grids_match_unfold_and_conv_arithmetic():
    """T2T: 224 -> 56 -> 28 -> 14 per side; PS: a 56 x 56 feature map at 224 px."""
    assert fb.resolve("t2t-vit-14").grid == 14 and fb.resolve("test-t2t").grid == 2
    assert ps_feature_size(224) == 56 and ps_feature_size(32) == 8
    assert fb.resolve("ps-vit-b-18").grid == 18


def test_at_image_size_keeps_strides():
    layout = fb.parse_layout("B6(197)-6(99)-2(50, max)")
    big = layout.at_image_size(384)
    assert str(big) == "B6(577)-6(289)-2(145, max), img384"
    assert [s.stride for s in big.stages] == [1, 2, 2]
    assert big.at_image_size(224) == layout


@given(tiny_layouts())
@settings(max_examples=200, deadline=None)
def test_random_valid_layouts_round_trip(text):
    layout = fb.parse_layout(text)
    canonical = str(layout)
    assert fb.parse_layout(canonical) == layout
    assert str(fb.parse_layout(canonical)) == canonical


ALPHABET = string.ascii_letters + string.digits + "()-,= \t\u00e9_."


@st.composite
def mutations(draw):
    text = draw(st.sampled_from(list(PAPER) + [g for g in GOOD]))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["insert", "delete", "replace", "duplicate"]))
        ch = draw(st.sampled_from(ALPHABET))
        if kind == "insert":
            text = text[:i] + ch + text[i:]
        elif kind == "delete":
            text = text[:i] + text[i + 1 :]
        elif kind == "replace":
            text = text[:i] + ch + text[i + 1 :]
        else:
            text = text[:i] + text[i : i + 3] + text[i:]
    return text


def _parse_or_layout_error(text):
    try:
        layout = fb.parse_layout(text)
    except fb.LayoutError as err:
        assert str(err) and "\n" not in str(err)
        return
    assert fb.parse_layout(str(layout)) == layout


@given(st.text(alphabet=ALPHABET, max_size=40))
@settings(max_examples=500, deadline=None)
def test_random_strings_parse_or_raise_layout_error(text):
    _parse_or_layout_error(text)


@given(mutations())
@settings(max_examples=500, deadline=None)
def test_mutated_layouts_parse_or_raise_layout_error(text):
    _parse_or_layout_error(text)


# A number with a fraction where the grammar wants an integer, and pool options written for
# every stage of a layout in which no stage pools (treated as on a stage that does not pool).
BAD_MORE = {
    "B6(197, h1.5)": (10, "hidden 1.5 has a fraction", "expected an integer"),
    "B6(197, hidden=1.5)": (16, "has a fraction", "expected an integer"),
    "B6(197), m1536.0": (11, "mlp 1536.0 has a fraction", "expected an integer"),
    "B6.5(197)": (2, "number of layers 6.5 has a fraction", "expected an integer"),
    "B6(197.5)": (4, "token count 197.5 has a fraction"),
    "B6(197)-6(99, k2.5)": (16, "kernel 2.5 has a fraction"),
    "B12(197), max, k3": (11, "no stage pools", "'max' has no effect", "the option removed"),
    "B12(197), k3": (11, "no stage pools", "'k3' has no effect"),
    "B6(197)-6(197), newpos": (17, "no stage pools", "every stage has the token count", "'newpos'"),
    "B6(197)-6(197), pqo=off": (17, "option 'pqo' has no effect"),
    "B6(197)-6(197), pool=max2d": (17, "option 'pool' has no effect"),
}


@pytest.mark.parametrize("text", BAD_MORE)
def test_fractions_and_pool_options_without_a_pool(text):
    BAD[text] = BAD_MORE[text]
    try:
        test_bad_layouts(text)
    finally:
        del BAD[text]


def test_global_pool_options_still_apply_when_some_stage_pools():
    layout = fb.parse_layout("B6(197)-6(197)-6(98), max, k3")
    assert [(s.pool, s.kernel, s.stride) for s in layout.stages] == [("none", 0, 1), ("none", 0, 1), ("max", 3, 2)]


# Layouts built in code: (how, words of the error). count, build_model and estimate_memory
# refuse each with the LayoutError validate_layout raises (estimate_memory names a part it
# does not know, such as an unknown pool, with its own UnmodelledLayout first).
def _stage(layout, i, **changes):
    stages = list(layout.stages)
    stages[i] = dataclasses.replace(stages[i], **changes)
    return dataclasses.replace(layout, stages=tuple(stages))


FUNNEL = "B6(197)-6(99)"
BAD_BUILT = {
    "wrong stride": (lambda l: _stage(l, 1, stride=3), "stride 3 does not match", "stride=2"),
    "pool on the first stage": (lambda l: _stage(l, 0, pool="max"), "stage 1 does not pool", "Stage.pool='max'"),
    "pqo on the first stage": (lambda l: _stage(l, 0, pqo=True), "Stage.pqo=True has no effect"),
    "kernel without a pool": (
        lambda l: _stage(l, 1, tokens=197, pool="none", stride=1, pqo=False, kernel=3),
        "Stage.kernel=3 has no effect",
    ),
    "fewer tokens, no pool": (lambda l: _stage(l, 1, pool="none", stride=1), "so it pools", "'none'"),
    "unknown pool": (lambda l: _stage(l, 1, pool="median"), "'median' is not a pooling operator"),
    "unreachable tokens": (lambda l: _stage(l, 1, tokens=98), "cannot be reached", "99 (stride 2)"),
    "more tokens": (lambda l: _stage(l, 1, tokens=300), "more than the 197"),
    "first stage tokens": (lambda l: _stage(l, 0, tokens=196), "first stage has 196 tokens", "= 197"),
    "heads": (lambda l: _stage(l, 0, hidden=1000), "not divisible by 12 heads", "a10"),
    "zero layers": (lambda l: _stage(l, 0, layers=0), "number of layers must be from 1"),
    "huge width": (lambda l: _stage(l, 0, mlp=10**7), "MLP width must be from 1 to 1000000"),
    "float width": (lambda l: _stage(l, 0, hidden=768.0), "hidden width must be an int, got 768.0"),
    "bool layers": (lambda l: _stage(l, 0, layers=True), "must be an int, got True"),
    "int flag": (lambda l: _stage(l, 1, pqo=1), "Stage.pqo must be True or False"),
    "2d after 1d": (lambda l: _stage(fb.parse_layout("B1(197)-1(99)-1(50)"), 2, pool="mean2d"), "square grid"),
    "kernel too wide": (
        lambda l: _stage(fb.parse_layout("B1(17)-1(9)-1(5), img32, patch8"), 2, kernel=9),
        "wider than the 8 patch tokens",
    ),
    "no stages": (lambda l: dataclasses.replace(l, stages=()), "non-empty tuple of Stage"),
    "stages as a list": (lambda l: dataclasses.replace(l, stages=list(l.stages)), "non-empty tuple of Stage"),
    "image size": (lambda l: dataclasses.replace(l, image_size=225), "not a multiple of patch size 16"),
    "negative image size": (lambda l: dataclasses.replace(l, image_size=-224), "image size must be from 1"),
    "head": (lambda l: dataclasses.replace(l, head="max"), "head 'max' is not a head", "cls or avg"),
    "position embedding": (lambda l: dataclasses.replace(l, pos="rope"), "'rope' is not one"),
    "stem kind": (lambda l: dataclasses.replace(l, stem=fb.Stem("conv")), "is not a Stem of kind"),
    "token_dim on a patch stem": (lambda l: dataclasses.replace(l, stem=fb.Stem(token_dim=32)), "no token_dim"),
    "patch size on a t2t stem": (
        lambda l: dataclasses.replace(fb.resolve("t2t-vit-14"), patch_size=8),
        "no patch size",
    ),
    "tok1": (lambda l: dataclasses.replace(fb.resolve("test-t2t"), stem=fb.Stem("t2t", token_dim=1)), "tok2 or more"),
    "ps without points": (
        lambda l: dataclasses.replace(fb.resolve("test-ps"), stem=fb.Stem("ps")),
        "samples no points",
    ),
    "ps grid too large": (
        lambda l: dataclasses.replace(
            l, stages=(dataclasses.replace(l.stages[0], tokens=60 * 60 + 1),), stem=fb.Stem("ps", points=60)
        ),
        "larger than the 56x56",
    ),
}


@pytest.mark.parametrize("case", BAD_BUILT)
def test_layouts_built_in_code_are_checked_as_text_is(case):
    build, *words = BAD_BUILT[case]
    layout = build(fb.parse_layout(FUNNEL))
    for use in (validate_layout, fb.count, fb.build_model, fb.estimate_memory):
        with pytest.raises(fb.FunnelbenchError if use is fb.estimate_memory else fb.LayoutError) as info:
            use(layout) if use is not fb.estimate_memory else use(layout, 2)
        message = str(info.value)
        assert "\n" not in message, message
        if isinstance(info.value, UnmodelledLayout):
            assert case in ("unknown pool", "head", "position embedding", "stem kind"), message
            continue
        assert "expected" in message, message
        for word in words:
            assert word in message, message


# Good layouts built in code: (text to start from, the edit, the text of the layout it makes).
GOOD_BUILT = [
    (FUNNEL, lambda l: _stage(l, 1, pool="max"), "B6(197)-6(99), max"),
    ("B12(197)", lambda l: _stage(l, 0, hidden=384, mlp=1536, heads=6), "B12(197), h384"),
    (
        "B1(196)-11(98), avg",
        lambda l: _stage(l, 1, pool="max", kernel=3, tokens=97, newpos=True, pqo=False),
        "B1(196)-11(97, max, k3, nopqo, newpos), avg",
    ),
    ("B4(197)-4(99)", lambda l: _stage(l, 1, pool="mean2d", tokens=50, stride=2), "B4(197)-4(50, mean2d)"),
    ("B2(197)-2(197)", lambda l: _stage(l, 1, tokens=50, pool="mean", stride=4, pqo=True), "B2(197)-2(50)"),
    ("B14(197), t2t", lambda l: dataclasses.replace(l, stem=fb.Stem("t2t_t", token_dim=32)), "B14(197), t2t_t, tok32"),
]


@pytest.mark.parametrize("start, edit, text", GOOD_BUILT, ids=[t for _, _, t in GOOD_BUILT])
def test_good_layouts_built_in_code_pass_and_equal_their_text(start, edit, text):
    layout = edit(fb.parse_layout(start))
    assert validate_layout(layout) is layout and layout == fb.parse_layout(text)
    assert fb.count(layout) == fb.count(text)


@pytest.mark.parametrize("name", fb.list_presets())
def test_every_preset_is_valid_and_validate_returns_it(name):
    layout = fb.resolve(name)
    assert validate_layout(layout) is layout
    assert layout_problem(dataclasses.replace(layout)) is None


def test_profile_checks_a_built_layout_before_measuring_anything(monkeypatch):
    import funnelbench.profiling as profiling

    monkeypatch.setattr(profiling, "_measure", lambda *a: pytest.fail("measured despite a bad layout"))
    bad = _stage(fb.resolve("test-funnel"), 1, stride=5)
    with pytest.raises(fb.LayoutError, match="does not match"):
        fb.profile(["test-vit", bad])


# Random edits of valid layouts: validate_layout accepts one exactly when the text it formats
# to parses back to the same layout (the parser is the independent reference).
_STAGE_EDITS = {
    "layers": st.integers(0, 3),
    "tokens": st.integers(1, 70),
    "hidden": st.sampled_from([4, 6, 8, 12]),
    "mlp": st.integers(1, 20),
    "heads": st.integers(1, 4),
    "pool": st.sampled_from(("none",) + POOL_OPS),
    "stride": st.integers(1, 5),
    "kernel": st.integers(0, 4),
    "pqo": st.booleans(),
    "newpos": st.booleans(),
    "qkv_bias": st.booleans(),
}
_LAYOUT_EDITS = {
    "image_size": st.sampled_from([8, 12, 16, 24, 30, 32, 48]),
    "patch_size": st.sampled_from([4, 8, 16]),
    "head": st.sampled_from(["cls", "avg"]),
    "pos": st.sampled_from(["learned", "sincos", "none"]),
    "stem": st.builds(
        fb.Stem,
        kind=st.sampled_from(list(fb.layout.STEMS)),
        token_dim=st.sampled_from([1, 2, 64]),
        points=st.integers(0, 4),
        iters=st.sampled_from([1, 4]),
        share=st.booleans(),
        fe_width=st.sampled_from([8, 256]),
    ),
}


@st.composite
def edited_layouts(draw):
    layout = fb.parse_layout(draw(tiny_layouts()))
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            i = draw(st.integers(0, len(layout.stages) - 1))
            name = draw(st.sampled_from(sorted(_STAGE_EDITS)))
            layout = _stage(layout, i, **{name: draw(_STAGE_EDITS[name])})
        else:
            name = draw(st.sampled_from(sorted(_LAYOUT_EDITS)))
            layout = dataclasses.replace(layout, **{name: draw(_LAYOUT_EDITS[name])})
    return layout


@given(edited_layouts())
@settings(max_examples=400, deadline=None)
def test_validate_accepts_exactly_the_layouts_that_round_trip(layout):
    try:
        round_trips = fb.parse_layout(format_layout(layout)) == layout
    except fb.LayoutError:
        round_trips = False
    problem = layout_problem(layout)
    assert (problem is None) == round_trips, (format_layout(layout), problem)
