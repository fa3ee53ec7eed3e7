"""Spatially varying analytic PSFs: a Gaussian, Moffat or Kolmogorov profile whose width is a polynomial in position.

The width is a low-order 2-D polynomial over normalised coordinates ``u, v`` in ``[-1, 1]``
spanning a bounding box (``u = -1`` at the box's first column centre, ``+1`` at its last):

    width(x, y) = sum_ij c[i][j] * u**i * v**j

`VaryingGaussianPsf` varies its sigma that way, `VaryingMoffatPsf` and `VaryingKolmogorovPsf`
their FWHM. The ellipticity, a reduced shear ``(g1, g2)``, can vary the same way (``g1_coeffs``,
``g2_coeffs``; round by default), and ``pixelIntegrated`` integrates the profile over each pixel
instead of sampling it at the pixel centre. All are immutable, hashable and picklable like the
other PSFs, so they work with ``scaleByFwhm`` grids, `CoaddPsf` and Dask workers.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.polynomial import polynomial as npoly

from ..geom import Box2I, Extent2I, Point2D, Point2I
from ..image._image import ImageD
from ._base import (
    PositionLike,
    Psf,
    cached_hash,
    check_dimension,
    check_sigma,
    kernel_origin,
    nearest_pixel,
    to_position,
)
from ._profiles import (
    PIXEL_VARIANCE,
    check_moffat_beta,
    gaussian_profile,
    gaussian_profiles,
    kolmogorov_image,
    moffat_alpha,
    moffat_profile,
    moffat_profiles,
    shear_to_moments,
)
from ._shape import Quadrupole

__all__ = ["VaryingGaussianPsf", "VaryingMoffatPsf", "VaryingKolmogorovPsf"]

#: FWHM of a Gaussian in units of its sigma, 2 sqrt(2 ln 2).
_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
#: Points per axis of the grid on which the width polynomial is checked at construction.
_CHECK_POINTS = 33

Coefficients = float | Sequence[Sequence[float]] | np.ndarray


def _coefficient_array(name: str, coeffs: Coefficients) -> np.ndarray:
    """Return the coefficients as a finite, read-only 2-d float array, or raise naming ``name``."""
    try:
        array = np.array(coeffs, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number or a 2-d array of numbers, got {coeffs!r}") from None
    if array.ndim == 0:
        array = array.reshape(1, 1)  # a constant width
    if array.ndim != 2 or array.size == 0:
        raise ValueError(f"{name} must be a 2-d array c[i][j] multiplying u**i * v**j, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite, got {array.tolist()}")
    array.flags.writeable = False
    return array


def _shear_array(name: str, coeffs: Coefficients) -> np.ndarray:
    """`_coefficient_array` for a shear, with every all-zero polynomial stored as ``[[0]]``.

    A round PSF is then one value whatever zeros it was given, so it equals (and hashes like)
    the same PSF read back from its document, which records no shear for a round PSF.
    """
    array = _coefficient_array(name, coeffs)
    if array.any():
        return array
    zero = np.zeros((1, 1))
    zero.flags.writeable = False
    return zero


#: Kernel images evaluated together by `_PolynomialPsf.computeKernelImages`.
_STAMPS_AT_ONCE = 8


class _PolynomialPsf(Psf):
    """A circular analytic profile whose width parameter is a polynomial in normalised position.

    Subclasses set `_width_name` (used in messages) and implement `_profile`.
    """

    __slots__ = (
        "_width",
        "_height",
        "_coeffs",
        "_bbox",
        "_center",
        "_half",
        "_g1",
        "_g2",
        "_pixelIntegrated",
        "_hash_value",
    )
    _width: int
    _height: int
    _coeffs: np.ndarray  # c[i, j] multiplies u**i v**j
    _g1: np.ndarray  # the reduced shear's polynomials, same form
    _g2: np.ndarray
    _pixelIntegrated: bool
    _bbox: Box2I
    _center: tuple[float, float]
    _half: tuple[float, float]  # half the span of pixel centres, the unit of u and v

    _width_name = "width"

    def _init_polynomial(
        self,
        width: int,
        height: int,
        coeffs: Coefficients,
        bbox: Box2I,
        g1_coeffs: Coefficients = 0.0,
        g2_coeffs: Coefficients = 0.0,
        pixelIntegrated: bool = False,
    ) -> None:
        self._set("_g1", _shear_array("g1_coeffs", g1_coeffs))
        self._set("_g2", _shear_array("g2_coeffs", g2_coeffs))
        self._set("_pixelIntegrated", bool(pixelIntegrated))
        self._set("_width", check_dimension("width", width))
        self._set("_height", check_dimension("height", height))
        if not isinstance(bbox, Box2I):
            raise TypeError(f"bbox must be a Box2I, not {type(bbox).__name__}")
        if bbox.isEmpty():
            raise ValueError("bbox must not be empty: it defines the normalised coordinates u, v")
        name = f"{self._width_name}_coeffs"
        self._set("_coeffs", _coefficient_array(name, coeffs))
        self._set("_bbox", Box2I(bbox))  # a private copy: Box2I is mutable, the PSF must not be
        center = bbox.getCenter()
        self._set("_center", (center.x, center.y))
        # A one-pixel-wide box has no span; any positive unit works since u is then always 0.
        self._set("_half", (max(0.5 * (bbox.getWidth() - 1), 0.5), max(0.5 * (bbox.getHeight() - 1), 0.5)))
        # Check positivity on a grid now, so a bad model fails at construction, not in a worker.
        xs = np.linspace(bbox.getMinX(), bbox.getMaxX(), _CHECK_POINTS)
        ys = np.linspace(bbox.getMinY(), bbox.getMaxY(), _CHECK_POINTS)
        grid_x, grid_y = np.meshgrid(xs, ys)
        values = self._polynomial(grid_x, grid_y)
        worst = int(np.argmin(values))
        if not values.flat[worst] > 0:
            raise ValueError(
                f"{name} give {self._width_name} = {values.flat[worst]:.4g} <= 0 at "
                f"({grid_x.flat[worst]:.1f}, {grid_y.flat[worst]:.1f}) inside bbox {bbox}; "
                f"{self._width_name} must stay positive over the bbox"
            )
        shear = np.hypot(*self._shear(grid_x, grid_y))
        if self.isElliptical() and not float(shear.max()) < 1.0:
            worst = int(np.argmax(shear))
            raise ValueError(
                f"g1_coeffs and g2_coeffs give |g| = {shear.flat[worst]:.4g} >= 1 at ({grid_x.flat[worst]:.1f}, "
                f"{grid_y.flat[worst]:.1f}) inside bbox {bbox}; the reduced shear must stay below 1"
            )

    # -- the width polynomial ---------------------------------------------------------------------
    def normalised(self, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """Return the normalised coordinates ``(u, v)`` of parent positions ``(x, y)``.

        ``u`` and ``v`` are -1 and +1 at the first and last pixel centres of the bbox.
        """
        u = (np.asarray(x, dtype=np.float64) - self._center[0]) / self._half[0]
        v = (np.asarray(y, dtype=np.float64) - self._center[1]) / self._half[1]
        return u, v

    def _polynomial(self, x: Any, y: Any) -> np.ndarray:
        u, v = self.normalised(x, y)
        return npoly.polyval2d(u, v, self._coeffs)

    def _width_at(self, x: Any, y: Any) -> Any:
        """Evaluate the width polynomial (vectorised); raise if it is not positive there."""
        values = self._polynomial(x, y)
        if not np.all(values > 0):
            # Only reachable outside the bbox, where the polynomial is extrapolated.
            raise ValueError(
                f"{self._width_name} is not positive at some of the requested positions (min "
                f"{np.min(values):.4g}); the model is only checked inside bbox {self._bbox}"
            )
        return float(values) if values.ndim == 0 else values

    def _shear(self, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        u, v = self.normalised(x, y)
        return npoly.polyval2d(u, v, self._g1), npoly.polyval2d(u, v, self._g2)

    def shear_at(self, x: Any, y: Any) -> tuple[Any, Any]:
        """Return the reduced shear ``(g1, g2)`` of the profile at parent positions ``(x, y)``; arrays broadcast."""
        g1, g2 = self._shear(x, y)
        if g1.ndim == 0:
            return float(g1), float(g2)
        return g1, g2

    def isElliptical(self) -> bool:
        """Whether the shear polynomials are not identically zero."""
        return bool(np.any(self._g1) or np.any(self._g2))

    def isPixelIntegrated(self) -> bool:
        """Whether pixels hold the profile integrated over their area rather than sampled at their centre."""
        return self._pixelIntegrated

    def getShearCoefficients(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the (read-only) coefficient arrays of ``g1`` and ``g2``."""
        return self._g1, self._g2

    def getCoefficients(self) -> np.ndarray:
        """Return the (read-only) coefficient array ``c[i, j]`` multiplying ``u**i * v**j``."""
        return self._coeffs

    def getBBox(self) -> Box2I:
        """Return a copy of the bbox over which the coordinates are normalised."""
        return Box2I(self._bbox)

    def getAveragePosition(self) -> Point2D:
        """Return the centre of the bbox, where ``u = v = 0``."""
        return Point2D(*self._center)

    def getDimensions(self) -> Extent2I:
        """Return the ``(width, height)`` of the realised images."""
        return Extent2I(self._width, self._height)

    def __hash__(self) -> int:
        return cached_hash(self)

    def computeBBox(self, position: PositionLike | None = None) -> Box2I:
        """Return the kernel image's bounding box, without evaluating the profile."""
        return Box2I(kernel_origin(self.getDimensions()), self.getDimensions())

    # -- realising images ---------------------------------------------------------------------------
    @abc.abstractmethod
    def _profile(self, x: np.ndarray, y: np.ndarray, width: float, g1: float, g2: float) -> np.ndarray:
        """Return the unnormalised profile at column offsets ``x`` and row offsets ``y`` (a 2-d grid)."""

    def _realise(self, position: Point2D, shift_x: float, shift_y: float, xy0: Point2I) -> ImageD:
        width = self._width_at(position.x, position.y)
        g1, g2 = self.shear_at(position.x, position.y)
        origin = kernel_origin(self.getDimensions())
        x = np.arange(self._width, dtype=np.float64) + origin.x - shift_x
        y = np.arange(self._height, dtype=np.float64) + origin.y - shift_y
        array = self._profile(x, y, width, g1, g2)
        # Normalise the sampled pixels, as afw's kernels do, so every image sums to 1 exactly.
        array /= array.sum()
        return ImageD(array, xy0=xy0)

    def _doComputeKernelImage(self, position: Point2D) -> ImageD:
        return self._realise(position, 0.0, 0.0, kernel_origin(self.getDimensions()))

    def _profiles(self, x: np.ndarray, y: np.ndarray, widths: np.ndarray, g1: np.ndarray, g2: np.ndarray) -> np.ndarray:
        """`_profile` at many widths and shears, stacked; subclasses with a vectorised profile override it."""
        return np.stack(
            [self._profile(x, y, float(w), float(a), float(b)) for w, a, b in zip(widths, g1, g2, strict=True)]
        )

    def computeKernelImages(self, positions: Sequence[PositionLike]) -> np.ndarray:
        """Return the kernel images at many positions, stacked, with the profiles evaluated together."""
        if type(self)._realise is not _PolynomialPsf._realise:  # a model realised its own way, one at a time
            return super().computeKernelImages(positions)
        points = [to_position(position) for position in positions]
        if not points:
            return np.empty((0, self._height, self._width))
        xs = np.array([p.x for p in points], dtype=np.float64)
        ys = np.array([p.y for p in points], dtype=np.float64)
        widths = np.atleast_1d(self._width_at(xs, ys))
        g1, g2 = (np.broadcast_to(np.atleast_1d(g), widths.shape) for g in self._shear(xs, ys))
        origin = kernel_origin(self.getDimensions())
        x = np.arange(self._width, dtype=np.float64) + origin.x
        y = np.arange(self._height, dtype=np.float64) + origin.y
        arrays = np.empty((len(points), self._height, self._width))
        # A few stamps at a time: their supersampled grids stay in the processor's cache.
        for start in range(0, len(points), _STAMPS_AT_ONCE):
            part = slice(start, start + _STAMPS_AT_ONCE)
            arrays[part] = self._profiles(x, y, widths[part], g1[part], g2[part])
        return arrays / arrays.sum(axis=(1, 2), keepdims=True)

    def _doComputeImage(self, position: Point2D) -> ImageD:
        center = nearest_pixel(position)
        origin = kernel_origin(self.getDimensions())
        xy0 = Point2I(int(center.x + origin.x), int(center.y + origin.y))
        return self._realise(position, position.x - center.x, position.y - center.y, xy0)

    def _bbox_key(self) -> Box2I:
        return Box2I(self._bbox)

    def _extra_key(self) -> tuple:
        """The shear and pixel-response arguments, last in every subclass's `_key`."""
        return (tuple(map(tuple, self._g1.tolist())), tuple(map(tuple, self._g2.tolist())), self._pixelIntegrated)


