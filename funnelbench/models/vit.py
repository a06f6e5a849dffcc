"""ViT, Funnel-ViT, HVT, T2T-ViT and PS-ViT built from a layout. ``build_model`` is the only function that turns a
layout into modules: one per part of :func:`funnelbench.parts.describe`, the description that
``funnelbench.cost.count`` and ``funnelbench.memory.estimate_memory`` walk too."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UsageError
from ..layout import Layout, check_int, validate_layout
from ..parts import PatchStemPart, PSStemPart, T2TStemPart, TransitionPart, describe, make_stem_part
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
    return stem_module(make_stem_part(layout, in_chans))


def stem_module(part: PatchStemPart | T2TStemPart | PSStemPart) -> nn.Module:
    if isinstance(part, PatchStemPart):
        return PatchEmbed(part.patch_size, part.dim, part.in_chans)
    if isinstance(part, T2TStemPart):
        return T2TEmbed(part.dim, part.token_dim, performer=part.performer, in_chans=part.in_chans)
    return ProgressiveSamplingEmbed(
        part.dim,
        part.heads,
        part.mlp,
        part.points,
        part.iters,
        part.share,
        part.fe_width,
        part.qkv_bias,
        part.image_size,
        part.in_chans,
    )


def transition_module(part: TransitionPart) -> Transition:
    s = part.stage
    pool = TokenPool(s.pool, s.stride, part.prefix, s.kernel) if part.pools else None
    return Transition(part.prev.hidden, s.hidden, pool, s.pqo, pos_tokens=part.pos_tokens)


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
        parts = describe(layout, num_classes, in_chans)  # one module per part, in its registration order
        embed = parts.embed
        self.patch_embed = stem_module(parts.stem)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed.dim)) if embed.cls else None
        if embed.pos == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, embed.tokens, embed.dim))
        elif embed.pos == "sincos":
            self.register_buffer("pos_embed", sincos_table(embed.tokens, embed.dim))
        else:
            self.pos_embed = None

        blocks, transitions = [], {}
        for stage in parts.stages:
            if stage.transition is not None:  # keyed by the index of the block it comes before
                transitions[str(len(blocks))] = transition_module(stage.transition)
            blocks += [Block(x.dim, x.heads, x.mlp, x.qkv_bias) for x in stage.layers]
        self.blocks = nn.ModuleList(blocks)
        self.transitions = nn.ModuleDict(transitions)
        head = parts.head
        self.norm = nn.LayerNorm(head.dim, eps=LN_EPS)
        self.head = nn.Linear(head.dim, head.num_classes)
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
            raise UsageError(
                f"this model takes {size}x{size} images (layout {self.layout}), got "
                f"{tuple(x.shape[-2:])}; resize the input or build the layout at that size"
            )
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
