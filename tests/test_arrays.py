"""`map_reduce` on numpy, Dask and xarray input: equal to a plain serial loop on every scheduler."""

# ruff: noqa: D103
from __future__ import annotations

import functools
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import array_funcs as af
import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
from conftest import make_exposure
from scipy import ndimage

from imagemapreduce import Box2I, CellFailure, Extent2I, Point2I
from imagemapreduce.arrays import map_reduce
from imagemapreduce.grid import cell_boxes, grid_centroids
from imagemapreduce.weights import Weighting

SHAPE = (53, 67)  # rows, cols: divisible by none of the cell sizes below
UNEVEN = ((20, 13, 20), (7, 30, 30))
# cell_size, grid_step, border, region_size -- all (rows, cols) or int; none leaves a 1-pixel corner cell.
GRIDS = {
    "tiles": dict(cell_size=16, grid_step=None, border=0, region_size=1024),
    "overlap": dict(cell_size=(12, 20), grid_step=(9, 14), border=(3, 5), region_size=23),
    "bordered": dict(cell_size=12, grid_step=9, border=4, region_size=17),
}


def _pair(value):
    return (value, value) if isinstance(value, int) else value


def reference_boxes(shape, cell_size, grid_step=None, border=0):
    """LSST's adjust='none' grid, written out: cells start every step, x-major; (rows, cols) slices."""
    (ch, cw), (bh, bw) = _pair(cell_size), _pair(border)
    sh, sw = _pair(grid_step) if grid_step is not None else (ch, cw)
    height, width = shape
    out = []
    for ix, c0 in enumerate(range(0, width, sw)):
        for iy, r0 in enumerate(range(0, height, sh)):
            r1, c1 = min(r0 + ch, height), min(c0 + cw, width)
            e0, e1 = (max(r0 - bh, 0), min(r1 + bh, height)), (max(c0 - bw, 0), min(c1 + bw, width))
            out.append(((slice(r0, r1), slice(c0, c1)), (slice(*e0), slice(*e1)), (ix, iy)))
    return out


def reference_map_reduce(image, func, reduce, cell_size, grid_step=None, border=0, **_):
    """Run the serial loop: each expanded cell through func, cores combined in grid order, NaN invalid."""
    out = np.full(image.shape, np.nan if reduce == "copy" else 0.0)
    count = np.zeros(image.shape, dtype=np.int32)
    for (rows, cols), (erows, ecols), _ in reference_boxes(image.shape, cell_size, grid_step, border):
        core = func(image[erows, ecols])[rows.start - erows.start : rows.stop - erows.start,
                                         cols.start - ecols.start : cols.stop - ecols.start]  # fmt: skip
        valid = ~np.isnan(core)
        view = out[rows, cols]
        if reduce == "copy":
            view[valid] = core[valid]
        else:
            view[valid] += core[valid]
        count[rows, cols] += valid
    if reduce == "average":
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(count > 0, out / count, np.nan)
    return out


@functools.cache
def input_image():
    image = np.random.default_rng(3).normal(5.0, 2.0, size=SHAPE)
    image[[5, 30, 52], [7, 40, 66]] = np.nan  # input NaN reaches func and stays invalid
    return image


@functools.cache
def reference(grid, reduce):
    return reference_map_reduce(input_image(), af.minus_min_with_holes, reduce, **GRIDS[grid])


def make_input(kind, image):
    if kind == "numpy":
        return image
    lazy = da.from_array(image, chunks=UNEVEN)
    if kind == "dask":
        return lazy
    data = image if kind == "xarray-numpy" else lazy
    coords = {"y": 100 + np.arange(image.shape[0]), "x": -5 + np.arange(image.shape[1])}
    return xr.DataArray(data, dims=("y", "x"), coords=coords, name="flux", attrs={"units": "adu"})


@pytest.fixture(scope="module")
def process_pool():
    """One pool of two spawned processes for every 'processes' case (a new pool per call is slow)."""
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool


@pytest.fixture(params=["synchronous", "threads", "processes", "cluster"])
def scheduler(request, process_pool):
    if request.param == "cluster":
        yield request.getfixturevalue("local_cluster")
    elif request.param == "processes":
        # dask.multiprocessing.get takes its pool from the config: the 'processes' path, one pool.
        with dask.config.set(pool=process_pool):
            yield "processes"
    else:
        yield request.param


