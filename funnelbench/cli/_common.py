"""What every command shares: the Typer app, the error boundary, JSON and table output."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from ..errors import FunnelbenchError, redact

# click's UsageError (typer.BadParameter's base): recent typers vendor click, older ones import it.
ClickUsageError = typer.BadParameter.__bases__[0]
ClickException = ClickUsageError.__bases__[0]
# Set (to anything but 0) for the full traceback of an error that is not the user's (``--debug`` sets it).
DEBUG_ENV = "FUNNELBENCH_DEBUG"


@contextlib.contextmanager
def _usage_errors_on_one_line():
    """Errors that click finds while reading the command line (a malformed number, an unknown
    option, a missing argument) become the one-line ``error: ...`` every other bad input
    gets, with exit code 2, instead of a usage box."""
    try:
        yield
    except ClickUsageError as err:
        message = " ".join(err.format_message().split()).rstrip(".")
        if not message:  # no arguments at all: typer prints the help
            raise
        hint = f" (see '{err.ctx.command_path} --help')" if err.ctx is not None else ""
        typer.echo(f"error: {message[:1].lower()}{message[1:]}{hint}", err=True)
        raise typer.Exit(2) from None


class _OneLineErrors(TyperGroup):
    """The command group, reading the command line under :func:`_usage_errors_on_one_line`."""

    def make_context(self, *args, **kwargs):
        with _usage_errors_on_one_line():  # the group's own options, e.g. --versio
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):
        with _usage_errors_on_one_line():  # the command's name, options and arguments
            return super().invoke(ctx)


app = typer.Typer(
    cls=_OneLineErrors,
    name="funnelbench",
    help="Design, count, profile and train token-pooling Vision Transformers (Funnel-ViT, HVT, T2T-ViT, PS-ViT).\n\n"
    'MACs = multiply-accumulates: what the seed papers, DeiT and fvcore call "FLOPs". FLOPs = 2 x MACs.',
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # docstring paragraphs reflow instead of keeping their line breaks
    context_settings={"help_option_names": ["-h", "--help"]},
)
# On a terminal rich fits the tables to its width; into a pipe or a file it would wrap them
# at 80 columns, so give it room instead.
console = Console(width=None if sys.stdout.isatty() else 200)
# Progress, epoch lines and file messages: stderr, so that --json output on stdout stays parseable.
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


def fail(message: str, code: int = 2):
    """Print a one-line error on stderr and exit (2 = bad input)."""
    typer.echo(f"error: {redact(message)}", err=True)
    raise typer.Exit(code)


def debugging() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def unexpected(err: BaseException) -> str:
    """One line for an exception funnelbench did not expect (from Optuna, SQLAlchemy, NumPy, ...
    or a bug): its type and first line, and how to see the traceback."""
    text = (str(err).strip().splitlines() or [""])[0]
    text = text if len(text) <= 300 else text[:297] + "..."
    return (
        f"unexpected {type(err).__name__}{': ' + text if text else ''} (a bug in funnelbench or a case it "
        f"does not handle yet; run with {DEBUG_ENV}=1 or funnelbench --debug for the traceback, and report it)"
    )


def command(*args, **kwargs):
    """``@app.command`` that turns any :class:`FunnelbenchError` into a one-line error and exit
    code 2 instead of a traceback, Ctrl-C into exit code 130, and any other exception (a bug, or
    trouble funnelbench does not know yet) into a one-line error and exit code 1; the traceback
    only with ``FUNNELBENCH_DEBUG=1`` (or ``funnelbench --debug``)."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*a, **k):
            try:
                return fn(*a, **k)
            except FunnelbenchError as err:
                fail(str(err))
            except KeyboardInterrupt:
                fail("interrupted", code=130)
            except (typer.Exit, typer.Abort, ClickException):
                raise
            except Exception as err:  # noqa: BLE001 - the boundary: everything else leaves as one line
                if debugging():
                    raise
                fail(unexpected(err), code=1)

        return app.command(*args, **kwargs)(wrapper)

    return decorate


def print_json(obj) -> None:
    sys.stdout.write(redact(json.dumps(obj, indent=2, default=str)) + "\n")


def make_table(title: str | None, columns: list[str], rows: list[list], right: set[str] = frozenset()) -> Table:
    table = Table(title=title, title_justify="left", header_style="bold")
    for col in columns:
        table.add_column(col, justify="right" if col in right else "left", no_wrap=col in right)
    for row in rows:
        table.add_row(*["" if v is None else str(v) for v in row])
    return table
