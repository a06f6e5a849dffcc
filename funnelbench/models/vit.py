"""ViT, Funnel-ViT, HVT, T2T-ViT and PS-ViT built from a layout. ``build_model`` is the only function that turns a
layout into modules (``funnelbench.cost.count`` is the only one that turns it into counts)."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UsageError
from ..layout import Layout, check_int, validate_layout
from .layers import LN_EPS, Block, PatchEmbed, TokenPool, Transition
from .stems import ProgressiveSamplingEmbed, T2TEmbed


def sincos_table(n: int, dim: int) -> torch.Tensor:
    """(1, n, dim) fixed sinusoid position encoding (T2T-ViT's ``get_sinusoid_encoding``):
    angle(p, j) = p / 10000 ** (2 * (j // 2) / dim), sin on even j, cos on odd j."""
    pos = torch.arange(n, dtype=torch.float64).unsqueeze(1)
    j = torch.arange(dim)
    angle = pos / torch.pow(10000.0, (2 * (j // 2)).double() / dim)
    table = torch.where(j % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.float().unsqueeze(0)


def make_stem(layout: Layout, in_chans: int = 3) -> nn.Module:
    """The module that turns images into the first stage's tokens (without class token and
    position embedding)."""
    stem, first = layout.stem, layout.stages[0]
    if stem.kind == "patch":
        return PatchEmbed(layout.patch_size, first.hidden, in_chans)
    if stem.is_t2t:
        return T2TEmbed(first.hidden, stem.token_dim, performer=stem.kind == "t2t", in_chans=in_chans)
    return ProgressiveSamplingEmbed(first.hidden, first.heads, first.mlp, stem.points, stem.iters, stem.share,
                                    stem.fe_width, first.qkv_bias, layout.image_size, in_chans)


class FunnelViT(nn.Module):
    """A pre-norm ViT whose token sequence may shrink between stages: ViT, DeiT, Funnel-ViT,
    HVT, T2T-ViT and PS-ViT are all this module with different layouts.

    ``B12(197)`` is exactly timm's ``VisionTransformer`` (class token, learned position
    embedding, qkv bias, GELU MLP, final LayerNorm, linear head on the class token).
    Blocks are numbered across stages (``blocks.0`` ... ``blocks.11``) as in timm, so a ViT
    checkpoint loads into any layout with the same widths; the transitions between stages hold
    the pools (no parameters) and, where the width changes or a stage adds a position
    embedding, the projections and embeddings. ``patch_embed`` is the stem (timm's name for
    it, also for its hybrid stems): patches, Tokens-to-Token or progressive sampling.
    A fixed (sincos) position embedding is a buffer, not a parameter.
    """

    def __init__(self, layout: Layout, num_classes: int = 1000, in_chans: int = 3):
        super().__init__()
        self.layout = layout
        self.num_classes = num_classes
        first = layout.stages[0]
        prefix = layout.num_prefix_tokens
        self.patch_embed = make_stem(layout, in_chans)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, first.hidden)) if prefix else None
        if layout.pos == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, first.tokens, first.hidden))
        elif layout.pos == "sincos":
            self.register_buffer("pos_embed", sincos_table(first.tokens, first.hidden))
        else:
            self.pos_embed = None

        blocks, transitions = [], {}
        prev = None
        for stage in layout.stages:
            if prev is not None and (stage.pools or stage.hidden != prev.hidden):
                pool = TokenPool(stage.pool, stage.stride, prefix, stage.kernel) if stage.pools else None
                transitions[str(len(blocks))] = Transition(prev.hidden, stage.hidden, pool, stage.pqo,
                                                           pos_tokens=stage.tokens if stage.newpos else 0)
            blocks += [Block(stage.hidden, stage.heads, stage.mlp, stage.qkv_bias) for _ in range(stage.layers)]
            prev = stage
        self.blocks = nn.ModuleList(blocks)
        self.transitions = nn.ModuleDict(transitions)
        last = layout.stages[-1].hidden
        self.norm = nn.LayerNorm(last, eps=LN_EPS)
        self.head = nn.Linear(last, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """timm's ViT initialisation: trunc-normal(0.02) weights and position embeddings (also
        HVT's per-stage ones), zero biases; PS-ViT's offset predictors start at zero."""
        if isinstance(self.pos_embed, nn.Parameter):
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for transition in self.transitions.values():
            if transition.pos_embed is not None:
                nn.init.trunc_normal_(transition.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if isinstance(self.patch_embed, ProgressiveSamplingEmbed):
            self.patch_embed.reset_offsets()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, N_last, C_last)
        size = self.layout.image_size
        if x.shape[-2:] != (size, size):
            raise UsageError(f"this model takes {size}x{size} images (layout {self.layout}), got "
                             f"{tuple(x.shape[-2:])}; resize the input or build the layout at that size")
        x = self.patch_embed(x)  # (B, P, C): patches, T2T tokens or sampled points
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1 + P, C)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        for i, block in enumerate(self.blocks):
            kv = None
            key = str(i)
            if key in self.transitions:
                x, kv = self.transitions[key](x)
            x = block(x, kv)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, C) -> (B, classes)
        x = x[:, 0] if self.cls_token is not None else x.mean(dim=1)
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def build_model(x, num_classes: int = 1000, in_chans: int = 3) -> FunnelViT:
    """Build the PyTorch model of a layout, preset name or layout string."""
    from ..presets import resolve

    check_int(num_classes, "num_classes")
    check_int(in_chans, "in_chans")
    layout = validate_layout(x) if isinstance(x, Layout) else resolve(x)  # text is checked as it is parsed
    return FunnelViT(layout, num_classes=num_classes, in_chans=in_chans)
