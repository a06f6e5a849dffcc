"""Analytic memory of a training step and of inference, from a layout and a batch size alone.

No model is built: the estimate walks the layout part by part (the stem, the class token and
position embedding, each transformer layer, the transitions between stages, the head and the
loss) and adds up the tensors each operator keeps for backward, in bytes. That is what lets a
user size a batch for a GPU they do not have. ``tests/test_measure_memory.py`` checks the
activations saved at the end of the forward pass byte for byte against
:class:`funnelbench.measure.MemoryTracker`, and the peaks within a few percent, on CPU. The
CUDA rules (below) are derived from torch's CUDA code and those CPU measurements; only
``tests/test_cuda.py`` (``pytest -m cuda``, on a GPU) compares them with measured CUDA peaks.

What a training step holds (``zero_grad(set_to_none=True)`` first, so no gradients exist
during the forward pass)::

    weights           4 bytes per parameter (fp32 master weights, also under autocast), and
                      the buffers (a sinusoid position table)
    optimizer state   AdamW: 2 x weights (+ one 4-byte step counter per tensor on CPU);
                      SGD with momentum: 1 x weights
    input batch       B x 3 x H x W x 4 bytes of images, B x 8 bytes of labels
    saved activations what autograd keeps from the forward pass for the backward pass
    gradients         4 bytes per parameter, appearing as the backward pass runs while the
                      saved activations are freed
    temporaries       gradients flowing backward; the optimizer's scratch (AdamW on CPU loops
                      over tensors: about 2 x the largest parameter; on CUDA it updates all
                      tensors at once: 1 x weights)

The peak is the largest of three moments: the end of the forward pass, the worst moment of
the backward pass (simulated part by part, last part first) and the optimizer step.

Saved per transformer layer with N query tokens, M key/value tokens (M = N except in a
pool-query-only layer), width d, MLP width m, h heads, in elements (fp32: x 4 bytes)::

    layer input x, LayerNorm-1 output        2 N d       (+ 2 M d: the unpooled keys/values
                                                          and their LayerNorm, pool-query-only)
    q, k, v                                   N d + 2 M d (one qkv tensor when M = N)
    attention output                          N d
    fused kernels (flash, efficient, cudnn):  + h N logsumexp (fp32)
    math kernel: the h N M attention matrix instead, and copies of q, k, v and the output
    residual after attention, LayerNorm-2     2 N d
    MLP hidden before and after GELU          2 N m
    LayerNorm statistics                      2 x 2 N (fp32) per LayerNorm

Pools between stages (on the patch tokens; the class token is joined back by a cat)::

    mean/max, window = stride, dividing    a reshape and mean (nothing saved) or amax (its
                                           input and output)
    1D pools otherwise (ceil mode, or an   avg_pool1d / max_pool1d on the (B, C, N) transpose:
    HVT window k, floor mode)              the input, and max: int64 indices of the output;
                                           the pooled tokens stay (B, C, N')-ordered
    mean2d/max2d                           avg_pool2d / max_pool2d on the tokens seen as a
                                           (B, C, g, g) grid (a view): the same; the output
                                           keeps the input's memory order

A new position embedding (HVT's ``newpos``) is an add after the pool: nothing saved, but an
fp32 tensor under autocast. A (B, C, N)-ordered token sequence (no class token) stays so
through the residual stream; each linear layer that reads it copies it.

Under autocast (bf16/fp16) matmul outputs are 2 bytes, each linear layer keeps a 2-byte copy
of its weight and of any fp32 input, and the residual stream stays fp32 until a projection
(whose output is 2 bytes) carries it on in 2 bytes (without class token and position
embedding it is the stem's 2-byte output from the start). CPU and CUDA differ in three places
that the estimate follows (``device``): AdamW's implementation (above), LayerNorm under
autocast (fp32 on CUDA, the input's dtype on CPU) and the CPU math kernel, which computes a
bf16/fp16 attention in fp32.

Tokens-to-Token stem (``t2t_t``: Transformer layers, ``t2t``: Performer layers): each soft
split (unfold) saves nothing; its (B, C, N)-ordered output is what the next T2T layer's
LayerNorm keeps (the last one's is copied by the final Linear). In the backward pass col2im
folds the split's gradient into a tensor whose storage is as large as the columns, and that
is the gradient arriving at the previous T2T layer. A T2T layer is a transformer layer from
C-wide input tokens to t-wide ones (one head, MLP width t) whose residual is v, so its
residual stream is a matmul output (2 bytes under autocast). The Performer's attention is
plain tensor algebra on r = t / 2 random features (a buffer), so it keeps, on top of the
kqv tensor: exp and the features of k and of q (4 N r), the features of k summed over the
tokens, phi(k)^T v (t r), the numerator (N t) and normaliser (N) of the division and its
output (N t).

Progressive-sampling stem (``ps``, PS-ViT): the ResNet feature extractor keeps each
BatchNorm's input and two per-channel statistics, each in-place ReLU's output and the max
pool's int64 indices; each iteration's grid sample keeps the feature map and the (B, 1, P, 2)
grid, the points' embedding its (B, P, 2) input, and once the points move the product with
the pixel scale keeps that 2-element tensor; the samples are (B, C, P)-ordered, and so is the
residual stream of the iterations' layers and of what follows. In the backward pass the
feature-map gradients of the iterations are summed (out of place) into one that stays alive
until the feature extractor's backward, and a layer shared by the iterations (``share``)
sums each weight gradient out of place with the existing one.

Modelled: the patch stem, the Transformer- and Performer-kind T2T stems and the
progressive-sampling stem (those three in fp32 only: under autocast the estimate refuses);
class-token and average heads; learned, fixed (sincos) or no position embedding; qkv bias or
none; mean/max pools, 1D or 2D, with window = stride or an explicit window (HVT);
pool-query-only attention; new position embeddings after a pool; width projections.

Not modelled: kernel scratch memory that is not a tensor (e.g. inside flash attention or a
convolution), the CUDA context and allocator rounding (512 B per block), cuBLAS and cuDNN
workspaces. Layouts with parts this module does not know (other stems, poolings or heads)
raise :class:`UnmodelledLayout` naming the part, rather than giving a wrong number.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from .cost import count, layer_params, t2t_layer_params, t2t_sides
from .errors import LayoutError, UsageError
from .layout import Layout, Stage, check_int, ps_feature_size, unfold_length, validate_layout
from .parts import describe

F32 = 4
LABEL = 8  # int64 class labels
MAX_BUDGET_BYTES = 2 ** 50  # 1 PiB: a larger device memory is a typo


class UnmodelledLayout(UsageError):
    """The layout has a part the memory estimate does not model."""


# What the estimate models. Any other field with a non-default value, any other head or pool
# operator, or a cost part with another name (a new stem, say) is reported, not guessed.
_LAYOUT_FIELDS = {"stages", "image_size", "patch_size", "head", "pos", "stem"}
_STAGE_FIELDS = {"layers", "tokens", "hidden", "mlp", "heads", "pool", "stride", "pqo", "kernel", "newpos", "qkv_bias"}
_HEADS = {"cls", "avg"}
_POOLS = {"none", "mean", "max", "mean2d", "max2d"}
_POS = {"learned", "sincos", "none"}
_STEMS = {"patch", "t2t_t", "t2t", "ps"}
_STEM_NAMES = {"t2t": "Performer-kind Tokens-to-Token stem", "t2t_t": "Transformer-kind Tokens-to-Token stem",
               "ps": "progressive-sampling stem"}  # modelled in fp32 only


def unmodelled_parts(layout: Layout) -> list[str]:
    """What in ``layout`` the estimate does not model (empty when everything is modelled)."""
    problems = []
    for f in dataclasses.fields(layout):
        if f.name not in _LAYOUT_FIELDS and _differs_from_default(layout, f):
            problems.append(f"{f.name}={getattr(layout, f.name)!r}")
    if layout.head not in _HEADS:
        problems.append(f"head={layout.head!r}")
    if layout.pos not in _POS:
        problems.append(f"pos={layout.pos!r}")
    if layout.stem.kind not in _STEMS:
        problems.append(f"stem={layout.stem!r}")
    for i, stage in enumerate(layout.stages):
        for f in dataclasses.fields(stage):
            if f.name not in _STAGE_FIELDS and _differs_from_default(stage, f):
                problems.append(f"stage {i + 1} {f.name}={getattr(stage, f.name)!r}")
        if stage.pool not in _POOLS:
            problems.append(f"stage {i + 1} pool={stage.pool!r}")
    known = {"embed", "sampling", "head"} | {f"stage{i + 1}" for i in range(len(layout.stages))}
    try:
        names = [p.name for p in count(layout).parts]
    except LayoutError:  # not a valid layout at all: estimate_memory's validate_layout says why
        names = []
    except Exception:  # noqa: BLE001 - a layout the counter cannot handle is unmodelled too
        names = ["(the analytic count failed)"]
    problems += [f"part {name!r}" for name in names if name not in known]
    return problems


def _differs_from_default(obj, f: dataclasses.Field) -> bool:
    value = getattr(obj, f.name)
    if f.default is not dataclasses.MISSING:
        return value != f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return value != f.default_factory()  # type: ignore[misc]
    return True


def check_modelled(layout: Layout) -> None:
    problems = unmodelled_parts(layout)
    if problems:
        try:
            text = str(layout)
        except Exception:  # noqa: BLE001 - a part format_layout does not know either
            text = repr(layout)
        raise UnmodelledLayout(
            f"the memory estimate does not model {', '.join(problems)} in layout {text!r}; it models "
            "patch stems, Tokens-to-Token stems (t2t, t2t_t) and progressive-sampling stems (ps) (those in fp32), "
            "class-token and average heads, learned/sincos/no position embeddings, 1D and 2D "
            "mean/max token pooling (also with a window), pool-query-only attention, new position embeddings "
            "and width projections (the measured figures do not depend on it)")


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class PartMemory:
    """One part's share: activations it saves for backward and its parameters' bytes."""

    name: str
    saved_bytes: int
    params_bytes: int


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of one training step and one inference pass (see the module docstring)."""

    layout: str
    batch_size: int
    dtype: str
    device: str
    attention: str  # "fused" or "math"
    optimizer: str
    weights_bytes: int
    buffers_bytes: int  # fixed tensors that are not trained (sinusoid tables, random features, BN statistics)
    grads_bytes: int
    optimizer_bytes: int
    inputs_bytes: int
    activations_bytes: int  # saved for backward, at the end of the forward pass
    forward_peak_bytes: int
    backward_peak_bytes: int
    optimizer_peak_bytes: int
    infer_peak_bytes: int
    parts: tuple[PartMemory, ...] = field(default=(), repr=False)

    @property
    def train_peak_bytes(self) -> int:
        return max(self.forward_peak_bytes, self.backward_peak_bytes, self.optimizer_peak_bytes)

    @property
    def train_peak_phase(self) -> str:
        peaks = {"forward": self.forward_peak_bytes, "backward": self.backward_peak_bytes,
                 "optimizer": self.optimizer_peak_bytes}
        return max(peaks, key=peaks.get)

    def record(self) -> dict:
        """Flat columns for a profile record."""
        return {
            "train_mem_est_bytes": self.train_peak_bytes,
            "train_mem_est_phase": self.train_peak_phase,
            "infer_mem_est_bytes": self.infer_peak_bytes,
            "est_weights_bytes": self.weights_bytes,
            "est_optimizer_bytes": self.optimizer_bytes,
            "est_activations_bytes": self.activations_bytes,
        }


