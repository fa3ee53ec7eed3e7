"""What to map: an exposure by an `ImageMapper`, or plain arrays by a function.

A plan knows its inputs and builds the cell tasks, a batch of neighbouring cells per task
(`batches`); `graph` adds the region tasks and runs them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from .._gc_pause import builds_graph
from ..geom import Box2I, Point2I
from ..grid import CellGrid
from ..image import Exposure
from ..stitch import IMAGE_REDUCE_OPERATIONS
from ..weights import Weighting
from .batches import union_box
from .cells import (
    ArrayCellTask,
    CellBatch,
    CellTask,
    FailurePolicy,
    array_piece,
    cores_of,
    exposure_piece,
    run_array_cell,
    run_batch,
    run_cell,
)
from .shared_memory import SharedArrayRef
from .sources import CompanionSource, ExposureSource, PlaneSource

__all__ = ["ExposurePlan", "ArrayPlan", "cells_disjoint"]

#: The boxes of a batch's template task, None until each batch fills in its cells' (`CellBatch.tasks`).
_UNSET_BOX = cast(Box2I, None)


def cells_disjoint(boxes: np.ndarray) -> bool:
    """Whether the ``(n, 4)`` boxes ``(minX, minY, maxX, maxY)`` share no pixel (a sufficient test).

    True when, along x, every box ends before the next distinct left edge (so boxes with different
    left edges cannot meet in x), the same holds along y, and no two boxes share a corner.
    """
    if len(boxes) < 2:
        return True
    for lo, hi in ((0, 2), (1, 3)):
        edges = np.unique(boxes[:, lo])
        following = np.append(edges[1:], np.iinfo(np.int64).max)[np.searchsorted(edges, boxes[:, lo])]
        if np.any(boxes[:, hi] >= following):
            return False
    return len(np.unique(boxes[:, :2], axis=0)) == len(boxes)


def _batches(
    runner: Any, template: Any, grid: CellGrid, batches: list[np.ndarray], grid_indices: np.ndarray | None = None
) -> tuple[list[CellBatch], np.ndarray]:
    """The batches of the grid's cells (each an index array), and the unions of their expanded boxes.

    ``grid_indices`` (plain arrays): each cell's (row, column), given to the batches likewise.
    The unions come back as an ``(n, 4)`` array too, one row per batch.

    Built for all batches at once: the members' boxes are gathered in one fancy index, each
    batch's rows are a view of that, and the unions come from one ``reduceat`` per corner: numpy
    calls per batch, on tiny arrays, would be most of the cost of a million-task graph (see
    ``benchmarks/bench_scale.py``).
    """
    sizes = np.fromiter(map(len, batches), dtype=np.int64, count=len(batches))
    if not len(batches) or not sizes.all():  # reduceat needs non-empty groups
        out = [_batch(runner, template, grid, members, grid_indices) for members in batches]
        return out, np.array([batch.box for batch in out], dtype=np.int64).reshape(-1, 4)
    members = np.concatenate(batches)
    expanded = grid.expanded[members]
    starts = np.cumsum(sizes) - sizes
    unions = np.hstack([np.minimum.reduceat(expanded[:, :2], starts), np.maximum.reduceat(expanded[:, 2:], starts)])
    cells, expanded = _split_rows(grid.cells[members], sizes, starts), _split_rows(expanded, sizes, starts)
    out = [
        CellBatch(runner, template, batch, own, reach, tuple(union))
        for batch, own, reach, union in zip(batches, cells, expanded, unions.tolist())
    ]
    if grid_indices is not None:
        for batch, where in zip(out, _split_rows(grid_indices[members], sizes, starts)):
            batch.grid_indices = where
    return out, unions


def _split_rows(rows: np.ndarray, sizes: np.ndarray, starts: np.ndarray) -> list[np.ndarray]:
    """``rows`` cut into consecutive views of ``sizes`` rows each (``starts``: where each begins).

    Batches of one size (one cell each, or full tiles) are the rows of a reshaped view, which
    numpy iterates in C; others are sliced one by one.
    """
    if len(sizes) and (sizes == sizes[0]).all():
        return list(rows.reshape(len(sizes), int(sizes[0]), *rows.shape[1:]))
    return [rows[start : start + size] for start, size in zip(starts.tolist(), sizes.tolist())]


def _batch(
    runner: Any, template: Any, grid: CellGrid, members: np.ndarray, grid_indices: np.ndarray | None = None
) -> CellBatch:
    """The batch of the grid's cells ``members`` (indices), with the union of their expanded boxes."""
    expanded = grid.expanded[members]
    batch = CellBatch(runner, template, members, grid.cells[members], expanded, union_box(expanded))
    if grid_indices is not None:
        batch.grid_indices = grid_indices[members]
    return batch


