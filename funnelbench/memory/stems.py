"""The stems in the memory walk: how an image becomes the first stage's tokens, with the
class token and position embedding (each stem ends with the ``embed`` part). Patches
(:func:`patch_embed`), Tokens-to-Token (:func:`t2t_embed`, with :func:`performer_layer`) and
progressive sampling (:func:`ps_embed`, with :func:`ps_conv` and :func:`bottleneck`). Each
takes its stem part of :mod:`funnelbench.parts`.

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
"""

from __future__ import annotations

from ..parts import (
    EmbedPart,
    LayerPart,
    PatchStemPart,
    PSStemPart,
    T2TStemPart,
    bottleneck_shapes,
    linear_shapes,
    numel,
)
from .backbone import Around, layer, prefix_and_pos
from .walk import F32, PartMoments, T, Walk, chain_peak


def patch_embed(w: Walk, stem: PatchStemPart, embed: EmbedPart) -> T:
    """Patches: a p x p convolution with stride p, then the class token and position embedding."""
    B, d, c = w.B, stem.dim, stem.in_chans
    p, P = stem.patch_size, stem.patches
    image = B * c * stem.image_size**2
    if w.amp:  # the conv keeps a 2-byte copy of the image and of its weight
        w.save_bytes("img_cast", w.e * image)
        w.weight_cast(c * p * p * d)
    # The (B, C, P) conv output is only transposed, so the tokens keep a (B, C, N) memory
    # order until something copies them (the class token's cat does).
    conv = w.new("conv", w.e, B * P * d, transposed=True)
    chain, params, buffers = prefix_and_pos(w, embed, conv)
    peak = chain_peak(chain)
    # Inference: under autocast the conv casts the image, its weight and bias on the fly.
    casts = w.e * (image + stem.params) if w.amp else 0
    w.end_part(
        PartMoments(
            "embed",
            stem.params + params,
            fwd_transient=peak,
            bwd_transient=peak,
            infer_live=max(casts + conv.bytes, peak),
            buffer_bytes=buffers,
        )
    )
    return chain[-1]


def t2t_embed(w: Walk, stem: T2TStemPart, embed: EmbedPart) -> T:
    """Tokens-to-Token: soft splits (unfold, which saves nothing), each but the last followed
    by a T2T layer (Transformer or Performer kind) on the unfolded patches and the tokens seen
    as an image again (a view); then a Linear to the first stage's width."""
    B, t, d = w.B, stem.token_dim, stem.dim
    sides, widths = stem.sides, stem.widths  # tokens per side, channels x window of each soft split
    x = None  # the image
    for i, (side, c) in enumerate(zip(sides, widths)):
        # unfold's (B, c, L) output, transposed: (B, C, N)-ordered tokens, in the input's dtype
        split = w.new("unfold", F32 if x is None else x.elem, B * side * side * c, transposed=True)
        inp = 0 if x is None else x.bytes
        # Backward: the split's gradient folded back by col2im, whose output keeps a storage as
        # large as the columns it folds; none flows into the image.
        fold = 0 if x is None else split.bytes + max(split.bytes, inp)
        w.end_part(
            PartMoments(
                f"embed.split{i + 1}",
                0,
                fwd_transient=inp + split.bytes,
                bwd_transient=fold,
                infer_live=inp + split.bytes,
            )
        )
        x = split
        if i < 2:
            n = side * side
            # the gradient the next split's col2im hands back to this layer's output
            out_grad = w.e * max(B * sides[i + 1] ** 2 * widths[i + 1], B * n * t)
            if stem.performer:
                x = performer_layer(w, stem.layers[i], x, out_grad)
            else:
                x = layer(w, stem.layers[i], x, around=Around(out_grad=out_grad))
    w.save(w.linear_input(x))
    w.weight_cast(widths[2] * d)
    out = w.new("project", w.e, B * sides[2] ** 2 * d)
    chain, params, buffers = prefix_and_pos(w, embed, out)
    project = numel(linear_shapes(widths[2], d))
    casts = w.e * (x.numel + project) if w.amp else x.elem * x.numel  # the input cast or copy
    peak = max(x.bytes + casts + out.bytes, chain_peak(chain))
    w.end_part(
        PartMoments(
            "embed", project + params, fwd_transient=peak, bwd_transient=peak, infer_live=peak, buffer_bytes=buffers
        )
    )
    return chain[-1]


