"""Cell functions for the map_reduce tests (a module of its own so worker processes can import them)."""

from __future__ import annotations

import math
import threading

import numpy as np
from scipy import ndimage

CALLS: list[tuple[int, int]] = []
_LOCK = threading.Lock()


def minus_min_with_holes(cell):
    """Depends on the whole expanded cell (its minimum) and pokes NaN holes that move with it.

    Overlapping cells disagree and invalidate different pixels, so copy, sum and average all
    differ; ``nanmin`` is exact whatever the memory layout, so results are bitwise reproducible.
    """
    out = cell - np.nanmin(cell)
    out[::7, ::5] = np.nan
    return out


def core_only(cell, cell_box, expanded_box):
    """Return just the cell (not the expanded cell): the engine accepts either shape."""
    return minus_min_with_holes(cell)[cell_box.slices(expanded_box.getBegin())]


def affine(cell, scale=2.0, offset=1.0):
    """Scale and offset, pointwise: any grid gives exactly ``scale * image + offset``."""
    return cell * scale + offset


def smooth(cell, sigma):
    """Gaussian-filter the cell with scipy's default truncation (4 sigma), reflecting at the edges."""
    return ndimage.gaussian_filter(cell, sigma, truncate=4.0)


def geometry(cell, cell_box, expanded_box, grid_index):
    """Report what the cell was given (for reduce='none')."""
    return cell_box, expanded_box, grid_index, cell.shape, bool(cell.flags.writeable)


def minus_companion(cell, other, factor=1.0):
    """Subtract a companion array, cut with the same box."""
    return cell - factor * other


def smooth_constant(cell, cell_box):
    """Return a constant per cell, from a smooth function of the cell centre: windows should blend it."""
    centre = cell_box.getCenter()
    return np.full(cell.shape, np.sin(centre.x / 15.0) + np.cos(centre.y / 11.0))


def is_odd(cell):
    """Return a boolean array (map_reduce converts it to the output dtype)."""
    return cell % 2 == 1


def counted_double(cell):
    """Double the cell and record the call (to prove that lazy results run nothing)."""
    with _LOCK:
        CALLS.append(cell.shape)
    return cell * 2.0


def cell_sum(cell):
    """Return a scalar per cell, for reduce='none': the exactly rounded sum of its finite pixels.

    ``math.fsum`` does not depend on memory layout, so every scheduler gives the same bits.
    """
    return math.fsum(cell[np.isfinite(cell)].tolist())


def fail_on_big(cell):
    """Raise on cells wider than 5 pixels."""
    if cell.shape[1] > 5:
        raise RuntimeError("too wide")
    return cell


def wrong_shape(cell):
    """Return a result that is neither the expanded cell's nor the cell's shape."""
    return cell[:-1]


def ones_weight(bbox, image, variance):
    """Weigh every pixel 1, like the uniform weighting."""
    return np.ones(image.shape)


def detect_stars(cell, variance):
    """The project's detector on one cell, positions in the cell's array (for reduce="catalog")."""
    from imagemapreduce.detect import find_sources

    return find_sources(cell, variance, threshold=5.0, sigma=1.5)


def two_columns_or_three(cell, grid_index):
    """A table whose columns depend on the cell: one cell adds a column the others lack."""
    columns = {"x": np.array([1.0]), "y": np.array([1.0]), "value": np.array([float(cell.sum())])}
    if tuple(grid_index) == (1, 0):
        columns["extra"] = np.array([1])
    return columns
