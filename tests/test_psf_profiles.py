"""The profile PSFs: pixel-integrated elliptical Gaussian, Moffat and Kolmogorov, varying shear, CallablePsf."""

# ruff: noqa: D103 - test functions are named for what they check

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from imagemapreduce.geom import Box2I, Extent2I, Point2D, Point2I
from imagemapreduce.psf import (
    CallablePsf,
    EllipticalGaussianPsf,
    KolmogorovPsf,
    MoffatPsf,
    VaryingGaussianPsf,
    VaryingKolmogorovPsf,
    VaryingMoffatPsf,
    adaptive_moments,
    moments_to_shear,
    psf_from_dict,
    psf_to_dict,
)
from imagemapreduce.psfmatch.homogenize import cell_kernel_image

BBOX = Box2I(Point2I(0, 0), Extent2I(201, 101))  # u = (x - 100) / 100, v = (y - 50) / 50


def supersampled(profile, size: int, shift=(0.0, 0.0), n: int = 120) -> np.ndarray:
    """Reference pixel integral: the mean of ``profile(x, y)`` on an n x n midpoint grid in each pixel."""
    offsets = (np.arange(n) + 0.5) / n - 0.5
    centre = np.arange(size) - size // 2
    x = (centre[:, None] + offsets[None, :]).ravel() - shift[0]
    y = (centre[:, None] + offsets[None, :]).ravel() - shift[1]
    values = profile(x[None, :], y[:, None]).reshape(size, n, size, n).mean(axis=(1, 3))
    return values / values.sum()


def sheared_r2(x, y, g1, g2):
    """``r^2`` of an area-preserving shear by reduced shear g, built from the axis ratio and angle."""
    g = math.hypot(g1, g2)
    q = (1 - g) / (1 + g)  # minor / major axis
    angle = 0.5 * math.atan2(g2, g1)
    c, s = math.cos(angle), math.sin(angle)
    along, across = c * x + s * y, -s * x + c * y
    return along**2 * q + across**2 / q


@pytest.mark.parametrize(("g1", "g2"), [(0.0, 0.0), (0.05, -0.03)])
def test_gaussian_pixel_integration_matches_a_supersampled_reference(g1, g2):
    sigma = 1.2
    psf = EllipticalGaussianPsf(19, 19, sigma, g1, g2)
    expected = supersampled(lambda x, y: np.exp(-0.5 * sheared_r2(x, y, g1, g2) / sigma**2), 19)
    np.testing.assert_allclose(psf.computeKernelImage().array, expected, rtol=2e-4, atol=1e-8)
    shifted = psf.computeImage(Point2D(10.3, -4.6))
    expected_shifted = supersampled(lambda x, y: np.exp(-0.5 * sheared_r2(x, y, g1, g2) / sigma**2), 19, (0.3, 0.4))
    np.testing.assert_allclose(shifted.array, expected_shifted, rtol=2e-4, atol=1e-8)
    assert shifted.getXY0() == Point2I(10 - 9, -5 - 9)


def test_moffat_pixel_integration_matches_a_supersampled_reference():
    fwhm, beta, g1, g2 = 2.5, 2.5, -0.04, 0.02
    alpha = fwhm / (2 * math.sqrt(2 ** (1 / beta) - 1))
    psf = MoffatPsf(21, 21, fwhm, beta, g1, g2)
    expected = supersampled(lambda x, y: (1 + sheared_r2(x, y, g1, g2) / alpha**2) ** -beta, 21)
    np.testing.assert_allclose(psf.computeKernelImage().array, expected, rtol=2e-4, atol=1e-8)
    # Sampling at pixel centres instead makes a 2.5 px FWHM star measurably narrower.
    sampled = MoffatPsf(21, 21, fwhm, beta, pixelIntegrated=False).computeKernelImage().array
    integrated = MoffatPsf(21, 21, fwhm, beta).computeKernelImage().array
    ratio = adaptive_moments(sampled)[0].getDeterminantRadius() / adaptive_moments(integrated)[0].getDeterminantRadius()
    assert 0.94 < ratio < 0.98


