"""Weighted stitching: taper windows leave no seams, inverse variance matches a numpy reference."""

# ruff: noqa: D101, D102, D103
from __future__ import annotations

import numpy as np
import pytest
from cell_mappers import CentreValueMapper
from conftest import make_exposure

import imagemapreduce as imr
from imagemapreduce.pipe_base import Struct
from imagemapreduce.weights import make_weighting, window_1d


class SmoothFieldMapper(imr.ImageMapper):
    """Each cell becomes one value: a smooth field sampled at the cell's centre (a per-cell model)."""

    _DefaultName = "test_SmoothFieldMapper"

    def run(self, subExposure, expandedSubExposure, fullBBox, **kwargs):
        out = subExposure.clone()
        c = subExposure.getBBox().getCenter()
        out.image.array[...] = np.float32(np.sin(c.x / 40.0) * 5.0 + 0.05 * c.y)
        return Struct(subExposure=out)


class NoisyCellMapper(imr.ImageMapper):
    """Each cell: the input plus a cell-dependent offset, with a cell-dependent variance."""

    _DefaultName = "test_NoisyCellMapper"

    def run(self, subExposure, expandedSubExposure, fullBBox, **kwargs):
        out = subExposure.clone()
        c = subExposure.getBBox().getCenter()
        out.image.array += np.float32(0.1 * c.x)
        out.variance.array *= np.float32(1.0 + (int(c.x) + 2 * int(c.y)) % 5)
        return Struct(subExposure=out)


def run(exposure, mapper, weighting, scheduler="synchronous", region=1024, **grid):
    config = imr.ImageMapReduceConfig()
    config.mapper.retarget(mapper)
    config.reducer.reduceOperation = "average"
    config.reducer.weighting = weighting
    config.scheduler = scheduler
    config.stitchRegionSize = region
    config.scaleByFwhm = False
    config.adjustGridOption = "none"
    fields = dict(cellSizeX=32, cellSizeY=32, gridStepX=16, gridStepY=16, borderSizeX=4, borderSizeY=4)
    fields.update(grid)
    for name, value in fields.items():
        setattr(config, name, value)
    task = imr.ImageMapReduceTask(config=config)
    return task, task.run(exposure).exposure


def edge_and_inside_steps(image, boxes, origin):
    """Largest |difference| between x-neighbours across any cell edge, and elsewhere."""
    edges = np.zeros(image.shape[1] - 1, bool)
    for box in boxes:
        for x in (box.getMinX() - origin.x - 1, box.getMaxX() - origin.x):
            if 0 <= x < edges.size:
                edges[x] = True
    steps = np.abs(np.diff(image.astype(np.float64), axis=1))
    return steps[:, edges].max(), steps[:, ~edges].max()


