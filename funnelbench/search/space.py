"""Search spaces: YAML files that describe a family of layouts, validated on load.

    space = fb.load_space("tiny")            # a shipped space by name, or a path to a .yaml file
    layout, violations = space.suggest(trial)  # one point: a Layout (full size, what budgets judge)
    space.stats()                            # distinct layouts, cheapest / dearest in MACs and params

The format is documented in ``spaces/README.md``. A space has four parts:

* ``shared``: options every candidate has (image and patch size, stem, head, position embedding);
* ``stages``: the number of stages (``count``) and, for every stage, its decisions: ``layers``,
  ``stride`` (the pool into the stage; 1 = no pool), ``hidden``, ``mlp`` or ``mlp_ratio``,
  ``heads`` or ``head_dim`` (heads follow the width), ``pool``, ``pqo``, ``kernel``, ``newpos``,
  ``qkv_bias``; ``per_stage`` overrides them for one stage (``stage0``, ``stage1``, ...) and
  ``tie`` makes one decision for all stages;
* ``constraints``: ``total_layers`` (a range over the whole model);
* ``baselines``: layout strings that must be points of the space;
* ``proxy``: the training options a search of this space uses unless the command gives its own
  (``image_size``, ``patch_size``, ``width_scale``, ``epochs``, ``lr``, ...: the fields of
  :class:`~funnelbench.train.TrainConfig` that describe the proxy, not the run).

A value is fixed (``12``), a list of choices (``[768, 1024]``) or an integer range
(``{min: 2, max: 8}``, optional ``step``).

Every point of a valid space is a valid layout: loading walks every reachable stage sequence
(exactly, by dynamic programming over the token count, width and depth so far), checks every
pool against the layout grammar, and counts the distinct layouts with their cheapest and
dearest members on the way. Any problem is a one-line :class:`UsageError` naming the file, the
key and its line.

Parameters (one function, :meth:`Space.suggest`, owns every ``trial.suggest_*``): ``n_stages``,
then ``stage<i>_<key>`` for each stage ``i`` the layout has, or ``<key>`` for a tied decision. A
trial carries only the decisions that shape its layout (conditional parameters): no parameters
for stages beyond ``n_stages``, and no pool operator, kernel, pool-query-only or new position
embedding for a stage that does not pool (the first stage never pools). Padding them with a
fixed value, as an earlier version did, made TPE learn the padding: in the committed
``search-reinvest-ti`` study the third stage's stride, pool and width kept their first value in
45-49 of 50 trials. TPE models such spaces with ``group=True`` (:mod:`.samplers`).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path

import yaml

from ..cost import count, head_cost, stage_cost
from ..errors import FunnelbenchError, UsageError
from ..layout import (DEFAULT_HEAD_DIM, POOL_OPS, POS_KINDS, Layout, Stage, Stem, format_layout,
                      infer_stride, parse_layout, pooled_length, stem_geometry_problem, stem_grid, validate_layout)

# ----------------------------------------------------------------------------- the format

TOP_KEYS = ("name", "description", "shared", "stages", "constraints", "baselines", "proxy")
# shared key -> (type, allowed words or None, meaning)
SHARED_KEYS = {
    "image_size": (int, None, "image size in px (224)"),
    "patch_size": (int, None, "patch size in px of the patch stem (16)"),
    "stem": (str, ("patch", "t2t", "t2t_t", "ps"), "patch, t2t, t2t_t or ps"),
    "token_dim": (int, None, "width of the T2T stem's tokens (64)"),
    "points": (int, None, "PS stem: n x n sampling points"),
    "iters": (int, None, "PS stem: sampling iterations (4)"),
    "share": (bool, None, "PS stem: one layer shared by the iterations"),
    "fe": (int, None, "PS stem: width of the first bottleneck (256)"),
    "pos": (str, POS_KINDS, "position embedding: learned, sincos or none"),
    "head": (str, ("cls", "avg"), "cls (class token) or avg"),
}
# per-stage decision -> (type, allowed words or None, smallest value)
STAGE_KEYS = {
    "layers": (int, None, 1),
    "stride": (int, None, 1),
    "hidden": (int, None, 1),
    "mlp": (int, None, 1),
    "mlp_ratio": (float, None, None),
    "heads": (int, None, 1),
    "head_dim": (int, None, 1),
    "pool": (str, POOL_OPS, None),
    "pqo": (bool, None, None),
    "kernel": (int, None, 0),
    "newpos": (bool, None, None),
    "qkv_bias": (bool, None, None),
}
STAGES_KEYS = ("count", "tie", "per_stage", *STAGE_KEYS)
CONSTRAINT_KEYS = ("total_layers",)
POOL_KEYS = ("pool", "pqo", "kernel", "newpos")  # decisions of a stage that pools (none for the first)
# The largest value each number may take: far past any model a paper or a machine holds (ViT-22B
# has 48 layers of width 6144, MLP 24576, 48 heads), and small enough that a typo such as
# ``layers: {min: 1, max: 1000000000}`` is refused in one line instead of exhausting the machine.
MAX_STAGES = 32
LARGEST = {
    "n_stages": MAX_STAGES, "layers": 256, "stride": 64, "hidden": 16384, "mlp": 65536, "mlp_ratio": 64,
    "heads": 256, "head_dim": 1024, "kernel": 64, "total_layers": MAX_STAGES * 256,
    "image_size": 4096, "patch_size": 256, "token_dim": 8192, "points": 64, "iters": 16, "fe": 8192,
}
# Reading a space file: a space is a few KiB of YAML (the shipped ones are under 3 KiB).
MAX_SPACE_BYTES = 256 * 1024
MAX_YAML_VALUES = 20_000  # values after anchors and aliases are expanded: no alias bomb gets further
MAX_YAML_DEPTH = 20  # a space nests 5 deep (stages.per_stage.stage0.layers.min)
MAX_KEY_CHARS = 64
MAX_WALK_STEPS = 500_000  # stage transitions the exact walk may try: seconds (see walk_steps)
FIRST_STAGE_STEPS = 100  # the walk's cost of one first stage (its stem is counted as a whole model), in steps
DEFAULTS = {"layers": None, "stride": 2, "mlp_ratio": 4, "head_dim": DEFAULT_HEAD_DIM, "pool": "mean", "pqo": True,
            "kernel": 0, "newpos": False, "qkv_bias": True}
MAX_POINTS_SHOWN = 4


def spaces_dir():
    """The folder of the shipped spaces (package data; ``spaces/`` at the repository root is a link to it)."""
    return resources.files("funnelbench").joinpath("spaces")


def list_spaces() -> list[str]:
    """Names of the shipped spaces."""
    return sorted(p.name[:-5] for p in spaces_dir().iterdir() if p.name.endswith(".yaml"))


# ----------------------------------------------------------------------------- decisions


@dataclass(frozen=True)
class Decision:
    """One parameter of the space: ``values`` (choices, or every value of a range)."""

    name: str  # the Optuna parameter name
    key: str  # the stage key (layers, hidden, ...) or n_stages
    kind: str  # fixed | choice | range
    values: tuple
    step: int = 1

    def suggest(self, trial):
        if self.kind == "fixed":
            return self.values[0]
        if self.kind == "range":
            return trial.suggest_int(self.name, self.values[0], self.values[-1], step=self.step)
        return trial.suggest_categorical(self.name, self.values)

    def text(self) -> str:
        if self.kind == "fixed":
            return _word(self.values[0])
        if self.kind == "range":
            step = f" step {self.step}" if self.step != 1 else ""
            return f"{self.values[0]}..{self.values[-1]}{step}"
        return " | ".join(_word(v) for v in self.values)


def _word(v) -> str:
    return {True: "on", False: "off"}.get(v, str(v)) if isinstance(v, bool) else str(v)


class _SpaceError(FunnelbenchError):
    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key, self.message = key, message


# ----------------------------------------------------------------------------- the space


@dataclass(frozen=True)
class SpaceStats:
    """What a space holds: how many distinct layouts, and its extremes (with their counts)."""

    layouts: int
    cheapest_macs: tuple[Layout, int, int]  # (layout, macs, params)
    dearest_macs: tuple[Layout, int, int]
    cheapest_params: tuple[Layout, int, int]
    dearest_params: tuple[Layout, int, int]


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
        (see the module docstring)."""
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
        stem, image, patch, head, pos = self._stem()
        prefix = 1 if head == "cls" else 0
        side = stem_grid(stem, image, patch)
        n, grid = side * side, side
        stages = []
        for i, values in enumerate(chosen):
            stage, n, grid, problem = self._stage(values, i, n, grid, prefix)
            if problem:  # cannot happen in a space that loaded: every transition was checked
                raise UsageError(f"space {self.name}: {problem}")
            stages.append(stage)
        layout = Layout(tuple(stages), image, patch, head, stem, pos)
        return checked_layout(layout) if check else layout

    def _stem(self):
        s = self.shared
        kind = s.get("stem", "ps" if "points" in s else "patch")
        stem = Stem(kind, token_dim=s.get("token_dim", 64), points=s.get("points", 0), iters=s.get("iters", 4),
                    share=s.get("share", False), fe_width=s.get("fe", 256))
        pos = s.get("pos", stem.default_pos)
        return stem, s.get("image_size", 224), s.get("patch_size", 16), s.get("head", "cls"), pos

    @staticmethod
    def _stage(v: dict, index: int, n: int, side: int | None, prefix: int):
        """(Stage, patch tokens after it, grid side or None, problem text or None)."""
        hidden = v["hidden"]
        mlp = v["mlp"] if "mlp" in v else v["mlp_ratio"] * hidden
        heads = v["heads"] if "heads" in v else hidden // v["head_dim"]
        if "heads" not in v and hidden % v["head_dim"]:
            return None, n, side, f"hidden width {hidden} is not a multiple of head_dim {v['head_dim']}"
        if heads < 1 or hidden % heads:
            return None, n, side, f"hidden width {hidden} is not divisible by {heads} heads"
        if mlp != int(mlp):
            return None, n, side, f"mlp_ratio {v['mlp_ratio']} x hidden {hidden} is not a whole number"
        stride = v.get("stride", 1) if index else 1
        qkv = v["qkv_bias"]
        if stride == 1:
            return Stage(v["layers"], n + prefix, hidden, int(mlp), heads, qkv_bias=qkv), n, side, None
        pool, kernel = v["pool"], v["kernel"]
        if pool.endswith("2d"):
            if side is None:
                return None, n, side, f"stage {index}: {pool} pools a square grid, but a 1D pool before it left a sequence"
            new_side = pooled_length(side, stride, kernel)
            new_n, ok = new_side * new_side, new_side >= 1 and new_side < side and \
                infer_stride(side, new_side, kernel) == stride
            width = f"the {side}x{side} grid"
        else:
            new_n, new_side = pooled_length(n, stride, kernel), None
            ok = 1 <= new_n < n and infer_stride(n, new_n, kernel) == stride
            width = f"{n} patch tokens"
        if not ok:
            if new_n < 1:
                what = "leaves no tokens"
            elif new_n >= n:
                what = f"leaves {new_n + prefix} tokens, as many as before (the grammar reads that as no pool)"
            else:
                what = (f"gives {new_n + prefix} tokens, which the layout grammar writes as stride "
                        f"{infer_stride(side if new_side is not None else n, new_side if new_side is not None else new_n, kernel)}")
            k = f" with kernel {kernel}" if kernel else ""
            return None, n, side, f"stride {stride}{k} into stage {index} pools {width} and {what}"
        stage = Stage(v["layers"], new_n + prefix, hidden, int(mlp), heads, pool, stride, v["pqo"], kernel, v["newpos"], qkv)
        return stage, new_n, new_side, None

    # -- what the space holds
    @cached_property
    def _walk(self) -> SpaceStats:
        return _walk(self)

    def stats(self) -> SpaceStats:
        return self._walk

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
        stem, image, patch, head, pos = self._stem()
        if (layout.stem, layout.image_size, layout.head, layout.pos) != (stem, image, head, pos) or \
                (stem.kind == "patch" and layout.patch_size != patch):
            want = format_layout(Layout((Stage(1, stem_grid(stem, image, patch) ** 2 + (head == "cls")),), image, patch,
                                        head, stem, pos)).split(", ", 1)
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
                    return f"stage {i} has {key} {_word(value)}; the space allows {d.text()}", {}
                if key in self.tied:
                    if tied.setdefault(key, value) != value:
                        return f"{key} is one decision for all stages in this space, and the layout's stages differ", {}
                if d.kind != "fixed":
                    params[d.name] = allowed[0]
        if self.violations(layout):
            lo, hi = self.total_layers
            return f"it has {layout.depth} layers; the space's total_layers is {lo}..{hi}", {}
        return None, params