def test_gaussian_moments_and_shear_are_analytic():
    psf = EllipticalGaussianPsf(41, 41, 2.5, 0.06, 0.03)
    measured, _ = adaptive_moments(psf.computeKernelImage().array)
    model = psf.computeShape()
    for got, want in zip((measured.getIxx(), measured.getIyy(), measured.getIxy()),
                         (model.getIxx(), model.getIyy(), model.getIxy()), strict=True):  # fmt: skip
        assert got == pytest.approx(want, rel=1e-3, abs=1e-4)
    # Without the pixel's 1/12 the moments' shear is the profile's, and the determinant radius sigma.
    sampled = EllipticalGaussianPsf(41, 41, 2.5, 0.06, 0.03, pixelIntegrated=False)
    shape, _ = adaptive_moments(sampled.computeKernelImage().array)
    assert moments_to_shear(shape) == pytest.approx((0.06, 0.03), abs=2e-4)
    assert shape.getDeterminantRadius() == pytest.approx(2.5, rel=1e-4)


def test_kolmogorov_transfer_function_is_the_five_thirds_law():
    fwhm = 3.0
    psf = KolmogorovPsf(48, 48, fwhm, pixelIntegrated=False)
    image = psf.computeKernelImage().array
    otf = np.abs(np.fft.fft(image.sum(axis=0)))  # the x axis of the 2-d transform
    k = 2 * np.pi * np.fft.fftfreq(48)
    # ln OTF = -(k / k0)^(5/3): the log-log slope is 5/3 at low and middle frequencies.
    band = (k > 0.15) & (k < 1.2)
    slope = np.polyfit(np.log(k[band]), np.log(-np.log(otf[band])), 1)[0]
    assert slope == pytest.approx(5 / 3, abs=0.02)
    # The FWHM, from the half-maximum crossing of a spline through the central row.
    from scipy.interpolate import CubicSpline

    row = image[24]
    spline = CubicSpline(np.arange(24, 48) - 24.0, row[24:] - row[24] / 2)
    half = min(t for t in spline.roots() if 0 < t < 10)
    assert 2 * half == pytest.approx(fwhm, rel=0.02)


def test_varying_shear_and_pixel_response():
    coeffs = dict(g1_coeffs=[[0.02, 0.0], [0.03, 0.0]], g2_coeffs=[[0.0, -0.04]])
    psf = VaryingGaussianPsf(31, 31, [[2.0], [0.3]], BBOX, pixelIntegrated=True, **coeffs)
    for x, y in ((0.0, 0.0), (100.0, 50.0), (200.0, 100.0), (37.5, 80.25)):
        u, v = (x - 100) / 100, (y - 50) / 50
        assert psf.shear_at(x, y) == pytest.approx((0.02 + 0.03 * u, -0.04 * v), abs=1e-12)
        measured, _ = adaptive_moments(psf.computeKernelImage(Point2D(x, y)).array)
        model = psf.computeShape(Point2D(x, y))
        assert measured.getIxx() == pytest.approx(model.getIxx(), rel=1e-3)
        assert measured.getIyy() == pytest.approx(model.getIyy(), rel=1e-3)
        assert measured.getIxy() == pytest.approx(model.getIxy(), abs=2e-3)
        sigma = 2.0 + 0.3 * u
        expected = EllipticalGaussianPsf(31, 31, sigma, *psf.shear_at(x, y)).computeKernelImage().array
        np.testing.assert_allclose(psf.computeKernelImage(Point2D(x, y)).array, expected, rtol=1e-9, atol=1e-15)
    assert psf.isElliptical() and psf.isPixelIntegrated()
    assert not VaryingGaussianPsf(31, 31, 2.0, BBOX).isElliptical()
    with pytest.raises(ValueError, match="reduced shear must stay below 1"):
        VaryingMoffatPsf(31, 31, 3.0, BBOX, g1_coeffs=[[0.5], [0.6]])


