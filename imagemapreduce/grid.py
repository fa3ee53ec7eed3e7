"""Pure functions that lay the grid of cells and expanded cells over an image, and count its coverage.

These implement ``ImageMapReduceTask._generateGrid`` of LSST's ``ip_diffim`` exactly, vectorised
with numpy so that grids of 100,000 cells build in milliseconds. Nothing here knows about Tasks,
configs or Dask; the Task, the plain-array function and the stitcher all call these.

Coordinates: centroids are relative to the image's bbox begin; boxes are in parent coordinates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal, cast

import numpy as np

from ._gc_pause import gc_paused
from .geom import Box2I, Extent2I, Point2I

__all__ = [
    "AdjustGridOption",
    "CellGrid",
    "FWHM_PER_SIGMA",
    "GridTooLargeError",
    "MAX_GRID_CELLS",
    "MAX_PIXELS",
    "psf_fwhm",
    "rescale",
    "truncate_pixels",
    "grid_shape",
    "grid_centroids",
    "cell_boxes",
    "array_bbox",
    "regular_grid",
    "coverage_counts",
    "block_areas",
    "uncovered_pixels",
    "dropped_pixels",
    "boxes_from_array",
    "boxes_to_array",
]

AdjustGridOption = Literal["spacing", "size", "none"]

#: FWHM of a Gaussian in units of its sigma, 2 sqrt(2 ln 2).
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))

#: The largest cell size, grid step, border or centroid, in pixels: LSST's `Box2I` holds 32-bit
#: coordinates, and within this bound every box computation fits an int64 with room to spare.
MAX_PIXELS = 2**31 - 1

#: The most cells one grid may have. Each cell becomes a Dask task and two `Box2I`, so beyond this
#: a grid would take minutes and gigabytes before any cell ran (4096 x 4096 images with 1-pixel
#: cells stay below it).
MAX_GRID_CELLS = 20_000_000


class GridTooLargeError(ValueError):
    """A grid would have more than `MAX_GRID_CELLS` cells; raised before any of it is built.

    Parameters
    ----------
    shape : (`int`, `int`)
        Columns and rows of the grid, (x, y).
    bbox : `Box2I`
        The image it would cover.
    fix : `str`
        What the caller can change, in its own parameter names.
    """

    def __init__(self, shape: tuple[int, int], bbox: Box2I, fix: str | None = None):
        fix = fix or "increase cellSizeX/cellSizeY or gridStepX/gridStepY"
        self.shape = shape
        self.bbox = bbox
        nx, ny = shape
        super().__init__(
            f"the grid over the {bbox.getWidth()} x {bbox.getHeight()} image would have {nx * ny:,} cells "
            f"({nx} x {ny}), more than the {MAX_GRID_CELLS:,} allowed (each cell is a task): {fix}"
        )


@dataclass(frozen=True)
class CellGrid:
    """A grid: cells and expanded cells as ``(n, 4)`` int arrays of ``(minX, minY, maxX, maxY)``.

    Row ``i`` of `cells` and `expanded` belong together; rows are in grid order (x-major).

    A grid laid from centroids by `cell_boxes` also records what LSST's area rule did: `keep`,
    one bool per centroid (True where its pair was kept), and `dropped`, the dropped cells that
    cover a pixel (``(m, 4)``; each is a single pixel). Both are None for a grid made from boxes.

    The arrays are fields. The same boxes as lists of `Box2I`, named as the Task's attributes,
    are the properties `boxes0` and `boxes1`: built on first access (one Python object per row,
    which takes a while for a big grid), then shared.
    """

    cells: np.ndarray
    expanded: np.ndarray
    keep: np.ndarray | None = field(default=None, compare=False, repr=False)
    dropped: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __len__(self) -> int:
        return len(self.cells)

    @property
    def boxes0(self) -> list[Box2I]:
        """The cells as a list of `Box2I` (made once, then shared: treat it as read-only)."""
        return self._boxes[0]

    @property
    def boxes1(self) -> list[Box2I]:
        """The expanded cells as a list of `Box2I` (made once, then shared: treat it as read-only)."""
        return self._boxes[1]

    @cached_property
    def _boxes(self) -> tuple[list[Box2I], list[Box2I]]:
        return boxes_from_array(self.cells), boxes_from_array(self.expanded)


def psf_fwhm(psf: Any) -> float:
    """Return the FWHM of a PSF as LSST does: determinant radius at the average position x 2 sqrt(2 ln 2)."""
    shape = psf.computeShape(psf.getAveragePosition())
    return float(shape.getDeterminantRadius()) * FWHM_PER_SIGMA


def rescale(value: float, fwhm: float | None, name: str, minimum: int | None = None) -> int:
    """Scale a grid parameter by the FWHM (if given) and round half to even, as ``np.rint`` does.

    ``minimum`` is the smallest allowed result in pixels. By default it is 1 for cell sizes and
    grid steps (LSST would divide by zero or lay an empty grid) and 0 for borders (``name``
    starting with ``borderSize``): LSST accepts a border that rounds to 0, the expanded cell is
    then the cell itself.
    """
    if minimum is None:
        minimum = 0 if name.startswith("borderSize") else 1
    hint = f" (scaled by the PSF FWHM {fwhm:.3g})" if fwhm is not None else ""
    scaled = _checked_pixels(np.rint(value * fwhm if fwhm is not None else value), name, f"{value}{hint}")
    if scaled < minimum:
        raise ValueError(
            f"{name} = {value}{hint} rounds to {scaled} pixels; it must be at least {minimum} "
            f"pixel{'s' if minimum != 1 else ''}. "
            f"Increase {name}" + (" or set scaleByFwhm=False" if fwhm is not None else "")
        )
    return scaled


def truncate_pixels(value: float, name: str) -> int:
    """Truncate a size to whole pixels as LSST's ``int(config.cellSizeX)`` does, refusing NaN, inf and huge values."""
    return _checked_pixels(value, name, f"{value}")