def test_window_1d_is_positive_symmetric_and_peaks_in_the_middle():
    for kind in ("linear", "cosine", "gaussian"):
        for n in (1, 2, 7, 32):
            w = window_1d(kind, n)
            assert w.shape == (n,)
            assert np.all(w > 0)
            np.testing.assert_allclose(w, w[::-1])
            assert w.max() == w[n // 2] or n % 2 == 0
    np.testing.assert_allclose(window_1d("linear", 4), [0.25, 0.75, 0.75, 0.25])
    np.testing.assert_allclose(window_1d("cosine", 2), [0.5, 0.5])


def test_average_shows_seams_and_windows_remove_them():
    exposure = make_exposure(160, 96, xy0=(5, 9), seed=2)
    task, flat = run(exposure, SmoothFieldMapper, "uniform")
    edge, inside = edge_and_inside_steps(flat.image.array, task.boxes0, exposure.getXY0())
    assert inside == 0 and edge > 0.3, "LSST's average is piecewise constant with steps at cell edges"
    for kind in ("linear", "cosine", "gaussian"):
        task, smooth = run(exposure, SmoothFieldMapper, kind)
        edge, inside = edge_and_inside_steps(smooth.image.array, task.boxes0, exposure.getXY0())
        assert inside > 0
        assert edge <= 3 * inside, f"{kind}: seam {edge:.4f} vs largest step inside a cell {inside:.4f}"
        assert np.isfinite(smooth.image.array).all()


def test_windows_keep_the_image_edge_and_single_cell_pixels():
    """Where one cell alone covers a pixel, normalising by the weights gives that cell's value."""
    exposure = make_exposure(70, 50, seed=4)
    task, out = run(exposure, CentreValueMapper, "cosine", cellSizeX=20, cellSizeY=20, gridStepX=25, gridStepY=25)
    _, ref = run(exposure, CentreValueMapper, "uniform", cellSizeX=20, cellSizeY=20, gridStepX=25, gridStepY=25)
    np.testing.assert_allclose(out.image.array, ref.image.array, rtol=1e-6, equal_nan=True)
    uncovered = np.isnan(ref.image.array)
    bad = out.mask.getPlaneBitMask("INVALID_MAPREDUCE")
    assert np.all(out.mask.array[uncovered] & bad) and not np.any(out.mask.array[~uncovered] & bad)


def test_inverse_variance_matches_numpy_reference():
    exposure = make_exposure(90, 70, xy0=(-3, 4), seed=5)
    task, out = run(exposure, NoisyCellMapper, "inverseVariance")
    shape, origin = exposure.image.array.shape, exposure.getXY0()
    sum_w, sum_wx, sum_wv = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    mapper = NoisyCellMapper()
    for box0, box1 in zip(task.boxes0, task.boxes1):
        res = mapper.run(exposure[box0].clone(), exposure[box1].clone(), exposure.getBBox()).subExposure
        sl = box0.slices(origin)
        v = res.variance.array.astype(float)
        sum_w[sl] += 1 / v
        sum_wx[sl] += res.image.array / v
        sum_wv[sl] += 1.0  # (1/v) * v
    np.testing.assert_allclose(out.image.array, sum_wx / sum_w, rtol=2e-6)
    np.testing.assert_allclose(out.variance.array, sum_wv / sum_w, rtol=2e-6)


def test_independent_variance_formula():
    from imagemapreduce.builtin_mappers import IdentityMapper

    exposure = make_exposure(64, 64, seed=6)
    exposure.variance.array[...] = 2.0
    for formula in ("correlated", "independent"):
        config = imr.ImageMapReduceConfig()
        config.mapper.retarget(IdentityMapper)
        config.scaleByFwhm = False
        config.adjustGridOption = "none"
        config.cellSizeX = config.cellSizeY = 16
        config.gridStepX = config.gridStepY = 8
        config.reducer.weighting = "linear"
        config.reducer.weightedVariance = formula
        config.scheduler = "synchronous"
        out = imr.ImageMapReduceTask(config=config).run(exposure).exposure
        interior = out.variance.array[10:50, 10:50]
        if formula == "correlated":
            np.testing.assert_allclose(interior, 2.0, rtol=1e-6)
        else:
            assert np.all(interior < 2.0) and np.all(interior > 0.5), "averaging independent errors shrinks them"


@pytest.mark.parametrize("weighting", ["linear", "gaussian", "inverseVariance"])
def test_weighted_bitwise_identical_across_schedulers(weighting, local_cluster):
    exposure = make_exposure(130, 90, xy0=(3, -8), seed=8)
    _, reference = run(exposure, NoisyCellMapper, weighting, "synchronous")
    for scheduler, region in (("threads", 37), ("processes", 64)):
        _, out = run(exposure, NoisyCellMapper, weighting, scheduler, region)
        for plane in ("image", "mask", "variance"):
            assert getattr(out, plane).array.tobytes() == getattr(reference, plane).array.tobytes()
    _, out = run_on_client(exposure, weighting, local_cluster)
    assert out.image.array.tobytes() == reference.image.array.tobytes()


def run_on_client(exposure, weighting, client):
    config = imr.ImageMapReduceConfig()
    config.mapper.retarget(NoisyCellMapper)
    config.reducer.weighting = weighting
    config.scaleByFwhm = False
    config.adjustGridOption = "none"
    for name, value in dict(cellSizeX=32, cellSizeY=32, gridStepX=16, gridStepY=16, borderSizeX=4,
                            borderSizeY=4, stitchRegionSize=50).items():  # fmt: skip
        setattr(config, name, value)
    task = imr.ImageMapReduceTask(config=config, scheduler=client)
    return task, task.run(exposure).exposure


def test_uniform_weighting_is_lsst_average_bit_for_bit():
    exposure = make_exposure(80, 64, seed=9)
    assert make_weighting("uniform").is_uniform
    assert imr.ImageMapReduceConfig().reducer.weighting == "uniform"
    _, plain = run(exposure, NoisyCellMapper, "uniform")
    config = imr.ImageMapReduceConfig()
    config.mapper.retarget(NoisyCellMapper)
    config.scaleByFwhm = False
    config.adjustGridOption = "none"
    for name, value in dict(cellSizeX=32, cellSizeY=32, gridStepX=16, gridStepY=16, borderSizeX=4,
                            borderSizeY=4).items():  # fmt: skip
        setattr(config, name, value)
    task = imr.ImageMapReduceTask(config=config)
    task.config.reducer.weighting = "uniform"
    assert task.run(exposure).exposure.image.array.tobytes() == plain.image.array.tobytes()


def test_windowed_coaddpsf_follows_pixel_weights():
    exposure = make_exposure(96, 96, seed=10)

    class WidthPerCellMapper(imr.ImageMapper):
        _DefaultName = "test_WidthPerCellMapper"

        def run(self, subExposure, expandedSubExposure, fullBBox, **kwargs):
            out = subExposure.clone()
            out.setPsf(imr.GaussianPsf(15, 15, 1.0 + subExposure.getBBox().getCenter().x / 50.0))
            return Struct(subExposure=out)

    task, out = run(exposure, WidthPerCellMapper, "linear")
    psf = out.getPsf()
    assert isinstance(psf, imr.psf.WindowedCoaddPsf)
    position = imr.Point2D(40.0, 40.0)
    weights, images = [], []
    for box in task.boxes0:
        if box.contains(imr.Point2I(40, 40)):
            wx = window_1d("linear", box.getWidth())[40 - box.getMinX()]
            wy = window_1d("linear", box.getHeight())[40 - box.getMinY()]
            weights.append(wx * wy)
            images.append(imr.GaussianPsf(15, 15, 1.0 + box.getCenter().x / 50.0).computeKernelImage(position).array)
    assert len(weights) >= 2 and len(set(np.round(weights, 6))) >= 2
    expected = np.tensordot(weights, images, axes=1)
    np.testing.assert_allclose(psf.computeKernelImage(position).array, expected / expected.sum(), atol=1e-12)


@pytest.mark.parametrize(
    "fields, match",
    [
        (dict(reduceOperation="copy", weighting="linear"), "applies to reduceOperation='average' only"),
        (dict(weighting="custom"), "needs weightFunction"),
    ],
)
def test_weighting_config_validation(fields, match):
    import lsst.pex.config as pexConfig

    config = imr.ImageReducerConfig()
    for name, value in fields.items():
        setattr(config, name, value)
    with pytest.raises(pexConfig.FieldValidationError, match=match):
        config.validate()


def test_custom_weight_function_from_config():
    exposure = make_exposure(64, 48, seed=11)
    config = imr.ImageMapReduceConfig()
    config.mapper.retarget(NoisyCellMapper)
    config.scaleByFwhm = False
    config.adjustGridOption = "none"
    config.reducer.weighting = "custom"
    config.reducer.weightFunction = "weight_functions:left_heavy"
    config.scheduler = "synchronous"
    out = imr.ImageMapReduceTask(config=config).run(exposure).exposure
    assert np.isfinite(out.image.array).all()
    config.reducer.weightFunction = "weight_functions:no_such_function"
    with pytest.raises(ValueError, match="cannot import weightFunction"):
        imr.ImageMapReduceTask(config=config).run(exposure)


@pytest.mark.parametrize("bad, error", [("bogus", ValueError), (3, TypeError)])
def test_make_weighting_errors(bad, error):
    with pytest.raises(error):
        make_weighting(bad)


# --- float32 window sums against a float64 reference -------------------------------------------


def _reference_window(kind, n, gaussian_width=0.125):
    """The taper windows as the module notes define them, written out again (float64)."""
    u = (np.arange(n) + 0.5) / n
    if kind == "linear":
        return 1.0 - np.abs(2.0 * u - 1.0)
    if kind == "cosine":
        return np.sin(np.pi * u) ** 2
    return np.exp(-0.5 * ((u - 0.5) / gaussian_width) ** 2)


def _recording_offset(results):
    """A mapper that adds a different offset to every cell, and records each result with its box.

    The row and column index companions tell it where the cell lies (border 0: the cell is its box).
    """

    def offset(cell, rows, cols):
        y0, x0 = int(rows[0, 0]), int(cols[0, 0])
        out = cell + np.float32(0.37 * (y0 % 5) - 0.21 * (x0 % 3))
        results[(y0, x0)] = out.copy()
        return out

    return offset


def _float64_weighted_mean(results, shape, kind):
    """A plain float64 loop: sum(w x) / sum(w), and the weighted mean of |x| (the error scale)."""
    sum_w, sum_wx, sum_wabs = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    for (y0, x0), out in results.items():
        h, w = out.shape
        weight = np.outer(_reference_window(kind, h), _reference_window(kind, w))
        values = out.astype(np.float64)
        sum_w[y0 : y0 + h, x0 : x0 + w] += weight
        sum_wx[y0 : y0 + h, x0 : x0 + w] += weight * values
        sum_wabs[y0 : y0 + h, x0 : x0 + w] += weight * np.abs(values)
    return sum_wx / sum_w, sum_wabs / sum_w


@pytest.mark.parametrize("kind", ["linear", "cosine", "gaussian"])
@pytest.mark.parametrize("signed", [False, True], ids=["positive", "signed"])
def test_float32_window_sums_stay_within_1e6_of_float64(kind, signed):
    rng = np.random.default_rng(21)
    shape = (150, 131)
    image = rng.standard_normal(shape).astype(np.float32) if signed else (1 + rng.random(shape)).astype(np.float32)
    rows, cols = np.indices(shape)
    results = {}
    out = imr.map_reduce(
        image, _recording_offset(results), cell_size=(32, 27), grid_step=(9, 11), border=0, weights=kind,
        companions={"rows": rows, "cols": cols}, scheduler="synchronous", region_size=64,
    )  # fmt: skip
    assert out.dtype == np.float32
    reference, scale = _float64_weighted_mean(results, shape, kind)
    covered = np.isfinite(reference)
    assert covered.all()
    # Relative to the weighted mean magnitude of what was summed: for same-sign results that is
    # the pixel's own value; where signed results cancel, no float32 sum can do better.
    error = np.abs(out.astype(np.float64) - reference) / scale
    assert error.max() < 1e-6, f"{kind}: largest relative error {error.max():.2e}"
    if not signed:
        assert (np.abs(out - reference) / np.abs(reference)).max() < 1e-6
    # float64 input keeps float64 sums
    results64 = {}
    out64 = imr.map_reduce(
        image.astype(np.float64), _recording_offset(results64), cell_size=(32, 27), grid_step=(9, 11), border=0,
        weights=kind, companions={"rows": rows, "cols": cols}, scheduler="synchronous", region_size=64,
    )  # fmt: skip
    reference64, scale64 = _float64_weighted_mean(results64, shape, kind)
    assert (np.abs(out64 - reference64) / scale64).max() < 1e-12


def test_narrow_gaussian_windows_sum_in_float64():
    assert make_weighting("cosine").accumulation_dtype(np.float32) == np.float32
    assert make_weighting("gaussian", gaussian_width=0.05).accumulation_dtype(np.float32) == np.float64
    assert make_weighting("linear").accumulation_dtype(np.float64) == np.float64


def _holes(cell):
    out = cell * np.float32(1.5) + np.float32(cell.mean())
    out[::7, ::5] = np.nan  # NaN pixels: the careful, per-pixel path
    return out


def _shifted(cell):
    return cell + np.float32(cell.mean())


@pytest.mark.parametrize("kind", ["linear", "cosine", "gaussian"])
@pytest.mark.parametrize("func", [_shifted, _holes], ids=["valid", "holes"])
def test_weighted_arrays_bitwise_identical_across_region_sizes_schedulers_and_batching(kind, func):
    image = np.random.default_rng(22).standard_normal((97, 83)).astype(np.float32)
    grid = dict(cell_size=(16, 20), grid_step=(7, 9), border=3, weights=kind)
    reference = imr.map_reduce(image, func, **grid, scheduler="synchronous", region_size=1000, cells_per_task=1)
    assert np.isfinite(reference).mean() > 0.9
    for scheduler, region, per_task in (("threads", 13, "auto"), ("synchronous", 31, 3), ("threads", 64, 1)):
        out = imr.map_reduce(image, func, **grid, scheduler=scheduler, region_size=region, cells_per_task=per_task)
        assert out.tobytes() == reference.tobytes(), (scheduler, region, per_task)
