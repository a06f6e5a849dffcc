"""Hypothesis strategies: random valid layouts (tiny, so models build in milliseconds).

They cover every part of the grammar: the three stems (patches, Tokens-to-Token with
Performer or Transformer layers, progressive sampling), the position embedding, 1D and 2D
pools with and without an explicit window, pool-query-only attention, per-stage position
embeddings, qkv bias, per-stage widths and both heads."""

from hypothesis import strategies as st

from funnelbench.layout import STEMS, pooled_length


@st.composite
def tiny_layouts(draw, funnel_only: bool = False, stems: tuple[str, ...] = STEMS) -> str:
    """A random valid layout string with every option written out explicitly.

    ``funnel_only`` keeps to the ViT / Funnel-ViT parts (patch stem, learned position
    embedding, qkv bias, mean/max pools with window = stride), e.g. for models of only those;
    ``stems`` draws the stem from these kinds only."""
    stem = "patch" if funnel_only else draw(st.sampled_from(stems))
    if stem == "patch":
        patch = draw(st.sampled_from([4, 8]))
        grid = draw(st.integers(2, 5))
        glob = [f"img{patch * grid}", f"patch{patch}"]
    elif stem in ("t2t", "t2t_t"):
        grid = draw(st.integers(1, 3))
        glob = [f"img{16 * grid}", stem, f"tok{draw(st.sampled_from([2, 4, 8]))}"]
    else:
        image = draw(st.sampled_from([8, 12, 16, 24, 32]))
        grid = draw(st.integers(1, min(4, image // 4)))
        glob = [
            f"img{image}",
            f"ps{grid}",
            f"iters{draw(st.integers(1, 3))}",
            draw(st.sampled_from(["share", "noshare"])),
            f"fe{draw(st.sampled_from([4, 8, 16]))}",
        ]
    glob.append(f"pos={draw(st.sampled_from(['learned'] if funnel_only else ['learned', 'sincos', 'none']))}")
    head = draw(st.sampled_from(["cls", "avg"]))
    glob.append(head)
    prefix = 1 if head == "cls" else 0
    patches, side = grid * grid, grid  # side: tokens per side while they form a square grid
    stages = []
    for i in range(draw(st.integers(1, 3))):
        heads = draw(st.sampled_from([1, 2, 4]))
        hidden = heads * draw(st.sampled_from([4, 8, 12]))
        opts = [
            f"h{hidden}",
            f"a{heads}",
            f"m{draw(st.integers(1, 40))}",
            draw(st.sampled_from(["qkvbias"] if funnel_only else ["qkvbias", "noqkvbias"])),
        ]
        if i:
            op = draw(st.sampled_from(["mean", "max"] + (["mean2d", "max2d"] if side and not funnel_only else [])))
            n = side if op.endswith("2d") else patches
            kernel = draw(st.sampled_from([0] if funnel_only else [0, 2, 3]))
            kernel = kernel if kernel <= n else 0
            new = pooled_length(n, draw(st.integers(1, n)), kernel)
            new_patches = new * new if op.endswith("2d") else new
            if new_patches < patches:  # the stage pools
                opts += [
                    op,
                    draw(st.sampled_from(["pqo", "nopqo"])),
                    draw(st.sampled_from(["nonewpos"] if funnel_only else ["newpos", "nonewpos"])),
                ]
                opts += [f"k{kernel}"] if kernel else []
                patches, side = new_patches, (new if op.endswith("2d") else None)
        stages.append(f"{draw(st.integers(1, 2))}({patches + prefix}, {', '.join(opts)})")
    return "B" + "-".join(stages) + ", " + ", ".join(glob)
