"""Tests for imagemapreduce.psf: Quadrupole, adaptive_moments, GaussianPsf, DoubleGaussianPsf, CoaddPsf."""

# ruff: noqa: D103 - test functions are named for what they check

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from imagemapreduce.geom import Box2I, Extent2I, Point2D, Point2I
from imagemapreduce.psf import CoaddPsf, DoubleGaussianPsf, GaussianPsf, Psf, Quadrupole, adaptive_moments


def gaussian_grid(width: int, height: int, sigma: float, dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
    """Independent reference: a normalised circular Gaussian centred on index (w//2 + dx, h//2 + dy)."""
    y, x = np.mgrid[0:height, 0:width].astype(float)
    r2 = (x - width // 2 - dx) ** 2 + (y - height // 2 - dy) ** 2
    g = np.exp(-r2 / (2 * sigma**2))
    return g / g.sum()


def reference_moments(array: np.ndarray) -> tuple[float, float, float, float, float]:
    """Unweighted centroid and second moments of an image, computed directly."""
    y, x = np.mgrid[0 : array.shape[0], 0 : array.shape[1]].astype(float)
    flux = array.sum()
    xc, yc = (array * x).sum() / flux, (array * y).sum() / flux
    ixx = (array * (x - xc) ** 2).sum() / flux
    iyy = (array * (y - yc) ** 2).sum() / flux
    ixy = (array * (x - xc) * (y - yc)).sum() / flux
    return xc, yc, ixx, iyy, ixy


ANALYTIC = [
    GaussianPsf(21, 21, 2.0),
    GaussianPsf(20, 16, 1.7),
    DoubleGaussianPsf(25, 25, 1.5, 4.0, 0.1),
    DoubleGaussianPsf(14, 19, 2.2),
]


# -- Quadrupole ------------------------------------------------------------------------------------
def test_quadrupole_accessors_and_radii():
    q = Quadrupole(5.0, 3.0, 1.0)
    assert (q.getIxx(), q.getIyy(), q.getIxy()) == (5.0, 3.0, 1.0)
    assert q.getDeterminant() == pytest.approx(14.0)
    assert q.getDeterminantRadius() == pytest.approx(14.0**0.25)
    assert q.getTraceRadius() == pytest.approx(2.0)
    np.testing.assert_array_equal(q.getMatrix(), [[5.0, 1.0], [1.0, 3.0]])
    assert math.isnan(Quadrupole(1.0, 1.0, 2.0).getDeterminantRadius())
    assert q == Quadrupole(5.0, 3.0, 1.0) and q != Quadrupole(5.0, 3.0, 0.0)
    assert hash(q) == hash(Quadrupole(5.0, 3.0, 1.0))
    assert pickle.loads(pickle.dumps(q)) == q
    assert eval(repr(q)) == q
    with pytest.raises(AttributeError):
        q._ixx = 1.0  # type: ignore[misc]


# -- adaptive moments ---------------------------------------------------------------------------------
@pytest.mark.parametrize("sigma", [1.5, 2.0, 3.5, 6.0])
def test_adaptive_moments_recover_gaussian_sigma(sigma):
    array = gaussian_grid(81, 81, sigma, dx=0.3, dy=-0.2)
    shape, centroid = adaptive_moments(array)
    assert shape.getIxx() == pytest.approx(sigma**2, rel=5e-3)
    assert shape.getIyy() == pytest.approx(sigma**2, rel=5e-3)
    assert shape.getIxy() == pytest.approx(0.0, abs=1e-6)
    assert centroid.x == pytest.approx(40.3, abs=1e-4)
    assert centroid.y == pytest.approx(39.8, abs=1e-4)


def test_adaptive_moments_recover_elliptical_gaussian():
    cov = np.array([[9.0, 2.5], [2.5, 4.0]])
    inv = np.linalg.inv(cov)
    y, x = np.mgrid[0:61, 0:61].astype(float)
    dx, dy = x - 31.4, y - 28.7
    array = 7.0 * np.exp(-0.5 * (inv[0, 0] * dx**2 + 2 * inv[0, 1] * dx * dy + inv[1, 1] * dy**2))
    shape, centroid = adaptive_moments(array, center=(30, 30))
    assert shape.getIxx() == pytest.approx(9.0, rel=1e-4)
    assert shape.getIyy() == pytest.approx(4.0, rel=1e-4)
    assert shape.getIxy() == pytest.approx(2.5, rel=1e-4)
    assert (centroid.x, centroid.y) == pytest.approx((31.4, 28.7), abs=1e-4)


def test_adaptive_moments_fixed_centroid():
    array = gaussian_grid(41, 41, 2.0)
    shape, centroid = adaptive_moments(array, center=(20.0, 20.0), recentroid=False)
    assert centroid == Point2D(20.0, 20.0)
    assert shape.getIxx() == pytest.approx(4.0, rel=1e-4)


@pytest.mark.parametrize(
    "array",
    [np.zeros((11, 11)), -gaussian_grid(11, 11, 2.0), np.ones(5), np.full((5, 5), np.nan)],
    ids=["zero", "negative", "1-d", "nan"],
)
def test_adaptive_moments_failures_raise(array):
    with pytest.raises(ValueError):
        adaptive_moments(array)


# -- analytic PSFs: images ------------------------------------------------------------------------------
@pytest.mark.parametrize("psf", ANALYTIC, ids=repr)
@pytest.mark.parametrize("position", [Point2D(0, 0), Point2D(103, -7), Point2D(10.5, 20.5), Point2D(3.2, 4.7)])
def test_image_sums_to_one_and_follows_xy0_rule(psf, position):
    image = psf.computeImage(position)
    dims = psf.getDimensions()
    assert image.array.sum() == pytest.approx(1.0, abs=1e-12)
    assert image.getDimensions() == dims
    center = Point2I(math.floor(position.x + 0.5), math.floor(position.y + 0.5))
    assert image.getXY0() == Point2I(center.x - dims.x // 2, center.y - dims.y // 2)
    assert psf.computeImageBBox(position) == image.getBBox()


@pytest.mark.parametrize("psf", ANALYTIC, ids=repr)
def test_kernel_image_xy0_and_peak(psf):
    image = psf.computeKernelImage()
    dims = psf.getDimensions()
    assert image.getXY0() == Point2I(-(dims.x // 2), -(dims.y // 2))
    assert image.array.sum() == pytest.approx(1.0, abs=1e-12)
    iy, ix = np.unravel_index(np.argmax(image.array), image.array.shape)
    assert (ix + image.getX0(), iy + image.getY0()) == (0, 0)
    assert psf.computePeak() == image.array.max()
    assert psf.computeBBox() == image.getBBox()


@pytest.mark.parametrize("position", [Point2D(12.0, 30.0), Point2D(12.5, 30.5), Point2D(-4.5, 7.5)])
def test_peak_at_nearest_pixel_and_half_pixel_symmetry(position):
    psf = GaussianPsf(25, 25, 2.0)  # wide enough that truncation does not bias the centroid
    image = psf.computeImage(position)
    array = image.array
    center = Point2I(math.floor(position.x + 0.5), math.floor(position.y + 0.5))
    ix, iy = center.x - image.getX0(), center.y - image.getY0()
    assert (ix, iy) == (12, 12)  # the pixel nearest the position, rounding halves up, is the middle one
    assert array[iy, ix] == pytest.approx(array.max(), rel=1e-12)
    if position.x % 1 == 0.5:
        # Centred on a pixel corner: the pixels left of and below the centre pixel tie with it.
        assert array[iy, ix - 1] == pytest.approx(array[iy, ix], rel=1e-12)
        assert array[iy - 1, ix] == pytest.approx(array[iy, ix], rel=1e-12)
        assert array[iy, ix + 1] < array[iy, ix]
    else:
        assert np.count_nonzero(array == array.max()) == 1
    # The image's own centroid is the requested position (the profile is well inside the grid).
    xc, yc, *_ = reference_moments(array)
    assert xc + image.getX0() == pytest.approx(position.x, abs=1e-6)
    assert yc + image.getY0() == pytest.approx(position.y, abs=1e-6)


@pytest.mark.parametrize("psf", [ANALYTIC[0], ANALYTIC[2]], ids=repr)
def test_odd_kernel_is_symmetric(psf):
    array = psf.computeKernelImage().array
    np.testing.assert_allclose(array, array[::-1, :], rtol=1e-12)
    np.testing.assert_allclose(array, array[:, ::-1], rtol=1e-12)
    np.testing.assert_allclose(array, array.T, rtol=1e-12)


def test_even_kernel_is_centred_on_upper_middle_pixel():
    image = GaussianPsf(10, 8, 1.5).computeKernelImage()
    np.testing.assert_allclose(image.array, gaussian_grid(10, 8, 1.5), rtol=1e-12)
    assert image.getBBox() == Box2I(Point2I(-5, -4), Point2I(4, 3))


@pytest.mark.parametrize("position", [Point2D(0.0, 0.0), Point2D(7.3, -2.6)])
def test_gaussian_image_matches_numpy_and_moments(position):
    psf = GaussianPsf(31, 27, 2.5)
    image = psf.computeImage(position)
    dx = position.x - math.floor(position.x + 0.5)
    dy = position.y - math.floor(position.y + 0.5)
    np.testing.assert_allclose(image.array, gaussian_grid(31, 27, 2.5, dx, dy), rtol=1e-12, atol=1e-15)
    _, _, ixx, iyy, ixy = reference_moments(image.array)
    assert ixx == pytest.approx(2.5**2, rel=1e-3)
    assert iyy == pytest.approx(2.5**2, rel=1e-3)
    assert ixy == pytest.approx(0.0, abs=1e-9)


def test_gaussian_shape_is_analytic():
    psf = GaussianPsf(11, 11, 1.7)
    assert psf.getSigma() == 1.7
    assert psf.computeShape() == Quadrupole(1.7**2, 1.7**2, 0.0)
    assert psf.computeShape(Point2D(100.0, 3.0)) == Quadrupole(1.7**2, 1.7**2, 0.0)
    assert psf.getAveragePosition() == Point2D(0.0, 0.0)


def test_double_gaussian_matches_lsst_formula():
    sigma1, sigma2, b = 1.5, 4.0, 0.1
    psf = DoubleGaussianPsf(25, 23, sigma1, sigma2, b)
    y, x = np.mgrid[-11:12, -12:13].astype(float)
    r2 = x**2 + y**2
    expected = (np.exp(-r2 / (2 * sigma1**2)) + b * np.exp(-r2 / (2 * sigma2**2))) / (1 + b)
    expected /= expected.sum()
    np.testing.assert_allclose(psf.computeKernelImage().array, expected, rtol=1e-12)
    assert (psf.getSigma1(), psf.getSigma2(), psf.getB()) == (sigma1, sigma2, b)


def test_double_gaussian_shape_of_single_gaussian():
    psf = DoubleGaussianPsf(11, 11, 2.0, 3.7)
    shape = psf.computeShape()
    assert shape.getDeterminantRadius() == pytest.approx(2.0, rel=0.01)
    assert shape.getTraceRadius() == pytest.approx(2.0, rel=0.01)
    assert shape.getIxy() == pytest.approx(0.0, abs=1e-9)


def test_double_gaussian_zero_sigma2_with_zero_b_becomes_one():
    psf = DoubleGaussianPsf(11, 11, 2.0, 0.0, 0.0)
    assert psf.getSigma2() == 1.0
    np.testing.assert_allclose(psf.computeKernelImage().array, gaussian_grid(11, 11, 2.0), rtol=1e-12)


@pytest.mark.parametrize(
    ("exception", "cls", "args", "match"),
    [
        (ValueError, GaussianPsf, (0, 11, 2.0), "width"),
        (ValueError, GaussianPsf, (11, -1, 2.0), "height"),
        (ValueError, GaussianPsf, (11, 11, 0.0), "sigma"),
        (ValueError, GaussianPsf, (11, 11, -1.0), "sigma"),
        (ValueError, GaussianPsf, (11, 11, math.nan), "sigma"),
        (TypeError, GaussianPsf, (11.0, 11, 2.0), "width"),
        (TypeError, GaussianPsf, (11, 11, "wide"), "sigma"),
        (ValueError, DoubleGaussianPsf, (0, 11, 2.0), "width"),
        (ValueError, DoubleGaussianPsf, (11, 11, 0.0), "sigma1"),
        (ValueError, DoubleGaussianPsf, (11, 11, 2.0, 0.0, 0.1), "sigma2"),
        (ValueError, DoubleGaussianPsf, (11, 11, 2.0, -1.0, 0.0), "sigma2"),
        (ValueError, DoubleGaussianPsf, (11, 11, 2.0, 3.0, -0.5), "b"),
        (ValueError, DoubleGaussianPsf, (11, 11, 2.0, 3.0, math.inf), "b"),
    ],
)
def test_validation(exception, cls, args, match):
    with pytest.raises(exception, match=match):
        cls(*args)


def test_position_must_be_finite():
    with pytest.raises(ValueError, match="finite"):
        GaussianPsf(11, 11, 2.0).computeImage(Point2D(math.nan, 0.0))


# -- value semantics -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("psf", ANALYTIC, ids=repr)
def test_pickle_clone_equality(psf):
    copy = pickle.loads(pickle.dumps(psf))
    assert copy == psf and hash(copy) == hash(psf)
    assert psf.clone() == psf and psf.clone() is not psf
    position = Point2D(3.3, 1.2)
    np.testing.assert_array_equal(copy.computeImage(position).array, psf.computeImage(position).array)
    assert GaussianPsf(21, 21, 2.0) != GaussianPsf(21, 21, 2.5)
    assert GaussianPsf(21, 21, 2.0) != DoubleGaussianPsf(21, 21, 2.0)
    with pytest.raises(AttributeError):
        psf._width = 3  # type: ignore[misc]


# -- CoaddPsf --------------------------------------------------------------------------------------------
def box(x0: int, y0: int, x1: int, y1: int) -> Box2I:
    return Box2I(Point2I(x0, y0), Point2I(x1, y1))


def test_coadd_of_one_component_equals_that_psf():
    psf = DoubleGaussianPsf(21, 21, 1.8, 4.0, 0.1)
    coadd = CoaddPsf([(psf, box(0, 0, 99, 99), 2.5)])
    for position in [Point2D(50.0, 50.0), Point2D(12.3, 80.6)]:
        for method in ("computeKernelImage", "computeImage"):
            got, want = getattr(coadd, method)(position), getattr(psf, method)(position)
            assert got.getBBox() == want.getBBox()
            np.testing.assert_allclose(got.array, want.array, rtol=1e-12, atol=1e-17)
    shape, want = coadd.computeShape(Point2D(50, 50)), psf.computeShape()
    assert (shape.getIxx(), shape.getIyy()) == pytest.approx((want.getIxx(), want.getIyy()), rel=1e-9)
    assert coadd.getComponentCount() == 1
    assert (coadd.getPsf(0), coadd.getBBox(0), coadd.getWeight(0)) == (psf, box(0, 0, 99, 99), 2.5)
    assert coadd.getDimensions() == Extent2I(21, 21)


def test_coadd_weighted_mean_of_different_sizes():
    small, large = GaussianPsf(11, 11, 1.5), GaussianPsf(21, 17, 3.0)
    coadd = CoaddPsf([(small, box(0, 0, 60, 60), 1.0), (large, box(40, 40, 100, 100), 3.0)])
    position = Point2D(50.2, 49.6)
    got = coadd.computeKernelImage(position)
    expected = 3.0 * large.computeKernelImage().array
    expected[3:14, 5:16] += 1.0 * small.computeKernelImage().array
    expected /= expected.sum()
    assert got.getBBox() == Box2I(Point2I(-10, -8), Extent2I(21, 17))
    np.testing.assert_allclose(got.array, expected, rtol=1e-12, atol=1e-17)

    image = coadd.computeImage(position)
    expected = 3.0 * large.computeImage(position).array
    expected[3:14, 5:16] += 1.0 * small.computeImage(position).array
    expected /= expected.sum()
    assert image.getBBox() == large.computeImage(position).getBBox()
    np.testing.assert_allclose(image.array, expected, rtol=1e-12, atol=1e-17)
    assert image.array.sum() == pytest.approx(1.0, abs=1e-12)

    # Where only one box covers the position, only that PSF contributes.
    np.testing.assert_allclose(coadd.computeKernelImage((10, 10)).array, small.computeKernelImage().array)
    assert coadd.getDimensions() == Extent2I(21, 17)
    # The blend is wider than the narrow component and narrower than the wide one.
    radius = coadd.computeShape(position).getDeterminantRadius()
    assert 1.5 < radius < 3.0


def test_coadd_containment_uses_rounded_pixel():
    psf_a, psf_b = GaussianPsf(11, 11, 1.0), GaussianPsf(11, 11, 3.0)
    coadd = CoaddPsf([(psf_a, box(0, 0, 9, 9), 1.0), (psf_b, box(10, 0, 19, 9), 1.0)])
    # floor(9.49 + 0.5) == 9 is in the first box only; floor(9.5 + 0.5) == 10 in the second only.
    np.testing.assert_allclose(coadd.computeKernelImage((9.49, 5)).array, psf_a.computeKernelImage().array)
    np.testing.assert_allclose(coadd.computeKernelImage((9.5, 5)).array, psf_b.computeKernelImage().array)
    with pytest.raises(ValueError, match="no component PSF covers position"):
        coadd.computeImage(Point2D(-0.51, 5.0))
    coadd.computeImage(Point2D(-0.5, 5.0))  # rounds to pixel 0, inside


def test_coadd_outside_every_box_raises():
    coadd = CoaddPsf([(GaussianPsf(11, 11, 2.0), box(0, 0, 9, 9), 1.0)])
    with pytest.raises(ValueError, match=r"no component PSF covers position \(50.0, 50.0\).*covers boxes"):
        coadd.computeKernelImage(Point2D(50, 50))
    with pytest.raises(ValueError):
        coadd.computeShape(Point2D(50, 50))
    # Covered, but only by a zero-weight component.
    coadd = CoaddPsf([(coadd.getPsf(0), box(0, 0, 9, 9), 0.0), (coadd.getPsf(0), box(20, 20, 29, 29), 1.0)])
    with pytest.raises(ValueError, match="zero weight"):
        coadd.computeImage(Point2D(5, 5))


def test_coadd_average_position_is_weighted():
    psf = GaussianPsf(11, 11, 2.0)
    coadd = CoaddPsf([(psf, box(0, 0, 10, 20), 1.0), (psf, box(100, 100, 110, 120), 3.0)])
    expected = (1.0 * np.array([5.0, 10.0]) + 3.0 * np.array([105.0, 110.0])) / 4.0
    assert tuple(coadd.getAveragePosition()) == pytest.approx(tuple(expected))


def test_coadd_from_records_and_equal_psfs_share_evaluation():
    records = [
        {"psf": GaussianPsf(11, 11, 2.0), "bbox": box(0, 0, 50, 50), "weight": 1.0},
        {"psf": GaussianPsf(11, 11, 2.0), "bbox": box(10, 10, 60, 60), "weight": 2.0},
    ]
    coadd = CoaddPsf.from_records(records)
    assert coadd == CoaddPsf([(r["psf"], r["bbox"], r["weight"]) for r in records])
    assert coadd.getComponentCount() == 2
    want = GaussianPsf(11, 11, 2.0).computeKernelImage().array
    np.testing.assert_allclose(coadd.computeKernelImage((30, 30)).array, want, rtol=1e-12)
    with pytest.raises(IndexError):
        coadd.getPsf(2)


@pytest.mark.parametrize(
    ("exception", "components", "match"),
    [
        (ValueError, [], "at least one"),
        (ValueError, [(GaussianPsf(5, 5, 1.0), box(0, 0, 9, 9), 0.0)], "positive total"),
        (ValueError, [(GaussianPsf(5, 5, 1.0), box(0, 0, 9, 9), -1.0)], "weight"),
        (ValueError, [(GaussianPsf(5, 5, 1.0), box(0, 0, 9, 9), math.nan)], "weight"),
        (ValueError, [(GaussianPsf(5, 5, 1.0), Box2I(), 1.0)], "empty"),
        (TypeError, [("not a psf", box(0, 0, 9, 9), 1.0)], "Psf"),
        (TypeError, [(GaussianPsf(5, 5, 1.0), (0, 0, 9, 9), 1.0)], "Box2I"),
        (TypeError, [(GaussianPsf(5, 5, 1.0), box(0, 0, 9, 9))], "triple"),
    ],
)
def test_coadd_validation(exception, components, match):
    with pytest.raises(exception, match=match):
        CoaddPsf(components)


def test_coadd_pickle_round_trip():
    gauss, double = GaussianPsf(11, 11, 2.0), DoubleGaussianPsf(15, 15, 1.5, 3.0, 0.2)
    coadd = CoaddPsf([(gauss, box(0, 0, 50, 50), 1.0), (double, box(20, 10, 80, 70), 0.5)])
    copy = pickle.loads(pickle.dumps(coadd))
    assert copy == coadd and hash(copy) == hash(coadd)
    assert coadd.clone() == coadd
    assert copy.getAveragePosition() == coadd.getAveragePosition()
    want = coadd.computeImage((30.2, 30.7)).array
    np.testing.assert_array_equal(copy.computeImage((30.2, 30.7)).array, want)
    assert isinstance(copy, Psf)
    assert coadd != CoaddPsf([(GaussianPsf(11, 11, 2.0), box(0, 0, 50, 50), 1.0)])


def test_coadd_scales_to_ten_thousand_components():
    rng = np.random.default_rng(42)
    psfs = [GaussianPsf(21, 21, s) for s in (1.5, 2.0, 2.5, 3.0)]
    corners = rng.integers(0, 500, size=(10_000, 2))
    weights = rng.uniform(0.5, 2.0, size=10_000)
    components = [
        (psfs[i % 4], Box2I(Point2I(int(x), int(y)), Extent2I(600, 600)), float(w))
        for i, ((x, y), w) in enumerate(zip(corners, weights, strict=True))
    ]
    coadd = CoaddPsf(components)
    position = Point2D(550.3, 560.7)
    image = coadd.computeKernelImage(position)
    pixel = np.array([550, 561])
    covered = np.all((corners <= pixel) & (pixel <= corners + 599), axis=1)
    expected = sum(
        weights[covered & (np.arange(10_000) % 4 == k)].sum() * psfs[k].computeKernelImage().array for k in range(4)
    )
    np.testing.assert_allclose(image.array, expected / expected.sum(), rtol=1e-10)
    expected_avg = (weights[:, None] * (corners + 299.5)).sum(axis=0) / weights.sum()
    assert tuple(coadd.getAveragePosition()) == pytest.approx(tuple(expected_avg))
