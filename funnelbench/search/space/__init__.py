"""Search spaces: YAML files that describe a family of layouts, validated on load (a package).

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
45-49 of 50 trials. TPE models such spaces with ``group=True`` (:mod:`funnelbench.search.samplers`).

The package, from the bottom up: :mod:`.schema` (the format, one decision, the error),
:mod:`.geometry` (the stem, one stage after another, a stage's added cost), :mod:`.walk` (the
exact walk and its bound), :mod:`.model` (:class:`Space`: point <-> layout), :mod:`.build` (a
space from its YAML), :mod:`.files` (reading a file, :func:`load_space`).
"""

from __future__ import annotations

from .build import build_space
from .files import list_spaces, load_space, resolve_space, space_summaries, spaces_dir
from .geometry import added_cost, checked_layout, stage_after, stem_of
from .model import Space, describe
from .schema import (
    CONSTRAINT_KEYS,
    DEFAULTS,
    FIRST_STAGE_STEPS,
    LARGEST,
    MAX_KEY_CHARS,
    MAX_POINTS_SHOWN,
    MAX_SPACE_BYTES,
    MAX_STAGES,
    MAX_WALK_STEPS,
    MAX_YAML_DEPTH,
    MAX_YAML_VALUES,
    POOL_KEYS,
    SHARED_KEYS,
    STAGE_KEYS,
    STAGES_KEYS,
    TOP_KEYS,
    Decision,
    SpaceError,
)
from .walk import SpaceStats, stage_options, tie, walk, walk_steps

__all__ = [
    "Space",
    "SpaceStats",
    "Decision",
    "SpaceError",
    "load_space",
    "list_spaces",
    "space_summaries",
    "spaces_dir",
    "resolve_space",
    "build_space",
    "checked_layout",
    "describe",
    "walk",
    "walk_steps",
    "stage_options",
    "stage_after",
    "tie",
    "added_cost",
    "stem_of",
    "TOP_KEYS",
    "SHARED_KEYS",
    "STAGE_KEYS",
    "STAGES_KEYS",
    "CONSTRAINT_KEYS",
    "POOL_KEYS",
    "MAX_STAGES",
    "LARGEST",
    "MAX_SPACE_BYTES",
    "MAX_YAML_VALUES",
    "MAX_YAML_DEPTH",
    "MAX_KEY_CHARS",
    "MAX_WALK_STEPS",
    "FIRST_STAGE_STEPS",
    "DEFAULTS",
    "MAX_POINTS_SHOWN",
]
