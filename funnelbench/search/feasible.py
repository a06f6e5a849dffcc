"""The layouts a search may train: uniform draws from a space, and the exact count under a budget.

    draws = LayoutDraws(space)                 # built once per space (a walk of its stage sequences)
    layout = draws.draw(random.Random(0))      # every distinct layout of the space equally likely
    feasible_count(space, budgets)             # FeasibleCount(total, by_stages) or None when too large

Random search and every sampler's start-up (:mod:`.samplers`) draw a layout uniformly from the
space and keep it only if the budgets accept it (rejection sampling). Rejection from a uniform
proposal is uniform on what it keeps, so the draws are uniform on the *feasible* layouts, and a
rejected draw costs an analytic count (well under a millisecond), never a training or an Optuna
trial.

Uniform over layouts, not over parameters: a three-stage space has far more three-stage layouts
than one-stage ones, and drawing each decision at random (Optuna's RandomSampler) would give
every stage count a third of the draws. Here the walk counts, for every state after a stage
(patch tokens, grid side, depth so far, tied values), how many complete layouts follow it, and a
draw picks each stage in proportion to those counts.

The exact feasible count enumerates every stage sequence but the last, with its MACs and params,
and counts the last stage's options against the budgets with NumPy; a space whose prefixes
exceed :data:`MAX_PREFIXES` is not counted (``None``). The memory budget is not part of the
count (its estimate is too slow for millions of layouts); draws apply it by rejection.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from ..layout import Layout, Stage, stem_grid
from .budget import Budgets, over_budget
from .space import Space, added_cost, checked_layout, stage_after, stage_options, tie

MAX_PREFIXES = 400_000  # stage sequences but the last, held in memory by feasible_count
MAX_REJECTIONS = 20_000  # draws in a row the budgets may reject before a draw gives up


class BudgetTooTight(Exception):
    """No feasible layout in MAX_REJECTIONS uniform draws."""


@dataclass(frozen=True)
class FeasibleCount:
    total: int  # distinct layouts of the space within the budgets (memory budget not applied)
    by_stages: dict  # number of stages -> layouts


class LayoutDraws:
    """Uniform draws of the space's distinct layouts (and the count of them, as a check)."""

    def __init__(self, space: Space):
        self.space = space
        stem, image, patch, head, pos = space.geometry()
        self.prefix = 1 if head == "cls" else 0
        side = _grid_side(space)
        self.start = (side * side, side, 0, tuple(None for _ in space.tied))
        self.options = [stage_options(space, i) for i in range(space.max_stages)]
        # per stage count n: levels[n][i] = {state: [(option index, next state), ...]},
        # ways[n][i] = {state: complete layouts that follow it}
        self.ways: dict[int, list[dict]] = {}
        self.edges: dict[int, list[dict]] = {}
        for n in space.counts.values:
            self.edges[n], self.ways[n] = self._walk(n)
        self.total = sum(self.ways[n][0].get(self.start, 0) for n in space.counts.values)

    def _walk(self, n: int) -> tuple[list[dict], list[dict]]:
        space, lo_hi = self.space, self.space.total_layers
        edges: list[dict] = []
        states = {self.start}
        for i in range(n):
            level, after = {}, set()
            for state in states:
                tokens, side, depth, tied = state
                out = level[state] = []
                for k, values in enumerate(self.options[i]):
                    tie_now = tie(space.tied, tied, values, i)
                    if tie_now is None:
                        continue
                    stage, new_n, new_side, problem = stage_after(values, i, tokens, side, self.prefix)
                    if problem:  # a space that loaded has none (every transition was checked)
                        continue
                    nxt = (new_n, new_side, depth + stage.layers, tie_now)
                    out.append((k, nxt))
                    after.add(nxt)
            edges.append(level)
            states = after
        ways: list[dict] = [dict() for _ in range(n + 1)]
        ways[n] = {s: int(lo_hi is None or lo_hi[0] <= s[2] <= lo_hi[1]) for s in states}
        for i in range(n - 1, -1, -1):
            ways[i] = {s: sum(ways[i + 1][nxt] for _, nxt in out) for s, out in edges[i].items()}
        return edges, ways

    def draw_values(self, rng: random.Random) -> list[dict]:
        """One layout's per-stage decision values, every layout of the space equally likely."""
        return self.values_at(rng.randrange(self.total))

    def values_at(self, index: int) -> list[dict]:
        """The per-stage decision values of the space's ``index``-th layout (0 <= index < total):
        a one-to-one numbering of its distinct layouts, which uniform draws pick from."""
        if not 0 <= index < self.total:
            raise IndexError(f"layout {index} of a space with {self.total}")
        r = index
        for n in self.space.counts.values:
            here = self.ways[n][0].get(self.start, 0)
            if r < here:
                break
            r -= here
        chosen, state = [], self.start
        for i in range(n):
            for k, nxt in self.edges[n][i][state]:
                w = self.ways[n][i + 1][nxt]
                if r < w:
                    break
                r -= w
            chosen.append(self.options[i][k])
            state = nxt
        return chosen

    def draw(self, rng: random.Random) -> Layout:
        return self.space.build(self.draw_values(rng))

    def layouts(self) -> list[Layout]:
        """Every distinct layout of the space, in the numbering of :meth:`values_at` (for a space
        small enough to enumerate: a tabular benchmark's)."""
        return [self.space.build(self.values_at(i)) for i in range(self.total)]

    def draw_feasible(self, rng: random.Random, budgets: Budgets) -> Layout:
        """A uniform draw among the layouts every budget accepts (memory included), by rejection."""
        for _ in range(MAX_REJECTIONS):
            layout = self.draw(rng)
            if not budgets.any:
                return layout
            _, excess = budgets.judge(layout)
            if not over_budget(excess):
                return layout
        raise BudgetTooTight(f"the budgets rejected {MAX_REJECTIONS} uniform draws of space {self.space.name} in a row")


