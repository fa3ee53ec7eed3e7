"""Where a cell's pixels come from: a view of an in-memory array, or the blocks of a Dask array.

A cell task never receives a whole image. For a numpy plane the graph holds a read-only view of
the cell's expanded box (a view costs nothing in threads; pickling it for another process copies
just the box). For a Dask plane the cell task depends on the few blocks that overlap its box and
cuts the box out of them when it runs, so nothing is read before it is needed and the graph
holds no pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .._lazy import is_dask_array
from ..geom import Box2I, Point2I
from ..image import Exposure, Image, Mask, MaskedImage
from .shared_memory import SharedArrayCut, SharedArrayRef

__all__ = [
    "PlaneSource",
    "ExposureSource",
    "LazyCut",
    "ArrayCut",
    "DEFERRED_CUTS",
    "materialize",
    "read_only",
    "local_corners",
    "CompanionSource",
    "companion_images",
    "is_dask_array",
    "assemble_box",
]


def local_corners(boxes: np.ndarray, origin: Point2I) -> list[list[int]]:
    """Box corners ``(minX, minY, maxX, maxY)`` of an ``(n, 4)`` array, relative to ``origin``, as ints."""
    shift = np.array([origin.x, origin.y, origin.x, origin.y])
    return (np.asarray(boxes, dtype=np.int64).reshape(-1, 4) - shift).tolist()


@dataclass(frozen=True)
class BoxFromBlocks:
    """How to cut one box out of the blocks of a Dask array that overlap it."""

    shape: tuple[int, int]
    # (row slice in the box, column slice in the box, row slice in the block, column slice in the block)
    pieces: tuple[tuple[slice, slice, slice, slice], ...]
    dtype: Any


def assemble_box(spec: BoxFromBlocks, blocks: list[np.ndarray]) -> np.ndarray:
    """Copy the overlapping parts of ``blocks`` into one array covering the box."""
    if len(blocks) == 1:
        rows, cols, brows, bcols = spec.pieces[0]
        block = np.asarray(blocks[0])
        if block[brows, bcols].shape == spec.shape:
            return block[brows, bcols]
    out = np.empty(spec.shape, dtype=spec.dtype)
    for (rows, cols, brows, bcols), block in zip(spec.pieces, blocks):
        out[rows, cols] = np.asarray(block)[brows, bcols]
    return out


class PlaneSource:
    """One 2-d plane (numpy or Dask) whose pixel ``[0, 0]`` sits at parent coordinates ``origin``."""

    def __init__(self, array: Any, origin: Point2I):
        if array.ndim != 2:
            raise ValueError(f"image planes must be 2-d, got shape {array.shape}")
        self.array = array
        self.origin = Point2I(origin)
        self.lazy = is_dask_array(array)
        if self.lazy:
            self._row_edges = np.concatenate([[0], np.cumsum(array.chunks[0])])
            self._col_edges = np.concatenate([[0], np.cumsum(array.chunks[1])])
            self._name = array.name

    def graph(self) -> dict:
        """The Dask graph this plane's blocks come from (empty for numpy)."""
        if not self.lazy:
            return {}
        return dict(self.array.__dask_graph__())

    def cell_cuts(self, boxes: np.ndarray) -> list[Any]:
        """`cut` for every row of an ``(n, 4)`` box array, in a form cheap to make by the thousand.

        In-memory planes give `ArrayCut` objects (the views are made when the cells run), from
        slice bounds computed for all the boxes at once; Dask planes give block tasks.
        """
        local = local_corners(boxes, self.origin)
        if self.lazy:
            return [self._cut_lazy(slice(y0, y1 + 1), slice(x0, x1 + 1)) for x0, y0, x1, y1 in local]
        array = self.array
        return [ArrayCut(array, slice(y0, y1 + 1), slice(x0, x1 + 1)) for x0, y0, x1, y1 in local]

    def cut(self, box: Box2I) -> Any:
        """A read-only view of ``box`` (numpy), or a task that assembles it from blocks (Dask)."""
        rows, cols = box.slices(self.origin)
        if not self.lazy:
            view = self.array[rows, cols]
            if isinstance(view, np.ndarray):
                view.flags.writeable = False
            return view
        return self._cut_lazy(rows, cols)

    def _cut_lazy(self, rows: slice, cols: slice) -> tuple:
        r0, r1, c0, c1 = rows.start, rows.stop, cols.start, cols.stop
        bi0 = int(np.searchsorted(self._row_edges, r0, side="right")) - 1
        bi1 = int(np.searchsorted(self._row_edges, r1, side="left")) - 1
        bj0 = int(np.searchsorted(self._col_edges, c0, side="right")) - 1
        bj1 = int(np.searchsorted(self._col_edges, c1, side="left")) - 1
        pieces, keys = [], []
        for bi in range(bi0, bi1 + 1):
            top, bottom = self._row_edges[bi], self._row_edges[bi + 1]
            lo_r, hi_r = max(r0, top), min(r1, bottom)
            for bj in range(bj0, bj1 + 1):
                left, right = self._col_edges[bj], self._col_edges[bj + 1]
                lo_c, hi_c = max(c0, left), min(c1, right)
                pieces.append(
                    (
                        slice(int(lo_r - r0), int(hi_r - r0)),
                        slice(int(lo_c - c0), int(hi_c - c0)),
                        slice(int(lo_r - top), int(hi_r - top)),
                        slice(int(lo_c - left), int(hi_c - left)),
                    )
                )
                keys.append((self._name, bi, bj))
        spec = BoxFromBlocks((r1 - r0, c1 - c0), tuple(pieces), self.array.dtype)
        return (assemble_box, spec, keys)