@pytest.mark.parametrize(
    "psf",
    [
        VaryingGaussianPsf(21, 21, [[2.0], [0.3]], BBOX, [[0.0], [0.03]], 0.01, True),
        VaryingMoffatPsf(21, 21, [[3.0, 0.2]], BBOX, 2.5, 0.0, [[0.0, 0.02]], True),
        VaryingKolmogorovPsf(21, 21, [[3.0], [0.5]], BBOX, [[0.01]]),
        EllipticalGaussianPsf(15, 17, 1.7, 0.1, -0.05),
        MoffatPsf(21, 21, 3.0, 4.5, 0.02, 0.0, pixelIntegrated=False),
        KolmogorovPsf(25, 25, 2.7, 0.0, 0.03),
    ],
    ids=lambda p: type(p).__name__,
)
def test_new_psfs_pickle_and_persist(psf):
    copy = pickle.loads(pickle.dumps(psf))
    assert copy == psf and hash(copy) == hash(psf)
    again = psf_from_dict(psf_to_dict(psf))
    assert again == psf
    position = Point2D(57.0, 33.5)
    np.testing.assert_array_equal(again.computeImage(position).array, psf.computeImage(position).array)


def test_round_sampled_documents_are_unchanged():
    # Stores written before shear and pixel response existed keep reading, and writing, the same.
    moffat = VaryingMoffatPsf(21, 21, 3.0, BBOX, 3.0)
    assert set(psf_to_dict(moffat)) == {"type", "width", "height", "coefficients", "bbox", "beta"}
    assert psf_from_dict(psf_to_dict(moffat)) == moffat


# -- CallablePsf -------------------------------------------------------------------------------------
CALLS: list[tuple[float, float]] = []


def gaussian_model(x: float, y: float) -> np.ndarray:
    """A module-level model: a Gaussian widening with x, unnormalised, 17 x 17."""
    CALLS.append((x, y))
    offsets = np.arange(-8, 9)
    sigma = 1.5 + x / 1000.0
    return np.exp(-0.5 * (offsets[None, :] ** 2 + offsets[:, None] ** 2) / sigma**2)


def test_callable_psf_is_normalised_cached_and_shifted():
    CALLS.clear()
    psf = CallablePsf(gaussian_model, averagePosition=(500.0, 250.0))
    assert psf.getDimensions() == Extent2I(17, 17)
    kernel = psf.computeKernelImage(Point2D(100.0, 20.0))
    assert kernel.getXY0() == Point2I(-8, -8) and kernel.array.sum() == pytest.approx(1.0, abs=1e-13)
    expected = gaussian_model(100.0, 20.0)
    np.testing.assert_allclose(kernel.array, expected / expected.sum(), rtol=1e-12)
    CALLS.clear()
    for _ in range(3):
        psf.computeKernelImage(Point2D(100.0, 20.0))
        psf.computeShape(Point2D(100.0, 20.0))
    assert CALLS == []  # cached: one evaluation per position
    star = psf.computeImage(Point2D(300.4, 99.7))
    _, centroid = adaptive_moments(star.array)
    assert centroid.x + star.getX0() == pytest.approx(300.4, abs=2e-3)
    assert centroid.y + star.getY0() == pytest.approx(99.7, abs=2e-3)
    assert star.array.sum() == pytest.approx(1.0, abs=1e-12) and star.array.min() >= 0.0
    assert psf.getAveragePosition() == Point2D(500.0, 250.0)
    assert psf.computeShape().getDeterminantRadius() == pytest.approx(2.0, rel=2e-3)  # sigma 1.5 + 0.5


def test_callable_psf_pickles_functions_and_lambdas():
    psf = CallablePsf(gaussian_model)
    copy = pickle.loads(pickle.dumps(psf))
    assert copy == psf and copy.getFunction() is gaussian_model
    width = 2.0
    closure = CallablePsf(lambda x, y: np.exp(-0.5 * np.add.outer(np.arange(-6, 7) ** 2, np.arange(-6, 7) ** 2)
                                             / width**2))  # fmt: skip
    # A lambda travels by value the way Dask sends tasks (cloudpickle); plain pickle refuses it.
    import cloudpickle

    clone = cloudpickle.loads(cloudpickle.dumps(closure))
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        pickle.dumps(closure)
    np.testing.assert_array_equal(
        clone.computeKernelImage((3.0, 4.0)).array, closure.computeKernelImage((3.0, 4.0)).array
    )


