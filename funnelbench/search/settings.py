"""What a study is (:class:`Settings`): the space, budgets, objectives, sampler, seed, pruner,
proxy options and baselines; stored in the study's user attributes and compared, in words,
when the study is continued. And the default study name a space and budgets give.
"""

from __future__ import annotations

import importlib.util
import json
import math
from dataclasses import dataclass, field

from ..errors import UsageError
from ..training.config import TrainConfig
from .asha import ASHA_MIN_EPOCHS, ASHA_REDUCTION
from .asha import rungs as rung_epochs
from .budget import Budgets
from .pruners import HYPERBAND_FACTOR, HYPERBAND_MIN_BRACKETS, MEDIAN_MIN_EPOCHS, hyperband_brackets
from .space import Space
from .vocabulary import FIDELITIES, OBJECTIVES, PRUNERS, SAMPLERS

# Proxy options that do not change the numbers: a study may be continued with other values.
FREE_PROXY_KEYS = ("workers", "threads", "checkpoint")
# Settings added after studies were first stored: what a study stored without them used.
STORED_BEFORE = {"fidelity": {"kind": "none"}}
PROXY_STORED_BEFORE = {"schedule": "cosine"}


@dataclass(frozen=True)
class Settings:
    """What a study is: stored in its user attributes, compared when it is continued. Frozen:
    made once by the parent process and handed to every worker (:class:`.plan.SearchPlan`)."""

    space: Space
    budgets: Budgets
    objectives: tuple[str, ...] = ("top1",)
    sampler: str = "tpe"
    seed: int = 0
    pruner: str | None = None  # None: median for one objective, none for several
    proxy: dict = field(default_factory=dict)  # TrainConfig fields + width_scale
    baselines: tuple[str, ...] = ()  # canonical; the space's first, then extra ones
    fidelity: str = "none"  # none, or asha (asynchronous successive halving over the rungs below)
    min_epochs: int | None = None  # asha: the first rung's epochs (default 1)
    max_epochs: int | None = None  # asha: the last rung's epochs (default: the proxy's --epochs)
    reduction: int | None = None  # asha: eta, the best 1/eta of a rung are promoted (default 3)

    def __post_init__(self):
        if not self.objectives:
            object.__setattr__(self, "objectives", ("top1",))
        for o in self.objectives:
            if o not in OBJECTIVES:
                raise UsageError(f"--objective {o}: unknown; choose from {', '.join(OBJECTIVES)}")
        if len(set(self.objectives)) != len(self.objectives):
            raise UsageError(f"--objective given twice: {', '.join(self.objectives)}")
        if self.sampler not in SAMPLERS:
            raise UsageError(f"--sampler {self.sampler}: unknown; choose from {', '.join(SAMPLERS)}")
        if self.sampler == "gp":
            if importlib.util.find_spec("scipy") is None:
                raise UsageError(
                    "--sampler gp: Optuna's GPSampler needs scipy, which is not installed; "
                    "`pip install scipy`, or use --sampler tpe"
                )
        self._check_fidelity()
        if self.pruner is None:
            object.__setattr__(
                self,
                "pruner",
                "median"
                if (
                    len(self.objectives) == 1
                    and self.needs_training
                    and self.proxy.get("epochs", 10) >= MEDIAN_MIN_EPOCHS
                )
                else "none",
            )
        if self.pruner not in PRUNERS:
            raise UsageError(f"--pruner {self.pruner}: unknown; choose from {', '.join(PRUNERS)}")
        if self.pruner != "none" and len(self.objectives) > 1:
            raise UsageError(
                f"--pruner {self.pruner} with {len(self.objectives)} objectives: Optuna cannot prune "
                "multi-objective studies (Trial.report raises there); use --pruner none or one --objective"
            )
        epochs = self.proxy.get("epochs", 10)
        if self.pruner == "hyperband" and hyperband_brackets(epochs) < HYPERBAND_MIN_BRACKETS:
            raise UsageError(
                f"--pruner hyperband with {epochs} epochs: that is {hyperband_brackets(epochs)} bracket(s) of "
                f"successive halving (rungs at 1, 3, 9, ... epochs), not Hyperband; give --epochs "
                f"{HYPERBAND_FACTOR ** (HYPERBAND_MIN_BRACKETS - 1)} or more, or use --pruner median or none"
            )
        if self.pruner != "none" and not self.needs_training:
            raise UsageError(
                f"--pruner {self.pruner}: the objective {self.objectives[0]} needs no training, so there is "
                "nothing to prune; use --pruner none"
            )
        if not 0 < self.proxy.get("width_scale", 1.0) <= 1:
            raise UsageError(
                f"--width-scale {self.proxy['width_scale']}: must be in (0, 1]; 0.25 trains a proxy a quarter as wide"
            )

    def _check_fidelity(self) -> None:
        """--fidelity asha's settings, each refusal one line; the defaults filled in."""
        if self.fidelity not in FIDELITIES:
            raise UsageError(f"--fidelity {self.fidelity}: unknown; choose from {', '.join(FIDELITIES)}")
        given = [
            f"--{n.replace('_', '-')}"
            for n in ("min_epochs", "max_epochs", "reduction")
            if getattr(self, n) is not None
        ]
        if self.fidelity == "none":
            if given:
                raise UsageError(f"{' '.join(given)}: rungs need --fidelity asha")
            return
        epochs = self.proxy.get("epochs", 10)
        fill = {"min_epochs": ASHA_MIN_EPOCHS, "max_epochs": epochs, "reduction": ASHA_REDUCTION}
        for name, default in fill.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)
        if not self.needs_training or len(self.objectives) > 1:
            raise UsageError(
                f"--fidelity asha with --objective {' '.join(self.objectives)}: it promotes by one trained "
                "objective (top1, top5, val_loss or train_img_per_s); give one"
            )
        if self.sampler == "nsga2":
            raise UsageError(
                "--fidelity asha with --sampler nsga2: its generations need every trial at one fidelity; "
                "use --sampler tpe, gp or random"
            )
        if self.pruner not in (None, "none"):
            raise UsageError(
                f"--fidelity asha with --pruner {self.pruner}: ASHA is the early stop (a candidate that is not "
                "promoted trains no further); use --pruner none or leave it out"
            )
        object.__setattr__(self, "pruner", "none")
        rung_epochs(self.min_epochs, self.max_epochs, self.reduction)  # one line for a bad combination
        if self.max_epochs > epochs:
            raise UsageError(
                f"--max-epochs {self.max_epochs}: longer than the proxy's schedule (--epochs {epochs}); "
                f"give --epochs {self.max_epochs} or a smaller --max-epochs"
            )
        schedule = self.proxy.get("schedule", "cosine")
        if schedule not in ("constant", "wsd"):
            raise UsageError(
                f"--fidelity asha with --schedule {schedule}: a promotion continues its checkpoint to more "
                f"epochs, and the {schedule} schedule's learning rate depends on the run's length; use "
                "--schedule wsd (each rung decays from a stable checkpoint) or constant"
            )
        warmup = self.proxy.get("warmup_epochs", TrainConfig.__dataclass_fields__["warmup_epochs"].default)
        if schedule == "wsd" and self.min_epochs < warmup:
            raise UsageError(
                f"--fidelity asha --schedule wsd with --min-epochs {self.min_epochs}: the first rung ends inside "
                f"the {warmup:g}-epoch warm-up, so its run is no start of a longer one; give --min-epochs "
                f"{math.ceil(warmup)} or more, or a shorter --warmup-epochs"
            )
        if self.proxy.get("checkpoint") == "none":
            raise UsageError(
                "--fidelity asha with --checkpoint none: a promotion continues its parent's checkpoint; "
                "use --checkpoint last or every-epoch"
            )

    @property
    def rungs(self) -> tuple[int, ...] | None:
        """The epochs of each rung (--fidelity asha), or None."""
        return rung_epochs(self.min_epochs, self.max_epochs, self.reduction) if self.fidelity == "asha" else None

    @property
    def needs_training(self) -> bool:
        return any(OBJECTIVES[o][1] for o in self.objectives)

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[o][0] for o in self.objectives]

    def to_attrs(self) -> dict:
        return {
            "space": self.space.name,
            "space_file": self.space.path,
            "space_spec": self.space.spec,
            "budgets": self.budgets.to_dict(),
            "objectives": list(self.objectives),
            "directions": self.directions,
            "sampler": self.sampler,
            "seed": self.seed,
            "pruner": self.pruner,
            "proxy": dict(self.proxy),
            "baselines": list(self.baselines),
            "fidelity": {"kind": "none"}
            if self.fidelity == "none"
            else {
                "kind": self.fidelity,
                "min_epochs": self.min_epochs,
                "max_epochs": self.max_epochs,
                "reduction": self.reduction,
                "rungs": list(self.rungs),
            },
        }