@pytest.mark.parametrize("grid", sorted(GRIDS))
@pytest.mark.parametrize("reduce", ["copy", "sum", "average"])
@pytest.mark.parametrize("kind", ["numpy", "dask", "xarray-numpy", "xarray-dask"])
def test_equals_serial_loop_on_every_scheduler(scheduler, kind, reduce, grid):
    image = make_input(kind, input_image())
    settings = GRIDS[grid]
    lazy = kind in ("dask", "xarray-dask")
    run = {} if lazy else {"scheduler": scheduler, "num_workers": 2 if scheduler == "threads" else None}
    out = map_reduce(image, af.minus_min_with_holes, reduce=reduce, **settings, **run)
    if kind.startswith("xarray"):
        assert isinstance(out, xr.DataArray)
        assert out.dims == image.dims and out.name == "flux" and out.attrs == {"units": "adu"}
        assert out.x.equals(image.x) and out.y.equals(image.y)
    if lazy:
        data = out.data if kind == "xarray-dask" else out
        assert isinstance(data, da.Array)
        assert data.chunks[0][0] == min(settings["region_size"], SHAPE[0])  # chunks are the regions
        out = out.compute(scheduler=scheduler)
    values = out.values if kind.startswith("xarray") else out
    assert isinstance(values, np.ndarray) and values.dtype == np.float64
    np.testing.assert_array_equal(values, reference(grid, reduce))


@pytest.mark.parametrize("kind", ["dask", "xarray-dask"])
def test_compute_true_gives_numpy_from_dask(kind, scheduler):
    out = map_reduce(make_input(kind, input_image()), af.minus_min_with_holes, reduce="average", compute=True,
                     scheduler=scheduler, **GRIDS["overlap"])  # fmt: skip
    values = out.values if kind == "xarray-dask" else out
    assert isinstance(values, np.ndarray)
    np.testing.assert_array_equal(values, reference("overlap", "average"))


def test_compute_false_gives_lazy_from_numpy():
    out = map_reduce(input_image(), af.minus_min_with_holes, reduce="sum", compute=False, **GRIDS["bordered"])
    assert isinstance(out, da.Array)
    np.testing.assert_array_equal(out.compute(scheduler="sync"), reference("bordered", "sum"))


def test_lazy_result_runs_nothing_until_computed():
    af.CALLS.clear()
    image = np.arange(40.0 * 30).reshape(40, 30)
    lazy = map_reduce(da.from_array(image, chunks=(13, 11)), af.counted_double, cell_size=10, border=2)
    lazy_from_numpy = map_reduce(image, af.counted_double, cell_size=10, compute=False)
    wrapped = map_reduce(xr.DataArray(da.from_array(image, chunks=16)), af.counted_double, cell_size=10)
    assert isinstance(lazy, da.Array) and isinstance(lazy_from_numpy, da.Array)
    assert isinstance(wrapped.data, da.Array)
    assert af.CALLS == [], "building a lazy result must not run func"
    with dask.config.set(scheduler="synchronous"):
        np.testing.assert_array_equal(lazy.compute(), image * 2)
    assert len(af.CALLS) == 12  # 3 columns x 4 rows of cells, each run once
    assert sorted(set(af.CALLS)) == [(12, 12), (12, 14), (14, 12), (14, 14)]


def test_gaussian_filter_copy_equals_scipy_on_whole_image():
    image = np.random.default_rng(1).normal(size=(61, 70))
    sigma = 1.5  # scipy's radius: int(4 * 1.5 + 0.5) = 6 pixels
    whole = ndimage.gaussian_filter(image, sigma, truncate=4.0)
    kw = dict(reduce="copy", scheduler="threads", func_kwargs={"sigma": sigma})
    exact = map_reduce(image, af.smooth, cell_size=(16, 13), border=6, **kw)
    # The expanded cell is clipped exactly at the image edge, where scipy reflects too: equal everywhere.
    np.testing.assert_array_equal(exact, whole)
    short = map_reduce(image, af.smooth, cell_size=(16, 13), border=3, **kw)
    assert not np.array_equal(short, whole), "a border shorter than the kernel must show at cell edges"


def test_pointwise_function_any_grid_is_exact():
    image = input_image()
    for grid in GRIDS.values():
        out = map_reduce(image, af.affine, reduce="copy", func_kwargs={"scale": 3.0, "offset": 0.5}, **grid)
        np.testing.assert_array_equal(out, image * 3.0 + 0.5)


