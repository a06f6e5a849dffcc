"""The layout grammar: text <-> :class:`Layout`.

A layout names the stages ("blocks" in the Funnel-ViT paper) of a token-pooling Vision
Transformer. ``B6(197)-6(99)`` is 6 layers on 197 tokens, then a pool, then 6 layers on 99
tokens. Token counts include the class token (197 = 14 * 14 + 1 for 224 px images and 16 px
patches); pooling acts on the patch tokens only (196 -> 98 -> 49 gives 197 -> 99 -> 50).

Grammar (EBNF; spaces are ignored everywhere)::

    layout  = [ "B" ] stage { "-" stage } { "," option } ;
    stage   = LAYERS "(" TOKENS { "," option } ")" ;
    option  = FLAG | KEY INT | KEY "=" VALUE ;

Options inside a stage's parentheses apply to that stage; options after the last stage are
defaults for every stage (a stage's own option wins). ``KEY INT`` and ``KEY=INT`` are the same
(``h1024`` == ``hidden=1024``). The options (the table below is filled in from :data:`OPTIONS`,
the one place they are written, when the module is imported, as are the table in docs/grammar.md and
``funnelbench parse --help``; ``help(funnelbench.layout)`` shows it):

{OPTION_TABLE}

A stage whose hidden width differs from the previous stage's is entered through a linear
projection of the (unpooled) sequence. Examples::

    B12(197)                                      ViT-B/16
    B12(197), h384                                DeiT-S (6 heads, MLP 1536 follow from the width)
    B6(197)-6(99), max                            Funnel-ViT, max pooling
    B6(197, m4096)-6(99)-2(50, m1536)             re-invested widths per stage
    B4(65)-4(33), h192, img32, patch4             a CIFAR-size model: 8 x 8 patches + class token
    B1(196)-11(97), max, k3, nopqo, newpos, h384, avg          HVT-S-1
    B14(197), h384, m1152, noqkvbias, t2t                      T2T-ViT-14
    B10(197), h384, m1152, noqkvbias, ps14                     PS-ViT-B/14
    B7(197)-7(99), h384, m1152, t2t                            a T2T stem with funnel stages
    B4(197)-4(50, mean2d)-4(17, mean2d), h384                   2D pooling: 14x14 -> 7x7 -> 4x4

``str(layout)`` is the canonical form: defaults left out, shared values written once as a
global option; it parses back to an equal :class:`Layout`.

A :class:`Layout` built in code (``dataclasses.replace``, a search space) is checked by
:func:`validate_layout` with the checks the parser runs as it builds one; ``count``,
``build_model``, ``estimate_memory`` and ``profile`` run it on every :class:`Layout` they get.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections import Counter
from dataclasses import dataclass, field, replace

from .errors import LayoutError, UsageError

DEFAULT_HIDDEN = 768
DEFAULT_MLP_RATIO = 4
DEFAULT_HEAD_DIM = 64
DEFAULT_IMAGE_SIZE = 224
DEFAULT_PATCH_SIZE = 16
DEFAULT_T2T_DIM = 64  # T2T-ViT's token_dim
DEFAULT_PS_ITERS = 4  # PS-ViT's N
DEFAULT_PS_FE_WIDTH = 256  # ResNet-50's layer1 output width, PS-ViT-B's first bottleneck
T2T_STRIDE = 16  # the three soft splits have strides 4, 2 and 2
PS_STRIDE = 4  # conv 7x7 stride 2 + max pool stride 2
MAX_INT = 1_000_000  # larger numbers are typos, not models

POOL_OPS = ("mean", "max", "mean2d", "max2d")
HEADS = ("cls", "avg")
STEMS = ("patch", "t2t", "t2t_t", "ps")
POS_KINDS = ("learned", "sincos", "none")
NO_POOL = "none"


@dataclass(frozen=True)
class Stage:
    """One stage: ``layers`` identical transformer layers on ``tokens`` tokens.

    ``pool``/``stride``/``kernel`` describe the pool that enters the stage (``"none"``/1/0 when
    the token count is unchanged; ``kernel`` 0 means a window as wide as the stride), ``pqo``
    whether the stage's first layer uses pool-query-only attention, ``newpos`` whether a new
    learned position embedding is added after the pool.
    """

    layers: int
    tokens: int
    hidden: int = DEFAULT_HIDDEN
    mlp: int = DEFAULT_HIDDEN * DEFAULT_MLP_RATIO
    heads: int = DEFAULT_HIDDEN // DEFAULT_HEAD_DIM
    pool: str = NO_POOL
    stride: int = 1
    pqo: bool = False
    kernel: int = 0
    newpos: bool = False
    qkv_bias: bool = True

    @property
    def pools(self) -> bool:
        return self.pool != NO_POOL

    @property
    def pool2d(self) -> bool:
        return self.pool.endswith("2d")

    @property
    def pool_op(self) -> str:
        """``mean`` or ``max`` (without the ``2d``)."""
        return self.pool.removesuffix("2d")

    @property
    def pool_label(self) -> str:
        """'mean/2 pqo', 'max/2 k3 newpos', 'mean2d/2'; '-' for a stage that does not pool."""
        if not self.pools:
            return "-"
        words = [f"{self.pool}/{self.stride}"]
        if self.kernel:
            words.append(f"k{self.kernel}")
        if self.pqo:
            words.append("pqo")
        if self.newpos:
            words.append("newpos")
        return " ".join(words)


@dataclass(frozen=True)
class Stem:
    """How the image becomes tokens. ``patch``: a p x p convolution with stride p.
    ``t2t``/``t2t_t``: Tokens-to-Token with Performer/Transformer layers of ``token_dim``-wide
    tokens. ``ps``: progressive sampling of ``points`` x ``points`` locations on a conv feature
    map, ``iters`` times (one shared layer with ``share``)."""

    kind: str = "patch"
    token_dim: int = DEFAULT_T2T_DIM
    points: int = 0
    iters: int = DEFAULT_PS_ITERS
    share: bool = False
    fe_width: int = DEFAULT_PS_FE_WIDTH

    @property
    def is_t2t(self) -> bool:
        return self.kind in ("t2t", "t2t_t")

    @property
    def default_pos(self) -> str:
        """The position embedding each family uses: learned (ViT), fixed sinusoid (T2T-ViT),
        none (PS-ViT, whose sampled tokens carry an embedding of their coordinates)."""
        return {"patch": "learned", "t2t": "sincos", "t2t_t": "sincos", "ps": "none"}[self.kind]


@dataclass(frozen=True)
class Layout:
    """A whole model: stages plus the input geometry, the stem, the position embedding and
    the head. Parse it from text with :func:`parse_layout`; ``str(layout)`` gives the
    canonical text back."""

    stages: tuple[Stage, ...]
    image_size: int = DEFAULT_IMAGE_SIZE
    patch_size: int = DEFAULT_PATCH_SIZE
    head: str = "cls"
    stem: Stem = Stem()
    pos: str = "learned"

    def __str__(self) -> str:
        return format_layout(self)

    @property
    def depth(self) -> int:
        """Transformer layers in the stages (the stem's own layers are not included)."""
        return sum(s.layers for s in self.stages)

    @property
    def grid(self) -> int:
        """Tokens per side of the square grid the stem produces."""
        return stem_grid(self.stem, self.image_size, self.patch_size)

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens that are never pooled (the class token)."""
        return 1 if self.head == "cls" else 0

    def at_image_size(self, image_size: int, patch_size: int | None = None) -> "Layout":
        """The same model at another resolution: every stage keeps its pool (operator, stride,
        window) and its token count follows the new grid (``B6(197)-6(99)`` at 384 px is
        ``B6(577)-6(289)``). A PS-ViT stem samples the same n x n points at any size."""
        for value, what in ((image_size, "image size"), (patch_size or self.patch_size, "patch size")):
            problem = _int_problem(value, what)
            if problem:
                raise LayoutError(problem, expected=f"a positive {what}")
        patch = patch_size or self.patch_size
        if self.stem.kind == "patch" and image_size % patch:
            raise LayoutError(f"image size {image_size} is not a multiple of patch size {patch}")
        if self.stem.kind != "patch" and patch != self.patch_size:
            raise LayoutError(f"the {self.stem.kind} stem has no patch size; leave patch_size out")
        check_stem_geometry(self.stem, image_size)
        prefix = self.num_prefix_tokens
        side = stem_grid(self.stem, image_size, patch)
        patches = side * side
        stages = []
        for s in self.stages:
            if s.pools:
                if s.pool2d:
                    side = pooled_length(side, s.stride, s.kernel)
                    patches = side * side
                else:
                    patches = pooled_length(patches, s.stride, s.kernel)
                if patches < 1:
                    raise LayoutError(
                        f"at {image_size} px the {s.pool_label} pool into a stage of {self} leaves no tokens"
                    )
            stages.append(replace(s, tokens=patches + prefix))
        return parse_layout(format_layout(replace(self, stages=tuple(stages), image_size=image_size, patch_size=patch)))


# ----------------------------------------------------------------------------- geometry


def unfold_length(n: int, kernel: int, stride: int, padding: int) -> int:
    """Positions per side of ``nn.Unfold`` / a convolution / a pool (floor mode)."""
    return (n + 2 * padding - kernel) // stride + 1


def stem_grid(stem: Stem, image_size: int, patch_size: int = DEFAULT_PATCH_SIZE) -> int:
    """Tokens per side that a stem makes of an image."""
    if stem.kind == "ps":
        return stem.points
    if stem.is_t2t:  # soft splits: unfold(7, 4, 2), unfold(3, 2, 1), unfold(3, 2, 1)
        n = unfold_length(image_size, 7, 4, 2)
        return unfold_length(unfold_length(n, 3, 2, 1), 3, 2, 1)
    return image_size // patch_size


def ps_feature_size(image_size: int) -> int:
    """Side of PS-ViT's feature map: conv 7x7/2 (padding 3), then max pool 3x3/2 (padding 1)."""
    return unfold_length(unfold_length(image_size, 7, 2, 3), 3, 2, 1)


def check_stem_geometry(stem: Stem, image_size: int) -> None:
    """LayoutError (without a position) if the stem cannot take images of this size."""
    problem = stem_geometry_problem(stem, image_size)
    if problem:
        raise LayoutError(problem[0] + "; expected " + problem[1])


def stem_geometry_problem(stem: Stem, image_size: int) -> tuple[str, str] | None:
    """(problem, expected) when the stem cannot take ``image_size`` px images, else None."""
    if stem.is_t2t and image_size % T2T_STRIDE:
        lo = max(T2T_STRIDE, image_size // T2T_STRIDE * T2T_STRIDE)
        return (
            f"the T2T stem cannot split {image_size} px images into a whole grid: its soft splits have "
            f"strides 4, 2 and 2, so the image size must be a multiple of {T2T_STRIDE}",
            f"img{lo} or img{lo + T2T_STRIDE}",
        )
    if stem.kind == "ps":
        if image_size % PS_STRIDE:
            return (
                f"the PS stem's feature map is img / {PS_STRIDE}, and {image_size} is not a multiple of {PS_STRIDE}",
                f"an image size that is a multiple of {PS_STRIDE}",
            )
        feat = ps_feature_size(image_size)
        if stem.points > feat:
            return (
                f"a sampling grid of {stem.points}x{stem.points} points is larger than the {feat}x{feat} "
                f"feature map of {image_size} px images",
                f"ps<int> of at most {feat}, or a larger img",
            )
    return None


def stem_text(layout: Layout) -> str:
    """'16 px patches', 'Tokens-to-Token stem (Performer, 64-wide tokens)', ... for summaries."""
    stem = layout.stem
    if stem.is_t2t:
        kind = "Performer" if stem.kind == "t2t" else "Transformer"
        return f"Tokens-to-Token stem ({kind}, {stem.token_dim}-wide tokens)"
    if stem.kind == "ps":
        shared = ", shared" if stem.share else ""
        return f"progressive sampling of {stem.points}x{stem.points} points ({stem.iters} iterations{shared})"
    return f"{layout.patch_size} px patches"


# ----------------------------------------------------------------------------- pooling arithmetic


def pooled_length(n: int, stride: int, kernel: int = 0) -> int:
    """Length of ``n`` tokens (or grid side) after pooling with this stride.

    ``kernel`` 0: window = stride, ceil mode (a last, shorter window is pooled on its own).
    ``kernel`` k: windows of k, no padding, floor mode (``nn.MaxPool1d(k, stride)``); 0 when
    the window is wider than the input.
    """
    if kernel:
        return (n - kernel) // stride + 1 if n >= kernel else 0
    return -(-n // stride)


def infer_stride(prev: int, new: int, kernel: int = 0) -> int | None:
    """The smallest stride that pools ``prev`` tokens to ``new`` tokens, or None."""
    if new < 1 or new > prev:
        return None
    if kernel:
        if prev < kernel:
            return None
        stride = (prev - kernel) // new + 1  # the smallest s with (prev - k) // s < new
    else:
        stride = -(-prev // new)
    return stride if pooled_length(prev, stride, kernel) == new else None


def reachable_lengths(prev: int, prefix: int, limit: int = 5, kernel: int = 0, side: int | None = None) -> str:
    """'99 (stride 2), 67 (stride 3), ...' for an error message; counts include ``prefix``.

    ``side``: the pool is 2D over a ``side`` x ``side`` grid (``prev`` = side**2).
    """
    out = [f"{prev + prefix} (no pooling)"]
    seen = {prev}
    n_max = side if side else prev
    for stride in range(1, n_max + 1):
        n = pooled_length(side, stride, kernel) ** 2 if side else pooled_length(prev, stride, kernel)
        if n < 1 or n in seen:
            continue
        seen.add(n)
        out.append(f"{n + prefix} (stride {stride})")
        if len(out) == limit:
            break
    return ", ".join(out) + (", ..." if len(out) == limit else "")


# ----------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class LayoutProblem:
    """What is wrong with a layout: ``message`` and ``expected`` for the error, and where:
    ``stage`` (0-based; None for the whole model) and the ``fields`` to blame, most specific
    first (the parser points its column at the first one the text wrote)."""

    message: str
    expected: str
    stage: int | None = None
    fields: tuple[str, ...] = ()


def validate_layout(layout: Layout) -> Layout:
    """Check a :class:`Layout` built in code (``dataclasses.replace``, a search space) as the
    parser checks text, and return it unchanged; :class:`LayoutError` names the first problem.

    A layout passes exactly when ``parse_layout(format_layout(layout)) == layout``: every
    number is an int in range, the widths divide into the heads, the token counts follow from
    the stem and from each pool's operator, stride and window (the stride the grammar infers),
    a stage that does not pool has no pool settings, and the stem's settings fit its kind and
    the image size. Pure arithmetic (a few microseconds), so ``count`` and ``build_model`` run
    it on every :class:`Layout` they are given.
    """
    problem = layout_problem(layout)
    if problem is not None:
        try:
            text = f" (in a Layout built in code; its text is {format_layout(layout)!r})"
        except Exception:  # noqa: BLE001 - fields of the wrong type may not format at all
            text = ""
        raise LayoutError(problem.message + text, expected=problem.expected)
    return layout


def layout_problem(layout) -> LayoutProblem | None:
    """The first problem of ``layout`` (see :func:`validate_layout`), or None. The parser runs
    the same two parts, :func:`_model_problem` and :func:`_stage_problem`, as it goes."""
    if not isinstance(layout, Layout):
        return LayoutProblem(
            f"a layout must be a Layout, got {type(layout).__name__}", "a Layout or parse_layout(text)"
        )
    problem = _model_problem(layout.stem, layout.image_size, layout.patch_size, layout.head, layout.pos)
    if problem:
        return problem
    stages = layout.stages
    if not isinstance(stages, tuple) or not stages or not all(isinstance(s, Stage) for s in stages):
        return LayoutProblem(
            f"Layout.stages must be a non-empty tuple of Stage, got {stages!r}",
            "at least one Stage",
            fields=("stages",),
        )
    walk = _PoolWalk(layout)
    for index, stage in enumerate(stages):
        problem = _stage_problem(index, stage, walk)
        if problem:
            return problem
    return None


def _int_problem(value, what: str, minimum: int = 1, maximum: int = MAX_INT) -> str | None:
    if not isinstance(value, int) or isinstance(value, bool):
        return f"{what} must be an int, got {value!r}"
    if not minimum <= value <= maximum:
        return f"{what} must be from {minimum} to {maximum}, got {value}"
    return None


def check_int(value, what: str, minimum: int = 1, maximum: int = MAX_INT) -> int:
    """``value`` if it is an int from ``minimum`` to ``maximum``, else :class:`UsageError`
    naming ``what``: the library's check of counts such as a batch size or a number of
    classes (larger than a million is a typo, as in a layout)."""
    problem = _int_problem(value, what, minimum, maximum)
    if problem:
        raise UsageError(problem)
    return value


def _model_problem(stem: Stem, image: int, patch: int, head: str, pos: str) -> LayoutProblem | None:
    """Problems of the stem, the image geometry, the head and the position embedding."""
    for value, what, name in ((image, "image size", "image_size"), (patch, "patch size", "patch_size")):
        problem = _int_problem(value, what)
        if problem:
            return LayoutProblem(problem, f"img<int> / patch<int> of at most {MAX_INT}", fields=(name,))
    if head not in HEADS:
        return LayoutProblem(f"head {head!r} is not a head", " or ".join(HEADS), fields=("head",))
    if pos not in POS_KINDS:
        return LayoutProblem(f"position embedding {pos!r} is not one", ", ".join(POS_KINDS), fields=("pos_embed",))
    if not isinstance(stem, Stem) or stem.kind not in STEMS:
        return LayoutProblem(
            f"stem {stem!r} is not a Stem of kind {', '.join(STEMS)}", "Stem(kind=...)", fields=("stem",)
        )
    for name, minimum in (("token_dim", 1), ("points", 0), ("iters", 1), ("fe_width", 1)):
        problem = _int_problem(getattr(stem, name), f"Stem.{name}", minimum)
        if problem:
            return LayoutProblem(problem, f"an int of at least {minimum}", fields=(name,))
    if not isinstance(stem.share, bool):
        return LayoutProblem(f"Stem.share must be True or False, got {stem.share!r}", "a bool", fields=("share",))
    # Settings of another kind of stem: the text cannot write them, so they would be lost.
    unused = {
        "token_dim": DEFAULT_T2T_DIM,
        "points": 0,
        "iters": DEFAULT_PS_ITERS,
        "share": False,
        "fe_width": DEFAULT_PS_FE_WIDTH,
    }
    used = {"patch": (), "t2t": ("token_dim",), "t2t_t": ("token_dim",), "ps": ("points", "iters", "share", "fe_width")}
    for name, default in unused.items():
        if name not in used[stem.kind] and getattr(stem, name) != default:
            return LayoutProblem(
                f"the {stem.kind} stem has no {name} (Stem.{name}={getattr(stem, name)!r})",
                f"Stem.{name}={default!r} (the default)",
                fields=(name,),
            )
    if stem.kind == "ps" and stem.points < 1:
        return LayoutProblem(
            "the PS stem samples no points (Stem.points=0)", "ps<int> of at least 1", fields=("points",)
        )
    if stem.kind != "patch" and patch != DEFAULT_PATCH_SIZE:
        return LayoutProblem(
            f"the {stem.kind} stem has no patch size, and this layout sets {patch}",
            f"patch size {DEFAULT_PATCH_SIZE} (the default)",
            fields=("patch_size",),
        )
    if stem.kind == "patch" and image % patch:
        return LayoutProblem(
            f"image size {image} is not a multiple of patch size {patch}",
            "img and patch such that img / patch is a whole number of patches",
            fields=("image_size", "patch_size"),
        )
    if stem.kind == "t2t" and stem.token_dim == 1:
        return LayoutProblem(
            "the Performer T2T layers use tok / 2 random features, so tok1 leaves none",
            "tok2 or more",
            fields=("token_dim",),
        )
    problem = stem_geometry_problem(stem, image)
    if problem:
        # blame the sampling grid when it is too large, else the image size
        blame = "points" if stem.kind == "ps" and image % PS_STRIDE == 0 else "image_size"
        return LayoutProblem(problem[0], problem[1], fields=(blame,))
    return None


class _PoolWalk:
    """What the stage checks carry from one stage to the next: the previous stage, and the
    patch tokens per side while they still form a square grid."""

    def __init__(self, layout: Layout):
        self.layout = layout
        self.prefix = layout.num_prefix_tokens
        self.grid = stem_grid(layout.stem, layout.image_size, layout.patch_size)
        self.side: int | None = self.grid
        self.prev: Stage | None = None

    def describe_stem(self) -> str:
        layout, grid = self.layout, self.grid
        cls = " + class token" if self.prefix else ""
        if layout.stem.kind == "ps":
            return f"ps{layout.stem.points} samples {grid}x{grid} points{cls}"
        if layout.stem.is_t2t:
            return f"the T2T stem on img{layout.image_size} gives {grid}x{grid} tokens{cls}"
        return f"img{layout.image_size} with patch{layout.patch_size} gives {grid}x{grid} patches{cls}"


def _stage_problem(index: int, s: Stage, walk: _PoolWalk) -> LayoutProblem | None:
    """Problems of stage ``index`` after the stages before it (``walk`` moves on to it when
    there are none)."""
    n = index + 1
    for name, what in (
        ("layers", "number of layers"),
        ("tokens", "token count"),
        ("hidden", "hidden width"),
        ("mlp", "MLP width"),
        ("heads", "number of heads"),
        ("stride", "stride"),
    ):
        problem = _int_problem(getattr(s, name), what)
        if problem:
            return LayoutProblem(f"stage {n}: {problem}", f"a positive {what}", index, (name,))
    problem = _int_problem(s.kernel, "pooling window", 0)
    if problem:
        return LayoutProblem(f"stage {n}: {problem}", "0 (window = stride) or a positive window", index, ("kernel",))
    for name in ("pqo", "newpos", "qkv_bias"):
        if not isinstance(getattr(s, name), bool):
            return LayoutProblem(
                f"stage {n}: Stage.{name} must be True or False, got {getattr(s, name)!r}", "a bool", index, (name,)
            )
    if s.hidden % s.heads:
        return LayoutProblem(
            f"stage {n}: hidden width {s.hidden} is not divisible by {s.heads} heads",
            f"a width that is a multiple of the heads, or heads given with a<int> "
            f"(e.g. a{_divisor_near(s.hidden, s.heads)})",
            index,
            ("heads", "hidden"),
        )
    prev, prefix = walk.prev, walk.prefix
    if prev is None:
        grid_tokens = walk.grid * walk.grid + prefix
        if s.tokens != grid_tokens:
            return LayoutProblem(
                f"the first stage has {s.tokens} tokens, but {walk.describe_stem()} = {grid_tokens}",
                f"{grid_tokens}, or img/patch/stem options that give {s.tokens} tokens",
                index,
                ("tokens",),
            )
    if s.pool not in (NO_POOL, *POOL_OPS):
        return LayoutProblem(
            f"stage {n}: pool {s.pool!r} is not a pooling operator",
            f"one of {', '.join(POOL_OPS)}, or {NO_POOL!r} on a stage that keeps the token count",
            index,
            ("pool",),
        )
    if prev is None or s.tokens == prev.tokens:
        settings = {"pool": NO_POOL, "stride": 1, "kernel": 0, "pqo": False, "newpos": False}
        for name, default in settings.items():
            if getattr(s, name) != default:
                why = (
                    "it is the first stage"
                    if prev is None
                    else f"its token count equals the previous stage's ({s.tokens})"
                )
                return LayoutProblem(
                    f"stage {n} does not pool ({why}), so Stage.{name}={getattr(s, name)!r} has no effect",
                    f"{name}={default!r}, or a smaller token count",
                    index,
                    (name,),
                )
    else:
        if not s.pools:
            return LayoutProblem(
                f"stage {n} has {s.tokens} tokens after {prev.tokens}, so it pools, but its pool is {NO_POOL!r}",
                f"one of {', '.join(POOL_OPS)}",
                index,
                ("pool",),
            )
        stride = infer_pool_stride(index, prev.tokens, s.tokens, prefix, walk.side, s.pool, s.kernel)
        if isinstance(stride, LayoutProblem):
            return stride
        if s.stride != stride:
            return LayoutProblem(
                f"stage {n}: stride {s.stride} does not match the layout: {s.pool} pooling from "
                f"{prev.tokens} to {s.tokens} tokens has stride {stride}",
                f"stride={stride} (the grammar infers the smallest stride)",
                index,
                ("stride",),
            )
        walk.side = pooled_length(walk.side, stride, s.kernel) if s.pool2d else None
    walk.prev = s
    return None


def infer_pool_stride(
    index: int, prev_tokens: int, tokens: int, prefix: int, side: int | None, op: str, kernel: int
) -> int | LayoutProblem:
    """The stride of the ``op`` pool (window ``kernel``, 0 = the stride) that makes stage
    ``index`` of ``tokens`` tokens from the ``prev_tokens`` before it, or why there is none
    (``side``: patch tokens per side while they form a square grid; ``prefix``: class token)."""
    n = index + 1
    if op.endswith("2d") and side is None:
        return LayoutProblem(
            f"stage {n}: {op} pools the patch tokens as a square grid, but a 1D pool before it left them in a sequence",
            "1D pooling (mean or max) here, or 2D pooling in every stage before it",
            index,
            ("pool",),
        )
    n_prev = prev_tokens - prefix
    pool_side = side if op.endswith("2d") else None
    if tokens > prev_tokens:
        return LayoutProblem(
            f"stage {n} has {tokens} tokens, more than the {prev_tokens} before it",
            "a token count that pooling can reach: " + reachable_lengths(n_prev, prefix, kernel=kernel, side=pool_side),
            index,
            ("tokens",),
        )
    if kernel and (pool_side or n_prev) < kernel:
        return LayoutProblem(
            f"stage {n}: a pooling window of {kernel} is wider than the {pool_side or n_prev} patch "
            f"tokens{' per side' if pool_side else ''} before it, so the pool would leave no tokens",
            f"a window of at most {pool_side or n_prev}, fewer pools, or {prev_tokens} tokens (no pooling)",
            index,
            ("kernel",),
        )
    if pool_side:
        new_side = math.isqrt(max(tokens - prefix, 0))
        stride = infer_stride(side, new_side, kernel) if new_side * new_side == tokens - prefix else None
    else:
        stride = infer_stride(n_prev, tokens - prefix, kernel)
    if stride is None:
        what = (f"{op} pooling of the {side}x{side} grid" if pool_side else f"pooling the {n_prev} patch tokens") + (
            (f" in {kernel}x{kernel} windows" if pool_side else f" in windows of {kernel}") if kernel else ""
        )
        return LayoutProblem(
            f"stage {n}: {tokens} tokens cannot be reached from {prev_tokens} by {what} with a whole-number stride",
            "one of " + reachable_lengths(n_prev, prefix, kernel=kernel, side=pool_side),
            index,
            ("tokens",),
        )
    return stride


# ----------------------------------------------------------------------------- tokens


# A number with a fraction is an "int" token too, so that the parser can say it wants an integer.
_TOKEN_RE = re.compile(
    r"\s*(?:(?P<int>\d+(?:\.\d+)?)|(?P<word>[A-Za-z_][A-Za-z0-9_.]*)|(?P<punct>[()\-,=])|(?P<bad>\S))"
)


@dataclass
class _Tok:
    kind: str  # int | word | punct | bad | end
    text: str
    pos: int


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i = 0
    while i < len(text):
        m = _TOKEN_RE.match(text, i)
        if m is None:  # only trailing whitespace is left
            break
        kind = m.lastgroup
        toks.append(_Tok(kind, m.group(kind), m.start(kind)))
        i = m.end()
    toks.append(_Tok("end", "", len(text.rstrip())))
    return toks


# ----------------------------------------------------------------------------- options


@dataclass
class _Opts:
    """Options as written (None = not given), with the column of each for error messages."""

    hidden: int | None = None
    mlp: int | None = None
    heads: int | None = None
    pool: str | None = None
    kernel: int | None = None
    pqo: bool | None = None
    newpos: bool | None = None
    qkv_bias: bool | None = None
    image_size: int | None = None
    patch_size: int | None = None
    stem: str | None = None
    points: int | None = None
    token_dim: int | None = None
    iters: int | None = None
    share: bool | None = None
    fe_width: int | None = None
    pos_embed: str | None = None
    head: str | None = None
    pos: dict = field(default_factory=dict)
    written: dict = field(default_factory=dict)


_ON_OFF = ("on", "off")


@dataclass(frozen=True)
class Option:
    """One row of the grammar's option table, :data:`OPTIONS`: how the text writes it, where,
    what it means, and what the parser sets from it.

    ``keys`` take a value, ``values`` says which: ``"int"`` (``h768``, ``hidden=768``) or the
    words accepted after ``KEY=`` (``pool=max``). ``flags`` are words that set a value alone
    (``noqkvbias``). ``where``: ``stage, global`` (inside a stage's parentheses or after the
    last stage), ``global`` (after the last stage), ``global, T2T`` / ``global, PS`` (with that
    stem only). ``meaning`` is markdown, its default in parentheses.
    """

    sets: str  # the parser's field (see _Opts)
    where: str
    meaning: str
    keys: tuple[str, ...] = ()
    values: str | tuple[str, ...] = "int"
    flags: dict = field(default_factory=dict)
    hint: tuple[str, ...] | None = None  # the forms an error's list of options names (default: all of them)

    @property
    def forms(self) -> tuple[str, ...]:
        """As the table writes it: ``("h<int>",)``, ``("qkvbias", "noqkvbias")``, ``("pos=learned|sincos|none",)``."""
        if self.flags:
            return tuple(self.flags)
        if self.values == "int":
            return (f"{self.keys[0]}<int>",)
        return (f"{self.keys[0]}={'|'.join(self.values)}",)

    @property
    def long_form(self) -> str | None:
        """``hidden=``, ``pool=mean|max|mean2d|max2d``: the KEY=VALUE form, when the table's form is another."""
        if not self.keys or self.forms[0].startswith(self.keys[-1] + "="):
            return None
        return f"{self.keys[-1]}=" + ("" if self.values == "int" else "|".join(self.values))


# The option table, written once: the parser's tables below, the table in this module's
# docstring, `funnelbench parse --help` and the table in docs/grammar.md are all made from it
# (tests/test_grammar_options.py checks docs/grammar.md's).
OPTIONS = (
    Option("hidden", "stage, global", "hidden width (768)", keys=("h", "hidden")),
    Option("mlp", "stage, global", "MLP width (4 x hidden: 3072 for h768)", keys=("m", "mlp")),
    Option(
        "heads",
        "stage, global",
        "attention heads (hidden / 64: 12 for h768, 16 for h1024, 6 for h384)",
        keys=("a", "heads"),
    ),
    Option(
        "qkv_bias",
        "stage, global",
        "bias in the q, k, v projection (`qkvbias`, as ViT and HVT; T2T-ViT and PS-ViT have none)",
        keys=("qkvbias",),
        values=_ON_OFF,
        flags={"qkvbias": True, "noqkvbias": False},
    ),
    Option(
        "pool",
        "stage, global",
        "operator of the pool entering the stage (`mean`, the paper's better one): 1D pooling of the patch "
        "tokens, stride inferred from the two token counts. Without `k`, window = stride, ceil mode as in "
        "Funnel-Transformer (49 -> 25 is stride 2)",
        keys=("pool",),
        values=POOL_OPS,
        flags={"mean": "mean", "max": "max"},
    ),
    Option(
        "pool",
        "stage, global",
        "2D pooling of the patch tokens as their square grid, in raster order (14 x 14 -> 7 x 7: 197 -> 50); "
        "every pool before it must be 2D too",
        flags={"mean2d": "mean2d", "max2d": "max2d"},
    ),
    Option(
        "kernel",
        "stage, global",
        "pooling window of k tokens (k x k in 2D), no padding, floor mode, as `nn.MaxPool1d(k, stride)`: HVT's "
        "`max, k3` pools 196 -> 97 -> 48 -> 23 -> 11 with stride 2 (default: window = stride)",
        keys=("k", "kernel"),
    ),
    Option(
        "pqo",
        "stage, global",
        "pool-query-only attention in the first layer after a pool: queries from the pooled sequence, keys and "
        "values from the unpooled one (`pqo`)",
        keys=("pqo",),
        values=_ON_OFF,
        flags={"pqo": True, "nopqo": False},
    ),
    Option(
        "newpos",
        "stage, global",
        "a new learned position embedding (trunc-normal 0.02) added to the pooled sequence, as HVT does after "
        "every pool (`nonewpos`)",
        keys=("newpos",),
        values=_ON_OFF,
        flags={"newpos": True, "nonewpos": False},
    ),
    Option("image_size", "global", "image size in px (224)", keys=("img",)),
    Option("patch_size", "global", "patch stem: p x p patches (16)", keys=("patch",)),
    Option(
        "stem",
        "global",
        "Tokens-to-Token stem with Performer (`t2t`) or Transformer (`t2t_t`) layers: unfold 7/4 -> T2T layer "
        "-> unfold 3/2 -> T2T layer -> unfold 3/2 -> linear, an img/16 grid",
        keys=("stem",),
        values=("patch", "t2t", "t2t_t"),
        flags={"t2t": "t2t", "t2t_t": "t2t_t"},
    ),
    Option("token_dim", "global, T2T", "width of the T2T layers' tokens (64)", keys=("tok",)),
    Option(
        "points",
        "global",
        "progressive-sampling stem (PS-ViT): conv feature map at img/4, n x n sampled points, `iters` "
        "transformer layers with the first stage's widths",
        keys=("ps",),
    ),
    Option("iters", "global, PS", "sampling iterations N (4)", keys=("iters",)),
    Option(
        "share",
        "global, PS",
        "one sampling layer shared by all iterations (PS-ViT's Table 8; `noshare`)",
        keys=("share",),
        values=_ON_OFF,
        flags={"share": True, "noshare": False},
        hint=("share",),
    ),  # the errors have always listed `share` alone
    Option(
        "fe_width",
        "global, PS",
        "output width of the feature extractor's first bottleneck (256, ResNet-50's; the second bottleneck "
        "outputs the first stage's width)",
        keys=("fe",),
    ),
    Option(
        "pos_embed",
        "global",
        "position embedding added after the stem: learned, fixed sinusoid (a buffer, not trained) or none "
        "(learned; `sincos` with a T2T stem; `none` with a PS stem)",
        keys=("pos",),
        values=POS_KINDS,
    ),
    Option(
        "head",
        "global",
        "head on the class token (`cls`), or no class token and the mean of the final tokens (`avg`)",
        keys=("head",),
        values=HEADS,
        flags={"cls": "cls", "avg": "avg"},
    ),
)


def options_markdown(width: int = 95) -> str:
    """The option table and the long forms as markdown, as docs/grammar.md shows them (and
    ``funnelbench parse --help``)."""
    rows = ["| option | where | meaning (default) |", "|---|---|---|"]
    for o in OPTIONS:
        forms = ", ".join(f"`{f}`".replace("|", "\\|") for f in o.forms)  # a | inside a table cell is escaped
        rows.append(f"| {forms} | {o.where} | {o.meaning} |")
    long_forms = ", ".join(f"`{o.long_form}`" for o in OPTIONS if o.long_form)
    return (
        "\n".join(rows)
        + "\n\n"
        + textwrap.fill(f"Long forms: {long_forms}.", width, break_on_hyphens=False, break_long_words=False)
    )


def _options_rst(width: int = 100) -> str:
    """The option table as the module's docstring shows it (a reStructuredText simple table)."""

    def literal(m):  # `code` -> ``code``, its spaces unbreakable while the lines are wrapped
        return "``" + m.group(1).replace(" ", "\0") + "``"

    rst = [(", ".join(f"``{f}``" for f in o.forms), o.where, re.sub(r"`([^`]+)`", literal, o.meaning)) for o in OPTIONS]
    w1, w2 = max(len(r[0]) for r in rst), max(len(r[1]) for r in rst)
    w3 = width - w1 - w2 - 4
    rule = f"{'=' * w1}  {'=' * w2}  {'=' * w3}"
    lines = [rule, f"{'option':<{w1}}  {'where':<{w2}}  meaning (default)", rule]
    for forms, where, meaning in rst:
        wrapped = textwrap.wrap(meaning, w3, break_on_hyphens=False, break_long_words=False)
        wrapped = [line.replace("\0", " ") for line in wrapped]
        lines.append(f"{forms:<{w1}}  {where:<{w2}}  {wrapped[0]}")
        lines += [f"{'':<{w1}}  {'':<{w2}}  {more}" for more in wrapped[1:]]
    long_forms = ", ".join(f"``{o.long_form}``" for o in OPTIONS if o.long_form)
    return "\n".join([*lines, rule, "", ""]) + textwrap.fill(
        f"Long forms: {long_forms}.", width, break_on_hyphens=False, break_long_words=False
    )


if __doc__:  # None under python -OO
    __doc__ = __doc__.replace("{OPTION_TABLE}", _options_rst())

_STEM_OF = {
    "T2T": ("t2t", "t2t or t2t_t"),
    "PS": ("ps", "ps<int>"),
}  # where "global, T2T": (stem kind, how to choose it)

# The parser's tables, made from OPTIONS.
# name -> (field, kind). kind "int" takes a number, anything else is the set of words accepted.
_KEYS = {key: (o.sets, o.values) for o in OPTIONS for key in o.keys}
_FLAGS = {word: (o.sets, value) for o in OPTIONS for word, value in o.flags.items()}
_GLOBAL_ONLY = {o.sets for o in OPTIONS if not o.where.startswith("stage")}
_STEM_ONLY = {o.sets: _STEM_OF[o.where.split(", ")[1]] for o in OPTIONS if o.where.startswith("global, ")}
_POOL_OPTIONS = ("pool", "kernel", "pqo", "newpos")  # only meaningful on a stage that pools


def _hint(options) -> str:
    """'h<int>, m<int>, ... or nonewpos': the options an error says were expected."""
    forms = [form for o in options for form in (o.hint or o.forms)]
    return ", ".join(forms[:-1]) + " or " + forms[-1]


_STAGE_OPTION_HELP = _hint(o for o in OPTIONS if o.where.startswith("stage"))
_GLOBAL_OPTION_HELP = _hint(OPTIONS)


# ----------------------------------------------------------------------------- parser


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0

    # -- helpers
    def peek(self) -> _Tok:
        return self.toks[self.i]

    def next(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def error(self, problem: str, pos: int, expected: str | None = None) -> LayoutError:
        return LayoutError(problem, self.text, pos, expected)

    def unexpected(self, tok: _Tok, expected: str) -> LayoutError:
        if tok.kind == "end":
            return self.error("the layout ends too early", tok.pos, expected)
        return self.error(f"unexpected {tok.text!r}", tok.pos, expected)

    def expect_punct(self, ch: str, expected: str) -> _Tok:
        tok = self.next()
        if tok.kind != "punct" or tok.text != ch:
            raise self.unexpected(tok, expected)
        return tok

    def expect_int(self, what: str, minimum: int = 1) -> tuple[int, int]:
        tok = self.next()
        if tok.kind != "int":
            raise self.unexpected(tok, what)
        return self.check_int(tok.text, tok.pos, what, minimum), tok.pos

    def check_int(self, digits: str, pos: int, what: str, minimum: int = 1) -> int:
        if "." in digits:
            raise self.error(f"{what} {digits} has a fraction", pos, "an integer")
        value = int(digits) if len(digits) <= 9 else MAX_INT + 1
        if value < minimum:
            raise self.error(f"{what} must be at least {minimum}, got {value}", pos, f"a positive {what}")
        if value > MAX_INT:
            raise self.error(f"{what} {digits} is too large", pos, f"a {what} of at most {MAX_INT}")
        return value

    # -- grammar
    def parse(self) -> tuple[list[tuple[int, int, int, int, _Opts]], _Opts]:
        if not self.text.strip():
            raise self.error("the layout is empty", 0, 'stages such as "B12(197)" or "B6(197)-6(99)"')
        tok = self.peek()
        if tok.kind == "word" and re.fullmatch(r"B\d+(\.\d+)?", tok.text):
            # "B6" tokenizes as one word: split it into the "B" and the layer count.
            self.next()
            self.toks.insert(self.i, _Tok("int", tok.text[1:], tok.pos + 1))
        elif tok.kind == "word" and tok.text == "B":
            self.next()
        stages = [self.stage()]
        while self.peek().kind == "punct" and self.peek().text == "-":
            self.next()
            stages.append(self.stage())
        glob = _Opts()
        while self.peek().kind == "punct" and self.peek().text == ",":
            self.next()
            self.option(glob, is_global=True)
        tok = self.peek()
        if tok.kind != "end":
            if tok.kind == "punct" and tok.text == ")":
                raise self.error("unbalanced ')'", tok.pos, "'-' and another stage, ',' and an option, or the end")
            raise self.unexpected(tok, "'-' and another stage, ',' and an option, or the end")
        return stages, glob

    def stage(self):
        start = self.peek().pos
        layers, _ = self.expect_int("number of layers")
        tok = self.next()
        if tok.kind != "punct" or tok.text != "(":
            raise self.unexpected(tok, "'(' and the stage's token count, as in 6(99)")
        tokens, tok_pos = self.expect_int("token count")
        opts = _Opts()
        while True:
            tok = self.next()
            if tok.kind == "punct" and tok.text == ")":
                break
            if tok.kind == "punct" and tok.text == ",":
                self.option(opts, is_global=False)
                continue
            if tok.kind == "end":
                raise self.error("unbalanced '(': the stage is not closed", tok.pos, "')'")
            raise self.unexpected(tok, "',' and an option, or ')'")
        return layers, tokens, start, tok_pos, opts

    def option(self, opts: _Opts, is_global: bool) -> None:
        tok = self.next()
        helptext = _GLOBAL_OPTION_HELP if is_global else _STAGE_OPTION_HELP
        if tok.kind != "word":
            raise self.unexpected(tok, "an option (" + helptext + ")")
        name, pos = tok.text, tok.pos
        if self.peek().kind == "punct" and self.peek().text == "=":  # KEY=VALUE
            self.next()
            if name not in _KEYS:
                raise self.error(f"unknown option {name!r}", pos, helptext)
            fieldname, kind = _KEYS[name]
            vtok = self.next()
            if kind == "int":
                if vtok.kind != "int":
                    raise self.unexpected(vtok, f"a number after '{name}='")
                value = self.check_int(vtok.text, vtok.pos, fieldname.replace("_", " "))
            else:
                if vtok.kind != "word" or vtok.text not in kind:
                    raise self.unexpected(vtok, f"one of {', '.join(kind)} after '{name}='")
                value = {"on": True, "off": False}.get(vtok.text, vtok.text)
        elif name in _FLAGS:
            fieldname, value = _FLAGS[name]
        else:
            m = re.fullmatch(r"([A-Za-z_]+)(\d+(?:\.\d+)?)", name)
            if m is None or m.group(1) not in _KEYS or _KEYS[m.group(1)][1] != "int":
                raise self.error(f"unknown option {name!r}", pos, helptext)
            fieldname = _KEYS[m.group(1)][0]
            value = self.check_int(m.group(2), pos + len(m.group(1)), fieldname.replace("_", " "))
        if not is_global and fieldname in _GLOBAL_ONLY:
            raise self.error(
                f"option {name!r} applies to the whole model, not to one stage",
                pos,
                "it after the last stage, as in 'B12(197), " + name + "'",
            )
        if fieldname in ("stem", "points") and (opts.stem is not None or opts.points is not None):
            first = opts.written.get("stem", opts.written.get("points"))
            raise self.error(
                f"option {name!r} chooses a second stem after {first!r}",
                pos,
                "one stem: patch<int>, t2t, t2t_t or ps<int>",
            )
        if getattr(opts, fieldname) is not None:
            raise self.error(f"option {name!r} repeats a value given before", pos, "each option once")
        setattr(opts, fieldname, value)
        opts.pos[fieldname] = pos
        opts.written[fieldname] = name


def _first(*values):
    """The first value that is not None."""
    return next(v for v in values if v is not None)


def _resolve_stem(parser: _Parser, glob: _Opts) -> tuple[Stem, int, int]:
    """The stem, image size and patch size from the global options (the checks that need the
    text here; the model's own in :func:`_model_problem`)."""
    image = glob.image_size or DEFAULT_IMAGE_SIZE
    patch = glob.patch_size or DEFAULT_PATCH_SIZE
    kind = "ps" if glob.points is not None else (glob.stem or "patch")
    for name, (needs, how) in _STEM_ONLY.items():
        if getattr(glob, name) is not None and not kind.startswith(needs):
            raise parser.error(
                f"option {glob.written[name]!r} applies to the {needs} stem only, and this layout has the {kind} stem",
                glob.pos[name],
                f"the option removed, or {how}",
            )
    if kind != "patch" and glob.patch_size is not None:
        raise parser.error(
            f"option {glob.written['patch_size']!r} sets the patch stem's patch size, and this layout has the {kind} stem",
            glob.pos["patch_size"],
            "the option removed",
        )
    stem = Stem(
        kind,
        token_dim=glob.token_dim or DEFAULT_T2T_DIM,
        points=glob.points or 0,
        iters=glob.iters or DEFAULT_PS_ITERS,
        share=bool(glob.share),
        fe_width=glob.fe_width or DEFAULT_PS_FE_WIDTH,
    )
    return stem, image, patch


def _error_at(
    parser: _Parser, problem: LayoutProblem, glob: _Opts, stage: tuple[int, int, _Opts] | None = None
) -> LayoutError:
    """The problem as a LayoutError at the column of the first blamed field the text wrote
    (in the stage, then globally); else at the stage's token count, or the start."""
    if stage is None:
        written = [glob.pos.get(f) for f in (*problem.fields, "stem", "points")]
        fallback = 0
    else:
        start, tok_pos, opts = stage
        written = [src.pos.get(f) for src in (opts, glob) for f in problem.fields]
        fallback = start if problem.fields[:1] == ("layers",) else tok_pos
    return parser.error(problem.message, next((c for c in written if c is not None), fallback), problem.expected)


def parse_layout(text: str) -> Layout:
    """Parse a layout string such as ``"B6(197, m4096)-6(99)-2(50, m1536)"``.

    The grammar, options and defaults are in this module's docstring (and docs/grammar.md).
    Raises :class:`LayoutError` (a ``ValueError``) that quotes the input, gives the column of
    the problem and says what was expected. The model it describes is checked as it is built,
    by the same checks :func:`validate_layout` runs on a :class:`Layout` built in code.
    """
    if isinstance(text, Layout):
        return text
    if not isinstance(text, str):
        raise LayoutError(f"a layout must be a string, got {type(text).__name__}")
    parser = _Parser(text)
    raw_stages, glob = parser.parse()

    head = glob.head or "cls"
    stem, image, patch = _resolve_stem(parser, glob)
    pos_embed = glob.pos_embed or stem.default_pos
    problem = _model_problem(stem, image, patch, head, pos_embed)
    if problem:
        raise _error_at(parser, problem, glob)
    walk = _PoolWalk(Layout((), image, patch, head, stem, pos_embed))

    stages: list[Stage] = []
    for index, (layers, tokens, start, tok_pos, opts) in enumerate(raw_stages):
        where = (start, tok_pos, opts)
        hidden = opts.hidden or glob.hidden or DEFAULT_HIDDEN
        mlp = opts.mlp or glob.mlp or DEFAULT_MLP_RATIO * hidden
        heads = opts.heads or glob.heads or max(1, hidden // DEFAULT_HEAD_DIM)
        prev = walk.prev
        pool, stride, kernel, pqo, newpos = NO_POOL, 1, 0, False, False
        if prev is not None and tokens != prev.tokens:  # the grammar infers the pool's stride
            pool = opts.pool or glob.pool or "mean"
            kernel = _first(opts.kernel, glob.kernel, 0)
            stride = infer_pool_stride(index, prev.tokens, tokens, walk.prefix, walk.side, pool, kernel)
            if isinstance(stride, LayoutProblem):
                raise _error_at(parser, stride, glob, where)
            pqo, newpos = _first(opts.pqo, glob.pqo, True), _first(opts.newpos, glob.newpos, False)
        qkv_bias = _first(opts.qkv_bias, glob.qkv_bias, True)
        stage = Stage(layers, tokens, hidden, mlp, heads, pool, stride, pqo, kernel, newpos, qkv_bias)
        problem = _stage_problem(index, stage, walk)
        if problem:
            raise _error_at(parser, problem, glob, where)
        for name in _POOL_OPTIONS:
            if getattr(opts, name) is not None and not stage.pools:
                why = (
                    "it is the first stage"
                    if prev is None
                    else f"its token count equals the previous stage's ({tokens})"
                )
                raise parser.error(
                    f"stage {index + 1} does not pool ({why}), so option {opts.written[name]!r} has no effect",
                    opts.pos[name],
                    "the option removed, or a smaller token count",
                )
        stages.append(stage)
    if not any(s.pools for s in stages):  # pool options for every stage, and no stage pools
        for name in _POOL_OPTIONS:
            if getattr(glob, name) is not None:
                why = "one stage" if len(stages) == 1 else "every stage has the token count of the stage before it"
                raise parser.error(
                    f"no stage pools ({why}), so option {glob.written[name]!r} has no effect",
                    glob.pos[name],
                    "the option removed, or a stage with fewer tokens, as in 'B6(197)-6(99), max'",
                )
    return Layout(tuple(stages), image, patch, head, stem, pos_embed)


def _divisor_near(hidden: int, heads: int) -> int:
    """The divisor of ``hidden`` nearest to ``heads`` (for the error message)."""
    for delta in range(hidden):
        for d in (heads - delta, heads + delta):
            if 1 <= d <= hidden and hidden % d == 0:
                return d
    return 1


# ----------------------------------------------------------------------------- canonical form


def _choose_global(values: list, defaults: list):
    """The value to write once as a global option, or None when per-stage options are shorter
    (a tie goes to the global option: ``B6(197)-6(99), max`` as the paper writes it)."""
    if not values:
        return None
    cost_without = sum(v != d for v, d in zip(values, defaults))
    common = Counter(values).most_common(1)[0][0]
    cost_with = 1 + sum(v != common for v in values)
    return common if cost_with <= cost_without else None


def _flag(on: bool, name: str) -> str:
    return name if on else "no" + name


def format_layout(layout: Layout) -> str:
    """The canonical text of a layout (inverse of :func:`parse_layout`)."""
    stages = layout.stages
    per_stage: list[list[str]] = [[] for _ in stages]
    glob: list[str] = []

    pooling = [stages[i] for i, s in enumerate(stages) if s.pools]
    g_pool = _choose_global([s.pool for s in pooling], ["mean"] * len(pooling))
    if g_pool:
        glob.append(g_pool)
    g_kernel = _choose_global([s.kernel for s in pooling], [0] * len(pooling))
    if g_kernel:
        glob.append(f"k{g_kernel}")
    g_pqo = _choose_global([s.pqo for s in pooling], [True] * len(pooling))
    if g_pqo is not None:
        glob.append(_flag(g_pqo, "pqo"))
    g_newpos = _choose_global([s.newpos for s in pooling], [False] * len(pooling))
    if g_newpos is not None:
        glob.append(_flag(g_newpos, "newpos"))

    g_hidden = _choose_global([s.hidden for s in stages], [DEFAULT_HIDDEN] * len(stages))
    g_mlp = _choose_global([s.mlp for s in stages], [DEFAULT_MLP_RATIO * s.hidden for s in stages])
    g_heads = _choose_global([s.heads for s in stages], [max(1, s.hidden // DEFAULT_HEAD_DIM) for s in stages])
    for key, value in (("h", g_hidden), ("m", g_mlp), ("a", g_heads)):
        if value is not None:
            glob.append(f"{key}{value}")
    g_bias = _choose_global([s.qkv_bias for s in stages], [True] * len(stages))
    if g_bias is not None:
        glob.append(_flag(g_bias, "qkvbias"))

    for i, s in enumerate(stages):
        opts = per_stage[i]
        if s.hidden != (g_hidden or DEFAULT_HIDDEN):
            opts.append(f"h{s.hidden}")
        if s.mlp != (g_mlp or DEFAULT_MLP_RATIO * s.hidden):
            opts.append(f"m{s.mlp}")
        if s.heads != (g_heads or max(1, s.hidden // DEFAULT_HEAD_DIM)):
            opts.append(f"a{s.heads}")
        if s.qkv_bias != (g_bias if g_bias is not None else True):
            opts.append(_flag(s.qkv_bias, "qkvbias"))
        if s.pools and s.pool != (g_pool or "mean"):
            opts.append(s.pool)
        if s.pools and s.kernel != (g_kernel or 0):
            opts.append(f"k{s.kernel}")
        if s.pools and s.pqo != (g_pqo if g_pqo is not None else True):
            opts.append(_flag(s.pqo, "pqo"))
        if s.pools and s.newpos != (g_newpos if g_newpos is not None else False):
            opts.append(_flag(s.newpos, "newpos"))

    if layout.image_size != DEFAULT_IMAGE_SIZE:
        glob.append(f"img{layout.image_size}")
    stem = layout.stem
    if stem.kind == "patch" and layout.patch_size != DEFAULT_PATCH_SIZE:
        glob.append(f"patch{layout.patch_size}")
    if stem.is_t2t:
        glob.append(stem.kind)
        if stem.token_dim != DEFAULT_T2T_DIM:
            glob.append(f"tok{stem.token_dim}")
    if stem.kind == "ps":
        glob.append(f"ps{stem.points}")
        if stem.iters != DEFAULT_PS_ITERS:
            glob.append(f"iters{stem.iters}")
        if stem.share:
            glob.append("share")
        if stem.fe_width != DEFAULT_PS_FE_WIDTH:
            glob.append(f"fe{stem.fe_width}")
    if layout.pos != stem.default_pos:
        glob.append(f"pos={layout.pos}")
    if layout.head != "cls":
        glob.append(layout.head)

    text = "B" + "-".join(f"{s.layers}({', '.join([str(s.tokens), *opts])})" for s, opts in zip(stages, per_stage))
    return ", ".join([text, *glob])
