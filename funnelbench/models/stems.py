"""Stems: how an image becomes tokens.

* ``PatchEmbed`` (in ``layers.py``): ViT's non-overlapping patches.
* :class:`T2TEmbed`: Tokens-to-Token (T2T-ViT, Yuan et al. 2021): three overlapping soft
  splits (``nn.Unfold``) with a T2T layer and a re-structurization to an image between them,
  then a linear projection to the backbone's width. The T2T layer is a
  :class:`PerformerLayer` (T2T-ViT-7 ... 24) or a :class:`T2TTransformerLayer` (T2T-ViT_t).
* :class:`ProgressiveSamplingEmbed`: PS-ViT (Yue et al. 2021): a ResNet conv stem and two
  bottlenecks make an img/4 feature map; n x n points are sampled on it bilinearly, embedded,
  refined by a transformer layer, and moved by predicted offsets, ``iters`` times.

Module and parameter names follow the official code where it has them (``attention1``,
``project``, ``kqv``, ``pos_layer``) so that their checkpoints can be mapped by name.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import conv1x1, conv3x3

from ..layout import ps_feature_size
from .layers import LN_EPS, Block, Mlp


def restructure(x: torch.Tensor) -> torch.Tensor:
    """T2T's re-structurization: a sequence of g*g tokens back to a (B, C, g, g) image."""
    B, N, C = x.shape
    g = math.isqrt(N)
    return x.transpose(1, 2).reshape(B, C, g, g)


class T2TTransformerLayer(nn.Module):
    """T2T-ViT's ``Token_transformer``: a transformer layer from ``dim_in``-wide tokens (an
    unfolded k x k x C patch) to ``dim``-wide ones. One head, no qkv bias, attention scaled by
    ``dim_in ** -0.5`` (the input width, as the official code does), and ``v`` as the
    residual because the input has another width; MLP hidden width = ``dim``."""

    def __init__(self, dim_in: int, dim: int):
        super().__init__()
        self.dim = dim
        self.scale = dim_in**-0.5
        self.norm1 = nn.LayerNorm(dim_in, eps=LN_EPS)
        self.qkv = nn.Linear(dim_in, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, dim_in) -> (B, N, dim)
        B, N, _ = x.shape
        q, k, v = (
            self.qkv(self.norm1(x)).reshape(B, N, 3, 1, self.dim).permute(2, 0, 3, 1, 4).unbind(0)
        )  # (B, 1, N, dim)
        y = F.scaled_dot_product_attention(q, k, v, scale=self.scale)  # (B, 1, N, dim)
        x = v.squeeze(1) + self.proj(y.squeeze(1))
        return x + self.mlp(self.norm2(x))


class PerformerLayer(nn.Module):
    """T2T-ViT's ``Token_performer``: the same layer with Performer attention, linear in the
    number of tokens. Positive random features of q and k, phi(x) = exp(w x - |x|^2 / 2) /
    sqrt(r) with r = ``dim * kernel_ratio`` fixed orthogonal random directions ``w`` (a
    buffer: not trained); y = phi(q) (phi(k)^T v) / (phi(q) sum_t phi(k_t)).

    MACs for T tokens: 2 T dim r (features of q and k) + T r (normaliser) + 2 T dim r
    (phi(k)^T v and its product with phi(q)).
    """

    def __init__(self, dim_in: int, dim: int, kernel_ratio: float = 0.5):
        super().__init__()
        self.dim = dim
        self.r = int(dim * kernel_ratio)
        self.norm1 = nn.LayerNorm(dim_in, eps=LN_EPS)
        self.kqv = nn.Linear(dim_in, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, dim)
        w = nn.init.orthogonal_(torch.empty(self.r, dim)) * math.sqrt(self.r)
        self.register_buffer("w", w)

    def features(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, dim) -> (B, T, r), float32
        x = x.float()  # exp overflows in half precision; the official code computes this in float32 too
        return torch.exp(F.linear(x, self.w.float()) - (x * x).sum(-1, keepdim=True) / 2) / math.sqrt(self.r)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, dim_in) -> (B, T, dim)
        k, q, v = self.kqv(self.norm1(x)).split(self.dim, dim=-1)  # (B, T, dim) each
        kp, qp = self.features(k), self.features(q)  # (B, T, r)
        norm = qp @ kp.sum(dim=1).unsqueeze(-1)  # (B, T, 1)
        kptv = v.float().transpose(1, 2) @ kp  # (B, dim, r)
        y = (qp @ kptv.transpose(1, 2)) / (norm + 1e-8)  # (B, T, dim)
        x = v + self.proj(y.to(v.dtype))  # v is the residual, as in the Transformer kind
        return x + self.mlp(self.norm2(x))


class T2TEmbed(nn.Module):
    """Tokens-to-Token: unfold(7, 4, 2) -> T2T layer (3*49 -> token_dim) -> image ->
    unfold(3, 2, 1) -> T2T layer (9*token_dim -> token_dim) -> image -> unfold(3, 2, 1) ->
    Linear(9*token_dim, dim). A 224 px image gives 56x56, 28x28, then 14x14 tokens."""

    def __init__(self, dim: int, token_dim: int = 64, performer: bool = True, in_chans: int = 3):
        super().__init__()
        layer = PerformerLayer if performer else T2TTransformerLayer
        self.soft_split0 = nn.Unfold(kernel_size=7, stride=4, padding=2)
        self.soft_split1 = nn.Unfold(kernel_size=3, stride=2, padding=1)
        self.soft_split2 = nn.Unfold(kernel_size=3, stride=2, padding=1)
        self.attention1 = layer(in_chans * 7 * 7, token_dim)
        self.attention2 = layer(token_dim * 3 * 3, token_dim)
        self.project = nn.Linear(token_dim * 3 * 3, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, (H/16)^2, dim)
        x = self.soft_split0(x).transpose(1, 2)  # (B, (H/4)^2, 3*49)
        x = self.attention1(x)  # (B, (H/4)^2, token_dim)
        x = self.soft_split1(restructure(x)).transpose(1, 2)  # (B, (H/8)^2, 9*token_dim)
        x = self.attention2(x)  # (B, (H/8)^2, token_dim)
        x = self.soft_split2(restructure(x)).transpose(1, 2)  # (B, (H/16)^2, 9*token_dim)
        return self.project(x)


