"""Degenerate grids give answers or clear errors, never crashes or silent NaN (issue 11, section 4).

Each case either asserts a clear error (its type and a message fragment that names the parameter)
raised before any cell runs, or compares the result with an independent reference: a plain numpy
loop, LSST's serial reducer (``lsst_reference``), or a fresh task on the same exposure.
"""

# ruff: noqa: D101, D102, D103

from __future__ import annotations

import math

import dask.array as da
import lsst.pex.config as pexConfig
import numpy as np
import pytest
from conftest import make_exposure
from lsst_reference import reference_map, reference_reduce

import imagemapreduce as imr
from imagemapreduce import Box2I, Extent2I, Point2I, map_reduce
from imagemapreduce.cli import main
from imagemapreduce.grid import (
    MAX_GRID_CELLS,
    GridTooLargeError,
    boxes_to_array,
    cell_boxes,
    coverage_counts,
    grid_centroids,
    grid_shape,
    regular_grid,
    rescale,
)
from imagemapreduce.pipe_base import Struct

NAN_PIXELS = "lie in no cell and will be NaN"
GAP = dict(cell_size=4, grid_step=10, border=1)  # 4-pixel cells every 10 pixels: gaps between them


class CountingMapper(imr.ImageMapper):
    """Add 1 to each cell and count the calls (the tests use the synchronous scheduler: one process)."""

    calls: list[Box2I] = []

    def run(self, subExposure, expandedSubExposure, fullBBox, **kwargs):
        CountingMapper.calls.append(subExposure.getBBox())
        out = subExposure.clone()
        if out.image.array.dtype.kind == "f":
            out.image.array[...] += 1.0
        return Struct(subExposure=out)


@pytest.fixture(autouse=True)
def _reset_counts():
    CountingMapper.calls = []
    yield


