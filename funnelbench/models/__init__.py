"""Models: blocks, token pooling, stems and heads, and ``build_model``."""

from .layers import Attention, Block, Mlp, PatchEmbed, TokenPool, Transition
from .vit import FunnelViT, build_model

__all__ = ["Attention", "Block", "Mlp", "PatchEmbed", "TokenPool", "Transition", "FunnelViT", "build_model"]