# ----------------------------------------------------------------------------- the walk


@dataclass
class _T:
    """A tensor of the forward pass: a name (tensors saved by several operators count once),
    its bytes per element, its size in elements, and whether its memory is (B, C, N)-ordered."""

    name: str
    elem: int
    numel: int
    transposed: bool = False

    @property
    def bytes(self) -> int:
        return self.elem * self.numel


@dataclass
class _Part:
    name: str
    params: int  # parameter count
    fwd_transient: int = 0  # bytes on top of everything saved so far, at its worst forward moment
    bwd_transient: int = 0  # bytes of gradients in flight at its worst backward moment
    infer_live: int = 0  # bytes of activations alive at its worst inference moment
    buffer_bytes: int = 0  # fixed tensors that are not parameters (counted with the weights)


class _Walk:
    """Collects saved tensors (by name) and parts, in forward order."""

    def __init__(self, batch: int, amp_elem: int, device: str, attention: str):
        self.B = batch
        self.e = amp_elem  # bytes of a matmul output (4 without autocast)
        self.amp = amp_elem != F32
        self.device = device
        self.attention = attention
        self.saved: dict[str, list[int]] = {}  # name -> [bytes, index of the first part saving it]
        self.parts: list[_Part] = []
        self._n = 0

    def new(self, prefix: str, elem: int, numel: int, transposed: bool = False) -> _T:
        self._n += 1
        return _T(f"{prefix}#{self._n}", elem, numel, transposed)

    def save(self, t: _T) -> None:
        if t.name not in self.saved:
            self.saved[t.name] = [t.bytes, len(self.parts)]

    def save_bytes(self, prefix: str, nbytes: int) -> None:
        self.save(self.new(prefix, 1, nbytes))

    def end_part(self, part: _Part) -> None:
        self.parts.append(part)

    # -- operators shared by the parts
    def linear_input(self, x: _T) -> _T:
        """The tensor a linear layer saves: its input, or the 2-byte copy autocast makes."""
        if self.amp and x.elem != self.e:
            return self.new("cast", self.e, x.numel)
        if x.transposed:  # a (B, C, N)-ordered input is copied to fold it into a matrix
            return self.new("contig", x.elem, x.numel)
        return x

    def weight_cast(self, numel: int) -> None:
        """Under autocast each linear/conv weight is cast once and kept for backward."""
        if self.amp:
            self.save_bytes("wcast", self.e * numel)

    def layer_norm(self, x: _T, tokens: int) -> tuple[_T, _T]:
        """Save what LayerNorm keeps; return (its saved input, its output)."""
        if self.amp and self.device == "cuda" and x.elem != F32:  # CUDA autocast runs LayerNorm in fp32
            x = self.new("ln_in", F32, x.numel)
        self.save(x)
        self.save_bytes("ln_stats", 2 * F32 * self.B * tokens)
        return x, self.new("ln", x.elem, x.numel)


