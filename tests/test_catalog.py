"""Catalogs from cells: ownership, the reduced table, and detection equal to the whole image's.

The reference is always the whole image: `find_sources` run once on it (a plain call, no cells).
Per-cell detection with a border of at least the detector's reach must give its rows exactly,
each once, on tiling, overlapping and odd-sized grids, with xy0, on every scheduler; with no
border it must not (the negative control shows the test sees seam losses).
"""

# ruff: noqa: D103
from __future__ import annotations

import itertools

import numpy as np
import pytest
from array_funcs import detect_stars, two_columns_or_three

import imagemapreduce as imr
from imagemapreduce.catalog import CatalogError, CellOwnership, as_table, round_half_up
from imagemapreduce.detect import DetectMapper, find_sources, source_reach
from imagemapreduce.geom import Box2I, Extent2I, Point2I
from imagemapreduce.psf import GaussianPsf

SIGMA = 1.5
REACH = source_reach(SIGMA)


# -- ownership -----------------------------------------------------------------------------------


def _reference_owner(cores: np.ndarray, px: int, py: int) -> int:
    """A plain loop: the containing core whose centre is nearest, the first one on a tie."""
    best, best_distance = -1, None
    for number, (x0, y0, x1, y1) in enumerate(cores.tolist()):
        if x0 <= px <= x1 and y0 <= py <= y1:
            distance = (px - (x0 + x1) / 2) ** 2 + (py - (y0 + y1) / 2) ** 2
            if best_distance is None or distance < best_distance:
                best, best_distance = number, distance
    return best


@pytest.mark.parametrize(("cell", "step"), [(16, 16), (16, 10), (15, 7), (9, 12)])
def test_owner_is_the_nearest_containing_core(cell, step):
    shape = (70, 83)
    grid, _ = _grid(shape, cell, step)
    ownership = CellOwnership(grid.cells)
    py, px = np.mgrid[-2 : shape[0] + 2, -2 : shape[1] + 2]
    got = ownership.owners(px.ravel(), py.ravel())
    expected = [_reference_owner(grid.cells, x, y) for x, y in zip(px.ravel().tolist(), py.ravel().tolist())]
    np.testing.assert_array_equal(got, expected)
    inside = (px.ravel() >= 0) & (px.ravel() < shape[1]) & (py.ravel() >= 0) & (py.ravel() < shape[0])
    if step <= cell:  # the cores cover the image: every pixel in it has an owner
        assert (got[inside] >= 0).all()
    else:  # gaps between the cores, and nothing outside the image
        assert (got[inside] < 0).any()
    assert (got[~inside] < 0).all()


def test_ties_go_to_the_first_cell_in_grid_order():
    # Two identical cores: every pixel is equally near both.
    cores = np.array([[0, 0, 9, 9], [0, 0, 9, 9], [5, 0, 14, 9]])
    owners = CellOwnership(cores).owners(np.array([0, 4, 7, 12]), np.array([0, 4, 4, 4]))
    # x=7 lies at 2.5 from the first two centres (4.5) and 2.5 from the third (9.5): a tie too.
    np.testing.assert_array_equal(owners, [0, 0, 0, 2])


def test_rounding_is_half_up():
    np.testing.assert_array_equal(round_half_up(np.array([-0.5, 0.49, 0.5, 1.5, 2.5])), [0, 0, 1, 2, 3])


def _grid(shape, cell, step, border=0):
    from imagemapreduce.grid import regular_grid

    return regular_grid(shape, (cell, cell), (step, step), (border, border), "none", False)


# -- tables ----------------------------------------------------------------------------------------


def test_tables_of_every_kind_read_alike():
    import pandas as pd
    from astropy.table import Table

    columns = {"x": np.array([1.0, 2.0]), "y": np.array([3.0, 4.0]), "flux": np.array([5, 6], dtype=np.int16)}
    for result in (columns, Table(columns), pd.DataFrame(columns)):
        table = as_table(result, "cell (0, 0)")
        assert table.colnames == ["x", "y", "flux"]
        assert table["flux"].dtype == np.int16
        np.testing.assert_array_equal(table["y"], [3.0, 4.0])


