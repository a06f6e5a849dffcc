"""One description of a layout's parts, derived once from a :class:`~funnelbench.layout.Layout`.

    layout --describe--> ModelParts
        stem       PatchStemPart | T2TStemPart | PSStemPart   how the image becomes tokens
        embed      EmbedPart        the class token and the position embedding
        stages     StageParts ...   each: a TransitionPart into it (or none), its LayerParts
        head       HeadPart         the final LayerNorm and the classifier

Every part is a frozen dataclass whose fields are its module's arguments, and it knows its
parameter shapes (``param_shapes()``, in the module's ``parameters()`` order), its parameter
count (``params``) and its multiply-accumulates for one image (``macs``). Three walks read it:
:func:`funnelbench.models.build_model` makes one module per part, :func:`funnelbench.cost.count`
adds up the parameters and MACs, and :func:`funnelbench.memory.estimate_memory` walks the same
parts in forward order for the bytes each one keeps. No tensors here: plain integers.

The MACs formulas (one multiply-accumulate = one operation; what is counted and what not)
are written out in :mod:`funnelbench.cost`'s docstring.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .layout import Layout, Stage, ps_feature_size, unfold_length

Shape = tuple[int, ...]


def linear_shapes(c_in: int, c_out: int, bias: bool = True) -> list[Shape]:
    """``nn.Linear(c_in, c_out)``: weight, then bias."""
    return [(c_out, c_in)] + ([(c_out,)] if bias else [])


def norm_shapes(c: int) -> list[Shape]:
    """``nn.LayerNorm(c)`` or ``nn.BatchNorm2d(c)``: weight and bias."""
    return [(c,), (c,)]


def numel(shapes: list[Shape]) -> int:
    return sum(math.prod(s) for s in shapes)


def layer_macs(n: int, d: int, m: int, kv: int | None = None) -> int:
    """One layer on ``n`` query tokens attending to ``kv`` tokens (default: the same ``n``)."""
    kv = n if kv is None else kv
    return n * d * d + 2 * kv * d * d + 2 * n * kv * d + n * d * d + 2 * n * d * m


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


class _Counted:
    """``params`` from the part's parameter shapes: the one place a parameter count comes from."""

    def param_shapes(self) -> list[Shape]:
        raise NotImplementedError

    @property
    def params(self) -> int:
        return numel(self.param_shapes())


# ----------------------------------------------------------------------------- backbone


@dataclass(frozen=True)
class LayerPart(_Counted):
    """One pre-norm transformer layer on ``tokens`` query tokens attending to ``kv_tokens``
    (more than ``tokens`` only in a pool-query-only layer: the unpooled sequence).

    ``kind``: ``vit`` (:class:`~funnelbench.models.Block`), or a Tokens-to-Token layer of the
    stem from ``d_in``-wide tokens with ``v`` as the residual: ``t2t`` (Transformer kind,
    ``T2TTransformerLayer``) or ``performer`` (``PerformerLayer``)."""

    name: str  # "stage2.layer1", "embed.t2t1", "sampling.layer3"
    tokens: int
    kv_tokens: int
    dim: int
    heads: int
    mlp: int
    qkv_bias: bool = True
    kind: str = "vit"
    d_in: int | None = None  # the input width of a T2T layer (None: ``dim``)

    def param_shapes(self) -> list[Shape]:  # norm1, qkv, proj, norm2, fc1, fc2
        c, d, m = self.d_in or self.dim, self.dim, self.mlp
        return (
            norm_shapes(c)
            + linear_shapes(c, 3 * d, self.qkv_bias)
            + linear_shapes(d, d)
            + norm_shapes(d)
            + linear_shapes(d, m)
            + linear_shapes(m, d)
        )

    @property
    def macs(self) -> int:
        if self.kind == "vit":
            return layer_macs(self.tokens, self.dim, self.mlp, kv=self.kv_tokens)
        return t2t_layer_macs(self.tokens, self.d_in, self.dim, performer=self.kind == "performer")


