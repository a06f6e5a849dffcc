"""Analytic parameter and compute counts from a :class:`~funnelbench.layout.Layout` alone.

No tensors, no modules: plain integer arithmetic, so the search can check thousands of layouts
against a budget in a fraction of a second. ``tests/test_cost.py`` checks every formula against
the built model (parameters, exactly) and against fvcore (MACs).

Convention (the seed papers', DeiT's and fvcore's "FLOPs"): ``macs`` counts one
multiply-accumulate as one operation, for one forward pass of one image. ``flops`` = 2 x
``macs`` counts the multiply and the add separately (torch's ``FlopCounterMode`` convention).

Counted: every linear layer and convolution (patch embedding, T2T projections, PS-ViT's conv
feature extractor, point embedding and offset predictors, stage projections, the head) and
every matrix product of attention: Q K^T and A V, and the Performer's feature maps and
products. Not counted: normalisation (LayerNorm, BatchNorm), activations, softmax and the
Performer's exp, pooling (token pools and the stem's max pool), bilinear sampling
(``grid_sample``), unfolding, additions. fvcore counts a few of these (5 operations per
LayerNorm element, 1 per BatchNorm element, 4 per ``grid_sample`` output): about 0.2 % of a
ViT; :attr:`funnelbench.counters.CounterResult.convention_macs` removes them.

``params`` counts trainable parameters: fixed tensors (T2T-ViT's sinusoid position
embedding, the Performer's random features, BatchNorm statistics) are buffers.

For a layer with N query tokens, M key/value tokens (M = N except for pool-query-only
attention), width d and MLP width m:

    q projection        N * d * d
    k, v projections    2 * M * d * d
    Q K^T and A V       2 * N * M * d
    output projection   N * d * d
    MLP                 2 * N * d * m

A T2T layer on T tokens from width c to width t (MLP width t), r = t / 2 random features:

    qkv projection      T * c * 3t
    attention           2 * T * T * t            (Transformer kind)
                        4 * T * t * r + T * r    (Performer kind)
    output projection   T * t * t
    MLP                 2 * T * t * t
"""

from __future__ import annotations

from dataclasses import dataclass

from .layout import Layout, Stage, check_int, ps_feature_size, unfold_length, validate_layout


@dataclass(frozen=True)
class Part:
    """Cost of one named part of the model (``embed``, ``sampling``, ``stage1``, ..., ``head``)."""

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


def linear_params(c_in: int, c_out: int, bias: bool = True) -> int:
    return c_in * c_out + (c_out if bias else 0)


def layer_params(d: int, m: int, qkv_bias: bool = True) -> int:
    """One pre-norm transformer layer: 2 LayerNorms, qkv, output projection, 2-layer MLP."""
    norms = 2 * 2 * d
    attn = linear_params(d, 3 * d, qkv_bias) + linear_params(d, d)
    mlp = linear_params(d, m) + linear_params(m, d)
    return norms + attn + mlp


def layer_macs(n: int, d: int, m: int, kv: int | None = None) -> int:
    """One layer on ``n`` query tokens attending to ``kv`` tokens (default: the same ``n``)."""
    kv = n if kv is None else kv
    return n * d * d + 2 * kv * d * d + 2 * n * kv * d + n * d * d + 2 * n * d * m


# ----------------------------------------------------------------------------- stems


def t2t_layer_params(c: int, t: int, performer: bool) -> int:
    """A T2T layer from width c to width t: LayerNorm(c), qkv (bias only in the Performer),
    output projection, LayerNorm(t), MLP t -> t -> t. The Performer's random features are a buffer."""
    return 2 * c + linear_params(c, 3 * t, bias=performer) + linear_params(t, t) + 2 * t + 2 * linear_params(t, t)


def t2t_layer_macs(n: int, c: int, t: int, performer: bool) -> int:
    if performer:
        r = t // 2
        attention = 4 * n * t * r + n * r
    else:
        attention = 2 * n * n * t
    return n * c * 3 * t + attention + n * t * t + 2 * n * t * t


def t2t_sides(image_size: int) -> tuple[int, int, int]:
    """Tokens per side after T2T's three soft splits: unfold(7, 4, 2), unfold(3, 2, 1) twice."""
    s0 = unfold_length(image_size, 7, 4, 2)
    s1 = unfold_length(s0, 3, 2, 1)
    return s0, s1, unfold_length(s1, 3, 2, 1)


def t2t_cost(layout: Layout, in_chans: int = 3) -> tuple[int, int]:
    """Params and MACs of the Tokens-to-Token stem."""
    t, d = layout.stem.token_dim, layout.stages[0].hidden
    performer = layout.stem.kind == "t2t"
    s0, s1, s2 = t2t_sides(layout.image_size)
    c0, c1 = in_chans * 7 * 7, t * 3 * 3
    params = t2t_layer_params(c0, t, performer) + t2t_layer_params(c1, t, performer) + linear_params(c1, d)
    macs = t2t_layer_macs(s0 * s0, c0, t, performer) + t2t_layer_macs(s1 * s1, c1, t, performer) + s2 * s2 * c1 * d
    return params, macs


