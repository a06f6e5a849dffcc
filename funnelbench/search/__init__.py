"""The re-investment search: search spaces (:mod:`.space`), budgets (:mod:`.budget`) and
studies (:mod:`.study`).

The space's names are imported on first use (PEP 562), so that a module of this package that
needs nothing heavy (:mod:`.vocabulary`) loads without YAML."""

import importlib

_PUBLIC = ("Space", "load_space", "list_spaces", "describe")


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(".space", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))


__all__ = list(_PUBLIC)