@pytest.mark.parametrize(
    ("result", "message"),
    [
        ([1, 2], "returned list"),
        ({"y": np.zeros(2)}, "without a 'x' column"),
        ({"x": np.zeros(2), "y": np.zeros(3)}, "unequal length"),
        ({"x": np.arange(2), "y": np.zeros(2)}, "must hold floats"),
        ({"x": np.zeros((2, 2)), "y": np.zeros(2)}, "not 1-d"),
    ],
)
def test_bad_cell_tables_are_refused_naming_the_cell(result, message):
    with pytest.raises(CatalogError, match=message) as info:
        as_table(result, "cell (3, 4)")
    assert "cell (3, 4)" in str(info.value) or message == "not 1-d"


def test_map_reduce_catalog_keeps_dtypes_units_and_counts_drops():
    from astropy import units as u
    from astropy.table import Table

    def one_source_at_the_centre(cell, cell_box, expanded_box):
        # The cell's centre, in the expanded cell's array, plus a row outside every core.
        cx = (cell_box.getMinX() + cell_box.getMaxX()) / 2 - expanded_box.getMinX()
        cy = (cell_box.getMinY() + cell_box.getMaxY()) / 2 - expanded_box.getMinY()
        table = Table({"x": [cx, -50.0], "y": [cy, -50.0], "flux": np.array([7, 8], dtype=np.int32)})
        table["flux"].unit = u.adu
        return table

    catalog = imr.map_reduce(
        np.zeros((40, 60)), one_source_at_the_centre, cell_size=20, border=3, reduce="catalog", scheduler="sync"
    )
    assert len(catalog) == 6  # one per cell
    assert catalog["flux"].dtype == np.int32 and catalog["flux"].unit == u.adu
    assert catalog.meta["dropped_outside_cores"] == 6
    assert catalog.meta["dropped_duplicates"] == 0
    assert [tuple(g) for g in catalog["grid_index"]] == list(itertools.product(range(3), range(2)))
    np.testing.assert_array_equal(catalog["x"], [9.5, 9.5, 29.5, 29.5, 49.5, 49.5])


def test_empty_cells_are_fine_and_ragged_columns_are_an_error():
    def only_in_the_first_cell(cell, grid_index):
        if tuple(grid_index) == (0, 0):
            return {"x": np.array([2.0]), "y": np.array([2.0]), "v": np.array([1.5])}
        return {"x": [], "y": []}

    catalog = imr.map_reduce(np.zeros((20, 20)), only_in_the_first_cell, cell_size=10, reduce="catalog",
                             scheduler="sync")  # fmt: skip
    assert len(catalog) == 1 and catalog.colnames == ["x", "y", "v", "grid_index"]
    with pytest.raises(CatalogError, match=r"cell \(1, 0\) returned columns .*extra.* but cell \(0, 0\)"):
        imr.map_reduce(np.zeros((20, 20)), two_columns_or_three, cell_size=10, reduce="catalog", scheduler="sync")


def test_a_cell_that_returns_no_table_fails_naming_the_cell():
    with pytest.raises(
        imr.CellFailure, match=r"failed on cell \d+ \(box .*CatalogError: cell \(\d, \d\) returned ndarray"
    ):
        imr.map_reduce(np.zeros((20, 20)), lambda cell: cell, cell_size=10, reduce="catalog", scheduler="sync")


# -- detection equals the whole image's -------------------------------------------------------------


def _star_field(width=300, height=260, seed=4, xy0=(0, 0)):
    """A background-free star field with Poisson and read noise, its variance, and a Gaussian PSF."""
    psf = GaussianPsf(25, 25, SIGMA)
    exposure, _ = imr.psfmatch.simulate_exposure(
        width, height, psf=psf, n_stars=90, seed=seed, sky=0.0, flux_range=(400.0, 2e4), n_saturated=0,
        bad_column=False, xy0=xy0,
    )  # fmt: skip
    return exposure


@pytest.fixture(scope="module")
def field():
    exposure = _star_field()
    image = exposure.image.array.astype(np.float64)
    variance = exposure.variance.array.astype(np.float64)
    whole = find_sources(image, variance, threshold=5.0, sigma=SIGMA)
    assert len(whole) > 60  # a real test: many sources, some near every seam
    return image, variance, whole


