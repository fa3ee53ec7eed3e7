"""Cells that write their own core (copy of plain arrays on a grid whose cells do not overlap)."""

from __future__ import annotations

import numpy as np
import pytest

import imagemapreduce as imr
from imagemapreduce.engine import ArrayPlan, choose_scheduler, execute_stitch
from imagemapreduce.engine.cells import WRITTEN, ArrayCellTask, run_array_cell
from imagemapreduce.engine.plans import cells_disjoint
from imagemapreduce.grid import cell_boxes, grid_centroids


def holes(a, cell_box=None):
    """Double the cell; one cell all NaN, another with one NaN pixel in its core."""
    out = a * 2
    if (cell_box.getMinX(), cell_box.getMinY()) == (40, 0):
        out[...] = np.nan
    if (cell_box.getMinX(), cell_box.getMinY()) == (80, 40):
        out[10, 10] = np.nan
    return out


def test_cells_disjoint():
    tiling = np.array([[0, 0, 9, 9], [10, 0, 19, 9], [0, 10, 9, 19], [10, 10, 19, 19]])
    assert cells_disjoint(tiling)
    touching = tiling.copy()
    touching[1, 0] = 9  # one shared column
    assert not cells_disjoint(touching)
    assert not cells_disjoint(np.array([[0, 0, 9, 9], [0, 0, 9, 9]]))
    assert cells_disjoint(np.zeros((1, 4), dtype=np.int64))


def test_cell_writes_a_finite_core_and_hands_back_a_nan_one():
    out = np.zeros((4, 4), np.float32)
    box0 = imr.Box2I(imr.Point2I(1, 1), imr.Extent2I(4, 4))
    box1 = imr.Box2I(imr.Point2I(0, 0), imr.Extent2I(6, 6))
    task = ArrayCellTask(lambda a: a + 1, 0, box0, box1, "copy", {}, out=out)
    outcome = run_array_cell(task, np.ones((6, 6), np.float32))
    assert outcome.result == WRITTEN and np.all(out == 2)
    task = ArrayCellTask(lambda a: a * np.nan, 0, box0, box1, "copy", {}, out=np.zeros((4, 4), np.float32))
    assert np.all(np.isnan(run_array_cell(task, np.ones((6, 6), np.float32)).result))


@pytest.mark.parametrize("region", [17, 64, 512])
def test_direct_writes_give_the_same_bits_as_region_stitching(region):
    image = np.random.default_rng(3).normal(size=(130, 150)).astype(np.float32)
    bbox = imr.Box2I(imr.Point2I(0, 0), imr.Extent2I(150, 130))
    cx, cy, cell = grid_centroids(bbox, (40, 40), (40, 40), "none")
    grid = cell_boxes(bbox, cx, cy, cell, (5, 5))
    plan = ArrayPlan(holes, image, grid, {}, "copy", geometry=("cell_box",))
    assert plan.cores_disjoint()
    outputs = {}
    for name in ("synchronous", "threads", "processes"):  # processes cannot share the output
        out = np.empty_like(image)
        with choose_scheduler(name) as scheduler:
            report = execute_stitch(plan, out, 0, region, scheduler)
        assert [s[0] for s in report.summaries] == list(range(len(grid)))
        outputs[name] = out
    expected = image * 2
    expected[0:40, 40:80] = np.nan
    expected[40 + 5, 80 + 5] = np.nan  # [10, 10] of the expanded cell is [5, 5] of its core
    for out in outputs.values():
        np.testing.assert_array_equal(out, expected)
