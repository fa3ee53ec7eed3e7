"""Tests for imagemapreduce.psfmatch.simulate: the varying-PSF star-field simulator."""

# ruff: noqa: D103 - test functions are named for what they check

from __future__ import annotations

import time

import numpy as np
import pytest

from imagemapreduce.geom import Box2I, Extent2I, Point2I
from imagemapreduce.grid import FWHM_PER_SIGMA
from imagemapreduce.psf import GaussianPsf, moments_to_shear
from imagemapreduce.psf._varying import VaryingGaussianPsf
from imagemapreduce.psfmatch.measure import measure_star_widths
from imagemapreduce.psfmatch.simulate import STAR_DTYPE, default_varying_psf, field_psf, simulate_exposure

SIZE = 256
KW = dict(n_stars=60, seed=11, xy0=(30, -40))


@pytest.fixture(scope="module")
def field():
    exposure, stars = simulate_exposure(SIZE, SIZE, **KW)
    model, model_stars = simulate_exposure(SIZE, SIZE, noise=False, **KW)
    return exposure, stars, model, model_stars


def test_same_seed_repeats_bitwise_and_another_seed_differs(field):
    exposure, stars, _, _ = field
    again, again_stars = simulate_exposure(SIZE, SIZE, **KW)
    for a, b in (
        (exposure.image, again.image),
        (exposure.mask, again.mask),
        (exposure.variance, again.variance),
    ):
        np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_array_equal(stars, again_stars)
    other, other_stars = simulate_exposure(SIZE, SIZE, **{**KW, "seed": 12})
    assert not np.array_equal(other.image.array, exposure.image.array)
    assert not np.array_equal(other_stars["x"], stars["x"])


def test_catalogue_and_geometry(field):
    exposure, stars, model, model_stars = field
    assert exposure.getBBox() == Box2I(Point2I(30, -40), Extent2I(SIZE, SIZE))
    assert exposure.image.array.dtype == np.float32
    assert stars.dtype == STAR_DTYPE and len(stars) == 60 + 3
    np.testing.assert_array_equal(stars["id"], np.arange(63))
    assert np.all((stars["x"] >= 29.5) & (stars["x"] < 30 + SIZE - 0.5))
    assert np.all((stars["y"] >= -40.5) & (stars["y"] < -40 + SIZE - 0.5))
    assert np.all((stars["flux"][:60] >= 300.0) & (stars["flux"][:60] <= 3e5))
    # The noiseless run has the same stars: stars, column and noise use separate streams.
    np.testing.assert_array_equal(stars, model_stars)
    assert exposure.getMetadata()["BADCOL"] == model.getMetadata()["BADCOL"]
    psf = exposure.getPsf()
    assert isinstance(psf, VaryingGaussianPsf)
    np.testing.assert_allclose(stars["fwhm"], psf.fwhm_at(stars["x"], stars["y"]), rtol=1e-12)


def sky_pixels(exposure, model):
    """Unmasked pixels where the stars add under 0.1% of the sky."""
    return (model.image.array - 100.0 < 0.1) & (exposure.mask.array == 0)


def test_variance_matches_the_noise(field):
    exposure, _, model, _ = field
    residual = exposure.image.array.astype(np.float64) - model.image.array
    sky = sky_pixels(exposure, model)
    assert sky.sum() > 0.5 * SIZE * SIZE
    # sky 100 ADU * gain 2 = 200 e-, read noise 5 e-: (200 + 25) / 4 ADU^2.
    np.testing.assert_allclose(exposure.variance.array[sky], 225.0 / 4.0, rtol=1e-3)
    assert residual[sky].var() == pytest.approx(225.0 / 4.0, rel=0.03)
    assert abs(residual[sky].mean()) < 0.05
    # On the stars too: residuals normalised by the variance plane have unit variance.
    stars = (model.image.array > 300.0) & (exposure.mask.array == 0)
    assert stars.sum() > 100
    normalised = residual[stars] / np.sqrt(exposure.variance.array[stars])
    assert normalised.var() == pytest.approx(1.0, rel=0.08)
    np.testing.assert_array_equal(model.variance.array, exposure.variance.array)


def test_saturated_stars_are_clipped_and_flagged(field):
    exposure, stars, _, _ = field
    sat_bit = exposure.mask.getPlaneBitMask("SAT")
    image, mask = exposure.image.array, exposure.mask.array
    flagged = (mask & sat_bit) != 0
    assert image.max() <= 60000.0
    np.testing.assert_array_equal(image[flagged], 60000.0)
    assert np.all(image[~flagged] < 60000.0)
    assert stars["saturated"][60:].all()
    for star in stars[stars["saturated"]]:
        ix, iy = int(np.floor(star["x"] - 30 + 0.5)), int(np.floor(star["y"] + 40 + 0.5))
        if 0 <= ix < SIZE and 0 <= iy < SIZE and ix != exposure.getMetadata()["BADCOL"] - 30:
            assert flagged[iy, ix]
            assert image[iy, ix] == 60000.0


