"""Analytic parameter and compute counts from a :class:`~funnelbench.layout.Layout` alone.

No tensors, no modules: plain integer arithmetic, so the search can check thousands of layouts
against a budget in a fraction of a second. The counts are sums over the parts of
:func:`funnelbench.parts.describe` (each part's parameter shapes and MACs), the description
``build_model`` and ``estimate_memory`` walk too. ``tests/test_cost.py`` checks every formula against
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

# (ps_feature_size, unfold_length, layer_macs, t2t_layer_macs, t2t_sides: importable from here as before)
from .layout import Layout, Stage, check_int, ps_feature_size, unfold_length, validate_layout  # noqa: F401
from .parts import (  # noqa: F401
    HeadPart,
    LayerPart,
    PSStemPart,
    bottleneck_macs,
    bottleneck_shapes,
    describe,
    layer_macs,
    linear_shapes,
    make_stem_part,
    numel,
    stage_parts,
    t2t_layer_macs,
    t2t_sides,
)


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


# Counts of single pieces, from the parts (the search adds stages up one by one).


def linear_params(c_in: int, c_out: int, bias: bool = True) -> int:
    return numel(linear_shapes(c_in, c_out, bias))


def layer_params(d: int, m: int, qkv_bias: bool = True) -> int:
    """One pre-norm transformer layer: 2 LayerNorms, qkv, output projection, 2-layer MLP."""
    return LayerPart("", 0, 0, d, 1, m, qkv_bias).params


# ----------------------------------------------------------------------------- stems


def t2t_layer_params(c: int, t: int, performer: bool) -> int:
    """A T2T layer from width c to width t: LayerNorm(c), qkv (bias only in the Performer),
    output projection, LayerNorm(t), MLP t -> t -> t. The Performer's random features are a buffer."""
    return LayerPart("", 0, 0, t, 1, t, qkv_bias=performer, kind="performer" if performer else "t2t", d_in=c).params


def t2t_cost(layout: Layout, in_chans: int = 3) -> tuple[int, int]:
    """Params and MACs of the Tokens-to-Token stem."""
    stem = make_stem_part(layout, in_chans)
    return stem.params, stem.macs


def bottleneck_cost(c_in: int, mid: int, c_out: int, hw: int) -> tuple[int, int]:
    """A ResNet bottleneck on hw pixels: convs 1x1, 3x3, 1x1 (no bias), BatchNorms, shortcut conv."""
    return numel(bottleneck_shapes(c_in, mid, c_out)), bottleneck_macs(c_in, mid, c_out, hw)


def ps_features_cost(layout: Layout, in_chans: int = 3) -> tuple[int, int]:
    """PS-ViT's feature extractor: conv 7x7/2 (64) + BN, max pool, two bottlenecks."""
    stem = make_stem_part(layout, in_chans)
    return numel(stem.feature_shapes()), stem.feature_macs


def ps_sampling_cost(layout: Layout) -> tuple[int, int, Stage]:
    """PS-ViT's progressive sampling: ``iters`` layers (one if shared) on n*n tokens, the shared
    Linear(2, d) point embedding and the Linear(d, 2) offset predictors (all but the last
    iteration; one if shared)."""
    stem = make_stem_part(layout)
    return numel(stem.sampling_shapes()), stem.sampling_macs, stem.as_stage


def stage_cost(prev: Stage | None, s: Stage) -> tuple[int, int]:
    """(params, MACs) of stage ``s`` entered from ``prev`` (None for the first stage): the
    projection to its width, its position embedding and its layers (the search adds these up
    stage by stage)."""
    parts = stage_parts(0 if prev is None else 1, prev, s, prefix=0)  # the class token changes no count
    return parts.params, parts.macs


def head_cost(d: int, num_classes: int = 1000) -> tuple[int, int]:
    """(params, MACs) of the head on width ``d``: the final LayerNorm and the classifier."""
    head = HeadPart(0, d, "cls", num_classes)
    return head.params, head.macs


def count(x, num_classes: int = 1000) -> Cost:
    """Analytic params and MACs of a layout, preset name or layout string.

    ``params`` equals ``sum(p.numel() for p in build_model(x).parameters())`` exactly.
    """
    from .presets import resolve

    layout: Layout = validate_layout(x) if isinstance(x, Layout) else resolve(x)  # text is checked as it is parsed
    check_int(num_classes, "num_classes")
    model = describe(layout, num_classes)
    stem, embed = model.stem, model.embed
    # The stem, class token and position embedding; PS-ViT's sampling iterations apart.
    if isinstance(stem, PSStemPart):
        parts = [
            Part("embed", numel(stem.feature_shapes()) + embed.params, stem.feature_macs),
            Part("sampling", numel(stem.sampling_shapes()), stem.sampling_macs, stem.as_stage),
        ]
    else:
        parts = [Part("embed", stem.params + embed.params, stem.macs)]
    parts += [Part(s.name, s.params, s.macs, s.stage) for s in model.stages]
    parts.append(Part("head", model.head.params, model.head.macs))
    return Cost(sum(x.params for x in parts), sum(x.macs for x in parts), tuple(parts))