class Counter:
    """A map_reduce function that counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, cell):
        self.calls += 1
        return cell * 2.0 + 1.0


def make_task(operation="average", **fields):
    config = imr.ImageMapReduceConfig()
    config.mapper.retarget(CountingMapper)
    config.reducer.reduceOperation = operation
    config.scheduler = "synchronous"
    config.scaleByFwhm = False
    for name, value in fields.items():
        setattr(config, name, value)
    return imr.ImageMapReduceTask(config=config)


def lsst_reference(task, exposure, operation="average"):
    """What LSST's serial loop gives with the task's (current) boxes."""
    results = reference_map(exposure, task.boxes0, task.boxes1, CountingMapper())
    return reference_reduce(results, exposure, operation)


def assert_same_bits(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()


def assert_exposure_equals_reference(out, reference):
    image, mask, variance, _ = reference
    np.testing.assert_array_equal(out.image.array, image)
    np.testing.assert_array_equal(out.variance.array, variance)
    np.testing.assert_array_equal(out.mask.array, mask)


def numpy_reference(shape, cells, func, reduce):
    """A plain loop: each cell's core of ``func(image)`` (func is pointwise here), then the reduce."""
    image = np.arange(shape[0] * shape[1], dtype=float).reshape(shape)
    total, count = np.zeros(shape), np.zeros(shape, dtype=int)
    last = np.full(shape, np.nan)
    for x0, y0, x1, y1 in cells:
        core = (slice(y0, y1 + 1), slice(x0, x1 + 1))
        values = func(image[core])
        total[core] += values
        count[core] += 1
        last[core] = values
    if reduce == "sum":
        return total
    if reduce == "copy":
        return last
    with np.errstate(invalid="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


# == 1. output regions that no cell touches ======================================================


def test_box_counts_of_no_boxes_is_one_zero_block_with_integer_edges():
    region = Box2I(Point2I(3, 4), Extent2I(5, 2))
    ys, xs, counts = coverage_counts(region, boxes_to_array([]))
    assert ys.dtype.kind == xs.dtype.kind == "i"
    assert ys.tolist() == [4, 6] and xs.tolist() == [3, 8] and counts.tolist() == [[0]]


@pytest.mark.parametrize("reduce, fill", [("average", np.nan), ("copy", np.nan), ("sum", 0.0)])
@pytest.mark.parametrize("cell_size", [1, 4], ids=["cell_size=1", "cell_size=4"])
def test_map_reduce_on_a_1x1_image_warns_and_fills(reduce, fill, cell_size):
    func = Counter()
    fill_word = "0" if reduce == "sum" else "NaN"
    with pytest.warns(UserWarning, match=f"1 pixel of the 1x1 image lie in no cell and will be {fill_word}"):
        out = map_reduce(np.ones((1, 1)), func, cell_size=cell_size, reduce=reduce, scheduler="synchronous")
    np.testing.assert_array_equal(out, [[fill]])
    assert func.calls == 0


@pytest.mark.parametrize("reduce", ["average", "copy", "sum"])
def test_map_reduce_gap_grid_gives_the_same_bits_for_any_region_size(reduce):
    shape = (37, 45)
    image = np.arange(shape[0] * shape[1], dtype=float).reshape(shape)
    grid, _ = regular_grid(shape, (4, 4), (10, 10), (1, 1), "none", False)
    expected = numpy_reference(shape, grid.cells, lambda c: c * 2.0 + 1.0, reduce)
    outputs = []
    for region_size in (1, 2, 3, 7, 16, 512):
        with pytest.warns(UserWarning, match="lie in no cell"):
            outputs.append(map_reduce(image, Counter(), **GAP, reduce=reduce, region_size=region_size,
                                      scheduler="synchronous"))  # fmt: skip
    for out in outputs:
        assert_same_bits(out, outputs[-1])
    np.testing.assert_array_equal(outputs[-1], expected)


def test_map_reduce_gap_grid_lazy_with_small_regions_matches_numpy():
    shape = (30, 30)
    image = np.arange(900, dtype=float).reshape(shape)
    with pytest.warns(UserWarning, match="lie in no cell"):
        lazy = map_reduce(da.from_array(image, chunks=7), Counter(), **GAP, region_size=3)
    grid, _ = regular_grid(shape, (4, 4), (10, 10), (1, 1), "none", False)
    np.testing.assert_array_equal(lazy.compute(scheduler="synchronous"),
                                  numpy_reference(shape, grid.cells, lambda c: c * 2.0 + 1.0, "average"))  # fmt: skip


@pytest.mark.parametrize("operation", ["average", "copy", "sum"])
def test_task_gap_grid_gives_the_same_bits_for_any_region_size(operation):
    exposure = make_exposure(41, 33, xy0=(5, -3))
    grid = dict(cellSizeX=4, cellSizeY=5, gridStepX=11, gridStepY=9, borderSizeX=2, borderSizeY=1,
                adjustGridOption="none")  # fmt: skip
    outputs = []
    for region in (1, 2, 3, 7, 512):
        task = make_task(operation, stitchRegionSize=region, **grid)
        outputs.append(task.run(exposure).exposure)
    for out in outputs:
        for plane in ("image", "variance", "mask"):
            assert_same_bits(getattr(out, plane).array, getattr(outputs[-1], plane).array)
    assert_exposure_equals_reference(outputs[-1], lsst_reference(task, exposure, operation))
    assert np.isnan(outputs[-1].image.array).any() == (operation != "sum")  # the gaps are really there


# == 2. a task reused on an exposure with another bbox ============================================


@pytest.mark.parametrize(
    "first, second",
    [
        pytest.param((24, 20, (0, 0)), (64, 48, (0, 0)), id="larger"),
        pytest.param((64, 48, (0, 0)), (24, 20, (0, 0)), id="smaller"),
        pytest.param((40, 40, (0, 0)), (40, 40, (13, -7)), id="same-size-other-xy0"),
    ],
)
def test_task_reused_on_another_bbox_lays_a_new_grid(first, second):
    task = make_task(stitchRegionSize=16)
    task.run(make_exposure(first[0], first[1], xy0=first[2]))
    exposure = make_exposure(second[0], second[1], xy0=second[2], seed=3)
    out = task.run(exposure).exposure
    fresh = make_task(stitchRegionSize=16).run(exposure).exposure
    assert not np.isnan(out.image.array).any()
    for plane in ("image", "variance", "mask"):
        assert_same_bits(getattr(out, plane).array, getattr(fresh, plane).array)
    assert_exposure_equals_reference(out, lsst_reference(task, exposure))


def test_task_reused_with_another_force_even_sized_lays_a_new_grid():
    exposure = make_exposure(45, 31)
    odd = dict(cellSizeX=7, cellSizeY=9, gridStepX=7, gridStepY=9, borderSizeX=2, borderSizeY=3)
    task = make_task(**odd)
    task.run(exposure)
    assert any(b.getWidth() % 2 for b in task.boxes0)
    task.run(exposure, forceEvenSized=True)
    fresh = make_task(**odd)
    fresh.run(exposure, forceEvenSized=True)
    assert task.boxes0 == fresh.boxes0 and task.boxes1 == fresh.boxes1
    assert all(b.getWidth() % 2 == 0 and b.getHeight() % 2 == 0 for b in task.boxes0 + task.boxes1)


def test_task_reused_on_the_same_bbox_keeps_the_grid():
    task = make_task()
    task.run(make_exposure(40, 30))
    kept0, kept1 = task.boxes0, task.boxes1
    task.run(make_exposure(40, 30, seed=2))
    assert task.boxes0 is kept0 and task.boxes1 is kept1


def test_hand_set_boxes_reused_on_another_bbox_warn_and_are_used_as_given():
    task = make_task("none")
    boxes0 = [Box2I(Point2I(2, 2), Extent2I(6, 6))]
    boxes1 = [Box2I(Point2I(0, 0), Extent2I(10, 10))]
    task.boxes0, task.boxes1 = boxes0, boxes1
    task.run(make_exposure(20, 20))
    with pytest.warns(UserWarning, match=r"task.boxes0/boxes1 were set by hand .*task.boxes0 = task.boxes1 = None"):
        result = task.run(make_exposure(50, 40))
    assert [r.subExposure.getBBox() for r in result.result] == boxes0
    assert task.boxes0 is boxes0


def test_hand_set_boxes_outside_the_exposure_are_refused_before_any_cell_runs():
    task = make_task()
    task.boxes0 = [Box2I(Point2I(2, 2), Extent2I(6, 6)), Box2I(Point2I(30, 2), Extent2I(6, 6))]
    task.boxes1 = [Box2I(Point2I(0, 0), Extent2I(10, 10)), Box2I(Point2I(28, 0), Extent2I(10, 10))]
    with pytest.raises(ValueError, match=r"task.boxes0\[1\] = .* not inside the exposure's bbox"):
        task.run(make_exposure(20, 20))
    assert CountingMapper.calls == []


def test_generated_boxes_edited_in_place_are_honoured():
    exposure = make_exposure(40, 30)
    task = make_task("none")
    task.run(exposure)
    del task.boxes0[1:], task.boxes1[1:]  # keep only the first cell, editing the lists in place
    result = task.run(exposure)
    assert [r.subExposure.getBBox() for r in result.result] == task.boxes0 and len(task.boxes0) == 1


# == 3. one-pixel cells ==========================================================================


@pytest.mark.parametrize("operation", ["average", "copy", "sum"])
def test_task_with_one_pixel_cells_warns_that_the_grid_is_empty(operation):
    exposure = make_exposure(8, 8)
    task = make_task(operation, cellSizeX=1, cellSizeY=1, gridStepX=1, gridStepY=1)
    with pytest.warns(UserWarning, match="the grid over the exposure's 8 x 8 bbox has no cells.*cellSizeX"):
        out = task.run(exposure).exposure
    assert CountingMapper.calls == []
    assert_exposure_equals_reference(out, reference_reduce([], exposure, operation))


def test_task_on_a_1x1_exposure_warns_that_the_grid_is_empty():
    exposure = make_exposure(1, 1)
    with pytest.warns(UserWarning, match="1 x 1 bbox has no cells"):
        out = make_task().run(exposure).exposure
    assert np.isnan(out.image.array).all() and CountingMapper.calls == []


def test_task_warns_when_the_dropped_corner_cell_leaves_a_pixel_uncovered():
    exposure = make_exposure(21, 21)
    task = make_task(cellSizeX=10, cellSizeY=10, gridStepX=10, gridStepY=10, borderSizeX=1, borderSizeY=1,
                     adjustGridOption="none")  # fmt: skip
    with pytest.warns(UserWarning, match=r"1 pixel of the exposure's 21 x 21 bbox lie only in one-pixel cells"):
        out = task.run(exposure).exposure
    assert_exposure_equals_reference(out, lsst_reference(task, exposure))
    assert np.isnan(out.image.array[20, 20]) and np.isnan(out.image.array).sum() == 1


def test_map_reduce_with_one_pixel_cells_on_256x256_warns_and_runs_nothing():
    func = Counter()
    with pytest.warns(UserWarning, match=r"65536 pixels of the 256x256 image .* cell_size=1 keeps none"):
        out = map_reduce(np.zeros((256, 256)), func, cell_size=1, scheduler="synchronous")
    assert np.isnan(out).all() and func.calls == 0


def test_map_reduce_with_cells_one_pixel_high_matches_numpy():
    image = np.random.default_rng(1).normal(size=(16, 12))
    out = map_reduce(image, lambda c: c * 2.0 + 1.0, cell_size=(1, 3), scheduler="synchronous")
    np.testing.assert_array_equal(out, image * 2.0 + 1.0)


@pytest.mark.timeout(60)
def test_one_pixel_grid_over_2048_squared_builds_quickly_with_the_right_indices():
    grid, indices = regular_grid((2048, 2048), (1, 1), (1, 1), (0, 0), "none", False)
    assert len(grid) == 0 and indices.shape == (0, 2)
    assert grid.keep.shape == (2048 * 2048,) and len(grid.dropped) == 2048 * 2048


@pytest.mark.parametrize(
    "shape, cell, step, adjust, even",
    [
        ((21, 31), (10, 10), (10, 10), "none", False),
        ((21, 31), (5, 7), (3, 4), "spacing", True),
        ((9, 9), (2, 1), (2, 1), "size", False),
        ((5, 5), (1, 1), (1, 1), "none", False),
    ],
    ids=["corner-dropped", "spacing-even", "size-1-row-cells", "all-dropped"],
)
def test_kept_indices_match_asking_cell_boxes_one_centroid_at_a_time(shape, cell, step, adjust, even):
    grid, indices = regular_grid(shape, cell, step, (1, 1), adjust, even)
    bbox = Box2I(Point2I(0, 0), Extent2I(shape[1], shape[0]))
    cx, cy, cell_xy = grid_centroids(bbox, cell, step, adjust)
    ny = len(np.unique(cy))
    one_by_one = [
        i for i in range(len(cx)) if len(cell_boxes(bbox, cx[i : i + 1], cy[i : i + 1], cell_xy, (1, 1), even))
    ]
    assert [(i // ny, i % ny) for i in one_by_one] == [tuple(ix) for ix in indices.tolist()]


# == 4. refused before any work ==================================================================


def _set(name, value):
    def setup():
        config = imr.ImageMapReduceConfig()
        setattr(config, name, value)

    return setup


def _run_task(**fields):
    def setup():
        make_task(**fields).run(make_exposure(20, 20))

    return setup


def _map(image, **kwargs):
    def setup():
        map_reduce(image, Counter(), **{"cell_size": 4, "scheduler": "synchronous", **kwargs})

    return setup


def _unknown_chunks():
    x = da.ones((40, 40), chunks=10)
    return x[x[:, 0] > 0]


def _exposure_of(array):
    def setup():
        make_task().run(imr.ExposureF.from_arrays(array))

    return setup


REFUSED = [
    # config values that are not finite
    pytest.param(pexConfig.FieldValidationError, "cellSizeX", _set("cellSizeX", math.inf), id="cellSizeX=inf"),
    pytest.param(pexConfig.FieldValidationError, "cellSizeY", _set("cellSizeY", math.nan), id="cellSizeY=nan"),
    pytest.param(pexConfig.FieldValidationError, "gridStepX", _set("gridStepX", math.inf), id="gridStepX=inf"),
    pytest.param(pexConfig.FieldValidationError, "borderSizeY", _set("borderSizeY", math.inf), id="borderSizeY=inf"),
    pytest.param(pexConfig.FieldValidationError, "borderSizeX", _set("borderSizeX", -math.inf), id="borderSizeX=-inf"),
    # finite but beyond what a box can hold
    pytest.param(ValueError, r"cellSizeX = 1e\+300 is beyond", _run_task(cellSizeX=1e300), id="cellSizeX=1e300"),
    pytest.param(ValueError, r"borderSizeX = 1e\+18 is beyond", _run_task(borderSizeX=1e18), id="borderSizeX=1e18"),
    pytest.param(ValueError, r"gridStepY = 1e\+30 is beyond", _run_task(gridStepY=1e30), id="gridStepY=1e30"),
    pytest.param(
        ValueError,
        r"cellSizeX = 1e\+300 is beyond",
        _run_task(cellSizeX=1e300, cellCentroidsX=[5.0], cellCentroidsY=[5.0]),
        id="centroids-cellSizeX=1e300",
    ),
    # centroids
    pytest.param(
        ValueError,
        r"cellCentroidsX\[1\] = nan",
        _run_task(cellCentroidsX=[5.0, math.nan], cellCentroidsY=[5.0, 5.0]),
        id="centroid-nan",
    ),
    pytest.param(
        ValueError,
        r"cellCentroidsY\[0\] = inf",
        _run_task(cellCentroidsX=[5.0], cellCentroidsY=[math.inf]),
        id="centroid-inf",
    ),
    pytest.param(
        ValueError,
        r"cellCentroidsX\[0\] = -1e\+300",
        _run_task(cellCentroidsX=[-1e300], cellCentroidsY=[5.0]),
        id="centroid-huge",
    ),
    # map_reduce sizes that would overflow int64
    pytest.param(
        ValueError, "cell_size must be at most 2147483647", _map(np.ones((8, 8)), cell_size=2**63), id="cell_size=2**63"
    ),
    pytest.param(ValueError, "border must be at most", _map(np.ones((8, 8)), border=(1, 2**62)), id="border=2**62"),
    pytest.param(ValueError, "grid_step must be at most", _map(np.ones((8, 8)), grid_step=2**40), id="grid_step=2**40"),
    # grids too large to build
    pytest.param(
        GridTooLargeError,
        "increase cell_size or grid_step",
        _map(da.zeros((100_000, 100_000), chunks=50_000), scheduler=None),
        id="map_reduce-huge-grid",
    ),
    pytest.param(
        GridTooLargeError,
        "increase cellSizeX/cellSizeY or gridStepX/gridStepY",
        lambda: make_task(cellSizeX=2, cellSizeY=2, gridStepX=2, gridStepY=2).run(
            imr.ExposureF.from_arrays(da.zeros((20_000, 20_000), chunks=10_000, dtype=np.float32))
        ),
        id="task-huge-grid",
    ),  # fmt: skip
    # arrays of unknown shape, wrong dimensions, no pixels
    pytest.param(
        ValueError,
        r"image is a Dask array of unknown shape .*compute_chunk_sizes",
        _map(_unknown_chunks()),
        id="map_reduce-unknown-chunks",
    ),
    pytest.param(
        ValueError,
        r"companion 'w' is a Dask array of unknown shape",
        lambda: map_reduce(np.ones((40, 40)), lambda c, w: c, cell_size=4, companions={"w": _unknown_chunks()}),
        id="companion-unknown-chunks",
    ),  # fmt: skip
    pytest.param(
        ValueError,
        r"must have a known shape.*compute_chunk_sizes",
        _exposure_of(_unknown_chunks()),
        id="exposure-unknown-chunks",
    ),
    pytest.param(ValueError, "image must be 2-d", _map(np.ones((4, 4, 4))), id="map_reduce-3d"),
    pytest.param(ValueError, "image must be 2-d", _map(np.ones(16)), id="map_reduce-1d"),
    pytest.param(
        ValueError, "an image array must be 2-d", _exposure_of(np.ones((2, 4, 4), np.float32)), id="exposure-3d"
    ),
    pytest.param(ValueError, r"image is empty \(shape \(0, 4\)\)", _map(np.ones((0, 4))), id="map_reduce-empty"),
    pytest.param(
        ValueError,
        r"the exposure is empty \(0 x 5 pixels\)",
        _exposure_of(np.zeros((5, 0), np.float32)),
        id="exposure-empty",
    ),
    # integer output where the reduce needs NaN
    pytest.param(
        ValueError,
        "dtype must be a floating or complex type",
        _map(np.ones((8, 8), np.int32), dtype=np.int32),
        id="map_reduce-int-dtype",
    ),
]


@pytest.mark.parametrize("exception, match, setup", REFUSED)
def test_refused_before_any_work(exception, match, setup):
    with pytest.raises(exception, match=match):
        setup()
    assert CountingMapper.calls == []


def test_rescale_refuses_a_non_finite_fwhm_naming_the_parameter():
    with pytest.raises(ValueError, match=r"cellSizeX = 10.0 \(scaled by the PSF FWHM nan\) is not a finite number"):
        rescale(10.0, math.nan, "cellSizeX")


def test_grid_too_large_is_refused_before_building_and_counts_match_small_grids():
    bbox = Box2I(Point2I(0, 0), Extent2I(1_000_000, 1_000_000))
    with pytest.raises(GridTooLargeError, match=r"3,906,375,001 cells \(62501 x 62501\)"):
        grid_centroids(bbox, (16, 16), (16, 16), "spacing")
    assert grid_shape(bbox, (16, 16), (16, 16), "spacing")[0] ** 2 > MAX_GRID_CELLS
    for adjust in ("spacing", "size", "none"):
        for width, cell, step in ((1, 1, 1), (7, 3, 2), (64, 10, 7), (65, 8, 8), (100, 30, 1)):
            small = Box2I(Point2I(4, -2), Extent2I(width, width + 3))
            cx, cy, _ = grid_centroids(small, (cell, cell + 1), (step, step + 2), adjust)
            nx, ny = grid_shape(small, (cell, cell + 1), (step, step + 2), adjust)
            assert (len(np.unique(cx)), len(np.unique(cy)), len(cx)) == (nx, ny, nx * ny)


# == 5. integer exposures ========================================================================


def _int_exposure():
    rng = np.random.default_rng(0)
    return imr.Exposure.from_arrays(rng.integers(0, 100, (20, 24), dtype=np.int32),
                                    variance=np.ones((20, 24), np.int32))  # fmt: skip


@pytest.mark.parametrize(
    "operation, fields, match",
    [
        ("average", {}, r"image plane is int32, but reduceOperation='average' writes NaN.*astype\(np.float32\)"),
        ("copy", {}, r"image plane is int32, but reduceOperation='copy' writes NaN"),
        ("sum", {"maskFailures": True}, r"image plane is int32, but maskFailures=True writes NaN"),
    ],
    ids=["average", "copy", "sum-maskFailures"],
)
def test_integer_exposure_is_refused_before_any_cell_runs(operation, fields, match):
    with pytest.raises(TypeError, match=match):
        make_task(operation, **fields).run(_int_exposure())
    assert CountingMapper.calls == []


def test_integer_exposure_sums_as_lsst_does():
    exposure = _int_exposure()
    task = make_task("sum", cellSizeX=6, cellSizeY=5, gridStepX=4, gridStepY=4)
    out = task.run(exposure).exposure
    assert out.image.array.dtype == np.int32
    assert_exposure_equals_reference(out, lsst_reference(task, exposure, "sum"))


def test_map_reduce_integer_input_with_gaps_gives_float64_nan():
    image = np.arange(30 * 30, dtype=np.int32).reshape(30, 30)
    with pytest.warns(UserWarning, match=NAN_PIXELS):
        out = map_reduce(image, Counter(), **GAP, scheduler="synchronous")
    grid, _ = regular_grid((30, 30), (4, 4), (10, 10), (1, 1), "none", False)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, numpy_reference((30, 30), grid.cells, lambda c: c * 2.0 + 1.0, "average"))


# == the command line ============================================================================


def test_cli_grid_too_large_is_one_line_exit_2(capsys):
    status = main(["grid", "--size", "1000000", "--cell-size", "16"])
    out, err = capsys.readouterr()
    assert status == 2 and out == "" and "Traceback" not in err
    assert len(err.splitlines()) == 1
    assert "would have 3,906,375,001 cells" in err and "use a larger --cell-size or --grid-step" in err