def _chain_peak(chain: list[_T]) -> int:
    """Bytes at the worst moment of a chain of operators each reading the previous one's
    output: an output and its input are alive together, then the input is dropped."""
    return max((a.bytes + b.bytes for a, b in zip(chain, chain[1:])), default=chain[0].bytes)


def _prefix_and_pos(w: _Walk, layout: Layout, x: _T) -> tuple[list[_T], int, int]:
    """The class token joined in front of the stem's tokens and the position embedding added.
    Returns the tensors made (``x`` first, the first stage's input last), the parameters and
    the bytes of buffers."""
    B, d, n = w.B, layout.stages[0].hidden, layout.stages[0].tokens
    chain = [x]
    params = buffers = 0
    if layout.num_prefix_tokens:
        # cat promotes a 2-byte stem output to the fp32 class token's dtype, in (B, N, C) order
        chain.append(w.new("cat", F32, B * n * d))
        params += d
    if layout.pos != "none":
        # the add is fp32 (the embedding is) and follows its first operand's memory order
        chain.append(w.new("pos", F32, B * n * d, transposed=chain[-1].transposed))
        if layout.pos == "learned":
            params += n * d
        else:  # sincos: a fixed buffer
            buffers += F32 * n * d
    return chain, params, buffers


def _embed(w: _Walk, layout: Layout) -> _T:
    B, d = w.B, layout.stages[0].hidden
    p, P = layout.patch_size, layout.num_patches
    image = B * 3 * layout.image_size ** 2
    if w.amp:  # the conv keeps a 2-byte copy of the image and of its weight
        w.save_bytes("img_cast", w.e * image)
        w.weight_cast(3 * p * p * d)
    # The (B, C, P) conv output is only transposed, so the tokens keep a (B, C, N) memory
    # order until something copies them (the class token's cat does).
    conv = w.new("conv", w.e, B * P * d, transposed=True)
    chain, params, buffers = _prefix_and_pos(w, layout, conv)
    peak = _chain_peak(chain)
    # Inference: under autocast the conv casts the image, its weight and bias on the fly.
    casts = w.e * (image + 3 * p * p * d + d) if w.amp else 0
    w.end_part(_Part("embed", 3 * p * p * d + d + params, fwd_transient=peak, bwd_transient=peak,
                     infer_live=max(casts + conv.bytes, peak), buffer_bytes=buffers))
    return chain[-1]


def _t2t_embed(w: _Walk, layout: Layout) -> _T:
    """Tokens-to-Token: soft splits (unfold, which saves nothing), each but the last followed
    by a T2T layer (Transformer or Performer kind) on the unfolded patches and the tokens seen
    as an image again (a view); then a Linear to the first stage's width."""
    B, t, d = w.B, layout.stem.token_dim, layout.stages[0].hidden
    performer = layout.stem.kind == "t2t"
    sides = t2t_sides(layout.image_size)
    widths = (3 * 7 * 7, t * 3 * 3, t * 3 * 3)  # channels x window of each soft split
    x = None  # the image
    for i, (side, c) in enumerate(zip(sides, widths)):
        # unfold's (B, c, L) output, transposed: (B, C, N)-ordered tokens, in the input's dtype
        split = w.new("unfold", F32 if x is None else x.elem, B * side * side * c, transposed=True)
        inp = 0 if x is None else x.bytes
        # Backward: the split's gradient folded back by col2im, whose output keeps a storage as
        # large as the columns it folds; none flows into the image.
        fold = 0 if x is None else split.bytes + max(split.bytes, inp)
        w.end_part(_Part(f"embed.split{i + 1}", 0, fwd_transient=inp + split.bytes, bwd_transient=fold,
                         infer_live=inp + split.bytes))
        x = split
        if i < 2:
            n = side * side
            # the gradient the next split's col2im hands back to this layer's output
            out_grad = w.e * max(B * sides[i + 1] ** 2 * widths[i + 1], B * n * t)
            if performer:
                x = _performer_layer(w, f"embed.t2t{i + 1}", x, n, c, t, out_grad)
            else:
                as_stage = Stage(1, n, t, t, 1, qkv_bias=False)
                x = _layer(w, f"embed.t2t{i + 1}", x, n, as_stage, None, n, d_in=c, out_grad=out_grad)
    w.save(w.linear_input(x))
    w.weight_cast(widths[2] * d)
    out = w.new("project", w.e, B * layout.num_patches * d)
    chain, params, buffers = _prefix_and_pos(w, layout, out)
    casts = w.e * (x.numel + widths[2] * d + d) if w.amp else x.elem * x.numel  # the input cast or copy
    peak = max(x.bytes + casts + out.bytes, _chain_peak(chain))
    w.end_part(_Part("embed", widths[2] * d + d + params, fwd_transient=peak, bwd_transient=peak,
                     infer_live=peak, buffer_bytes=buffers))
    return chain[-1]


