"""Errors that funnelbench raises for bad input.

Every user-facing mistake is a :class:`FunnelbenchError`; the CLI turns it into a one-line
message and exit code 2. Anything else that escapes is a bug in funnelbench.
"""

from __future__ import annotations

import re

# The password of a URL (``scheme://user:PASSWORD@host``, as SQLAlchemy reads it: up to the first
# "@") and a ``password=`` parameter (a URL's query, a libpq connection string).
_URL_PASSWORD = re.compile(r"([A-Za-z][\w+.-]*://[^:/@\s]*):[^@\s]*@")
_PASSWORD_PARAM = re.compile(r"\b(password=)[^\s&;'\"]+", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with every password in it replaced by ``***``: the one redaction that every
    message, header and record that may hold a storage URL goes through."""
    return _PASSWORD_PARAM.sub(r"\1***", _URL_PASSWORD.sub(r"\1:***@", str(text)))


class FunnelbenchError(Exception):
    """Base class of every error caused by the user's input (not by a bug)."""


class UsageError(FunnelbenchError, ValueError):
    """A bad argument: unknown preset, impossible option combination, bad path, ..."""


class LayoutError(FunnelbenchError, ValueError):
    """A layout string that does not parse or does not describe a valid model.

    ``str(err)`` is one line that quotes the input, gives the 1-based column of the offending
    character and says what was expected; :meth:`caret` renders the input with a ``^`` under it.
    """

    def __init__(self, problem: str, text: str | None = None, pos: int | None = None, expected: str | None = None):
        self.problem = problem
        self.text = text
        self.pos = pos
        self.expected = expected
        super().__init__(self._one_line())

    def _one_line(self) -> str:
        parts = []
        if self.text is not None:
            where = f"layout {self.text!r}"
            if self.pos is not None:
                where += f" at column {self.pos + 1}"
                snippet = self.text[: self.pos] + "\u25b8" + self.text[self.pos :]
                where += f" ({snippet!r})"
            parts.append(where + ": " + self.problem)
        else:
            parts.append(self.problem)
        if self.expected:
            parts.append("expected " + self.expected)
        return "; ".join(parts)

    def caret(self) -> str:
        """The input on one line and a caret under the offending column on the next."""
        if self.text is None or self.pos is None:
            return str(self)
        return f"{self.text}\n{' ' * self.pos}^ {self.problem}"
