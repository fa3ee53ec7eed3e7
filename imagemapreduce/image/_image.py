"""A single pixel plane in parent coordinates, as ``lsst.afw.image.Image`` has it."""

from __future__ import annotations

from typing import Any, Self

import numpy as np

from ..geom import Box2I, Extent2I, Point2I

__all__ = [
    "Image",
    "ImageF",
    "ImageD",
    "ImageI",
    "ImageU",
    "check_subbox",
    "check_same_dimensions",
    "bbox_from_args",
]


class FactoryAttribute:
    """afw's ``Factory``: the class itself, read from the class or from an instance.

    ``exposure.Factory(exposure, bbox)`` and ``ExposureF.Factory(exposure, bbox)`` both call
    ``ExposureF(exposure, bbox)``, which makes a view.
    """

    def __get__(self, obj: Any, objtype: type | None = None) -> type:
        return type(obj) if objtype is None else objtype


def check_same_dimensions(a: Any, b: Any, op: str) -> None:
    """Raise a `ValueError` unless ``a`` and ``b`` have the same dimensions (afw's ``LengthError``).

    Without this, numpy would silently broadcast e.g. a 1-row image across a taller one.
    """
    if a.getDimensions() != b.getDimensions():
        raise ValueError(
            f"cannot apply {op} between a {type(a).__name__} of dimensions {tuple(a.getDimensions())} "
            f"and a {type(b).__name__} of dimensions {tuple(b.getDimensions())}: they must match"
        )


def check_subbox(parent: Box2I, bbox: Box2I, what: str = "image") -> None:
    """Raise a `ValueError` unless ``bbox`` is a non-empty box inside ``parent``.

    LSST raises ``LengthError`` here; a `ValueError` naming both boxes says the same to Python users.
    """
    if not isinstance(bbox, Box2I):
        raise TypeError(f"bbox must be a Box2I, not {type(bbox).__name__}")
    if bbox.isEmpty():
        raise ValueError(f"cannot make a sub-{what} from an empty bbox (parent bbox {parent})")
    if not parent.contains(bbox):
        raise ValueError(
            f"sub-{what} bbox {bbox} is not contained in the parent {what}'s bbox {parent}; "
            "clip it first with bbox.clip(parent.getBBox())"
        )


def bbox_from_args(args: tuple, xy0: Point2I | None) -> tuple[Box2I, bool]:
    """Interpret LSST constructor arguments ``(width, height)``, ``(Extent2I)`` or ``(Box2I)``.

    Returns the bounding box and whether the arguments were recognised.
    """
    origin = Point2I(0, 0) if xy0 is None else Point2I(xy0)
    if len(args) == 1 and isinstance(args[0], Box2I):
        return Box2I(args[0]), True
    if len(args) == 1 and isinstance(args[0], Extent2I):
        return Box2I(origin, args[0]), True
    if len(args) == 2 and all(isinstance(a, (int, np.integer)) for a in args):
        width, height = int(args[0]), int(args[1])
        if width < 0 or height < 0:
            raise ValueError(f"width and height must be >= 0, got {width} x {height}")
        return Box2I(origin, Extent2I(width, height)), True
    return Box2I(), False


