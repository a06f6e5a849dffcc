"""The description of a search (:class:`SearchPlan`), made once by the parent process from the
arguments of ``search()`` (:func:`make_plan`): the settings (space with its walk done, budgets,
objectives, sampler, pruner, proxy options, baselines), the study's name, folder and storage,
the trials wanted and the budget pre-check's warning. Frozen and picklable: every worker
process receives it as it is, instead of checking the arguments, walking the space and
pre-checking the budgets again.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import FunnelbenchError, UsageError
from ..presets import resolve
from .budget import Budgets, preflight
from .folders import check_name, study_folder
from .settings import Settings, default_study_name
from .space import Space, SpaceError, load_space, walk
from .storage import HEARTBEAT_S
from .trial import proxy_of


@dataclass(frozen=True)
class SearchPlan:
    """One search, as every process of it runs it."""

    settings: Settings
    study: str  # the study's name
    out: Path  # the study's folder: <root>/<study>
    trials: int  # trained trials the study should hold
    storage: str | None = None  # the storage as given (None: the study folder's file)
    url: str | None = None  # the URL that opens the storage again in another process (set once it is open)
    heartbeat_s: int = HEARTBEAT_S
    warning: str | None = None  # the budget pre-check's warning (budgets keep little of the space)


def make_plan(
    space="tiny",
    *,
    trials: int,
    budget_macs: float | None = None,
    min_macs: float | None = None,
    budget_params: float | None = None,
    budget_memory: int | None = None,
    memory_batch: int = 64,
    memory_device: str = "cuda",
    memory_dtype: str = "fp32",
    objectives=("top1",),
    sampler: str = "tpe",
    pruner: str | None = None,
    baselines=(),
    width_scale: float | None = None,
    study: str | None = None,
    storage: str | None = None,
    root: str | os.PathLike | None = None,
    heartbeat_s: int = HEARTBEAT_S,
    fidelity: str = "none",
    min_epochs: int | None = None,
    max_epochs: int | None = None,
    reduction: int | None = None,
    **train_options,
) -> SearchPlan:
    """Check the arguments of :func:`funnelbench.search.search` and describe the search (the
    space loaded and walked, the budgets pre-checked, the proxy checked against the space)."""
    from ..train import TrainConfig  # the trainer (torch): loaded when a search starts, not on import

    space = space if isinstance(space, Space) else load_space(space)
    check_name(
        space.name,
        f"space name (the name: of {space.path})" if space.path else "space name",
        "rename the space" + (" or give --study NAME" if study is None else ""),
    )
    # the proxy: the options given, then the space's proxy section, then the trainer's defaults
    train_options = {
        **{k: v for k, v in space.proxy.items() if k != "width_scale"},
        **{k: v for k, v in train_options.items() if v is not None},
    }
    if width_scale is None:
        width_scale = space.proxy.get("width_scale", 1.0)
    budgets = Budgets(budget_macs, min_macs, budget_params, budget_memory, memory_batch, memory_device, memory_dtype)
    known = set(TrainConfig.__dataclass_fields__) - {"layout", "finetune_from"}
    unknown = sorted(set(train_options) - known)
    if unknown:
        raise UsageError(f"unknown training option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    # Every training option, defaults included (so the CLI and the API store the same settings),
    # checked now rather than in the first trial.
    config = TrainConfig(
        layout=str(space.stats().cheapest_macs[0]), **{k: v for k, v in train_options.items() if v is not None}
    )
    proxy = {k: v for k, v in asdict(config).items() if k not in ("layout", "finetune_from")}
    proxy["width_scale"] = float(width_scale)
    extra = []
    for b in baselines:
        text = str(resolve(b))
        if text not in extra:
            extra.append(text)
    names = [str(b) for b in space.baselines]
    seed = train_options.get("seed") or 0
    settings = Settings(
        space,
        budgets,
        tuple(objectives),
        sampler,
        seed,
        pruner,
        proxy,
        tuple(names + [b for b in extra if b not in names]),
        fidelity=fidelity,
        min_epochs=min_epochs,
        max_epochs=max_epochs,
        reduction=reduction,
    )
    warning = preflight(space, budgets)
    check_proxy(space, settings)
    study_name = check_name(
        study or default_study_name(space, budgets, settings.objectives), "--study", "choose another --study"
    )
    return SearchPlan(
        settings,
        study_name,
        study_folder(root, study_name),
        trials,
        storage=storage,
        heartbeat_s=heartbeat_s,
        warning=warning,
    )


def check_proxy(space: Space, settings: Settings) -> None:
    """The proxy resolution must express every pool of the space (checked on the token counts
    alone, before anything trains), and the baselines must have a proxy."""
    if not settings.needs_training:
        return
    image, patch = settings.proxy.get("image_size"), settings.proxy.get("patch_size")
    if image or patch:
        try:
            walk(space, check_only=True, image_size=image or space.shared.get("image_size", 224), patch_size=patch)
        except SpaceError as err:
            raise UsageError(
                f"--image-size {image} --patch-size {patch}: at the proxy resolution {err.message} "
                f"(key {err.key} of space {space.name}); choose a proxy grid that keeps the space's pools"
            ) from None
    try:  # e.g. an image size that is not a multiple of the patch size
        proxy_of(space.stats().cheapest_macs[0], settings.proxy)
    except FunnelbenchError as err:
        raise UsageError(f"the proxy cannot train this space's layouts: {err}") from None
    for b in settings.baselines:
        try:
            proxy_of(resolve(b), settings.proxy)
        except FunnelbenchError as err:
            raise UsageError(f"baseline {b}: no proxy at these options ({err})") from None


__all__ = ["SearchPlan", "make_plan", "check_proxy"]