class Bottleneck(nn.Module):
    """ResNet bottleneck with explicit widths: 1x1 (c_in -> mid), 3x3 (mid -> mid), 1x1
    (mid -> c_out), each with BatchNorm, ReLU after the sum; a 1x1 conv + BN shortcut when the
    width changes. Same parameter names as torchvision's ``Bottleneck``, whose output width is
    fixed at 4 x mid: it fits PS-ViT-B's first block (64 -> 64 -> 256), not its second
    (256 -> 64 -> 384) or PS-ViT-Ti's (64 -> 64 -> 192)."""

    def __init__(self, c_in: int, mid: int, c_out: int):
        super().__init__()
        self.conv1, self.bn1 = conv1x1(c_in, mid), nn.BatchNorm2d(mid)
        self.conv2, self.bn2 = conv3x3(mid, mid), nn.BatchNorm2d(mid)
        self.conv3, self.bn3 = conv1x1(mid, c_out), nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = nn.Sequential(conv1x1(c_in, c_out), nn.BatchNorm2d(c_out)) if c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, c_in, H, W) -> (B, c_out, H, W)
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


def ps_feature_extractor(dim: int, fe_width: int = 256, in_chans: int = 3) -> nn.Sequential:
    """PS-ViT's feature extractor: ResNet's stem (conv 7x7/2, BN, ReLU, max pool 3x3/2) and
    two bottlenecks of inner width 64: 64 -> ``fe_width`` -> ``dim`` channels at img/4."""
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False),
            bn1=nn.BatchNorm2d(64),
            relu=nn.ReLU(inplace=True),
            maxpool=nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            layer1=Bottleneck(64, 64, fe_width),
            layer2=Bottleneck(fe_width, 64, dim),
        )
    )


def initial_points(n: int, feat_size: int) -> torch.Tensor:
    """(1, n*n, 2) centres of an n x n grid of cells on a feat_size map, (y, x) in feature-map
    pixels, raster order (the official code orders them column by column; the model is
    equivariant to the order, and raster order keeps 2D pooling after the stem meaningful)."""
    step = feat_size / n
    c = (torch.arange(n, dtype=torch.float32) + 0.5) * step
    y, x = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([y.flatten(), x.flatten()], dim=-1).unsqueeze(0)


class ProgressiveSamplingEmbed(nn.Module):
    """PS-ViT's feature extractor and progressive sampling module.

    Iteration t samples the feature map bilinearly at ``points + offset`` (zero outside the
    map: the official op is ``grid_sample(align_corners=True, padding_mode="zeros")`` on pixel
    coordinates), adds ``pos_layer`` of the normalised sampling points (one Linear(2, dim)
    shared by all iterations) and the previous iteration's tokens, runs a transformer layer,
    and (except the last) predicts new offsets with a zero-initialised Linear(dim, 2). Points
    accumulate the offsets; the sampled features carry the offsets' gradient.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_dim: int,
        points: int,
        iters: int = 4,
        share: bool = False,
        fe_width: int = 256,
        qkv_bias: bool = False,
        image_size: int = 224,
        in_chans: int = 3,
    ):
        super().__init__()
        self.iters, self.share = iters, share
        self.feat_size = ps_feature_size(image_size)
        self.features = ps_feature_extractor(dim, fe_width, in_chans)
        self.pos_layer = nn.Linear(2, dim)
        self.layers = nn.ModuleList([Block(dim, heads, mlp_dim, qkv_bias) for _ in range(1 if share else iters)])
        n_offsets = 0 if iters == 1 else (1 if share else iters - 1)
        self.offsets = nn.ModuleList([nn.Linear(dim, 2) for _ in range(n_offsets)])
        self.register_buffer("points", initial_points(points, self.feat_size), persistent=False)

    def reset_offsets(self) -> None:
        for layer in self.offsets:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def sample(self, feat: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
        """Bilinear samples of feat (B, C, H, W) at loc (B, P, 2), (y, x) in pixels -> (B, P, C)."""
        H, W = feat.shape[-2:]
        scale = loc.new_tensor([2 / max(W - 1, 1), 2 / max(H - 1, 1)])
        grid = (loc.flip(-1) * scale - 1).unsqueeze(1)  # (B, 1, P, 2) as (x, y) in [-1, 1]
        out = F.grid_sample(feat, grid, mode="bilinear", padding_mode="zeros", align_corners=True)  # (B, C, 1, P)
        return out.squeeze(2).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, n*n, dim)
        feat = self.features(x)  # (B, dim, H/4, W/4)
        point = self.points.expand(x.shape[0], -1, -1)  # (B, P, 2)
        offset = torch.zeros_like(point)
        tokens = None
        for t in range(self.iters):
            sampled = self.sample(feat, point + offset)  # (B, P, dim)
            point = point + offset.detach()
            h = sampled + self.pos_layer(point / self.feat_size)
            if tokens is not None:
                h = h + tokens
            tokens = self.layers[0 if self.share else t](h)
            if t < self.iters - 1:
                offset = self.offsets[0 if self.share else t](tokens)  # (B, P, 2)
        return tokens
