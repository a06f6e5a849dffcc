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

=====================  ==============  ==========================================================
option                 where           meaning (default)
=====================  ==============  ==========================================================
``h<int>``             stage, global   hidden width (768)
``m<int>``             stage, global   MLP width (4 x hidden: 3072 for h768)
``a<int>``             stage, global   attention heads (hidden / 64: 12 for h768)
``mean`` / ``max``     stage, global   operator of the pool that enters the stage (``mean``).
                                       1D pooling of the patch tokens with window = stride; the
                                       stride is inferred from the two token counts
                                       (ceil mode, as Funnel-Transformer: 49 -> 25 is stride 2)
``pqo`` / ``nopqo``    stage, global   pool-query-only attention in the first layer after a
                                       pool: queries from the pooled sequence, keys/values from
                                       the unpooled one (``pqo``)
``img<int>``           global          image size in pixels (224)
``patch<int>``         global          patch size in pixels (16)
``cls`` / ``avg``      global          head: class token (``cls``) or no class token and the
                                       mean of the final tokens (``avg``)
=====================  ==============  ==========================================================

Long forms: ``hidden=``, ``mlp=``, ``heads=``, ``pool=mean|max``, ``pqo=on|off``, ``img=``,
``patch=``, ``head=cls|avg``.

A stage whose hidden width differs from the previous stage's is entered through a linear
projection of the (unpooled) sequence. Examples::

    B12(197)                               ViT-B/16
    B12(197), h384                         DeiT-S (6 heads, MLP 1536 follow from the width)
    B6(197)-6(99), max                     Funnel-ViT, max pooling
    B6(197, m4096)-6(99)-2(50, m1536)      re-invested widths per stage
    B4(65)-4(33), h192, img32, patch4      a CIFAR-size model: 8 x 8 patches + class token

``str(layout)`` is the canonical form: defaults left out, shared values written once as a
global option; it parses back to an equal :class:`Layout`.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from .errors import LayoutError

DEFAULT_HIDDEN = 768
DEFAULT_MLP_RATIO = 4
DEFAULT_HEAD_DIM = 64
DEFAULT_IMAGE_SIZE = 224
DEFAULT_PATCH_SIZE = 16
MAX_INT = 1_000_000  # larger numbers are typos, not models

POOL_OPS = ("mean", "max")
HEADS = ("cls", "avg")
NO_POOL = "none"


@dataclass(frozen=True)
class Stage:
    """One stage: ``layers`` identical transformer layers on ``tokens`` tokens.

    ``pool``/``stride`` describe the pool that enters the stage (``"none"``/1 when the token
    count is unchanged), ``pqo`` whether the stage's first layer uses pool-query-only attention.
    """

    layers: int
    tokens: int
    hidden: int = DEFAULT_HIDDEN
    mlp: int = DEFAULT_HIDDEN * DEFAULT_MLP_RATIO
    heads: int = DEFAULT_HIDDEN // DEFAULT_HEAD_DIM
    pool: str = NO_POOL
    stride: int = 1
    pqo: bool = False

    @property
    def pools(self) -> bool:
        return self.stride > 1


