"""The one parser for sizes and counts written with suffixes (memory and search budgets)."""

import pytest

from funnelbench.errors import UsageError
from funnelbench.units import parse_bytes, parse_count


@pytest.mark.parametrize(
    "text, value",
    [
        ("4.6G", 4.6e9),
        ("22M", 22e6),
        ("1.5e9", 1.5e9),
        ("17.6g", 17.6e9),
        ("900k", 9e5),
        ("2T", 2e12),
        (" 100 ", 100.0),
        (".5G", 5e8),
    ],
)
def test_parse_count(text, value):
    assert parse_count(text) == pytest.approx(value, rel=1e-12)


@pytest.mark.parametrize(
    "text, value",
    [
        ("16GiB", 16 * 2**30),
        ("24 GB", 24 * 10**9),
        ("512MiB", 2**29),
        ("1e9", 10**9),
        ("80g", 80 * 10**9),
        ("16Gi", 16 * 2**30),
        ("1.5KiB", 1536),
        ("2TB", 2 * 10**12),
    ],
)
def test_parse_bytes(text, value):
    assert parse_bytes(text) == value


@pytest.mark.parametrize(
    "text, problem",
    [
        ("1.2.3GB", "cannot read"),
        ("1e400", "finite"),
        ("inf", "cannot read"),
        ("nan", "cannot read"),
        ("-1G", "cannot read"),
        ("0", "positive"),
        ("12XB", "unknown unit"),
        ("", "cannot read"),
        ("0.1", "less than one byte"),
    ],
)
def test_parse_bytes_refuses(text, problem):
    with pytest.raises(UsageError, match=problem) as err:
        parse_bytes(text, "--budget")
    assert str(err.value).startswith("--budget ") and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "text, problem",
    [
        ("4.6GB", "unknown suffix"),
        ("4.6Gi", "unknown suffix"),
        ("1e400", "finite"),
        ("G", "cannot read"),
        ("0M", "positive"),
        ("abc", "cannot read"),
    ],
)
def test_parse_count_refuses(text, problem):
    with pytest.raises(UsageError, match=problem):
        parse_count(text, "--budget-flops")