def checked_layout(layout: Layout) -> Layout:
    """The one place a constructed layout is validated (as the parser checks text)."""
    return validate_layout(layout)


# ----------------------------------------------------------------------------- exhaustive walk


def _walk(space: Space, check_only: bool = False, image_size: int | None = None, patch_size: int | None = None):
    """Every reachable stage sequence, by dynamic programming over the state after each stage
    (patch tokens, grid side, width, depth so far, tied values used so far): checks every
    transition (a problem raises _SpaceError naming the key), counts the distinct layouts and
    finds the cheapest and dearest in MACs and in params."""
    stem, image, patch, head, pos = space._stem()
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
            options = _stage_options(space, i)
            new_states: dict = {}
            for (n, side, hidden, depth, tied), acc in states.items():
                for values in options:
                    tie_now = _tie(tie_keys, tied, values, i)
                    if tie_now is None:
                        continue
                    stage, new_n, new_side, problem = Space._stage(values, i, n, side, prefix)
                    if problem:
                        raise _SpaceError(_blame(problem, space, i), problem)
                    if check_only:
                        new_states.setdefault((new_n, new_side, None, 0, tie_now), acc)
                        continue
                    ckey = (n, hidden, stage)
                    cost = costs.get(ckey)
                    if cost is None:
                        prev = None if hidden is None else Stage(1, n + prefix, hidden, hidden, 1)
                        cost = costs[ckey] = _stage_cost(prev, stage, image, patch, head, stem, pos)
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
        raise _SpaceError("constraints.total_layers", "no point of the space has a total depth in the total_layers range")
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