def _checked_pixels(value: float, name: str, shown: str) -> int:
    """``int(value)``, or a `ValueError` naming ``name`` if it is not finite or beyond `MAX_PIXELS`.

    ``int()`` of NaN or inf raises a message that names no parameter, and a huge value would
    overflow the int64 box arithmetic (or silently wrap) further on.
    """
    if not math.isfinite(value):
        raise ValueError(f"{name} = {shown} is not a finite number of pixels; set {name} to a finite value")
    if abs(value) > MAX_PIXELS:
        raise ValueError(f"{name} = {shown} is beyond the {MAX_PIXELS} pixels a box can hold; decrease {name}")
    return int(value)


def _axis_layout(length: int, cell: int, step: int, adjust: AdjustGridOption) -> tuple[int, int, int, int]:
    """Along one axis: the number of centres, the first centre, the spacing and the cell size to use.

    For ``'spacing'`` the spacing is not used (the centres are re-spaced to fit); for the others
    the centres are ``first + spacing * k``, the values of LSST's ``np.arange``.
    """
    if adjust == "spacing":
        # Re-space the centres so that cells fit the image exactly.
        return length // cell + 1, cell // 2, 0, cell
    if adjust == "size":
        # The cell becomes the grid step, plus one pixel so that no gaps remain.
        first, cell = step // 2, step + 1
    elif adjust == "none":
        first = cell // 2
    else:
        raise ValueError(f"adjustGridOption must be one of 'spacing', 'size', 'none'; got {adjust!r}")
    # len(np.arange(first, length + first, step)), without making it
    return max(0, -(-length // step)), first, step, cell


def _axis_centroids(length: int, layout: tuple[int, int, int, int]) -> np.ndarray:
    """The centres along one axis, relative to the box begin, for `_axis_layout`'s answer."""
    count, first, step, cell = layout
    if step == 0:
        return np.linspace(first, length - cell // 2, count)
    return first + step * np.arange(count, dtype=np.int64)


def grid_shape(
    bbox: Box2I, cell_size: tuple[int, int], grid_step: tuple[int, int], adjust: AdjustGridOption
) -> tuple[int, int]:
    """The number of grid columns and rows, (x, y), that `grid_centroids` would lay, without laying them."""
    return (
        _axis_layout(bbox.getWidth(), cell_size[0], grid_step[0], adjust)[0],
        _axis_layout(bbox.getHeight(), cell_size[1], grid_step[1], adjust)[0],
    )


def grid_centroids(
    bbox: Box2I,
    cell_size: tuple[int, int],
    grid_step: tuple[int, int],
    adjust: AdjustGridOption,
    *,
    fix: str | None = None,
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Centroids of a regular grid over ``bbox``, x-major, and the cell size to use with them.

    Parameters
    ----------
    bbox : `Box2I`
        The image's bounding box.
    cell_size, grid_step : `tuple` [`int`, `int`]
        Cell size and grid step in pixels, (x, y), already rescaled and rounded.
    adjust : {'spacing', 'size', 'none'}
        LSST's ``adjustGridOption``.
    fix : `str`, optional
        How to make the grid smaller, in the caller's parameter names, for `GridTooLargeError`.

    Returns
    -------
    cx, cy : `numpy.ndarray`
        Centroids relative to the bbox begin, every y for the first x, then the next x.
    cell_size : `tuple` [`int`, `int`]
        The cell size, changed by ``adjust='size'``.

    Raises
    ------
    GridTooLargeError
        If the grid would have more than `MAX_GRID_CELLS` cells (checked before anything is built).
    """
    x_layout = _axis_layout(bbox.getWidth(), cell_size[0], grid_step[0], adjust)
    y_layout = _axis_layout(bbox.getHeight(), cell_size[1], grid_step[1], adjust)
    if x_layout[0] * y_layout[0] > MAX_GRID_CELLS:
        raise GridTooLargeError((x_layout[0], y_layout[0]), bbox, fix)
    xs, cell_x = _axis_centroids(bbox.getWidth(), x_layout), x_layout[3]
    ys, cell_y = _axis_centroids(bbox.getHeight(), y_layout), y_layout[3]
    cx = np.repeat(np.asarray(xs, dtype=float), len(ys))
    cy = np.tile(np.asarray(ys, dtype=float), len(xs))
    return cx, cy, (cell_x, cell_y)


def _clip(lo: np.ndarray, hi: np.ndarray, begin: int, end_inclusive: int) -> tuple[np.ndarray, np.ndarray]:
    return np.maximum(lo, begin), np.minimum(hi, end_inclusive)


def _force_even(
    lo: np.ndarray, hi: np.ndarray, begin: int, maximum: int, nonempty: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Grow odd-sized intervals by one pixel, up (right) if possible, else down (left), as LSST does."""
    lo, hi = lo.copy(), hi.copy()
    # An empty box (in either axis) has even (zero) dimensions in LSST, so it is left alone.
    odd = nonempty & ((hi - lo + 1) % 2 == 1)
    hi[odd] = np.minimum(hi[odd] + 1, maximum)
    still = odd & ((hi - lo + 1) % 2 == 1)
    lo[still] = np.maximum(lo[still] - 1, begin)
    if np.any(still & ((hi - lo + 1) % 2 == 1)):
        raise RuntimeError("Cannot make bounding box even-sized. Probably too big.")
    return lo, hi


def cell_boxes(
    bbox: Box2I,
    cx: np.ndarray,
    cy: np.ndarray,
    cell_size: tuple[int, int],
    border: tuple[int, int],
    force_even_sized: bool = False,
) -> CellGrid:
    """Cells centred on the centroids and their expanded cells, clipped to ``bbox``.

    A cell starts at ``begin + floor(centre) - size // 2``; its expanded cell is the cell grown by
    the border on every side. Both are clipped to the image. A pair is kept only when both boxes
    have an area larger than one pixel; the grid's `CellGrid.keep` and `CellGrid.dropped` say
    which were dropped.

    Raises
    ------
    ValueError
        If the centroids differ in length, or one is NaN, infinite or beyond `MAX_PIXELS`.
    """
    cx = np.asarray(cx, dtype=float)
    cy = np.asarray(cy, dtype=float)
    if cx.shape != cy.shape:
        raise ValueError(f"cellCentroidsX and cellCentroidsY must have equal length; got {cx.size} and {cy.size}")
    for name, centres in (("cellCentroidsX", cx), ("cellCentroidsY", cy)):
        _check_centroids(centres, name)
    (w, h), (bx, by) = cell_size, border
    if w <= 0 or h <= 0:
        # An empty cell (LSST's Box2I with a non-positive extent) stays empty when grown, so its
        # expanded cell is empty too and no pair is kept, even with force_even_sized.
        empty = np.zeros((0, 4), dtype=np.int64)
        return CellGrid(empty, empty.copy(), np.zeros(cx.shape, dtype=bool), empty.copy())
    x0 = bbox.getBeginX() + np.floor(cx).astype(np.int64) - w // 2
    y0 = bbox.getBeginY() + np.floor(cy).astype(np.int64) - h // 2
    x1, y1 = x0 + w - 1, y0 + h - 1
    limits = (bbox.getMinX(), bbox.getMaxX(), bbox.getMinY(), bbox.getMaxY())
    cells = _clipped_box_array(x0, y0, x1, y1, limits, force_even_sized)
    expanded = _clipped_box_array(x0 - bx, y0 - by, x1 + bx, y1 + by, limits, force_even_sized)
    keep = (_areas(cells) > 1) & (_areas(expanded) > 1)
    dropped = cells[~keep]
    return CellGrid(cells[keep], expanded[keep], keep, dropped[_areas(dropped) > 0])


def array_bbox(shape: tuple[int, int]) -> Box2I:
    """The bbox of an array of ``shape`` (rows, cols) in array indices: pixel ``[0, 0]`` is ``(0, 0)``."""
    return Box2I(Point2I(0, 0), Extent2I(shape[1], shape[0]))


def regular_grid(
    shape: tuple[int, int],
    cell: tuple[int, int],
    step: tuple[int, int],
    border: tuple[int, int],
    adjust: str,
    force_even_sized: bool,
) -> tuple[CellGrid, np.ndarray]:
    """LSST's regular grid over an array of ``shape``, and each kept cell's ``(ix, iy)`` index.

    Parameters
    ----------
    shape : `tuple` [`int`, `int`]
        The array's shape, (rows, cols).
    cell, step, border : `tuple` [`int`, `int`]
        Cell size, grid step and border in pixels, (x, y).
    adjust : {'spacing', 'size', 'none'}
        LSST's ``adjustGridOption`` (checked by the caller).
    force_even_sized : `bool`
        Grow odd-sized boxes to even sizes, as LSST's ``forceEvenSized``.

    Returns
    -------
    grid : `CellGrid`
        The kept cells, in array indices (pixel ``[0, 0]`` is ``(0, 0)``).
    indices : `numpy.ndarray`
        ``(n, 2)``: the grid column and row of each kept cell.
    """
    bbox = array_bbox(shape)
    option = cast(AdjustGridOption, adjust)  # checked against the allowed options by the caller
    cx, cy, cell_xy = grid_centroids(bbox, cell, step, option, fix="increase cell_size or grid_step")
    grid = cell_boxes(bbox, cx, cy, cell_xy, border, force_even_sized)
    ny = grid_shape(bbox, cell, step, option)[1]
    index = np.arange(len(cx))
    indices = np.stack([index // ny, index % ny], axis=1)  # grid order is x-major
    return grid, indices[grid.keep]


def _check_centroids(centres: np.ndarray, name: str) -> None:
    """Refuse NaN, infinite or huge centroids (``floor(...).astype(int64)`` would turn them into garbage)."""
    bad = ~np.isfinite(centres) | (np.abs(centres) > MAX_PIXELS)
    if np.any(bad):
        index = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{name}[{index}] = {float(centres[index])!r}: centroids must be finite pixel positions within "
            f"+/-{MAX_PIXELS} of the bbox begin; fix or drop that entry"
        )


def _clipped_box_array(x0, y0, x1, y1, limits, force_even_sized) -> np.ndarray:
    min_x, max_x, min_y, max_y = limits
    x0, x1 = _clip(x0, x1, min_x, max_x)
    y0, y1 = _clip(y0, y1, min_y, max_y)
    if force_even_sized:
        nonempty = (x1 >= x0) & (y1 >= y0)
        x0, x1 = _force_even(x0, x1, min_x, max_x, nonempty)
        y0, y1 = _force_even(y0, y1, min_y, max_y, nonempty)
    return np.stack([x0, y0, x1, y1], axis=1).astype(np.int64).reshape(-1, 4)


def _areas(boxes: np.ndarray) -> np.ndarray:
    width = np.maximum(boxes[:, 2] - boxes[:, 0] + 1, 0)
    height = np.maximum(boxes[:, 3] - boxes[:, 1] + 1, 0)
    # A box empty in one axis has zero area even when the other axis is "negative".
    return np.where((width > 0) & (height > 0), width * height, 0)


def coverage_counts(region: Box2I, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """How many of ``boxes`` cover each pixel of ``region``, by coordinate compression.

    Parameters
    ----------
    region : `Box2I`
        The pixels to count over.
    boxes : `numpy.ndarray`
        An ``(n, 4)`` int array of ``(minX, minY, maxX, maxY)`` (see `boxes_to_array`), in the
        region's coordinates. Boxes may reach outside the region or be empty.

    Returns
    -------
    ys, xs : `numpy.ndarray`
        Block edges (int64, parent coordinates, ends excluded), the region's begin and end included.
    counts : `numpy.ndarray`
        ``counts[i, j]`` boxes cover the pixels of rows ``ys[i]`` to ``ys[i + 1]`` and columns
        ``xs[j]`` to ``xs[j + 1]``.

    Notes
    -----
    The cost depends on the number of boxes, not on the number of pixels. Only the edges of boxes
    that overlap the region, clipped to it, become block edges.
    """
    boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    # Half-open edges clipped to the region; a box that shares no pixel with it is left out.
    x0, x1 = np.maximum(boxes[:, 0], region.getBeginX()), np.minimum(boxes[:, 2] + 1, region.getEndX())
    y0, y1 = np.maximum(boxes[:, 1], region.getBeginY()), np.minimum(boxes[:, 3] + 1, region.getEndY())
    inside = (x1 > x0) & (y1 > y0)
    x0, x1, y0, y1 = x0[inside], x1[inside], y0[inside], y1[inside]
    xs = np.unique(np.concatenate([[region.getBeginX(), region.getEndX()], x0, x1]))
    ys = np.unique(np.concatenate([[region.getBeginY(), region.getEndY()], y0, y1]))
    j0, j1 = np.searchsorted(xs, x0), np.searchsorted(xs, x1)
    i0, i1 = np.searchsorted(ys, y0), np.searchsorted(ys, y1)
    # A difference array: +1 at each box's first block, -1 past its ends; two running sums fill it in.
    steps = np.zeros((len(ys), len(xs)), dtype=np.int64)
    for rows, cols, sign in ((i0, j0, 1), (i0, j1, -1), (i1, j0, -1), (i1, j1, 1)):
        np.add.at(steps, (rows, cols), sign)
    counts = steps.cumsum(axis=0).cumsum(axis=1)[:-1, :-1]
    return ys, xs, counts


def block_areas(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """The number of pixels in each block of a `coverage_counts` answer, shaped like its ``counts``."""
    return np.outer(np.diff(ys), np.diff(xs))


def uncovered_pixels(cells: np.ndarray, bbox: Box2I) -> int:
    """How many pixels of ``bbox`` no cell of ``cells`` (an ``(n, 4)`` array) covers (see `coverage_counts`)."""
    ys, xs, counts = coverage_counts(bbox, cells)
    return int(block_areas(ys, xs)[counts == 0].sum())


def dropped_pixels(grid: CellGrid, bbox: Box2I) -> int:
    """How many pixels of ``bbox`` only cells that LSST's area rule dropped would have covered.

    Zero for a grid made from boxes (it records no dropped cells).
    """
    if grid.dropped is None or len(grid.dropped) == 0:
        return 0
    return uncovered_pixels(grid.cells, bbox) - uncovered_pixels(np.concatenate([grid.cells, grid.dropped]), bbox)


@gc_paused()  # many lasting boxes, no garbage (see `imagemapreduce._gc_pause`)
def boxes_from_array(boxes: np.ndarray) -> list[Box2I]:
    """Turn an ``(n, 4)`` array of ``(minX, minY, maxX, maxY)`` into a list of `Box2I`."""
    out = []
    for x0, y0, x1, y1 in boxes.tolist():
        box = Box2I.__new__(Box2I)
        box.__setstate__((x0, y0, x1, y1))
        out.append(box)
    return out


def boxes_to_array(boxes: list[Box2I]) -> np.ndarray:
    """Turn a list of `Box2I` into an ``(n, 4)`` int array of ``(minX, minY, maxX, maxY)``."""
    if not boxes:
        return np.zeros((0, 4), dtype=np.int64)
    return np.array([(b.getMinX(), b.getMinY(), b.getMaxX(), b.getMaxY()) for b in boxes], dtype=np.int64).reshape(
        -1, 4
    )
