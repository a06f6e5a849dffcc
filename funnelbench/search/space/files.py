"""Loading a space: the shipped spaces (package data), a space file read with bounds (size,
UTF-8, YAML values after anchors and aliases, nesting) and the line of every key, and
:func:`load_space`, which builds the space, bounds and then does the exact walk, and checks its
baselines; :func:`space_summaries`, a row per space. Any problem is one line naming the file, the key and its line.
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path

import yaml

from ...errors import FunnelbenchError, UsageError
from ...layout import format_layout, parse_layout
from .build import build_space
from .model import Space
from .schema import MAX_KEY_CHARS, MAX_SPACE_BYTES, MAX_WALK_STEPS, MAX_YAML_DEPTH, MAX_YAML_VALUES, SpaceError, short
from .walk import walk, walk_steps


def spaces_dir():
    """The folder of the shipped spaces (package data; ``spaces/`` at the repository root is a link to it)."""
    return resources.files("funnelbench").joinpath("spaces")


def list_spaces() -> list[str]:
    """Names of the shipped spaces."""
    return sorted(p.name[:-5] for p in spaces_dir().iterdir() if p.name.endswith(".yaml"))


def space_summaries(names: list[str] | None = None) -> list[dict]:
    """One row per space (default: every shipped one), what ``funnelbench spaces`` lists: ``space``
    (the name), ``layouts`` (how many distinct layouts it holds), ``min_macs`` and ``max_macs``
    (of its cheapest and dearest layout, exact, nothing built), ``baselines`` (how many) and
    ``description``."""
    rows = []
    for name in list_spaces() if names is None else names:
        space = load_space(name)
        stats = space.stats()
        rows.append(
            {
                "space": name,
                "layouts": stats.layouts,
                "min_macs": stats.cheapest_macs[1],
                "max_macs": stats.dearest_macs[1],
                "baselines": len(space.baselines),
                "description": space.description,
            }
        )
    return rows


def _compose(text: str, where: str):
    """YAML to Python, with the line of every key (``"stages.hidden"`` -> 12). Bounded: at most
    ``MAX_YAML_VALUES`` values once anchors and aliases are expanded, no alias inside itself."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise UsageError(f"space {where}{line}: not valid YAML ({problem})") from None
    except RecursionError:
        raise UsageError(f"space {where}: not valid YAML for a space (nested too deeply)") from None
    lines: dict = {}
    if node is None:
        raise UsageError(f"space {where}: the file is empty; see spaces/README.md for the format")
    seen = [0]
    inside: set[int] = set()  # the nodes being converted: an alias to one of them never ends

    def convert(n, path):
        seen[0] += 1
        if seen[0] > MAX_YAML_VALUES:
            raise UsageError(
                f"space {where} line {n.start_mark.line + 1}: the file expands to more than "
                f"{MAX_YAML_VALUES:,} values (anchors and aliases repeat what they name); a space "
                "is a few dozen values, see spaces/README.md"
            )
        if id(n) in inside:
            raise UsageError(
                f"space {where} line {n.start_mark.line + 1}: an alias refers to the anchor it "
                "is inside of, which never ends; write the values out"
            )
        if len(inside) > MAX_YAML_DEPTH:
            raise UsageError(
                f"space {where} line {n.start_mark.line + 1}: nested more than {MAX_YAML_DEPTH} deep; a "
                "space is a mapping of mappings and lists a few levels deep"
            )
        lines.setdefault(path, n.start_mark.line + 1)
        if isinstance(n, (yaml.MappingNode, yaml.SequenceNode)):
            inside.add(id(n))
            try:
                return convert_collection(n, path)
            finally:
                inside.discard(id(n))
        return _scalar(n, where)

    def convert_collection(n, path):
        if isinstance(n, yaml.MappingNode):
            out = {}
            for k, v in n.value:
                if not isinstance(k, yaml.ScalarNode) or len(str(k.value)) > MAX_KEY_CHARS:
                    raise UsageError(
                        f"space {where} line {k.start_mark.line + 1}: a key is a short word "
                        "(see spaces/README.md for the keys)"
                    )
                key = str(k.value)
                sub = f"{path}.{key}" if path else key
                lines[sub] = k.start_mark.line + 1
                if key in out:
                    raise UsageError(f"space {where} line {k.start_mark.line + 1}, key {sub}: given twice")
                out[key] = convert(v, sub)
            return out
        return [convert(v, f"{path}[{i}]") for i, v in enumerate(n.value)]

    return convert(node, ""), lines


