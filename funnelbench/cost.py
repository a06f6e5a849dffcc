"""Analytic parameter and compute counts from a :class:`~funnelbench.layout.Layout` alone.

No tensors, no modules: plain integer arithmetic, so the search can check thousands of layouts
against a budget in a fraction of a second. ``tests/test_cost.py`` checks every formula against
the built model (parameters, exactly) and against fvcore (MACs).

Convention (the seed papers', DeiT's and fvcore's "FLOPs"): ``macs`` counts one
multiply-accumulate as one operation, for one forward pass of one image. ``flops`` = 2 x
``macs`` counts the multiply and the add separately (torch's ``FlopCounterMode`` convention).
Counted: every linear layer and convolution, the patch embedding, the stage projections, the
head, and the two attention matmuls (Q K^T and A V). Not counted: normalisation, activation,
softmax, pooling, residual additions (fvcore adds 5 operations per element for each
LayerNorm: about 0.2 % of a ViT, the only part of fvcore's count that is not here).

For a layer with N query tokens, M key/value tokens (M = N except for pool-query-only
attention), width d and MLP width m:

    q projection        N * d * d
    k, v projections    2 * M * d * d
    Q K^T and A V       2 * N * M * d
    output projection   N * d * d
    MLP                 2 * N * d * m
"""

from __future__ import annotations

from dataclasses import dataclass

from .layout import Layout, Stage


@dataclass(frozen=True)
class Part:
    """Cost of one named part of the model (``embed``, ``stage1``, ..., ``head``)."""

    name: str
    params: int
    macs: int
    stage: Stage | None = None


@dataclass(frozen=True)
class Cost:
    """Parameters and multiply-accumulates of one forward pass of one image."""

    params: int
    macs: int
    parts: tuple[Part, ...] = ()

    @property
    def flops(self) -> int:
        """2 x MACs: a multiply and an add counted separately (FlopCounterMode's convention)."""
        return 2 * self.macs


def layer_params(d: int, m: int, qkv_bias: bool = True) -> int:
    """One pre-norm transformer layer: 2 LayerNorms, qkv, output projection, 2-layer MLP."""
    norms = 2 * 2 * d
    attn = d * 3 * d + (3 * d if qkv_bias else 0) + d * d + d
    mlp = d * m + m + m * d + d
    return norms + attn + mlp


def layer_macs(n: int, d: int, m: int, kv: int | None = None) -> int:
    """One layer on ``n`` query tokens attending to ``kv`` tokens (default: the same ``n``)."""
    kv = n if kv is None else kv
    return n * d * d + 2 * kv * d * d + 2 * n * kv * d + n * d * d + 2 * n * d * m


def count(x, num_classes: int = 1000) -> Cost:
    """Analytic params and MACs of a layout, preset name or layout string.

    ``params`` equals ``sum(p.numel() for p in build_model(x).parameters())`` exactly.
    """
    from .presets import resolve

    layout: Layout = resolve(x)
    in_chans = 3
    p = layout.patch_size
    d0 = layout.stages[0].hidden
    prefix = layout.num_prefix_tokens
    parts = []

    # Patch embedding (a p x p convolution with stride p), class token, position embedding.
    embed_params = in_chans * p * p * d0 + d0 + prefix * d0 + layout.stages[0].tokens * d0
    embed_macs = layout.num_patches * in_chans * p * p * d0
    parts.append(Part("embed", embed_params, embed_macs))

    prev: Stage | None = None
    for i, s in enumerate(layout.stages):
        params = macs = 0
        if prev is not None and prev.hidden != s.hidden:
            # Projection of the whole (unpooled) sequence to the new width, then the pool.
            params += prev.hidden * s.hidden + s.hidden
            macs += prev.tokens * prev.hidden * s.hidden
        params += s.layers * layer_params(s.hidden, s.mlp)
        first_kv = prev.tokens if (s.pools and s.pqo) else s.tokens
        macs += layer_macs(s.tokens, s.hidden, s.mlp, kv=first_kv)
        macs += (s.layers - 1) * layer_macs(s.tokens, s.hidden, s.mlp)
        parts.append(Part(f"stage{i + 1}", params, macs, s))
        prev = s

    d = layout.stages[-1].hidden
    parts.append(Part("head", 2 * d + d * num_classes + num_classes, d * num_classes))
    return Cost(sum(x.params for x in parts), sum(x.macs for x in parts), tuple(parts))
