"""Packing cells into tasks: groups of neighbouring cells, each group one Dask task.

The grid decides the cells; this module decides only how they are packed into graph nodes. A
task costs a Dask scheduler about a millisecond on a cluster (Dask's documented overhead, and
what ``benchmarks/bench_overhead.py`` measures here), and tens of microseconds on threads, so a
task should carry enough work to hide that: Dask's best-practice guidance is at least ~100 ms
per task on a distributed cluster. The ``"auto"`` rule therefore estimates each cell's work from
its expanded pixels (`SECONDS_PER_PIXEL`, `SECONDS_PER_CELL`) and packs enough cells to reach
`TARGET_TASK_SECONDS` for the scheduler, but never so many that fewer than `TASKS_PER_WORKER`
tasks per worker are left to balance the load.

A batch is a compact block of neighbours: the cells whose core starts in one square tile of the
image, tiles aligned with the output regions (a tile is a region, a multiple of one, or a
region split in halves), so that a region usually needs whole batches and each batch's pixels
travel once, as one block holding its cells' expanded boxes. Batching never changes a result:
each cell still runs alone, on its own expanded box, with its own retries, timing and failure.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "TARGET_TASK_SECONDS",
    "SECONDS_PER_PIXEL",
    "SECONDS_PER_CELL",
    "TASKS_PER_WORKER",
    "check_cells_per_task",
    "auto_cells_per_task",
    "pack_cells",
    "union_box",
]

#: Work per task the ``"auto"`` rule aims at, by scheduler kind (seconds).
TARGET_TASK_SECONDS = {"distributed": 0.1, "processes": 0.1}
#: Target for the schedulers that share this process's memory (threads, synchronous, custom).
SHARED_MEMORY_TARGET_SECONDS = 0.01
#: Estimated mapper time per expanded-cell pixel: a small filter on float32 (Gaussian, median 3x3).
SECONDS_PER_PIXEL = 2e-8
#: Estimated fixed cost per cell besides its pixels (the call, its checks and timing).
SECONDS_PER_CELL = 3e-5
#: At least this many tasks per worker are kept, so that the load stays balanced.
TASKS_PER_WORKER = 4


def check_cells_per_task(value: Any, name: str = "cells_per_task") -> int | str:
    """``"auto"`` or a positive int, else a `ValueError` naming ``name`` and what to give."""
    if isinstance(value, str) and value == "auto":
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)) and value >= 1:
        return int(value)
    raise ValueError(
        f'{name} must be "auto" (pack neighbouring cells into tasks of ~100 ms of work on a cluster) or a '
        f"positive int (at most that many cells per task; 1 for one task per cell), got {value!r}"
    )


def auto_cells_per_task(expanded: np.ndarray, workers: int, kind: str) -> int:
    """The ``"auto"`` batch size for cells with these expanded boxes (``(n, 4)``) on ``workers`` workers.

    Enough cells for `TARGET_TASK_SECONDS` of estimated work per task, and at most ``n / (4 W)``
    (`TASKS_PER_WORKER`), at least 1.
    """
    count = len(expanded)
    if count == 0:
        return 1
    pixels = float(np.mean((expanded[:, 2] - expanded[:, 0] + 1) * (expanded[:, 3] - expanded[:, 1] + 1)))
    per_cell = SECONDS_PER_CELL + SECONDS_PER_PIXEL * pixels
    target = TARGET_TASK_SECONDS.get(kind, SHARED_MEMORY_TARGET_SECONDS)
    wanted = math.ceil(target / per_cell)
    most = count // (TASKS_PER_WORKER * max(1, workers))
    return max(1, min(wanted, most))


def pack_cells(
    cells: np.ndarray,
    indices: np.ndarray,
    origin: tuple[int, int],
    region_size: int,
    per_task: int,
    largest_tile: int | None = None,
) -> tuple[list[np.ndarray], int]:
    """Group the cells ``indices`` (rows of ``cells``, ``(n, 4)`` core boxes) into batches of neighbours.

    Each batch holds at most ``per_task`` cells, in grid order; batches come tile by tile (row
    of tiles, then column). ``origin`` is the image's ``(x0, y0)``. ``largest_tile`` caps the
    tile side (a multiple or a power-of-two fraction of ``region_size``). Returns the batches and
    the side of the square tiles (pixels) whose cells they hold (0 for one cell per batch).
    """
    indices = np.asarray(indices, dtype=np.int64)
    if per_task <= 1 or len(indices) <= 1:
        return list(indices.reshape(-1, 1)), 0  # rows of a column: one-cell views, made in C
    local = cells[indices] - np.tile(np.asarray(origin, dtype=np.int64), 2)
    starts = local[:, :2]
    tile = _tile_side(local, region_size, per_task)
    if largest_tile is not None:
        tile = min(tile, largest_tile)
    rows, cols = starts[:, 1] // tile, starts[:, 0] // tile
    order = np.lexsort((indices, cols, rows))  # by tile, then grid order within a tile
    keys = (rows * (int(cols.max()) + 1) + cols)[order]
    edges = np.flatnonzero(np.diff(keys)) + 1
    batches = []
    for group in np.split(indices[order], edges):
        batches += [group[k : k + per_task] for k in range(0, len(group), per_task)]
    return batches, tile


def _tile_side(cores: np.ndarray, region_size: int, per_task: int) -> int:
    """A tile side holding about ``per_task`` cells, aligned with the regions.

    The side follows the cells' density over the area their cores cover; it is then made a
    whole number of regions, or a region divided by a power of two, rounding down, so that a
    tile of a regular grid holds no more than ``per_task`` cells.
    """
    span = (cores[:, 2:].max(axis=0) - cores[:, :2].min(axis=0) + 1).astype(np.float64)
    density = len(cores) / float(span[0] * span[1])
    side = math.sqrt(per_task / density)
    if side >= region_size:
        return region_size * max(1, math.floor(side / region_size))
    halvings = max(0, math.ceil(math.log2(region_size / max(side, 1.0))))
    return max(1, region_size >> halvings)


def union_box(boxes: np.ndarray) -> tuple[int, int, int, int]:
    """The smallest ``(minX, minY, maxX, maxY)`` holding every row of an ``(n, 4)`` box array."""
    return (
        int(boxes[:, 0].min()),
        int(boxes[:, 1].min()),
        int(boxes[:, 2].max()),
        int(boxes[:, 3].max()),
    )
