"""funnelbench: design, count, profile and search token-pooling Vision Transformers.

    import funnelbench as fb
    layout = fb.parse_layout("B6(197)-6(99)")
    fb.count(layout)              # Cost(params=..., macs=...), analytic, no tensors
    model = fb.build_model(layout)
    fb.estimate_memory(layout, batch_size=64, device="cuda")   # analytic bytes of a training step
    records = fb.profile([layout], baseline="vit-b16")        # measured on this machine
    study = fb.search("tiny", budget_macs=2e6, trials=10, epochs=2)   # an Optuna study

``import funnelbench`` loads only the analytic core (layouts, counts, presets, the memory
estimate); the names that need torch, Optuna or YAML (``build_model``, ``train``, ``search``,
...) are imported the first time they are used (PEP 562), so that the command line starts fast.
"""

import importlib
import sys
import types

from .cost import Cost, count
from .errors import FunnelbenchError, LayoutError, UsageError
from .layout import Layout, Stage, Stem, format_layout, parse_layout
from .memory import MemoryEstimate, estimate_memory
from .presets import PRESETS, get_preset, list_presets, resolve

__version__ = "0.1.0"

# Public names imported on first use: name -> the module that holds it.
_LAZY = {
    "load_data": ".data",
    "build_model": ".models",
    "reproduce": ".papers",
    "profile": ".profiling",
    "load_space": ".search.space",
    "search": ".search.study",
    "TrainConfig": ".training",
    "finetune": ".training",
    "train": ".training",
    "load_vit_weights": ".weights",
}

__all__ = [
    "Cost",
    "count",
    "FunnelbenchError",
    "LayoutError",
    "UsageError",
    "Layout",
    "Stage",
    "Stem",
    "format_layout",
    "parse_layout",
    "build_model",
    "PRESETS",
    "get_preset",
    "list_presets",
    "resolve",
    "load_vit_weights",
    "load_data",
    "TrainConfig",
    "train",
    "finetune",
    "MemoryEstimate",
    "estimate_memory",
    "profile",
    "reproduce",
    "load_space",
    "search",
]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value  # once: the next look-up is an ordinary attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


class _Package(types.ModuleType):
    """``funnelbench.train`` and ``funnelbench.search`` are functions, although modules of those
    names exist (``funnelbench/train.py``, the compatibility module, and the ``search`` package).
    Importing such a module makes Python set the package attribute to the module; that is
    ignored here, so the attribute stays (or becomes, on first use) the function, as it was when
    every name was imported eagerly."""

    def __setattr__(self, name, value):
        if name in ("train", "search") and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
