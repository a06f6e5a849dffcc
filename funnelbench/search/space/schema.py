"""The space file's format: its keys and bounds, one decision (:class:`Decision`: a fixed value,
a list of choices or an integer range) and how a value of the file becomes one, and the error a
problem in the file raises (:class:`SpaceError`, naming the key; :func:`.files.load_space` adds
the file and line). The format is documented in ``spaces/README.md``.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass

from ...errors import FunnelbenchError
from ...layout import DEFAULT_HEAD_DIM, POOL_OPS, POS_KINDS

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
    "n_stages": MAX_STAGES,
    "layers": 256,
    "stride": 64,
    "hidden": 16384,
    "mlp": 65536,
    "mlp_ratio": 64,
    "heads": 256,
    "head_dim": 1024,
    "kernel": 64,
    "total_layers": MAX_STAGES * 256,
    "image_size": 4096,
    "patch_size": 256,
    "token_dim": 8192,
    "points": 64,
    "iters": 16,
    "fe": 8192,
}
# Reading a space file: a space is a few KiB of YAML (the shipped ones are under 3 KiB).
MAX_SPACE_BYTES = 256 * 1024
MAX_YAML_VALUES = 20_000  # values after anchors and aliases are expanded: no alias bomb gets further
MAX_YAML_DEPTH = 20  # a space nests 5 deep (stages.per_stage.stage0.layers.min)
MAX_KEY_CHARS = 64
MAX_WALK_STEPS = 500_000  # stage transitions the exact walk may try: seconds (see walk_steps)
FIRST_STAGE_STEPS = 100  # the walk's cost of one first stage (its stem is counted as a whole model), in steps
DEFAULTS = {
    "layers": None,
    "stride": 2,
    "mlp_ratio": 4,
    "head_dim": DEFAULT_HEAD_DIM,
    "pool": "mean",
    "pqo": True,
    "kernel": 0,
    "newpos": False,
    "qkv_bias": True,
}
MAX_POINTS_SHOWN = 4


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
            return word(self.values[0])
        if self.kind == "range":
            step = f" step {self.step}" if self.step != 1 else ""
            return f"{self.values[0]}..{self.values[-1]}{step}"
        return " | ".join(word(v) for v in self.values)


def word(v) -> str:
    return {True: "on", False: "off"}.get(v, str(v)) if isinstance(v, bool) else str(v)


class SpaceError(FunnelbenchError):
    """A problem in a space file at ``key`` (``stages.hidden``, ``baselines[0]``, ...)."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key, self.message = key, message


def known(mapping: dict, names, prefix: str) -> None:
    """Refuse a key of ``mapping`` that is not one of ``names`` (suggesting the closest)."""
    for key in mapping:
        if key not in names:
            close = difflib.get_close_matches(str(key), list(names), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            full = short(f"{prefix}.{key}" if prefix else str(key)).strip("'")
            raise SpaceError(full, f"unknown key{hint}; known here: {', '.join(names)}")


def is_kind(value, kind) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    return isinstance(value, kind)


def decision(raw, where: str, name: str, key: str, kind, words, lo) -> Decision:
    """One decision of the space file; a number past ``LARGEST[key]`` is refused before a range
    is spelled out (so no range can hold more values than the bound)."""
    hi = LARGEST.get(key)
    what = (
        f"one of {', '.join(words)}"
        if words
        else {int: "a whole number", float: "a positive number", bool: "true or false", str: "a word"}[kind]
    )
    if lo is not None and kind is int:
        what += f" of at least {lo}"

    def check(v):
        if not is_kind(v, kind) or (words and v not in words) or (lo is not None and kind is int and v < lo):
            raise SpaceError(where, f"{short(v)} is not valid here; expected {what}")
        if hi is not None and v > hi:
            raise SpaceError(
                where,
                f"{short(v)} is past the largest {key} funnelbench accepts ({hi}); "
                "see spaces/README.md for every bound",
            )
        return v

    if isinstance(raw, dict):
        known(raw, ("min", "max", "step"), where)
        if kind is not int or "min" not in raw or "max" not in raw:
            raise SpaceError(
                where,
                "a range needs min and max (whole numbers)"
                if kind is int
                else f"{key} takes a value or a list of choices, not a range",
            )
        lo_v, hi_v, step = check(raw["min"]), check(raw["max"]), raw.get("step", 1)
        if not is_kind(step, int) or step < 1:
            raise SpaceError(where, f"step {short(step)} must be a whole number of at least 1")
        if lo_v > hi_v:
            raise SpaceError(where, f"min {lo_v} is above max {hi_v}")
        if (hi_v - lo_v) % step:
            raise SpaceError(where, f"max {hi_v} is not min {lo_v} plus a multiple of step {step}")
        values = tuple(range(lo_v, hi_v + 1, step))
        return Decision(name, key, "range" if len(values) > 1 else "fixed", values, step)
    if isinstance(raw, list):
        if not raw:
            raise SpaceError(where, f"an empty list of choices; give at least one ({what})")
        values = tuple(check(v) for v in raw)
        if len(set(values)) != len(values):
            raise SpaceError(where, f"a choice appears twice in {short(raw)}")
        return Decision(name, key, "choice" if len(values) > 1 else "fixed", values)
    return Decision(name, key, "fixed", (check(raw),))


def short(value, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters: an error message stays one short line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


__all__ = [
    "Decision",
    "SpaceError",
    "decision",
    "known",
    "is_kind",
    "word",
    "short",
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