def _ps_embed(w: _Walk, layout: Layout) -> _T:
    """PS-ViT's stem: the ResNet feature extractor, then ``iters`` sampling iterations (grid
    samples of the feature map at the current points, the points' embedding and the previous
    tokens added, a transformer layer, the offsets predicted from its output), then the class
    token and position embedding."""
    B, stem, first = w.B, layout.stem, layout.stages[0]
    d, P = first.hidden, stem.points ** 2
    hw1 = unfold_length(layout.image_size, 7, 2, 3) ** 2  # conv 7x7/2
    hw = ps_feature_size(layout.image_size) ** 2  # after the max pool 3x3/2
    feat = _ps_conv(w, hw1, hw)
    feat = _bottleneck(w, "embed.layer1", feat, 64, 64, stem.fe_width, hw)
    feat = _bottleneck(w, "embed.layer2", feat, stem.fe_width, 64, d, hw)
    as_stage = Stage(1, P, d, first.mlp, first.heads, qkv_bias=first.qkv_bias)
    nd, coords, feat_grad = F32 * B * P * d, F32 * B * P * 2, F32 * B * d * hw
    last = stem.iters - 1
    tokens = None
    for t in range(stem.iters):
        # grid_sample keeps the feature map and the grid; once the points move (t > 0), the
        # product of the points with the 2-element pixel scale keeps that scale (a tensor made
        # in the forward pass); the points' embedding keeps its (B, P, 2) input.
        w.save(feat)
        w.save_bytes("grid", coords)
        if t:
            w.save_bytes("scale", 2 * F32)
        w.save_bytes("pos_in", coords)
        # The samples come (B, C, P)-ordered and the sums with them (h: the samples, the
        # points' embedding and the previous tokens) keep that order. The samples stay alive
        # to the next iteration, and so do the previous tokens (unsaved when the offsets'
        # Linear keeps a copy of them).
        sampled = w.new("sampled", F32, B * P * d, transposed=True)
        h = w.new("h", F32, B * P * d, transposed=True)
        prev = 0 if tokens is None else tokens.bytes
        prev_unsaved = prev if tokens is not None and tokens.transposed else 0
        # Backward: the feature-map gradients of the iterations are summed into one, alive
        # from the last iteration's sample to the feature extractor.
        later_feat_grad = 0 if t == last else feat_grad
        # The gradient of h next to this sample's gradient of the feature map (zero-filled)
        # and of the grid, and the points' embedding's weight gradient; then (h's gradient,
        # the grid and the embedding's input gone) the sum of the feature-map gradients, made
        # out of place next to both.
        bwd = max(nd + later_feat_grad + feat_grad + (coords if t else 0) + F32 * 3 * d,
                  2 * later_feat_grad + feat_grad - 2 * coords if later_feat_grad else 0)
        # Inference: before h is replaced, the previous h, the samples, the embedding and h.
        infer = feat.bytes + prev + (4 * nd if t else 3 * nd)
        # Forward: the samples, the embedding (or the sum before the previous tokens are added)
        # and h.
        w.end_part(_Part(f"sampling.sample{t + 1}", 3 * d if t == last else 0,
                         fwd_transient=sampled.bytes + 2 * nd + prev_unsaved, bwd_transient=bwd, infer_live=infer,
                         buffer_bytes=0 if t else F32 * P * 2))  # the initial points
        tokens = _layer(w, f"sampling.layer{t + 1}", h, P, as_stage, None, P,
                        held=sampled.bytes + prev_unsaved, infer_held=feat.bytes + sampled.bytes + prev,
                        grad_held=later_feat_grad, shared_weights=stem.share and t < last)
        if t < last:
            # The offsets' Linear keeps its input (a contiguous copy of (B, C, N)-ordered
            # tokens). Backward: the offsets' gradient and the tokens' next to the gradient of
            # the next h (the tokens' other gradient) and of the feature map.
            w.save(w.linear_input(tokens))
            unsaved = sampled.bytes + (tokens.bytes if tokens.transposed else 0)
            shared = stem.share and t < last - 1
            w.end_part(_Part(f"sampling.offset{t + 1}", 0 if shared else 2 * d + 2, fwd_transient=unsaved + coords,
                             bwd_transient=feat_grad + 2 * nd + coords + F32 * (2 * d + 2),
                             infer_live=feat.bytes + sampled.bytes + 2 * nd + coords))
    chain, params, buffers = _prefix_and_pos(w, layout, tokens)
    peak = _chain_peak(chain)
    w.end_part(_Part("embed", params, fwd_transient=peak, bwd_transient=peak, infer_live=peak, buffer_bytes=buffers))
    return chain[-1]


def _ps_conv(w: _Walk, hw1: int, hw: int) -> _T:
    """ResNet's stem: conv 7x7/2 (64 channels, no bias), BatchNorm, ReLU (in place, so it keeps
    BatchNorm's output) and max pool 3x3/2 (which keeps that too, and int64 indices)."""
    B = w.B
    c1, idx = F32 * B * 64 * hw1, 8 * B * 64 * hw
    w.save_bytes("bn_in", c1)
    w.save_bytes("bn_stats", F32 * 2 * 64)
    w.save_bytes("relu", c1)
    w.save_bytes("maxpool_idx", idx)
    out = w.new("maxpool", F32, B * 64 * hw)
    # Backward: max pool's zero-filled input gradient next to the incoming one; then (the
    # indices gone) ReLU's gradient next to it; BatchNorm's comes after ReLU's output is
    # freed, and no gradient flows into the image.
    bwd = max(out.bytes + c1, 2 * c1 - idx)
    w.end_part(_Part("embed.conv", 3 * 49 * 64 + 2 * 64, fwd_transient=out.bytes, bwd_transient=bwd,
                     infer_live=max(2 * c1, c1 + out.bytes), buffer_bytes=_bn_buffers(64)))
    return out


def _bn_buffers(c: int) -> int:
    """A BatchNorm's running mean and variance, and its int64 batch counter."""
    return F32 * 2 * c + 8


def _bottleneck(w: _Walk, name: str, x: _T, c_in: int, mid: int, c_out: int, hw: int) -> _T:
    """A ResNet bottleneck on ``hw`` pixels: convs 1x1, 3x3, 1x1 (no bias) each followed by
    BatchNorm (which keeps its input and two C-wide statistics), ReLU in place after the first
    two BatchNorms and after the sum with the identity (a 1x1 conv + BatchNorm when the width
    changes); each ReLU keeps its output, which the next conv reads."""
    B = w.B
    ds = c_in != c_out
    M, O, X = F32 * B * mid * hw, F32 * B * c_out * hw, x.bytes
    w.save(x)  # the first conv's (and the shortcut conv's) input
    if ds:
        w.save_bytes("bn_in", O)
        w.save_bytes("bn_stats", F32 * 2 * c_out)
    for _ in range(2):
        w.save_bytes("bn_in", M)
        w.save_bytes("bn_stats", F32 * 2 * mid)
        w.save_bytes("relu", M)
    w.save_bytes("bn_in", O)
    w.save_bytes("bn_stats", F32 * 2 * c_out)
    out = w.new("relu", F32, B * c_out * hw)
    w.save(out)
    params = c_in * mid + 9 * mid * mid + mid * c_out + 2 * (2 * mid + c_out) + (c_in * c_out + 2 * c_out if ds else 0)
    buffers = 2 * _bn_buffers(mid) + _bn_buffers(c_out) * (2 if ds else 1)

    # Backward, op by op: ``cur`` is what is alive beyond everything saved (the gradients in
    # flight and the weight gradients made so far, minus the saved tensors already freed).
    # The sum's gradient is also the shortcut's, which runs last (it was made first).
    moments = []
    cur = O  # the gradient of the output
    for new, freed in (
        (O, O + O),  # ReLU: the sum's gradient; the incoming gradient and ReLU's output go
        (O + F32 * 2 * c_out, O + F32 * 2 * c_out),  # BatchNorm-3: its input and statistics go
        (M + F32 * mid * c_out, O),  # conv3: its input's gradient and its weight's
        (M, M + M),  # ReLU-2
        (M + F32 * 2 * mid, M + M + F32 * 2 * mid),  # BatchNorm-2
        (M + F32 * 9 * mid * mid, M),  # conv2
        (M, M + M),  # ReLU-1
        (M + F32 * 2 * mid, M + M + F32 * 2 * mid),  # BatchNorm-1
        (X + F32 * c_in * mid, M),  # conv1: the input's gradient
    ):
        cur += new
        moments.append(cur)
        cur -= freed
    if ds:
        cur += O + F32 * 2 * c_out  # the shortcut's BatchNorm
        moments.append(cur)
        cur -= O + O + O + F32 * 2 * c_out  # the sum's gradient, its input and statistics
        moments.append(cur + X + F32 * c_in * c_out)  # the shortcut conv; its gradient is added in place
    # Inference: the input (held by the caller), the shortcut, and at most three of the
    # block's tensors at a time.
    ident = O if ds else 0
    infer = X + max(2 * O if ds else 0, ident + 3 * M, ident + M + 2 * O)
    w.end_part(_Part(name, params, fwd_transient=ident + O, bwd_transient=max(moments), infer_live=infer,
                     buffer_bytes=buffers))
    return out


