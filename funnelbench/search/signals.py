"""SIGINT and SIGTERM as an exception: within :func:`signals_interrupt` either signal raises
:class:`Interrupted` (a KeyboardInterrupt) in the main thread, once; :func:`signals_held` holds
it back over a few lines (a trial being handed out) until :func:`raise_if_signalled`.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM: the running trial is recorded ``interrupted`` and the worker stops.
    A KeyboardInterrupt, so everything that handles Ctrl-C handles a scheduler's SIGTERM too."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # 130 for SIGINT, 143 for SIGTERM


_signalled: list[int] = []  # the signal this process received, if any


_holding: list[int] = []  # inside signals_held: a signal is noted, and raised when the block ends


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Within the block a signal does not raise :class:`Interrupted`; it is noted, and
    :func:`raise_if_signalled` raises it where the caller can record what it interrupted."""
    _holding.append(0)
    try:
        yield
    finally:
        _holding.pop()


def raise_if_signalled() -> None:
    """Raise :class:`Interrupted` if this process received SIGINT or SIGTERM."""
    if _signalled:
        raise Interrupted(_signalled[0])


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """Within the block SIGINT and SIGTERM raise :class:`Interrupted` in the main thread (once:
    a second signal while the first is being handled is ignored, so the record gets written)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = _signalled
    fired.clear()

    def handler(signum, frame):
        if fired:
            return
        fired.append(signum)
        if not _holding:
            raise Interrupted(signum)

    before = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in before.items():
            signal.signal(s, h)


__all__ = ["Interrupted", "signals_interrupt", "signals_held", "raise_if_signalled"]
