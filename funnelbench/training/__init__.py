"""Short-schedule proxy training and fine-tuning, in one process or under ``torchrun``, as
composed parts (``funnelbench.train`` re-exports every public name, as it always has).

    import funnelbench as fb
    record = fb.train("B2(17)-2(9), h96, a3, img32, patch8", out="runs/a", epochs=10)
    record = fb.finetune("runs/a/checkpoint.pt", image_size=48, out="runs/b", epochs=3)

    data = fb.load_data(None, image_size=32)          # load once, train many (a search)
    with Trainer(TrainConfig(layout="test-vit", epochs=3), out="runs/t", data=data) as trainer:
        record = trainer.fit()

The modules, in the order a run uses them:

* ``config.py``: :class:`TrainConfig` (every hyperparameter; its metadata is the command
  line's help, every field goes into the record) and :func:`make_config`;
* ``proxy.py``: :func:`proxy_layout`, the layout that trains for a full-size target (the search
  uses it too), and :data:`PROXY_FIELDS`;
* ``distributed.py``: :class:`Ranks`, the one place that calls ``torch.distributed``;
* ``checkpoint.py``: :class:`RunFolder` (the output folder: resume, overwrite, atomic writes)
  and :class:`Checkpoints` (policy, state, restore, resume checks; :func:`resume_point`);
* ``build.py``: data (given or loaded), the fine-tuning source, model, samplers, loaders;
* ``recipe.py``: AdamW with its parameter groups, the warm-up + cosine schedule
  (:func:`lr_factor`), the gradient scaler, the loss, augmentation, MixUp / CutMix, the dtype;
* ``steps.py``: an epoch's steps with the non-finite watch, evaluation, :class:`Diverged`;
* ``hooks.py``: the callback's decision (:data:`CONTINUE`, :data:`PRUNE`, :data:`STOP`) and the
  epoch hooks (history, checkpoint, console);
* ``record.py``: the run's flat record;
* ``trainer.py``: :class:`Trainer`, which wires them; ``api.py``: :func:`train`, :func:`finetune`.

Determinism: the model is initialised from ``seed``; the data order is a function of
``(seed, epoch)`` and every random augmentation of ``(seed, epoch, position in the epoch)``,
so on CPU the same config and data give the same metrics, and a run resumed from its
checkpoint (model, optimizer, scheduler, scaler and RNG states) gives the same metrics as one
that was never interrupted. The caller's global random states and torch thread count are put
back when the trainer closes. Only rank 0 calls the callback, prints, checkpoints and writes
records; its decision is broadcast to every rank.
"""

import importlib

# The public names, each imported from its module on first use (PEP 562): ``config`` and
# ``proxy`` need no torch, so the command line reads TrainConfig's fields without loading it.
_HOMES = {
    "api": ("finetune", "train"),
    "checkpoint": (
        "CHECKPOINT",
        "CHECKPOINT_FORMAT",
        "HISTORY",
        "RECORD",
        "RUN_FILES",
        "Checkpoints",
        "RunFolder",
        "checkpoint_layout",
        "finetune_layout",
        "read_checkpoint",
        "remove_checkpoint",
        "resume_point",
    ),
    "config": (
        "CHECKPOINT_POLICIES",
        "DTYPE_CHOICES",
        "FREE_ON_RESUME",
        "NORM_CHOICES",
        "SEED_MAX",
        "TrainConfig",
        "make_config",
        "default_run_folder",
    ),
    "distributed": ("Ranks",),
    "hooks": ("CONTINUE", "EPOCH_METRICS", "PRUNE", "STATUSES", "STOP", "EpochCallback"),
    "proxy": ("PROXY_FIELDS", "proxy_layout"),
    "recipe": ("lr_factor", "train_dtype"),
    "steps": ("Diverged", "OutOfMemory", "oom_message"),
    "trainer": ("Trainer",),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str):
    if name not in _HOME_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOME_OF[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME_OF))


__all__ = [
    "TrainConfig",
    "Trainer",
    "RunFolder",
    "Checkpoints",
    "Ranks",
    "Diverged",
    "OutOfMemory",
    "EpochCallback",
    "train",
    "finetune",
    "make_config",
    "default_run_folder",
    "proxy_layout",
    "remove_checkpoint",
    "read_checkpoint",
    "checkpoint_layout",
    "finetune_layout",
    "resume_point",
    "lr_factor",
    "train_dtype",
    "oom_message",
    "EPOCH_METRICS",
    "CONTINUE",
    "PRUNE",
    "STOP",
    "STATUSES",
    "CHECKPOINT_POLICIES",
    "FREE_ON_RESUME",
    "DTYPE_CHOICES",
    "NORM_CHOICES",
    "SEED_MAX",
    "PROXY_FIELDS",
    "CHECKPOINT",
    "HISTORY",
    "RECORD",
    "RUN_FILES",
    "CHECKPOINT_FORMAT",
]
