"""The one place that builds Dask graphs and runs them.

A map-reduce becomes a graph with one task per cell (the mapper on that cell's expanded box) and
one task per output region (stitching, in grid order, the cells whose expanded box overlaps the
region). Regions are disjoint, so the stitched output is bitwise identical to one whole-image loop
whatever the scheduler, the number of workers or the region size.

On the shared-memory schedulers (synchronous, threads) each region writes straight into the output
exposure; on the others (processes, a distributed cluster) regions come back as arrays and are
copied in as they arrive, so neither path ever holds every cell's result at once.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..geom import Box2I, Point2I
from ..grid import CellGrid, boxes_from_array
from ..image import Exposure
from ..pipe_base import Struct
from ..stitch import IMAGE_REDUCE_OPERATIONS, RegionAccumulator, RegionStats

__all__ = [
    "CellFailure",
    "CellOutcome",
    "CellTask",
    "MapReducePlan",
    "StitchOutcome",
    "region_boxes",
    "run_cell",
    "execute_cells",
    "execute_stitch",
]


class CellFailure(RuntimeError):
    """A mapper raised on one cell; the message names the cell and the original exception."""


@dataclass
class CellOutcome:
    """What one cell task returns: the mapper's result and how long it took."""

    index: int
    result: Any
    wall_time: float
    cpu_time: float
    worker: str


@dataclass
class CellTask:
    """Everything one cell needs, in one object so that Dask does not walk its contents."""

    mapper: Any
    expanded: Exposure
    index: int
    box0: Box2I
    box1: Box2I
    full_bbox: Box2I
    do_clone: bool
    return_sub_images: bool
    operation: str
    kwargs: dict[str, Any]


def _read_only(exposure: Exposure) -> Exposure:
    """Protect the input from mappers that write into their arguments (use doClone=True for copies)."""
    for plane in (exposure.image, exposure.mask, exposure.variance):
        if isinstance(plane.array, np.ndarray):
            plane.array.flags.writeable = False
    return exposure


def run_cell(task: CellTask) -> CellOutcome:
    """Run the mapper on one cell and check that its result can be reduced."""
    start_wall, start_cpu = time.perf_counter(), time.thread_time()
    expanded = task.expanded
    if task.do_clone:
        expanded = expanded.clone()
    sub = expanded.subset(task.box0)
    if task.do_clone:
        sub = sub.clone()  # private copies that do not share pixels with each other either
    try:
        result = task.mapper.run(sub, expanded, task.full_bbox, **task.kwargs)
    except Exception as exc:  # noqa: BLE001 - re-raised with the cell named
        raise CellFailure(
            f"mapper {type(task.mapper).__name__} failed on cell {task.index} (box {task.box0}, "
            f"expanded box {task.box1}): {type(exc).__name__}: {exc}\n{traceback.format_exc()}"
        ) from exc
    if task.return_sub_images:
        result.mergeItems(
            Struct(inputSubExposure=sub, inputExpandedSubExposure=expanded),
            "inputSubExposure",
            "inputExpandedSubExposure",
        )
    _check_result(task, result)
    return CellOutcome(
        index=task.index,
        result=result,
        wall_time=time.perf_counter() - start_wall,
        cpu_time=time.thread_time() - start_cpu,
        worker=f"{os.getpid()}:{threading.current_thread().name}",
    )


def _check_result(task: CellTask, result: Any) -> None:
    """Validate a result where it is produced, so the error names the cell."""
    if task.operation not in IMAGE_REDUCE_OPERATIONS:
        return
    item = getattr(result, "subExposure", None)
    if not isinstance(item, Exposure):
        raise TypeError(
            f"Expecting an Exposure type, got {type(item)} from cell {task.index} (box {task.box0}). "
            f'Consider using `reduceOperation="none"` to get the mapper results as a list.'
        )
    bbox = item.getBBox()
    if not task.box1.contains(bbox):
        raise ValueError(
            f"mapper result for cell {task.index} has bbox {bbox}, outside its expanded cell {task.box1}; "
            "return a subExposure within the expanded cell (the stitcher reads only those)"
        )


