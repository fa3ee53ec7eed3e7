"""PSF homogenisation with PsfMatchMapper on ImageMapReduceTask: the project's showcase.

These tests pin ``method="gaussian"``, the fast Gaussian-quadrature approximation, whose kernels
they rebuild independently (the exact method, the default, is tested in test_psfmatch_exact.py).
"""

# ruff: noqa: D103 - test functions are named for what they check

from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest
from scipy import ndimage

import imagemapreduce as imr
from imagemapreduce.geom import Box2I, Extent2I, Point2D, Point2I
from imagemapreduce.psf import CoaddPsf, GaussianPsf
from imagemapreduce.psfmatch.homogenize import (
    PsfMatchMapper,
    matching_kernel_1d,
    matching_sigma,
    max_psf_sigma,
    psf_sigma,
)
from imagemapreduce.psfmatch.measure import MEASUREMENT_DTYPE, measure_star_widths, width_map
from imagemapreduce.psfmatch.simulate import simulate_exposure

SIZE = 512
GRID = dict(scaleByFwhm=False, cellSizeX=64, cellSizeY=64, gridStepX=32, gridStepY=32,
            borderSizeX=10, borderSizeY=10, adjustGridOption="none")  # fmt: skip
MIN_SNR = 200.0  # bright enough that noise moves a width by well under 1%


def gaussian_mapper(**fields) -> PsfMatchMapper:
    """A PsfMatchMapper with the Gaussian approximation (the default is the exact method)."""
    return PsfMatchMapper(config=PsfMatchMapper.ConfigClass(method="gaussian", **fields))


def make_task(scheduler: str = "threads", **fields) -> imr.ImageMapReduceTask:
    config = imr.ImageMapReduceConfig()
    config.mapper.retarget(PsfMatchMapper)
    config.mapper.method = "gaussian"
    config.reducer.reduceOperation = "average"
    config.scheduler = scheduler
    for name, value in {**GRID, **fields}.items():
        setattr(config, name, value)
    return imr.ImageMapReduceTask(config=config)


def cell_kernels(task: imr.ImageMapReduceTask, psf, target: float) -> list[tuple[Box2I, np.ndarray]]:
    """Each cell's box and its 1-d matching kernel (empty for no convolution), as the mapper builds them."""
    kernels = []
    for box in task.boxes0:
        sigma = matching_sigma(psf_sigma(psf, box.getCenter()), target)
        radius = task.mapper.kernelRadius(sigma)
        kernels.append((box, matching_kernel_1d(sigma, radius) if radius else np.ones(1)))
    return kernels


@pytest.fixture(scope="module")
def matched():
    # Bright stars (SNR > 200 in the aperture), so that most isolated stars can be measured.
    exposure, stars = simulate_exposure(SIZE, SIZE, n_stars=150, seed=3, flux_range=(8e3, 3e5))
    task = make_task()
    output = task.run(exposure).exposure
    # Select on the input's SNR: the variance plane carries no covariance, so after smoothing an
    # SNR computed as for independent pixels is too high.
    before = measure_star_widths(exposure, stars, min_snr=MIN_SNR)
    after = measure_star_widths(output, stars)
    _, ib, ia = np.intersect1d(before["index"], after["index"], return_indices=True)
    return exposure, stars, task, output, before[ib], after[ia]


def test_default_target_is_the_widest_psf(matched):
    exposure = matched[0]
    assert max_psf_sigma(exposure.getPsf(), exposure.getBBox()) == pytest.approx(2.25, rel=1e-12)


def test_widths_are_homogenised(matched):
    _, _, _, _, before, after = matched
    assert len(before) >= 15
    # Before: the field's PSF widens 1.5x from centre to corners; the isolated stars, kept away
    # from the edges by their stamps, sample most of that.
    assert matched[0].getPsf().sigma_range() == pytest.approx((1.5, 2.25))
    assert before["sigma"].max() / before["sigma"].min() > 1.3
    np.testing.assert_allclose(before["sigma"], matched[0].getPsf().sigma_at(before["x"], before["y"]), rtol=0.02)
    # After: one width everywhere, the target's.
    assert after["sigma"].max() / after["sigma"].min() < 1.04
    np.testing.assert_allclose(after["sigma"], 2.25, rtol=0.03)