@dataclass(frozen=True)
class ExposureParts:
    """What an exposure is besides its pixels: enough to rebuild a sub-exposure on a worker."""

    cls: type
    bbox: Box2I
    psf: Any
    wcs: Any
    planes: dict[str, int]


def build_exposure(parts: ExposureParts, image: np.ndarray, mask: np.ndarray, variance: np.ndarray) -> Exposure:
    """Wrap the planes of one box as a read-only exposure."""
    xy0 = parts.bbox.getBegin()
    for array in (image, mask, variance):
        if isinstance(array, np.ndarray) and array.flags.writeable and array.base is not None:
            array.flags.writeable = False
    mi = MaskedImage(Image(image, xy0=xy0), Mask(mask, xy0=xy0, planeDict=dict(parts.planes)), Image(variance, xy0=xy0))
    return parts.cls(mi, psf=parts.psf, wcs=parts.wcs)


def _same(obj: Any) -> Any:
    return obj


def _with_own_planes(mask: Mask) -> Mask:
    """The same pixels, with a copy of the plane dictionary."""
    return type(mask)(mask.array, xy0=mask.getXY0(), planeDict=mask.getMaskPlaneDict())


def read_only(image: Any) -> Any:
    """Make the numpy planes of an Exposure, MaskedImage or Image read-only (in place) and return it.

    Anything else is returned as it is.
    """
    planes: tuple[Image | Mask, ...]
    if isinstance(image, (Exposure, MaskedImage)):
        planes = (image.image, image.mask, image.variance)
    elif isinstance(image, Image):
        planes = (image,)
    else:
        return image
    for plane in planes:
        if isinstance(plane.array, np.ndarray):
            plane.array.flags.writeable = False
    return image


class LazyCut:
    """A box of an in-memory image container, turned into a read-only view only when a cell runs.

    Building thousands of views while the graph is made would cost more than the graph itself;
    a cut is two references. Pickled (for another process), it becomes the view itself, which
    carries only the box's pixels.
    """

    __slots__ = ("image", "box")

    def __init__(self, image: Any, box: Box2I):
        self.image, self.box = image, box

    def materialize(self) -> Any:
        """The read-only view of the box, with its own copy of the mask planes."""
        view = self.image.subset(self.box)
        # A view shares its parent's plane dictionary: a mapper adding a plane to its cell would add
        # it to the caller's input, racing with other threads (a worker process has a copy anyway).
        if isinstance(view, Exposure):
            view.maskedImage.mask = _with_own_planes(view.mask)
        elif isinstance(view, MaskedImage):
            view.mask = _with_own_planes(view.mask)
        elif isinstance(view, Mask):
            view = _with_own_planes(view)
        return read_only(view)

    def __reduce__(self) -> tuple[Any, tuple[Any]]:
        return (_same, (self.materialize(),))


