"""The layout grammar: a table of good strings, a table of bad strings, round trips, fuzzing."""

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import funnelbench as fb
from funnelbench.layout import Stage
from strategies import tiny_layouts

# Every layout string of the Funnel-ViT seed's Tables 2, 3 and 4, verbatim, with the stages it
# means: (layers, tokens, hidden, mlp, heads, pool, stride, pqo).
PAPER = {
    "B12(197)": [(12, 197, 768, 3072, 12, "none", 1, False)],
    "B6(197)-6(99), max": [(6, 197, 768, 3072, 12, "none", 1, False), (6, 99, 768, 3072, 12, "max", 2, True)],
    "B6(197)-6(99), mean": [(6, 197, 768, 3072, 12, "none", 1, False), (6, 99, 768, 3072, 12, "mean", 2, True)],
    "B4(197)-4(99)-4(50), max": [(4, 197, 768, 3072, 12, "none", 1, False), (4, 99, 768, 3072, 12, "max", 2, True),
                                 (4, 50, 768, 3072, 12, "max", 2, True)],
    "B6(197)-6(50), max": [(6, 197, 768, 3072, 12, "none", 1, False), (6, 50, 768, 3072, 12, "max", 4, True)],
    "B6(197)-6(99)-4(50)": [(6, 197, 768, 3072, 12, "none", 1, False), (6, 99, 768, 3072, 12, "mean", 2, True),
                            (4, 50, 768, 3072, 12, "mean", 2, True)],
    "B6(197, h1024)-6(99, h1024)": [(6, 197, 1024, 4096, 16, "none", 1, False), (6, 99, 1024, 4096, 16, "mean", 2, True)],
    "B6(197, m4096)-6(99, m4096)": [(6, 197, 768, 4096, 12, "none", 1, False), (6, 99, 768, 4096, 12, "mean", 2, True)],
    "B6(197)-6(99)-4(50, m1536)": [(6, 197, 768, 3072, 12, "none", 1, False), (6, 99, 768, 3072, 12, "mean", 2, True),
                                   (4, 50, 768, 1536, 12, "mean", 2, True)],
    "B6(197)-6(99)-2(50, m1536)": [(6, 197, 768, 3072, 12, "none", 1, False), (6, 99, 768, 3072, 12, "mean", 2, True),
                                   (2, 50, 768, 1536, 12, "mean", 2, True)],
    "B6(197, m4096)-6(99)-2(50, m1536)": [(6, 197, 768, 4096, 12, "none", 1, False),
                                          (6, 99, 768, 3072, 12, "mean", 2, True),
                                          (2, 50, 768, 1536, 12, "mean", 2, True)],
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
    "B6(197)-6(99, pqo=off)-2(50)": ("B6(197)-6(99, nopqo)-2(50)", lambda l: [s.pqo for s in l.stages] == [False, False, True]),
    "B6(197, hidden=512, heads=8, mlp=1000)": ("B6(197), h512, m1000", lambda l: l.stages[0] == Stage(6, 197, 512, 1000, 8)),
    "B4(65)-4(33), h192, img32, patch4": ("B4(65)-4(33), h192, img32, patch4", lambda l: l.num_patches == 64),
    "B4(64)-4(32), h192, img=32, patch=4, head=avg": ("B4(64)-4(32), h192, img32, patch4, avg", lambda l: l.head == "avg"),
    "B12(577), img384": ("B12(577), img384", lambda l: l.grid == 24),
    "B6(197)-6(99, max)-2(50), mean": ("B6(197)-6(99, max)-2(50)", lambda l: [s.pool for s in l.stages] == ["none", "max", "mean"]),
    "B2(197)-2(67)-2(23)": ("B2(197)-2(67)-2(23)", lambda l: [s.stride for s in l.stages] == [1, 3, 3]),
    "B2(197)-2(99)-2(26)": ("B2(197)-2(99)-2(26)", lambda l: l.stages[2].stride == 4),  # 98 -> 25 (ceil mode)
    "B2(197)-2(50)-2(26)": ("B2(197)-2(50)-2(26)", lambda l: l.stages[2].stride == 2),  # 49 -> 25 (ceil mode)
    "B6(197)-6(197, h1024)": ("B6(197)-6(197, h1024)", lambda l: not l.stages[1].pools and l.stages[1].heads == 16),
    "B1(197), a1": ("B1(197), a1", lambda l: l.stages[0].heads == 1),
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
            text = text[:i] + text[i + 1:]
        elif kind == "replace":
            text = text[:i] + ch + text[i + 1:]
        else:
            text = text[:i] + text[i:i + 3] + text[i:]
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
