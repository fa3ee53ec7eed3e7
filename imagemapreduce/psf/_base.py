"""The abstract `Psf`, with ``lsst.afw.detection.Psf``'s public methods."""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..geom import Box2I, Extent2I, Point2D, Point2I
from ..image._image import ImageD
from ._shape import Quadrupole, adaptive_moments

__all__ = ["Psf", "PositionLike", "to_position", "nearest_pixel", "kernel_origin"]

PositionLike = Point2D | Point2I | tuple[float, float]


def to_position(position: PositionLike) -> Point2D:
    """Convert a point or ``(x, y)`` pair to a finite `Point2D`.

    Raises
    ------
    ValueError
        If a coordinate is not finite: a NaN position would silently give a NaN-shifted image.
    """
    point = Point2D(position)
    if not (math.isfinite(point.x) and math.isfinite(point.y)):
        raise ValueError(f"PSF position must be finite, got ({point.x}, {point.y})")
    return point


def nearest_pixel(position: Point2D) -> Point2I:
    """Return the pixel whose centre is nearest ``position``, rounding halves up as afw does."""
    return Point2I(math.floor(position.x + 0.5), math.floor(position.y + 0.5))


def kernel_origin(dimensions: Extent2I) -> Point2I:
    """Return the xy0 that puts pixel ``(0, 0)`` at index ``(w // 2, h // 2)`` of a kernel image.

    This is afw GaussianPsf's ``Point2I(-dimensions / 2)``; for even sizes the centre is the upper
    of the two middle pixels.
    """
    return Point2I(-(int(dimensions.x) // 2), -(int(dimensions.y) // 2))


class Psf(abc.ABC):
    """A point-spread function: an immutable model that can be realised as an image anywhere.

    Subclasses implement `_doComputeKernelImage`, `_doComputeImage`, `getDimensions` and `_key`
    (the constructor arguments, used for equality, hashing and pickling). Positions are in parent
    pixel coordinates; `None` means `getAveragePosition`.
    """

    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> None:
        # PSFs are shared between exposures and worker processes, so mutation would be a hazard.
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _set(self, name: str, value: Any) -> None:
        """Set an attribute during construction, bypassing the immutability guard."""
        object.__setattr__(self, name, value)

    # -- hooks ------------------------------------------------------------------------------------
    @abc.abstractmethod
    def _doComputeKernelImage(self, position: Point2D) -> ImageD:
        """Return the kernel image at ``position``: sum 1, pixel (0, 0) at the PSF centre."""

    @abc.abstractmethod
    def _doComputeImage(self, position: Point2D) -> ImageD:
        """Return the image centred on ``position`` in parent coordinates, sum 1."""

    @abc.abstractmethod
    def getDimensions(self) -> Extent2I:
        """Return the size of the kernel image."""

    @abc.abstractmethod
    def _key(self) -> tuple:
        """Return the constructor arguments, for equality, hashing and pickling."""

    # -- public API ---------------------------------------------------------------------------------
    def _resolve(self, position: PositionLike | None) -> Point2D:
        return self.getAveragePosition() if position is None else to_position(position)

    def computeKernelImage(self, position: PositionLike | None = None) -> ImageD:
        """Return the PSF at ``position`` centred on pixel ``(0, 0)``, normalised to sum 1.

        Parameters
        ----------
        position : `Point2D`, optional
            Where in the parent image to evaluate a spatially varying PSF; `None` means
            `getAveragePosition`.

        Returns
        -------
        image : `ImageD`
            A new image whose xy0 is ``(-(w // 2), -(h // 2))`` for an analytic PSF.
        """
        return self._doComputeKernelImage(self._resolve(position))

    def computeKernelImages(self, positions: Sequence[PositionLike]) -> np.ndarray:
        """Return the kernel images at many positions, stacked: ``(n, height, width)``, each summing to 1.

        Not in afw. Each is `computeKernelImage` at its position (to float64 rounding). The default
        calls it once per position; models that can evaluate many positions together (the
        polynomial varying PSFs) override it, so that a tile of cells costs a few array operations.
        """
        if not len(positions):
            dims = self.getDimensions()
            return np.empty((0, dims.y, dims.x))
        return np.stack([self.computeKernelImage(position).array for position in positions])

    def computeImage(self, position: PositionLike | None = None) -> ImageD:
        """Return the PSF centred on ``position`` in parent pixel coordinates, normalised to sum 1.

        The image's centre pixel is the pixel nearest ``position`` (``xy0 = round(position) -
        dims // 2``), and the profile is shifted by the sub-pixel remainder so that its centre is
        exactly at ``position``.

        Parameters
        ----------
        position : `Point2D`, optional
            The centre of the star; `None` means `getAveragePosition`.

        Returns
        -------
        image : `ImageD`
            A new image in parent coordinates.
        """
        return self._doComputeImage(self._resolve(position))

    def computeShape(self, position: PositionLike | None = None) -> Quadrupole:
        """Return the second moments of the PSF at ``position``.

        The default, as afw's ImagePsf, measures adaptive moments of the kernel image.
        """
        image = self.computeKernelImage(position)
        center = (-image.getX0(), -image.getY0())
        shape, _ = adaptive_moments(image.array, center)
        return shape

    def computePeak(self, position: PositionLike | None = None) -> float:
        """Return the value of the kernel image's pixel ``(0, 0)`` at ``position``, as afw does."""
        image = self.computeKernelImage(position)
        return float(image.array[-image.getY0(), -image.getX0()])

    def computeBBox(self, position: PositionLike | None = None) -> Box2I:
        """Return the bounding box of `computeKernelImage` at ``position``."""
        return self.computeKernelImage(position).getBBox()

    def computeImageBBox(self, position: PositionLike | None = None) -> Box2I:
        """Return the bounding box of `computeImage` at ``position``."""
        point = self._resolve(position)
        box = self.computeBBox(point)
        center = nearest_pixel(point)
        box.shift(Extent2I(int(center.x), int(center.y)))
        return box

    def getAveragePosition(self) -> Point2D:
        """Return a representative position: ``(0, 0)`` for a PSF that does not vary, as afw's."""
        return Point2D(0.0, 0.0)

    def clone(self) -> Psf:
        """Return an equal, independent copy."""
        rebuild, args = self.__reduce__()
        return rebuild(*args)

    # -- value semantics ------------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Psf):
            return NotImplemented
        return type(self) is type(other) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._key()))

    def __reduce__(self) -> tuple[Any, tuple]:
        return (type(self), self._key())

    def __repr__(self) -> str:
        return f"{type(self).__name__}{self._key()!r}"


def check_dimension(name: str, value: Any) -> int:
    """Return ``value`` as a positive `int`, or raise naming the parameter."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return int(value)


def check_sigma(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """Return ``value`` as a finite positive `float` (or zero if allowed), or raise naming it."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}") from None
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value}")
    return number


def cached_hash(psf: Psf) -> int:
    """``hash(psf)`` computed once and kept in its ``_hash_value`` slot.

    For PSFs with long keys (polynomials, profiles) that every cell's kernel caches hash.
    """
    try:
        return psf._hash_value  # type: ignore[attr-defined]
    except AttributeError:
        value = Psf.__hash__(psf)
        psf._set("_hash_value", value)
        return value
