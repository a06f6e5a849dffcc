"""Moving weights between ViT checkpoints and funnelbench models.

ViT and Funnel-ViT with the same per-stage widths have the same weight shapes (pooling has no
parameters), so a timm ``VisionTransformer`` or torchvision ``vit_b_16`` state dict loads into
any layout with matching widths; the position embedding is resized in 2D when the patch grid
differs (224 -> 384 px fine-tuning).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .errors import UsageError


class WeightsError(UsageError):
    """A checkpoint that does not fit the model (missing keys, wrong widths, unknown format)."""


@dataclass
class LoadReport:
    """What :func:`load_vit_weights` did, key by key (model-side names)."""

    loaded: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)  # position embedding interpolated to a new grid
    new: list[str] = field(default_factory=list)  # in the model, not in the checkpoint (projections)
    skipped: list[str] = field(default_factory=list)  # in both, but kept from the model (head of another size)
    unused: list[str] = field(default_factory=list)  # in the checkpoint, not in the model (only when strict=False)


_TV_LAYER = re.compile(r"^encoder\.layers\.encoder_layer_(\d+)\.(.*)$")
_TV_MAP = {
    "ln_1": "norm1",
    "ln_2": "norm2",
    "self_attention.in_proj_weight": "attn.qkv.weight",
    "self_attention.in_proj_bias": "attn.qkv.bias",
    "self_attention.out_proj": "attn.proj",
    "mlp.0": "mlp.fc1",
    "mlp.3": "mlp.fc2",
    "mlp.linear_1": "mlp.fc1",  # older torchvision names
    "mlp.linear_2": "mlp.fc2",
}
_TV_TOP = {
    "class_token": "cls_token",
    "conv_proj.weight": "patch_embed.proj.weight",
    "conv_proj.bias": "patch_embed.proj.bias",
    "encoder.pos_embedding": "pos_embed",
    "encoder.ln.weight": "norm.weight",
    "encoder.ln.bias": "norm.bias",
    "heads.head.weight": "head.weight",
    "heads.head.bias": "head.bias",
}


def unwrap_state_dict(obj) -> dict[str, torch.Tensor]:
    """The tensor dict inside a checkpoint (``{"model": ...}``, ``{"state_dict": ...}``, DDP
    ``module.`` prefixes)."""
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "model_state", "module"):
            if key in obj and isinstance(obj[key], dict):
                return unwrap_state_dict(obj[key])
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(
            "the checkpoint holds no state dict of tensors (looked in the top level, 'model' and 'state_dict')"
        )
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return dict(obj)


def to_timm_names(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a torchvision ViT state dict to timm's names; timm/funnelbench dicts pass through."""
    if not any(k.startswith("encoder.layers.") for k in state_dict):
        return dict(state_dict)
    out = {}
    for key, value in state_dict.items():
        m = _TV_LAYER.match(key)
        if m:
            index, rest = m.groups()
            for old, new in _TV_MAP.items():
                if rest == old or rest.startswith(old + "."):
                    rest = new + rest[len(old) :]
                    break
            out[f"blocks.{index}.{rest}"] = value
        else:
            out[_TV_TOP.get(key, key)] = value
    return out


def resize_pos_embed(pos: torch.Tensor, new_grid: int, prefix: int, mode: str = "bicubic") -> torch.Tensor:
    """Interpolate a (1, prefix + g*g, C) position embedding to (1, prefix + new_grid**2, C).

    The prefix (class token) embedding is carried over unchanged; the g x g grid is resized in
    2D (bicubic, ``align_corners=False``), as the ViT paper does for fine-tuning at higher
    resolution. Same grid in, same tensor out.
    """
    head, grid = pos[:, :prefix], pos[:, prefix:]
    old = math.isqrt(grid.shape[1])
    if old * old != grid.shape[1]:
        raise WeightsError(f"position embedding of {grid.shape[1]} patch tokens is not a square grid")
    if old == new_grid:
        return pos
    C = grid.shape[-1]
    grid = grid.reshape(1, old, old, C).permute(0, 3, 1, 2).float()  # (1, C, g, g)
    grid = F.interpolate(grid, size=(new_grid, new_grid), mode=mode, align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid * new_grid, C).to(pos.dtype)
    return torch.cat([head, grid], dim=1)


def load_vit_weights(model, state_dict, *, strict: bool = True) -> LoadReport:
    """Load a timm ``VisionTransformer`` / torchvision ``vit_b_16`` / funnelbench state dict.

    Works for any layout whose per-stage widths match the checkpoint's blocks. The position
    embedding is interpolated when the patch grid differs; a head for another number of
    classes is left as initialised (reported in ``skipped``); stage projections that a plain
    ViT does not have are reported in ``new``. With ``strict`` (the default) anything else that
    does not fit raises :class:`WeightsError`, naming the keys.
    """
    sd = to_timm_names(unwrap_state_dict(state_dict))
    target = model.state_dict()
    report = LoadReport()
    prefix = 1 if getattr(model, "cls_token", None) is not None else 0
    ckpt_prefix = 1 if "cls_token" in sd else 0

    if "pos_embed" in sd and "pos_embed" in target:
        pos = sd["pos_embed"]
        if ckpt_prefix > prefix:  # class-token model into an average-pool model: drop the token's embedding
            pos = pos[:, ckpt_prefix - prefix :]
            sd.pop("cls_token", None)
        elif ckpt_prefix < prefix:
            raise WeightsError(
                "the checkpoint has no class token but the model's head needs one; build the layout with 'avg'"
            )
        if pos.shape[1] != target["pos_embed"].shape[1] and pos.shape[-1] == target["pos_embed"].shape[-1]:
            grid = math.isqrt(target["pos_embed"].shape[1] - prefix)
            pos = resize_pos_embed(pos, grid, prefix)
            report.resized.append("pos_embed")
        sd["pos_embed"] = pos

    to_load, mismatched = {}, []
    for key, value in target.items():
        if key not in sd:
            if key.startswith("transitions."):
                report.new.append(key)
            else:
                mismatched.append(f"{key} missing from the checkpoint")
            continue
        have = sd[key]
        if have.shape != value.shape:
            if key.startswith("head."):
                report.skipped.append(key)
                continue
            mismatched.append(f"{key}: checkpoint {tuple(have.shape)} vs model {tuple(value.shape)}")
            continue
        to_load[key] = have
        if key != "pos_embed" or "pos_embed" not in report.resized:
            report.loaded.append(key)
    report.unused = sorted(k for k in sd if k not in target)
    problems = mismatched + (
        [f"unexpected keys {report.unused[:5]}{'...' if len(report.unused) > 5 else ''}"] if report.unused else []
    )
    if strict and problems:
        raise WeightsError(
            f"checkpoint does not fit {getattr(model, 'layout', 'the model')}: "
            f"{'; '.join(problems[:4])}{' ...' if len(problems) > 4 else ''} "
            f"(widths and depth must match; strict=False loads what fits)"
        )
    model.load_state_dict(to_load, strict=False)
    return report