def _tie(keys: tuple, tied: tuple, values: dict, i: int) -> tuple | None:
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
    cand = [acc[0], (acc[1][0] + macs, acc[1][1] + (stage,)), (acc[2][0] + macs, acc[2][1] + (stage,)),
            (acc[3][0] + params, acc[3][1] + (stage,)), (acc[4][0] + params, acc[4][1] + (stage,))]
    old = states.get(key)
    if old is None:
        states[key] = cand
        return
    old[0] += cand[0]
    for slot, better in ((1, min), (2, max), (3, min), (4, max)):
        old[slot] = better(old[slot], cand[slot], key=lambda x: x[0])


def _stage_cost(prev: Stage | None, stage: Stage, image, patch, head, stem, pos) -> tuple[int, int]:
    """(MACs, params) a stage adds after ``prev``; the first stage carries the stem, every stage
    the head on its width minus the previous stage's head (so the sums telescope)."""
    params, macs = stage_cost(prev, stage)
    head_params, head_macs = head_cost(stage.hidden)
    if prev is None:  # the stem, class token and position embedding: from the one-stage model
        parts = count(Layout((stage,), image, patch, head, stem, pos)).parts
        for p in parts:
            if p.name in ("embed", "sampling"):
                macs, params = macs + p.macs, params + p.params
    else:
        prev_params, prev_macs = head_cost(prev.hidden)
        head_params, head_macs = head_params - prev_params, head_macs - prev_macs
    return macs + head_macs, params + head_params