def test_cell_shaped_result_is_accepted():
    out = map_reduce(input_image(), af.core_only, reduce="copy", scheduler="sync", **GRIDS["overlap"])
    expected = reference_map_reduce(input_image(), af.minus_min_with_holes, "copy", **GRIDS["overlap"])
    # core_only pokes holes relative to the cell, not the expanded cell: compare where both are valid.
    both = ~np.isnan(out) & ~np.isnan(expected)
    assert both.mean() > 0.8
    np.testing.assert_array_equal(out[both], expected[both])


def test_geometry_keywords_match_the_grid_and_order():
    image = make_input("xarray-dask", input_image())
    settings = GRIDS["overlap"]
    sizes = {k: settings[k] for k in ("cell_size", "grid_step", "border")}
    results = map_reduce(image, af.geometry, reduce="none", scheduler="threads", **sizes)
    expected = reference_boxes(SHAPE, **sizes)
    assert len(results) == len(expected)
    for (cell_box, expanded_box, grid_index, shape, _), (core, expanded, index) in zip(results, expected, strict=True):
        assert cell_box.slices() == core and expanded_box.slices() == expanded
        assert grid_index == index
        assert shape == (expanded_box.getHeight(), expanded_box.getWidth())


def test_numpy_cells_are_read_only_views():
    results = map_reduce(input_image(), af.geometry, cell_size=20, reduce="none", scheduler="sync")
    assert not any(r[4] for r in results)


@pytest.mark.parametrize("adjust", ["spacing", "size"])
def test_adjust_options_follow_lsst_grid(adjust):
    """Sizes given as (rows, cols) reach LSST's grid as (x, y)."""
    results = map_reduce(input_image(), af.geometry, cell_size=(10, 20), grid_step=(8, 15), border=(1, 2),
                         adjust=adjust, reduce="none", scheduler="sync")  # fmt: skip
    bbox = Box2I(Point2I(0, 0), Extent2I(SHAPE[1], SHAPE[0]))
    cx, cy, cell = grid_centroids(bbox, (20, 10), (15, 8), adjust)
    grid = cell_boxes(bbox, cx, cy, cell, (2, 1))
    assert [r[0] for r in results] == grid.boxes0
    assert [r[1] for r in results] == grid.boxes1


