"""Models: blocks, token pooling, stems and heads, and ``build_model``."""

from .layers import Attention, Block, Mlp, PatchEmbed, TokenPool, Transition
from .stems import Bottleneck, PerformerLayer, ProgressiveSamplingEmbed, T2TEmbed, T2TTransformerLayer
from .vit import FunnelViT, build_model

__all__ = [
    "Attention",
    "Block",
    "Mlp",
    "PatchEmbed",
    "TokenPool",
    "Transition",
    "Bottleneck",
    "PerformerLayer",
    "ProgressiveSamplingEmbed",
    "T2TEmbed",
    "T2TTransformerLayer",
    "FunnelViT",
    "build_model",
]
