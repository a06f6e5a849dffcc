"""A space from its parsed YAML (:func:`build_space`): every section checked key by key (a
problem is a :class:`.schema.SpaceError` naming the key), the decisions of every stage spelled
out (per-stage overrides, tied decisions, defaults), and the ``proxy`` section checked as the
trainer checks its options.
"""

from __future__ import annotations

from ...errors import UsageError
from ...layout import Stem, stem_geometry_problem
from .model import Space
from .schema import (
    CONSTRAINT_KEYS,
    DEFAULTS,
    LARGEST,
    POOL_KEYS,
    SHARED_KEYS,
    STAGE_KEYS,
    STAGES_KEYS,
    TOP_KEYS,
    Decision,
    SpaceError,
    decision,
    is_kind,
    known,
    short,
)


def build_space(spec, name: str, path: str | None, lines: dict) -> Space:
    """The :class:`Space` of the parsed file ``spec`` (``lines``: the line of every key)."""
    if not isinstance(spec, dict):
        raise SpaceError("", f"a space is a mapping with keys {', '.join(TOP_KEYS)}, got {type(spec).__name__}")
    known(spec, TOP_KEYS, "")
    if "stages" not in spec:
        raise SpaceError("stages", "missing: a space needs a 'stages' section (at least count and hidden)")
    shared = spec.get("shared") or {}
    if not isinstance(shared, dict):
        raise SpaceError("shared", f"must be a mapping of {', '.join(SHARED_KEYS)}")
    known(shared, SHARED_KEYS, "shared")
    for key, value in shared.items():
        kind, words, what = SHARED_KEYS[key]
        if not is_kind(value, kind) or (words and value not in words) or (kind is int and value < 1):
            raise SpaceError(
                f"shared.{key}",
                f"{value!r} is not valid; expected {what}"
                + ("" if words else f" ({'a positive whole number' if kind is int else kind.__name__})"),
            )
        if kind is int and value > LARGEST[key]:
            raise SpaceError(f"shared.{key}", f"{value} is past the largest {key} funnelbench accepts ({LARGEST[key]})")
    kind = shared.get("stem", "ps" if "points" in shared else "patch")
    if kind == "ps" and "points" not in shared:
        raise SpaceError("shared.stem", "the ps stem needs shared.points (n x n sampling points)")
    if kind != "patch" and "patch_size" in shared:
        raise SpaceError("shared.patch_size", f"the {kind} stem has no patch size; remove it")
    stem = Stem(kind, points=shared.get("points", 0))
    image = shared.get("image_size", 224)
    problem = stem_geometry_problem(stem, image)
    if problem or (kind == "patch" and image % shared.get("patch_size", 16)):
        raise SpaceError(
            "shared.image_size",
            problem[0] if problem else f"{image} is not a multiple of the patch size {shared.get('patch_size', 16)}",
        )

    stages = spec["stages"]
    if not isinstance(stages, dict):
        raise SpaceError("stages", "must be a mapping (count, tie, per_stage and the stage keys)")
    known(stages, STAGES_KEYS, "stages")
    if "count" not in stages:
        raise SpaceError("stages", "missing key count: the number of stages (e.g. 2, [2, 3] or {min: 1, max: 4})")
    counts = decision(stages["count"], "stages.count", "n_stages", "n_stages", int, None, 1)
    for key in ("hidden", "layers"):
        if key not in stages and not all(
            key in (stages.get("per_stage") or {}).get(f"stage{i}", {}) for i in range(max(counts.values))
        ):
            raise SpaceError("stages", f"missing key {key}: every stage needs its {key}")
    for a, b in (("mlp", "mlp_ratio"), ("heads", "head_dim")):
        if a in stages and b in stages:
            raise SpaceError(f"stages.{b}", f"give {a} or {b}, not both")
    tie = stages.get("tie") or []
    if not isinstance(tie, list) or any(not isinstance(t, str) or t not in STAGE_KEYS for t in tie):
        raise SpaceError("stages.tie", f"a list of stage keys ({', '.join(STAGE_KEYS)}), got {short(tie)}")
    per_stage = stages.get("per_stage") or {}
    if not isinstance(per_stage, dict):
        raise SpaceError("stages.per_stage", "a mapping: stage0: {...}, stage1: {...}")
    n_max = max(counts.values)
    for sname, overrides in per_stage.items():
        key = f"stages.per_stage.{sname}"
        if not (isinstance(sname, str) and sname.startswith("stage") and sname[5:].isdigit()):
            raise SpaceError(
                key, f"unknown stage {short(sname)}; name stages stage0, stage1, ... (stage0 is the first)"
            )
        idx = int(sname[5:])
        if idx >= n_max:
            raise SpaceError(
                key, f"{sname} does not exist: the space has at most {n_max} stages (stage0..stage{n_max - 1})"
            )
        if not isinstance(overrides, dict):
            raise SpaceError(key, "a mapping of stage keys")
        known(overrides, STAGE_KEYS, key)
        for k in overrides:
            if k in tie:
                raise SpaceError(
                    f"{key}.{k}", f"{k} is tied (one decision for all stages); remove it from tie or from here"
                )
        for k in ("stride", *POOL_KEYS):
            if idx == 0 and k in overrides:
                raise SpaceError(f"{key}.{k}", "the first stage takes the stem's tokens and does not pool")
        for a, b in (("mlp", "mlp_ratio"), ("heads", "head_dim")):
            if a in overrides and b in overrides:
                raise SpaceError(f"{key}.{b}", f"give {a} or {b}, not both")

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
            decisions[key] = decision(raw, where, pname, key, kind_, words, lo)
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
        raise SpaceError("constraints", f"a mapping of {', '.join(CONSTRAINT_KEYS)}")
    known(constraints, CONSTRAINT_KEYS, "constraints")
    if "total_layers" in constraints:
        d = decision(
            constraints["total_layers"], "constraints.total_layers", "total_layers", "total_layers", int, None, 1
        )
        if d.kind != "range":
            raise SpaceError("constraints.total_layers", "a range: {min: 8, max: 16}")
        total = (d.values[0], d.values[-1])
    baselines = spec.get("baselines") or []
    if not isinstance(baselines, list):
        raise SpaceError("baselines", "a list of layout strings")
    description = spec.get("description", "")
    if not isinstance(description, str):
        raise SpaceError("description", "a string")
    return Space(
        name,
        path,
        spec,
        description,
        dict(shared),
        counts,
        stage_decisions,
        tuple(tie),
        total,
        lines=lines,
        proxy=_proxy(spec.get("proxy")),
    )


def _proxy(proxy) -> dict:
    """The space's ``proxy`` section, checked as the trainer checks its options."""
    if proxy is None:
        return {}
    from ...training.config import TrainConfig  # no torch: the trainer's options alone
    from ...training.proxy import PROXY_FIELDS

    allowed = list(PROXY_FIELDS)
    if not isinstance(proxy, dict):
        raise SpaceError("proxy", f"a mapping of training options ({', '.join(allowed)})")
    known(proxy, allowed, "proxy")
    for key, value in proxy.items():
        try:
            TrainConfig(layout="", **{key: value})
        except UsageError as err:
            raise SpaceError(f"proxy.{key}", str(err).split(": ", 1)[-1]) from None
    try:
        TrainConfig(layout="", **proxy)
    except UsageError as err:
        raise SpaceError("proxy", str(err)) from None
    return dict(proxy)


__all__ = ["build_space"]
