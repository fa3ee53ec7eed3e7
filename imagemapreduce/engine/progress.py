r"""A text progress bar for long runs, on the local schedulers and on a cluster.

The engine reports ``(cells done, cells in all)`` as results come back; the bar draws that on
one line, redrawn in place on a terminal, or as a new line every few seconds on anything else
(a log file, a CI job), where ``\\r`` redraws would pile up.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any

__all__ = ["ProgressBar", "progress_bar", "ProgressCallback"]

#: What the engine calls as cells finish: ``progress(cells_done, cells_total)``.
ProgressCallback = Callable[[int, int], None]

#: Seconds between lines when the stream is not a terminal.
LINE_INTERVAL = 5.0


def _is_terminal(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if isatty is not None else False
    except (OSError, ValueError):  # a closed stream
        return False


class ProgressBar:
    """Draw ``[#####-----] done/total label  elapsed`` on a stream.

    On a terminal the line is redrawn in place (at most ten times a second); elsewhere a new line
    is written at most every ``interval`` seconds (default `LINE_INTERVAL`), and at the end.
    """

    def __init__(
        self,
        total: int,
        label: str,
        stream: IO[str] | None = None,
        width: int = 30,
        interval: float | None = None,
        terminal: bool | None = None,
    ):
        self.total = max(int(total), 1)
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.terminal = _is_terminal(self.stream) if terminal is None else terminal
        self.interval = (0.1 if self.terminal else LINE_INTERVAL) if interval is None else interval
        self.done = 0
        self._start = time.perf_counter()
        self._last = -float("inf") if not self.terminal else -1.0
        self._shown = -1

    def update(self, done: int, total: int | None = None, force: bool = False) -> None:
        """Show ``done`` items finished (of ``total``, when the engine knows a new total)."""
        if total is not None and total > 0:
            self.total = int(total)
        self.done = min(int(done), self.total)
        now = time.perf_counter()
        if not force and now - self._last < self.interval:
            return
        if not self.terminal and self.done == self._shown and not force:
            return
        self._last = now
        self._shown = self.done
        filled = int(self.width * self.done / self.total)
        bar = "#" * filled + "-" * (self.width - filled)
        text = f"[{bar}] {self.done}/{self.total} {self.label} {now - self._start:6.1f} s"
        self._write(f"\r{text}" if self.terminal else f"{text}\n")

    def close(self, finished: bool = True) -> None:
        """Finish the line; a ``finished`` run shows every item done."""
        if finished:
            self.done = self.total
        if self.terminal or self._shown != self.done:
            self.update(self.done, force=True)
        if self.terminal:
            self._write("\n")

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: progress is not worth failing for
            pass


@contextmanager
def progress_bar(
    enabled: bool | ProgressCallback, total_cells: int, scheduler: Any, stream: IO[str] | None = None
) -> Iterator[ProgressCallback | None]:
    """Show progress over the cells of a run while the block runs; yields the engine's callback.

    ``enabled`` is True (draw a bar on ``stream``, default stderr), False (nothing) or a callable
    ``progress(done, total)`` that is handed the engine's reports instead. On a cluster the bar
    also prints the dashboard link. A run that finishes shows every cell done.
    """
    if callable(enabled):
        yield enabled
        return
    if not enabled:
        yield None
        return
    stream = stream if stream is not None else sys.stderr
    if getattr(scheduler, "kind", None) == "distributed":
        link = getattr(scheduler.client, "dashboard_link", None)
        if link:
            stream.write(f"Dask dashboard: {link}\n")
    bar = ProgressBar(total_cells, "cells", stream)
    bar.update(0, force=True)
    try:
        yield bar.update
    except BaseException:
        bar.close(finished=False)
        raise
    bar.close()
