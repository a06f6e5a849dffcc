"""The parts description against the built model: every parameter's shape, in order, for every
preset and random layouts; and the walks that read it (the builder's modules, the counts, the
memory estimate's parameter list)."""

import math

import pytest
import torch
from hypothesis import given, settings
from strategies import tiny_layouts

import funnelbench as fb
from funnelbench.memory import _param_sizes
from funnelbench.parts import describe


def built_shapes(layout, num_classes=1000):
    with torch.device("meta"):  # no memory: shapes only
        model = fb.build_model(layout, num_classes=num_classes)
    return [tuple(p.shape) for p in model.parameters()]


@pytest.mark.parametrize("name", fb.list_presets())
def test_param_shapes_are_the_built_models_for_every_preset(name):
    layout = fb.resolve(name)
    shapes = describe(layout).param_shapes()
    assert shapes == built_shapes(layout)
    assert _param_sizes(layout, 1000) == [math.prod(s) for s in shapes]  # the estimate's list is this one
    assert fb.count(layout).params == describe(layout).params


def walked(parts):
    """The backbone's parts in forward order, as the memory walk names them."""
    return [x for s in parts.stages for x in ([s.transition] if s.transition else []) + list(s.layers)]


@given(tiny_layouts())
@settings(max_examples=60, deadline=None)
def test_the_builder_and_the_memory_walk_follow_the_parts(text):
    """What the shapes do not show, read from the layout: each block's heads, where each
    transition stands and its pool; and the memory walk's parts (names and parameters) are the
    description's."""
    layout = fb.parse_layout(text)
    parts = describe(layout)
    with torch.device("meta"):
        model = fb.build_model(layout)
    assert [b.attn.heads for b in model.blocks] == [s.heads for s in layout.stages for _ in range(s.layers)]
    starts, i, prev = [], 0, None
    for stage in layout.stages:
        if prev is not None and (stage.pools or stage.hidden != prev.hidden):
            starts.append(str(i))
        i, prev = i + stage.layers, stage
    assert list(model.transitions) == starts
    for t, module in zip(parts.transitions, model.transitions.values()):
        pool = module.pool
        assert (pool is not None) == t.pools and module.pqo == t.pqo
        if pool is not None:
            assert (pool.op, pool.stride, pool.kernel, pool.prefix) == (
                t.stage.pool,
                t.stage.stride,
                t.stage.kernel,
                layout.num_prefix_tokens,
            )
    est = fb.estimate_memory(layout, 1)
    backbone = [p for p in est.parts if p.name.startswith("stage")]
    assert [(p.name, p.params_bytes) for p in backbone] == [(x.name, 4 * x.params) for x in walked(parts)]


@given(tiny_layouts())
@settings(max_examples=60, deadline=None)
def test_param_shapes_are_the_built_models_for_random_layouts(text):
    layout = fb.parse_layout(text)
    assert describe(layout, num_classes=7).param_shapes() == built_shapes(layout, num_classes=7)


def test_parts_follow_the_layout():
    """A hand-read example: where the transitions are, which layer attends to the unpooled
    sequence, and the stage sums that ``count`` reports."""
    layout = fb.parse_layout("B2(197)-2(99, h512)-1(50, h512, nopqo)")
    parts = describe(layout)
    assert [s.transition is None for s in parts.stages] == [True, False, False]
    assert [(x.name, x.tokens, x.kv_tokens, x.dim) for x in parts.layers] == [
        ("stage1.layer1", 197, 197, 768),
        ("stage1.layer2", 197, 197, 768),
        ("stage2.layer1", 99, 197, 512),
        ("stage2.layer2", 99, 99, 512),
        ("stage3.layer1", 50, 50, 512),
    ]
    t = parts.stages[1].transition
    assert t.name == "stage2.transition" and t.projects and t.pools and t.pqo and t.prefix == 1
    assert t.params == 768 * 512 + 512 and t.macs == 197 * 768 * 512
    cost = fb.count(layout)
    assert [(p.name, p.params, p.macs) for p in cost.parts[1:-1]] == [(s.name, s.params, s.macs) for s in parts.stages]