@dataclass
class RegionTask:
    """One output region: its box, and either where to write (shared memory) or the input mask there."""

    bbox: Box2I
    operation: str
    dtype: Any
    bad_bits: int
    input_mask: Any
    home_cells: tuple[int, ...]
    out: tuple[np.ndarray, np.ndarray, np.ndarray] | None


@dataclass
class StitchOutcome:
    """What a region task returns: overlap statistics, per-cell summaries, arrays when not shared."""

    bbox: Box2I
    stats: RegionStats
    summaries: list[tuple[int, float, float, str, Any]] = field(default_factory=list)
    planes: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None


def stitch_region(task: RegionTask, outcomes: Sequence[CellOutcome]) -> StitchOutcome:
    """Stitch, in grid order, the cells that overlap one region."""
    if task.out is not None:  # shared memory: the output is a clone of the input, mask included
        out_image, mask, out_variance = task.out
    else:
        out_image, out_variance, mask = None, None, np.array(task.input_mask, dtype=np.int32, copy=True)
    acc = RegionAccumulator(task.bbox, mask, task.dtype, task.operation, out_image, out_variance)
    for outcome in outcomes:
        item = outcome.result.subExposure
        mi = item.maskedImage
        acc.add(item.getBBox(), mi.image.array, mi.variance.array, mi.mask.array)
    stats = acc.finish(task.bad_bits)
    home = set(task.home_cells)
    summaries = [_summary(o) for o in outcomes if o.index in home]
    if task.out is not None:
        return StitchOutcome(task.bbox, stats, summaries)
    return StitchOutcome(task.bbox, stats, summaries, (acc.image, acc.mask, acc.variance))


def _summary(outcome: CellOutcome) -> tuple[int, float, float, str, Any]:
    """Timing and PSF component of one cell: small, so it can travel with the region's answer."""
    item = outcome.result.subExposure
    return (outcome.index, outcome.wall_time, outcome.cpu_time, outcome.worker, (item.getPsf(), item.getBBox()))


def region_boxes(bbox: Box2I, region_size: int) -> list[Box2I]:
    """Tile ``bbox`` with square regions of ``region_size`` pixels (smaller at the far edges), x-major."""
    if region_size < 1:
        raise ValueError(f"stitchRegionSize must be at least 1 pixel, got {region_size}")
    regions = []
    for x0 in range(bbox.getBeginX(), bbox.getEndX(), region_size):
        for y0 in range(bbox.getBeginY(), bbox.getEndY(), region_size):
            x1 = min(x0 + region_size, bbox.getEndX()) - 1
            y1 = min(y0 + region_size, bbox.getEndY()) - 1
            regions.append(Box2I(Point2I(x0, y0), Point2I(x1, y1)))
    return regions


def _cells_by_region(grid: CellGrid, bbox: Box2I, region_size: int) -> dict[tuple[int, int], list[int]]:
    """Indices (in grid order) of the cells whose expanded box overlaps each region."""
    ex = grid.expanded
    ix0 = (ex[:, 0] - bbox.getBeginX()) // region_size
    iy0 = (ex[:, 1] - bbox.getBeginY()) // region_size
    ix1 = (ex[:, 2] - bbox.getBeginX()) // region_size
    iy1 = (ex[:, 3] - bbox.getBeginY()) // region_size
    members: dict[tuple[int, int], list[int]] = {}
    for index, (a, b, c, d) in enumerate(zip(ix0.tolist(), iy0.tolist(), ix1.tolist(), iy1.tolist())):
        for i in range(a, c + 1):
            for j in range(b, d + 1):
                members.setdefault((i, j), []).append(index)
    return members