def differences(stored: dict, now: dict) -> list[str]:
    """What differs between a stored study's settings and this run's, in words."""
    out = []
    for key in ("space_spec", "budgets", "objectives", "sampler", "seed", "pruner", "proxy", "baselines", "fidelity"):
        a, b = stored.get(key, STORED_BEFORE.get(key)), now.get(key)
        if key == "proxy":
            a = {k: v for k, v in {**PROXY_STORED_BEFORE, **(a or {})}.items() if k not in FREE_PROXY_KEYS}
            b = {k: v for k, v in (b or {}).items() if k not in FREE_PROXY_KEYS}
        if json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str):
            continue
        if isinstance(a, dict) and isinstance(b, dict) and key != "space_spec":
            diffs = [f"{k} {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
            out.append(f"{key} ({', '.join(diffs[:3])}{', ...' if len(diffs) > 3 else ''})")
        elif key == "space_spec":
            out.append(
                f"space (the study's is {stored.get('space')!r} as it was stored; this run's {now.get('space')!r} differs)"
            )
        else:
            out.append(f"{key} ({a!r} -> {b!r})")
    return out


def default_study_name(space: Space, budgets: Budgets, objectives) -> str:
    parts = [space.name]
    for tag, value in (("macs", budgets.macs), ("min", budgets.min_macs), ("params", budgets.params)):
        if value is not None:
            parts.append(f"{tag}{_short(value)}")
    if budgets.memory_bytes is not None:
        parts.append(f"mem{budgets.memory_bytes / 2**30:g}GiB")
    if list(objectives) != ["top1"]:
        parts.append("-".join(objectives))
    return "-".join(parts)


def _short(v: float) -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if v >= scale:
            return f"{v / scale:.4g}{suffix}"
    return f"{v:g}"


__all__ = ["Settings", "FREE_PROXY_KEYS", "STORED_BEFORE", "PROXY_STORED_BEFORE", "differences", "default_study_name"]
