"""The one registry of named layouts.

Every preset is a layout string a user can copy and edit, plus where it comes from and, where a
paper states them, the paper's params and "FLOPs" (MACs) so tables can show both.
``list_presets("funnel-*")`` filters with shell wildcards; ``resolve`` turns a preset name, a
layout string or a :class:`Layout` into a :class:`Layout`.
"""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass

from .errors import LayoutError, UsageError
from .layout import Layout, parse_layout


@dataclass(frozen=True)
class Preset:
    name: str
    layout: str
    family: str
    source: str
    paper_params_m: float | None = None  # as printed in the source
    paper_gmacs: float | None = None  # the source's "GFLOPs" (multiply-accumulates)


_FUNNEL = "Funnel-ViT (seed 000)"
# The numbers each official README prints (read with the search tool; see the README's "Presets" section).
_HVT = "HVT README (zhuang-group/HVT)"
_T2T = "T2T-ViT README (yitu-opensource/T2T-ViT)"
_PS = "PS-ViT README (yuexy/PS-ViT)"
PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        # ViT / DeiT baselines (DeiT Table 1; ViT-B/16 and ViT-L/16 from the ViT paper).
        Preset("vit-ti16", "B12(197), h192", "ViT", "DeiT Table 1 (ViT-Ti)", 5.7, 1.3),
        Preset("vit-s16", "B12(197), h384", "ViT", "DeiT Table 1 (ViT-S)", 22.1, 4.6),
        Preset("vit-b16", "B12(197)", "ViT", "ViT / DeiT Table 1 (ViT-B/16)", 86.6, 17.6),
        Preset("vit-l16", "B24(197), h1024", "ViT", "ViT Table 1 (ViT-L/16)"),
        Preset("deit-ti", "B12(197), h192", "DeiT", "DeiT Table 1", 5.7, 1.3),
        Preset("deit-s", "B12(197), h384", "DeiT", "DeiT Table 1", 22.1, 4.6),
        Preset("deit-b", "B12(197)", "DeiT", "DeiT Table 1", 86.6, 17.6),
        # Funnel-ViT, every layout of the seed's Tables 2-4 (ViT-B/16 widths).
        Preset("funnel-b6-6", "B6(197)-6(99)", "Funnel-ViT", _FUNNEL + " Tables 2, 4 (mean)"),
        Preset("funnel-b6-6-max", "B6(197)-6(99), max", "Funnel-ViT", _FUNNEL + " Table 2"),
        Preset("funnel-b4-4-4-max", "B4(197)-4(99)-4(50), max", "Funnel-ViT", _FUNNEL + " Table 2"),
        Preset("funnel-b6-6s4-max", "B6(197)-6(50), max", "Funnel-ViT", _FUNNEL + " Table 2 (stride 4)"),
        Preset("funnel-b6-6-4", "B6(197)-6(99)-4(50)", "Funnel-ViT", _FUNNEL + " Table 4"),
        Preset("funnel-b6-6-h1024", "B6(197, h1024)-6(99, h1024)", "Funnel-ViT", _FUNNEL + " Table 4"),
        Preset("funnel-b6-6-m4096", "B6(197, m4096)-6(99, m4096)", "Funnel-ViT", _FUNNEL + " Table 4"),
        Preset("funnel-b6-6-4m1536", "B6(197)-6(99)-4(50, m1536)", "Funnel-ViT", _FUNNEL + " Table 4"),
        Preset("funnel-b6-6-2m1536", "B6(197)-6(99)-2(50, m1536)", "Funnel-ViT", _FUNNEL + " Table 4"),
        Preset("funnel-b6m4096-6-2m1536", "B6(197, m4096)-6(99)-2(50, m1536)", "Funnel-ViT", _FUNNEL + " Table 4"),
        # HVT (seed 002): DeiT-Ti/S widths, no class token, max pool kernel 3 stride 2 after block 0 and then
        # every 12 / stages blocks, a new learned position embedding after every pool.
        Preset(
            "hvt-ti-1", "B1(196)-11(97), max, k3, nopqo, newpos, h192, avg", "HVT", _HVT + " Main Results", 5.74, 0.64
        ),
        Preset("hvt-s-0", "B12(196), h384, avg", "HVT", _HVT + " (DeiT-S without class token)", 22.05, 4.57),
        Preset("hvt-s-1", "B1(196)-11(97), max, k3, nopqo, newpos, h384, avg", "HVT", _HVT, 22.09, 2.40),
        Preset("hvt-s-2", "B1(196)-6(97)-5(48), max, k3, nopqo, newpos, h384, avg", "HVT", _HVT, 22.11, 1.94),
        Preset("hvt-s-3", "B1(196)-4(97)-4(48)-3(23), max, k3, nopqo, newpos, h384, avg", "HVT", _HVT, 22.11, 1.62),
        Preset(
            "hvt-s-4",
            "B1(196)-3(97)-3(48)-3(23)-2(11), max, k3, nopqo, newpos, h384, avg",
            "HVT",
            _HVT + " (= Scale HVT-Ti-4)",
            22.12,
            1.39,
        ),
        # T2T-ViT (seed 003): Tokens-to-Token stem (Performer layers; Transformer layers for _t), class token,
        # fixed sinusoid position embedding, no qkv bias, MLP ratio 2 (7-12) or 3.
        Preset("t2t-vit-7", "B7(197), h256, m512, noqkvbias, t2t", "T2T-ViT", _T2T, 4.3, 1.1),
        Preset("t2t-vit-10", "B10(197), h256, m512, noqkvbias, t2t", "T2T-ViT", _T2T, 5.9, 1.5),
        Preset("t2t-vit-12", "B12(197), h256, m512, noqkvbias, t2t", "T2T-ViT", _T2T, 6.9, 1.8),
        Preset("t2t-vit-14", "B14(197), h384, m1152, noqkvbias, t2t", "T2T-ViT", _T2T, 21.5, 4.8),
        Preset("t2t-vit-19", "B19(197), h448, m1344, noqkvbias, t2t", "T2T-ViT", _T2T, 39.2, 8.5),
        Preset("t2t-vit-24", "B24(197), h512, m1536, noqkvbias, t2t", "T2T-ViT", _T2T, 64.1, 13.8),
        Preset("t2t-vit_t-14", "B14(197), h384, m1152, noqkvbias, t2t_t", "T2T-ViT", _T2T, 21.5, 6.1),
        Preset("t2t-vit_t-19", "B19(197), h448, m1344, noqkvbias, t2t_t", "T2T-ViT", _T2T, 39.2, 9.8),
        Preset("t2t-vit_t-24", "B24(197), h512, m1536, noqkvbias, t2t_t", "T2T-ViT", _T2T, 64.1, 15.0),
        # PS-ViT (seed 004): conv feature extractor, n x n sampling points (the name's /n), 4 sampling iterations,
        # class token, no position embedding in the backbone, no qkv bias, MLP ratio 3.
        Preset("ps-vit-ti-14", "B8(197), h192, m576, noqkvbias, ps14, fe192", "PS-ViT", _PS, 4.8, 1.6),
        Preset("ps-vit-b-10", "B10(101), h384, m1152, noqkvbias, ps10", "PS-ViT", _PS, 21.3, 3.1),
        Preset("ps-vit-b-14", "B10(197), h384, m1152, noqkvbias, ps14", "PS-ViT", _PS, 21.3, 5.4),
        Preset("ps-vit-b-18", "B10(325), h384, m1152, noqkvbias, ps18", "PS-ViT", _PS, 21.3, 8.8),
        # Tiny models for tests and smoke runs (32 px images, 8 px patches: 16 patches + class token).
        Preset("test-vit", "B2(17), h64, a2, img32, patch8", "test", "tiny, for tests"),
        Preset("test-funnel", "B1(17)-1(9)-1(5), h64, a2, img32, patch8", "test", "tiny, for tests"),
        Preset(
            "test-funnel-proj",
            "B1(17)-1(9, h96, m128)-1(5, max, nopqo), h64, a2, img32, patch8",
            "test",
            "tiny, for tests: width change, max pool, pqo off",
        ),
        Preset(
            "test-hvt",
            "B1(16)-1(7)-1(3), max, k3, nopqo, newpos, h64, a2, img32, patch8, avg",
            "test",
            "tiny, for tests: HVT pooling",
        ),
        Preset(
            "test-pool2d",
            "B1(17)-1(5, mean2d)-1(2, max2d), h64, a2, img32, patch8",
            "test",
            "tiny, for tests: 2D pooling of the patch grid",
        ),
        Preset(
            "test-t2t",
            "B1(5)-1(3), h64, a2, noqkvbias, img32, t2t, tok16",
            "test",
            "tiny, for tests: T2T stem (Performer) with funnel stages",
        ),
        Preset(
            "test-t2t_t",
            "B2(5), h64, a2, noqkvbias, img32, t2t_t, tok16",
            "test",
            "tiny, for tests: T2T stem (Transformer)",
        ),
        Preset(
            "test-ps",
            "B1(17)-1(9), h64, a2, noqkvbias, img32, ps4, iters2, fe32",
            "test",
            "tiny, for tests: progressive sampling with funnel stages",
        ),
    ]
}


