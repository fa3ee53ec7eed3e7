"""What to map: an exposure by an `ImageMapper`, or plain arrays by a function.

A plan knows its inputs and builds the cell tasks; `graph` adds the region tasks and runs them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..geom import Box2I, Point2I
from ..grid import CellGrid
from ..image import Exposure
from ..weights import Weighting
from .cells import ArrayCellTask, CellTask, FailurePolicy, array_piece, exposure_piece, run_array_cell, run_cell
from .sources import CompanionSource, ExposureSource, PlaneSource

__all__ = ["ExposurePlan", "ArrayPlan", "cells_disjoint"]


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


@dataclass
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
    # Class attributes, not fields: how the stitcher reads this plan's results.
    extract = staticmethod(exposure_piece)
    with_variance = True

    def cell_graph(self, name: str, direct_out: Any = None) -> dict[Any, Any]:
        """One task per cell, each holding (or reading) its expanded box only.

        ``direct_out`` is for plain arrays only (an exposure mapper's result box is its own choice).
        """
        source = ExposureSource(self.exposure)
        companions = [CompanionSource(c) for c in self.companions.values()]
        graph = source.graph()
        for companion in companions:
            graph.update(companion.graph())
        full_bbox = self.exposure.getBBox()
        names = tuple(self.companions)
        boxes0, boxes1 = self.grid.boxes0(), self.grid.boxes1()
        for index, (box0, box1) in enumerate(zip(boxes0, boxes1)):
            task = CellTask(
                self.mapper, index, box0, box1, full_bbox, self.do_clone, self.return_sub_images,
                self.operation, self.kwargs, self.policy, names,
            )  # fmt: skip
            graph[(name, index)] = (run_cell, task, source.cut(box1), *(c.cut(box1) for c in companions))
        return graph

    @property
    def bbox(self) -> Box2I:
        """The bounding box of the input (and output)."""
        return self.exposure.getBBox()

    def code(self) -> list[Any]:
        """The objects whose code the workers must be able to import."""
        return [self.mapper] + ([self.weighting.function] if self.weighting and self.weighting.function else [])

    def input_mask(self) -> PlaneSource | None:
        """The input mask, which every output region starts from."""
        return PlaneSource(self.exposure.mask.array, self.exposure.getXY0())

    @property
    def lazy(self) -> bool:
        """Whether any input plane is a Dask array (then regions read the input mask themselves)."""
        return ExposureSource(self.exposure).lazy


@dataclass
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
    extract = staticmethod(array_piece)
    with_variance = False

    def cell_graph(self, name: str, direct_out: np.ndarray | None = None) -> dict[Any, Any]:
        """One task per cell, each holding (or reading) its expanded box of every array only.

        With ``direct_out`` (the output array, on a shared-memory scheduler, for a ``copy`` whose
        cells do not overlap), each cell writes its valid core straight into it.
        """
        sources = [PlaneSource(self.array, self.origin)]
        sources += [PlaneSource(a, self.origin) for a in self.companions.values()]
        graph: dict[Any, Any] = {}
        for source in sources:
            graph.update(source.graph())
        names = tuple(self.companions)
        indices = self.grid_indices.tolist() if self.grid_indices is not None else None
        for index, (box0, box1) in enumerate(zip(self.grid.boxes0(), self.grid.boxes1())):
            task = ArrayCellTask(
                self.func, index, box0, box1, self.operation, self.kwargs, self.geometry,
                tuple(indices[index]) if indices is not None else None, names, self.policy,
                None if direct_out is None else direct_out[box0.slices(self.origin)],
            )  # fmt: skip
            graph[(name, index)] = (run_array_cell, task, *(s.cut(box1) for s in sources))
        return graph

    def cores_disjoint(self) -> bool:
        """Whether no two cells share a pixel (then each pixel's ``copy`` comes from one cell only)."""
        return cells_disjoint(self.grid.cells)

    def code(self) -> list[Any]:
        """The objects whose code the workers must be able to import."""
        return [self.func] + ([self.weighting.function] if self.weighting and self.weighting.function else [])

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