def _performer_layer(w: _Walk, name: str, x: _T, n: int, c: int, t: int, out_grad: int) -> _T:
    """T2T-ViT's Performer layer on ``n`` tokens from ``c`` to ``t`` channels, in fp32 (the
    estimate refuses T2T stems under autocast); ``out_grad``: bytes of the gradient arriving
    at its output, (B, C, N)-ordered (col2im's).

    Its attention is plain tensor algebra on r = t / 2 random features, so autograd keeps,
    besides the kqv projection: exp and its scaled output for the features of k and of q (mul
    keeps k and q: the kqv tensor), the sum of k's features over the tokens, phi(k)^T v, the
    numerator and normaliser of the division and its output (the projection's input). The
    random directions are a buffer. The residual stream is v plus the projection: contiguous."""
    B = w.B
    r = t // 2
    nc, nt, nr, bn = B * n * c, B * n * t, B * n * r, B * n
    w.layer_norm(x, n)
    w.save_bytes("ln1", F32 * nc)  # the kqv projection's input
    w.save_bytes("kqv", F32 * 3 * nt)
    for feature in ("k", "q"):
        w.save_bytes(f"exp_{feature}", F32 * nr)
        w.save_bytes(f"phi_{feature}", F32 * nr)
    w.save_bytes("phi_k_sum", F32 * B * r)
    w.save_bytes("kptv", F32 * B * t * r)
    w.save_bytes("numerator", F32 * nt)
    w.save_bytes("normaliser", F32 * bn)
    w.save_bytes("y", F32 * nt)
    x1 = w.new("res", F32, nt)
    w.layer_norm(x1, n)
    w.save_bytes("ln2", F32 * nt)
    w.save_bytes("fc1_out", F32 * nt)
    w.save_bytes("gelu_out", F32 * nt)
    x2 = w.new("res", F32, nt)

    # Forward: fc2's output next to the layer's output, and the normaliser before its epsilon
    # (a local of the forward) alive throughout.
    fwd = F32 * (2 * nt + bn)
    # Inference: the input (held by the caller) and the layer's locals (the kqv tensor, the
    # features phi(k) and phi(q), the normaliser, phi(k)^T v, the projection's input, the
    # residual) alive together. The worst moments: LayerNorm-1 next to the kqv projection;
    # q's features (exp of a matmul minus the halved squared norm of q, whose elementwise
    # square is alive while it is summed) next to phi(k); the MLP's LayerNorm and hidden tensors.
    locals_ = x.bytes + F32 * (3 * nt + 2 * nr + bn + B * t * r + 2 * nt)
    infer = max(x.bytes + F32 * (nc + 3 * nt), x.bytes + F32 * (3 * nt + 2 * nr + nt + bn), locals_ + F32 * 3 * nt)
    # Backward, from the layer's output: its gradient (and the contiguous copy fc2's backward
    # makes of it) next to the gradient of GELU's output and fc2's weight gradient.
    bwd_mlp = out_grad + F32 * (nt + nt + t * t + t)
    mlp_grads, proj_grads = 2 * (t * t + t) + 2 * t, t * t + t  # fc1, fc2, LayerNorm-2; the projection
    # At the division's backward the MLP's saved tensors and y are gone; the gradient of the
    # residual (v's, held until k's and q's arrive), of y, of the numerator and the three
    # temporaries of the normaliser's gradient are alive.
    bwd_div = F32 * (6 * nt + mlp_grads + proj_grads - (5 * nt + 2 * bn))
    # At the kqv projection's backward only the layer input, LayerNorm-1's statistics and
    # output remain; the gradients of kqv and of LayerNorm-1's output (c wide) are alive.
    freed = 9 * nt + 4 * nr + B * r + B * t * r + 3 * bn
    bwd_qkv = F32 * (3 * nt + nc + 3 * t * c + 3 * t + mlp_grads + proj_grads - freed)
    w.end_part(_Part(name, t2t_layer_params(c, t, performer=True), fwd_transient=fwd,
                     bwd_transient=max(bwd_mlp, bwd_div, bwd_qkv), infer_live=infer, buffer_bytes=F32 * r * t))
    return x2