def test_fluxes_are_preserved(matched):
    _, stars, _, _, before, after = matched
    assert not stars["saturated"][after["index"]].any()
    np.testing.assert_allclose(after["flux"], before["flux"], rtol=0.01)
    np.testing.assert_allclose(after["flux"], stars["flux"][after["index"]], rtol=0.02)


def test_tapered_stitching_removes_the_patchwork(matched):
    # With equal weights a star straddling a cell edge is a patchwork of differently matched
    # parts; a taper that falls to zero at the cell edges blends the kernels smoothly instead.
    exposure, stars, _, _, before, uniform = matched
    task = make_task()
    if "weighting" not in task.reducer.config.keys():
        pytest.skip("this reducer has no weighted stitching")
    task.reducer.config.weighting = "linear"
    after = measure_star_widths(task.run(exposure).exposure, stars)
    after = after[np.isin(after["index"], before["index"])]  # the stars bright in the input
    np.testing.assert_array_equal(after["index"], uniform["index"])
    np.testing.assert_allclose(after["sigma"], 2.25, rtol=0.015)
    np.testing.assert_allclose(after["flux"], before["flux"], rtol=0.003)
    assert np.std(after["sigma"]) < np.std(uniform["sigma"])


def test_output_psf_is_the_target_everywhere(matched):
    _, _, task, output, _, _ = matched
    psf = output.getPsf()
    assert isinstance(psf, CoaddPsf)
    assert psf.getComponentCount() == len(task.boxes0)
    for position in [(0.0, 0.0), (255.5, 255.5), (511.0, 0.0), (100.0, 400.0), (480.0, 333.0)]:
        radius = psf.computeShape(Point2D(*position)).getDeterminantRadius()
        assert radius == pytest.approx(2.25, rel=0.01)


def test_masks_grow_around_the_bad_column(matched):
    exposure, _, task, output, _, _ = matched
    bad = exposure.mask.getPlaneBitMask("BAD")
    column = exposure.getMetadata()["BADCOL"]
    expected = (exposure.mask.array & bad) != 0
    x = np.arange(SIZE)
    for box, kernel in cell_kernels(task, exposure.getPsf(), 2.25):
        radius = len(kernel) // 2
        rows, cols = box.slices()
        expected[rows, cols] |= np.abs(x[cols] - column) <= radius
    got = (output.mask.array & bad) != 0
    np.testing.assert_array_equal(got, expected)
    assert got[:, column - 1].all() and got[:, column + 1].all() and not got[:, column + 9].any()
    sat = exposure.mask.getPlaneBitMask("SAT")
    grown = (output.mask.array & sat) != 0
    assert grown.sum() > ((exposure.mask.array & sat) != 0).sum()
    assert np.all(grown[(exposure.mask.array & sat) != 0])


def test_variance_is_propagated_through_each_cells_kernel(matched):
    exposure, _, task, _, _, _ = matched
    flat = exposure.clone()
    flat.variance.array[...] = 4.0
    output = task.run(flat).exposure
    # Flat variance through kernel k is var * sum(k2d^2) = var * (sum k^2)^2 for a separable
    # kernel, and the average reducer averages the variances of the cells covering a pixel.
    total = np.zeros((SIZE, SIZE))
    count = np.zeros((SIZE, SIZE))
    for box, kernel in cell_kernels(task, exposure.getPsf(), 2.25):
        total[box.slices()] += 4.0 * float(np.sum(kernel**2)) ** 2
        count[box.slices()] += 1
    np.testing.assert_allclose(output.variance.array, total / count, rtol=1e-5)


