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
(``h1024`` == ``hidden=1024``).

=========================  ==============  ======================================================
option                     where           meaning (default)
=========================  ==============  ======================================================
``h<int>``                 stage, global   hidden width (768)
``m<int>``                 stage, global   MLP width (4 x hidden: 3072 for h768)
``a<int>``                 stage, global   attention heads (hidden / 64: 12 for h768)
``qkvbias``/``noqkvbias``  stage, global   bias in the q, k, v projection (``qkvbias``; T2T-ViT
                                           and PS-ViT have none)
``mean`` / ``max``         stage, global   operator of the pool that enters the stage (``mean``).
                                           1D pooling of the patch tokens; the stride is
                                           inferred from the two token counts. Without ``k``
                                           the window equals the stride (ceil mode, as
                                           Funnel-Transformer: 49 -> 25 is stride 2)
``mean2d`` / ``max2d``     stage, global   2D pooling of the patch tokens as a square grid
                                           (14 x 14 -> 7 x 7: 197 -> 50); every pool before it
                                           must be 2D too
``k<int>``                 stage, global   pooling window: k tokens (k x k for 2D), no padding,
                                           floor mode, as ``nn.MaxPool1d(k, stride)``
                                           (HVT: ``max, k3`` pools 196 -> 97 with stride 2).
                                           Default: window = stride
``pqo`` / ``nopqo``        stage, global   pool-query-only attention in the first layer after a
                                           pool: queries from the pooled sequence, keys/values
                                           from the unpooled one (``pqo``)
``newpos``/``nonewpos``    stage, global   a new learned position embedding added after the
                                           pool that enters the stage (HVT; ``nonewpos``)
``img<int>``               global          image size in pixels (224)
``patch<int>``             global          patch stem: p x p patches (16)
``t2t`` / ``t2t_t``        global          Tokens-to-Token stem with Performer (``t2t``) or
                                           Transformer (``t2t_t``) layers: unfold 7/4 -> layer
                                           -> unfold 3/2 -> layer -> unfold 3/2 -> linear,
                                           an image-size / 16 grid
``tok<int>``               global, t2t     width of the T2T layers' tokens (64)
``ps<int>``                global          progressive-sampling stem (PS-ViT): a ResNet conv
                                           stem to an img/4 feature map, then n x n sampled
                                           points refined by ``iters`` transformer layers
``iters<int>``             global, ps      sampling iterations (4); their layers have the first
                                           stage's widths