def _layer(w: _Walk, name: str, x: _T, n: int, stage: Stage, kv: _T | None, m_tokens: int,
           d_in: int | None = None, out_grad: int | None = None, held: int = 0, infer_held: int = 0,
           grad_held: int = 0, shared_weights: bool = False) -> _T:
    """One pre-norm transformer layer on ``n`` tokens (keys/values from ``kv`` if given).

    With ``d_in`` it is T2T-ViT's Transformer layer: ``d_in``-wide input tokens, and ``v``
    (the qkv projection's, ``stage.hidden`` wide) instead of the input as the residual;
    ``out_grad`` is then the bytes of the (B, C, N)-ordered gradient arriving at its output.

    ``held``: bytes the caller keeps alive, unsaved, while the layer runs forward (PS-ViT's
    samples and previous tokens), ``infer_held`` the same in inference, where nothing is
    saved (also the feature map); ``grad_held``: bytes of gradients alive outside the layer
    during its backward (PS-ViT's feature-map gradient). ``shared_weights``: the weights'
    gradients exist already when its backward runs (a PS-ViT iteration sharing the layer of a
    later one, whose part counts the parameters): autograd sums each new weight gradient
    with them out of place (in the weight's input buffer), so both are alive next to the sum."""
    B, d, m, h, e = w.B, stage.hidden, stage.mlp, stage.heads, w.e
    nd, md = B * n * d, B * m_tokens * d
    t2t = d_in is not None
    d_in = d_in or d
    fused = w.attention == "fused"

    # attention
    x_saved, ln1 = w.layer_norm(x, n)
    q_in = w.linear_input(ln1)
    w.save(q_in)
    if kv is None:
        qkv = w.new("qkv", e, 3 * nd)
        q_bytes, kv_bytes = nd * e, 2 * nd * e
    else:
        _, ln_kv = w.layer_norm(kv, m_tokens)
        kv_in = w.linear_input(ln_kv)
        w.save(kv_in)
        q_bytes, kv_bytes = nd * e, 2 * md * e
        qkv = None
    w.weight_cast(3 * d_in * d + d * d)
    if fused:
        if qkv is not None:
            w.save(qkv)
        else:
            w.save_bytes("q", q_bytes)
            w.save_bytes("kv", kv_bytes)
        out = w.new("attn_out", e, nd)
        w.save(out)
        w.save_bytes("lse", F32 * B * h * n)
        attn_scratch = 0
    else:
        # math: q and k scaled, v made contiguous, the attention matrix after softmax, and the
        # output copied back to (B, N, C) order. The CPU kernel computes 2-byte attention in fp32.
        a = F32 if (w.amp and w.device == "cpu") else e
        w.save_bytes("q_scaled", a * nd)
        w.save_bytes("k_scaled", a * md)
        if a == e and (B == 1 or h == 1):
            # v (a strided view into the qkv or kv projection) folds into (B * h, M, d / h)
            # without a copy, so the matmul keeps the whole projection output alive instead
            w.save(qkv if qkv is not None else w.new("kv", e, 2 * B * m_tokens * d))
        else:
            w.save_bytes("v", a * md)
        w.save_bytes("attn_probs", a * B * h * n * m_tokens)
        out = w.new("attn_out", e, nd)
        w.save(out)
        attn_scratch = a * (nd + 2 * md) + 2 * a * B * h * n * m_tokens  # q, k, v copies, scores, probabilities
    if t2t:  # v + the projection: a matmul output's dtype, (B, N, C)-ordered
        r, transposed = e, False
    else:  # residual dtype: fp32 stays fp32, 2-byte stays 2-byte
        r, transposed = (F32 if x.elem == F32 else e), x.transposed
    x1 = w.new("res", r, nd, transposed=transposed)

    # MLP
    _, ln2 = w.layer_norm(x1, n)
    fc1_in = w.linear_input(ln2)
    w.save(fc1_in)
    w.save_bytes("fc1_out", e * B * n * m)
    w.save_bytes("gelu_out", e * B * n * m)
    w.weight_cast(2 * d * m)
    x2 = w.new("res", r, nd, transposed=transposed)

    # Inference keeps nothing for backward; the caller holds x while the layer runs. The worst
    # moments: the qkv projection, the attention kernel and the output projection (x,
    # LayerNorm-1, q/k/v, the output, its projection), or the MLP (x, x1, LayerNorm-2 and the
    # hidden tensors). Under autocast each linear casts its weight and its fp32 input on the fly.
    # A T2T layer drops LayerNorm-1 after the qkv projection but holds q, k, v and the
    # attention output to its end (they are its locals, and v is the residual).
    amp = w.amp
    kv_live = 0 if kv is None else kv.bytes + (md * kv.elem) + (md * e if amp and kv.elem != e else 0)
    ln1_cast = B * n * d_in * e if amp and ln1.elem != e else 0
    base = x.bytes + ln1.bytes + kv_live
    wc = e if amp else 0  # bytes per element of a weight's cast
    if kv is None:  # one qkv projection
        qkv_moment = base + ln1_cast + wc * 3 * d_in * d + q_bytes + kv_bytes
    else:  # the q projection, then the kv projection (each casts its slice of the weight)
        qkv_moment = base + max(ln1_cast + wc * d * d + q_bytes, q_bytes + wc * 2 * d * d + kv_bytes)
    if t2t:
        base = x.bytes
    proj = base + q_bytes + kv_bytes + nd * e + (0 if fused else nd * e) + wc * d * d + nd * e
    moments = [qkv_moment, base + q_bytes + kv_bytes + nd * e + attn_scratch, proj]
    ln2_cast = nd * e if amp and ln2.elem != e else 0
    mlp = x.bytes + x1.bytes + ln2.bytes
    if t2t:
        moments.append(proj - wc * d * d + x1.bytes)  # the residual add
        mlp += q_bytes + kv_bytes + nd * e
    moments += [
        mlp + ln2_cast + (e * d * m if amp else 0) + e * B * n * m,  # fc1
        mlp + 2 * e * B * n * m,  # GELU: its input and output
        mlp + e * B * n * m + (e * d * m if amp else 0) + nd * e,  # fc2
    ]
    # Backward starts with the MLP: the gradient of the layer output, of the GELU output and
    # of fc2's weight are alive while everything the layer saved still is.
    # (autocast adds the 2-byte copy of the incoming gradient that fc2's backward multiplies).
    # A T2T layer's output gradient is col2im's (B, C, N)-ordered one, which fc2's backward copies.
    g_out = x2.bytes if out_grad is None else out_grad + nd * e
    bwd_mlp = g_out + (nd * e if amp and x2.elem != e else 0) + e * B * n * m + e * (d * m + d)
    if shared_weights:  # fc2's saved input is released before its weight gradient is summed
        bwd_mlp = max(bwd_mlp, bwd_mlp + F32 * (d * m + d) - e * B * n * m)
    # Then attention: the MLP's saved tensors are gone and its gradients exist; the gradient of
    # the residual, of the attention output and of q, k and v (separately, then joined) are
    # alive (math: the gradients of the attention matrix before and after softmax instead).
    mlp_freed = x1.bytes + fc1_in.bytes + 2 * e * B * n * m + 2 * F32 * B * n
    mlp_grads = 0 if shared_weights else F32 * (2 * d * m + m + 3 * d)
    proj_grads = 0 if shared_weights else F32 * (d * d + d)
    if fused:  # at the kernel's backward: the output's gradient and dq, dk, dv
        attn_grads = e * nd + e * (nd + 2 * md)
    else:  # at softmax's backward: the gradients of v and of the attention matrix before and after
        a = F32 if (amp and w.device == "cpu") else e
        attn_grads = a * md + 2 * a * B * h * n * m_tokens
    bwd_attn = x1.bytes + attn_grads + mlp_grads - mlp_freed
    # Then the qkv projection's backward: the attention's saved tensors make way for the
    # gradient of LayerNorm-1's output (d_in wide) next to the attention's weight gradients.
    # It dominates when the input is much wider than the layer (T2T layers).
    in_grad = B * n * d_in * e
    bwd_qkv = x1.bytes + in_grad + F32 * 3 * d_in * d + proj_grads + mlp_grads - mlp_freed - nd * e
    if shared_weights:  # the projection's saved input is released before the sum
        bwd_qkv = max(bwd_qkv, bwd_qkv + F32 * 3 * d_in * d - q_in.bytes)
    # Forward: fc2's output next to the new residual; the math kernel's attention scores (and,
    # on CPU under autocast, fp32 copies of q, k and v) are alive next to what it saves.
    fwd = nd * e + x2.bytes
    if not fused:
        a = F32 if (amp and w.device == "cpu") else e
        scores = B * h * n * m_tokens
        if a == e:
            fwd = max(fwd, a * scores + nd * e)
        else:  # fp32 copies of q, k, v and the scaled q, k; then the scores, or the 2-byte
            # probabilities with the fp32 output and its 2-byte cast
            upcast = a * (nd + 2 * md) + a * (nd + md)
            fwd = max(fwd, upcast + max(a * scores, e * scores + a * nd + e * nd))
    params = t2t_layer_params(d_in, d, performer=False) if t2t else layer_params(d, m, stage.qkv_bias)
    w.end_part(_Part(name, 0 if shared_weights else params, fwd_transient=held + fwd,
                     bwd_transient=grad_held + max(bwd_mlp, bwd_attn, bwd_qkv), infer_live=infer_held + max(moments)))
    return x2


