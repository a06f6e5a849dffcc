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
        # Tiny models for tests and smoke runs (32 px images, 8 px patches: 16 patches + class token).
        Preset("test-vit", "B2(17), h64, a2, img32, patch8", "test", "tiny, for tests"),
        Preset("test-funnel", "B1(17)-1(9)-1(5), h64, a2, img32, patch8", "test", "tiny, for tests"),
        Preset("test-funnel-proj", "B1(17)-1(9, h96, m128)-1(5, max, nopqo), h64, a2, img32, patch8", "test",
               "tiny, for tests: width change, max pool, pqo off"),
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