def _same_rows(catalog, whole, exact=True):
    """Whether the per-cell catalog holds exactly the whole image's rows (positions to 1e-9 px)."""
    catalog = catalog.copy()
    catalog.sort(["y", "x"])
    reference = whole.copy()
    reference.sort(["y", "x"])
    if len(catalog) != len(reference):
        return False
    if not np.allclose(catalog["x"], reference["x"], rtol=0, atol=1e-9):
        return False
    if not np.allclose(catalog["y"], reference["y"], rtol=0, atol=1e-9):
        return False
    measured = ("peak_snr", "flux_aperture", "flux_aperture_err", "flag_masked")
    return all(np.array_equal(catalog[c], reference[c], equal_nan=True) for c in measured)


@pytest.mark.parametrize(("cell", "step"), [(64, 64), (64, 40), (61, 61), (47, 33)])
def test_per_cell_detection_is_the_whole_image_detection(field, cell, step):
    image, variance, whole = field
    catalog = imr.map_reduce(
        image, detect_stars, cell_size=cell, grid_step=step, border=REACH, reduce="catalog",
        companions={"variance": variance}, scheduler="threads",
    )  # fmt: skip
    assert _same_rows(catalog, whole)
    positions = set(zip(round_half_up(catalog["x"]).tolist(), round_half_up(catalog["y"]).tolist()))
    assert len(positions) == len(catalog), "no source twice"
    assert catalog.meta["dropped_duplicates"] > 0, "cells did see their neighbours' sources, and dropped them"


def test_negative_control_no_border_loses_or_breaks_sources_at_seams(field):
    image, variance, whole = field
    catalog = imr.map_reduce(image, detect_stars, cell_size=64, border=0, reduce="catalog",
                             companions={"variance": variance}, scheduler="threads")  # fmt: skip
    assert not _same_rows(catalog, whole)


@pytest.mark.parametrize("scheduler", ["synchronous", "processes"])
def test_detection_catalog_is_the_same_on_other_schedulers(field, scheduler):
    image, variance, whole = field
    catalog = imr.map_reduce(image, detect_stars, cell_size=64, grid_step=48, border=REACH, reduce="catalog",
                             companions={"variance": variance}, scheduler=scheduler, num_workers=2)  # fmt: skip
    assert _same_rows(catalog, whole)


def test_detection_catalog_on_a_local_cluster(field, local_cluster):
    image, variance, whole = field
    catalog = imr.map_reduce(image, detect_stars, cell_size=64, grid_step=48, border=REACH, reduce="catalog",
                             companions={"variance": variance}, scheduler=local_cluster)  # fmt: skip
    assert _same_rows(catalog, whole)


def test_lazy_input_gives_a_dask_dataframe_of_the_same_rows(field):
    import dask.array as da
    import dask.dataframe as dd

    image, variance, whole = field
    lazy = imr.map_reduce(
        da.from_array(image, chunks=100), detect_stars, cell_size=64, border=REACH, reduce="catalog",
        companions={"variance": variance}, cells_per_task=4,
    )  # fmt: skip
    assert isinstance(lazy, dd.DataFrame)
    frame = lazy.compute(scheduler="threads")
    assert lazy.npartitions > 1
    from astropy.table import Table

    table = Table.from_pandas(frame.drop(columns="grid_index"))
    assert _same_rows(table, whole)
    assert all(len(index) == 2 for index in frame["grid_index"])


# -- the Task and its detection mapper -------------------------------------------------------------


def _detect_task(cell, step, border, scheduler="threads"):
    config = imr.ImageMapReduceConfig()
    config.mapper.retarget(DetectMapper)
    config.mapper.sigma = SIGMA
    config.reducer.reduceOperation = "catalog"
    config.scaleByFwhm = False
    config.cellSizeX = config.cellSizeY = cell
    config.gridStepX = config.gridStepY = step
    config.borderSizeX = config.borderSizeY = border
    config.adjustGridOption = "none"
    config.scheduler = scheduler
    return imr.ImageMapReduceTask(config=config)


