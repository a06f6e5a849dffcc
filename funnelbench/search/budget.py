"""Budgets: decided from the full-size layout's analytic counts before anything is built.

A budget judges the layout the space describes (224 px, full width), never the proxy that
trains. ``macs`` is the papers' "FLOPs" (multiply-accumulates: DeiT-S is 4.6 G); FLOPs as
``FlopCounterMode`` counts them are 2 x MACs. Every budget gives a relative excess,
``(cost - limit) / limit`` (positive = over), which is what ``trial.set_constraint`` stores.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..cost import count
from ..errors import FunnelbenchError, UsageError
from ..layout import Layout
from ..memory import UnmodelledLayout, estimate_memory
from ..tables import human

# The constraint names, in the order they are stored and shown.
NAMES = ("macs", "params", "memory", "min_macs")


@dataclass(frozen=True)
class Budgets:
    macs: float | None = None  # at most this many MACs per image
    min_macs: float | None = None  # at least this many (re-invest rather than shrink)
    params: float | None = None
    memory_bytes: int | None = None  # estimated training peak at memory_batch
    memory_batch: int = 64
    memory_device: str = "cuda"
    memory_dtype: str = "fp32"

    def __post_init__(self):
        if self.memory_batch < 1:
            raise UsageError(f"--memory-batch {self.memory_batch}: must be at least 1")
        if self.macs is not None and self.min_macs is not None and self.min_macs > self.macs:
            raise UsageError(
                f"--min-flops {human(self.min_macs, 'MACs')} is above --budget-flops {human(self.macs, 'MACs')}; "
                "give a floor below the ceiling"
            )

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.macs, self.min_macs, self.params, self.memory_bytes))

    def memory_of(self, layout: Layout) -> int:
        """Estimated training peak of ``layout`` at ``memory_batch`` (raises UnmodelledLayout)."""
        return estimate_memory(
            layout, self.memory_batch, device=self.memory_device, dtype=self.memory_dtype
        ).train_peak_bytes

    def judge(self, layout: Layout, *, need_memory: bool = False, want_memory: bool = False) -> tuple[dict, dict]:
        """(costs, excess): the target's ``macs``, ``params``, ``train_mem_est_bytes`` and, per
        budget, its relative excess ``(cost - limit) / limit`` (all of them, feasible ones <= 0).
        The memory estimate is made when a memory budget or ``need_memory`` asks for it (a
        layout the estimate does not model is then an error), and with ``want_memory`` where
        the estimate models the layout (else None): every trial's record carries it."""
        cost = count(layout)
        costs = {"macs": cost.macs, "params": cost.params, "train_mem_est_bytes": None}
        if self.memory_bytes is not None or need_memory:
            costs["train_mem_est_bytes"] = self.memory_of(layout)
        elif want_memory:
            try:
                costs["train_mem_est_bytes"] = self.memory_of(layout)
            except FunnelbenchError:  # a part the estimate does not model: no number rather than a guess
                pass
        excess = {}
        if self.macs is not None:
            excess["macs"] = (cost.macs - self.macs) / self.macs
        if self.params is not None:
            excess["params"] = (cost.params - self.params) / self.params
        if self.memory_bytes is not None:
            excess["memory"] = (costs["train_mem_est_bytes"] - self.memory_bytes) / self.memory_bytes
        if self.min_macs is not None:
            excess["min_macs"] = (self.min_macs - cost.macs) / self.min_macs
        return costs, excess

    def lines(self) -> list[str]:
        """The budgets in words, both conventions for compute."""
        out = []
        if self.macs is not None:
            out.append(f"at most {macs_text(self.macs)}")
        if self.min_macs is not None:
            out.append(f"at least {macs_text(self.min_macs)}")
        if self.params is not None:
            out.append(f"at most {human(self.params)} params")
        if self.memory_bytes is not None:
            out.append(
                f"estimated training memory at most {self.memory_bytes / 2**30:.2f} GiB at batch "
                f"{self.memory_batch} ({self.memory_device}, {self.memory_dtype})"
            )
        return out


