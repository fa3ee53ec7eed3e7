"""Profiles shared by the analytic PSFs: elliptical Gaussian, Moffat and Kolmogorov, optionally pixel-integrated.

A profile is evaluated on a grid of pixel offsets from its centre. Ellipticity is a reduced shear
``g = (g1, g2)`` applied with unit determinant, so the width parameter (sigma, FWHM) stays the
geometric mean of the major and minor axes. With ``pixelIntegrated`` the value of a pixel is the
profile's mean over the pixel's unit square (what a detector records), rather than its value at
the pixel centre: a Gauss-Legendre rule for the Gaussian and Moffat, and the exact pixel response
(a sinc in Fourier space) for the Kolmogorov profile, which is built in Fourier space anyway.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from ..geom import Point2I
from ..image._image import ImageD
from ._base import PositionLike, cached_hash, check_sigma
from ._gaussian import _AnalyticPsf
from ._shape import Quadrupole

__all__ = [
    "EllipticalGaussianPsf",
    "MoffatPsf",
    "KolmogorovPsf",
    "shear_to_moments",
    "moments_to_shear",
    "moffat_alpha",
    "kolmogorov_k0",
]

#: FWHM of a Gaussian in units of its sigma, 2 sqrt(2 ln 2).
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
#: Gauss-Legendre points per axis for pixel integration: exact for polynomials of degree 5 over a
#: pixel, so a 2.5 px FWHM Moffat's pixels are right to 4e-5 (5 points: 1e-8, at 2.8 times the cost).
_QUADRATURE_POINTS = 3
#: Variance a unit pixel adds to a profile it integrates, per axis.
PIXEL_VARIANCE = 1.0 / 12.0


def check_shear(g1: Any, g2: Any) -> tuple[float, float]:
    """Return ``(g1, g2)`` as floats with ``|g| < 1``, or raise naming the problem."""
    try:
        a, b = float(g1), float(g2)
    except (TypeError, ValueError):
        raise TypeError(f"g1 and g2 must be numbers, got {g1!r}, {g2!r}") from None
    if not (math.isfinite(a) and math.isfinite(b) and math.hypot(a, b) < 1.0):
        raise ValueError(f"the reduced shear (g1, g2) = ({g1}, {g2}) must be finite with |g| < 1")
    return a, b


def _distortion(g1: Any, g2: Any) -> tuple[Any, Any]:
    """Return the distortion ``e = 2 g / (1 + |g|^2)`` of a reduced shear (vectorised)."""
    scale = 2.0 / (1.0 + np.square(g1) + np.square(g2))
    return g1 * scale, g2 * scale


def shear_to_moments(radius: Any, g1: Any = 0.0, g2: Any = 0.0) -> tuple[Any, Any, Any]:
    """Return ``(ixx, iyy, ixy)`` of an ellipse of determinant radius ``radius`` and reduced shear ``g``.

    The determinant of the moments is ``radius**4`` whatever the shear (vectorised).
    """
    e1, e2 = _distortion(g1, g2)
    scale = np.square(radius) / np.sqrt(1.0 - np.square(e1) - np.square(e2))
    return scale * (1.0 + e1), scale * (1.0 - e1), scale * e2


def moments_to_shear(shape: Quadrupole) -> tuple[float, float]:
    """Return the reduced shear ``(g1, g2)`` of a `Quadrupole`: ``g = e / (1 + sqrt(1 - |e|^2))``."""
    trace = shape.getIxx() + shape.getIyy()
    e1 = (shape.getIxx() - shape.getIyy()) / trace
    e2 = 2.0 * shape.getIxy() / trace
    scale = 1.0 / (1.0 + math.sqrt(max(1.0 - e1 * e1 - e2 * e2, 0.0)))
    return e1 * scale, e2 * scale


def inverse_shape(g1: float, g2: float) -> tuple[float, float, float]:
    """Return ``(a, b, c)`` with ``r^2 = a x^2 + 2 b x y + c y^2`` the sheared radius of unit determinant."""
    a, b, c = _inverse_shapes(g1, g2)
    return float(a.item()), float(b.item()), float(c.item())


def check_moffat_beta(beta: Any) -> float:
    """Return ``beta`` as a float > 1 (a Moffat profile of finite flux), or raise naming the problem."""
    value = check_sigma("beta", beta)
    if not value > 1.0:
        raise ValueError(f"beta must be > 1 for a Moffat profile of finite flux, got {beta}")
    return value


def moffat_alpha(fwhm: Any, beta: float) -> Any:
    """Return the Moffat core radius ``alpha`` of a profile ``(1 + r^2/alpha^2)^-beta`` of FWHM ``fwhm``."""
    return fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))


@functools.cache
def _kolmogorov_fwhm_k0() -> float:
    """Return the FWHM of the Kolmogorov profile with ``k0 = 1``, ``OTF(k) = exp(-(k / k0)^(5/3))``."""
    from scipy.optimize import brentq
    from scipy.special import j0

    k = np.linspace(0.0, 40.0, 40001)
    weights = np.exp(-(k ** (5.0 / 3.0))) * k

    def profile(r: float) -> float:
        return float(np.trapezoid(weights * j0(k * r), k))

    half = 0.5 * profile(0.0)
    return 2.0 * brentq(lambda r: profile(r) - half, 1e-3, 10.0, xtol=1e-12)


def kolmogorov_k0(fwhm: Any) -> Any:
    """Return the frequency scale ``k0`` (radians per pixel) of a Kolmogorov profile of FWHM ``fwhm``."""
    return _kolmogorov_fwhm_k0() / fwhm


@functools.cache
def _quadrature() -> tuple[np.ndarray, np.ndarray]:
    # Computed once: leggauss solves an eigenproblem, which cost more than the stamp it serves.
    nodes, weights = np.polynomial.legendre.leggauss(_QUADRATURE_POINTS)
    nodes, weights = 0.5 * nodes, 0.5 * weights  # over [-1/2, 1/2], weights summing to 1
    nodes.flags.writeable = weights.flags.writeable = False
    return nodes, weights


def _subpixel_grid(x: np.ndarray, y: np.ndarray, pixel_integrated: bool) -> tuple[np.ndarray, np.ndarray, Any]:
    """Return 2-d offset grids, supersampled at quadrature nodes when ``pixel_integrated``."""
    if not pixel_integrated:
        return x[np.newaxis, :], y[:, np.newaxis], None
    nodes, weights = _quadrature()
    sx = (x[:, np.newaxis] + nodes[np.newaxis, :]).ravel()
    sy = (y[:, np.newaxis] + nodes[np.newaxis, :]).ravel()
    return sx[np.newaxis, :], sy[:, np.newaxis], weights


def _bin(values: np.ndarray, weights: Any, ny: int, nx: int) -> np.ndarray:
    """Sum supersampled values (a trailing ``(ny n, nx n)`` grid, any leading axes) over each pixel's nodes."""
    if weights is None:
        return values
    n = len(weights)
    lead = values.shape[:-2]
    # Two matrix-vector products (the columns' nodes, then the rows'): a third of einsum's time.
    by_column = (values.reshape(-1, n) @ weights).reshape(*lead, ny, n, nx)
    return np.einsum("...iaj,a->...ij", by_column, weights)


