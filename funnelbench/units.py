"""Reading sizes and counts that people write with suffixes: ``16GiB``, ``24 GB``, ``4.6G``, ``22M``.

One parser for every option that takes one (``memory --budget``, ``search --budget-flops``,
``--budget-params``, ``--budget-memory``), so they all accept and refuse the same things:

* counts (:func:`parse_count`): a plain number or one with an SI suffix, K = 1e3, M = 1e6,
  G = 1e9, T = 1e12 (``4.6G``, ``22M``, ``1.5e9``);
* bytes (:func:`parse_bytes`): SI (``KB``, ``MB``, ``GB``, ``TB``, powers of 1000) or IEC
  (``KiB``, ``MiB``, ``GiB``, ``TiB``, powers of 1024), the ``B`` optional (``16GiB``, ``16Gi``,
  ``24GB``, ``512MiB``, ``1e9``).

Case does not matter. A value must be a finite positive number; anything else is a
:class:`~funnelbench.errors.UsageError` that quotes the text, names the option and shows how to
write it.
"""

from __future__ import annotations

import math
import re

from .errors import UsageError

_NUMBER = r"([0-9]+(?:\.[0-9]*)?(?:e[+-]?[0-9]+)?|\.[0-9]+(?:e[+-]?[0-9]+)?)"
_SI = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_IEC = {"ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def _split(text, what: str, example: str) -> tuple[float, str]:
    m = re.fullmatch(r"\s*" + _NUMBER + r"\s*([a-z]*)\s*", str(text or "").lower())
    if not m:
        raise UsageError(f"{what} {text!r}: cannot read it as a number; write it like {example}")
    try:
        value = float(m.group(1))
    except (ValueError, OverflowError):  # pragma: no cover - the pattern admits only valid floats
        raise UsageError(f"{what} {text!r}: cannot read it as a number; write it like {example}") from None
    if not math.isfinite(value):
        raise UsageError(f"{what} {text!r}: the number is too large to be finite; write it like {example}")
    if value <= 0:
        raise UsageError(f"{what} {text!r}: must be positive; write it like {example}")
    return value, m.group(2)


def parse_count(text, what: str = "count") -> float:
    """``'4.6G'`` -> 4.6e9, ``'22M'`` -> 2.2e7, ``'1.5e9'`` -> 1.5e9 (SI suffixes K, M, G, T)."""
    example = "4.6G, 22M or 1.5e9 (suffixes K, M, G, T)"
    value, unit = _split(text, what, example)
    if unit not in _SI:
        raise UsageError(f"{what} {text!r}: unknown suffix {unit!r}; write it like {example}")
    return value * _SI[unit]


def parse_bytes(text, what: str = "memory size") -> int:
    """``'16GiB'`` -> 17179869184, ``'24 GB'`` -> 24e9, ``'512MiB'``, ``'1e9'`` -> bytes."""
    example = "16GiB, 24GB or 512MiB"
    value, unit = _split(text, what, example)
    unit = unit[:-1] if unit.endswith("b") else unit
    scale = _SI.get(unit) or _IEC.get(unit)
    if scale is None:
        raise UsageError(f"{what} {text!r}: unknown unit; write it like {example}")
    result = value * scale
    if result < 1:
        raise UsageError(f"{what} {text!r}: less than one byte; write it like {example}")
    return int(result)


__all__ = ["parse_count", "parse_bytes"]