def _scalar(node, where: str):
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    except (yaml.YAMLError, ValueError, OverflowError) as err:  # e.g. an int of 5000 digits, a bad date
        problem = getattr(err, "problem", None) or str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UsageError(
            f"space {where} line {node.start_mark.line + 1}: not a value funnelbench can read ({short(problem, 120)})"
        ) from None
    finally:
        loader.dispose()


def _read_space_file(path: Path, where: str) -> str:
    """The text of a space file: at most ``MAX_SPACE_BYTES``, UTF-8; any trouble is one line."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SPACE_BYTES + 1)
    except OSError as err:
        raise UsageError(
            f"space file {where!r}: cannot read it ({err.strerror or type(err).__name__}); give a readable .yaml file"
        ) from None
    if len(data) > MAX_SPACE_BYTES:
        raise UsageError(
            f"space file {where!r} is larger than {MAX_SPACE_BYTES // 1024} KiB; a space is a few KiB "
            "of YAML (see spaces/README.md)"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UsageError(f"space file {where!r}: not UTF-8 text (byte {err.start}); a space is a YAML file") from None


def resolve_space(space) -> tuple[dict, str | None, str, dict]:
    """(spec, file path or None, name, key lines) of a name, a path or a dict."""
    if isinstance(space, dict):
        return space, None, str(space.get("name", "custom")), {}
    text_arg = str(space)
    path = Path(text_arg).expanduser()
    if text_arg.endswith((".yaml", ".yml")) or "/" in text_arg or path.is_file():
        if not path.is_file():
            what = "is not a file" if path.exists() else "does not exist"  # a folder, a device, a pipe
            raise UsageError(
                f"space file {text_arg!r} {what}; give a .yaml file or a shipped space ({', '.join(list_spaces())})"
            )
        where = str(path)
        text = _read_space_file(path, where)
    else:
        shipped = spaces_dir().joinpath(text_arg + ".yaml")
        if not shipped.is_file():
            close = difflib.get_close_matches(text_arg, list_spaces(), n=2)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise UsageError(
                f"unknown space {text_arg!r}{hint}; shipped spaces: {', '.join(list_spaces())}, "
                "or give a path to a .yaml file"
            )
        text, where = shipped.read_text(encoding="utf-8"), f"spaces/{text_arg}.yaml"
        path = None
    spec, lines = _compose(text, where)
    lines["__where__"] = where
    name = spec.get("name", path.stem if path else text_arg) if isinstance(spec, dict) else text_arg
    return spec, (str(path.resolve()) if path else None), str(name), lines


def load_space(space) -> Space:
    """A validated :class:`Space` from a shipped space's name, a ``.yaml`` path or a dict."""
    spec, path, name, lines = resolve_space(space)
    where = lines.get("__where__", name)

    def fail(key: str, message: str):
        line = lines.get(key)
        at = f" line {line}" if line else ""
        raise UsageError(f"space {where}{at}, key {key}: {message}")

    try:
        result = build_space(spec, name, path, lines)
        steps = walk_steps(result)
        if steps > MAX_WALK_STEPS:
            widest = max((d for stage in result.stage_decisions for d in stage.values()), key=lambda d: len(d.values))
            raise SpaceError(
                "stages",
                f"walking this space exactly would take up to {steps:,} steps, more than the "
                f"{MAX_WALK_STEPS:,} (seconds of work) funnelbench allows; narrow its ranges "
                f"(the widest is {widest.name}, {widest.text()}) or split it into several spaces",
            )
        walk(result, check_only=True)
        result.stats()  # counts, extremes, and the depth constraint's feasibility
    except SpaceError as err:
        fail(err.key, err.message)
    for i, text in enumerate(spec.get("baselines") or []):
        key = f"baselines[{i}]"
        if not isinstance(text, str):
            fail(key, f"a baseline is a layout string, got {short(text)}")
        try:
            layout = parse_layout(text)
        except FunnelbenchError as err:
            fail(key, str(err))
        why = result.contains(layout)
        if why:
            fail(key, f"baseline {format_layout(layout)!r} is not a point of the space: {why}")
        if layout not in result.baselines:  # listed twice: trained once, as a repeated --baseline is
            result.baselines.append(layout)
    return result


__all__ = ["spaces_dir", "list_spaces", "resolve_space", "load_space"]
