"""ViT and Funnel-ViT built from a layout. ``build_model`` is the only function that turns a
layout into modules (``funnelbench.cost.count`` is the only one that turns it into counts)."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UsageError
from ..layout import Layout
from .layers import LN_EPS, Block, PatchEmbed, TokenPool, Transition


class FunnelViT(nn.Module):
    """A pre-norm ViT whose token sequence may shrink between stages.

    ``B12(197)`` is exactly timm's ``VisionTransformer`` (class token, learned position
    embedding, qkv bias, GELU MLP, final LayerNorm, linear head on the class token).
    Blocks are numbered across stages (``blocks.0`` ... ``blocks.11``) as in timm, so a ViT
    checkpoint loads into any layout with the same widths; the transitions between stages hold
    the pools (no parameters) and, where the width changes, the projections.
    """

    def __init__(self, layout: Layout, num_classes: int = 1000, in_chans: int = 3):
        super().__init__()
        self.layout = layout
        self.num_classes = num_classes
        first = layout.stages[0]
        prefix = layout.num_prefix_tokens
        self.patch_embed = PatchEmbed(layout.patch_size, first.hidden, in_chans)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, first.hidden)) if prefix else None
        self.pos_embed = nn.Parameter(torch.zeros(1, first.tokens, first.hidden))

        blocks, transitions = [], {}
        prev = None
        for stage in layout.stages:
            if prev is not None and (stage.pools or stage.hidden != prev.hidden):
                pool = TokenPool(stage.pool, stage.stride, prefix) if stage.pools else None
                transitions[str(len(blocks))] = Transition(prev.hidden, stage.hidden, pool, stage.pqo)
            blocks += [Block(stage.hidden, stage.heads, stage.mlp) for _ in range(stage.layers)]
            prev = stage
        self.blocks = nn.ModuleList(blocks)
        self.transitions = nn.ModuleDict(transitions)
        last = layout.stages[-1].hidden
        self.norm = nn.LayerNorm(last, eps=LN_EPS)
        self.head = nn.Linear(last, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """timm's ViT initialisation: trunc-normal(0.02) weights and position embedding, zero biases."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, N_last, C_last)
        size = self.layout.image_size
        if x.shape[-2:] != (size, size):
            raise UsageError(f"this model takes {size}x{size} images (layout {self.layout}), got "
                             f"{tuple(x.shape[-2:])}; resize the input or build the layout at that size")
        x = self.patch_embed(x)  # (B, P, C)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1 + P, C)
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

    if not isinstance(num_classes, int) or num_classes < 1:
        raise UsageError(f"num_classes must be a positive integer, got {num_classes!r}")
    return FunnelViT(resolve(x), num_classes=num_classes, in_chans=in_chans)
