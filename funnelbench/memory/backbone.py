"""The backbone's parts in the memory walk: the class token and position embedding
(:func:`prefix_and_pos`), a transformer layer (:func:`layer`), a transition between stages
(:func:`transition`) and the head with the loss (:func:`head`). Each takes its part of
:mod:`funnelbench.parts`, saves what autograd keeps and records the part's worst moments.

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
that the estimate follows (``device``): AdamW's implementation (``walk.py``), LayerNorm under
autocast (fp32 on CUDA, the input's dtype on CPU) and the CPU math kernel, which computes a
bf16/fp16 attention in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..parts import EmbedPart, HeadPart, LayerPart, TransitionPart
from .walk import F32, PartMoments, T, Walk, chain_peak


def prefix_and_pos(w: Walk, embed: EmbedPart, x: T) -> tuple[list[T], int, int]:
    """The class token joined in front of the stem's tokens and the position embedding added.
    Returns the tensors made (``x`` first, the first stage's input last), the parameters and
    the bytes of buffers."""
    B, d, n = w.B, embed.dim, embed.tokens
    chain = [x]
    buffers = 0
    if embed.cls:
        # cat promotes a 2-byte stem output to the fp32 class token's dtype, in (B, N, C) order
        chain.append(w.new("cat", F32, B * n * d))
    if embed.pos != "none":
        # the add is fp32 (the embedding is) and follows its first operand's memory order
        chain.append(w.new("pos", F32, B * n * d, transposed=chain[-1].transposed))
        if embed.pos == "sincos":  # a fixed buffer
            buffers += F32 * n * d
    return chain, embed.params, buffers


@dataclass(frozen=True)
class Around:
    """What a stem holds around one of its layers (a backbone layer has nothing around it).

    ``held``: bytes the caller keeps alive, unsaved, while the layer runs forward (PS-ViT's
    samples and previous tokens), ``infer_held`` the same in inference, where nothing is
    saved (also the feature map); ``grad_held``: bytes of gradients alive outside the layer
    during its backward (PS-ViT's feature-map gradient). ``out_grad``: bytes of the (B, C,
    N)-ordered gradient arriving at a T2T layer's output (col2im's). ``shared_weights``: the
    weights' gradients exist already when its backward runs (a PS-ViT iteration sharing the
    layer of a later one, whose part counts the parameters): autograd sums each new weight
    gradient with them out of place (in the weight's input buffer), so both are alive next to
    the sum."""

    held: int = 0
    infer_held: int = 0
    grad_held: int = 0
    out_grad: int | None = None
    shared_weights: bool = False


NOTHING_AROUND = Around()


def layer(w: Walk, part: LayerPart, x: T, kv: T | None = None, around: Around = NOTHING_AROUND) -> T:
    """One pre-norm transformer layer on ``part.tokens`` tokens (keys/values from ``kv``, the
    unpooled sequence, if given).

    A ``t2t`` part is T2T-ViT's Transformer layer: ``d_in``-wide input tokens, and ``v``
    (the qkv projection's, ``dim`` wide) instead of the input as the residual."""
    B, d, m, h, e = w.B, part.dim, part.mlp, part.heads, w.e
    n, m_tokens = part.tokens, part.kv_tokens
    out_grad, held, infer_held, grad_held, shared_weights = (
        around.out_grad,
        around.held,
        around.infer_held,
        around.grad_held,
        around.shared_weights,
    )
    nd, md = B * n * d, B * m_tokens * d
    t2t = part.kind != "vit"
    d_in = part.d_in or d
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
    w.end_part(
        PartMoments(
            part.name,
            0 if shared_weights else part.params,
            fwd_transient=held + fwd,
            bwd_transient=grad_held + max(bwd_mlp, bwd_attn, bwd_qkv),
            infer_live=infer_held + max(moments),
        )
    )
    return x2


def transition(w: Walk, part: TransitionPart, y: T) -> tuple[T, T | None]:
    """Projection to the new width (on the whole sequence), then the pool, then a new position
    embedding. Returns the pooled sequence and, for pool-query-only attention, the unpooled one."""
    B, prev, stage, prefix = w.B, part.prev, part.stage, part.prefix
    z = y
    fwd = 0
    if prev.hidden != stage.hidden:
        w.save(w.linear_input(y))
        w.weight_cast(prev.hidden * stage.hidden)
        z = w.new("proj", w.e, B * prev.tokens * stage.hidden)
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
        x = chain[-1]
        fwd += chain_peak(chain)
    kv = z if part.pqo else None
    w.end_part(
        PartMoments(
            part.name,
            part.params,
            fwd_transient=fwd,
            bwd_transient=z.bytes + (x.bytes if x is not z else 0),
            infer_live=y.bytes + fwd,
        )
    )
    return x, kv


def head(w: Walk, part: HeadPart, x: T) -> None:
    """The final LayerNorm, the classifier on the class token or the mean of the tokens, and
    the cross-entropy loss."""
    B, d, C, n = w.B, part.dim, part.num_classes, part.tokens
    _, out = w.layer_norm(x, n)
    if part.kind == "cls":
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
    # Inference: a class-token head keeps the normed sequence (it reads a view of it); the
    # average head frees it once the mean is taken.
    cast_and_weight = B * d * w.e + w.e * (d * C + C) if w.amp else 0
    if part.kind == "cls":
        infer_live = out.bytes + cast_and_weight + logits
    else:
        infer_live = max(out.bytes + pooled_bytes, pooled_bytes + cast_and_weight + logits)
    w.end_part(
        PartMoments(
            "head",
            part.params,
            fwd_transient=logits + (F32 * B * C if w.amp else 0),
            # the loss's and log-softmax's gradients; then (log-softmax freed) the
            # gradient of the final LayerNorm's output and of its input
            bwd_transient=max(2 * log_probs, 2 * x.bytes - log_probs),
            infer_live=infer_live,
        )
    )
