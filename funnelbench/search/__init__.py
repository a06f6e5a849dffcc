"""The re-investment search: search spaces (:mod:`.space`), budgets (:mod:`.budget`) and
studies (:mod:`.study`)."""

from .space import Space, describe, list_spaces, load_space

__all__ = ["Space", "load_space", "list_spaces", "describe"]
