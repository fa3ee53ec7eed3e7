"""Analytic PSFs: `GaussianPsf` (``lsst.afw.detection``) and `DoubleGaussianPsf` (``meas_algorithms``)."""

from __future__ import annotations

import abc

import numpy as np

from ..geom import Box2I, Extent2I, Point2D, Point2I
from ..image._image import ImageD
from ._base import PositionLike, Psf, check_dimension, check_sigma, kernel_origin, nearest_pixel
from ._shape import Quadrupole

__all__ = ["GaussianPsf", "DoubleGaussianPsf"]


def _gaussian_1d(offsets: np.ndarray, sigma: float) -> np.ndarray:
    """Return the unnormalised Gaussian ``exp(-x^2 / 2 sigma^2)`` at ``offsets``."""
    return np.exp(-0.5 * (offsets / sigma) ** 2)


class _AnalyticPsf(Psf):
    """A spatially constant PSF given by a profile evaluated at pixel centres on a fixed grid."""

    __slots__ = ("_width", "_height")
    _width: int
    _height: int

    def _init_dimensions(self, width: int, height: int) -> None:
        self._set("_width", check_dimension("width", width))
        self._set("_height", check_dimension("height", height))

    @abc.abstractmethod
    def _profile(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Return the profile on the grid of 1-d offsets ``x`` (columns) and ``y`` (rows)."""

    def _realise(self, shift_x: float, shift_y: float, xy0: Point2I) -> ImageD:
        """Evaluate the profile centred ``shift`` pixels from the centre pixel, normalise, wrap."""
        origin = kernel_origin(self.getDimensions())
        x = np.arange(self._width, dtype=np.float64) + origin.x - shift_x
        y = np.arange(self._height, dtype=np.float64) + origin.y - shift_y
        array = self._profile(x, y)
        # Normalise the sampled pixels, not the continuous profile, as afw's kernels do: the image
        # must sum to 1 whatever the truncation and sampling.
        array /= array.sum()
        return ImageD(array, xy0=xy0)

    def _doComputeKernelImage(self, position: Point2D) -> ImageD:
        return self._realise(0.0, 0.0, kernel_origin(self.getDimensions()))

    def _doComputeImage(self, position: Point2D) -> ImageD:
        center = nearest_pixel(position)
        origin = kernel_origin(self.getDimensions())
        xy0 = Point2I(int(center.x + origin.x), int(center.y + origin.y))
        return self._realise(position.x - center.x, position.y - center.y, xy0)

    def computeBBox(self, position: PositionLike | None = None) -> Box2I:
        """Return the kernel image's bounding box, without evaluating the profile."""
        return Box2I(kernel_origin(self.getDimensions()), self.getDimensions())

    def getDimensions(self) -> Extent2I:
        """Return the ``(width, height)`` of the realised images."""
        return Extent2I(self._width, self._height)


class GaussianPsf(_AnalyticPsf):
    """A circular Gaussian PSF on a ``width`` x ``height`` grid, as ``lsst.afw.detection.GaussianPsf``.

    Parameters
    ----------
    width, height : `int`
        Size of the realised images, > 0. Unlike afw, even sizes are allowed; the centre is then
        the upper of the two middle pixels.
    sigma : `float`
        Gaussian sigma in pixels, > 0.

    Examples
    --------
    >>> psf = GaussianPsf(11, 11, 2.0)
    >>> image = psf.computeKernelImage()
    >>> image.getXY0(), round(float(image.array.sum()), 12)
    (Point2I(-5, -5), 1.0)
    """

    __slots__ = ("_sigma",)
    _sigma: float

    def __init__(self, width: int, height: int, sigma: float) -> None:
        self._init_dimensions(width, height)
        self._set("_sigma", check_sigma("sigma", sigma))

    def getSigma(self) -> float:  # noqa: D102 - LSST accessor
        return self._sigma

    def _profile(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        # Separable: an outer product of two 1-d Gaussians costs w + h exponentials, not w * h.
        return np.outer(_gaussian_1d(y, self._sigma), _gaussian_1d(x, self._sigma))

    def computeShape(self, position: PositionLike | None = None) -> Quadrupole:
        """Return ``Quadrupole(sigma^2, sigma^2, 0)`` exactly, as afw's GaussianPsf does analytically."""
        if position is not None:
            self._resolve(position)  # still reject a malformed position
        s2 = self._sigma * self._sigma
        return Quadrupole(s2, s2, 0.0)

    def _key(self) -> tuple:
        return (self._width, self._height, self._sigma)


class DoubleGaussianPsf(_AnalyticPsf):
    """A circular double-Gaussian PSF, as ``lsst.meas.algorithms.DoubleGaussianPsf``.

    The profile is ``exp(-r^2 / 2 sigma1^2) + b exp(-r^2 / 2 sigma2^2)``: ``b`` is the central
    amplitude of the outer Gaussian relative to the inner one (afw's ``DoubleGaussianFunction2``),
    and the realised image is normalised to sum 1.

    Parameters
    ----------
    width, height : `int`
        Size of the realised images, > 0.
    sigma1 : `float`
        Sigma of the inner Gaussian in pixels, > 0.
    sigma2 : `float`
        Sigma of the outer Gaussian in pixels, > 0; 0 is accepted when ``b == 0`` and, as in LSST,
        replaced by 1.
    b : `float`
        Central amplitude ratio of the outer to the inner Gaussian, finite and >= 0.
    """

    __slots__ = ("_sigma1", "_sigma2", "_b")
    _sigma1: float
    _sigma2: float
    _b: float

    def __init__(self, width: int, height: int, sigma1: float, sigma2: float = 1.0, b: float = 0.0) -> None:
        self._init_dimensions(width, height)
        self._set("_sigma1", check_sigma("sigma1", sigma1))
        b_value = check_sigma("b", b, allow_zero=True)
        sigma2_value = check_sigma("sigma2", sigma2, allow_zero=b_value == 0.0)
        if sigma2_value == 0.0:
            sigma2_value = 1.0  # LSST's makeDoubleGaussianKernel: avoid 0/0, the term is unused anyway
        self._set("_sigma2", sigma2_value)
        self._set("_b", b_value)

    def getSigma1(self) -> float:  # noqa: D102 - LSST accessor
        return self._sigma1

    def getSigma2(self) -> float:  # noqa: D102 - LSST accessor
        return self._sigma2

    def getB(self) -> float:  # noqa: D102 - LSST accessor
        return self._b

    def _profile(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        inner = np.outer(_gaussian_1d(y, self._sigma1), _gaussian_1d(x, self._sigma1))
        if self._b == 0.0:
            return inner
        return inner + self._b * np.outer(_gaussian_1d(y, self._sigma2), _gaussian_1d(x, self._sigma2))

    def _key(self) -> tuple:
        return (self._width, self._height, self._sigma1, self._sigma2, self._b)