class ArrayCut:
    """A box of an in-memory numpy plane, made into a read-only view only when a cell runs.

    The array counterpart of `LazyCut`: three references instead of a view object per cell
    while the graph is built; pickled, it becomes the box's pixels alone.
    """

    __slots__ = ("array", "rows", "cols")

    def __init__(self, array: np.ndarray, rows: slice, cols: slice):
        self.array, self.rows, self.cols = array, rows, cols

    def materialize(self) -> np.ndarray:
        """The read-only view of the box."""
        view = self.array[self.rows, self.cols]
        view.flags.writeable = False
        return view

    def __reduce__(self) -> tuple[Any, tuple[Any]]:
        return (_same, (self.materialize(),))


class SharedExposureCut:
    """A box of an in-memory exposure whose planes a same-host cluster reads from shared memory.

    The shared-memory `LazyCut` (see `imagemapreduce.engine.shared_memory`): the planes' segment
    references, what the exposure is besides its pixels (``parts``, whose box is the cut's), and
    the exposure's ``xy0``. Materialised, it is a read-only sub-exposure holding copies of the
    box's pixels, which never refer to the segments.
    """

    __slots__ = ("planes", "parts", "origin")

    def __init__(self, planes: tuple[SharedArrayRef, ...], parts: ExposureParts, origin: tuple[int, int]):
        self.planes, self.parts, self.origin = planes, parts, origin

    def materialize(self) -> Exposure:
        """The sub-exposure of the box, its pixels copied out of the segments."""
        rows, cols = self.parts.bbox.slices(Point2I(*self.origin))
        copies = [SharedArrayCut(ref, rows, cols).materialize() for ref in self.planes]
        return read_only(build_exposure(self.parts, *copies))

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (SharedExposureCut, (self.planes, self.parts, self.origin))


#: Cuts that become their pixels when a cell runs (or is pickled).
DEFERRED_CUTS = (LazyCut, ArrayCut, SharedArrayCut, SharedExposureCut)


def materialize(obj: Any) -> Any:
    """The view behind a `LazyCut` or an `ArrayCut`; anything else as it is."""
    return obj.materialize() if isinstance(obj, DEFERRED_CUTS) else obj


class ExposureSource:
    """The three planes of an exposure, cut per box (views in memory, block tasks when lazy)."""

    def __init__(self, exposure: Exposure):
        self.exposure = exposure
        origin = exposure.getXY0()
        self.planes = [PlaneSource(p.array, origin) for p in (exposure.image, exposure.mask, exposure.variance)]
        self.lazy = any(p.lazy for p in self.planes)

    def graph(self) -> dict:
        """The Dask graphs of any lazy planes."""
        graph: dict = {}
        for plane in self.planes:
            graph.update(plane.graph())
        return graph

    def cut(self, box: Box2I) -> Any:
        """A read-only sub-exposure of ``box`` (made when the cell runs), or a task that builds one from blocks."""
        if not self.lazy:
            return LazyCut(self.exposure, box)
        parts = ExposureParts(
            type(self.exposure),
            box,
            self.exposure.getPsf(),
            self.exposure.getWcs(),
            self.exposure.mask.getMaskPlaneDict(),
        )
        return (build_exposure, parts, *(plane.cut(box) for plane in self.planes))


class CompanionSource:
    """A companion image (Exposure, MaskedImage or Image) with the exposure's box, cut per cell."""

    def __init__(self, image: Any):
        self.image = image
        self._exposure = ExposureSource(image) if isinstance(image, Exposure) else None

    def graph(self) -> dict:
        """The Dask graphs of a lazy companion exposure's planes."""
        return self._exposure.graph() if self._exposure is not None else {}

    def cut(self, box: Box2I) -> Any:
        """A read-only view of the companion inside ``box`` (or a task building one)."""
        if self._exposure is not None:
            return self._exposure.cut(box)
        return LazyCut(self.image, box)


def companion_images(kwargs: dict[str, Any], bbox: Box2I) -> dict[str, Any]:
    """The keyword arguments that are images to cut per cell; a clear error for a mismatched box."""
    found = {}
    for name, value in kwargs.items():
        if isinstance(value, (Exposure, MaskedImage, Image)):
            if value.getBBox() != bbox:
                raise ValueError(
                    f"companion image {name}= has bbox {value.getBBox()} but the exposure has {bbox}; give it "
                    "the same box, or set config.cutCompanions = False to pass it to every cell whole"
                )
            found[name] = value
    return found
