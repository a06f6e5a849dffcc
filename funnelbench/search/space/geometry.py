"""The geometry of a point of a space: the stem and shared options its ``shared`` section
gives, one stage after another (the pool into it checked against the layout grammar, the
tokens and grid after it), the MACs and params a stage adds, and the one check of a layout
built from decisions.
"""

from __future__ import annotations

from ...cost import count, head_cost, stage_cost
from ...layout import Layout, Stage, Stem, infer_stride, pooled_length, validate_layout


def stem_of(shared: dict) -> tuple[Stem, int, int, str, str]:
    """(stem, image size, patch size, head, position embedding) of a space's ``shared`` section."""
    s = shared
    kind = s.get("stem", "ps" if "points" in s else "patch")
    stem = Stem(
        kind,
        token_dim=s.get("token_dim", 64),
        points=s.get("points", 0),
        iters=s.get("iters", 4),
        share=s.get("share", False),
        fe_width=s.get("fe", 256),
    )
    pos = s.get("pos", stem.default_pos)
    return stem, s.get("image_size", 224), s.get("patch_size", 16), s.get("head", "cls"), pos


def stage_after(v: dict, index: int, n: int, side: int | None, prefix: int):
    """(Stage, patch tokens after it, grid side or None, problem text or None)."""
    hidden = v["hidden"]
    mlp = v["mlp"] if "mlp" in v else v["mlp_ratio"] * hidden
    heads = v["heads"] if "heads" in v else hidden // v["head_dim"]
    if "heads" not in v and hidden % v["head_dim"]:
        return None, n, side, f"hidden width {hidden} is not a multiple of head_dim {v['head_dim']}"
    if heads < 1 or hidden % heads:
        return None, n, side, f"hidden width {hidden} is not divisible by {heads} heads"
    if mlp != int(mlp):
        return None, n, side, f"mlp_ratio {v['mlp_ratio']} x hidden {hidden} is not a whole number"
    stride = v.get("stride", 1) if index else 1
    qkv = v["qkv_bias"]
    if stride == 1:
        return Stage(v["layers"], n + prefix, hidden, int(mlp), heads, qkv_bias=qkv), n, side, None
    pool, kernel = v["pool"], v["kernel"]
    if pool.endswith("2d"):
        if side is None:
            return None, n, side, f"stage {index}: {pool} pools a square grid, but a 1D pool before it left a sequence"
        new_side = pooled_length(side, stride, kernel)
        new_n, ok = (
            new_side * new_side,
            new_side >= 1 and new_side < side and infer_stride(side, new_side, kernel) == stride,
        )
        width = f"the {side}x{side} grid"
    else:
        new_n, new_side = pooled_length(n, stride, kernel), None
        ok = 1 <= new_n < n and infer_stride(n, new_n, kernel) == stride
        width = f"{n} patch tokens"
    if not ok:
        if new_n < 1:
            what = "leaves no tokens"
        elif new_n >= n:
            what = f"leaves {new_n + prefix} tokens, as many as before (the grammar reads that as no pool)"
        else:
            what = (
                f"gives {new_n + prefix} tokens, which the layout grammar writes as stride "
                f"{infer_stride(side if new_side is not None else n, new_side if new_side is not None else new_n, kernel)}"
            )
        k = f" with kernel {kernel}" if kernel else ""
        return None, n, side, f"stride {stride}{k} into stage {index} pools {width} and {what}"
    stage = Stage(
        v["layers"], new_n + prefix, hidden, int(mlp), heads, pool, stride, v["pqo"], kernel, v["newpos"], qkv
    )
    return stage, new_n, new_side, None


def checked_layout(layout: Layout) -> Layout:
    """The one place a constructed layout is validated (as the parser checks text)."""
    return validate_layout(layout)


def added_cost(prev: Stage | None, stage: Stage, image, patch, head, stem, pos) -> tuple[int, int]:
    """(MACs, params) a stage adds after ``prev``; the first stage carries the stem, every stage
    the head on its width minus the previous stage's head (so the sums telescope)."""
    params, macs = stage_cost(prev, stage)
    head_params, head_macs = head_cost(stage.hidden)
    if prev is None:  # the stem, class token and position embedding: from the one-stage model
        parts = count(Layout((stage,), image, patch, head, stem, pos)).parts
        for p in parts:
            if p.name in ("embed", "sampling"):
                macs, params = macs + p.macs, params + p.params
    else:
        prev_params, prev_macs = head_cost(prev.hidden)
        head_params, head_macs = head_params - prev_params, head_macs - prev_macs
    return macs + head_macs, params + head_params


__all__ = ["stem_of", "stage_after", "added_cost", "checked_layout"]