@dataclass
class MapReducePlan:
    """The inputs of a map-reduce, independent of how it is scheduled."""

    mapper: Any
    exposure: Exposure
    grid: CellGrid
    kwargs: dict[str, Any]
    operation: str
    do_clone: bool = False
    return_sub_images: bool = False

    def cell_graph(self, name: str) -> dict[Any, Any]:
        """One task per cell, each holding a view of its expanded box only."""
        full_bbox = self.exposure.getBBox()
        boxes0 = boxes_from_array(self.grid.cells)
        boxes1 = boxes_from_array(self.grid.expanded)
        graph: dict[Any, Any] = {}
        for index, (box0, box1) in enumerate(zip(boxes0, boxes1)):
            expanded = _read_only(self.exposure.subset(box1))
            task = CellTask(
                self.mapper, expanded, index, box0, box1, full_bbox,
                self.do_clone, self.return_sub_images, self.operation, self.kwargs,
            )  # fmt: skip
            graph[(name, index)] = (run_cell, task)
        return graph


def execute_cells(plan: MapReducePlan, scheduler: SchedulerChoice) -> list[CellOutcome]:
    """Run every cell and return the outcomes in grid order (for ``none``, ``coaddPsf`` and custom reducers)."""
    name = f"imr-cell-{uuid.uuid4().hex}"
    graph = plan.cell_graph(name)
    keys = [(name, i) for i in range(len(plan.grid))]
    return list(scheduler.get(graph, keys))


def execute_stitch(
    plan: MapReducePlan,
    output: Exposure,
    bad_bits: int,
    region_size: int,
    scheduler: SchedulerChoice,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[RegionStats, list[tuple[int, float, float, str, Any]]]:
    """Map every cell and stitch the results into ``output`` region by region.

    Returns the merged overlap statistics and, in grid order, each cell's (index, wall time, CPU
    time, worker, (psf, bbox)).
    """
    token = uuid.uuid4().hex
    cell_name, region_name = f"imr-cell-{token}", f"imr-stitch-{token}"
    graph = plan.cell_graph(cell_name)
    bbox = output.getBBox()
    members = _cells_by_region(plan.grid, bbox, region_size)
    home = _home_regions(plan.grid, bbox, region_size)
    keys = []
    for region in region_boxes(bbox, region_size):
        ij = ((region.getBeginX() - bbox.getBeginX()) // region_size, (region.getBeginY() - bbox.getBeginY()) // region_size)
        cells = members.get(ij, [])
        out, input_mask = None, None
        if scheduler.shares_memory:
            view = output.subset(region)
            out = (view.image.array, view.mask.array, view.variance.array)
        else:
            input_mask = output.mask.subset(region).array.copy()
        task = RegionTask(
            region, plan.operation, output.dtype, bad_bits, input_mask, tuple(home.get(ij, ())), out
        )
        key = (region_name, len(keys))
        graph[key] = (stitch_region, task, [(cell_name, i) for i in cells])
        keys.append(key)
    stats: list[RegionStats] = []
    summaries: list[tuple[int, float, float, str, Any]] = []
    for done, outcome in enumerate(scheduler.iterate(graph, keys), start=1):
        if outcome.planes is not None:
            view = output.subset(outcome.bbox)
            for plane, array in zip((view.image, view.mask, view.variance), outcome.planes):
                plane.array[...] = array
        stats.append(outcome.stats)
        summaries.extend(outcome.summaries)
        if progress is not None:
            progress(done, len(keys))
    summaries.sort(key=lambda s: s[0])
    return RegionStats.merge(stats), summaries


def _home_regions(grid: CellGrid, bbox: Box2I, region_size: int) -> dict[tuple[int, int], list[int]]:
    """Give each cell one region (the one holding its expanded box's first pixel) to report it."""
    ix = (grid.expanded[:, 0] - bbox.getBeginX()) // region_size
    iy = (grid.expanded[:, 1] - bbox.getBeginY()) // region_size
    home: dict[tuple[int, int], list[int]] = {}
    for index, ij in enumerate(zip(ix.tolist(), iy.tolist())):
        home.setdefault(ij, []).append(index)
    return home