class Image:
    """A 2-d pixel array whose pixel ``[y, x]`` (``array`` row, column) sits at parent ``xy0 + (x, y)``.

    Parameters
    ----------
    *args
        ``(width, height)``, ``(Extent2I)`` or ``(Box2I)`` for a new zero-filled image; an array
        (numpy or dask, rows = y) to wrap without copying; or ``(Image, Box2I)`` for a view of the
        part of another image inside the box, in the parent's pixel coordinates.
    xy0 : `Point2I`, optional
        The parent coordinates of ``array[0, 0]`` when wrapping an array or giving a size.
    dtype : numpy dtype, optional
        Pixel type of a new image; defaults to the class's (``float32`` for `ImageF`).
    deep : `bool`
        With an ``(Image, Box2I)`` or array argument, copy the pixels instead of sharing them.
    """

    _default_dtype: np.dtype = np.dtype(np.float32)

    def __init__(self, *args: Any, xy0: Point2I | None = None, dtype: Any = None, deep: bool = False):
        dtype = np.dtype(self._default_dtype if dtype is None else dtype)
        if len(args) == 2 and isinstance(args[0], Image) and isinstance(args[1], Box2I):
            parent, bbox = args
            check_subbox(parent.getBBox(), bbox, "image")
            array = parent.array[bbox.slices(parent.getXY0())]
            self._init_plane(array.copy() if deep else array, bbox.getBegin(), parent)
            return
        # An array to wrap first: the engine wraps every cell's planes, so this is the hot path.
        if len(args) == 1 and hasattr(args[0], "shape") and hasattr(args[0], "dtype"):
            array = args[0]
            if array.ndim != 2:
                raise ValueError(f"an image array must be 2-d (rows = y, columns = x), got shape {array.shape}")
            if any(np.isnan(n) for n in array.shape):
                # A Dask array after boolean indexing: its bbox, and every grid over it, would be NaN.
                raise ValueError(
                    f"an image array must have a known shape, got {tuple(array.shape)} (a Dask array with unknown "
                    "chunk sizes); call array.compute_chunk_sizes() first"
                )
            self._init_plane(array.copy() if deep else array, Point2I(0, 0) if xy0 is None else xy0)
            return
        bbox, ok = bbox_from_args(args, xy0)
        if ok:
            self._init_plane(np.zeros((bbox.getHeight(), bbox.getWidth()), dtype=dtype), bbox.getBegin())
            return
        raise TypeError(
            f"{type(self).__name__}() takes (width, height), (Extent2I), (Box2I), (array) or "
            f"({type(self).__name__}, Box2I); got {tuple(type(a).__name__ for a in args)}"
        )

    def _init_plane(self, array: Any, xy0: Point2I, parent: Image | None = None) -> None:
        self.array = array
        self._xy0 = Point2I(xy0)

    # -- LSST accessors ------------------------------------------------------------------------
    def getArray(self) -> Any:  # noqa: D102
        return self.array

    def getBBox(self) -> Box2I:
        """Return the parent-coordinate bounding box."""
        height, width = self.array.shape
        return Box2I.from_slices(self._xy0[0], self._xy0[1], width, height)

    def getXY0(self) -> Point2I:  # noqa: D102
        return self._xy0

    def setXY0(self, xy0: Point2I) -> None:  # noqa: D102
        self._xy0 = Point2I(xy0)

    def getX0(self) -> int:  # noqa: D102
        return self._xy0.x

    def getY0(self) -> int:  # noqa: D102
        return self._xy0.y

    def getWidth(self) -> int:  # noqa: D102
        return int(self.array.shape[1])

    def getHeight(self) -> int:  # noqa: D102
        return int(self.array.shape[0])

    def getDimensions(self) -> Extent2I:  # noqa: D102
        return Extent2I(self.getWidth(), self.getHeight())

    @property
    def dtype(self) -> np.dtype:
        """The pixel type."""
        return self.array.dtype

    def set(self, value: Any) -> None:
        """Set every pixel to ``value``."""
        self.array[...] = value

    def clone(self) -> Self:
        """Return a deep copy."""
        new = self.Factory(self.array.copy(), xy0=self._xy0)
        return new

    #: The class, as afw's ``Factory`` attribute: ``image.Factory(image, bbox)`` makes a view.
    Factory = FactoryAttribute()

    def subset(self, bbox: Box2I) -> Self:
        """Return a view of the pixels inside ``bbox`` (parent coordinates)."""
        return self.Factory(self, bbox)

    def _checked_view(self, bbox: Box2I) -> Self:
        """A view of ``bbox``, which the caller has checked lies inside: no second check per plane."""
        view = type(self).__new__(type(self))
        view._init_plane(self.array[bbox.slices(self._xy0)], bbox.getBegin(), self)
        return view

    def __getitem__(self, bbox: Box2I) -> Self:
        if not isinstance(bbox, Box2I):
            raise TypeError(f"index an image with a Box2I (parent coordinates), not {type(bbox).__name__}")
        return self.subset(bbox)

    def __setitem__(self, bbox: Box2I, value: Any) -> None:
        view = self.subset(bbox)
        view.array[...] = value.array if isinstance(value, Image) else value

    # -- arithmetic, in place, as afw defines it ---------------------------------------------------
    def __iadd__(self, other: Any) -> Self:
        if isinstance(other, Image):
            check_same_dimensions(self, other, "+=")
        self.array += other.array if isinstance(other, Image) else other
        return self

    def __isub__(self, other: Any) -> Self:
        if isinstance(other, Image):
            check_same_dimensions(self, other, "-=")
        self.array -= other.array if isinstance(other, Image) else other
        return self

    def __imul__(self, other: Any) -> Self:
        if isinstance(other, Image):
            check_same_dimensions(self, other, "*=")
        self.array *= other.array if isinstance(other, Image) else other
        return self

    def __itruediv__(self, other: Any) -> Self:
        if isinstance(other, Image):
            check_same_dimensions(self, other, "/=")
        self.array /= other.array if isinstance(other, Image) else other
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}(bbox={self.getBBox()}, dtype={self.dtype})"


class ImageF(Image):
    """A float32 image."""

    _default_dtype = np.dtype(np.float32)


class ImageD(Image):
    """A float64 image."""

    _default_dtype = np.dtype(np.float64)


class ImageI(Image):
    """An int32 image."""

    _default_dtype = np.dtype(np.int32)


class ImageU(Image):
    """A uint16 image."""

    _default_dtype = np.dtype(np.uint16)