``share`` / ``noshare``    global, ps      one layer shared by all iterations (``noshare``)
``fe<int>``                global, ps      output width of the feature extractor's first
                                           bottleneck (256, ResNet-50's; the second outputs
                                           the first stage's hidden width)
``pos=KIND``               global          position embedding added after the stem:
                                           ``learned``, ``sincos`` (fixed, not trained) or
                                           ``none`` (learned; sincos with t2t; none with ps)
``cls`` / ``avg``          global          head: class token (``cls``) or no class token and the
                                           mean of the final tokens (``avg``)
=========================  ==============  ======================================================

Long forms: ``hidden=``, ``mlp=``, ``heads=``, ``pool=mean|max|mean2d|max2d``, ``kernel=``,
``pqo=on|off``, ``newpos=on|off``, ``qkvbias=on|off``, ``img=``, ``patch=``,
``stem=patch|t2t|t2t_t``, ``ps=``, ``tok=``, ``iters=``, ``share=on|off``, ``fe=``,
``head=cls|avg``.

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
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field, replace

from .errors import LayoutError

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
                    raise LayoutError(f"at {image_size} px the {s.pool_label} pool into a stage of {self} leaves no tokens")
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
        return (f"the T2T stem cannot split {image_size} px images into a whole grid: its soft splits have "
                f"strides 4, 2 and 2, so the image size must be a multiple of {T2T_STRIDE}",
                f"img{lo} or img{lo + T2T_STRIDE}")
    if stem.kind == "ps":
        if image_size % PS_STRIDE:
            return (f"the PS stem's feature map is img / {PS_STRIDE}, and {image_size} is not a multiple of {PS_STRIDE}",
                    f"an image size that is a multiple of {PS_STRIDE}")
        feat = ps_feature_size(image_size)
        if stem.points > feat:
            return (f"a sampling grid of {stem.points}x{stem.points} points is larger than the {feat}x{feat} "
                    f"feature map of {image_size} px images", f"ps<int> of at most {feat}, or a larger img")
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


# ----------------------------------------------------------------------------- tokens


_TOKEN_RE = re.compile(r"\s*(?:(?P<int>\d+)|(?P<word>[A-Za-z_][A-Za-z0-9_.]*)|(?P<punct>[()\-,=])|(?P<bad>\S))")


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
# name -> (field, kind). kind "int" takes a number, anything else is the set of words accepted.
_KEYS = {
    "h": ("hidden", "int"),
    "hidden": ("hidden", "int"),
    "m": ("mlp", "int"),
    "mlp": ("mlp", "int"),
    "a": ("heads", "int"),
    "heads": ("heads", "int"),
    "k": ("kernel", "int"),
    "kernel": ("kernel", "int"),
    "img": ("image_size", "int"),
    "patch": ("patch_size", "int"),
    "ps": ("points", "int"),
    "tok": ("token_dim", "int"),
    "iters": ("iters", "int"),
    "fe": ("fe_width", "int"),
    "pool": ("pool", POOL_OPS),
    "head": ("head", HEADS),
    "stem": ("stem", ("patch", "t2t", "t2t_t")),
    "pos": ("pos_embed", POS_KINDS),
    "pqo": ("pqo", _ON_OFF),
    "newpos": ("newpos", _ON_OFF),
    "qkvbias": ("qkv_bias", _ON_OFF),
    "share": ("share", _ON_OFF),
}
_FLAGS = {
    **{op: ("pool", op) for op in POOL_OPS},
    **{h: ("head", h) for h in HEADS},
    "t2t": ("stem", "t2t"),
    "t2t_t": ("stem", "t2t_t"),
    "pqo": ("pqo", True),
    "nopqo": ("pqo", False),
    "newpos": ("newpos", True),
    "nonewpos": ("newpos", False),
    "qkvbias": ("qkv_bias", True),
    "noqkvbias": ("qkv_bias", False),
    "share": ("share", True),
    "noshare": ("share", False),
}
_GLOBAL_ONLY = {"image_size", "patch_size", "head", "stem", "points", "token_dim", "iters", "share", "fe_width", "pos_embed"}
_STEM_ONLY = {"token_dim": ("t2t", "t2t or t2t_t"), "iters": ("ps", "ps<int>"), "share": ("ps", "ps<int>"),
              "fe_width": ("ps", "ps<int>")}
_POOL_OPTIONS = ("pool", "kernel", "pqo", "newpos")  # only meaningful on a stage that pools
_STAGE_OPTION_HELP = "h<int>, m<int>, a<int>, qkvbias, noqkvbias, mean, max, mean2d, max2d, k<int>, pqo, nopqo, newpos or nonewpos"
_GLOBAL_OPTION_HELP = (_STAGE_OPTION_HELP.replace(" or ", ", ") + ", img<int>, patch<int>, t2t, t2t_t, tok<int>, ps<int>, "
                       "iters<int>, share, fe<int>, pos=learned|sincos|none, cls or avg")


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
        if tok.kind == "word" and tok.text.startswith("B") and tok.text[1:].isdigit() and tok.text[1:]:
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
            m = re.fullmatch(r"([A-Za-z_]+)(\d+)", name)
            if m is None or m.group(1) not in _KEYS or _KEYS[m.group(1)][1] != "int":
                raise self.error(f"unknown option {name!r}", pos, helptext)
            fieldname = _KEYS[m.group(1)][0]
            value = self.check_int(m.group(2), pos + len(m.group(1)), fieldname.replace("_", " "))
        if not is_global and fieldname in _GLOBAL_ONLY:
            raise self.error(f"option {name!r} applies to the whole model, not to one stage", pos,
                             "it after the last stage, as in 'B12(197), " + name + "'")
        if fieldname in ("stem", "points") and (opts.stem is not None or opts.points is not None):
            first = opts.written.get("stem", opts.written.get("points"))
            raise self.error(f"option {name!r} chooses a second stem after {first!r}", pos, "one stem: patch<int>, t2t, t2t_t or ps<int>")
        if getattr(opts, fieldname) is not None:
            raise self.error(f"option {name!r} repeats a value given before", pos, "each option once")
        setattr(opts, fieldname, value)
        opts.pos[fieldname] = pos
        opts.written[fieldname] = name


def _first(*values):
    """The first value that is not None."""
    return next(v for v in values if v is not None)


def _resolve_stem(parser: _Parser, glob: _Opts) -> tuple[Stem, int, int]:
    """The stem, image size and patch size from the global options, checked."""
    image = glob.image_size or DEFAULT_IMAGE_SIZE
    patch = glob.patch_size or DEFAULT_PATCH_SIZE
    kind = "ps" if glob.points is not None else (glob.stem or "patch")
    for name, (needs, how) in _STEM_ONLY.items():
        if getattr(glob, name) is not None and not kind.startswith(needs):
            raise parser.error(f"option {glob.written[name]!r} applies to the {needs} stem only, and this layout has the {kind} stem",
                               glob.pos[name], f"the option removed, or {how}")
    if kind != "patch" and glob.patch_size is not None:
        raise parser.error(f"option {glob.written['patch_size']!r} sets the patch stem's patch size, and this layout has the {kind} stem",
                           glob.pos["patch_size"], "the option removed")
    if kind == "patch" and image % patch:
        where = glob.pos.get("image_size", glob.pos.get("patch_size", 0))
        raise parser.error(f"image size {image} is not a multiple of patch size {patch}", where,
                           "img and patch such that img / patch is a whole number of patches")
    if kind == "t2t" and glob.token_dim == 1:
        raise parser.error("the Performer T2T layers use tok / 2 random features, so tok1 leaves none", glob.pos["token_dim"],
                           "tok2 or more")
    stem = Stem(kind, token_dim=glob.token_dim or DEFAULT_T2T_DIM, points=glob.points or 0,
                iters=glob.iters or DEFAULT_PS_ITERS, share=bool(glob.share), fe_width=glob.fe_width or DEFAULT_PS_FE_WIDTH)
    problem = stem_geometry_problem(stem, image)
    if problem:
        # blame the sampling grid when it is too large, else the image size (or the stem if img is the default)
        blame = "points" if stem.kind == "ps" and image % PS_STRIDE == 0 else "image_size"
        where = glob.pos.get(blame, glob.pos.get("stem", glob.pos.get("points", 0)))
        raise parser.error(problem[0], where, problem[1])
    return stem, image, patch


def _describe_stem(stem: Stem, image: int, patch: int, grid: int, prefix: int) -> str:
    cls = " + class token" if prefix else ""
    if stem.kind == "ps":
        return f"ps{stem.points} samples {grid}x{grid} points{cls}"
    if stem.is_t2t:
        return f"the T2T stem on img{image} gives {grid}x{grid} tokens{cls}"
    return f"img{image} with patch{patch} gives {grid}x{grid} patches{cls}"


def parse_layout(text: str) -> Layout:
    """Parse a layout string such as ``"B6(197, m4096)-6(99)-2(50, m1536)"``.

    The grammar, options and defaults are in this module's docstring (and the README).
    Raises :class:`LayoutError` (a ``ValueError``) that quotes the input, gives the column of
    the problem and says what was expected.
    """
    if isinstance(text, Layout):
        return text
    if not isinstance(text, str):
        raise LayoutError(f"a layout must be a string, got {type(text).__name__}")
    parser = _Parser(text)
    raw_stages, glob = parser.parse()

    head = glob.head or "cls"
    stem, image, patch = _resolve_stem(parser, glob)
    prefix = 1 if head == "cls" else 0
    grid = stem_grid(stem, image, patch)
    grid_tokens = grid * grid + prefix

    stages: list[Stage] = []
    prev = None
    side: int | None = grid  # patch tokens per side while they still form a square grid
    for index, (layers, tokens, start, tok_pos, opts) in enumerate(raw_stages):
        hidden = opts.hidden or glob.hidden or DEFAULT_HIDDEN
        mlp = opts.mlp or glob.mlp or DEFAULT_MLP_RATIO * hidden
        heads = opts.heads or glob.heads or max(1, hidden // DEFAULT_HEAD_DIM)
        if hidden % heads:
            src = opts if opts.heads or opts.hidden else glob
            where = src.pos.get("heads", src.pos.get("hidden", tok_pos))
            raise parser.error(f"stage {index + 1}: hidden width {hidden} is not divisible by {heads} heads", where,
                               f"a width that is a multiple of the heads, or heads given with a<int> (e.g. a{_divisor_near(hidden, heads)})")
        pool, stride, kernel = NO_POOL, 1, 0
        if prev is None:
            if tokens != grid_tokens:
                raise parser.error(f"the first stage has {tokens} tokens, but {_describe_stem(stem, image, patch, grid, prefix)} = {grid_tokens}",
                                   tok_pos, f"{grid_tokens}, or img/patch/stem options that give {tokens} tokens")
        elif tokens != prev.tokens:
            op = opts.pool or glob.pool or "mean"
            kernel = _first(opts.kernel, glob.kernel, 0)
            src = opts if opts.pool else glob
            if op.endswith("2d") and side is None:
                raise parser.error(f"stage {index + 1}: {op} pools the patch tokens as a square grid, but a 1D pool before it "
                                   f"left them in a sequence", src.pos.get("pool", tok_pos),
                                   "1D pooling (mean or max) here, or 2D pooling in every stage before it")
            n_prev = prev.tokens - prefix
            pool_side = side if op.endswith("2d") else None
            what = (f"{op} pooling of the {side}x{side} grid" if pool_side else f"pooling the {n_prev} patch tokens") + \
                   ((f" in {kernel}x{kernel} windows" if pool_side else f" in windows of {kernel}") if kernel else "")
            if tokens > prev.tokens:
                raise parser.error(f"stage {index + 1} has {tokens} tokens, more than the {prev.tokens} before it",
                                   tok_pos, "a token count that pooling can reach: " + reachable_lengths(n_prev, prefix, kernel=kernel, side=pool_side))
            if kernel and (pool_side or n_prev) < kernel:
                ksrc = opts if opts.kernel is not None else glob
                raise parser.error(f"stage {index + 1}: a pooling window of {kernel} is wider than the "
                                   f"{pool_side or n_prev} patch tokens{' per side' if pool_side else ''} before it, "
                                   f"so the pool would leave no tokens", ksrc.pos.get("kernel", tok_pos),
                                   f"a window of at most {pool_side or n_prev}, fewer pools, or {prev.tokens} tokens (no pooling)")
            if pool_side:
                new_side = math.isqrt(tokens - prefix)
                stride = infer_stride(side, new_side, kernel) if new_side * new_side == tokens - prefix else None
            else:
                stride = infer_stride(n_prev, tokens - prefix, kernel)
            if stride is None:
                raise parser.error(f"stage {index + 1}: {tokens} tokens cannot be reached from {prev.tokens} by {what} "
                                   f"with a whole-number stride", tok_pos,
                                   "one of " + reachable_lengths(n_prev, prefix, kernel=kernel, side=pool_side))
            pool = op
            side = pooled_length(side, stride, kernel) if pool_side else None
        pools = pool != NO_POOL
        for name in _POOL_OPTIONS:
            if getattr(opts, name) is not None and not pools:
                why = "it is the first stage" if prev is None else f"its token count equals the previous stage's ({tokens})"
                raise parser.error(f"stage {index + 1} does not pool ({why}), so option {opts.written[name]!r} has no effect",
                                   opts.pos[name], "the option removed, or a smaller token count")
        pqo = _first(opts.pqo, glob.pqo, True) if pools else False
        newpos = _first(opts.newpos, glob.newpos, False) if pools else False
        qkv_bias = _first(opts.qkv_bias, glob.qkv_bias, True)
        stage = Stage(layers, tokens, hidden, mlp, heads, pool, stride, pqo, kernel, newpos, qkv_bias)
        stages.append(stage)
        prev = stage
    return Layout(tuple(stages), image, patch, head, stem, glob.pos_embed or stem.default_pos)


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

    text = "B" + "-".join(
        f"{s.layers}({', '.join([str(s.tokens), *opts])})" for s, opts in zip(stages, per_stage)
    )
    return ", ".join([text, *glob])