def _stage_options(space: Space, i: int) -> list[dict]:
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
    key = "stride" if problem.startswith("stride") or "pools" in problem else (
        "head_dim" if "head_dim" in problem else "heads" if "heads" in problem else "mlp_ratio" if "mlp_ratio" in problem else "pool")
    local = f"stages.per_stage.stage{i}.{key}"
    return local if local in space.lines else f"stages.{key}"


# ----------------------------------------------------------------------------- loading


def _compose(text: str, where: str):
    """YAML to Python, with the line of every key (``"stages.hidden"`` -> 12). Bounded: at most
    ``MAX_YAML_VALUES`` values once anchors and aliases are expanded, no alias inside itself."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise UsageError(f"space {where}{line}: not valid YAML ({problem})") from None
    except RecursionError:
        raise UsageError(f"space {where}: not valid YAML for a space (nested too deeply)") from None
    lines: dict = {}
    if node is None:
        raise UsageError(f"space {where}: the file is empty; see spaces/README.md for the format")
    seen = [0]
    inside: set[int] = set()  # the nodes being converted: an alias to one of them never ends

    def convert(n, path):
        seen[0] += 1
        if seen[0] > MAX_YAML_VALUES:
            raise UsageError(f"space {where} line {n.start_mark.line + 1}: the file expands to more than "
                             f"{MAX_YAML_VALUES:,} values (anchors and aliases repeat what they name); a space "
                             "is a few dozen values, see spaces/README.md")
        if id(n) in inside:
            raise UsageError(f"space {where} line {n.start_mark.line + 1}: an alias refers to the anchor it "
                             "is inside of, which never ends; write the values out")
        if len(inside) > MAX_YAML_DEPTH:
            raise UsageError(f"space {where} line {n.start_mark.line + 1}: nested more than {MAX_YAML_DEPTH} deep; a "
                             "space is a mapping of mappings and lists a few levels deep")
        lines.setdefault(path, n.start_mark.line + 1)
        if isinstance(n, (yaml.MappingNode, yaml.SequenceNode)):
            inside.add(id(n))
            try:
                return convert_collection(n, path)
            finally:
                inside.discard(id(n))
        return _scalar(n, where)

    def convert_collection(n, path):
        if isinstance(n, yaml.MappingNode):
            out = {}
            for k, v in n.value:
                if not isinstance(k, yaml.ScalarNode) or len(str(k.value)) > MAX_KEY_CHARS:
                    raise UsageError(f"space {where} line {k.start_mark.line + 1}: a key is a short word "
                                     "(see spaces/README.md for the keys)")
                key = str(k.value)
                sub = f"{path}.{key}" if path else key
                lines[sub] = k.start_mark.line + 1
                if key in out:
                    raise UsageError(f"space {where} line {k.start_mark.line + 1}, key {sub}: given twice")
                out[key] = convert(v, sub)
            return out
        return [convert(v, f"{path}[{i}]") for i, v in enumerate(n.value)]

    return convert(node, ""), lines


def _scalar(node, where: str):
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    except (yaml.YAMLError, ValueError, OverflowError) as err:  # e.g. an int of 5000 digits, a bad date
        problem = getattr(err, "problem", None) or str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UsageError(f"space {where} line {node.start_mark.line + 1}: not a value funnelbench can read "
                         f"({_short(problem, 120)})") from None
    finally:
        loader.dispose()


def _read_space_file(path: Path, where: str) -> str:
    """The text of a space file: at most ``MAX_SPACE_BYTES``, UTF-8; any trouble is one line."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SPACE_BYTES + 1)
    except OSError as err:
        raise UsageError(f"space file {where!r}: cannot read it ({err.strerror or type(err).__name__}); "
                         "give a readable .yaml file") from None
    if len(data) > MAX_SPACE_BYTES:
        raise UsageError(f"space file {where!r} is larger than {MAX_SPACE_BYTES // 1024} KiB; a space is a few KiB "
                         "of YAML (see spaces/README.md)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UsageError(f"space file {where!r}: not UTF-8 text (byte {err.start}); a space is a YAML file") from None


def resolve_space(space) -> tuple[dict, str | None, str, dict]:
    """(spec, file path or None, name, key lines) of a name, a path or a dict."""
    if isinstance(space, dict):
        return space, None, str(space.get("name", "custom")), {}
    text_arg = str(space)
    path = Path(text_arg).expanduser()
    if text_arg.endswith((".yaml", ".yml")) or "/" in text_arg or path.is_file():
        if not path.is_file():
            what = "is not a file" if path.exists() else "does not exist"  # a folder, a device, a pipe
            raise UsageError(f"space file {text_arg!r} {what}; give a .yaml file or a shipped space "
                             f"({', '.join(list_spaces())})")
        where = str(path)
        text = _read_space_file(path, where)
    else:
        shipped = spaces_dir().joinpath(text_arg + ".yaml")
        if not shipped.is_file():
            import difflib

            close = difflib.get_close_matches(text_arg, list_spaces(), n=2)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise UsageError(f"unknown space {text_arg!r}{hint}; shipped spaces: {', '.join(list_spaces())}, "
                             "or give a path to a .yaml file")
        text, where = shipped.read_text(encoding="utf-8"), f"spaces/{text_arg}.yaml"
        path = None
    spec, lines = _compose(text, where)
    lines["__where__"] = where
    name = spec.get("name", path.stem if path else text_arg) if isinstance(spec, dict) else text_arg
    return spec, (str(path.resolve()) if path else None), str(name), lines


def load_space(space) -> Space:
    """A validated :class:`Space` from a shipped space's name, a ``.yaml`` path or a dict."""
    spec, path, name, lines = resolve_space(space)
    where = lines.get("__where__", name)

    def fail(key: str, message: str):
        line = lines.get(key)
        at = f" line {line}" if line else ""
        raise UsageError(f"space {where}{at}, key {key}: {message}")

    try:
        result = _build(spec, name, path, lines)
        steps = walk_steps(result)
        if steps > MAX_WALK_STEPS:
            widest = max((d for stage in result.stage_decisions for d in stage.values()), key=lambda d: len(d.values))
            raise _SpaceError("stages", f"walking this space exactly would take up to {steps:,} steps, more than the "
                                        f"{MAX_WALK_STEPS:,} (seconds of work) funnelbench allows; narrow its ranges "
                                        f"(the widest is {widest.name}, {widest.text()}) or split it into several spaces")
        _walk(result, check_only=True)
        result.stats()  # counts, extremes, and the depth constraint's feasibility
    except _SpaceError as err:
        fail(err.key, err.message)
    for i, text in enumerate(spec.get("baselines") or []):
        key = f"baselines[{i}]"
        if not isinstance(text, str):
            fail(key, f"a baseline is a layout string, got {_short(text)}")
        try:
            layout = parse_layout(text)
        except FunnelbenchError as err:
            fail(key, str(err))
        why = result.contains(layout)
        if why:
            fail(key, f"baseline {format_layout(layout)!r} is not a point of the space: {why}")
        if layout not in result.baselines:  # listed twice: trained once, as a repeated --baseline is
            result.baselines.append(layout)
    return result


def walk_steps(space: Space) -> int:
    """An upper bound on the stage transitions the exact walk (:func:`_walk`) tries, computed
    from the decisions alone in microseconds: for every stage count and stage, the states that
    reach the stage times the stage's combinations of values. The states after a stage are at
    most the paths so far, and at most the distinct (token count, width, depth so far, tied
    values) the walk merges them into; the token counts at most the products of the pool
    geometries (stride, kernel, 1D or 2D) so far. A step is about 10 us of the walk on one core
    (an option whose tied value clashes is skipped for far less, and not counted); a space is
    refused above ``MAX_WALK_STEPS``."""
    stem, image, patch, _, _ = space._stem()
    tokens = 2 * stem_grid(stem, image, patch) ** 2  # a count of tokens, as a grid or a sequence
    depth_cap = space.total_layers[1] + 1 if space.total_layers else 1
    first = space.stage_decisions[0]
    tied = math.prod(len(first[key].values) + 1 for key in space.tied if key in first)
    steps = 0
    for n_stages in space.counts.values:
        states, geometries, depth = 1, 1, 0
        for i in range(n_stages):
            size = {key: len(d.values) for key, d in space.stage_decisions[i].items()}
            options = math.prod(size.values())  # what _stage_options goes through
            # past the first stage a state has fixed the tied values: the other options are skipped
            fitting = options // math.prod(size.get(key, 1) for key in space.tied) if i else options
            # a first stage is counted with the stem (a whole model's count): ~100 steps of work
            steps += options * FIRST_STAGE_STEPS if i == 0 else options + states * fitting
            geometries *= size.get("stride", 1) * size.get("kernel", 1) * 2  # 1D or 2D pools
            depth += max(space.stage_decisions[i]["layers"].values)
            states = min(states * options, min(tokens, geometries) * size["hidden"]
                         * (min(depth_cap, depth + 1) if space.total_layers else 1) * tied)
    return steps


def _build(spec, name: str, path: str | None, lines: dict) -> Space:
    if not isinstance(spec, dict):
        raise _SpaceError("", f"a space is a mapping with keys {', '.join(TOP_KEYS)}, got {type(spec).__name__}")
    _known(spec, TOP_KEYS, "")
    if "stages" not in spec:
        raise _SpaceError("stages", "missing: a space needs a 'stages' section (at least count and hidden)")
    shared = spec.get("shared") or {}
    if not isinstance(shared, dict):
        raise _SpaceError("shared", f"must be a mapping of {', '.join(SHARED_KEYS)}")
    _known(shared, SHARED_KEYS, "shared")
    for key, value in shared.items():
        kind, words, what = SHARED_KEYS[key]
        if not _is(value, kind) or (words and value not in words) or (kind is int and value < 1):
            raise _SpaceError(f"shared.{key}", f"{value!r} is not valid; expected {what}"
                              + ("" if words else f" ({'a positive whole number' if kind is int else kind.__name__})"))
        if kind is int and value > LARGEST[key]:
            raise _SpaceError(f"shared.{key}", f"{value} is past the largest {key} funnelbench accepts ({LARGEST[key]})")
    kind = shared.get("stem", "ps" if "points" in shared else "patch")
    if kind == "ps" and "points" not in shared:
        raise _SpaceError("shared.stem", "the ps stem needs shared.points (n x n sampling points)")
    if kind != "patch" and "patch_size" in shared:
        raise _SpaceError("shared.patch_size", f"the {kind} stem has no patch size; remove it")
    stem = Stem(kind, points=shared.get("points", 0))
    image = shared.get("image_size", 224)
    problem = stem_geometry_problem(stem, image)
    if problem or (kind == "patch" and image % shared.get("patch_size", 16)):
        raise _SpaceError("shared.image_size", problem[0] if problem else
                          f"{image} is not a multiple of the patch size {shared.get('patch_size', 16)}")

    stages = spec["stages"]
    if not isinstance(stages, dict):
        raise _SpaceError("stages", "must be a mapping (count, tie, per_stage and the stage keys)")
    _known(stages, STAGES_KEYS, "stages")
    if "count" not in stages:
        raise _SpaceError("stages", "missing key count: the number of stages (e.g. 2, [2, 3] or {min: 1, max: 4})")
    counts = _decision(stages["count"], "stages.count", "n_stages", "n_stages", int, None, 1)
    for key in ("hidden", "layers"):
        if key not in stages and not all(key in (stages.get("per_stage") or {}).get(f"stage{i}", {})
                                         for i in range(max(counts.values))):
            raise _SpaceError("stages", f"missing key {key}: every stage needs its {key}")
    for a, b in (("mlp", "mlp_ratio"), ("heads", "head_dim")):
        if a in stages and b in stages:
            raise _SpaceError(f"stages.{b}", f"give {a} or {b}, not both")
    tie = stages.get("tie") or []
    if not isinstance(tie, list) or any(not isinstance(t, str) or t not in STAGE_KEYS for t in tie):
        raise _SpaceError("stages.tie", f"a list of stage keys ({', '.join(STAGE_KEYS)}), got {_short(tie)}")
    per_stage = stages.get("per_stage") or {}
    if not isinstance(per_stage, dict):
        raise _SpaceError("stages.per_stage", "a mapping: stage0: {...}, stage1: {...}")
    n_max = max(counts.values)
    for sname, overrides in per_stage.items():
        key = f"stages.per_stage.{sname}"
        if not (isinstance(sname, str) and sname.startswith("stage") and sname[5:].isdigit()):
            raise _SpaceError(key, f"unknown stage {_short(sname)}; name stages stage0, stage1, ... (stage0 is the first)")
        idx = int(sname[5:])
        if idx >= n_max:
            raise _SpaceError(key, f"{sname} does not exist: the space has at most {n_max} stages (stage0..stage{n_max - 1})")
        if not isinstance(overrides, dict):
            raise _SpaceError(key, "a mapping of stage keys")
        _known(overrides, STAGE_KEYS, key)
        for k in overrides:
            if k in tie:
                raise _SpaceError(f"{key}.{k}", f"{k} is tied (one decision for all stages); remove it from tie or from here")
        for k in ("stride", *POOL_KEYS):
            if idx == 0 and k in overrides:
                raise _SpaceError(f"{key}.{k}", "the first stage takes the stem's tokens and does not pool")
        for a, b in (("mlp", "mlp_ratio"), ("heads", "head_dim")):
            if a in overrides and b in overrides:
                raise _SpaceError(f"{key}.{b}", f"give {a} or {b}, not both")

    stage_decisions = []
    for i in range(n_max):
        own = per_stage.get(f"stage{i}", {})
        decisions = {}
        for key, (kind_, words, lo) in STAGE_KEYS.items():
            if i == 0 and (key == "stride" or key in POOL_KEYS):
                continue  # the first stage takes the stem's tokens and does not pool
            if key in own:
                raw, where, pname = own[key], f"stages.per_stage.stage{i}.{key}", f"stage{i}_{key}"
            elif key in stages:
                raw, where = stages[key], f"stages.{key}"
                pname = key if key in tie else f"stage{i}_{key}"
            else:
                continue
            # mlp / mlp_ratio and heads / head_dim: a stage's own choice replaces the shared one
            decisions[key] = _decision(raw, where, pname, key, kind_, words, lo)
        for a, b in (("mlp", "mlp_ratio"), ("heads", "head_dim")):
            if a in own:
                decisions.pop(b, None)
            elif b in own:
                decisions.pop(a, None)
            if a not in decisions and b not in decisions:
                decisions[b] = Decision(b, b, "fixed", (DEFAULTS[b],))
        for key in ("pool", "pqo", "kernel", "newpos", "qkv_bias") + (("stride",) if i else ()):
            decisions.setdefault(key, Decision(key, key, "fixed", (DEFAULTS[key],)))
        stage_decisions.append(decisions)

    total = None
    constraints = spec.get("constraints") or {}
    if not isinstance(constraints, dict):
        raise _SpaceError("constraints", f"a mapping of {', '.join(CONSTRAINT_KEYS)}")
    _known(constraints, CONSTRAINT_KEYS, "constraints")
    if "total_layers" in constraints:
        d = _decision(constraints["total_layers"], "constraints.total_layers", "total_layers", "total_layers", int, None, 1)
        if d.kind != "range":
            raise _SpaceError("constraints.total_layers", "a range: {min: 8, max: 16}")
        total = (d.values[0], d.values[-1])
    baselines = spec.get("baselines") or []
    if not isinstance(baselines, list):
        raise _SpaceError("baselines", "a list of layout strings")
    description = spec.get("description", "")
    if not isinstance(description, str):
        raise _SpaceError("description", "a string")
    return Space(name, path, spec, description, dict(shared), counts, stage_decisions, tuple(tie), total, lines=lines,
                 proxy=_proxy(spec.get("proxy")))


def _proxy(proxy) -> dict:
    """The space's ``proxy`` section, checked as the trainer checks its options."""
    if proxy is None:
        return {}
    from ..train import PROXY_FIELDS, TrainConfig

    allowed = list(PROXY_FIELDS)
    if not isinstance(proxy, dict):
        raise _SpaceError("proxy", f"a mapping of training options ({', '.join(allowed)})")
    _known(proxy, allowed, "proxy")
    for key, value in proxy.items():
        try:
            TrainConfig(layout="", **{key: value})
        except UsageError as err:
            raise _SpaceError(f"proxy.{key}", str(err).split(": ", 1)[-1]) from None
    try:
        TrainConfig(layout="", **proxy)
    except UsageError as err:
        raise _SpaceError("proxy", str(err)) from None
    return dict(proxy)


def _known(mapping: dict, known, prefix: str) -> None:
    for key in mapping:
        if key not in known:
            import difflib

            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            full = _short(f"{prefix}.{key}" if prefix else str(key)).strip("'")
            raise _SpaceError(full, f"unknown key{hint}; known here: {', '.join(known)}")


def _is(value, kind) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    return isinstance(value, kind)


def _decision(raw, where: str, name: str, key: str, kind, words, lo) -> Decision:
    """One decision of the space file; a number past ``LARGEST[key]`` is refused before a range
    is spelled out (so no range can hold more values than the bound)."""
    hi = LARGEST.get(key)
    what = (f"one of {', '.join(words)}" if words else {int: "a whole number", float: "a positive number",
                                                          bool: "true or false", str: "a word"}[kind])
    if lo is not None and kind is int:
        what += f" of at least {lo}"

    def check(v):
        if not _is(v, kind) or (words and v not in words) or (lo is not None and kind is int and v < lo):
            raise _SpaceError(where, f"{_short(v)} is not valid here; expected {what}")
        if hi is not None and v > hi:
            raise _SpaceError(where, f"{_short(v)} is past the largest {key} funnelbench accepts ({hi}); "
                                     "see spaces/README.md for every bound")
        return v

    if isinstance(raw, dict):
        _known(raw, ("min", "max", "step"), where)
        if kind is not int or "min" not in raw or "max" not in raw:
            raise _SpaceError(where, "a range needs min and max (whole numbers)" if kind is int else
                              f"{key} takes a value or a list of choices, not a range")
        lo_v, hi_v, step = check(raw["min"]), check(raw["max"]), raw.get("step", 1)
        if not _is(step, int) or step < 1:
            raise _SpaceError(where, f"step {_short(step)} must be a whole number of at least 1")
        if lo_v > hi_v:
            raise _SpaceError(where, f"min {lo_v} is above max {hi_v}")
        if (hi_v - lo_v) % step:
            raise _SpaceError(where, f"max {hi_v} is not min {lo_v} plus a multiple of step {step}")
        values = tuple(range(lo_v, hi_v + 1, step))
        return Decision(name, key, "range" if len(values) > 1 else "fixed", values, step)
    if isinstance(raw, list):
        if not raw:
            raise _SpaceError(where, f"an empty list of choices; give at least one ({what})")
        values = tuple(check(v) for v in raw)
        if len(set(values)) != len(values):
            raise _SpaceError(where, f"a choice appears twice in {_short(raw)}")
        return Decision(name, key, "choice" if len(values) > 1 else "fixed", values)
    return Decision(name, key, "fixed", (check(raw),))


def _short(value, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters: an error message stays one short line."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def describe(space: Space) -> list[dict]:
    """One row per decision: its parameter name, the stages it applies to and its values."""
    rows = [{"decision": "n_stages", "stages": "-", "values": space.counts.text()}]
    seen: dict[tuple, list[int]] = {}
    for i, stage in enumerate(space.stage_decisions):
        for key, d in stage.items():
            seen.setdefault((key, d.text(), key in space.tied), []).append(i)
    for (key, text, tied), idx in seen.items():
        if key in ("pool", "pqo", "kernel", "newpos", "qkv_bias", "stride", "head_dim", "mlp_ratio") \
                and text in (_word(DEFAULTS[key]),) \
                and key not in space.spec.get("stages", {}) and not any(key in (space.spec["stages"].get("per_stage") or {}).get(f"stage{i}", {}) for i in idx):
            continue  # defaults nobody wrote
        where = "all (one decision)" if tied else ", ".join(map(str, idx)) if len(idx) < len(space.stage_decisions) else "each"
        rows.append({"decision": key, "stages": where, "values": text})
    if space.total_layers:
        rows.append({"decision": "total_layers", "stages": "constraint", "values": f"{space.total_layers[0]}..{space.total_layers[1]}"})
    return rows


__all__ = ["Space", "SpaceStats", "Decision", "load_space", "list_spaces", "spaces_dir", "checked_layout", "describe"]
