"""``funnelbench train`` and ``funnelbench finetune``: thin layers over :mod:`funnelbench.train`.

Both commands take the same data and recipe options; they are declared once, from the fields of
:class:`~funnelbench.train.TrainConfig`, and added to both commands' signatures."""

from __future__ import annotations

import functools
import inspect
import os
import typing
from dataclasses import MISSING, fields
from pathlib import Path

import typer

from ..training.config import TrainConfig, default_run_folder  # no torch: the command line starts fast
from ._common import command, console, err_console, fail, print_json

# Every TrainConfig field with help metadata is an option (layout and finetune_from are the
# commands' own arguments); the run options below are not part of the config.
_RUN = "Run"
_RUN_OPTIONS = [
    (
        "out",
        Path | None,
        typer.Option(
            None,
            "--out",
            help="Folder for checkpoint.pt, history.csv and record.json. "
            "Default: `runs/<command>-<hash of the options>`.",
            rich_help_panel=_RUN,
        ),
    ),
    (
        "resume",
        bool,
        typer.Option(
            False,
            "--resume",
            help="Continue the run in --out from its last checkpoint (same results as an uninterrupted run).",
            rich_help_panel=_RUN,
        ),
    ),
    (
        "overwrite",
        bool,
        typer.Option(False, "--overwrite", help="Start again in an --out that holds a run.", rich_help_panel=_RUN),
    ),
    (
        "cache_dir",
        Path | None,
        typer.Option(
            None,
            "--cache-dir",
            envvar="FUNNELBENCH_CACHE",
            help="Cache of decoded, resized images. Default: ~/.cache/funnelbench.",
            rich_help_panel=_RUN,
        ),
    ),
    (
        "json_out",
        bool,
        typer.Option(
            False, "--json", help="Print the final record as JSON (progress goes to stderr).", rich_help_panel=_RUN
        ),
    ),
]


def _recipe_parameters(
    overrides: dict, defaults_from: str | None = None, defaults_for: frozenset[str] = frozenset()
) -> list[inspect.Parameter]:
    hints = typing.get_type_hints(TrainConfig)
    params = []
    for f in fields(TrainConfig):
        if "help" not in f.metadata:
            continue
        panel, help_text = f.metadata["panel"], f.metadata["help"]
        flag = "--" + f.name.replace("_", "-")
        if hints[f.name] == (bool | None):
            flag = f"{flag}/--no-{flag[2:]}"
        default = overrides.get(f.name, None if f.default is MISSING else f.default)
        if f.name in defaults_for:  # the command fills it in (the search: from the space's proxy section)
            shown = (
                "" if default is None else f", else {str(default).lower() if isinstance(default, bool) else default}"
            )
            help_text = f"{help_text} Default: {defaults_from}{shown}."
            default = None
        option = typer.Option(default, flag, help=help_text, rich_help_panel=panel, show_default=default is not None)
        params.append(
            inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=hints[f.name])
        )
    for name, annotation, option in _RUN_OPTIONS:
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation))
    return params


def with_training_options(
    exclude: frozenset[str] = frozenset(),
    defaults_from: str | None = None,
    defaults_for: frozenset[str] = frozenset(),
    **overrides,
):
    """Add the data, recipe and run options to a command whose last parameter is ``options``
    (it receives them as a dict); ``overrides`` change defaults (fine-tuning's lower lr) and
    ``exclude`` leaves options out (the search has no ``--out``, and its ``--workers`` means
    worker processes). The options in ``defaults_for`` default to None (not given), and their
    help says the command takes them from ``defaults_from`` (the search: the space's proxy
    section). The command's own parameters win over a training option of that name."""

    def decorate(fn):
        hints = typing.get_type_hints(fn)
        own = [
            p.replace(annotation=hints.get(p.name, p.annotation))
            for p in inspect.signature(fn).parameters.values()
            if p.name != "options"
        ]
        mine = {p.name for p in own}
        extra = [p for p in _recipe_parameters(overrides, defaults_from, defaults_for) if p.name not in exclude | mine]
        names = [p.name for p in extra]

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            options = {name: kwargs.pop(name) for name in names}
            return fn(*args, **kwargs, options=options)

        wrapper.__signature__ = inspect.Signature(own + extra)
        wrapper.__annotations__ = {p.name: p.annotation for p in own + extra}
        return wrapper

    return decorate


def _run(command_name: str, layout: str, options: dict, finetune_from: str | None = None) -> None:
    from ..training import train as run_training

    run = {name: options.pop(name) for name, _, _ in _RUN_OPTIONS}
    config = TrainConfig(layout=layout, finetune_from=finetune_from, **options)
    out = run["out"] or default_run_folder(config, command_name)
    # --json keeps stdout for the record: progress and epoch lines go to stderr.
    out_console = err_console if run["json_out"] else console
    record = run_training(
        config=config,
        out=out,
        resume=run["resume"],
        overwrite=run["overwrite"],
        console=out_console,
        cache_dir=run["cache_dir"],
    )
    if run["json_out"] and int(os.environ.get("RANK", "0")) == 0:  # under torchrun: one record, rank 0's
        print_json(record)
    if record["status"] in ("diverged", "oom"):
        where = f" (record in {Path(out) / 'record.json'})" if (Path(out) / "record.json").exists() else ""
        fail(f"{record['error']}{where}", code=1)


@command("train")
@with_training_options()
def train_cmd(
    layout: str = typer.Argument(..., help='A layout such as "B6(197)-6(99)" or a preset name.'),
    options: dict = None,
):
    """Train a layout for a short schedule (proxy training) and record its accuracy.

    Without --data it trains on the built-in synthetic dataset (no download; the class is the
    direction between two shapes), which says nothing about ImageNet accuracy. `--data
    fashion-mnist` trains on real images (Debian's dataset-fashion-mnist package: grey images
    replicated to 3 channels, 28 px padded to 32 px) with three splits: validation (5,000 images
    carved from the training set) chooses the best epoch, the official 10,000 test images are read
    once at the end (test_top1). Checkpoints
    every epoch to --out (see --checkpoint); --resume continues an interrupted run with identical
    results on CPU.
    Runs unchanged under `torchrun --nproc_per_node N -m funnelbench train ...` (DDP).
    """
    _run("train", layout, options)


@command("finetune")
@with_training_options(epochs=3, lr=1e-4, warmup_epochs=0.0)
def finetune_cmd(
    source: Path = typer.Argument(
        ..., metavar="CHECKPOINT", help="A run's checkpoint.pt, or a ViT state dict (timm, torchvision, funnelbench)."
    ),
    layout: str | None = typer.Option(
        None,
        "--layout",
        help="Layout to fine-tune into (same widths as the checkpoint; "
        "ViT or Funnel-ViT). Default: the checkpoint's own.",
    ),
    options: dict = None,
):
    """Fine-tune a trained ViT or Funnel-ViT into a layout of the same widths, e.g. at a higher
    --image-size: the position embedding is interpolated in 2D (bicubic) to the new patch grid,
    the class token's embedding is kept. ViT -> Funnel-ViT and back work (same weight shapes).
    """
    from ..training import finetune_layout

    if layout is None:
        layout = finetune_layout(source, out=options["out"] or "", resume=options["resume"])
    _run("finetune", layout, options, finetune_from=str(source))