class VaryingGaussianPsf(_PolynomialPsf):
    """A circular Gaussian PSF whose sigma is a polynomial in position over a bbox.

    Parameters
    ----------
    width, height : `int`
        Size of the realised images, > 0. Choose them to hold about +/- 5 sigma at the widest.
    sigma_coeffs : `float` or 2-d array-like
        ``c[i][j]`` multiplies ``u**i * v**j`` in ``sigma(x, y)``, pixels; ``u, v`` run over
        ``[-1, 1]`` across ``bbox``. A scalar is a constant sigma.
    bbox : `Box2I`
        The box (usually the exposure's) that defines ``u`` and ``v``.
    g1_coeffs, g2_coeffs : `float` or 2-d array-like
        The reduced shear's polynomials, same form; 0 (round) by default. The shear is applied
        with unit determinant, so ``sigma`` stays the geometric mean of the axes.
    pixelIntegrated : `bool`
        Integrate the Gaussian over each pixel rather than sample it at the pixel centre. Off by
        default, as afw's GaussianPsf; turn it on to model what a detector records.

    Raises
    ------
    ValueError
        If sigma is not positive somewhere on a 33 x 33 grid over the bbox, ``|g|`` reaches 1
        there, the coefficients are not finite, or a dimension is not positive.

    Notes
    -----
    Outside the bbox the polynomial is extrapolated; evaluating where it is not positive raises.

    Examples
    --------
    >>> from imagemapreduce.geom import Box2I, Point2I, Extent2I
    >>> psf = VaryingGaussianPsf.radial(25, 25, Box2I(Point2I(0, 0), Extent2I(101, 101)), 1.5, 2.25)
    >>> psf.sigma_at(50, 50), psf.sigma_at(0, 100)
    (1.5, 2.25)
    """

    __slots__ = ()
    _width_name = "sigma"

    def __init__(
        self,
        width: int,
        height: int,
        sigma_coeffs: Coefficients,
        bbox: Box2I,
        g1_coeffs: Coefficients = 0.0,
        g2_coeffs: Coefficients = 0.0,
        pixelIntegrated: bool = False,
    ) -> None:
        self._init_polynomial(width, height, sigma_coeffs, bbox, g1_coeffs, g2_coeffs, pixelIntegrated)

    @classmethod
    def radial(
        cls, width: int, height: int, bbox: Box2I, sigma_center: float, sigma_corner: float
    ) -> VaryingGaussianPsf:
        """Return a PSF with ``sigma = s0 + (s1 - s0) (u^2 + v^2) / 2``: s0 at the centre, s1 at corners.

        Parameters
        ----------
        width, height : `int`
            Size of the realised images.
        bbox : `Box2I`
            The box defining ``u`` and ``v``.
        sigma_center, sigma_corner : `float`
            Sigma at the centre and at the four corners of the bbox, pixels, > 0.
        """
        s0 = check_sigma("sigma_center", sigma_center)
        s1 = check_sigma("sigma_corner", sigma_corner)
        half = 0.5 * (s1 - s0)
        return cls(width, height, [[s0, 0.0, half], [0.0, 0.0, 0.0], [half, 0.0, 0.0]], bbox)

    def sigma_at(self, x: Any, y: Any) -> Any:
        """Return sigma in pixels at parent positions ``(x, y)``; arrays broadcast."""
        return self._width_at(x, y)

    def fwhm_at(self, x: Any, y: Any) -> Any:
        """Return the FWHM, ``2 sqrt(2 ln 2) sigma``, at parent positions ``(x, y)``."""
        return self._width_at(x, y) * _FWHM_PER_SIGMA

    def sigma_range(self, points: int = 65) -> tuple[float, float]:
        """Return the smallest and largest sigma on a ``points`` x ``points`` grid over the bbox."""
        xs = np.linspace(self._bbox.getMinX(), self._bbox.getMaxX(), points)
        ys = np.linspace(self._bbox.getMinY(), self._bbox.getMaxY(), points)
        values = self._polynomial(*np.meshgrid(xs, ys))
        return float(values.min()), float(values.max())

    def _profile(self, x: np.ndarray, y: np.ndarray, width: float, g1: float, g2: float) -> np.ndarray:
        return gaussian_profile(x, y, width, g1, g2, self._pixelIntegrated)

    def _profiles(self, x: np.ndarray, y: np.ndarray, widths: np.ndarray, g1: np.ndarray, g2: np.ndarray) -> np.ndarray:
        return gaussian_profiles(x, y, widths, g1, g2, self._pixelIntegrated)

    def computeShape(self, position: PositionLike | None = None) -> Quadrupole:
        """Return the moments at ``position`` analytically: ``sigma^2`` sheared by ``g``, + 1/12 if pixel-integrated."""
        point = self._resolve(position)
        sigma = self._width_at(point.x, point.y)
        g1, g2 = self.shear_at(point.x, point.y)
        ixx, iyy, ixy = shear_to_moments(sigma, g1, g2)
        extra = PIXEL_VARIANCE if self._pixelIntegrated else 0.0
        return Quadrupole(float(ixx) + extra, float(iyy) + extra, float(ixy))

    def _key(self) -> tuple:
        coeffs = tuple(map(tuple, self._coeffs.tolist()))
        return (self._width, self._height, coeffs, self._bbox_key(), *self._extra_key())


