"""Building blocks with explicit arguments. Only :func:`funnelbench.models.build_model` reads a
layout; these modules take plain sizes. Parameter names follow timm's ``VisionTransformer``
(``attn.qkv``, ``mlp.fc1``, ...) so that timm checkpoints load by name."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LN_EPS = 1e-6  # timm's and torchvision's ViT


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches -> tokens (a convolution with kernel = stride = p)."""

    def __init__(self, patch_size: int, dim: int, in_chans: int = 3):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W)
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, H/p * W/p, C)


class Attention(nn.Module):
    """Multi-head self-attention through ``scaled_dot_product_attention``.

    With ``kv`` given it is Funnel-Transformer's pool-query-only attention: queries from ``x``
    (the pooled sequence), keys and values from ``kv`` (the unpooled one). The weights are the
    same fused ``qkv`` linear either way, so ViT weights load into both.
    """

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True):
        super().__init__()
        assert dim % heads == 0, "the layout parser guarantees this"
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, kv: torch.Tensor | None = None) -> torch.Tensor:
        B, N, C = x.shape
        H = self.heads
        if kv is None:
            qkv = self.qkv(x).reshape(B, N, 3, H, C // H).permute(2, 0, 3, 1, 4)  # (3, B, H, N, C/H)
            q, k, v = qkv.unbind(0)
        else:
            M = kv.shape[1]
            w_q, w_kv = self.qkv.weight.split([C, 2 * C])
            b_q, b_kv = self.qkv.bias.split([C, 2 * C]) if self.qkv.bias is not None else (None, None)
            q = F.linear(x, w_q, b_q).reshape(B, N, H, C // H).transpose(1, 2)  # (B, H, N, C/H)
            k, v = (
                F.linear(kv, w_kv, b_kv).reshape(B, M, 2, H, C // H).permute(2, 0, 3, 1, 4).unbind(0)
            )  # (B, H, M, C/H)
        x = F.scaled_dot_product_attention(q, k, v)  # (B, H, N, C/H)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer layer: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, qkv_bias: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, mlp_dim)

    def forward(self, x: torch.Tensor, kv: torch.Tensor | None = None) -> torch.Tensor:  # (B, N, C)
        if kv is None:
            x = x + self.attn(self.norm1(x))
        else:  # pool-query-only: the residual stream is the pooled x
            x = x + self.attn(self.norm1(x), self.norm1(kv))
        return x + self.mlp(self.norm2(x))


class TokenPool(nn.Module):
    """Pooling of the tokens after the first ``prefix`` (the class token is never pooled).

    ``op``: ``mean`` or ``max`` over the sequence (1D), or ``mean2d``/``max2d`` over the patch
    tokens laid out as a square grid (raster order). ``kernel`` 0: window = stride, ceil mode
    (a last, shorter window is pooled on its own), as in Funnel-Transformer. ``kernel`` k:
    windows of k (k x k) tokens, no padding, floor mode, as ``nn.MaxPool1d(k, stride)`` in HVT.
    """

    def __init__(self, op: str, stride: int, prefix: int, kernel: int = 0):
        super().__init__()
        if op not in ("mean", "max", "mean2d", "max2d"):
            raise ValueError(f"unknown pooling operator {op!r}")
        self.op, self.stride, self.prefix, self.kernel = op, stride, prefix, kernel

    def extra_repr(self) -> str:
        return f"op={self.op}, stride={self.stride}, kernel={self.kernel or self.stride}, prefix={self.prefix}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, C) -> (B, prefix + pooled, C)
        head, tokens = x[:, : self.prefix], x[:, self.prefix :]
        B, N, C = tokens.shape
        s, k = self.stride, self.kernel or self.stride
        mean = self.op.startswith("mean")
        if self.op.endswith("2d"):
            g = math.isqrt(N)
            grid = tokens.transpose(1, 2).reshape(B, C, g, g)  # (B, C, g, g), raster order
            pool = F.avg_pool2d if mean else F.max_pool2d
            pooled = pool(grid, k, s, ceil_mode=not self.kernel).flatten(2).transpose(1, 2)  # (B, g'*g', C)
        elif not self.kernel and N % s == 0:  # the common case: a reshape and a reduction, no transposes
            grouped = tokens.reshape(B, N // s, s, C)
            pooled = grouped.mean(2) if mean else grouped.amax(2)
        else:
            pool = F.avg_pool1d if mean else F.max_pool1d
            pooled = pool(tokens.transpose(1, 2), k, s, ceil_mode=not self.kernel).transpose(1, 2)  # (B, N', C)
        return torch.cat([head, pooled], dim=1) if self.prefix else pooled


class Transition(nn.Module):
    """What happens between two stages: an optional projection to the new width (on the whole
    sequence), then an optional pool, then optionally a new learned position embedding of the
    pooled sequence (HVT). Returns the new sequence and, for pool-query-only attention, the
    unpooled one for the next layer's keys and values."""

    def __init__(self, dim_in: int, dim_out: int, pool: TokenPool | None, pqo: bool, pos_tokens: int = 0):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out) if dim_in != dim_out else None
        self.pool = pool
        self.pqo = pqo and pool is not None
        self.pos_embed = nn.Parameter(torch.zeros(1, pos_tokens, dim_out)) if pos_tokens else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.proj is not None:
            x = self.proj(x)  # (B, N, C_out)
        if self.pool is None:
            return x, None
        pooled = self.pool(x)  # (B, N', C_out)
        if self.pos_embed is not None:
            pooled = pooled + self.pos_embed
        return pooled, (x if self.pqo else None)  # (B, N', C_out), (B, N, C_out) | None