def test_dropped_corner_cell_keeps_grid_indices_and_warns():
    image = np.ones((21, 31))  # 1-pixel last row and column: LSST drops the 1x1 corner cell
    results = map_reduce(image, af.geometry, cell_size=10, reduce="none", scheduler="sync")
    assert len(results) == 4 * 3 - 1
    for cell_box, _, (ix, iy), _, _ in results:
        assert (cell_box.getMinX() // 10, cell_box.getMinY() // 10) == (ix, iy)
    with pytest.warns(UserWarning, match="1 pixel of the 21x31 image lie in no cell and will be NaN"):
        out = map_reduce(image, af.affine, cell_size=10, scheduler="sync")
    assert np.isnan(out[20, 30]) and np.isfinite(np.delete(out.ravel(), -1)).all()


def test_gaps_warn_and_stay_zero_for_sum():
    with pytest.warns(UserWarning, match="lie in no cell and will be 0"):
        out = map_reduce(np.ones((12, 12)), af.affine, cell_size=4, grid_step=6, reduce="sum", scheduler="sync")
    assert (out[4:6, :] == 0).all() and (out[:4, :4] == 3).all()


@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_companions_are_cut_like_the_image(kind, scheduler):
    image = input_image()
    other = np.random.default_rng(9).uniform(size=SHAPE)
    companions = {"other": make_input(kind, other)}
    out = map_reduce(image, af.minus_companion, cell_size=(12, 9), border=3, reduce="copy",
                     scheduler=scheduler, companions=companions, func_kwargs={"factor": 2.0})  # fmt: skip
    np.testing.assert_array_equal(out, image - 2.0 * other)


def test_dataarray_companion_is_transposed_by_dim_name():
    image = make_input("xarray-numpy", input_image())
    other = image.copy(data=np.random.default_rng(2).uniform(size=SHAPE)).transpose("x", "y")
    out = map_reduce(image, af.minus_companion, cell_size=16, reduce="copy", scheduler="sync",
                     companions={"other": other})  # fmt: skip
    np.testing.assert_array_equal(out.values, image.values - other.transpose("y", "x").values)


def test_reduce_none_is_in_grid_order_on_every_scheduler(scheduler):
    image = make_input("dask", input_image())
    sums = map_reduce(image, af.cell_sum, reduce="none", scheduler=scheduler, cell_size=(11, 17), border=2)
    expected = [af.cell_sum(input_image()[e]) for _, e, _ in reference_boxes(SHAPE, (11, 17), border=2)]
    assert sums == expected


def test_cosine_weights_blend_cell_constants_smoothly():
    image = np.zeros((64, 80))
    kw = dict(cell_size=16, grid_step=8, func=af.smooth_constant, scheduler="sync")
    uniform = map_reduce(image, **kw)
    cosine = map_reduce(image, weights="cosine", **kw)

    def worst_jump(out):
        return max(np.abs(np.diff(out, axis=0)).max(), np.abs(np.diff(out, axis=1)).max())

    def typical_jump(out):
        return np.median(np.abs(np.diff(out, axis=1)))

    assert worst_jump(uniform) > 10 * typical_jump(uniform), "uniform averaging steps at cell edges"
    assert worst_jump(cosine) < 0.35 * worst_jump(uniform)
    assert worst_jump(cosine) < 4 * np.percentile(np.abs(np.diff(cosine, axis=1)), 90)


def test_custom_weight_function_and_weighting_object():
    image = input_image()
    ones = map_reduce(image, af.minus_min_with_holes, weights=af.ones_weight, **GRIDS["overlap"])
    np.testing.assert_allclose(ones, reference("overlap", "average"), rtol=1e-12)
    narrow = map_reduce(image, af.minus_min_with_holes, weights=Weighting("gaussian", 0.1), **GRIDS["overlap"])
    assert np.nanmax(np.abs(narrow - ones)) > 0


def test_integer_input_gives_float64_and_dtype_is_honoured():
    image = np.arange(24, dtype=np.int16).reshape(4, 6)
    out = map_reduce(image, af.affine, cell_size=2, scheduler="sync")
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, image * 2.0 + 1.0)
    positive = map_reduce(image, af.is_odd, cell_size=(3, 4), reduce="copy", scheduler="sync")
    np.testing.assert_array_equal(positive, image % 2 == 1)  # a boolean result is stitched as 0.0 / 1.0
    complex_image = image + 1j * image
    np.testing.assert_array_equal(map_reduce(complex_image, af.affine, cell_size=3), complex_image * 2 + 1)
    single = map_reduce(image.astype(np.float64), af.affine, cell_size=2, dtype=np.float32, scheduler="sync")
    assert single.dtype == np.float32


def test_func_errors_name_the_cell():
    with pytest.raises(CellFailure, match=r"failed on cell \d+ .*RuntimeError: too wide"):
        map_reduce(np.ones((8, 8)), af.fail_on_big, cell_size=(4, 6), scheduler="sync")
    with pytest.raises(ValueError, match=r"function returned shape \(5, 8\)"):
        map_reduce(np.ones((12, 8)), af.wrong_shape, cell_size=(6, 8), scheduler="sync")


def _image(shape=(8, 8)):
    return np.ones(shape)