def _grid_side(space: Space) -> int:
    stem, image, patch, _, _ = space.geometry()
    return stem_grid(stem, image, patch)


def feasible_count(space: Space, budgets: Budgets) -> FeasibleCount | None:
    """How many distinct layouts of ``space`` meet the MACs and params budgets and the space's
    total_layers, exactly; None when the space is too large to enumerate (see the module doc)."""
    stem, image, patch, head, pos = space.geometry()
    prefix = 1 if head == "cls" else 0
    side0 = _grid_side(space)
    total_layers = space.total_layers
    costs: dict = {}

    def cost(n, hidden, stage):
        key = (n, hidden, stage)
        if key not in costs:
            prev = None if hidden is None else Stage(1, n + prefix, hidden, hidden, 1)
            costs[key] = added_cost(prev, stage, image, patch, head, stem, pos)
        return costs[key]

    max_macs = budgets.macs if budgets.macs is not None else np.inf
    min_macs = budgets.min_macs if budgets.min_macs is not None else -np.inf
    max_params = budgets.params if budgets.params is not None else np.inf
    by_stages = {}
    for n_stages in space.counts.values:
        # prefixes: (tokens, side, hidden, depth, tied) -> list of (macs, params)
        prefixes = {(side0 * side0, side0, None, 0, tuple(None for _ in space.tied)): [(0, 0)]}
        held = 1
        for i in range(n_stages - 1):
            grown: dict = {}
            for (tokens, side, hidden, depth, tied), sums in prefixes.items():
                for values in stage_options(space, i):
                    tie_now = tie(space.tied, tied, values, i)
                    if tie_now is None:
                        continue
                    stage, new_n, new_side, problem = stage_after(values, i, tokens, side, prefix)
                    if problem:
                        continue
                    m, p = cost(tokens, hidden, stage)
                    key = (new_n, new_side, stage.hidden, depth + stage.layers, tie_now)
                    grown.setdefault(key, []).extend((a + m, b + p) for a, b in sums)
            prefixes = grown
            held = sum(len(v) for v in prefixes.values())
            if held > MAX_PREFIXES:
                return None
        count = 0
        last = n_stages - 1
        for (tokens, side, hidden, depth, tied), sums in prefixes.items():
            arr = np.asarray(sums, dtype=np.int64).reshape(-1, 2)
            for values in stage_options(space, last):
                if tie(space.tied, tied, values, last) is None:
                    continue
                stage, _, _, problem = stage_after(values, last, tokens, side, prefix)
                if problem:
                    continue
                d = depth + stage.layers
                if total_layers is not None and not total_layers[0] <= d <= total_layers[1]:
                    continue
                m, p = cost(tokens, hidden, stage)
                macs, params = arr[:, 0] + m, arr[:, 1] + p
                count += int(np.count_nonzero((macs <= max_macs) & (macs >= min_macs) & (params <= max_params)))
        by_stages[n_stages] = count
    return FeasibleCount(sum(by_stages.values()), by_stages)


__all__ = ["LayoutDraws", "feasible_count", "FeasibleCount", "BudgetTooTight", "MAX_REJECTIONS", "checked_layout"]