def test_variance_matches_monte_carlo_noise():
    rng = np.random.default_rng(7)
    size = 384
    exposure = imr.ExposureF(size, size, psf=GaussianPsf(21, 21, 1.5))
    exposure.image.array[...] = rng.normal(0.0, 2.0, (size, size))
    exposure.variance.array[...] = 4.0
    output = make_task(scheduler="synchronous").run(exposure, targetSigma=2.0).exposure
    kernel = matching_kernel_1d(np.sqrt(2.0**2 - 1.5**2), 6)
    predicted = 4.0 * float(np.sum(kernel**2)) ** 2
    interior = output.image.array[10:-10, 10:-10]
    np.testing.assert_allclose(output.variance.array, predicted, rtol=1e-5)
    assert interior.var() == pytest.approx(predicted, rel=0.06)


def small_field(psf=None):
    exposure, _ = simulate_exposure(128, 96, psf=psf, n_stars=25, seed=9, xy0=(10, 20))
    return exposure


@pytest.mark.parametrize(
    "cell",
    [Box2I(Point2I(50, 50), Extent2I(40, 30)), Box2I(Point2I(10, 20), Extent2I(30, 25))],
    ids=["interior", "corner"],
)
def test_single_cell_equals_scipy_on_the_whole_image(cell):
    exposure = small_field()
    mapper = gaussian_mapper()
    expanded = cell.grown(9).clipped_to(exposure.getBBox())
    result = mapper.run(exposure[cell], exposure[expanded], exposure.getBBox())
    out = result.subExposure
    assert out.getBBox() == cell
    assert result.targetSigma == pytest.approx(2.25)
    local = exposure.getPsf().sigma_at(*cell.getCenter())
    assert result.localSigma == pytest.approx(local, rel=1e-12)
    assert result.kernelSigma == pytest.approx(np.sqrt(2.25**2 - local**2), rel=1e-12)
    kernel = matching_kernel_1d(result.kernelSigma, mapper.kernelRadius(result.kernelSigma))
    assert len(kernel) // 2 <= 9
    kernel2d = np.outer(kernel, kernel)
    core = cell.slices(exposure.getXY0())
    whole = ndimage.correlate(exposure.image.array.astype(np.float64), kernel2d, mode="nearest")
    np.testing.assert_allclose(out.image.array, whole[core], rtol=1e-6, atol=1e-4)
    whole_var = ndimage.correlate(exposure.variance.array.astype(np.float64), kernel2d**2, mode="nearest")
    np.testing.assert_allclose(out.variance.array, whole_var[core], rtol=1e-6)
    assert out.getPsf() == GaussianPsf(25, 25, 2.25)
    assert out.image.array.dtype == np.float32 and out.mask.getMaskPlaneDict() == exposure.mask.getMaskPlaneDict()


def test_thin_border_is_reported(caplog):
    exposure = small_field()
    cell = Box2I(Point2I(50, 50), Extent2I(40, 30))
    with caplog.at_level(logging.WARNING):
        result = gaussian_mapper().run(exposure[cell], exposure[cell.grown(2)], exposure.getBBox())
    thin = [r for r in caplog.records if "thinner than the matching kernel radius" in r.getMessage()]
    assert [r.levelno for r in thin] == [logging.WARNING]
    assert result.kernelSigma > 0 and result.subExposure.getBBox() == cell  # warned, yet still matched
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        gaussian_mapper().run(exposure[cell], exposure[cell.grown(20)], exposure.getBBox())
    assert not [r for r in caplog.records if "thinner" in r.getMessage()], "a wide enough border is not reported"


def test_wider_than_target_is_left_unchanged(caplog):
    exposure = small_field()
    cell = Box2I(Point2I(50, 50), Extent2I(40, 30))
    with caplog.at_level(logging.WARNING):
        result = gaussian_mapper().run(exposure[cell], exposure[cell.grown(8)], exposure.getBBox(), targetSigma=1.0)
    assert "cannot be sharpened" in caplog.text
    assert result.kernelSigma == 0.0
    np.testing.assert_array_equal(result.subExposure.image.array, exposure[cell].image.array)
    assert result.subExposure.getPsf().getSigma() == pytest.approx(result.localSigma)