def _transition(w: _Walk, name: str, y: _T, prev: Stage, stage: Stage, prefix: int) -> tuple[_T, _T | None]:
    """Projection to the new width (on the whole sequence), then the pool, then a new position
    embedding. Returns the pooled sequence and, for pool-query-only attention, the unpooled one."""
    B = w.B
    params = 0
    z = y
    fwd = 0
    if prev.hidden != stage.hidden:
        w.save(w.linear_input(y))
        w.weight_cast(prev.hidden * stage.hidden)
        z = w.new("proj", w.e, B * prev.tokens * stage.hidden)
        params += prev.hidden * stage.hidden + stage.hidden
        fwd += z.bytes
    x = z
    if stage.pools:
        d, n_in, n_out = stage.hidden, prev.tokens - prefix, stage.tokens - prefix
        out_numel = B * n_out * d
        if not stage.pool2d and not stage.kernel and n_in % stage.stride == 0:
            # a reshape into groups and a reduction: amax keeps its input and output, mean nothing
            if stage.pool == "max":
                w.save(z)
                pooled = w.new("amax", z.elem, out_numel)
                w.save(pooled)
            else:
                pooled = w.new("mean", z.elem, out_numel)
        else:
            # pooling kernels, which keep their input (a view of z) and, max, the int64 indices
            # of the maxima. 1D pools run on the (B, C, N) transpose and give (B, C, N')-ordered
            # tokens; 2D pools see the tokens as a (B, C, g, g) grid (a view) and keep its
            # memory order (channels-last for (B, N, C)-ordered tokens), so the pooled tokens
            # are ordered as z is.
            w.save(z)
            if stage.pool_op == "max":
                w.save_bytes("max_idx", 8 * out_numel)
            pooled = w.new("pool", z.elem, out_numel, transposed=z.transposed if stage.pool2d else True)
        chain = [pooled]
        if prefix:
            chain.append(w.new("cat", z.elem, B * stage.tokens * d))
        if stage.newpos:  # HVT: fp32 (the embedding is), in its first operand's memory order
            chain.append(w.new("newpos", F32, B * stage.tokens * d, transposed=chain[-1].transposed))
            params += stage.tokens * d
        x = chain[-1]
        fwd += _chain_peak(chain)
    kv = z if (stage.pools and stage.pqo) else None
    w.end_part(_Part(name, params, fwd_transient=fwd, bwd_transient=z.bytes + (x.bytes if x is not z else 0),
                     infer_live=y.bytes + fwd))
    return x, kv


def _head(w: _Walk, x: _T, layout: Layout, num_classes: int) -> None:
    B, d, C = w.B, layout.stages[-1].hidden, num_classes
    n = layout.stages[-1].tokens
    _, out = w.layer_norm(x, n)
    if layout.head == "cls":
        # the head reads out[:, 0], a view: without autocast it keeps the whole normed sequence
        feat = w.new("cast", w.e, B * d) if (w.amp and out.elem != w.e) else out
        pooled_bytes = 0
    else:
        pooled = w.new("mean", out.elem, B * d)
        feat = w.linear_input(pooled)
        pooled_bytes = pooled.bytes
    w.save(feat)
    w.weight_cast(d * C)
    logits = w.e * B * C
    log_probs = F32 * B * C
    w.save_bytes("log_softmax", log_probs)
    w.save_bytes("loss", 2 * F32)  # loss and nll's total weight
    params = 2 * d + d * C + C
    # Inference: a class-token head keeps the normed sequence (it reads a view of it); the
    # average head frees it once the mean is taken.
    cast_and_weight = B * d * w.e + w.e * (d * C + C) if w.amp else 0
    if layout.head == "cls":
        infer_live = out.bytes + cast_and_weight + logits
    else:
        infer_live = max(out.bytes + pooled_bytes, pooled_bytes + cast_and_weight + logits)
    w.end_part(_Part("head", params, fwd_transient=logits + (F32 * B * C if w.amp else 0),
                     # the loss's and log-softmax's gradients; then (log-softmax freed) the
                     # gradient of the final LayerNorm's output and of its input
                     bwd_transient=max(2 * log_probs, 2 * x.bytes - log_probs), infer_live=infer_live))


# ----------------------------------------------------------------------------- the estimate


