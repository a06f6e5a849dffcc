"""The process-wide random states (torch, CUDA, NumPy, Python): read, set and kept.

A library call that seeds the global generators (the trainer, the profiler) wraps itself in
:func:`kept_global_state`, so the caller's random streams and torch's thread count are the same
after the call as before it."""

from __future__ import annotations

import contextlib
import functools
import random

import numpy as np
import torch


def rng_states() -> dict:
    """The global random states, as tensors and plain values (a checkpoint loads them with
    ``weights_only=True``)."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
        "python": random.getstate(),
    }


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if states.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))


class GlobalState:
    """The caller's random states and torch thread count, captured to be put back later."""

    def __init__(self):
        self.rng = rng_states()
        self.threads = torch.get_num_threads()

    def restore(self) -> None:
        set_rng_states(self.rng)
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)


@contextlib.contextmanager
def kept_global_state():
    """Run a block that may seed or set threads; put the caller's states back afterwards."""
    saved = GlobalState()
    try:
        yield
    finally:
        saved.restore()


def keeps_global_state(fn):
    """Decorator: ``fn`` runs under :func:`kept_global_state`."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with kept_global_state():
            return fn(*args, **kwargs)

    return wrapper


__all__ = ["rng_states", "set_rng_states", "GlobalState", "kept_global_state", "keeps_global_state"]
