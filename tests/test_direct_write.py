"""Cells that write their own core (plain arrays on a grid whose cells tile the image without overlap).

The direct path must give the very bits the region stitcher gives: every test compares it with
the region path (worker processes cannot share the output, so there every region is stitched).
"""

from __future__ import annotations

import numpy as np
import pytest

import imagemapreduce as imr
from imagemapreduce.engine import ArrayPlan, choose_scheduler, execute_stitch
from imagemapreduce.engine.cells import WRITTEN, ArrayCellTask, FailurePolicy, cell_array, run_array_cell
from imagemapreduce.engine.plans import cells_disjoint
from imagemapreduce.grid import cell_boxes, grid_centroids
from imagemapreduce.weights import make_weighting

SCHEDULERS = ("synchronous", "threads", "processes")  # processes: the region path, for reference


def holes(a, cell_box=None):
    """Double the cell; one cell all NaN, another with one NaN pixel in its core, a third with -0.0."""
    out = a * 2
    corner = (cell_box.getMinX(), cell_box.getMinY())
    if corner == (40, 0):
        out[...] = np.nan
    if corner == (80, 40):
        out[10, 10] = np.nan
    if corner == (0, 40):
        out[...] = -0.0
    return out


def fails_once(a, cell_box=None):
    if (cell_box.getMinX(), cell_box.getMinY()) == (40, 40):
        raise RuntimeError("bad cell")
    return a + 1


def _grid(shape=(130, 150), cell=40, step=None, border=5):
    bbox = imr.Box2I(imr.Point2I(0, 0), imr.Extent2I(shape[1], shape[0]))
    cx, cy, size = grid_centroids(bbox, (cell, cell), (step or cell, step or cell), "none")
    return cell_boxes(bbox, cx, cy, size, (border, border))


def _image(shape=(130, 150)):
    return np.random.default_rng(3).normal(size=shape).astype(np.float32)


def _plan(func, image, grid, operation, **options):
    return ArrayPlan(func=func, array=image, grid=grid, kwargs={}, operation=operation, **options)


def _cell_task(func, box0, box1, operation, out):
    return ArrayCellTask(func=func, index=0, box0=box0, box1=box1, operation=operation, kwargs={}, out=out)


def _run_everywhere(plan, shape, region):
    outputs, reports = {}, {}
    for name in SCHEDULERS:
        out = np.empty(shape, np.float32)
        with choose_scheduler(name) as scheduler:
            reports[name] = execute_stitch(plan, out, 0, region, scheduler)
        outputs[name] = out
    return outputs, reports


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
    task = _cell_task(lambda a: a + 1, box0, box1, "copy", out)
    outcome = run_array_cell(task, np.ones((6, 6), np.float32))
    assert outcome.result is WRITTEN and np.all(out == 2)
    task = _cell_task(lambda a: a * np.nan, box0, box1, "copy", np.zeros((4, 4), np.float32))
    assert np.all(np.isnan(run_array_cell(task, np.ones((6, 6), np.float32)).result))


@pytest.mark.parametrize("operation", ["copy", "sum", "average"])
def test_sum_and_average_write_zero_plus_the_value(operation):
    out = np.full((2, 2), 7.0, np.float32)
    box = imr.Box2I(imr.Point2I(0, 0), imr.Extent2I(2, 2))
    negative_zero = np.array([[-0.0, 1.5], [-2.0, 0.0]], np.float32)
    task = _cell_task(lambda a: negative_zero, box, box, operation, out)
    assert run_array_cell(task, np.zeros((2, 2), np.float32)).result is WRITTEN
    np.testing.assert_array_equal(out, negative_zero)
    # copy keeps the sign of zero; the stitcher's 0 + x turns -0.0 into +0.0
    assert bool(np.signbit(out[0, 0])) is (operation == "copy")


