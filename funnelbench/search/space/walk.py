"""The exact walk of a space: every reachable stage sequence, by dynamic programming over the
state after each stage (patch tokens, grid side, width, depth so far, tied values used so far).
It checks every transition (a problem raises :class:`.schema.SpaceError` naming the key),
counts the distinct layouts and finds the cheapest and dearest in MACs and in params
(:class:`SpaceStats`); :func:`walk_steps` bounds its work before it starts. The uniform draws
and the exact feasible count (:mod:`funnelbench.search.feasible`) walk with the same pieces:
:func:`stage_options` and :func:`tie`.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...cost import count
from ...layout import Layout, Stage, stem_grid
from .geometry import added_cost, checked_layout, stage_after
from .schema import DEFAULTS, FIRST_STAGE_STEPS, POOL_KEYS, SpaceError

if TYPE_CHECKING:
    from .model import Space


@dataclass(frozen=True)
class SpaceStats:
    """What a space holds: how many distinct layouts, and its extremes (with their counts)."""

    layouts: int
    cheapest_macs: tuple[Layout, int, int]  # (layout, macs, params)
    dearest_macs: tuple[Layout, int, int]
    cheapest_params: tuple[Layout, int, int]
    dearest_params: tuple[Layout, int, int]


def walk(space: Space, check_only: bool = False, image_size: int | None = None, patch_size: int | None = None):
    """Every reachable stage sequence, by dynamic programming over the state after each stage
    (patch tokens, grid side, width, depth so far, tied values used so far): checks every
    transition (a problem raises SpaceError naming the key), counts the distinct layouts and
    finds the cheapest and dearest in MACs and in params."""
    stem, image, patch, head, pos = space.geometry()
    if image_size is not None:
        image, patch = image_size, patch_size or patch
    prefix = 1 if head == "cls" else 0
    side0 = stem_grid(stem, image, patch)
    track_depth = space.total_layers is not None
    tie_keys = space.tied
    # state (patch tokens, grid side, width, depth, tied values) -> [count, 4 x (cost, path)]
    finals: dict = {}
    costs: dict = {}
    for n_stages in space.counts.values:
        states = {(side0 * side0, side0, None, 0, tuple(None for _ in tie_keys)): _start()}
        for i in range(n_stages):
            options = stage_options(space, i)
            new_states: dict = {}
            for (n, side, hidden, depth, tied), acc in states.items():
                for values in options:
                    tie_now = tie(tie_keys, tied, values, i)
                    if tie_now is None:
                        continue
                    stage, new_n, new_side, problem = stage_after(values, i, n, side, prefix)
                    if problem:
                        raise SpaceError(_blame(problem, space, i), problem)
                    if check_only:
                        new_states.setdefault((new_n, new_side, None, 0, tie_now), acc)
                        continue
                    ckey = (n, hidden, stage)
                    cost = costs.get(ckey)
                    if cost is None:
                        prev = None if hidden is None else Stage(1, n + prefix, hidden, hidden, 1)
                        cost = costs[ckey] = added_cost(prev, stage, image, patch, head, stem, pos)
                    key = (new_n, new_side, stage.hidden, depth + stage.layers if track_depth else 0, tie_now)
                    _merge(new_states, key, acc, stage, cost)
            states = new_states
        if check_only:
            continue
        for (n, side, hidden, depth, tied), acc in states.items():
            if track_depth and not space.total_layers[0] <= depth <= space.total_layers[1]:
                continue
            finals[("final", n_stages, n, side, hidden, depth, tied)] = acc
    if check_only:
        return None
    if not finals:
        raise SpaceError(
            "constraints.total_layers", "no point of the space has a total depth in the total_layers range"
        )
    total = sum(acc[0] for acc in finals.values())

    def pick(slot, better):
        best = None
        for acc in finals.values():
            if best is None or better(acc[slot][0], best[0]):
                best = acc[slot]
        layout = checked_layout(Layout(best[1], image, patch, head, stem, pos))
        cost = count(layout)
        return layout, cost.macs, cost.params

    lt, gt = (lambda a, b: a < b), (lambda a, b: a > b)
    return SpaceStats(total, pick(1, lt), pick(2, gt), pick(3, lt), pick(4, gt))


def _start():
    return [1, (0, ()), (0, ()), (0, ()), (0, ())]


def tie(keys: tuple, tied: tuple, values: dict, i: int) -> tuple | None:
    """The tied values after this stage (a value is fixed at its first use), None on a clash."""
    now = list(tied)
    pools = i > 0 and values.get("stride", 1) > 1
    for j, key in enumerate(keys):
        if key not in values or (key in POOL_KEYS and not pools):
            continue
        if now[j] is None:
            now[j] = values[key]
        elif now[j] != values[key]:
            return None
    return tuple(now)


def _merge(states: dict, key, acc, stage: Stage, cost: tuple[int, int]) -> None:
    macs, params = cost
    cand = [
        acc[0],
        (acc[1][0] + macs, acc[1][1] + (stage,)),
        (acc[2][0] + macs, acc[2][1] + (stage,)),
        (acc[3][0] + params, acc[3][1] + (stage,)),
        (acc[4][0] + params, acc[4][1] + (stage,)),
    ]
    old = states.get(key)
    if old is None:
        states[key] = cand
        return
    old[0] += cand[0]
    for slot, better in ((1, min), (2, max), (3, min), (4, max)):
        old[slot] = better(old[slot], cand[slot], key=lambda x: x[0])


def stage_options(space: Space, i: int) -> list[dict]:
    """Every combination of stage ``i``'s decision values, irrelevant ones collapsed (a stage that
    does not pool has no pool operator), each once."""
    decisions = space.stage_decisions[i]
    keys = list(decisions)
    seen, out = set(), []
    for combo in itertools.product(*(decisions[k].values for k in keys)):
        values = dict(zip(keys, combo))
        if i == 0 or values.get("stride", 1) == 1:
            for k in POOL_KEYS:
                values[k] = DEFAULTS[k]
        if i == 0:
            values.pop("stride", None)
        marker = tuple(sorted(values.items()))
        if marker not in seen:
            seen.add(marker)
            out.append(values)
    return out


def _blame(problem: str, space: Space, i: int) -> str:
    key = (
        "stride"
        if problem.startswith("stride") or "pools" in problem
        else (
            "head_dim"
            if "head_dim" in problem
            else "heads"
            if "heads" in problem
            else "mlp_ratio"
            if "mlp_ratio" in problem
            else "pool"
        )
    )
    local = f"stages.per_stage.stage{i}.{key}"
    return local if local in space.lines else f"stages.{key}"


def walk_steps(space: Space) -> int:
    """An upper bound on the stage transitions the exact walk (:func:`walk`) tries, computed
    from the decisions alone in microseconds: for every stage count and stage, the states that
    reach the stage times the stage's combinations of values. The states after a stage are at
    most the paths so far, and at most the distinct (token count, width, depth so far, tied
    values) the walk merges them into; the token counts at most the products of the pool
    geometries (stride, kernel, 1D or 2D) so far. A step is about 10 us of the walk on one core
    (an option whose tied value clashes is skipped for far less, and not counted); a space is
    refused above ``MAX_WALK_STEPS``."""
    stem, image, patch, _, _ = space.geometry()
    tokens = 2 * stem_grid(stem, image, patch) ** 2  # a count of tokens, as a grid or a sequence
    depth_cap = space.total_layers[1] + 1 if space.total_layers else 1
    first = space.stage_decisions[0]
    tied = math.prod(len(first[key].values) + 1 for key in space.tied if key in first)
    steps = 0
    for n_stages in space.counts.values:
        states, geometries, depth = 1, 1, 0
        for i in range(n_stages):
            size = {key: len(d.values) for key, d in space.stage_decisions[i].items()}
            options = math.prod(size.values())  # what stage_options goes through
            # past the first stage a state has fixed the tied values: the other options are skipped
            fitting = options // math.prod(size.get(key, 1) for key in space.tied) if i else options
            # a first stage is counted with the stem (a whole model's count): ~100 steps of work
            steps += options * FIRST_STAGE_STEPS if i == 0 else options + states * fitting
            geometries *= size.get("stride", 1) * size.get("kernel", 1) * 2  # 1D or 2D pools
            depth += max(space.stage_decisions[i]["layers"].values)
            states = min(
                states * options,
                min(tokens, geometries)
                * size["hidden"]
                * (min(depth_cap, depth + 1) if space.total_layers else 1)
                * tied,
            )
    return steps


__all__ = ["SpaceStats", "walk", "walk_steps", "stage_options", "tie"]
