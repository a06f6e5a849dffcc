"""funnelbench: design, count, profile and search token-pooling Vision Transformers.

    import funnelbench as fb
    layout = fb.parse_layout("B6(197)-6(99)")
    fb.count(layout)              # Cost(params=..., macs=...), analytic, no tensors
    model = fb.build_model(layout)
    fb.estimate_memory(layout, batch_size=64, device="cuda")   # analytic bytes of a training step
    records = fb.profile([layout], baseline="vit-b16")        # measured on this machine
    study = fb.search("tiny", budget_macs=2e6, trials=10, epochs=2)   # an Optuna study
"""

from .cost import Cost, count
from .data import load_data
from .errors import FunnelbenchError, LayoutError, UsageError
from .layout import Layout, Stage, Stem, format_layout, parse_layout
from .models import build_model
from .presets import PRESETS, get_preset, list_presets, resolve
from .memory import MemoryEstimate, estimate_memory
from .papers import reproduce
from .profiling import profile
from .search.space import load_space
from .search.study import search
from .train import TrainConfig, finetune, train
from .weights import load_vit_weights

__version__ = "0.1.0"

__all__ = [
    "Cost", "count", "FunnelbenchError", "LayoutError", "UsageError", "Layout", "Stage", "Stem", "format_layout",
    "parse_layout", "build_model", "PRESETS", "get_preset", "list_presets", "resolve", "load_vit_weights",
    "load_data", "TrainConfig", "train", "finetune",
    "MemoryEstimate", "estimate_memory", "profile", "reproduce", "load_space", "search",
]
