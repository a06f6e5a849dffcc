"""A space as a model (:class:`Space`): its decisions, a point of it as a full-size layout
(:meth:`Space.suggest`, the one place that calls ``trial.suggest_*``) and a layout as a point
(:meth:`Space.params_of`, :meth:`Space.contains`), its own constraints, what it holds
(:meth:`Space.stats`, by the exact walk), and its decisions as rows (:func:`describe`).

Parameters: ``n_stages``, then ``stage<i>_<key>`` for each stage ``i`` the layout has, or
``<key>`` for a tied decision. A trial carries only the decisions that shape its layout
(conditional parameters): no parameters for stages beyond ``n_stages``, and no pool operator,
kernel, pool-query-only or new position embedding for a stage that does not pool (the first
stage never pools).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from ...errors import UsageError
from ...layout import Layout, Stage, format_layout, stem_grid
from .geometry import checked_layout, stage_after, stem_of
from .schema import DEFAULTS, POOL_KEYS, Decision, word
from .walk import SpaceStats, walk


@dataclass
class Space:
    name: str
    path: str | None  # the file; None for a space given as a dict
    spec: dict  # the YAML as loaded
    description: str
    shared: dict
    counts: Decision
    stage_decisions: list[dict[str, Decision]]  # per stage index (up to the largest count): key -> Decision
    tied: tuple[str, ...]
    total_layers: tuple[int, int] | None
    baselines: list[Layout] = field(default_factory=list)
    lines: dict = field(default_factory=dict, repr=False)
    proxy: dict = field(default_factory=dict)  # training options a search uses unless given its own

    # -- points
    @property
    def max_stages(self) -> int:
        return max(self.counts.values)

    def decisions(self) -> list[Decision]:
        """Every decision that is not fixed, in the order :meth:`suggest` asks for them."""
        out, seen = [], set()
        for d in [self.counts] + [d for stage in self.stage_decisions for d in stage.values()]:
            if d.kind != "fixed" and d.name not in seen:
                seen.add(d.name)
                out.append(d)
        return out

    def suggest(self, trial, check: bool = True) -> tuple[Layout, dict]:
        """The one place that calls ``trial.suggest_*``: a point of the space as a full-size
        :class:`Layout`, and the space's own constraints it breaks (``{"total_layers": excess}``;
        empty for a point inside the space). Only the decisions the layout uses are suggested
        (see :mod:`.model`)."""
        n = self.counts.suggest(trial)
        chosen = []
        for i, stage in enumerate(self.stage_decisions[:n]):
            values = {}
            for key, d in stage.items():
                if key in POOL_KEYS and not (i and values.get("stride", 1) > 1):
                    values[key] = DEFAULTS[key]  # a stage that does not pool: not a decision
                else:
                    values[key] = d.suggest(trial)
            chosen.append(values)
        layout = self.build(chosen, check)
        return layout, self.violations(layout)

    def constraints(self, layout: Layout) -> dict:
        """The space's own constraints as ``trial.set_constraint`` takes them, every key in every
        trial (Optuna's GP requires the same keys in all trials): ``total_layers`` is the
        relative distance outside the range, <= 0 inside it."""
        if self.total_layers is None:
            return {}
        lo, hi = self.total_layers
        return {"total_layers": max((layout.depth - hi) / hi, (lo - layout.depth) / lo)}

    def violations(self, layout: Layout) -> dict:
        """The constraints ``layout`` breaks (empty for a point inside the space)."""
        return {k: v for k, v in self.constraints(layout).items() if v > 0}

    def build(self, chosen: list[dict], check: bool = True) -> Layout:
        """The layout of per-stage decision values (stage 0 first)."""
        stem, image, patch, head, pos = self.geometry()
        prefix = 1 if head == "cls" else 0
        side = stem_grid(stem, image, patch)
        n, grid = side * side, side
        stages = []
        for i, values in enumerate(chosen):
            stage, n, grid, problem = stage_after(values, i, n, grid, prefix)
            if problem:  # cannot happen in a space that loaded: every transition was checked
                raise UsageError(f"space {self.name}: {problem}")
            stages.append(stage)
        layout = Layout(tuple(stages), image, patch, head, stem, pos)
        return checked_layout(layout) if check else layout

    def geometry(self):
        """(stem, image size, patch size, head, position embedding) every point shares."""
        return stem_of(self.shared)

    # -- what the space holds
    @cached_property
    def _stats(self) -> SpaceStats:
        return walk(self)

    def stats(self) -> SpaceStats:
        """What the space holds (walked once, on the first call)."""
        return self._stats

    def contains(self, layout: Layout) -> str | None:
        """None if ``layout`` is a point of the space, else why not."""
        return self._locate(layout)[0]

    def params_of(self, layout: Layout) -> dict:
        """The parameters that :meth:`suggest` turns into ``layout`` (a point of the space), for
        ``study.enqueue_trial``: exactly the decisions the layout uses, none padded."""
        why, params = self._locate(layout)
        if why:
            raise UsageError(f"{layout} is not a point of space {self.name}: {why}")
        return params

    def _locate(self, layout: Layout) -> tuple[str | None, dict]:
        stem, image, patch, head, pos = self.geometry()
        if (layout.stem, layout.image_size, layout.head, layout.pos) != (stem, image, head, pos) or (
            stem.kind == "patch" and layout.patch_size != patch
        ):
            want = format_layout(
                Layout((Stage(1, stem_grid(stem, image, patch) ** 2 + (head == "cls")),), image, patch, head, stem, pos)
            ).split(", ", 1)
            return f"its shared options differ from the space's ({want[1] if len(want) > 1 else 'the defaults'})", {}
        if len(layout.stages) not in self.counts.values:
            return f"it has {len(layout.stages)} stages; the space has {self.counts.text()}", {}
        params = {self.counts.name: len(layout.stages)} if self.counts.kind != "fixed" else {}
        tied: dict = {}
        for i, s in enumerate(layout.stages):
            decisions = self.stage_decisions[i]
            values = {"layers": s.layers, "hidden": s.hidden, "qkv_bias": s.qkv_bias}
            if "mlp" in decisions:
                values["mlp"] = s.mlp
            else:
                values["mlp_ratio"] = s.mlp / s.hidden
            if "heads" in decisions:
                values["heads"] = s.heads
            else:
                values["head_dim"] = s.hidden // s.heads if s.hidden % s.heads == 0 else None
            if i:
                values["stride"] = s.stride
            if s.pools:
                values.update(pool=s.pool, pqo=s.pqo, kernel=s.kernel, newpos=s.newpos)
            for key, value in values.items():
                d = decisions[key]
                allowed = [v for v in d.values if v == value and type(v) is not bool or v is value]
                if not allowed:
                    return f"stage {i} has {key} {word(value)}; the space allows {d.text()}", {}
                if key in self.tied:
                    if tied.setdefault(key, value) != value:
                        return f"{key} is one decision for all stages in this space, and the layout's stages differ", {}
                if d.kind != "fixed":
                    params[d.name] = allowed[0]
        if self.violations(layout):
            lo, hi = self.total_layers
            return f"it has {layout.depth} layers; the space's total_layers is {lo}..{hi}", {}
        return None, params


def describe(space: Space) -> list[dict]:
    """One row per decision: its parameter name, the stages it applies to and its values."""
    rows = [{"decision": "n_stages", "stages": "-", "values": space.counts.text()}]
    seen: dict[tuple, list[int]] = {}
    for i, stage in enumerate(space.stage_decisions):
        for key, d in stage.items():
            seen.setdefault((key, d.text(), key in space.tied), []).append(i)
    for (key, text, tied), idx in seen.items():
        if (
            key in ("pool", "pqo", "kernel", "newpos", "qkv_bias", "stride", "head_dim", "mlp_ratio")
            and text in (word(DEFAULTS[key]),)
            and key not in space.spec.get("stages", {})
            and not any(key in (space.spec["stages"].get("per_stage") or {}).get(f"stage{i}", {}) for i in idx)
        ):
            continue  # defaults nobody wrote
        where = (
            "all (one decision)"
            if tied
            else ", ".join(map(str, idx))
            if len(idx) < len(space.stage_decisions)
            else "each"
        )
        rows.append({"decision": key, "stages": where, "values": text})
    if space.total_layers:
        rows.append(
            {
                "decision": "total_layers",
                "stages": "constraint",
                "values": f"{space.total_layers[0]}..{space.total_layers[1]}",
            }
        )
    return rows


__all__ = ["Space", "describe"]