def macs_text(macs: float) -> str:
    """'4.60 GMACs, i.e. 9.20 GFLOPs as 2 x MACs'."""
    return f"{human(macs, 'MACs')}, i.e. {human(2 * macs, 'FLOPs')} as 2 x MACs"


def over_budget(excess: dict) -> dict:
    """The budgets a layout breaks: {name: relative excess} (empty when within all)."""
    return {k: v for k, v in excess.items() if v > 0}


def preflight(space, budgets: Budgets, samples: int = 500, seed: int = 0) -> str | None:
    """Before the first trial: a budget that no point of the space meets is an error naming the
    space's cheapest layout and its cost; returns a warning when the budgets keep under 10 %
    of the space (estimated from ``samples`` random points), else None."""
    if not budgets.any:
        return None
    stats = space.stats()
    if budgets.macs is not None and stats.cheapest_macs[1] > budgets.macs:
        layout, macs, _ = stats.cheapest_macs
        raise UsageError(
            f"no layout of space {space.name} meets the budget of {macs_text(budgets.macs)}: its cheapest, "
            f"{layout}, needs {macs_text(macs)}; raise --budget-flops or choose a smaller space"
        )
    if budgets.min_macs is not None and stats.dearest_macs[1] < budgets.min_macs:
        layout, macs, _ = stats.dearest_macs
        raise UsageError(
            f"no layout of space {space.name} reaches the floor of {macs_text(budgets.min_macs)}: its dearest, "
            f"{layout}, needs {macs_text(macs)}; lower --min-flops or choose a larger space"
        )
    if budgets.params is not None and stats.cheapest_params[2] > budgets.params:
        layout, _, params = stats.cheapest_params
        raise UsageError(
            f"no layout of space {space.name} meets the budget of {human(budgets.params)} params: its smallest, "
            f"{layout}, has {human(params)} params; raise --budget-params or choose a smaller space"
        )
    # The memory budget (and budgets together) by random points of the space.
    import numpy as np

    rng = np.random.default_rng(seed)
    trial = RandomPoint(rng)
    kept = drawn = 0
    least = None
    candidates = [stats.cheapest_macs[0], stats.cheapest_params[0]]
    for i in range(samples + len(candidates)):
        if i < len(candidates):
            layout = candidates[i]
        else:
            layout, violations = space.suggest(trial, check=False)  # every transition was checked on load
            if violations:
                continue
            drawn += 1
        try:
            costs, excess = budgets.judge(layout)
        except UnmodelledLayout as err:
            raise UsageError(f"--budget-memory: {err}") from None
        if budgets.memory_bytes is not None and (least is None or costs["train_mem_est_bytes"] < least[1]):
            least = (layout, costs["train_mem_est_bytes"])
        if i >= len(candidates) and not over_budget(excess):
            kept += 1
    if budgets.memory_bytes is not None and least is not None and least[1] > budgets.memory_bytes and kept == 0:
        raise UsageError(
            f"no layout of space {space.name} tried fits --budget-memory {budgets.memory_bytes / 2**30:.2f} GiB at "
            f"batch {budgets.memory_batch}: the least, {least[0]}, needs {least[1] / 2**30:.2f} GiB "
            f"(estimated, {budgets.memory_device}, {budgets.memory_dtype}); raise --budget-memory or lower --memory-batch"
        )
    share = kept / drawn if drawn else 0.0
    if share < 0.10:
        return (
            f"the budget keeps about {100 * share:.1f} % of space {space.name} ({kept} of {drawn} random points); "
            "most candidates will be rejected before training"
        )
    return None


class RandomPoint:
    """A stand-in for an Optuna trial that draws every decision uniformly (for estimates)."""

    def __init__(self, rng):
        self.rng = rng

    def suggest_int(self, name, low, high, step=1):
        return int(low + step * self.rng.integers(0, (high - low) // step + 1))

    def suggest_categorical(self, name, choices):
        return choices[int(self.rng.integers(0, len(choices)))]


__all__ = ["Budgets", "NAMES", "macs_text", "over_budget", "preflight"]
