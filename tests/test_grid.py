"""Tests for the grid functions of `imagemapreduce.grid` on their own.

They must match LSST's serial ``_generateGrid`` loop (``grid_reference``) box for box, and the
coverage counts must match counting box by box.
"""

# ruff: noqa: D103 - test functions are named for what they check

from __future__ import annotations

import numpy as np
import pytest
from grid_reference import PROPERTY_SETTINGS, coverage, grid_params, outcome, reference_grid
from hypothesis import given
from hypothesis import strategies as st

from imagemapreduce.geom import Box2I, Extent2I, Point2I
from imagemapreduce.grid import (
    CellGrid,
    array_bbox,
    block_areas,
    boxes_from_array,
    boxes_to_array,
    cell_boxes,
    coverage_counts,
    dropped_pixels,
    grid_centroids,
    grid_shape,
    regular_grid,
    rescale,
    uncovered_pixels,
)


# -- grid functions on their own ---------------------------------------------------------------------
def test_rescale_rounds_half_to_even():
    values = (1.5, 2.5, 3.5, 10.49, 10.5, 11.5)
    assert [rescale(v, None, "cellSizeX") for v in values] == [2, 2, 4, 10, 10, 12]
    assert rescale(2.5, 2.0, "cellSizeX") == 5
    assert rescale(1.25, 2.0, "gridStepX") == 2  # 2.5 -> 2
    assert rescale(1.75, 2.0, "gridStepX") == 4  # 3.5 -> 4


def test_rescale_border_may_round_to_zero():
    assert rescale(0.4, None, "borderSizeX") == 0
    assert rescale(0.1, 4.0, "borderSizeY") == 0
    with pytest.raises(ValueError, match="cellSizeX"):
        rescale(0.4, None, "cellSizeX")
    with pytest.raises(ValueError, match="scaleByFwhm=False"):
        rescale(0.1, 4.0, "gridStepY")


