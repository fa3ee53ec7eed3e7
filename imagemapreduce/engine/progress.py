"""A text progress bar for long runs, on the local schedulers and on a cluster."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from dask.callbacks import Callback

__all__ = ["ProgressBar", "progress_bar"]


class ProgressBar:
    """Draw ``[#####-----] done/total label  elapsed`` on one line of a stream."""

    def __init__(self, total: int, label: str, stream: IO[str] | None = None, width: int = 30):
        self.total = max(int(total), 1)
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.done = 0
        self._start = time.perf_counter()
        self._last = -1.0

    def update(self, done: int, force: bool = False) -> None:
        """Show ``done`` items finished (redrawn at most ten times a second)."""
        self.done = min(done, self.total)
        now = time.perf_counter()
        if not force and now - self._last < 0.1 and self.done < self.total:
            return
        self._last = now
        filled = int(self.width * self.done / self.total)
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r[{bar}] {self.done}/{self.total} {self.label} {now - self._start:6.1f} s")
        self.stream.flush()

    def close(self) -> None:
        """Finish the line."""
        self.update(self.done, force=True)
        self.stream.write("\n")
        self.stream.flush()


class _CountTasks(Callback):
    """Advance a bar each time a task whose key starts with ``prefix`` finishes (local schedulers)."""

    def __init__(self, bar: ProgressBar, prefix: str):
        super().__init__()
        self.bar, self.prefix, self.count = bar, prefix, 0

    def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        name = key[0] if isinstance(key, tuple) else key
        if isinstance(name, str) and name.startswith(self.prefix):
            self.count += 1
            self.bar.update(self.count)


@contextmanager
def progress_bar(enabled: bool, total_cells: int, scheduler: Any, stream: IO[str] | None = None) -> Iterator[Any]:
    """Show progress over the cells of a run while the block runs; yields a region callback or None.

    On the local schedulers the bar counts finished cells; on a cluster it prints the dashboard
    link and counts finished output regions (each region waits for the cells it needs).
    """
    if not enabled:
        yield None
        return
    stream = stream if stream is not None else sys.stderr
    if scheduler.kind == "distributed":
        link = getattr(scheduler.client, "dashboard_link", None)
        if link:
            stream.write(f"Dask dashboard: {link}\n")
        holder: dict[str, ProgressBar] = {}

        def on_region(done: int, total: int) -> None:
            bar = holder.setdefault("bar", ProgressBar(total, "regions", stream))
            bar.update(done)

        yield on_region
        if "bar" in holder:
            holder["bar"].close()
        return
    bar = ProgressBar(total_cells, "cells", stream)
    with _CountTasks(bar, "imr-cell"):
        yield None
    bar.close()