def _box(corners: tuple[int, int, int, int]) -> Box2I:
    return Box2I(Point2I(corners[0], corners[1]), Point2I(corners[2], corners[3]))


def _with_weight_function(obj: Any, weighting: Weighting | None) -> list[Any]:
    """``obj`` and the weighting's user function, if it has one."""
    return [obj] + ([weighting.function] if weighting and weighting.function else [])


@dataclass(kw_only=True)
class ExposurePlan:
    """A map-reduce of an `Exposure` by an `ImageMapper`, independent of how it is scheduled."""

    mapper: Any
    exposure: Exposure
    grid: CellGrid
    kwargs: dict[str, Any]
    operation: str
    do_clone: bool = False
    return_sub_images: bool = False
    weighting: Weighting | None = None
    policy: FailurePolicy = field(default_factory=FailurePolicy)
    companions: dict[str, Any] = field(default_factory=dict)
    #: Cells per task: an int (at most that many neighbours), or "auto" (see `batches`).
    cells_per_task: int | str = "auto"
    # Class attributes, not fields: how the stitcher reads this plan's results.
    extract = staticmethod(exposure_piece)
    with_variance = True

    @property
    def result_boxes(self) -> np.ndarray:
        """Where each cell's result may lie: its expanded box (a mapper's result box is its own choice)."""
        return self.grid.expanded

    @builds_graph
    def batch_graph(self, name: str, batches: list[np.ndarray], direct_out: Any = None) -> dict[Any, Any]:
        """One task per batch of cells (rows of the grid), each holding (or reading) the batch's box only.

        ``direct_out`` is for plain arrays only (an exposure mapper's result box is its own choice).
        """
        source = ExposureSource(self.exposure)
        companions = [CompanionSource(c) for c in self.companions.values()]
        graph = source.graph()
        for companion in companions:
            graph.update(companion.graph())
        # The cell's own fields (index, boxes) are filled in by each batch (`CellBatch.tasks`).
        template = CellTask(
            mapper=self.mapper,
            index=-1,
            box0=_UNSET_BOX,
            box1=_UNSET_BOX,
            full_bbox=self.exposure.getBBox(),
            do_clone=self.do_clone,
            return_sub_images=self.return_sub_images,
            operation=self.operation,
            kwargs=self.kwargs,
            policy=self.policy,
            companion_names=tuple(self.companions),
        )
        for number, batch in enumerate(_batches(run_cell, template, self.grid, batches)[0]):
            box = _box(batch.box)
            graph[(name, number)] = (run_batch, batch, source.cut(box), *(c.cut(box) for c in companions))
        return graph

    @property
    def bbox(self) -> Box2I:
        """The bounding box of the input (and output)."""
        return self.exposure.getBBox()

    def objects_to_import(self) -> list[Any]:
        """The user's objects (mapper, weight function) whose code the workers must be able to import."""
        return _with_weight_function(self.mapper, self.weighting)

    def input_mask(self) -> PlaneSource | None:
        """The input mask, which every output region starts from."""
        return PlaneSource(self.exposure.mask.array, self.exposure.getXY0())

    @property
    def lazy(self) -> bool:
        """Whether any input plane is a Dask array (then regions read the input mask themselves)."""
        return ExposureSource(self.exposure).lazy