def test_bad_column_is_zero_and_flagged(field):
    exposure, _, _, _ = field
    column = exposure.getMetadata()["BADCOL"] - 30
    assert SIZE // 8 <= column < SIZE - SIZE // 8
    bad = (exposure.mask.array & exposure.mask.getPlaneBitMask("BAD")) != 0
    assert bad[:, column].all() and bad.sum() == SIZE
    np.testing.assert_array_equal(exposure.image.array[:, column], 0.0)
    no_column, _ = simulate_exposure(64, 64, n_stars=5, seed=1, bad_column=False)
    assert not (no_column.mask.array & no_column.mask.getPlaneBitMask("BAD")).any()
    assert no_column.getMetadata()["BADCOL"] == -1


def test_stars_have_the_local_width_and_flux():
    # Noiseless, no defects: widths and fluxes measured on the image equal the catalogue's.
    exposure, stars = simulate_exposure(320, 320, n_stars=40, seed=5, noise=False, n_saturated=0, bad_column=False)
    found = measure_star_widths(exposure, stars)
    assert len(found) >= 8
    truth = stars[found["index"]]
    np.testing.assert_allclose(found["sigma"], truth["fwhm"] / FWHM_PER_SIGMA, rtol=5e-3)
    np.testing.assert_allclose(found["flux"], truth["flux"], rtol=2e-3)
    np.testing.assert_allclose(found["x"], truth["x"], atol=1e-3)
    # The default PSF widens 1.5x from centre to corners.
    psf = exposure.getPsf()
    assert psf.sigma_at(160 - 0.5, 160 - 0.5) == pytest.approx(1.5, rel=1e-3)
    assert psf.sigma_at(0, 319) == pytest.approx(2.25)
    radius = np.hypot(truth["x"] - 159.5, truth["y"] - 159.5)
    assert np.corrcoef(radius, found["sigma"])[0, 1] > 0.9


def test_custom_psf_and_edge_stamps():
    psf = GaussianPsf(15, 15, 1.2)
    exposure, stars = simulate_exposure(40, 30, psf=psf, n_stars=30, seed=2, noise=False, n_saturated=1)
    assert exposure.getPsf() is psf
    np.testing.assert_allclose(stars["fwhm"], 1.2 * FWHM_PER_SIGMA)
    assert np.isfinite(exposure.image.array).all()
    # Stars overhanging an edge are clipped, not wrapped: total flux in the image <= the sum.
    assert (exposure.image.array - 100.0).sum() <= stars["flux"].sum()


def test_default_psf_size_and_ratio():
    psf = default_varying_psf(Box2I(Point2I(0, 0), Extent2I(100, 50)), sigma_center=2.0, widening=1.5)
    assert psf.getDimensions() == Extent2I(41, 41)
    assert psf.sigma_range() == pytest.approx((2.0, 3.0), rel=1e-3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(gain=0.0), "gain"),
        (dict(sky=-1.0), "sky"),
        (dict(flux_range=(10.0, 1.0)), "flux_range"),
        (dict(n_stars=-1), "n_stars"),
        (dict(saturation=50.0), "saturation"),
    ],
)
def test_parameters_are_validated(kwargs, match):
    with pytest.raises(ValueError, match=match):
        simulate_exposure(32, 32, **kwargs)


def test_megapixel_field_is_fast():
    start = time.perf_counter()
    exposure, stars = simulate_exposure(1024, 1024, n_stars=300, seed=0)
    elapsed = time.perf_counter() - start
    assert len(stars) == 303 and exposure.getDimensions() == Extent2I(1024, 1024)
    assert elapsed < 2.0


@pytest.mark.parametrize("profile", ["gaussian", "moffat", "kolmogorov"])
def test_field_psf_stars_have_the_models_width_and_shear(profile):
    bbox = Box2I(Point2I(0, 0), Extent2I(256, 256))
    psf = field_psf(bbox, profile, 2.5, 4.0, g_max=0.05, size=25)
    assert psf.isPixelIntegrated() and psf.fwhm_at(255, 255) == pytest.approx(4.0)
    assert np.hypot(*psf.shear_at(255.0, 255.0)) == pytest.approx(0.05)
    assert psf.shear_at(127.5, 127.5) == pytest.approx((0.0, 0.0))
    exposure, stars = simulate_exposure(256, 256, psf=psf, n_stars=40, seed=5, noise=False, n_saturated=0,
                                        bad_column=False)  # fmt: skip
    found = measure_star_widths(exposure, stars)
    assert len(found) >= 8
    for row in found:
        shape = psf.computeShape((row["x"], row["y"]))
        assert row["sigma"] == pytest.approx(shape.getDeterminantRadius(), rel=3e-3)
        assert (row["g1"], row["g2"]) == pytest.approx(moments_to_shear(shape), abs=1e-3)


def test_field_psf_checks_its_arguments():
    bbox = Box2I(Point2I(0, 0), Extent2I(64, 64))
    with pytest.raises(ValueError, match="profile must be one of"):
        field_psf(bbox, "airy")
    with pytest.raises(ValueError, match="g_max"):
        field_psf(bbox, g_max=1.0)
    with pytest.raises(ValueError, match="fwhm_center"):
        field_psf(bbox, fwhm_center=-1.0)
    assert field_psf(bbox, "gaussian", 2.0, 2.0).sigma_at(3, 4) == pytest.approx(2.0 / FWHM_PER_SIGMA)
