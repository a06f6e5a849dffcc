"""Compatibility module: the trainer lives in :mod:`funnelbench.training` (one module per part);
``from funnelbench.train import Trainer, TrainConfig, ...`` keeps working, with every name it
has always offered. (``funnelbench.train``, the package attribute, is the function
:func:`~funnelbench.training.train`; ``sys.modules["funnelbench.train"]`` is this module.)

Setting a name here (``monkeypatch.setattr(funnelbench.train, "build_model", ...)``) also sets
it in each training module that looks that same object up, so a patch reaches the trainer as
it always did."""

import sys
import types

from .data import load_data
from .models import build_model
from .rng import rng_states, set_rng_states
from .training import *  # noqa: F403 - the public names, re-exported
from .training import __all__ as _public
from .training import api, build, checkpoint, config, distributed, hooks, proxy, recipe, record, steps, trainer

# the private names the old module had, for code that reached into it
from .training.hooks import DECISION_STATUS as _DECISION_STATUS  # noqa: F401
from .training.hooks import _RankZeroFailed  # noqa: F401
from .training.hooks import decision as _decision  # noqa: F401
from .training.proxy import _scaled_width  # noqa: F401
from .training.recipe import param_groups as _param_groups  # noqa: F401
from .training.steps import one_line as _one_line  # noqa: F401
from .training.steps import sync as _sync  # noqa: F401

# Kept under their old names: a checkpoint's "rng" entry is rng_states().
_rng_states, _set_rng_states = rng_states, set_rng_states

_HOMES = (api, build, checkpoint, config, distributed, hooks, proxy, recipe, record, steps, trainer)
_MISSING = object()


class _Compat(types.ModuleType):
    def __setattr__(self, name, value):
        old = self.__dict__.get(name, _MISSING)
        if old is not _MISSING:
            for home in _HOMES:
                if home.__dict__.get(name, _MISSING) is old:
                    setattr(home, name, value)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Compat

__all__ = [*_public, "build_model", "load_data"]