def _inverse_shapes(g1: Any, g2: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`inverse_shape` of arrays of shears, each shaped ``(n, 1, 1)`` to broadcast over stamps."""
    e1, e2 = _distortion(np.asarray(g1, dtype=np.float64), np.asarray(g2, dtype=np.float64))
    norm = 1.0 / np.sqrt(1.0 - e1 * e1 - e2 * e2)
    return tuple(np.reshape(v, (-1, 1, 1)) for v in (norm * (1.0 - e1), -norm * e2, norm * (1.0 + e1)))  # type: ignore[return-value]


def gaussian_profile(
    x: np.ndarray, y: np.ndarray, sigma: float, g1: float, g2: float, pixel_integrated: bool
) -> np.ndarray:
    """Return an (unnormalised) elliptical Gaussian at column offsets ``x`` and row offsets ``y``."""
    return gaussian_profiles(x, y, np.array([sigma]), np.array([g1]), np.array([g2]), pixel_integrated)[0]


def gaussian_profiles(
    x: np.ndarray, y: np.ndarray, sigma: np.ndarray, g1: np.ndarray, g2: np.ndarray, pixel_integrated: bool
) -> np.ndarray:
    """`gaussian_profile` of many widths and shears at once: ``(n, len(y), len(x))``.

    Round profiles (``g = 0``) are separable, and their pixel integration exact with the error
    function; sheared ones are integrated at Gauss-Legendre nodes. Each image takes its own way.
    """
    sigma = np.asarray(sigma, dtype=np.float64)
    round_ = (np.asarray(g1) == 0.0) & (np.asarray(g2) == 0.0)
    out = np.empty((len(sigma), len(y), len(x)))
    if round_.any():
        s = sigma[round_][:, None]
        out[round_] = (
            _gaussian_1d(y[None, :], s, pixel_integrated)[:, :, None]
            * _gaussian_1d(x[None, :], s, pixel_integrated)[:, None, :]
        )
    if not round_.all():
        sheared = ~round_
        a, b, c = _inverse_shapes(np.asarray(g1)[sheared], np.asarray(g2)[sheared])
        gx, gy, weights = _subpixel_grid(x, y, pixel_integrated)
        r2 = a * gx * gx + 2.0 * b * gx * gy + c * gy * gy
        variance = np.reshape(sigma[sheared] ** 2, (-1, 1, 1))
        out[sheared] = _bin(np.exp(-0.5 * r2 / variance), weights, len(y), len(x))
    return out


def _gaussian_1d(offsets: np.ndarray, sigma: Any, pixel_integrated: bool) -> np.ndarray:
    if not pixel_integrated:
        return np.exp(-0.5 * (offsets / sigma) ** 2)
    from scipy.special import erf

    scale = 1.0 / (sigma * math.sqrt(2.0))
    return 0.5 * (erf((offsets + 0.5) * scale) - erf((offsets - 0.5) * scale))


def moffat_profile(
    x: np.ndarray, y: np.ndarray, fwhm: float, beta: float, g1: float, g2: float, pixel_integrated: bool
) -> np.ndarray:
    """Return an (unnormalised) elliptical Moffat ``(1 + r^2 / alpha^2)^-beta`` of geometric-mean FWHM ``fwhm``."""
    return moffat_profiles(x, y, np.array([fwhm]), beta, np.array([g1]), np.array([g2]), pixel_integrated)[0]


def moffat_profiles(
    x: np.ndarray, y: np.ndarray, fwhm: np.ndarray, beta: float, g1: np.ndarray, g2: np.ndarray, pixel_integrated: bool
) -> np.ndarray:
    """`moffat_profile` of many FWHMs and shears at once: ``(n, len(y), len(x))``."""
    a, b, c = _inverse_shapes(g1, g2)
    alpha2 = np.reshape(moffat_alpha(np.asarray(fwhm, dtype=np.float64), beta) ** 2, (-1, 1, 1))
    gx, gy, weights = _subpixel_grid(x, y, pixel_integrated)
    r2 = a * gx * gx + 2.0 * b * gx * gy + c * gy * gy
    return _bin((1.0 + r2 / alpha2) ** (-beta), weights, len(y), len(x))


def kolmogorov_image(
    width: int, height: int, shift: tuple[float, float], fwhm: float, g1: float, g2: float, pixel_integrated: bool
) -> np.ndarray:
    """Return a Kolmogorov profile, ``OTF = exp(-(|k| / k0)^(5/3))``, on a ``width`` x ``height`` stamp.

    Built in Fourier space on a grid three times the stamp (so the slowly falling wings barely
    wrap), shifted by ``shift`` pixels from the centre pixel, sheared by ``g`` and, when
    ``pixel_integrated``, multiplied by the pixel's transfer function. The pixel values are those
    of the band-limited profile: the Kolmogorov OTF is ~1e-3 of its peak at the Nyquist frequency
    for a 3 px FWHM.
    """
    from scipy import fft

    nx, ny = fft.next_fast_len(3 * width), fft.next_fast_len(3 * height)
    kx = 2.0 * math.pi * np.fft.rfftfreq(nx)[np.newaxis, :]
    ky = 2.0 * math.pi * np.fft.fftfreq(ny)[:, np.newaxis]
    # A real-space profile f(S^-1/2 x) has the transform F(S^1/2 k): the shape matrix, not its inverse.
    a, b, c = inverse_shape(-g1, -g2)
    k2 = a * kx * kx + 2.0 * b * kx * ky + c * ky * ky
    otf = np.exp(-((np.sqrt(k2) / kolmogorov_k0(fwhm)) ** (5.0 / 3.0)))
    if pixel_integrated:
        otf = otf * np.sinc(kx / (2.0 * math.pi)) * np.sinc(ky / (2.0 * math.pi))
    origin_x, origin_y = width // 2, height // 2
    phase = np.exp(-1j * (kx * (origin_x + shift[0]) + ky * (origin_y + shift[1])))
    image = fft.irfft2(otf * phase, s=(ny, nx))
    return image[:height, :width]


class _ProfilePsf(_AnalyticPsf):
    """A spatially constant profile with a reduced shear and an optional pixel response.

    Subclasses implement `_profile(x, y)` on 1-d offset arrays and `_key`; realising the
    stamps (centred or shifted, normalised) is `_AnalyticPsf`'s.
    """

    __slots__ = ("_g1", "_g2", "_pixelIntegrated", "_hash_value")
    _g1: float
    _g2: float
    _pixelIntegrated: bool

    def _init_common(self, width: int, height: int, g1: float, g2: float, pixelIntegrated: bool) -> None:
        self._init_dimensions(width, height)
        shear = check_shear(g1, g2)
        self._set("_g1", shear[0])
        self._set("_g2", shear[1])
        self._set("_pixelIntegrated", bool(pixelIntegrated))

    def __hash__(self) -> int:
        return cached_hash(self)

    def getShear(self) -> tuple[float, float]:
        """Return the reduced shear ``(g1, g2)``."""
        return (self._g1, self._g2)

    def isPixelIntegrated(self) -> bool:
        """Whether pixels hold the profile integrated over their area (`True`) or sampled at their centre."""
        return self._pixelIntegrated


class EllipticalGaussianPsf(_ProfilePsf):
    """A constant elliptical Gaussian PSF, integrated over the pixels by default.

    Unlike `GaussianPsf` (afw's, sampled at pixel centres and round), the pixel values are the
    Gaussian's integral over each pixel, as a detector records it, so the image's second moments
    are ``sigma^2 + 1/12`` per axis.

    Parameters
    ----------
    width, height : `int`
        Size of the realised images, > 0; choose about +/- 6 sigma.
    sigma : `float`
        Gaussian sigma in pixels (the geometric mean of the major and minor axes), > 0.
    g1, g2 : `float`
        Reduced shear, ``|g| < 1``: the axis ratio is ``(1 - |g|) / (1 + |g|)``.
    pixelIntegrated : `bool`
        Integrate over pixels (default) rather than sample at their centres.

    Examples
    --------
    >>> psf = EllipticalGaussianPsf(25, 25, 2.0)
    >>> round(psf.computeShape().getIxx(), 4)  # sigma^2 + 1/12
    4.0833
    """

    __slots__ = ("_sigma",)
    _sigma: float

    def __init__(
        self, width: int, height: int, sigma: float, g1: float = 0.0, g2: float = 0.0, pixelIntegrated: bool = True
    ) -> None:
        self._init_common(width, height, g1, g2, pixelIntegrated)
        self._set("_sigma", check_sigma("sigma", sigma))

    def getSigma(self) -> float:  # noqa: D102 - LSST accessor
        return self._sigma

    def getFwhm(self) -> float:
        """Return the FWHM of the continuous profile (before pixel integration), ``2.3548 sigma``."""
        return self._sigma * FWHM_PER_SIGMA

    def _profile(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return gaussian_profile(x, y, self._sigma, self._g1, self._g2, self._pixelIntegrated)

    def computeShape(self, position: PositionLike | None = None) -> Quadrupole:
        """Return the analytic moments: ``sigma^2`` sheared by ``g``, plus ``1/12`` per axis if pixel-integrated."""
        if position is not None:
            self._resolve(position)
        ixx, iyy, ixy = shear_to_moments(self._sigma, self._g1, self._g2)
        extra = PIXEL_VARIANCE if self._pixelIntegrated else 0.0
        return Quadrupole(float(ixx) + extra, float(iyy) + extra, float(ixy))

    def _key(self) -> tuple:
        return (self._width, self._height, self._sigma, self._g1, self._g2, self._pixelIntegrated)


class MoffatPsf(_ProfilePsf):
    """A constant elliptical Moffat PSF, ``(1 + r^2 / alpha^2)^-beta``, integrated over the pixels by default.

    Parameters
    ----------
    width, height : `int`
        Size of the realised images, > 0. The wings are broad; the stamp is normalised to sum 1,
        so a small stamp truncates them (as any kernel image does).
    fwhm : `float`
        FWHM of the continuous profile in pixels (geometric mean of the axes), > 0.
    beta : `float`
        Moffat index, > 1 (2.5 to 4.765 is typical of seeing).
    g1, g2 : `float`
        Reduced shear, ``|g| < 1``.
    pixelIntegrated : `bool`
        Integrate over pixels (default) rather than sample at their centres.
    """

    __slots__ = ("_fwhm", "_beta")
    _fwhm: float
    _beta: float

    def __init__(
        self,
        width: int,
        height: int,
        fwhm: float,
        beta: float = 3.5,
        g1: float = 0.0,
        g2: float = 0.0,
        pixelIntegrated: bool = True,
    ) -> None:
        self._init_common(width, height, g1, g2, pixelIntegrated)
        self._set("_fwhm", check_sigma("fwhm", fwhm))
        self._set("_beta", check_moffat_beta(beta))

    def getFwhm(self) -> float:  # noqa: D102 - accessor
        return self._fwhm

    def getBeta(self) -> float:  # noqa: D102 - accessor
        return self._beta

    def _profile(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return moffat_profile(x, y, self._fwhm, self._beta, self._g1, self._g2, self._pixelIntegrated)

    def _key(self) -> tuple:
        return (self._width, self._height, self._fwhm, self._beta, self._g1, self._g2, self._pixelIntegrated)


class KolmogorovPsf(_ProfilePsf):
    """A constant Kolmogorov-turbulence PSF, ``OTF(k) = exp(-(|k| / k0)^(5/3))``, pixel-integrated by default.

    The long-exposure seeing profile of a Kolmogorov atmosphere: a core like a Gaussian's and
    wings falling as ``r^(-11/3)``, broader than any Moffat with ``beta > 2``.

    Parameters
    ----------
    width, height : `int`
        Size of the realised images, > 0.
    fwhm : `float`
        FWHM of the continuous profile in pixels, > 0.
    g1, g2 : `float`
        Reduced shear, ``|g| < 1``.
    pixelIntegrated : `bool`
        Include the pixel's response (default) rather than sample at pixel centres.
    """

    __slots__ = ("_fwhm",)
    _fwhm: float

    def __init__(
        self, width: int, height: int, fwhm: float, g1: float = 0.0, g2: float = 0.0, pixelIntegrated: bool = True
    ) -> None:
        self._init_common(width, height, g1, g2, pixelIntegrated)
        self._set("_fwhm", check_sigma("fwhm", fwhm))

    def getFwhm(self) -> float:  # noqa: D102 - accessor
        return self._fwhm

    def _profile(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        raise NotImplementedError("a Kolmogorov profile has no closed form in real space: see _realise")

    def _realise(self, shift_x: float, shift_y: float, xy0: Point2I) -> ImageD:
        # Drawn in Fourier space, where the profile is known, instead of from a real-space profile.
        array = kolmogorov_image(
            self._width, self._height, (shift_x, shift_y), self._fwhm, self._g1, self._g2, self._pixelIntegrated
        )
        array /= array.sum()
        return ImageD(array, xy0=xy0)

    def _key(self) -> tuple:
        return (self._width, self._height, self._fwhm, self._g1, self._g2, self._pixelIntegrated)