def ps_embed(w: Walk, stem: PSStemPart, embed: EmbedPart) -> T:
    """PS-ViT's stem: the ResNet feature extractor, then ``iters`` sampling iterations (grid
    samples of the feature map at the current points, the points' embedding and the previous
    tokens added, a transformer layer, the offsets predicted from its output), then the class
    token and position embedding."""
    B, d, P = w.B, stem.dim, stem.points**2
    hw1, hw = stem.conv_side**2, stem.feature_side**2  # after the conv 7x7/2, after the max pool 3x3/2
    feat = ps_conv(w, stem, hw1, hw)
    for i, (c_in, mid, c_out) in enumerate(stem.bottlenecks):
        feat = bottleneck(w, f"embed.layer{i + 1}", feat, c_in, mid, c_out, hw)
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
        bwd = max(
            nd + later_feat_grad + feat_grad + (coords if t else 0) + F32 * 3 * d,
            2 * later_feat_grad + feat_grad - 2 * coords if later_feat_grad else 0,
        )
        # Inference: before h is replaced, the previous h, the samples, the embedding and h.
        infer = feat.bytes + prev + (4 * nd if t else 3 * nd)
        # Forward: the samples, the embedding (or the sum before the previous tokens are added)
        # and h.
        w.end_part(
            PartMoments(
                f"sampling.sample{t + 1}",
                numel(linear_shapes(2, d)) if t == last else 0,
                fwd_transient=sampled.bytes + 2 * nd + prev_unsaved,
                bwd_transient=bwd,
                infer_live=infer,
                buffer_bytes=0 if t else F32 * P * 2,
            )
        )  # the initial points
        tokens = layer(
            w,
            stem.layers[t],
            h,
            around=Around(
                held=sampled.bytes + prev_unsaved,
                infer_held=feat.bytes + sampled.bytes + prev,
                grad_held=later_feat_grad,
                shared_weights=stem.share and t < last,
            ),
        )
        if t < last:
            # The offsets' Linear keeps its input (a contiguous copy of (B, C, N)-ordered
            # tokens). Backward: the offsets' gradient and the tokens' next to the gradient of
            # the next h (the tokens' other gradient) and of the feature map.
            w.save(w.linear_input(tokens))
            unsaved = sampled.bytes + (tokens.bytes if tokens.transposed else 0)
            shared = stem.share and t < last - 1
            w.end_part(
                PartMoments(
                    f"sampling.offset{t + 1}",
                    0 if shared else numel(linear_shapes(d, 2)),
                    fwd_transient=unsaved + coords,
                    bwd_transient=feat_grad + 2 * nd + coords + F32 * (2 * d + 2),
                    infer_live=feat.bytes + sampled.bytes + 2 * nd + coords,
                )
            )
    chain, params, buffers = prefix_and_pos(w, embed, tokens)
    peak = chain_peak(chain)
    w.end_part(
        PartMoments("embed", params, fwd_transient=peak, bwd_transient=peak, infer_live=peak, buffer_bytes=buffers)
    )
    return chain[-1]


def ps_conv(w: Walk, stem: PSStemPart, hw1: int, hw: int) -> T:
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
    w.end_part(
        PartMoments(
            "embed.conv",
            numel(stem.conv_shapes()),
            fwd_transient=out.bytes,
            bwd_transient=bwd,
            infer_live=max(2 * c1, c1 + out.bytes),
            buffer_bytes=bn_buffers(64),
        )
    )
    return out


def bn_buffers(c: int) -> int:
    """A BatchNorm's running mean and variance, and its int64 batch counter."""
    return F32 * 2 * c + 8


def bottleneck(w: Walk, name: str, x: T, c_in: int, mid: int, c_out: int, hw: int) -> T:
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
    params = numel(bottleneck_shapes(c_in, mid, c_out))
    buffers = 2 * bn_buffers(mid) + bn_buffers(c_out) * (2 if ds else 1)

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
    w.end_part(
        PartMoments(
            name, params, fwd_transient=ident + O, bwd_transient=max(moments), infer_live=infer, buffer_bytes=buffers
        )
    )
    return out


def performer_layer(w: Walk, part: LayerPart, x: T, out_grad: int) -> T:
    """T2T-ViT's Performer layer on ``n`` tokens from ``c`` to ``t`` channels, in fp32 (the
    estimate refuses T2T stems under autocast); ``out_grad``: bytes of the gradient arriving
    at its output, (B, C, N)-ordered (col2im's).

    Its attention is plain tensor algebra on r = t / 2 random features, so autograd keeps,
    besides the kqv projection: exp and its scaled output for the features of k and of q (mul
    keeps k and q: the kqv tensor), the sum of k's features over the tokens, phi(k)^T v, the
    numerator and normaliser of the division and its output (the projection's input). The
    random directions are a buffer. The residual stream is v plus the projection: contiguous."""
    B, n, c, t = w.B, part.tokens, part.d_in, part.dim
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
    w.end_part(
        PartMoments(
            part.name,
            part.params,
            fwd_transient=fwd,
            bwd_transient=max(bwd_mlp, bwd_div, bwd_qkv),
            infer_live=infer,
            buffer_bytes=F32 * r * t,
        )
    )
    return x2
