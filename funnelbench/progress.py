"""One progress bar for every long loop: training epochs, cache building, profiling.

It shows only on a terminal (rank 0's console); elsewhere it is inactive and costs nothing."""

from __future__ import annotations


class ProgressBar:
    """A rich progress bar: ``start(description, total)`` then ``advance()``, or ``update(
    description, done, total)`` from a callback; a context manager that stops it."""

    @classmethod
    def maybe(cls, console) -> "ProgressBar | None":
        """A bar on a terminal console, else None (the trainer then skips the per-step work)."""
        return cls(console) if console is not None and console.is_terminal else None

    def __init__(self, console):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.active = console is not None and console.is_terminal
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=console,
            transient=True,
            disable=not self.active,
        )
        self.task = None
        self.steps = 0

    def start(self, description: str, total: int | None) -> None:
        self.progress.start()
        self.task = self.progress.add_task(description, total=total, info="")

    def advance(self, loss=None) -> None:
        """One step; every tenth shows ``loss`` (a tensor: reading it waits for the device)."""
        self.steps += 1
        info = f"loss {loss.item():.4f}" if loss is not None and self.steps % 10 == 1 else None
        self.progress.update(self.task, advance=1, **({"info": info} if info else {}))

    def update(self, description: str, done: int, total: int | None) -> None:
        if self.task is None:
            self.start(description, total)
        self.progress.update(self.task, description=description, completed=done, total=total)

    def close(self) -> None:
        self.progress.stop()

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["ProgressBar"]