@dataclass(frozen=True)
class Layout:
    """A whole model: stages plus the input geometry and the head. Parse it from text with
    :func:`parse_layout`; ``str(layout)`` gives the canonical text back."""

    stages: tuple[Stage, ...]
    image_size: int = DEFAULT_IMAGE_SIZE
    patch_size: int = DEFAULT_PATCH_SIZE
    head: str = "cls"

    def __str__(self) -> str:
        return format_layout(self)

    @property
    def depth(self) -> int:
        return sum(s.layers for s in self.stages)

    @property
    def grid(self) -> int:
        """Patches per side."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens that are never pooled (the class token)."""
        return 1 if self.head == "cls" else 0

    def at_image_size(self, image_size: int, patch_size: int | None = None) -> "Layout":
        """The same model at another resolution: every stage keeps its pooling stride and its
        token count follows the new patch grid (``B6(197)-6(99)`` at 384 px is ``B6(577)-6(289)``)."""
        from dataclasses import replace

        patch = patch_size or self.patch_size
        if image_size % patch:
            raise LayoutError(f"image size {image_size} is not a multiple of patch size {patch}")
        prefix = self.num_prefix_tokens
        patches = (image_size // patch) ** 2
        stages = []
        for s in self.stages:
            patches = pooled_length(patches, s.stride)
            stages.append(replace(s, tokens=patches + prefix))
        return parse_layout(format_layout(replace(self, stages=tuple(stages), image_size=image_size, patch_size=patch)))


# ----------------------------------------------------------------------------- pooling arithmetic


def pooled_length(n: int, stride: int) -> int:
    """Length of ``n`` tokens after 1D pooling with window = stride (ceil mode)."""
    return -(-n // stride)


def infer_stride(prev: int, new: int) -> int | None:
    """The smallest stride that pools ``prev`` tokens to ``new`` tokens, or None."""
    if new < 1 or new > prev:
        return None
    stride = -(-prev // new)
    return stride if pooled_length(prev, stride) == new else None


def reachable_lengths(prev: int, prefix: int, limit: int = 5) -> str:
    """'99 (stride 2), 67 (stride 3), ...' for an error message; counts include ``prefix``."""
    seen, out = set(), []
    for stride in range(1, prev + 1):
        n = pooled_length(prev, stride)
        if n not in seen:
            seen.add(n)
            out.append(f"{n + prefix} (" + ("no pooling" if stride == 1 else f"stride {stride}") + ")")
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
    pqo: bool | None = None
    image_size: int | None = None
    patch_size: int | None = None
    head: str | None = None
    pos: dict = field(default_factory=dict)
    written: dict = field(default_factory=dict)


# name -> (field, kind). kind "int" takes a number, anything else is the set of words accepted.
_KEYS = {
    "h": ("hidden", "int"),
    "hidden": ("hidden", "int"),
    "m": ("mlp", "int"),
    "mlp": ("mlp", "int"),
    "a": ("heads", "int"),
    "heads": ("heads", "int"),
    "img": ("image_size", "int"),
    "patch": ("patch_size", "int"),
    "pool": ("pool", POOL_OPS),
    "head": ("head", HEADS),
    "pqo": ("pqo", ("on", "off")),
}
_FLAGS = {
    **{op: ("pool", op) for op in POOL_OPS},
    **{h: ("head", h) for h in HEADS},
    "pqo": ("pqo", True),
    "nopqo": ("pqo", False),
}
_GLOBAL_ONLY = {"image_size", "patch_size", "head"}
_STAGE_OPTION_HELP = "h<int>, m<int>, a<int>, mean, max, pqo or nopqo"
_GLOBAL_OPTION_HELP = _STAGE_OPTION_HELP + ", img<int>, patch<int>, cls or avg"


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
        if getattr(opts, fieldname) is not None:
            raise self.error(f"option {name!r} repeats a value given before", pos, "each option once")
        setattr(opts, fieldname, value)
        opts.pos[fieldname] = pos
        opts.written[fieldname] = name


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

    image = glob.image_size or DEFAULT_IMAGE_SIZE
    patch = glob.patch_size or DEFAULT_PATCH_SIZE
    head = glob.head or "cls"
    if image % patch:
        where = glob.pos.get("image_size", glob.pos.get("patch_size", 0))
        raise parser.error(f"image size {image} is not a multiple of patch size {patch}", where,
                           "img and patch such that img / patch is a whole number of patches")
    prefix = 1 if head == "cls" else 0
    grid_tokens = (image // patch) ** 2 + prefix

    stages: list[Stage] = []
    prev = None
    for index, (layers, tokens, start, tok_pos, opts) in enumerate(raw_stages):
        hidden = opts.hidden or glob.hidden or DEFAULT_HIDDEN
        mlp = opts.mlp or glob.mlp or DEFAULT_MLP_RATIO * hidden
        heads = opts.heads or glob.heads or max(1, hidden // DEFAULT_HEAD_DIM)
        if hidden % heads:
            src = opts if opts.heads or opts.hidden else glob
            where = src.pos.get("heads", src.pos.get("hidden", tok_pos))
            raise parser.error(f"stage {index + 1}: hidden width {hidden} is not divisible by {heads} heads", where,
                               f"a width that is a multiple of the heads, or heads given with a<int> (e.g. a{_divisor_near(hidden, heads)})")
        if prev is None:
            if tokens != grid_tokens:
                geo = f"{image // patch}x{image // patch} patches" + (" + class token" if prefix else "")
                raise parser.error(f"the first stage has {tokens} tokens, but img{image} with patch{patch} gives {grid_tokens} ({geo})",
                                   tok_pos, f"{grid_tokens}, or img/patch options that give {tokens} tokens")
            stride = 1
        else:
            if tokens > prev.tokens:
                raise parser.error(f"stage {index + 1} has {tokens} tokens, more than the {prev.tokens} before it",
                                   tok_pos, "a token count that pooling can reach: " + reachable_lengths(prev.tokens - prefix, prefix))
            stride = infer_stride(prev.tokens - prefix, tokens - prefix)
            if stride is None:
                raise parser.error(f"stage {index + 1}: {tokens} tokens cannot be reached from {prev.tokens} by pooling "
                                   f"the {prev.tokens - prefix} patch tokens with a whole-number stride", tok_pos,
                                   "one of " + reachable_lengths(prev.tokens - prefix, prefix))
        pools = stride > 1
        for name in ("pool", "pqo"):
            if getattr(opts, name) is not None and not pools:
                why = "it is the first stage" if prev is None else f"its token count equals the previous stage's ({tokens})"
                raise parser.error(f"stage {index + 1} does not pool ({why}), so option {opts.written[name]!r} has no effect",
                                   opts.pos[name], "the option removed, or a smaller token count")
        pool = (opts.pool or glob.pool or "mean") if pools else NO_POOL
        pqo = (opts.pqo if opts.pqo is not None else glob.pqo if glob.pqo is not None else True) if pools else False
        stage = Stage(layers, tokens, hidden, mlp, heads, pool, stride, pqo)
        stages.append(stage)
        prev = stage
    return Layout(tuple(stages), image, patch, head)


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


def format_layout(layout: Layout) -> str:
    """The canonical text of a layout (inverse of :func:`parse_layout`)."""
    stages = layout.stages
    per_stage: list[list[str]] = [[] for _ in stages]
    glob: list[str] = []

    pooling = [i for i, s in enumerate(stages) if s.pools]
    g_pool = _choose_global([stages[i].pool for i in pooling], ["mean"] * len(pooling))
    if g_pool:
        glob.append(g_pool)
    g_pqo = _choose_global([stages[i].pqo for i in pooling], [True] * len(pooling))
    if g_pqo is not None:
        glob.append("pqo" if g_pqo else "nopqo")

    g_hidden = _choose_global([s.hidden for s in stages], [DEFAULT_HIDDEN] * len(stages))
    g_mlp = _choose_global([s.mlp for s in stages], [DEFAULT_MLP_RATIO * s.hidden for s in stages])
    g_heads = _choose_global([s.heads for s in stages], [max(1, s.hidden // DEFAULT_HEAD_DIM) for s in stages])
    for key, value in (("h", g_hidden), ("m", g_mlp), ("a", g_heads)):
        if value is not None:
            glob.append(f"{key}{value}")

    for i, s in enumerate(stages):
        opts = per_stage[i]
        if s.hidden != (g_hidden or DEFAULT_HIDDEN):
            opts.append(f"h{s.hidden}")
        if s.mlp != (g_mlp or DEFAULT_MLP_RATIO * s.hidden):
            opts.append(f"m{s.mlp}")
        if s.heads != (g_heads or max(1, s.hidden // DEFAULT_HEAD_DIM)):
            opts.append(f"a{s.heads}")
        if s.pools and s.pool != (g_pool or "mean"):
            opts.append(s.pool)
        if s.pools and s.pqo != (g_pqo if g_pqo is not None else True):
            opts.append("pqo" if s.pqo else "nopqo")

    if layout.image_size != DEFAULT_IMAGE_SIZE:
        glob.append(f"img{layout.image_size}")
    if layout.patch_size != DEFAULT_PATCH_SIZE:
        glob.append(f"patch{layout.patch_size}")
    if layout.head != "cls":
        glob.append(layout.head)

    text = "B" + "-".join(
        f"{s.layers}({', '.join([str(s.tokens), *opts])})" for s, opts in zip(stages, per_stage)
    )
    return ", ".join([text, *glob])