@dataclass(frozen=True)
class TransitionPart(_Counted):
    """Between two stages (:class:`~funnelbench.models.Transition`): a projection to the new
    width on the whole sequence (when the width changes), then the stage's pool on the tokens
    after the first ``prefix`` (when it pools), then a new learned position embedding of the
    pooled sequence (``newpos``)."""

    name: str  # "stage2.transition"
    prev: Stage  # the stage before
    stage: Stage  # the stage it enters: its pool, stride, kernel, pqo and newpos
    prefix: int  # tokens never pooled (the class token)

    @property
    def pools(self) -> bool:
        return self.stage.pools

    @property
    def projects(self) -> bool:
        return self.prev.hidden != self.stage.hidden

    @property
    def pqo(self) -> bool:
        """The next layer's keys and values are the unpooled sequence (pool-query-only)."""
        return self.stage.pools and self.stage.pqo

    @property
    def pos_tokens(self) -> int:
        return self.stage.tokens if self.stage.newpos else 0

    def param_shapes(self) -> list[Shape]:  # the position embedding (the module's own), then proj
        pos = [(1, self.pos_tokens, self.stage.hidden)] if self.pos_tokens else []
        return pos + (linear_shapes(self.prev.hidden, self.stage.hidden) if self.projects else [])

    @property
    def macs(self) -> int:  # the projection of the whole (unpooled) sequence
        return self.prev.tokens * self.prev.hidden * self.stage.hidden if self.projects else 0


@dataclass(frozen=True)
class StageParts:
    """One stage: the transition into it (None for the first stage, or when neither the width
    nor the tokens change) and its layers."""

    name: str  # "stage2"
    stage: Stage
    transition: TransitionPart | None
    layers: tuple[LayerPart, ...]

    @property
    def params(self) -> int:
        return (self.transition.params if self.transition else 0) + sum(x.params for x in self.layers)

    @property
    def macs(self) -> int:
        return (self.transition.macs if self.transition else 0) + sum(x.macs for x in self.layers)


def stage_parts(index: int, prev: Stage | None, stage: Stage, prefix: int) -> StageParts:
    """The parts of stage ``index`` (0-based) entered from ``prev`` (None for the first stage).
    Only the first layer after a pool with ``pqo`` attends to the unpooled ``prev.tokens``."""
    name = f"stage{index + 1}"
    transition = None
    if prev is not None and (stage.pools or stage.hidden != prev.hidden):
        transition = TransitionPart(f"{name}.transition", prev, stage, prefix)
    layers = tuple(
        LayerPart(
            f"{name}.layer{j + 1}",
            stage.tokens,
            prev.tokens if (j == 0 and transition is not None and transition.pqo) else stage.tokens,
            stage.hidden,
            stage.heads,
            stage.mlp,
            stage.qkv_bias,
        )
        for j in range(stage.layers)
    )
    return StageParts(name, stage, transition, layers)


@dataclass(frozen=True)
class EmbedPart(_Counted):
    """The class token joined in front of the stem's tokens (``cls``) and the position
    embedding added (``learned``: a parameter; ``sincos``: a fixed buffer; ``none``)."""

    tokens: int  # with the class token
    dim: int
    cls: bool
    pos: str

    def param_shapes(self) -> list[Shape]:  # FunnelViT's own: cls_token, pos_embed
        cls = [(1, 1, self.dim)] if self.cls else []
        return cls + ([(1, self.tokens, self.dim)] if self.pos == "learned" else [])

    macs = 0


@dataclass(frozen=True)
class HeadPart(_Counted):
    """The final LayerNorm and the linear classifier, on the class token (``cls``) or the
    mean of the tokens (``avg``)."""

    tokens: int
    dim: int
    kind: str
    num_classes: int

    def param_shapes(self) -> list[Shape]:  # norm, head
        return norm_shapes(self.dim) + linear_shapes(self.dim, self.num_classes)

    @property
    def macs(self) -> int:
        return self.dim * self.num_classes


# ----------------------------------------------------------------------------- stems


@dataclass(frozen=True)
class PatchStemPart(_Counted):
    """:class:`~funnelbench.models.PatchEmbed`: a p x p convolution with stride p."""

    patch_size: int
    dim: int
    in_chans: int
    image_size: int
    patches: int  # tokens it makes

    def param_shapes(self) -> list[Shape]:
        p = self.patch_size
        return [(self.dim, self.in_chans, p, p), (self.dim,)]

    @property
    def macs(self) -> int:
        return self.patches * self.in_chans * self.patch_size**2 * self.dim


