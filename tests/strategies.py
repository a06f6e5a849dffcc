"""Hypothesis strategies: random valid layouts (tiny, so models build in milliseconds)."""

from hypothesis import strategies as st

from funnelbench.layout import pooled_length


@st.composite
def tiny_layouts(draw) -> str:
    """A random valid layout string with every option written out explicitly."""
    patch = draw(st.sampled_from([4, 8]))
    grid = draw(st.integers(2, 5))
    head = draw(st.sampled_from(["cls", "avg"]))
    prefix = 1 if head == "cls" else 0
    patches = grid * grid
    stages = []
    for i in range(draw(st.integers(1, 3))):
        if i:
            stride = draw(st.integers(1, max(1, patches)))
            patches = pooled_length(patches, stride)
        heads = draw(st.sampled_from([1, 2, 4]))
        hidden = heads * draw(st.sampled_from([4, 8, 12]))
        opts = [f"h{hidden}", f"a{heads}", f"m{draw(st.integers(1, 40))}"]
        if i and stride > 1:
            opts.append(draw(st.sampled_from(["mean", "max"])))
            opts.append(draw(st.sampled_from(["pqo", "nopqo"])))
        stages.append(f"{draw(st.integers(1, 2))}({patches + prefix}, {', '.join(opts)})")
    return "B" + "-".join(stages) + f", img{patch * grid}, patch{patch}, {head}"