@pytest.fixture(scope="module")
def offset_field():
    """A star field with a non-zero xy0, and its whole-image catalog in parent coordinates."""
    exposure = _star_field(260, 220, seed=9, xy0=(1000, 2000))
    box = exposure.getBBox()
    mask = exposure.mask
    bits = 0
    for plane in ("BAD", "SAT", "NO_DATA"):
        if plane in mask.getMaskPlaneDict():
            bits |= mask.getPlaneBitMask(plane)
    whole = find_sources(
        exposure.image.array, exposure.variance.array, threshold=5.0, sigma=SIGMA, mask=mask.array, bad_bits=bits,
        psf=exposure.getPsf(), origin=(box.getMinX(), box.getMinY()),
    )  # fmt: skip
    return exposure, whole


@pytest.mark.parametrize(
    ("cell", "step", "scheduler"), [(64, 64, "threads"), (50, 36, "threads"), (57, 57, "synchronous")]
)
def test_task_catalog_with_xy0_is_bitwise_the_whole_image(offset_field, cell, step, scheduler):
    exposure, whole = offset_field
    task = _detect_task(cell, step, 1, scheduler)
    border = task.mapper.reach(exposure)
    task = _detect_task(cell, step, border, scheduler)
    catalog = task.run(exposure).catalog
    assert catalog["x"].min() >= 1000 and catalog["y"].min() >= 2000, "parent coordinates"
    catalog.sort(["peak_y", "peak_x"])
    assert len(catalog) == len(whole)
    for column in whole.colnames:
        assert np.array_equal(catalog[column], whole[column], equal_nan=True), column
    assert np.isfinite(catalog["flux_psf"]).all()
    cells = np.asarray(catalog["cell"])
    for row, number in zip(catalog, cells):
        box = task.boxes0[number]
        assert box.contains(Point2I(int(np.floor(row["x"] + 0.5)), int(np.floor(row["y"] + 0.5))))


def test_task_catalog_on_a_local_cluster(offset_field, local_cluster):
    exposure, whole = offset_field
    task = _detect_task(64, 48, 1)
    task = imr.ImageMapReduceTask(config=_detect_task(64, 48, task.mapper.reach(exposure)).config,
                                  scheduler=local_cluster)  # fmt: skip
    catalog = task.run(exposure).catalog
    catalog.sort(["peak_y", "peak_x"])
    for column in whole.colnames:
        assert np.array_equal(catalog[column], whole[column], equal_nan=True), column


def test_task_catalog_negative_control(offset_field):
    exposure, whole = offset_field
    catalog = _detect_task(64, 64, 1).run(exposure).catalog
    catalog.sort(["peak_y", "peak_x"])
    same = len(catalog) == len(whole) and all(
        np.array_equal(catalog[c], whole[c], equal_nan=True) for c in whole.colnames
    )
    assert not same


def test_task_catalog_mapper_must_return_a_catalog():
    from cell_mappers import EchoMapper

    config = imr.ImageMapReduceConfig()
    config.mapper.retarget(EchoMapper)
    config.reducer.reduceOperation = "catalog"
    config.scaleByFwhm = False
    config.cellSizeX = config.cellSizeY = 20
    config.borderSizeX = config.borderSizeY = 2
    config.scheduler = "synchronous"
    exposure = imr.ExposureF(40, 40)
    with pytest.raises(CatalogError, match=r"cell 0 .*Struct\(catalog=table\)"):
        imr.ImageMapReduceTask(config=config).run(exposure)


def test_reducer_run_without_boxes_says_what_it_needs():
    reducer = imr.ImageMapReduceTask(config=_detect_task(20, 20, 2).config).reducer
    with pytest.raises(TypeError, match="boxes0=task.boxes0"):
        reducer.run([], imr.ExposureF(10, 10))


def test_detect_mapper_reach_covers_its_psf_stamp():
    exposure = _star_field(80, 80)
    mapper = _detect_task(20, 20, 2).mapper
    half = exposure.getPsf().computeKernelImage(exposure.getBBox().getCenter()).array.shape[0] // 2
    assert mapper.reach(exposure) >= half
    box = Box2I(Point2I(0, 0), Extent2I(5, 5))
    assert not box.isEmpty()
