"""Records for humans and machines: summaries of layouts and presets as flat dicts, and the
number formatting shared by every table. Units are in the field names (``params``, ``macs``);
``macs`` is the papers' "FLOPs" (one multiply-accumulate = 1), ``flops`` = 2 x ``macs``."""

from __future__ import annotations

from .cost import count
from .layout import Layout, stem_text
from .presets import PRESETS, list_presets, resolve

MACS_NOTE = 'MACs = multiply-accumulates, what the seed papers, DeiT and fvcore call "FLOPs"; FLOPs = 2 x MACs'


def human(n: float, unit: str = "") -> str:
    """86567656 -> '86.57 M'; 17563594752 -> '17.56 G'."""
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {prefix}{unit}"
    return f"{n:g} {unit}".rstrip()


def pool_text(stage) -> str:
    """'mean/2 pqo' (or 'max/2 k3 newpos', 'mean2d/2') for a pooling stage, '-' otherwise."""
    return stage.pool_label


def layout_summary(x, num_classes: int = 1000) -> dict:
    """Everything ``funnelbench parse`` shows: the canonical layout, its input geometry, totals
    and one row per part (embedding, each stage including the transition into it, head)."""
    layout: Layout = resolve(x)
    cost = count(layout, num_classes=num_classes)
    parts = []
    for part in cost.parts:
        s = part.stage
        parts.append({
            "part": part.name,
            "layers": s.layers if s else None,
            "tokens": s.tokens if s else None,
            "hidden": s.hidden if s else None,
            "mlp": s.mlp if s else None,
            "heads": s.heads if s else None,
            "pool": s.pool if s else None,
            "stride": s.stride if s else None,
            "pqo": s.pqo if s else None,
            "pool_in": pool_text(s) if s else "-",
            "params": part.params,
            "macs": part.macs,
            "macs_share": part.macs / cost.macs,
        })
    return {
        "layout": str(layout),
        "image_size": layout.image_size,
        "patch_size": layout.patch_size,
        "stem": stem_text(layout),
        "head": layout.head,
        "layers": layout.depth,
        "num_classes": num_classes,
        "params": cost.params,
        "macs": cost.macs,
        "flops": cost.flops,
        "parts": parts,
    }


def presets_summary(pattern: str = "*") -> list[dict]:
    """One flat record per preset matching ``pattern``: analytic counts next to the paper's."""
    rows = []
    for name in list_presets(pattern):
        preset = PRESETS[name]
        layout = resolve(name)
        cost = count(layout)
        rows.append({
            "name": name,
            "layout": str(layout),
            "family": preset.family,
            "params": cost.params,
            "macs": cost.macs,
            "paper_params_m": preset.paper_params_m,
            "paper_gmacs": preset.paper_gmacs,
            "source": preset.source,
        })
    return rows