ERRORS = [
    # (description, call keywords, exception, message)
    (
        "3-d image",
        dict(image=np.ones((2, 3, 4))),
        ValueError,
        r"image must be 2-d \(rows, cols\), got shape \(2, 3, 4\)",
    ),
    ("1-d image", dict(image=np.ones(5)), ValueError, "image must be 2-d"),
    ("3-d DataArray", dict(image=xr.DataArray(np.ones((2, 3, 4)))), ValueError, "select one plane first"),
    ("empty image", dict(image=np.ones((0, 4))), ValueError, "image is empty"),
    ("exposure", dict(image=make_exposure(8, 8, psf=False)), TypeError, "map_reduce takes plain arrays"),
    ("text image", dict(image=np.array([["a", "b"], ["c", "d"]])), TypeError, "image must hold numbers"),
    ("func not callable", dict(func=42), TypeError, "func must be callable"),
    ("cell_size 0", dict(cell_size=0), ValueError, "cell_size must be at least 1 pixel"),
    ("cell_size pair with 0", dict(cell_size=(4, 0)), ValueError, "cell_size must be at least 1 pixel"),
    ("cell_size float", dict(cell_size=2.5), TypeError, r"cell_size must be an int or a \(rows, cols\) pair"),
    ("cell_size bool", dict(cell_size=True), TypeError, "cell_size must be an int"),
    ("cell_size triple", dict(cell_size=(1, 2, 3)), TypeError, "cell_size must be an int"),
    ("grid_step 0", dict(grid_step=0), ValueError, "grid_step must be at least 1 pixel"),
    ("border -1", dict(border=-1), ValueError, "border must be at least 0 pixels"),
    ("adjust unknown", dict(adjust="even"), ValueError, "adjust must be one of 'none', 'spacing', 'size'"),
    (
        "reduce unknown",
        dict(reduce="median"),
        ValueError,
        "reduce must be one of 'copy', 'sum', 'average', 'none'",
    ),
    ("reduce coaddPsf", dict(reduce="coaddPsf"), ValueError, "plain arrays have no PSF"),
    ("inverse variance", dict(weights="inverseVariance"), ValueError, "needs a variance plane"),
    ("unknown weights", dict(weights="hamming"), ValueError, "unknown weights 'hamming'"),
    ("weights type", dict(weights=3), TypeError, "weights must be a name, a callable or a Weighting"),
    (
        "window with copy",
        dict(weights="cosine", reduce="copy"),
        ValueError,
        "only applies to reduce='average'",
    ),
    ("companions type", dict(companions=[np.ones((8, 8))]), TypeError, "companions must be a mapping"),
    (
        "companion shape",
        dict(companions={"other": np.ones((8, 9))}, func=af.minus_companion),
        ValueError,
        r"companion 'other' has shape \(8, 9\) but the image has shape \(8, 8\)",
    ),
    (
        "companion 3-d",
        dict(companions={"other": np.ones((8, 8, 1))}, func=af.minus_companion),
        ValueError,
        "companion 'other' must be 2-d",
    ),
    (
        "companion geometry name",
        dict(companions={"cell_box": _image()}),
        ValueError,
        "clashes with a geometry keyword",
    ),
    ("companion bad name", dict(companions={"my other": _image()}), ValueError, "valid Python identifier"),
    (
        "companion vs func_kwargs",
        dict(companions={"other": _image()}, func=af.minus_companion, func_kwargs={"other": 1}),
        ValueError,
        "clashes with a func_kwargs entry",
    ),
    (
        "func rejects companion",
        dict(companions={"other": _image()}),
        TypeError,
        r"func cannot be called as func\(cell, other\)",
    ),
    ("func lacks keyword", dict(func=af.minus_companion), TypeError, "missing a required argument: 'other'"),
    ("func_kwargs type", dict(func_kwargs=[("scale", 2)]), TypeError, "func_kwargs must be a mapping"),
    (
        "geometry in func_kwargs",
        dict(func=af.core_only, func_kwargs={"cell_box": 1}),
        ValueError,
        "clash with the geometry keywords",
    ),
    ("region_size 0", dict(region_size=0), ValueError, "region_size must be a positive int"),
    ("compute not bool", dict(compute="yes"), TypeError, "compute must be None, True or False"),
    ("force_even_sized", dict(force_even_sized="yes"), TypeError, "force_even_sized must be True or False"),
    (
        "lazy with scheduler",
        dict(image=da.ones((8, 8)), scheduler="threads"),
        ValueError,
        r"scheduler and num_workers apply only .* call result.compute\(scheduler=...\)",
    ),
    (
        "lazy with num_workers",
        dict(compute=False, num_workers=2),
        ValueError,
        "scheduler and num_workers apply only",
    ),
    (
        "none not lazy",
        dict(reduce="none", compute=False),
        ValueError,
        "reduce='none' returns a computed list",
    ),
    ("integer dtype", dict(dtype=np.int32), ValueError, "dtype must be a floating or complex type"),
    ("complex weighted", dict(dtype=complex, weights="cosine"), ValueError, "needs a real output"),
    ("unknown scheduler", dict(scheduler="gpu"), ValueError, "unknown scheduler 'gpu'"),
    ("bad num_workers", dict(num_workers=0), ValueError, "num_workers must be a positive integer"),
]


@pytest.mark.parametrize("what, kwargs, error, match", ERRORS, ids=[e[0] for e in ERRORS])
def test_bad_arguments_fail_before_running(what, kwargs, error, match):
    af.CALLS.clear()
    call = dict(image=_image(), func=af.counted_double, cell_size=4)
    call.update(kwargs)
    with pytest.raises(error, match=match):
        map_reduce(call.pop("image"), call.pop("func"), **call)
    assert af.CALLS == [], f"{what}: func ran before the error"