def test_callable_psf_rejects_bad_images():
    with pytest.raises(TypeError, match="callable"):
        CallablePsf(3.0)
    with pytest.raises(ValueError, match="2-d image"):
        CallablePsf(lambda x, y: np.ones(5)).computeKernelImage()
    with pytest.raises(ValueError, match="sum"):
        CallablePsf(lambda x, y: np.zeros((5, 5))).computeKernelImage()
    changing = CallablePsf(lambda x, y: np.ones((5, 5)) if x < 1 else np.ones((7, 7)))
    changing.computeKernelImage((0.0, 0.0))
    with pytest.raises(ValueError, match="earlier calls gave"):
        changing.computeKernelImage((2.0, 0.0))


def test_cell_kernel_images_are_computed_once_per_cell():
    CALLS.clear()
    psf = CallablePsf(gaussian_model, cacheSize=0)  # no cache in the PSF: the mapper's cache counts
    for _ in range(4):
        image = cell_kernel_image(psf, Point2D(31.5, 95.5))
    assert CALLS == [(31.5, 95.5)]
    assert not image.flags.writeable


@pytest.mark.parametrize("profile", ["moffat", "kolmogorov"])
def test_relaxed_adaptive_moments_agree_and_need_fewer_iterations(profile):
    from imagemapreduce.psfmatch.simulate import field_psf

    bbox = Box2I(Point2I(0, 0), Extent2I(512, 512))
    psf = field_psf(bbox, profile, 2.5, 4.5, beta=2.5, g_max=0.04)
    stamp = psf.computeKernelImage(Point2D(480.0, 40.0)).array
    centre = (stamp.shape[1] // 2, stamp.shape[0] // 2)
    plain, _ = adaptive_moments(stamp, centre)
    relaxed, _ = adaptive_moments(stamp, centre, relaxation=2.0, max_iter=14)
    for a, b in zip(plain.getMatrix().ravel(), relaxed.getMatrix().ravel(), strict=True):
        assert b == pytest.approx(a, rel=1e-6, abs=1e-8)
    # The plain iteration needs more than 14 steps on the same stamp.
    with pytest.raises(ValueError, match="did not converge in 14 iterations"):
        adaptive_moments(stamp, centre, max_iter=14)
    with pytest.raises(ValueError, match="relaxation must be in"):
        adaptive_moments(stamp, centre, relaxation=2.5)


def test_the_cell_survey_matches_compute_shape():
    from imagemapreduce.psfmatch.homogenize import survey_psf
    from imagemapreduce.psfmatch.simulate import field_psf

    bbox = Box2I(Point2I(0, 0), Extent2I(512, 512))
    psf = field_psf(bbox, "moffat", 2.5, 4.5, beta=3.5, g_max=0.04)
    boxes = [Box2I(Point2I(x, y), Extent2I(64, 64)) for y in range(0, 512, 128) for x in range(0, 512, 96)]
    survey = survey_psf(psf, boxes=boxes)
    for box, (ixx, iyy, ixy) in zip(boxes, survey.moments, strict=True):
        shape = psf.computeShape(box.getCenter())
        expected = (shape.getIxx(), shape.getIyy(), shape.getIxy())
        # The survey converges to 1e-6 of the trace (far below the 1e-4 that `check_target`
        # resolves); each moment, the small cross term included, agrees to that scale.
        trace = expected[0] + expected[1]
        assert (ixx, iyy, ixy) == pytest.approx(expected, rel=0, abs=1e-6 * trace)


@pytest.mark.parametrize("profile", ["gaussian", "moffat", "kolmogorov"])
@pytest.mark.parametrize("g_max", [0.0, 0.04])
def test_field_psfs_equal_themselves_read_back_from_their_documents(profile, g_max):
    from imagemapreduce.psfmatch import field_psf

    psf = field_psf(Box2I(Point2I(0, 0), Extent2I(64, 48)), profile, 2.5, 4.5, g_max=g_max)
    back = psf_from_dict(psf_to_dict(psf))
    assert back == psf and hash(back) == hash(psf)
    assert psf.isElliptical() == (g_max > 0)
