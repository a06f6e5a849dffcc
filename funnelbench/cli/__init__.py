"""The ``funnelbench`` command line: a thin layer over the library. One module per group of
commands; each registers itself on the shared ``app`` with ``@command``."""

from __future__ import annotations

import os

import typer

# Importing a module registers its commands, in this order (the order of `funnelbench --help`).
# isort: off
from . import layout_cmds  # noqa: F401  parse, presets
from . import profile_cmds  # noqa: F401  profile, reproduce, memory
from . import search_cmds  # noqa: F401  spaces, search
from . import report_cmds  # noqa: F401  report
from . import compare_cmds  # noqa: F401  compare
from . import train_cmds  # noqa: F401  train, finetune

# isort: on
from ._common import DEBUG_ENV, app


@app.callback(invoke_without_command=True)
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
    debug: bool = typer.Option(
        False, "--debug", help=f"Show the full traceback of an unexpected error (as {DEBUG_ENV}=1 does)."
    ),
):
    if debug:
        os.environ[DEBUG_ENV] = "1"  # also seen by worker processes
    if version:
        from .. import __version__

        typer.echo(f"funnelbench {__version__}")
        raise typer.Exit()


def main() -> None:
    app()


__all__ = ["app", "main"]
