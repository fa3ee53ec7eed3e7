"""Tests for the spatially varying PSFs: VaryingGaussianPsf and VaryingMoffatPsf."""

# ruff: noqa: D103 - test functions are named for what they check

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from scipy.interpolate import CubicSpline

import imagemapreduce as imr
from imagemapreduce.builtin_mappers import IdentityMapper
from imagemapreduce.geom import Box2I, Extent2I, Point2D, Point2I
from imagemapreduce.grid import FWHM_PER_SIGMA, psf_fwhm
from imagemapreduce.psf import CoaddPsf, Quadrupole, adaptive_moments
from imagemapreduce.psf._varying import VaryingGaussianPsf, VaryingMoffatPsf

BBOX = Box2I(Point2I(-20, 10), Extent2I(401, 301))  # centre (180, 160), u = (x - 180) / 200
COEFFS = [[2.0, 0.3, 0.1], [0.4, -0.1, 0.0], [0.2, 0.0, 0.0]]
POSITIONS = [(180.0, 160.0), (-20.0, 10.0), (380.0, 310.0), (57.3, 222.8), (301.5, 40.25)]


def reference_sigma(x: float, y: float) -> float:
    """Return sigma = sum c[i][j] u^i v^j, computed independently of numpy.polynomial."""
    u, v = (x - 180.0) / 200.0, (y - 160.0) / 150.0
    return sum(COEFFS[i][j] * u**i * v**j for i in range(3) for j in range(3))


@pytest.fixture
def psf() -> VaryingGaussianPsf:
    return VaryingGaussianPsf(27, 27, COEFFS, BBOX)


@pytest.mark.parametrize("position", POSITIONS)
def test_gaussian_shape_is_analytic_sigma_squared(psf, position):
    sigma = reference_sigma(*position)
    assert psf.sigma_at(*position) == pytest.approx(sigma, rel=1e-12)
    shape = psf.computeShape(Point2D(*position))
    assert shape.getIxx() == pytest.approx(sigma**2, rel=1e-12)
    assert shape.getIyy() == pytest.approx(sigma**2, rel=1e-12)
    assert shape.getIxy() == 0.0
    assert psf.fwhm_at(*position) == pytest.approx(sigma * FWHM_PER_SIGMA, rel=1e-12)


@pytest.mark.parametrize("position", POSITIONS + [(100.4, 100.6), (12.5, 299.5)])
def test_gaussian_images_sum_to_one_and_have_the_local_moments(psf, position):
    sigma2 = reference_sigma(*position) ** 2
    for image in (psf.computeImage(Point2D(*position)), psf.computeKernelImage(Point2D(*position))):
        assert image.array.sum() == pytest.approx(1.0, abs=1e-12)
        assert image.getDimensions() == Extent2I(27, 27)
        shape, _ = adaptive_moments(image.array)
        assert shape.getIxx() == pytest.approx(sigma2, rel=5e-3)
        assert shape.getIyy() == pytest.approx(sigma2, rel=5e-3)
        assert abs(shape.getIxy()) < 1e-3 * sigma2


def test_compute_image_is_centred_on_the_position(psf):
    position = Point2D(100.3, 200.7)
    image = psf.computeImage(position)
    assert image.getXY0() == Point2I(100 - 13, 201 - 13)
    _, centroid = adaptive_moments(image.array)
    assert centroid.x + image.getX0() == pytest.approx(position.x, abs=1e-3)
    assert centroid.y + image.getY0() == pytest.approx(position.y, abs=1e-3)
    kernel = psf.computeKernelImage(position)
    assert kernel.getXY0() == Point2I(-13, -13)
    assert psf.computePeak(position) == kernel.array.max()


def test_vectorised_sigma_matches_scalar(psf):
    xs, ys = np.meshgrid(np.linspace(-20, 380, 7), np.linspace(10, 310, 5))
    grid = psf.sigma_at(xs, ys)
    assert grid.shape == xs.shape
    expected = np.vectorize(reference_sigma)(xs, ys)
    np.testing.assert_allclose(grid, expected, rtol=1e-12)
    lo, hi = psf.sigma_range()
    assert lo <= expected.min() + 1e-12 and hi >= expected.max() - 1e-12


