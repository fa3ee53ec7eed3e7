"""Bit-plane masks with named planes, as ``lsst.afw.image.Mask`` has them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Self

import numpy as np

from ..geom import Box2I, Point2I
from ._image import Image

__all__ = ["Mask", "MaskX", "DEFAULT_MASK_PLANES", "MAX_MASK_PLANES"]

#: afw's default planes, in bit order.
DEFAULT_MASK_PLANES: tuple[str, ...] = (
    "BAD",
    "SAT",
    "INTRP",
    "CR",
    "EDGE",
    "DETECTED",
    "DETECTED_NEGATIVE",
    "SUSPECT",
    "NO_DATA",
)
#: An int32 pixel holds 32 bit planes.
MAX_MASK_PLANES = 32


class Mask(Image):
    """An int32 image whose bits are named planes.

    Each mask owns a plane dictionary (name -> bit index) that starts as afw's default set. Views
    made with ``mask[bbox]`` share the dictionary of their parent, so a plane added to a view is
    known to the parent too; `clone` copies it.

    Parameters
    ----------
    *args
        As for `Image`.
    planeDict : `dict` [`str`, `int`], optional
        The plane dictionary to use; defaults to a copy of afw's default planes.
    """

    _default_dtype = np.dtype(np.int32)

    def __init__(self, *args: Any, planeDict: dict[str, int] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.array.dtype.kind not in "iu":
            raise TypeError(f"a Mask holds integer bit planes; got pixels of type {self.array.dtype}")
        if planeDict is not None:
            self._planes = planeDict
        elif not hasattr(self, "_planes"):
            self._planes = {name: bit for bit, name in enumerate(DEFAULT_MASK_PLANES)}
        _check_plane_dict(self._planes)

    def _init_plane(self, array: Any, xy0: Point2I, parent: Image | None = None) -> None:
        super()._init_plane(array, xy0, parent)
        if isinstance(parent, Mask):
            self._planes = parent._planes  # views share the parent's planes, as afw masks do

    # -- planes -----------------------------------------------------------------------------
    def addMaskPlane(self, name: str) -> int:
        """Add a plane (if new) and return its bit index."""
        if name in self._planes:
            return self._planes[name]
        used = set(self._planes.values())
        free = next((bit for bit in range(MAX_MASK_PLANES) if bit not in used), None)
        if free is None:
            raise RuntimeError(f"cannot add mask plane {name!r}: all {MAX_MASK_PLANES} bits are in use")
        self._planes[name] = free
        return free

    def removeMaskPlane(self, name: str) -> None:
        """Forget a plane's name (its bits stay in the pixels, as in afw)."""
        self.getMaskPlane(name)
        del self._planes[name]

    def getMaskPlane(self, name: str) -> int:
        """Return the bit index of a plane."""
        try:
            return self._planes[name]
        except KeyError:
            raise KeyError(
                f"mask has no plane {name!r}; known planes: {sorted(self._planes)}. Add it with mask.addMaskPlane(name)"
            ) from None

    def getPlaneBitMask(self, names: str | Iterable[str]) -> int:
        """Return the bit mask of one plane or the OR of several."""
        if isinstance(names, str):
            names = [names]
        bits = 0
        for name in names:
            bits |= 1 << self.getMaskPlane(name)
        return bits

    def getMaskPlaneDict(self) -> dict[str, int]:
        """Return a copy of the plane dictionary (name -> bit index)."""
        return dict(self._planes)

    def getNumPlanesUsed(self) -> int:  # noqa: D102
        return len(self._planes)

    def clone(self) -> Self:
        """Return a deep copy, with its own copy of the plane dictionary."""
        return type(self)(self.array.copy(), xy0=self.getXY0(), planeDict=dict(self._planes))

    def subset(self, bbox: Box2I) -> Self:  # noqa: D102
        return type(self)(self, bbox)

    def __ior__(self, other: Any) -> Self:
        self.array |= other.array if isinstance(other, Image) else other
        return self

    def __iand__(self, other: Any) -> Self:
        self.array &= other.array if isinstance(other, Image) else other
        return self

    def __repr__(self) -> str:
        return f"Mask(bbox={self.getBBox()}, planes={self.getMaskPlaneDict()})"


def _check_plane_dict(planes: dict[str, int]) -> None:
    bits = list(planes.values())
    if len(set(bits)) != len(bits):
        raise ValueError(f"mask plane dictionary gives two planes the same bit: {planes}")
    bad = [b for b in bits if not 0 <= b < MAX_MASK_PLANES]
    if bad:
        raise ValueError(f"mask plane bits must lie in 0..{MAX_MASK_PLANES - 1}, got {bad}")


#: afw's name for the int32 mask type.
MaskX = Mask