@dataclass(kw_only=True)
class ArrayPlan:
    """A map-reduce of plain 2-d arrays (numpy or Dask) by a function of the expanded cell."""

    func: Callable[..., Any]
    array: Any
    grid: CellGrid
    kwargs: dict[str, Any]
    operation: str
    origin: Point2I = field(default_factory=lambda: Point2I(0, 0))
    companions: dict[str, Any] = field(default_factory=dict)
    geometry: tuple[str, ...] = ()
    grid_indices: np.ndarray | None = None
    weighting: Weighting | None = None
    policy: FailurePolicy = field(default_factory=FailurePolicy)
    #: Cells per task: an int (at most that many neighbours), or "auto" (see `batches`).
    cells_per_task: int | str = "auto"
    extract = staticmethod(array_piece)
    with_variance = False

    @property
    def result_boxes(self) -> np.ndarray:
        """Where each cell's result lies: its core (a function's answer is cut to it)."""
        return self.grid.cells

    @builds_graph
    def batch_graph(
        self, name: str, batches: list[np.ndarray], direct_out: np.ndarray | SharedArrayRef | None = None
    ) -> dict:
        """One task per batch of cells (rows of the grid), each holding (or reading) its box of every array.

        With ``direct_out`` (the output array, on a shared-memory scheduler, for cells that tile
        the image: `writes_directly`), each cell writes its all-finite core straight into it; a
        `SharedArrayRef` (a same-host cluster's output in shared memory) is mapped by each batch.
        """
        sources = [PlaneSource(self.array, self.origin)]
        sources += [PlaneSource(a, self.origin) for a in self.companions.values()]
        graph: dict[Any, Any] = {}
        for source in sources:
            graph.update(source.graph())
        template = ArrayCellTask(
            func=self.func,
            index=-1,
            box0=_UNSET_BOX,
            box1=_UNSET_BOX,
            operation=self.operation,
            kwargs=self.kwargs,
            geometry=self.geometry,
            companion_names=tuple(self.companions),
            policy=self.policy,
        )
        cell_batches, boxes = _batches(run_array_cell, template, self.grid, batches, self.grid_indices)
        if isinstance(direct_out, SharedArrayRef):  # a same-host cluster: the workers map it themselves
            for batch in cell_batches:
                batch.shared_out = (direct_out, (self.origin.getX(), self.origin.getY()))
        elif direct_out is not None:
            for batch in cell_batches:
                batch.outs = cores_of(direct_out, batch.cells, self.origin)
        # Every source's cuts in one call each (slice bounds for all the batch boxes at once).
        cuts = zip(*(source.cell_cuts(boxes) for source in sources))
        graph.update(
            ((name, number), (run_batch, batch, *batch_cuts))
            for number, (batch, batch_cuts) in enumerate(zip(cell_batches, cuts))
        )
        return graph

    def cores_disjoint(self) -> bool:
        """Whether no two cells share a pixel (then each pixel's ``copy`` comes from one cell only)."""
        return cells_disjoint(self.grid.cells)

    def writes_directly(self) -> bool:
        """Whether each cell may write its own core into a shared output (see `graph`).

        True when the cells tile the image: no two share a pixel and together they cover it, so
        every output pixel is one cell's value; and the stitch is a ``copy``, a ``sum`` or an
        unweighted ``average`` (a weighted one divides ``w x`` by ``w``, which need not give ``x``).
        """
        if self.operation not in IMAGE_REDUCE_OPERATIONS or self.weighting is not None or not len(self.grid):
            return False
        cells, bbox = self.grid.cells, self.bbox
        inside = (
            cells[:, 0].min() >= bbox.getMinX()
            and cells[:, 1].min() >= bbox.getMinY()
            and cells[:, 2].max() <= bbox.getMaxX()
            and cells[:, 3].max() <= bbox.getMaxY()
        )
        areas = (cells[:, 2] - cells[:, 0] + 1) * (cells[:, 3] - cells[:, 1] + 1)
        return bool(inside) and int(areas.sum()) == bbox.getArea() and self.cores_disjoint()

    def objects_to_import(self) -> list[Any]:
        """The user's objects (function, weight function) whose code the workers must be able to import."""
        return _with_weight_function(self.func, self.weighting)

    @property
    def bbox(self) -> Box2I:
        """The bounding box of the input (and output)."""
        height, width = self.array.shape
        return Box2I(self.origin, Point2I(self.origin.x + width - 1, self.origin.y + height - 1))

    def input_mask(self) -> PlaneSource | None:
        """Plain arrays have no mask."""
        return None

    @property
    def lazy(self) -> bool:
        """Whether the input is a Dask array."""
        return PlaneSource(self.array, self.origin).lazy
