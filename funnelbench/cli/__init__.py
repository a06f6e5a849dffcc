"""The ``funnelbench`` command line: a thin layer over the library. One module per group of
commands; each registers itself on the shared ``app`` with ``@command``."""

from __future__ import annotations

import typer

from . import layout_cmds, profile_cmds  # noqa: F401  (register parse, presets; profile, reproduce, memory)
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