def list_presets(pattern: str = "*") -> list[str]:
    """Preset names matching a shell wildcard (``"funnel-*"``), in registry order."""
    return [name for name in PRESETS if fnmatch.fnmatchcase(name, pattern)]


def get_preset(name: str) -> Layout:
    """The layout of a preset; :class:`UsageError` naming close matches when it is unknown."""
    try:
        return parse_layout(PRESETS[name].layout)
    except KeyError:
        close = difflib.get_close_matches(name, PRESETS, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UsageError(f"unknown preset {name!r}{hint}; `funnelbench presets` lists them all") from None


def resolve(x) -> Layout:
    """A :class:`Layout` from a Layout, a preset name or a layout string."""
    if isinstance(x, Layout):
        return x
    if not isinstance(x, str):
        raise UsageError(f"expected a layout string, a preset name or a Layout, got {type(x).__name__}")
    name = x.strip()
    if name in PRESETS:
        return get_preset(name)
    looks_like_layout = any(c in name for c in "()") or name[:1].isdigit() or (name[:1] == "B" and name[1:2].isdigit())
    if looks_like_layout or not name:
        return parse_layout(x)
    try:
        return get_preset(name)
    except UsageError as err:
        raise UsageError(f"{err} (or write a layout such as 'B6(197)-6(99)')") from None


__all__ = ["Preset", "PRESETS", "list_presets", "get_preset", "resolve", "LayoutError"]