def estimate_memory(x, batch_size: int, *, dtype: str = "fp32", device: str = "cpu", attention: str = "fused",
                    optimizer: str = "adamw", num_classes: int = 1000) -> MemoryEstimate:
    """Estimate the memory of one training step and one inference pass of a layout.

    ``dtype``: ``fp32``, or ``bf16``/``fp16`` autocast (weights stay fp32). ``device``:
    ``cpu`` or ``cuda`` (the implementation details that differ; see the module docstring).
    The default, as ``funnelbench memory``'s, is ``cpu``: the rules checked against measured
    peaks; the ``cuda`` rules follow torch's CUDA code but are checked on a GPU only by
    ``pytest -m cuda`` (``tests/test_cuda.py``).
    ``attention``: ``fused`` (flash, memory-efficient, cuDNN or the CPU flash kernel: what
    runs by default) or ``math``. Raises :class:`UnmodelledLayout` for layouts with parts this
    model does not know.
    """
    from .presets import resolve

    layout: Layout = resolve(x)
    check_int(batch_size, "batch size")
    check_int(num_classes, "num_classes")
    if dtype not in ("fp32", "bf16", "fp16"):
        raise UsageError(f"unknown dtype {dtype!r}; use fp32, bf16 or fp16")
    device = "cuda" if str(device).startswith("cuda") else str(device)
    if device not in ("cpu", "cuda"):
        raise UsageError(f"unknown device {device!r}; use cpu or cuda")
    if attention not in ("fused", "math"):
        raise UsageError(f"unknown attention kernel class {attention!r}; use fused or math")
    if optimizer not in ("adamw", "sgd"):
        raise UsageError(f"unknown optimizer {optimizer!r}; use adamw or sgd")
    check_modelled(layout)  # first: a part the estimate does not know is named as such
    validate_layout(layout)
    if layout.stem.kind != "patch" and dtype != "fp32":
        # The Transformer T2T layers' saved tensors are modelled under autocast too, but not
        # which of their mixed-dtype gradients coexist in the backward pass (the measured peak
        # differs by 15 %); the Performer's fp32 features, the PS stem's convolutions,
        # BatchNorms and grid samples under autocast are not modelled at all.
        raise UnmodelledLayout(f"the memory estimate does not model the {_STEM_NAMES[layout.stem.kind]} under {dtype} "
                               f"autocast in layout {str(layout)!r}; it models it in fp32")

    B = batch_size
    w = _Walk(B, F32 if dtype == "fp32" else 2, device, attention)
    prefix = layout.num_prefix_tokens
    if layout.stem.is_t2t:
        x = _t2t_embed(w, layout)
    elif layout.stem.kind == "ps":
        x = _ps_embed(w, layout)
    else:
        x = _embed(w, layout)
    prev = None
    layer = 0
    for i, stage in enumerate(layout.stages):
        kv = None
        if prev is not None and (stage.pools or stage.hidden != prev.hidden):
            x, kv = _transition(w, f"stage{i + 1}.transition", x, prev, stage, prefix)
        for j in range(stage.layers):
            x = _layer(w, f"stage{i + 1}.layer{j + 1}", x, stage.tokens, stage,
                       kv if j == 0 else None, prev.tokens if (j == 0 and kv is not None) else stage.tokens)
            layer += 1
        prev = stage
    _head(w, x, layout, num_classes)

    cost = count(layout, num_classes=num_classes)
    sizes = _param_sizes(layout, num_classes)
    if sum(sizes) != cost.params:  # the model grew a part this module does not know
        raise UnmodelledLayout(f"the memory estimate's parameter list ({sum(sizes)}) differs from the analytic count "
                               f"({cost.params}) for layout {str(layout)!r}; the model has parts it does not model")
    weights = F32 * cost.params
    grads = weights
    if optimizer == "adamw":
        opt_state = 2 * weights + (F32 * len(sizes) if device == "cpu" else 0)
        # torch's default AdamW: a loop over tensors on CPU, all tensors at once on CUDA (one
        # temporary per tensor).
        opt_scratch = F32 * _adamw_cpu_scratch(sizes) if device == "cpu" else weights
    else:
        opt_state, opt_scratch = weights, 0
    inputs = F32 * B * 3 * layout.image_size ** 2 + LABEL * B
    buffers = sum(p.buffer_bytes for p in w.parts)
    base = weights + buffers + opt_state + inputs

    # Forward: everything saved so far plus the part's own transient.
    by_part = [0] * len(w.parts)
    for nbytes, first in w.saved.values():
        by_part[first] += nbytes
    fwd_peak, running = base, base
    for part, saved in zip(w.parts, by_part):
        running += saved
        fwd_peak = max(fwd_peak, running + part.fwd_transient)
    activations = sum(by_part)

    # Backward: last part first; a saved tensor is freed once the earliest part that saved it
    # is done, and each part's gradients appear as it finishes.
    free_after = [0] * len(w.parts)
    for nbytes, first in w.saved.values():
        free_after[first] += nbytes
    alive, grads_so_far = activations, 0
    bwd_peak = base
    for i in range(len(w.parts) - 1, -1, -1):
        part = w.parts[i]
        bwd_peak = max(bwd_peak, base + alive + grads_so_far + part.bwd_transient)
        grads_so_far += F32 * part.params
        alive -= free_after[i]
    bwd_peak = max(bwd_peak, base + grads_so_far)

    opt_peak = base + grads + opt_scratch
    infer_peak = weights + buffers + F32 * B * 3 * layout.image_size ** 2 + max(p.infer_live for p in w.parts)

    parts = tuple(PartMemory(p.name, s, F32 * p.params) for p, s in zip(w.parts, by_part))
    return MemoryEstimate(
        layout=str(layout), batch_size=B, dtype=dtype, device=device, attention=attention, optimizer=optimizer,
        weights_bytes=weights, buffers_bytes=buffers, grads_bytes=grads, optimizer_bytes=opt_state, inputs_bytes=inputs,
        activations_bytes=activations, forward_peak_bytes=fwd_peak, backward_peak_bytes=bwd_peak,
        optimizer_peak_bytes=opt_peak, infer_peak_bytes=infer_peak, parts=parts,
    )


def _param_sizes(layout: Layout, num_classes: int) -> list[int]:
    """Elements of each parameter tensor, in ``model.parameters()`` order (from the parts'
    shapes: :meth:`funnelbench.parts.ModelParts.param_shapes`)."""
    return [math.prod(shape) for shape in describe(layout, num_classes).param_shapes()]


def _adamw_cpu_scratch(sizes: list[int]) -> int:
    """torch's CPU AdamW loops over tensors: ``denom = (exp_avg_sq.sqrt() / c).add_(eps)`` holds
    two temporaries of the tensor being updated while the previous tensor's ``denom`` is still
    referenced (elements)."""
    return max(2 * n + (sizes[i - 1] if i else 0) for i, n in enumerate(sizes))


def max_batch_size(x, budget_bytes: int, *, limit: int = 1 << 16, **kwargs) -> int:
    """The largest batch whose estimated training peak fits in ``budget_bytes`` (0 if none;
    ``limit`` if that fits)."""
    if not isinstance(budget_bytes, int) or isinstance(budget_bytes, bool) or not 0 < budget_bytes <= MAX_BUDGET_BYTES:
        raise UsageError(f"a memory budget is a whole number of bytes from 1 to 1 PiB (2**50), got {budget_bytes!r}")
    check_int(limit, "batch size limit")
    lo, hi = 0, 1
    while hi <= limit and estimate_memory(x, hi, **kwargs).train_peak_bytes <= budget_bytes:
        lo, hi = hi, hi * 2
    hi = min(hi, limit + 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if estimate_memory(x, mid, **kwargs).train_peak_bytes <= budget_bytes:
            lo = mid
        else:
            hi = mid
    return lo
