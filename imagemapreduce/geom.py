"""Integer and floating-point pixel geometry with ``lsst.geom`` semantics.

Boxes are integer and inclusive: a box holds the pixels ``min .. max`` in both axes, and
``begin``/``end`` give the same range as a half-open interval (``end = max + 1``), which is what
numpy slicing wants. Every object here is immutable and hashable, except `Box2I`, whose in-place
methods (`Box2I.grow`, `Box2I.shift`, `Box2I.clip`, `Box2I.include`) mutate it as LSST's do.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, TypeVar, overload

__all__ = ["Point2I", "Point2D", "Extent2I", "Extent2D", "Box2I"]

_T = TypeVar("_T")
_T_co = TypeVar("_T_co", covariant=True)


def _pair(x: Any, y: Any) -> tuple[Any, Any]:
    """Split the constructor arguments of a point or extent: ``(x, y)``, ``(pair,)`` or ``(v,)``.

    The components are left as given (any pair-like or number LSST accepts); the caller converts them.
    """
    if y is not None:
        return x, y
    if hasattr(x, "__len__"):
        x, y = x
        return x, y
    return x, x  # lsst.geom fills every component from a single scalar


class _HasXY(Protocol[_T_co]):
    """What `_PairMixin` needs of its host class: the named-tuple fields ``x`` and ``y``."""

    @property
    def x(self) -> _T_co: ...

    @property
    def y(self) -> _T_co: ...


class _PairMixin:
    """LSST accessors shared by points and extents.

    The fields come from the named tuple each class also derives from (``int`` or ``float``), so the
    methods take their types from ``self`` rather than declaring ``x``/``y`` here, which would clash.
    """

    def getX(self: _HasXY[_T]) -> _T:  # noqa: D102 - LSST accessor
        return self.x

    def getY(self: _HasXY[_T]) -> _T:  # noqa: D102 - LSST accessor
        return self.y

    def __repr__(self: _HasXY[object]) -> str:
        return f"{type(self).__name__}({self.x}, {self.y})"


class Point2I(_PairMixin, NamedTuple("_Point2I", [("x", int), ("y", int)])):
    """An integer pixel position ``(x, y)``."""

    @overload
    def __new__(cls, x: int = 0, y: int | None = None) -> Point2I: ...
    @overload
    def __new__(cls, x: tuple[int, int]) -> Point2I: ...

    def __new__(cls, x: Any = 0, y: Any = None) -> Point2I:  # noqa: D102
        if y is None:
            x, y = _pair(x, y)
        return tuple.__new__(cls, (int(x), int(y)))

    def __add__(self, other: Extent2I) -> Point2I:  # type: ignore[override]
        return Point2I(self.x + other.x, self.y + other.y)

    def __sub__(self, other: Point2I | Extent2I) -> Point2I | Extent2I:
        if isinstance(other, Point2I):
            return Extent2I(self.x - other.x, self.y - other.y)
        return Point2I(self.x - other.x, self.y - other.y)


class Point2D(_PairMixin, NamedTuple("_Point2D", [("x", float), ("y", float)])):
    """A floating-point position ``(x, y)``; integer pixel ``i`` has its centre at ``i``."""

    @overload
    def __new__(cls, x: float = 0.0, y: float | None = None) -> Point2D: ...
    @overload
    def __new__(cls, x: tuple[float, float]) -> Point2D: ...

    def __new__(cls, x: Any = 0.0, y: Any = None) -> Point2D:  # noqa: D102
        if y is None:
            x, y = _pair(x, y)
        return tuple.__new__(cls, (float(x), float(y)))

    def __add__(self, other: Extent2D | Extent2I) -> Point2D:  # type: ignore[override]
        return Point2D(self.x + other.x, self.y + other.y)

    def __sub__(self, other: Point2D | Extent2D) -> Point2D | Extent2D:
        if isinstance(other, Point2D):
            return Extent2D(self.x - other.x, self.y - other.y)
        return Point2D(self.x - other.x, self.y - other.y)


class Extent2I(_PairMixin, NamedTuple("_Extent2I", [("x", int), ("y", int)])):
    """An integer size or offset ``(x, y)``."""

    @overload
    def __new__(cls, x: int = 0, y: int | None = None) -> Extent2I: ...
    @overload
    def __new__(cls, x: tuple[int, int]) -> Extent2I: ...

    def __new__(cls, x: Any = 0, y: Any = None) -> Extent2I:  # noqa: D102
        if y is None:
            x, y = _pair(x, y)
        return tuple.__new__(cls, (int(x), int(y)))

    def __add__(self, other: Extent2I) -> Extent2I:  # type: ignore[override]
        return Extent2I(self.x + other.x, self.y + other.y)

    def __sub__(self, other: Extent2I) -> Extent2I:
        return Extent2I(self.x - other.x, self.y - other.y)

    def __neg__(self) -> Extent2I:
        return Extent2I(-self.x, -self.y)


class Extent2D(_PairMixin, NamedTuple("_Extent2D", [("x", float), ("y", float)])):
    """A floating-point size or offset ``(x, y)``."""

    @overload
    def __new__(cls, x: float = 0.0, y: float | None = None) -> Extent2D: ...
    @overload
    def __new__(cls, x: tuple[float, float]) -> Extent2D: ...

    def __new__(cls, x: Any = 0.0, y: Any = None) -> Extent2D:  # noqa: D102
        if y is None:
            x, y = _pair(x, y)
        return tuple.__new__(cls, (float(x), float(y)))


class Box2I:
    """An integer box of pixels, inclusive of its minimum and maximum corners.

    Parameters
    ----------
    minimum : `Point2I`, optional
        The lower-left pixel. Without arguments the box is empty.
    dimensions_or_maximum : `Extent2I` or `Point2I`, optional
        The size of the box (an `Extent2I`) or its upper-right pixel, inclusive (a `Point2I`).
        A size with a zero or negative component gives an empty box, as in LSST.

    Examples
    --------
    >>> box = Box2I(Point2I(2, 3), Extent2I(4, 5))
    >>> box.getMaxX(), box.getEndX(), box.getArea()
    (5, 6, 20)
    """

    __slots__ = ("_x0", "_y0", "_x1", "_y1")
    _x0: int
    _y0: int
    _x1: int
    _y1: int

    @overload
    def __init__(self) -> None: ...
    @overload
    def __init__(self, minimum: Point2I, dimensions_or_maximum: Extent2I | Point2I) -> None: ...
    @overload
    def __init__(self, minimum: Box2I) -> None: ...

    def __init__(self, minimum=None, dimensions_or_maximum=None) -> None:
        # Empty boxes are stored as (0, 0, -1, -1) so every empty box compares equal.
        self._set_empty()
        if isinstance(minimum, Box2I) and dimensions_or_maximum is None:
            self._x0, self._y0, self._x1, self._y1 = minimum._x0, minimum._y0, minimum._x1, minimum._y1
            return
        if minimum is None and dimensions_or_maximum is None:
            return
        if minimum is None or dimensions_or_maximum is None:
            raise TypeError("Box2I takes no arguments, (minimum, dimensions) or (minimum, maximum)")
        lo = Point2I(minimum)
        if isinstance(dimensions_or_maximum, Extent2I):
            if dimensions_or_maximum.x <= 0 or dimensions_or_maximum.y <= 0:
                return
            hi = Point2I(lo.x + dimensions_or_maximum.x - 1, lo.y + dimensions_or_maximum.y - 1)
        elif isinstance(dimensions_or_maximum, Point2I):
            # As in lsst.geom, (min, max) is inverted into order rather than made empty.
            hi = dimensions_or_maximum
            lo, hi = Point2I(min(lo.x, hi.x), min(lo.y, hi.y)), Point2I(max(lo.x, hi.x), max(lo.y, hi.y))
        else:
            raise TypeError(
                "Box2I's second argument must be an Extent2I (dimensions) or a Point2I (maximum), "
                f"not {type(dimensions_or_maximum).__name__}"
            )
        self._x0, self._y0, self._x1, self._y1 = lo.x, lo.y, hi.x, hi.y

    @classmethod
    def from_slices(cls, x0: int, y0: int, width: int, height: int) -> Box2I:
        """Make a box from its begin corner and size, without building points first."""
        if width <= 0 or height <= 0:
            return cls()
        return cls._from_corners(int(x0), int(y0), int(x0) + int(width) - 1, int(y0) + int(height) - 1)

    @classmethod
    def _from_corners(cls, x0: int, y0: int, x1: int, y1: int) -> Box2I:
        """A box from trusted, ordered, non-empty inclusive corners (no checks: for hot paths)."""
        box = cls.__new__(cls)
        box._x0, box._y0, box._x1, box._y1 = x0, y0, x1, y1
        return box

    def _set_empty(self) -> None:
        self._x0, self._y0, self._x1, self._y1 = 0, 0, -1, -1

    # -- accessors -------------------------------------------------------------------------------
    def getMinX(self) -> int:  # noqa: D102
        return self._x0

    def getMinY(self) -> int:  # noqa: D102
        return self._y0

    def getMaxX(self) -> int:  # noqa: D102
        return self._x1

    def getMaxY(self) -> int:  # noqa: D102
        return self._y1

    def getBeginX(self) -> int:  # noqa: D102
        return self._x0

    def getBeginY(self) -> int:  # noqa: D102
        return self._y0

    def getEndX(self) -> int:  # noqa: D102
        return self._x1 + 1

    def getEndY(self) -> int:  # noqa: D102
        return self._y1 + 1

    def getMin(self) -> Point2I:  # noqa: D102
        return Point2I(self._x0, self._y0)

    def getMax(self) -> Point2I:  # noqa: D102
        return Point2I(self._x1, self._y1)

    def getBegin(self) -> Point2I:  # noqa: D102
        return Point2I(self._x0, self._y0)

    def getEnd(self) -> Point2I:  # noqa: D102
        return Point2I(self._x1 + 1, self._y1 + 1)

    def getWidth(self) -> int:  # noqa: D102
        return self._x1 - self._x0 + 1

    def getHeight(self) -> int:  # noqa: D102
        return self._y1 - self._y0 + 1

    def getDimensions(self) -> Extent2I:  # noqa: D102
        return Extent2I(self.getWidth(), self.getHeight())

    def getArea(self) -> int:  # noqa: D102
        return self.getWidth() * self.getHeight()

    def getCenter(self) -> Point2D:
        """Return the centre of the box in floating-point pixel coordinates."""
        return Point2D(0.5 * (self._x0 + self._x1), 0.5 * (self._y0 + self._y1))

    def getCorners(self) -> list[Point2I]:
        """Return the four corners: (min), (max x, min y), max, (min x, max y), as lsst.geom does."""
        return [
            Point2I(self._x0, self._y0),
            Point2I(self._x1, self._y0),
            Point2I(self._x1, self._y1),
            Point2I(self._x0, self._y1),
        ]

    def isEmpty(self) -> bool:  # noqa: D102
        return self._x1 < self._x0 or self._y1 < self._y0

    width = property(getWidth)
    height = property(getHeight)
    minX = property(getMinX)
    minY = property(getMinY)
    maxX = property(getMaxX)
    maxY = property(getMaxY)
    beginX = property(getBeginX)
    beginY = property(getBeginY)
    endX = property(getEndX)
    endY = property(getEndY)

    # -- predicates ------------------------------------------------------------------------------
    def contains(self, other: Point2I | Box2I) -> bool:
        """Whether a point, or every pixel of a box, lies inside this box (an empty box is inside)."""
        if isinstance(other, Box2I):
            if other.isEmpty():
                return True
            return (
                not self.isEmpty()
                and other._x0 >= self._x0
                and other._y0 >= self._y0
                and other._x1 <= self._x1
                and other._y1 <= self._y1
            )
        x, y = other.x, other.y
        return self._x0 <= x <= self._x1 and self._y0 <= y <= self._y1

    def overlaps(self, other: Box2I) -> bool:
        """Whether the two boxes share at least one pixel."""
        if self.isEmpty() or other.isEmpty():
            return False
        return not (other._x1 < self._x0 or other._x0 > self._x1 or other._y1 < self._y0 or other._y0 > self._y1)

    # -- in-place operations, as lsst.geom.Box2I has them -------------------------------------
    def grow(self, buffer: int | Extent2I) -> None:
        """Grow the box by ``buffer`` pixels on every side (x and y separately for an extent)."""
        if self.isEmpty():
            return
        bx, by = (buffer.x, buffer.y) if isinstance(buffer, Extent2I) else (int(buffer), int(buffer))
        self._x0, self._y0, self._x1, self._y1 = self._x0 - bx, self._y0 - by, self._x1 + bx, self._y1 + by
        if self.isEmpty():
            self._set_empty()

    def shift(self, offset: Extent2I) -> None:
        """Move the box by ``offset``."""
        if self.isEmpty():
            return
        self._x0, self._x1 = self._x0 + offset.x, self._x1 + offset.x
        self._y0, self._y1 = self._y0 + offset.y, self._y1 + offset.y

    def clip(self, other: Box2I) -> None:
        """Shrink the box to its intersection with ``other`` (empty when they do not overlap)."""
        if not self.overlaps(other):
            self._set_empty()
            return
        self._x0, self._y0 = max(self._x0, other._x0), max(self._y0, other._y0)
        self._x1, self._y1 = min(self._x1, other._x1), min(self._y1, other._y1)

    def include(self, other: Point2I | Box2I) -> None:
        """Expand the box to hold a point or another box."""
        if isinstance(other, Box2I):
            if other.isEmpty():
                return
            lo, hi = other.getMin(), other.getMax()
        else:
            lo = hi = Point2I(other.x, other.y)
        if self.isEmpty():
            self._x0, self._y0, self._x1, self._y1 = lo.x, lo.y, hi.x, hi.y
            return
        self._x0, self._y0 = min(self._x0, lo.x), min(self._y0, lo.y)
        self._x1, self._y1 = max(self._x1, hi.x), max(self._y1, hi.y)

    # -- pure helpers (snake_case: not LSST names) -------------------------------------------
    def clipped_to(self, other: Box2I) -> Box2I:
        """Return the intersection of this box and ``other`` as a new box."""
        if not self.overlaps(other):
            return Box2I()
        return Box2I._from_corners(
            max(self._x0, other._x0), max(self._y0, other._y0), min(self._x1, other._x1), min(self._y1, other._y1)
        )

    def grown(self, x: int, y: int | None = None) -> Box2I:
        """Return a copy grown by ``x`` pixels left and right and ``y`` (default ``x``) up and down."""
        box = Box2I(self)
        box.grow(Extent2I(x, x if y is None else y))
        return box

    def slices(self, origin: Point2I | None = None) -> tuple[slice, slice]:
        """Return ``(rows, columns)`` slices of this box in an array whose pixel (0, 0) is ``origin``."""
        ox, oy = (0, 0) if origin is None else (origin.x, origin.y)
        return (slice(self._y0 - oy, self._y1 + 1 - oy), slice(self._x0 - ox, self._x1 + 1 - ox))

    # -- value semantics -------------------------------------------------------------------------
    def _key(self) -> tuple[int, int, int, int]:
        return (0, 0, -1, -1) if self.isEmpty() else (self._x0, self._y0, self._x1, self._y1)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Box2I) and self._key() == other._key()

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash(("Box2I",) + self._key())

    def __getstate__(self) -> tuple[int, int, int, int]:
        return self._key()

    def __setstate__(self, state: tuple[int, int, int, int]) -> None:
        self._x0, self._y0, self._x1, self._y1 = state

    def __repr__(self) -> str:
        if self.isEmpty():
            return "Box2I()"
        return f"Box2I(minimum={self.getMin()!r}, dimensions={self.getDimensions()!r})"

    def __str__(self) -> str:
        if self.isEmpty():
            return "(empty box)"
        return f"(minimum=({self._x0}, {self._y0}), maximum=({self._x1}, {self._y1}))"