@pytest.mark.parametrize("adjust", ["spacing", "size", "none"])
def test_grid_centroids_axis_rules(adjust):
    bbox = Box2I(Point2I(100, 37), Extent2I(50, 23))
    cx, cy, cell = grid_centroids(bbox, (8, 6), (5, 7), adjust)
    if adjust == "spacing":
        xs, ys = np.linspace(4, 46, 50 // 8 + 1), np.linspace(3, 20, 23 // 6 + 1)
        assert cell == (8, 6)
    elif adjust == "size":
        xs, ys = np.arange(2, 52, 5), np.arange(3, 26, 7)
        assert cell == (6, 8)
    else:
        xs, ys = np.arange(4, 54, 5), np.arange(3, 26, 7)
        assert cell == (8, 6)
    # x-major: every y for the first x, then the next x
    np.testing.assert_array_equal(cx, np.repeat(xs, len(ys)))
    np.testing.assert_array_equal(cy, np.tile(ys, len(xs)))


def test_grid_centroids_rejects_unknown_option():
    with pytest.raises(ValueError, match="adjustGridOption"):
        grid_centroids(Box2I(Point2I(0, 0), Extent2I(10, 10)), (4, 4), (4, 4), "bogus")  # type: ignore[arg-type]


def test_cell_boxes_rejects_unequal_centroids():
    with pytest.raises(ValueError, match="equal length"):
        cell_boxes(Box2I(Point2I(0, 0), Extent2I(10, 10)), np.zeros(3), np.zeros(2), (4, 4), (1, 1))


def test_box_array_round_trip():
    boxes = [Box2I(Point2I(1, 2), Extent2I(3, 4)), Box2I(Point2I(-5, 0), Point2I(7, 9))]
    array = boxes_to_array(boxes)
    assert array.shape == (2, 4) and array.dtype == np.int64
    assert boxes_from_array(array) == boxes
    assert boxes_to_array([]).shape == (0, 4)
    assert boxes_from_array(np.zeros((0, 4), dtype=np.int64)) == []
    grid = CellGrid(array, array + np.array([-1, -1, 1, 1]))
    assert len(grid) == 2 and grid.boxes0 == boxes
    assert grid.boxes1[0] == Box2I(Point2I(0, 1), Point2I(4, 6))


# -- properties --------------------------------------------------------------------------------------
def _vectorised(bbox, cell, step, border, adjust, force_even=False):
    cx, cy, cell = grid_centroids(bbox, cell, step, adjust)
    return cell_boxes(bbox, cx, cy, cell, border, force_even)


@PROPERTY_SETTINGS
@given(grid_params(adjusts=("spacing", "size")))
def test_cells_cover_every_pixel(params):
    bbox, cell, step, border, adjust = params
    grid = _vectorised(bbox, cell, step, border, adjust)
    assert len(grid) > 0
    counts = coverage(bbox, grid.cells)
    assert counts.shape == (bbox.getHeight(), bbox.getWidth())
    assert counts.min() >= 1
    # Every cell and expanded cell lies in the image; each expanded cell holds its cell.
    full = boxes_to_array([bbox])[0]
    for boxes in (grid.cells, grid.expanded):
        assert (boxes[:, :2] >= full[:2]).all() and (boxes[:, 2:] <= full[2:]).all()
    assert (grid.expanded[:, :2] <= grid.cells[:, :2]).all() and (grid.expanded[:, 2:] >= grid.cells[:, 2:]).all()


@PROPERTY_SETTINGS
@given(grid_params(), st.booleans())
def test_grid_functions_match_lsst_loop(params, force_even):
    bbox, cell, step, border, adjust = params
    expected = outcome(lambda: reference_grid(bbox, *cell, *step, *border, adjust, forceEvenSized=force_even))
    got = outcome(lambda: _vectorised(bbox, cell, step, border, adjust, force_even))
    if expected[0] == "raises":
        assert got == expected
    else:
        assert got[0] == "ok"
        assert (got[1].boxes0, got[1].boxes1) == expected[1]


@PROPERTY_SETTINGS
@given(
    st.integers(2, 120),
    st.integers(2, 120),
    st.lists(st.tuples(st.floats(-50, 200, allow_nan=False), st.floats(-50, 200, allow_nan=False)), max_size=30),
    st.integers(1, 40),
    st.integers(1, 40),
    st.integers(0, 15),
    st.integers(0, 15),
    st.booleans(),
)
def test_given_centroids_property(width, height, centroids, cw, ch, bx, by, force_even):
    bbox = Box2I(Point2I(100, 37), Extent2I(width, height))
    xs = [c[0] for c in centroids]
    ys = [c[1] for c in centroids]
    expected = outcome(
        lambda: reference_grid(
            bbox,
            cw,
            ch,
            0,
            0,
            bx,
            by,
            cellCentroidsX=xs or [0.0],
            cellCentroidsY=ys or [0.0],
            forceEvenSized=force_even,
        )
    )
    got = outcome(
        lambda: cell_boxes(bbox, np.array(xs or [0.0]), np.array(ys or [0.0]), (cw, ch), (bx, by), force_even)
    )
    if expected[0] == "raises":
        assert got == expected
    else:
        assert got[0] == "ok"
        assert (got[1].boxes0, got[1].boxes1) == expected[1]


# -- big grids ---------------------------------------------------------------------------------------
def test_hundred_thousand_cells():
    bbox = Box2I(Point2I(-7, 11), Extent2I(4000, 2500))
    cx, cy, cell = grid_centroids(bbox, (10, 10), (10, 10), "size")
    assert cell == (11, 11) and cx.shape == cy.shape == (100_000,)
    grid = cell_boxes(bbox, cx, cy, cell, (4, 4), force_even_sized=True)
    assert len(grid) == 100_000
    assert grid.cells.shape == grid.expanded.shape == (100_000, 4)
    assert coverage(bbox, grid.cells).min() >= 1
    assert ((grid.cells[:, 2:] - grid.cells[:, :2] + 1) % 2 == 0).all()
    # A sample of cells agrees with the serial loop given the same centroids.
    rng = np.random.default_rng(42)
    pick = np.sort(rng.choice(len(cx), 300, replace=False))
    pick = np.concatenate([[0, len(cx) - 1], pick])
    ref0, ref1 = reference_grid(
        bbox,
        11,
        11,
        0,
        0,
        4,
        4,
        cellCentroidsX=list(cx[pick]),
        cellCentroidsY=list(cy[pick]),
        forceEvenSized=True,
    )
    assert boxes_from_array(grid.cells[pick]) == ref0
    assert boxes_from_array(grid.expanded[pick]) == ref1


# -- what the area rule dropped ----------------------------------------------------------------------
def _plain_cells(bbox, cx, cy, cell):
    """Each centroid's cell, clipped to ``bbox``, one `Box2I` at a time (LSST's loop without its area rule)."""
    cells = []
    for x, y in zip(cx, cy, strict=True):
        begin = Point2I(
            bbox.getBeginX() + int(np.floor(x)) - cell[0] // 2, bbox.getBeginY() + int(np.floor(y)) - cell[1] // 2
        )
        box = Box2I(begin, Extent2I(*cell))
        box.clip(bbox)
        cells.append(box)
    return cells


@PROPERTY_SETTINGS
@given(grid_params(), st.booleans())
def test_keep_mask_is_what_lsst_drops(params, force_even):
    bbox, cell, step, border, adjust = params
    cx, cy, cell_xy = grid_centroids(bbox, cell, step, adjust)
    got = outcome(lambda: cell_boxes(bbox, cx, cy, cell_xy, border, force_even))
    if got[0] == "raises":
        return  # test_grid_functions_match_lsst_loop checks that LSST raises too
    grid = got[1]
    keep = grid.keep
    assert keep.dtype == bool and keep.shape == cx.shape and int(keep.sum()) == len(grid)

    def lsst(pick):
        # Given centroids: the same cells as the grid's (at the cell size the grid option chose).
        xs, ys = list(cx[pick]), list(cy[pick])
        return reference_grid(
            bbox, *cell_xy, 0, 0, *border, cellCentroidsX=xs, cellCentroidsY=ys, forceEvenSized=force_even
        )

    # LSST keeps every centroid the mask keeps, as they are, and drops every other one.
    if keep.any():
        assert lsst(keep) == (grid.boxes0, grid.boxes1)
    if not keep.all():
        assert lsst(~keep) == ([], [])
    # `dropped`: the cells of the dropped centroids that hold a pixel (one each; with even sizes none can).
    if force_even:
        assert grid.dropped.shape == (0, 4)
    else:
        plain = _plain_cells(bbox, cx, cy, cell_xy)
        expected = [box for box, kept in zip(plain, keep, strict=True) if not kept and box.getArea() > 0]
        assert boxes_from_array(grid.dropped) == expected
        assert all(box.getArea() == 1 for box in expected)


def test_keep_mask_of_a_grid_with_dropped_cells():
    bbox = Box2I(Point2I(10, 20), Extent2I(9, 6))
    # Centroids off the corner (a 1-pixel cell), inside, far outside (empty), and clipped at the right edge.
    cx, cy = np.array([-2.0, 4.0, 50.0, 8.9]), np.array([-1.0, 3.0, 3.0, 3.0])
    grid = cell_boxes(bbox, cx, cy, (6, 4), (0, 0))
    assert grid.keep.tolist() == [False, True, False, True]
    assert boxes_from_array(grid.cells) == [
        Box2I(Point2I(11, 21), Point2I(16, 24)),
        Box2I(Point2I(15, 21), Point2I(18, 24)),
    ]
    assert boxes_from_array(grid.dropped) == [Box2I(Point2I(10, 20), Point2I(10, 20))]
    assert dropped_pixels(grid, bbox) == 1
    assert dropped_pixels(CellGrid(grid.cells, grid.expanded), bbox) == 0  # a grid from boxes records none


@PROPERTY_SETTINGS
@given(grid_params())
def test_dropped_pixels_counts_what_only_dropped_cells_cover(params):
    bbox, cell, step, border, adjust = params
    cx, cy, cell_xy = grid_centroids(bbox, cell, step, adjust)
    grid = cell_boxes(bbox, cx, cy, cell_xy, border)
    kept = coverage(bbox, grid.cells) if len(grid) else np.zeros((bbox.getHeight(), bbox.getWidth()), dtype=np.int64)
    dropped = coverage(bbox, grid.dropped) if len(grid.dropped) else np.zeros_like(kept)
    assert dropped_pixels(grid, bbox) == int(((kept == 0) & (dropped > 0)).sum())


# -- coverage ----------------------------------------------------------------------------------------
def _count_box_by_box(region: Box2I, boxes: np.ndarray) -> np.ndarray:
    """How many boxes cover each pixel of ``region`` (rows = y), adding one box at a time."""
    counts = np.zeros((region.getHeight(), region.getWidth()), dtype=np.int64)
    for x0, y0, x1, y1 in boxes.tolist():
        overlap = Box2I(Point2I(x0, y0), Point2I(x1, y1)) if x1 >= x0 and y1 >= y0 else Box2I()
        overlap.clip(region)
        if not overlap.isEmpty():
            counts[overlap.slices(region.getBegin())] += 1
    return counts


_CORNER = st.integers(-30, 60)
_BOXES = st.lists(st.tuples(_CORNER, _CORNER, st.integers(-2, 40), st.integers(-2, 40)), max_size=25)


@PROPERTY_SETTINGS
@given(_CORNER, _CORNER, st.integers(0, 40), st.integers(0, 40), _BOXES)
def test_coverage_counts_match_counting_box_by_box(x0, y0, width, height, corners):
    region = Box2I(Point2I(x0, y0), Extent2I(width, height))
    # (x, y, width, height) with a width or height below 1 makes an empty (or inverted) box.
    boxes = np.array([(x, y, x + w - 1, y + h - 1) for x, y, w, h in corners], dtype=np.int64).reshape(-1, 4)
    ys, xs, counts = coverage_counts(region, boxes)
    assert ys.dtype == xs.dtype == np.int64 and counts.dtype == np.int64
    expected = _count_box_by_box(region, boxes)
    if region.isEmpty():
        assert counts.size == 0
        return
    assert (ys[0], ys[-1], xs[0], xs[-1]) == (
        region.getBeginY(),
        region.getEndY(),
        region.getBeginX(),
        region.getEndX(),
    )
    assert (np.diff(ys) > 0).all() and (np.diff(xs) > 0).all()
    assert block_areas(ys, xs).shape == counts.shape and block_areas(ys, xs).sum() == region.getArea()
    full = np.repeat(np.repeat(counts, np.diff(ys), axis=0), np.diff(xs), axis=1)
    np.testing.assert_array_equal(full, expected)
    assert uncovered_pixels(boxes, region) == int((expected == 0).sum())
    # Only boxes that share a pixel with the region add block edges, clipped to it.
    inside = [Box2I(Point2I(b[0], b[1]), Point2I(b[2], b[3])) for b in boxes.tolist() if b[2] >= b[0] and b[3] >= b[1]]
    inside = [b.clipped_to(region) for b in inside if b.overlaps(region)]
    assert set(xs.tolist()) == {region.getBeginX(), region.getEndX()} | {
        e for b in inside for e in (b.getBeginX(), b.getEndX())
    }
    assert set(ys.tolist()) == {region.getBeginY(), region.getEndY()} | {
        e for b in inside for e in (b.getBeginY(), b.getEndY())
    }


def test_coverage_counts_of_no_boxes():
    region = Box2I(Point2I(3, 4), Extent2I(5, 2))
    ys, xs, counts = coverage_counts(region, np.zeros((0, 4), dtype=np.int64))
    assert ys.tolist() == [4, 6] and xs.tolist() == [3, 8] and counts.tolist() == [[0]]
    assert uncovered_pixels(np.zeros((0, 4), dtype=np.int64), region) == 10


# -- the regular grid over an array ------------------------------------------------------------------
def test_array_bbox_is_rows_by_cols_from_the_origin():
    assert array_bbox((3, 5)) == Box2I(Point2I(0, 0), Extent2I(5, 3))


@pytest.mark.parametrize("adjust", ["spacing", "size", "none"])
@pytest.mark.parametrize("force_even", [False, True])
def test_regular_grid_is_the_grid_of_the_array_bbox_with_kept_indices(adjust, force_even):
    shape, cell, step, border = (23, 41), (6, 5), (4, 7), (2, 1)
    grid, indices = regular_grid(shape, cell, step, border, adjust, force_even)
    bbox = array_bbox(shape)
    cx, cy, cell_xy = grid_centroids(bbox, cell, step, adjust)
    expected = cell_boxes(bbox, cx, cy, cell_xy, border, force_even)
    np.testing.assert_array_equal(grid.cells, expected.cells)
    np.testing.assert_array_equal(grid.expanded, expected.expanded)
    np.testing.assert_array_equal(grid.keep, expected.keep)
    # (column, row) of each kept cell, in x-major grid order.
    ny = grid_shape(bbox, cell, step, adjust)[1]
    assert indices.shape == (len(grid), 2)
    np.testing.assert_array_equal(indices[:, 0] * ny + indices[:, 1], np.flatnonzero(grid.keep))