@dataclass(frozen=True)
class T2TStemPart(_Counted):
    """:class:`~funnelbench.models.T2TEmbed`: soft splits of ``widths`` channels x window giving
    ``sides`` x ``sides`` tokens, a T2T layer after each but the last, then a Linear to ``dim``."""

    image_size: int
    token_dim: int
    dim: int
    performer: bool
    in_chans: int

    @property
    def sides(self) -> tuple[int, int, int]:
        return t2t_sides(self.image_size)

    @property
    def widths(self) -> tuple[int, int, int]:
        """Channels x window of each soft split's columns."""
        return self.in_chans * 7 * 7, self.token_dim * 3 * 3, self.token_dim * 3 * 3

    @property
    def layers(self) -> tuple[LayerPart, LayerPart]:
        """``attention1`` and ``attention2``: one head, MLP width ``token_dim``, qkv bias only
        in the Performer kind."""
        t = self.token_dim
        kind = "performer" if self.performer else "t2t"
        return tuple(
            LayerPart(
                f"embed.t2t{i + 1}", side * side, side * side, t, 1, t, qkv_bias=self.performer, kind=kind, d_in=c
            )
            for i, (side, c) in enumerate(zip(self.sides[:2], self.widths[:2]))
        )

    def param_shapes(self) -> list[Shape]:
        return [s for layer in self.layers for s in layer.param_shapes()] + linear_shapes(self.widths[2], self.dim)

    @property
    def macs(self) -> int:
        return sum(x.macs for x in self.layers) + self.sides[2] ** 2 * self.widths[2] * self.dim


def bottleneck_shapes(c_in: int, mid: int, c_out: int) -> list[Shape]:
    """:class:`~funnelbench.models.Bottleneck`: convs 1x1, 3x3, 1x1 (no bias) each with a
    BatchNorm, and a 1x1 conv + BatchNorm shortcut when the width changes."""
    shapes = [(mid, c_in, 1, 1)] + norm_shapes(mid) + [(mid, mid, 3, 3)] + norm_shapes(mid)
    shapes += [(c_out, mid, 1, 1)] + norm_shapes(c_out)
    return shapes + ([(c_out, c_in, 1, 1)] + norm_shapes(c_out) if c_in != c_out else [])


def bottleneck_macs(c_in: int, mid: int, c_out: int, hw: int) -> int:
    """The bottleneck's convolution weights, once per pixel of its ``hw``-pixel map."""
    return hw * numel([s for s in bottleneck_shapes(c_in, mid, c_out) if len(s) == 4])


