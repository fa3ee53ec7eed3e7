"""Pausing Python's cyclic garbage collector while a graph (or its list of boxes) is built.

A graph of N cells is a few objects per cell (task tuples, cell tasks, boxes, cuts), all kept and
none garbage. The cyclic collector still runs every few hundred allocations and walks the young
objects, then again the older ones, so that building a graph of many cells spends most of its
time in collections that free nothing (see ``benchmarks/bench_overhead.py``: graph construction
against the number of cells). Pausing it while the graph is built is the usual remedy for bulk
construction; reference counting still frees everything at once as always, and the collector
runs again as soon as the graph is done.

`builds_graph` marks the functions that build graph tasks; `gc_paused` is the block (or, called,
the decorator) for any other bulk construction, such as a list of boxes.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

__all__ = ["gc_paused", "builds_graph"]

F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def gc_paused() -> Iterator[None]:
    """Disable the cyclic garbage collector inside the block; restore its previous state after.

    Nests: only the outermost block that found the collector on turns it back on. As a decorator
    (``@gc_paused()``), each call of the function runs inside its own block.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def builds_graph(func: F) -> F:
    """Decorate a function that builds graph tasks so that it runs with the collector paused."""
    return gc_paused()(func)
