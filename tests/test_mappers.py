"""The built-in mappers: median filter and local background subtraction, against whole-image references."""

# ruff: noqa: D103 - test functions are named for what they check

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from conftest import make_exposure
from scipy import ndimage

import imagemapreduce as imr
from imagemapreduce.builtin_mappers import (
    BackgroundSubtractMapper,
    MedianFilterMapper,
    sigma_clipped_median,
)


def make_task(mapper: type, *, cell: int = 32, step: int = 32, border: int = 8, operation: str = "copy",
              **mapper_fields) -> imr.ImageMapReduceTask:  # fmt: skip
    config = imr.ImageMapReduceConfig()
    config.mapper.retarget(mapper)
    for name, value in mapper_fields.items():
        setattr(config.mapper.value, name, value)
    config.scaleByFwhm = False
    config.cellSizeX = config.cellSizeY = cell
    config.gridStepX = config.gridStepY = step
    config.borderSizeX = config.borderSizeY = border
    config.adjustGridOption = "none"
    config.reducer.reduceOperation = operation
    config.scheduler = "synchronous"
    return imr.ImageMapReduceTask(config=config)


# -- median filter -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [3, 5])
def test_median_filter_equals_scipy_on_the_whole_image(size):
    exposure = make_exposure(100, 90, xy0=(7, -3))
    output = make_task(MedianFilterMapper, size=size, border=size // 2).run(exposure).exposure
    expected = ndimage.median_filter(exposure.image.array, size=size, mode="nearest")
    # The border covers the window, and at the image's edges the expanded cell ends where the
    # image does, so every pixel (not only the interior) matches the whole-image filter.
    interior = np.s_[size:-size, size:-size]
    np.testing.assert_array_equal(output.image.array[interior], expected[interior])
    np.testing.assert_array_equal(output.image.array, expected)
    variance = ndimage.median_filter(exposure.variance.array, size=size, mode="nearest")
    np.testing.assert_allclose(output.variance.array, variance * math.pi / (2 * size * size), rtol=1e-6)
    np.testing.assert_array_equal(output.mask.array & ~output.mask.getPlaneBitMask("INVALID_MAPREDUCE"),
                                  exposure.mask.array)  # fmt: skip


def test_median_filter_mode_and_identity_window():
    exposure = make_exposure(64, 64)
    output = make_task(MedianFilterMapper, size=5, mode="reflect", border=2).run(exposure).exposure
    expected = ndimage.median_filter(exposure.image.array, 5, mode="reflect")
    np.testing.assert_array_equal(output.image.array, expected)
    same = make_task(MedianFilterMapper, size=1, border=1).run(exposure).exposure
    np.testing.assert_array_equal(same.image.array, exposure.image.array)
    np.testing.assert_array_equal(same.variance.array, exposure.variance.array)


def test_median_filter_removes_a_hot_pixel():
    exposure = make_exposure(48, 48)
    exposure.image.array[20, 30] = 1e6
    output = make_task(MedianFilterMapper, cell=16, step=16, border=1).run(exposure).exposure
    assert output.image.array[20, 30] < 30.0


def test_median_filter_rejects_an_even_window():
    config = MedianFilterMapper.ConfigClass()
    with pytest.raises(ValueError):
        config.size = 4


# -- background subtraction ----------------------------------------------------------------------


def reference_clipped_median(values: np.ndarray, nsigma: float, iters: int) -> float:
    """Clip at nsigma standard deviations about the median until nothing changes, in a plain loop."""
    data = np.sort(np.asarray(values, dtype=np.float64).ravel())
    for _ in range(iters):
        centre, spread = np.median(data), np.std(data)
        kept = data[(data >= centre - nsigma * spread) & (data <= centre + nsigma * spread)]
        if len(kept) == len(data):
            break
        data = kept
    return float(np.median(data))


def sky_exposure(seed: int = 1) -> imr.ExposureF:
    """Return a sloped sky with noise, bright 'stars' flagged DETECTED and a BAD column of zeros."""
    rng = np.random.default_rng(seed)
    exposure = imr.ExposureF(imr.Box2I(imr.Point2I(5, 10), imr.Extent2I(96, 80)))
    y, x = np.mgrid[0:80, 0:96]
    exposure.image.array[...] = 100.0 + 0.5 * x + 0.2 * y + rng.normal(0.0, 3.0, (80, 96))
    exposure.variance.array[...] = 9.0
    detected = exposure.mask.getPlaneBitMask("DETECTED")
    for cy, cx in rng.integers(4, 76, size=(12, 2)):
        exposure.image.array[cy - 2 : cy + 3, cx - 2 : cx + 3] += 5000.0
        exposure.mask.array[cy - 2 : cy + 3, cx - 2 : cx + 3] |= detected
    exposure.image.array[:, 40] = 0.0
    exposure.mask.array[:, 40] |= exposure.mask.getPlaneBitMask("BAD")
    return exposure


def test_background_subtraction_matches_a_numpy_reference():
    exposure = sky_exposure()
    task = make_task(BackgroundSubtractMapper, cell=32, step=32, border=8)
    output = task.run(exposure).exposure
    ignored = exposure.mask.getPlaneBitMask(["DETECTED", "BAD"])
    origin = exposure.getXY0()
    for box, expanded in zip(task.boxes0, task.boxes1, strict=True):
        pixels = exposure.image.array[expanded.slices(origin)]
        good = (exposure.mask.array[expanded.slices(origin)] & ignored) == 0
        background = reference_clipped_median(pixels[good], 3.0, 5)
        np.testing.assert_allclose(
            output.image.array[box.slices(origin)], exposure.image.array[box.slices(origin)] - background,
            rtol=0, atol=1e-3,
        )  # fmt: skip
    np.testing.assert_array_equal(output.variance.array, exposure.variance.array)
    # Neither the masked stars nor the dead column pull the sky down or up: it is near zero.
    sky = output.image.array[(exposure.mask.array & ignored) == 0]
    assert abs(float(np.median(sky))) < 2.0


def test_masked_pixels_are_ignored():
    exposure = sky_exposure()
    cell = imr.Box2I(imr.Point2I(45, 30), imr.Extent2I(32, 32))
    mapper = BackgroundSubtractMapper()
    clean = mapper.run(exposure[cell], exposure[cell.grown(8)], exposure.getBBox())
    # Corrupt every masked pixel: a background that ignores them does not move.
    corrupted = exposure.clone()
    flagged = corrupted.mask.array != 0
    corrupted.image.array[flagged] = -1e5
    again = mapper.run(corrupted[cell], corrupted[cell.grown(8)], corrupted.getBBox())
    assert again.background == clean.background
    # Counting the masked pixels in would change it.
    config = BackgroundSubtractMapper.ConfigClass()
    config.ignoreMaskPlanes = []
    config.maxIters = 0
    everything = BackgroundSubtractMapper(config=config).run(corrupted[cell], corrupted[cell.grown(8)],
                                                             corrupted.getBBox())  # fmt: skip
    assert everything.background != clean.background


def test_sigma_clipping_agrees_with_astropy():
    from astropy.stats import sigma_clipped_stats

    rng = np.random.default_rng(4)
    values = np.concatenate([rng.normal(50.0, 2.0, 2000), rng.uniform(80.0, 500.0, 60)])
    median, count = sigma_clipped_median(values, 3.0, 5)
    assert median == pytest.approx(sigma_clipped_stats(values, sigma=3.0, maxiters=5)[1], rel=1e-12)
    assert median == pytest.approx(reference_clipped_median(values, 3.0, 5), rel=1e-12)
    assert count < len(values)
    assert sigma_clipped_median(values, 3.0, 0) == (float(np.median(values)), len(values))
    with pytest.raises(ValueError, match="at least one"):
        sigma_clipped_median(np.array([]))


def test_a_fully_masked_cell_becomes_nan_and_is_flagged(caplog):
    exposure = sky_exposure()
    exposure.mask.array[:, :20] |= exposure.mask.getPlaneBitMask("NO_DATA")
    task = make_task(BackgroundSubtractMapper, cell=16, step=16, border=2)
    with caplog.at_level(logging.WARNING):
        output = task.run(exposure).exposure
    assert "no unmasked finite pixel" in caplog.text
    invalid = (output.mask.array & output.mask.getPlaneBitMask("INVALID_MAPREDUCE")) != 0
    assert np.isnan(output.image.array[:, :16]).all() and invalid[:, :16].all()
    assert np.isfinite(output.image.array[:, 24:]).all() and not invalid[:, 24:].any()