@pytest.mark.parametrize("operation", ["copy", "sum", "average"])
@pytest.mark.parametrize("region", [17, 64, 512])
def test_direct_writes_give_the_same_bits_as_region_stitching(operation, region):
    image, grid = _image(), _grid()
    plan = _plan(holes, image, grid, operation, geometry=("cell_box",))
    assert plan.writes_directly()
    outputs, reports = _run_everywhere(plan, image.shape, region)
    expected = image * 2
    lost = 0.0 if operation == "sum" else np.nan
    expected[0:40, 40:80] = lost
    expected[40 + 5, 80 + 5] = lost  # [10, 10] of the expanded cell is [5, 5] of its core
    expected[40:80, 0:40] = -0.0 if operation == "copy" else 0.0
    reference = outputs["processes"]
    for name, out in outputs.items():
        np.testing.assert_array_equal(out, expected)
        assert out.tobytes() == reference.tobytes(), f"{name}: not the region stitcher's bits"
        report = reports[name]
        assert [s.cell for s in report.summaries] == list(range(len(grid)))
        assert report.stats == reports["processes"].stats
        assert [c[1] for c in report.components] == grid.boxes0
    if operation == "average":
        stats = reports["threads"].stats
        assert (stats.min_count, stats.max_count, stats.pixels) == (0, 1, image.size)
        assert stats.zero_pixels == 40 * 40 + 1


@pytest.mark.parametrize("operation", ["copy", "sum", "average"])
def test_a_masked_failure_on_the_direct_path(operation):
    image, grid = _image(), _grid()
    plan = _plan(fails_once, image, grid, operation, geometry=("cell_box",), policy=FailurePolicy(mask_failures=True))
    outputs, reports = _run_everywhere(plan, image.shape, 64)
    expected = image + 1
    expected[40:80, 40:80] = np.nan
    for name, out in outputs.items():
        np.testing.assert_array_equal(out, expected)
        assert out.tobytes() == outputs["processes"].tobytes()
        failures = reports[name].failures
        assert [f.index for f in failures] == [f.index for f in reports["processes"].failures]
        assert len(failures) == 1 and "bad cell" in failures[0].error
        assert len(reports[name].summaries) == len(grid)
        assert len(reports[name].components) == len(grid) - 1


def test_only_tilings_of_unweighted_stitches_write_directly():
    image = _image()
    assert _plan(holes, image, _grid(), "copy").writes_directly()
    assert not _plan(holes, image, _grid(step=30), "copy").writes_directly()  # overlapping
    assert not _plan(holes, image, _grid(cell=30, step=40), "copy").writes_directly()  # gaps
    assert not _plan(holes, image, _grid(), "none").writes_directly()
    weighted = _plan(holes, image, _grid(), "average", weighting=make_weighting("cosine"))
    assert not weighted.writes_directly()


def test_cells_arrive_contiguous_and_read_only():
    image = np.arange(40 * 50, dtype=np.float64).reshape(40, 50)
    seen = []

    def look(cell, weight):
        seen.append((cell.flags.c_contiguous, cell.flags.writeable, weight.flags.c_contiguous, weight.flags.writeable))
        with pytest.raises(ValueError, match="read-only"):
            cell[0, 0] = 1.0
        return cell + weight

    out = imr.map_reduce(
        image, look, cell_size=16, border=3, reduce="copy", companions={"weight": image}, scheduler="threads"
    )
    np.testing.assert_array_equal(out, 2 * image)
    assert seen and all(flags == (True, False, True, False) for flags in seen)


def test_cell_array_copies_strided_views_only():
    image = np.zeros((10, 10))
    view = image[2:5, 3:7]
    cell = cell_array(view)
    assert cell.flags.c_contiguous and not cell.flags.writeable and not np.shares_memory(cell, image)
    rows = image[2:5]  # already contiguous: no copy, only made read-only
    assert np.shares_memory(cell_array(rows), image) and not cell_array(rows).flags.writeable
    assert image.flags.writeable
    assert cell_array("not an array") == "not an array"