@dataclass(frozen=True)
class PSStemPart(_Counted):
    """:class:`~funnelbench.models.ProgressiveSamplingEmbed`: a ResNet feature extractor (conv
    7x7/2 with 64 channels and BatchNorm, max pool 3x3/2, bottlenecks 64 -> ``fe_width`` -> ``dim``
    of inner width 64) to an img/4 map, then ``iters`` sampling iterations on ``points`` x
    ``points`` locations: the shared Linear(2, dim) embedding of the points, a transformer layer
    (one for all iterations with ``share``) and a Linear(dim, 2) offset predictor (all but the
    last iteration; one with ``share``). ``count`` reports the extractor with the embedding
    (``embed``) and the iterations apart (``sampling``)."""

    dim: int
    heads: int
    mlp: int
    points: int
    iters: int
    share: bool
    fe_width: int
    qkv_bias: bool
    image_size: int
    in_chans: int

    @property
    def bottlenecks(self) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """(c_in, mid, c_out) of ``layer1`` and ``layer2``."""
        return (64, 64, self.fe_width), (self.fe_width, 64, self.dim)

    @property
    def layers(self) -> tuple[LayerPart, ...]:
        """The layer of each iteration (with ``share``, the same weights each time)."""
        n = self.points * self.points
        return tuple(
            LayerPart(f"sampling.layer{t + 1}", n, n, self.dim, self.heads, self.mlp, self.qkv_bias)
            for t in range(self.iters)
        )

    @property
    def offsets(self) -> int:
        """Offset predictors (Linear(dim, 2) modules)."""
        return 0 if self.iters == 1 else (1 if self.share else self.iters - 1)

    @property
    def as_stage(self) -> Stage:
        """The iterations' layers as a stage (a row of ``funnelbench parse``'s table)."""
        return Stage(self.iters, self.points * self.points, self.dim, self.mlp, self.heads, qkv_bias=self.qkv_bias)

    @property
    def conv_side(self) -> int:
        """Side of the map after the 7x7/2 convolution."""
        return unfold_length(self.image_size, 7, 2, 3)

    @property
    def feature_side(self) -> int:
        """Side of the feature map (after the max pool 3x3/2) that the points sample."""
        return ps_feature_size(self.image_size)

    def conv_shapes(self) -> list[Shape]:  # conv1, bn1
        return [(64, self.in_chans, 7, 7)] + norm_shapes(64)

    def feature_shapes(self) -> list[Shape]:
        return self.conv_shapes() + [s for b in self.bottlenecks for s in bottleneck_shapes(*b)]

    def sampling_shapes(self) -> list[Shape]:  # pos_layer, layers, offsets
        layers = self.layers[:1] if self.share else self.layers
        return (
            linear_shapes(2, self.dim)
            + [s for layer in layers for s in layer.param_shapes()]
            + linear_shapes(self.dim, 2) * self.offsets
        )

    def param_shapes(self) -> list[Shape]:
        return self.feature_shapes() + self.sampling_shapes()

    @property
    def feature_macs(self) -> int:
        hw = self.feature_side**2
        macs = self.in_chans * 49 * 64 * self.conv_side**2
        return macs + sum(bottleneck_macs(*b, hw) for b in self.bottlenecks)

    @property
    def sampling_macs(self) -> int:
        """Each iteration's layer and points' embedding; the offsets of all but the last."""
        n, d = self.points * self.points, self.dim
        return sum(x.macs + n * 2 * d for x in self.layers) + (self.iters - 1) * n * d * 2

    @property
    def macs(self) -> int:
        return self.feature_macs + self.sampling_macs


def make_stem_part(layout: Layout, in_chans: int = 3) -> PatchStemPart | T2TStemPart | PSStemPart:
    stem, first = layout.stem, layout.stages[0]
    if stem.kind == "patch":
        return PatchStemPart(layout.patch_size, first.hidden, in_chans, layout.image_size, layout.num_patches)
    if stem.is_t2t:
        return T2TStemPart(layout.image_size, stem.token_dim, first.hidden, stem.kind == "t2t", in_chans)
    return PSStemPart(
        first.hidden,
        first.heads,
        first.mlp,
        stem.points,
        stem.iters,
        stem.share,
        stem.fe_width,
        first.qkv_bias,
        layout.image_size,
        in_chans,
    )


# ----------------------------------------------------------------------------- the whole model


@dataclass(frozen=True)
class ModelParts:
    """A layout's parts (see the module docstring)."""

    stem: PatchStemPart | T2TStemPart | PSStemPart
    embed: EmbedPart
    stages: tuple[StageParts, ...]
    head: HeadPart

    @property
    def transitions(self) -> list[TransitionPart]:
        return [s.transition for s in self.stages if s.transition is not None]

    @property
    def layers(self) -> list[LayerPart]:
        return [x for s in self.stages for x in s.layers]

    def param_shapes(self) -> list[Shape]:
        """Every parameter's shape in ``model.parameters()`` order, the order in which
        :class:`~funnelbench.models.FunnelViT` registers them: its own class token and position
        embedding, the stem, the blocks, the transitions, the final norm and the classifier."""
        parts = [self.embed, self.stem, *self.layers, *self.transitions, self.head]
        return [s for part in parts for s in part.param_shapes()]

    @property
    def params(self) -> int:
        return numel(self.param_shapes())


def describe(layout: Layout, num_classes: int = 1000, in_chans: int = 3) -> ModelParts:
    """The parts of a (valid) layout."""
    first, last = layout.stages[0], layout.stages[-1]
    prefix = layout.num_prefix_tokens
    stages, prev = [], None
    for i, stage in enumerate(layout.stages):
        stages.append(stage_parts(i, prev, stage, prefix))
        prev = stage
    return ModelParts(
        stem=make_stem_part(layout, in_chans),
        embed=EmbedPart(first.tokens, first.hidden, cls=bool(prefix), pos=layout.pos),
        stages=tuple(stages),
        head=HeadPart(last.tokens, last.hidden, layout.head, num_classes),
    )