def test_average_position_is_bbox_centre_and_scale_by_fwhm_uses_it(psf):
    assert psf.getAveragePosition() == Point2D(180.0, 160.0)
    fwhm = 2.0 * FWHM_PER_SIGMA  # sigma at the centre is c[0][0]
    assert psf_fwhm(psf) == pytest.approx(fwhm, rel=1e-12)
    config = imr.ImageMapReduceConfig()
    config.mapper.retarget(IdentityMapper)
    config.scaleByFwhm = True
    config.cellSizeX = config.cellSizeY = 5.0  # in FWHMs
    config.gridStepX = config.gridStepY = 5.0
    config.adjustGridOption = "none"
    task = imr.ImageMapReduceTask(config=config)
    exposure = imr.ExposureF(BBOX, psf=psf)
    boxes0, _ = task._generateGrid(exposure)
    expected_cell = int(np.rint(5.0 * fwhm))
    # Interior cells (not clipped by the image edge) have the scaled size.
    widths = {b.getWidth() for b in boxes0 if b.getMinX() > BBOX.getMinX() and b.getMaxX() < BBOX.getMaxX()}
    assert widths == {expected_cell}


def test_pickle_hash_equality_and_immutability(psf):
    copy = pickle.loads(pickle.dumps(psf))
    assert copy == psf and hash(copy) == hash(psf)
    assert copy.sigma_at(3.0, 4.0) == psf.sigma_at(3.0, 4.0)
    assert psf.clone() == psf
    assert VaryingGaussianPsf(27, 27, np.array(COEFFS), BBOX) == psf
    assert VaryingGaussianPsf(25, 27, COEFFS, BBOX) != psf
    assert VaryingGaussianPsf(27, 27, COEFFS, Box2I(Point2I(0, 0), Extent2I(401, 301))) != psf
    with pytest.raises(AttributeError):
        psf._width = 3
    # The PSF keeps its own copy of the box: mutating the caller's box changes nothing.
    box = Box2I(BBOX)
    held = VaryingGaussianPsf(27, 27, COEFFS, box)
    box.grow(10)
    assert held == psf and held.getBBox() == BBOX


def test_coadd_psf_of_varying_psfs(psf):
    half = Box2I(Point2I(-20, 10), Extent2I(200, 301))
    coadd = CoaddPsf([(psf, half, 1.0), (psf, BBOX, 1.0)])
    position = Point2D(50.0, 200.0)
    sigma = reference_sigma(50.0, 200.0)
    assert coadd.computeShape(position).getDeterminantRadius() == pytest.approx(sigma, rel=5e-3)
    assert coadd.computeKernelImage(position).array.sum() == pytest.approx(1.0, abs=1e-12)
    assert pickle.loads(pickle.dumps(coadd)) == coadd


def test_constant_and_radial_constructors():
    constant = VaryingGaussianPsf(21, 21, 1.7, BBOX)
    assert constant.sigma_at(-20, 310) == 1.7
    assert constant.computeShape() == Quadrupole(1.7**2, 1.7**2, 0.0)
    radial = VaryingGaussianPsf.radial(31, 31, BBOX, 1.5, 2.25)
    assert radial.sigma_at(180, 160) == pytest.approx(1.5)
    for x, y in ((-20, 10), (380, 10), (-20, 310), (380, 310)):
        assert radial.sigma_at(x, y) == pytest.approx(2.25)
    assert radial.sigma_at(380, 160) == pytest.approx(1.875)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((27, 27, [[1.0, 2.0]], BBOX), "sigma_coeffs give sigma = .* <= 0"),  # 1 + 2v < 0 for v < -0.5
        ((27, 27, [[-1.0]], BBOX), "sigma must stay positive"),
        ((27, 27, [[1.0, np.nan]], BBOX), "sigma_coeffs must be finite"),
        ((27, 27, [1.0, 2.0], BBOX), "sigma_coeffs must be a 2-d array"),
        ((0, 27, 1.0, BBOX), "width"),
        ((27, 27, 1.0, Box2I()), "bbox must not be empty"),
    ],
)
def test_validation_names_the_parameter(args, match):
    with pytest.raises(ValueError, match=match):
        VaryingGaussianPsf(*args)


