"""The command reference (``docs/reference.md``), made from the command line itself: every
command's usage, help and options (name, type, default, help), grouped as ``--help`` groups
them. ``tests/cli/test_reference.py`` fails when the committed file differs from what the
commands say now; regenerate it with

    python -m funnelbench.cli.reference            # writes docs/reference.md
    python -m funnelbench.cli.reference --check    # exit 1 if it is out of date
"""

from __future__ import annotations

import inspect
import sys
import typing
from pathlib import Path

import typer

from . import app

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "reference.md"
HEADER = (
    "<!-- Made by `python -m funnelbench.cli.reference` from the command line itself; do not edit by hand "
    "(tests/cli/test_reference.py checks it). Real output and explanations: commands.md. -->"
)


def _cell(text) -> str:
    """One markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


# (Typer may bring its own copy of click: the parameters are told apart by what they say they are.)
def _is_argument(param) -> bool:
    return param.param_type_name == "argument"


_TYPE_NAMES = {int: "integer", float: "number", str: "text", bool: "boolean", Path: "path"}


def _annotation_type(annotation) -> tuple[str, bool]:
    """(the type's name, whether it is a list) of a parameter's annotation; None is left out."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (list, tuple):
        return _annotation_type(args[0])[0], True
    if args:  # X | None
        return _annotation_type(args[0])
    return _TYPE_NAMES.get(annotation, getattr(annotation, "__name__", str(annotation))), False


def _type(param) -> str:
    name, many = _annotation_type(param.type_descriptor.annotation)
    if getattr(param, "is_flag", False) or (name == "boolean" and param.secondary_opts):
        return "flag"
    lo, hi = getattr(param, "min", None), getattr(param, "max", None)
    if lo is not None or hi is not None:
        name += f" {f'>= {lo}' if hi is None else f'<= {hi}' if lo is None else f'{lo}..{hi}'}"
    if many:
        return f"{name}..." if _is_argument(param) else f"{name}, repeatable"
    return name


def _default(param) -> str:
    if _is_argument(param):
        return "required" if param.required else ("" if param.default is None else f"`{param.default}`")
    if param.required:
        return "required"
    if not param.show_default and param.show_default is not None:
        return ""
    value = param.default
    if value is None or value == () or value == []:
        return ""
    if param.is_flag and param.secondary_opts:  # --train/--no-train
        return f"`{(param.opts if value else param.secondary_opts)[0]}`"
    if isinstance(value, bool):
        return "" if not value else "`true`"
    if isinstance(value, (list, tuple)):
        return ", ".join(f"`{v}`" for v in value)
    return f"`{value}`"


def _help(param) -> str:
    text = getattr(param, "help", None) or ""
    if getattr(param, "envvar", None):
        text += f" (environment: `{param.envvar}`)"
    return _cell(text)


def _metavar(param) -> str:
    name = param.name.upper() + ("..." if param.nargs == -1 else "")
    return name if param.required else f"[{name}]"


def _names(param) -> str:
    if _is_argument(param):
        return f"`{_metavar(param)}`"
    return ", ".join(f"`{o}`" for o in [*param.opts, *param.secondary_opts])


def _usage(path: str, params) -> str:
    """As ``--help`` would write it, with the arguments' names in capitals."""
    return " ".join([path, "[OPTIONS]", *(_metavar(p) for p in params if _is_argument(p))])


def _params_markdown(params) -> list[str]:
    lines = []
    arguments = [p for p in params if _is_argument(p)]
    if arguments:
        lines += ["| argument | type | default | help |", "|---|---|---|---|"]
        lines += [f"| {_names(p)} | {_type(p)} | {_default(p)} | {_help(p)} |" for p in arguments]
        lines.append("")
    panels: dict[str, list] = {}
    for p in params:
        if not _is_argument(p) and not p.hidden and "--help" not in p.opts:
            panels.setdefault(getattr(p, "rich_help_panel", None) or "Options", []).append(p)
    for panel, options in panels.items():
        if len(panels) > 1:
            lines += [f"*{panel}*", ""]
        lines += ["| option | type | default | help |", "|---|---|---|---|"]
        lines += [f"| {_names(p)} | {_type(p)} | {_default(p)} | {_help(p)} |" for p in options]
        lines.append("")
    return lines


def reference_markdown() -> str:
    """The whole reference page, as markdown."""
    group = typer.main.get_command(app)
    root = group.context_class(group, info_name="funnelbench")
    lines = [
        "# Command reference",
        "",
        HEADER,
        "",
        "Every command of `funnelbench`, as its `--help` describes it (`-h` works too). "
        "[commands.md](commands.md) shows each with real output.",
        "",
        "## `funnelbench`",
        "",
        "```",
        "funnelbench [OPTIONS] COMMAND [ARGS]...",
        "```",
        "",
        _cell(inspect.cleandoc(group.help or "").split("\n\n")[0]),
        "",
    ]
    lines += _params_markdown(group.get_params(root))
    for name in group.list_commands(root):
        command = group.get_command(root, name)
        ctx = command.context_class(command, info_name=name, parent=root)
        params = command.get_params(ctx)
        lines += [f"## `funnelbench {name}`", "", "```", _usage(f"funnelbench {name}", params), "```", ""]
        lines += [inspect.cleandoc(command.help or ""), ""]
        if command.epilog:
            lines += (
                [
                    "`funnelbench parse --help` also shows the layout grammar's option table "
                    "([grammar.md](grammar.md)).",
                    "",
                ]
                if name == "parse"
                else [inspect.cleandoc(command.epilog), ""]
            )
        lines += _params_markdown(params)
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    text = reference_markdown()
    if "--check" in args:
        same = REFERENCE.exists() and REFERENCE.read_text() == text
        print(f"{REFERENCE}: {'up to date' if same else 'out of date; run python -m funnelbench.cli.reference'}")
        return 0 if same else 1
    REFERENCE.write_text(text)
    print(f"wrote {REFERENCE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