class VaryingMoffatPsf(_PolynomialPsf):
    """A circular Moffat PSF, ``(1 + r^2 / alpha^2)^-beta``, whose FWHM is a polynomial in position.

    ``alpha = FWHM / (2 sqrt(2^(1/beta) - 1))``, so the FWHM is exactly the polynomial's value.

    Parameters
    ----------
    width, height : `int`
        Size of the realised images, > 0. Moffat wings are broad: the image is normalised over
        this stamp, so a small stamp truncates the wings (as any afw kernel image does).
    fwhm_coeffs : `float` or 2-d array-like
        ``c[i][j]`` multiplies ``u**i * v**j`` in ``fwhm(x, y)``, pixels.
    bbox : `Box2I`
        The box that defines ``u`` and ``v``.
    beta : `float`
        The Moffat index, > 1 (smaller is wingier; 2.5 to 4.765 are typical of seeing).
    g1_coeffs, g2_coeffs : `float` or 2-d array-like
        The reduced shear's polynomials; 0 (round) by default. The FWHM is the geometric mean of
        the axes' FWHMs.
    pixelIntegrated : `bool`
        Integrate the profile over each pixel (what a detector records) rather than sample it at
        the pixel centre, which makes a 2.5 px FWHM star about 4% too narrow. Off by default so
        that existing models and stored PSFs keep their pixels; new models should turn it on.

    Raises
    ------
    ValueError
        If the FWHM is not positive somewhere on a 33 x 33 grid over the bbox, or ``beta <= 1``.
    """

    __slots__ = ("_beta",)
    _beta: float
    _width_name = "fwhm"

    def __init__(
        self,
        width: int,
        height: int,
        fwhm_coeffs: Coefficients,
        bbox: Box2I,
        beta: float = 3.5,
        g1_coeffs: Coefficients = 0.0,
        g2_coeffs: Coefficients = 0.0,
        pixelIntegrated: bool = False,
    ) -> None:
        self._set("_beta", check_moffat_beta(beta))
        self._init_polynomial(width, height, fwhm_coeffs, bbox, g1_coeffs, g2_coeffs, pixelIntegrated)

    def getBeta(self) -> float:  # noqa: D102 - accessor in the LSST style
        return self._beta

    def _alpha(self, fwhm: Any) -> Any:
        return moffat_alpha(fwhm, self._beta)

    def fwhm_at(self, x: Any, y: Any) -> Any:
        """Return the FWHM in pixels at parent positions ``(x, y)``; arrays broadcast."""
        return self._width_at(x, y)

    def alpha_at(self, x: Any, y: Any) -> Any:
        """Return the Moffat core radius ``alpha`` at parent positions ``(x, y)``."""
        return self._alpha(self._width_at(x, y))

    def sigma_at(self, x: Any, y: Any) -> Any:
        """Return the adaptive-moments determinant radius of the kernel image at ``(x, y)``.

        A Moffat has no sigma; this is the Gaussian-equivalent width LSST would measure
        (`computeShape`), evaluated position by position, so it is slower than `fwhm_at`.
        """
        xs, ys = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
        points = zip(xs.ravel().tolist(), ys.ravel().tolist(), strict=True)
        radii = np.array([self.computeShape(Point2D(a, b)).getDeterminantRadius() for a, b in points])
        radii = radii.reshape(xs.shape)
        return float(radii) if radii.ndim == 0 else radii

    def _profile(self, x: np.ndarray, y: np.ndarray, width: float, g1: float, g2: float) -> np.ndarray:
        return moffat_profile(x, y, width, self._beta, g1, g2, self._pixelIntegrated)

    def _profiles(self, x: np.ndarray, y: np.ndarray, widths: np.ndarray, g1: np.ndarray, g2: np.ndarray) -> np.ndarray:
        return moffat_profiles(x, y, widths, self._beta, g1, g2, self._pixelIntegrated)

    def _key(self) -> tuple:
        coeffs = tuple(map(tuple, self._coeffs.tolist()))
        return (self._width, self._height, coeffs, self._bbox_key(), self._beta, *self._extra_key())