def test_extrapolation_to_a_non_positive_sigma_raises():
    psf = VaryingGaussianPsf(21, 21, [[1.0, 0.9]], BBOX)  # 0.1 px at the bottom edge, < 0 below it
    with pytest.raises(ValueError, match="sigma is not positive"):
        psf.computeImage(Point2D(180.0, -200.0))
    with pytest.raises(TypeError):
        VaryingGaussianPsf(21, 21, 1.0, (0, 0, 10, 10))


def measured_fwhm(array: np.ndarray) -> float:
    """FWHM from a cubic spline through the central row and column of a centred kernel image."""
    cy, cx = array.shape[0] // 2, array.shape[1] // 2
    half = array[cy, cx] / 2.0
    widths = []
    for profile in (array[cy, cx:], array[cy:, cx]):
        r = np.arange(len(profile), dtype=float)
        spline = CubicSpline(r, profile - half)
        roots = [t for t in spline.roots() if 0 < t < len(profile) - 1]
        widths.append(2.0 * min(roots))
    return float(np.mean(widths))


@pytest.mark.parametrize("beta", [2.5, 3.5, 4.765])
def test_moffat_is_normalised_with_the_requested_fwhm(beta):
    moffat = VaryingMoffatPsf(41, 41, [[5.0, 0.0, 1.0], [1.0, 0.0, 0.0]], BBOX, beta=beta)
    for position in POSITIONS:
        fwhm = moffat.fwhm_at(*position)
        image = moffat.computeKernelImage(Point2D(*position))
        assert image.array.sum() == pytest.approx(1.0, abs=1e-12)
        assert measured_fwhm(image.array) == pytest.approx(fwhm, rel=1e-2)
        alpha = moffat.alpha_at(*position)
        assert 2 * alpha * math.sqrt(2 ** (1 / beta) - 1) == pytest.approx(fwhm, rel=1e-12)
        shifted = moffat.computeImage(Point2D(position[0] + 0.3, position[1] - 0.2))
        assert shifted.array.sum() == pytest.approx(1.0, abs=1e-12)


def test_moffat_shape_and_value_semantics():
    moffat = VaryingMoffatPsf(41, 41, [[4.0, 1.0]], BBOX, beta=3.0)
    # Adaptive moments of the kernel image: narrower than the FWHM's Gaussian sigma for a
    # wingy profile, and growing with the FWHM.
    centre = moffat.sigma_at(180.0, 160.0)
    top = moffat.sigma_at(180.0, 310.0)
    assert 0.7 * 4.0 / FWHM_PER_SIGMA < centre < 1.2 * 4.0 / FWHM_PER_SIGMA
    assert top == pytest.approx(centre * 5.0 / 4.0, rel=2e-2)
    assert psf_fwhm(moffat) == pytest.approx(centre * FWHM_PER_SIGMA, rel=1e-9)
    copy = pickle.loads(pickle.dumps(moffat))
    assert copy == moffat and hash(copy) == hash(moffat) and copy.getBeta() == 3.0
    assert VaryingMoffatPsf(41, 41, [[4.0, 1.0]], BBOX, beta=3.5) != moffat
    with pytest.raises(ValueError, match="beta must be > 1"):
        VaryingMoffatPsf(41, 41, 4.0, BBOX, beta=1.0)
    with pytest.raises(ValueError, match="fwhm_coeffs give fwhm"):
        VaryingMoffatPsf(41, 41, [[1.0, -2.0]], BBOX)