def test_target_from_keyword_then_config_then_psf():
    exposure = small_field(psf=GaussianPsf(21, 21, 1.5))
    cell = Box2I(Point2I(50, 50), Extent2I(20, 20))
    args = (exposure[cell], exposure[cell.grown(10)], exposure.getBBox())
    mapper = gaussian_mapper()
    assert mapper.run(*args).targetSigma == 1.5  # a constant PSF: nothing to do
    assert mapper.run(*args).kernelSigma == 0.0
    config = PsfMatchMapper.ConfigClass(method="gaussian")
    config.targetSigma = 2.0
    configured = PsfMatchMapper(config=config)
    assert configured.run(*args).targetSigma == 2.0
    assert configured.run(*args, targetSigma=2.5).targetSigma == 2.5
    exposure.setPsf(None)
    with pytest.raises(ValueError, match="needs an exposure with a PSF"):
        mapper.run(exposure[cell], exposure[cell.grown(10)], exposure.getBBox())
    assert pickle.loads(pickle.dumps(configured)).config.targetSigma == 2.0


@pytest.mark.parametrize("sigma", [0.05, 0.3, 0.7, 1.2, 3.0])
def test_matching_kernel_adds_exactly_sigma_squared(sigma):
    radius = max(1, int(np.ceil(4 * sigma)))
    kernel = matching_kernel_1d(sigma, radius)
    offsets = np.arange(-radius, radius + 1)
    assert kernel.sum() == pytest.approx(1.0, abs=1e-14)
    assert kernel @ offsets == pytest.approx(0.0, abs=1e-14)
    assert kernel @ offsets**2 == pytest.approx(sigma**2, rel=1e-10)
    if sigma >= 1:  # well sampled: the plain sampled Gaussian, to within its truncation
        plain = np.exp(-0.5 * (offsets / sigma) ** 2)
        np.testing.assert_allclose(kernel, plain / plain.sum(), rtol=2e-3, atol=1e-6)


def test_matching_sigma_and_kernel_limits():
    assert matching_sigma(1.5, 2.5) == pytest.approx(2.0)
    assert matching_sigma(2.5, 2.5) == 0.0 and matching_sigma(3.0, 2.5) == 0.0
    with pytest.raises(ValueError, match="cannot have sigma"):
        matching_kernel_1d(2.0, 1)


def test_measurements_and_width_map():
    exposure, stars = simulate_exposure(256, 256, n_stars=40, seed=4, noise=False, bad_column=False)
    found = measure_star_widths(exposure, stars)
    assert found.dtype == MEASUREMENT_DTYPE and len(found) > 5
    assert not stars["saturated"][found["index"]].any()
    crowded = measure_star_widths(exposure, stars, isolated_only=False)
    assert len(crowded) > len(found)
    from_positions = measure_star_widths(exposure, np.column_stack([stars["x"], stars["y"]])[:40])
    assert set(from_positions["index"]) >= set(found["index"])
    values, x_edges, y_edges = width_map(found, exposure.getBBox(), bins=(4, 2))
    assert values.shape == (2, 4) and x_edges[0] == -0.5 and y_edges[-1] == 255.5
    assert np.nanmin(values) >= found["sigma"].min() and np.nanmax(values) <= found["sigma"].max()
    empty, _, _ = width_map(found[:0], exposure.getBBox(), bins=3)
    assert np.isnan(empty).all()
    with pytest.raises(ValueError, match="aperture_radius"):
        measure_star_widths(exposure, stars, aperture_radius=20.0)


@pytest.mark.slow
def test_worker_processes_give_the_same_bits():
    # The mapper, its config and the varying PSF travel to worker processes by pickle.
    exposure, _ = simulate_exposure(256, 256, n_stars=40, seed=3)
    serial = make_task(scheduler="synchronous").run(exposure).exposure
    parallel = make_task(scheduler="processes", numWorkers=2).run(exposure).exposure
    np.testing.assert_array_equal(parallel.image.array, serial.image.array)
    np.testing.assert_array_equal(parallel.variance.array, serial.variance.array)
    np.testing.assert_array_equal(parallel.mask.array, serial.mask.array)
    assert parallel.getPsf() == serial.getPsf()