class VaryingKolmogorovPsf(_PolynomialPsf):
    """A Kolmogorov-turbulence PSF, ``OTF = exp(-(|k| / k0)^(5/3))``, whose FWHM is a polynomial in position.

    The long-exposure seeing profile: a Gaussian-like core and ``r^(-11/3)`` wings. Images are
    built in Fourier space (see `KolmogorovPsf`); pixel integration, on by default, is the exact
    pixel response there.

    Parameters
    ----------
    width, height : `int`
        Size of the realised images, > 0.
    fwhm_coeffs : `float` or 2-d array-like
        ``c[i][j]`` multiplies ``u**i * v**j`` in ``fwhm(x, y)``, pixels.
    bbox : `Box2I`
        The box that defines ``u`` and ``v``.
    g1_coeffs, g2_coeffs : `float` or 2-d array-like
        The reduced shear's polynomials; 0 (round) by default.
    pixelIntegrated : `bool`
        Include the pixel response (default) rather than sample at pixel centres.
    """

    __slots__ = ()
    _width_name = "fwhm"

    def __init__(
        self,
        width: int,
        height: int,
        fwhm_coeffs: Coefficients,
        bbox: Box2I,
        g1_coeffs: Coefficients = 0.0,
        g2_coeffs: Coefficients = 0.0,
        pixelIntegrated: bool = True,
    ) -> None:
        self._init_polynomial(width, height, fwhm_coeffs, bbox, g1_coeffs, g2_coeffs, pixelIntegrated)

    def fwhm_at(self, x: Any, y: Any) -> Any:
        """Return the FWHM in pixels at parent positions ``(x, y)``; arrays broadcast."""
        return self._width_at(x, y)

    def _profile(self, x: np.ndarray, y: np.ndarray, width: float, g1: float, g2: float) -> np.ndarray:
        raise NotImplementedError  # built in Fourier space by _realise

    def _realise(self, position: Point2D, shift_x: float, shift_y: float, xy0: Point2I) -> ImageD:
        fwhm = self._width_at(position.x, position.y)
        g1, g2 = self.shear_at(position.x, position.y)
        array = kolmogorov_image(self._width, self._height, (shift_x, shift_y), fwhm, g1, g2, self._pixelIntegrated)
        array /= array.sum()
        return ImageD(array, xy0=xy0)

    def _key(self) -> tuple:
        coeffs = tuple(map(tuple, self._coeffs.tolist()))
        return (self._width, self._height, coeffs, self._bbox_key(), *self._extra_key())
