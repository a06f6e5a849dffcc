"""The proxy transform of a layout: the layout that trains in a short run for a full-size
target (:func:`proxy_layout`: the proxy resolution and patch size, widths scaled with the heads
kept), and :data:`PROXY_FIELDS`, the training options that say what a proxy is. Training and
the search both read it here."""

from __future__ import annotations

import math
from dataclasses import fields, replace

from ..errors import UsageError
from ..layout import Layout, format_layout, parse_layout
from ..presets import resolve
from .config import TrainConfig

# The fields that say what a proxy is (a search space's `proxy:` section may set them), as opposed
# to what the run trains on, how it is seeded, or where and how it runs.
PROXY_FIELDS = tuple(
    f.name
    for f in fields(TrainConfig)
    if f.name not in ("layout", "finetune_from", "data", "seed", "device", "dtype", "workers", "threads", "checkpoint")
)


def _scaled_width(hidden: int, heads: int, scale: float) -> int:
    return max(1, round(hidden * scale / heads)) * heads


def proxy_layout(
    layout, image_size: int | None = None, patch_size: int | None = None, width_scale: float = 1.0
) -> Layout:
    """The layout that trains as the proxy of ``layout``: at the proxy resolution the stages
    keep their pooling strides and their token counts follow the patch grid (56 px with 4 px
    patches is the 14 x 14 grid of 224 / 16); ``width_scale`` multiplies every stage's hidden
    and MLP widths, keeping its heads (the hidden width is rounded to a multiple of the heads,
    so ``h768, a12`` at 0.25 is ``h192, a12``: 16 per head). The stem keeps its own widths.
    Every proxy is checked like a parsed layout (a Layout built in code too)."""
    layout = resolve(layout)
    layout = parse_layout(format_layout(layout))  # the parser's checks, whatever built it
    if not (isinstance(width_scale, (int, float)) and math.isfinite(width_scale) and 0 < width_scale <= 1):
        raise UsageError(f"--width-scale {width_scale}: must be in (0, 1]")
    if width_scale != 1:
        stages = tuple(
            replace(s, hidden=_scaled_width(s.hidden, s.heads, width_scale), mlp=max(1, round(s.mlp * width_scale)))
            for s in layout.stages
        )
        layout = parse_layout(format_layout(replace(layout, stages=stages)))
    size = image_size or layout.image_size
    patch = patch_size or layout.patch_size
    if (size, patch) == (layout.image_size, layout.patch_size):
        return layout
    if size % patch:
        raise UsageError(
            f"--image-size {size} is not a multiple of --patch-size {patch}; "
            f"use e.g. {size - size % patch or patch} or {size - size % patch + patch}"
        )
    return layout.at_image_size(size, patch)


__all__ = ["proxy_layout", "PROXY_FIELDS"]