def bottleneck_cost(c_in: int, mid: int, c_out: int, hw: int) -> tuple[int, int]:
    """A ResNet bottleneck on hw pixels: convs 1x1, 3x3, 1x1 (no bias), BatchNorms, shortcut conv."""
    weights = c_in * mid + 9 * mid * mid + mid * c_out + (c_in * c_out if c_in != c_out else 0)
    bn = 2 * (mid + mid + c_out + (c_out if c_in != c_out else 0))
    return weights + bn, weights * hw


def ps_features_cost(layout: Layout, in_chans: int = 3) -> tuple[int, int]:
    """PS-ViT's feature extractor: conv 7x7/2 (64) + BN, max pool, two bottlenecks."""
    d, fe = layout.stages[0].hidden, layout.stem.fe_width
    c1 = unfold_length(layout.image_size, 7, 2, 3)
    hw = ps_feature_size(layout.image_size) ** 2
    p1, m1 = bottleneck_cost(64, 64, fe, hw)
    p2, m2 = bottleneck_cost(fe, 64, d, hw)
    conv = in_chans * 49 * 64
    return conv + 2 * 64 + p1 + p2, conv * c1 * c1 + m1 + m2


def ps_sampling_cost(layout: Layout) -> tuple[int, int, Stage]:
    """PS-ViT's progressive sampling: ``iters`` layers (one if shared) on n*n tokens, the shared
    Linear(2, d) point embedding and the Linear(d, 2) offset predictors (all but the last
    iteration; one if shared)."""
    stem, first = layout.stem, layout.stages[0]
    d, n = first.hidden, stem.points * stem.points
    offsets = 0 if stem.iters == 1 else (1 if stem.share else stem.iters - 1)
    params = ((1 if stem.share else stem.iters) * layer_params(d, first.mlp, first.qkv_bias)
              + linear_params(2, d) + offsets * linear_params(d, 2))
    macs = stem.iters * (layer_macs(n, d, first.mlp) + n * 2 * d) + (stem.iters - 1) * n * d * 2
    as_stage = Stage(stem.iters, n, d, first.mlp, first.heads, qkv_bias=first.qkv_bias)
    return params, macs, as_stage


def stage_cost(prev: Stage | None, s: Stage) -> tuple[int, int]:
    """(params, MACs) of stage ``s`` entered from ``prev`` (None for the first stage): the
    projection to its width, its position embedding and its layers (the search adds these up
    stage by stage)."""
    params = macs = 0
    if prev is not None and prev.hidden != s.hidden:
        # Projection of the whole (unpooled) sequence to the new width, then the pool.
        params += linear_params(prev.hidden, s.hidden)
        macs += prev.tokens * prev.hidden * s.hidden
    if s.newpos:  # a learned position embedding of the pooled sequence
        params += s.tokens * s.hidden
    params += s.layers * layer_params(s.hidden, s.mlp, s.qkv_bias)
    first_kv = prev.tokens if (s.pools and s.pqo) else s.tokens
    macs += layer_macs(s.tokens, s.hidden, s.mlp, kv=first_kv)
    macs += (s.layers - 1) * layer_macs(s.tokens, s.hidden, s.mlp)
    return params, macs


def head_cost(d: int, num_classes: int = 1000) -> tuple[int, int]:
    """(params, MACs) of the head on width ``d``: the final LayerNorm and the classifier."""
    return 2 * d + linear_params(d, num_classes), d * num_classes


def count(x, num_classes: int = 1000) -> Cost:
    """Analytic params and MACs of a layout, preset name or layout string.

    ``params`` equals ``sum(p.numel() for p in build_model(x).parameters())`` exactly.
    """
    from .presets import resolve

    layout: Layout = validate_layout(x) if isinstance(x, Layout) else resolve(x)  # text is checked as it is parsed
    check_int(num_classes, "num_classes")
    in_chans = 3
    first = layout.stages[0]
    d0 = first.hidden
    parts = []

    # The stem, class token and position embedding.
    if layout.stem.kind == "patch":  # a p x p convolution with stride p
        p = layout.patch_size
        embed_params, embed_macs = linear_params(in_chans * p * p, d0), layout.num_patches * in_chans * p * p * d0
    elif layout.stem.is_t2t:
        embed_params, embed_macs = t2t_cost(layout, in_chans)
    else:
        embed_params, embed_macs = ps_features_cost(layout, in_chans)
    embed_params += layout.num_prefix_tokens * d0 + (first.tokens * d0 if layout.pos == "learned" else 0)
    parts.append(Part("embed", embed_params, embed_macs))
    if layout.stem.kind == "ps":
        parts.append(Part("sampling", *ps_sampling_cost(layout)))

    prev: Stage | None = None
    for i, s in enumerate(layout.stages):
        parts.append(Part(f"stage{i + 1}", *stage_cost(prev, s), s))
        prev = s
    parts.append(Part("head", *head_cost(layout.stages[-1].hidden, num_classes)))
    return Cost(sum(x.params for x in parts), sum(x.macs for x in parts), tuple(parts))
