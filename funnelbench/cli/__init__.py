"""The ``funnelbench`` command line: a thin layer over the library. One module per group of
commands; each registers itself on the shared ``app`` with ``@command``."""

from __future__ import annotations

import typer

# Importing a module registers its commands.
from . import layout_cmds  # noqa: F401  parse, presets
from . import profile_cmds  # noqa: F401  profile, reproduce, memory
from . import search_cmds  # noqa: F401  spaces, search
from . import train_cmds  # noqa: F401  train, finetune
from ._common import app


@app.callback(invoke_without_command=True)
def _root(version: bool = typer.Option(False, "--version", help="Print the version and exit.")):
    if version:
        from .. import __version__

        typer.echo(f"funnelbench {__version__}")
        raise typer.Exit()


def main() -> None:
    app()


__all__ = ["app", "main"]
