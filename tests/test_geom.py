"""Tests for `imagemapreduce.geom`: points, extents and LSST-style integer boxes."""

# ruff: noqa: D101, D102

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

from imagemapreduce.geom import Box2I, Extent2D, Extent2I, Point2D, Point2I


def box(x0: int, y0: int, w: int, h: int) -> Box2I:
    """Shorthand: the box with minimum ``(x0, y0)`` and dimensions ``(w, h)``."""
    return Box2I(Point2I(x0, y0), Extent2I(w, h))


def corners(b: Box2I) -> tuple[int, int, int, int]:
    """Return the box as ``(minX, minY, maxX, maxY)``."""
    return (b.getMinX(), b.getMinY(), b.getMaxX(), b.getMaxY())


# -- points and extents ------------------------------------------------------------------------


class TestPointsAndExtents:
    def test_point2i_accessors(self):
        p = Point2I(3, -4)
        assert (p.getX(), p.getY()) == (3, -4)
        assert (p.x, p.y) == (3, -4)
        assert type(p.x) is int and type(p.getY()) is int

    def test_point2d_accessors_are_float(self):
        p = Point2D(1, 2)
        assert (p.getX(), p.getY()) == (1.0, 2.0)
        assert type(p.x) is float and type(p.y) is float

    def test_extent2i_accessors(self):
        e = Extent2I(4, 5)
        assert (e.getX(), e.getY()) == (4, 5)
        assert (e.x, e.y) == (4, 5)

    def test_extent2d_accessors(self):
        e = Extent2D(0.5, 1.5)
        assert (e.getX(), e.getY()) == (0.5, 1.5)

    def test_default_is_origin(self):
        assert Point2I() == Point2I(0, 0)
        assert Extent2I() == Extent2I(0, 0)
        assert Point2D() == Point2D(0.0, 0.0)

    def test_from_pair_and_scalar(self):
        assert Point2I((7, 8)) == Point2I(7, 8)
        assert Extent2I([2, 3]) == Extent2I(2, 3)
        assert Extent2I(6) == Extent2I(6, 6)  # lsst.geom fills every component from a scalar
        assert Point2I(Point2I(1, 2)) == Point2I(1, 2)

    def test_numpy_integer_inputs_become_python_ints(self):
        p = Point2I(np.int64(3), np.int32(4))
        e = Extent2I(np.int16(5), np.uint8(6))
        assert p == Point2I(3, 4) and e == Extent2I(5, 6)
        assert all(type(v) is int for v in (p.x, p.y, e.x, e.y))
        assert Point2I(np.array([9, 10])) == Point2I(9, 10)

    def test_point_arithmetic(self):
        p = Point2I(5, 7)
        assert p + Extent2I(1, -2) == Point2I(6, 5)
        assert isinstance(p + Extent2I(1, 1), Point2I)
        diff = p - Point2I(2, 3)
        assert isinstance(diff, Extent2I) and diff == Extent2I(3, 4)
        moved = p - Extent2I(1, 1)
        assert isinstance(moved, Point2I) and moved == Point2I(4, 6)
        d = Point2D(1.5, 2.5) - Point2D(0.5, 0.5)
        assert isinstance(d, Extent2D) and d == Extent2D(1.0, 2.0)
        assert Point2D(1.0, 1.0) + Extent2I(2, 3) == Point2D(3.0, 4.0)

    def test_extent_arithmetic(self):
        assert Extent2I(1, 2) + Extent2I(3, 4) == Extent2I(4, 6)
        assert Extent2I(5, 5) - Extent2I(1, 2) == Extent2I(4, 3)
        assert -Extent2I(1, -2) == Extent2I(-1, 2)

    def test_equality_and_hash(self):
        assert Point2I(1, 2) == Point2I(1, 2)
        assert Point2I(1, 2) != Point2I(2, 1)
        assert len({Point2I(1, 2), Point2I(1, 2), Point2I(2, 1)}) == 2
        assert {Extent2I(3, 4): "a"}[Extent2I(3, 4)] == "a"

    def test_repr(self):
        assert repr(Point2I(1, 2)) == "Point2I(1, 2)"
        assert repr(Extent2I(3, 4)) == "Extent2I(3, 4)"

    @pytest.mark.parametrize("obj", [Point2I(1, 2), Point2D(0.5, -1.5), Extent2I(3, 4), Extent2D(1.0, 2.0)])
    def test_pickle_round_trip(self, obj):
        back = pickle.loads(pickle.dumps(obj))
        assert back == obj and type(back) is type(obj)


# -- Box2I: construction and accessors -----------------------------------------------------------


class TestBoxAccessors:
    def test_min_dimensions_constructor(self):
        b = box(2, 3, 4, 5)
        assert (b.getMinX(), b.getMinY()) == (2, 3)
        assert (b.getMaxX(), b.getMaxY()) == (5, 7)
        assert (b.getBeginX(), b.getBeginY()) == (2, 3)
        assert (b.getEndX(), b.getEndY()) == (6, 8)
        assert b.getMin() == Point2I(2, 3)
        assert b.getMax() == Point2I(5, 7)
        assert b.getBegin() == Point2I(2, 3)
        assert b.getEnd() == Point2I(6, 8)
        assert (b.getWidth(), b.getHeight()) == (4, 5)
        assert b.getDimensions() == Extent2I(4, 5)
        assert b.getArea() == 20
        assert not b.isEmpty()

    def test_accessor_types(self):
        b = box(2, 3, 4, 5)
        assert isinstance(b.getMin(), Point2I)
        assert isinstance(b.getEnd(), Point2I)
        assert isinstance(b.getDimensions(), Extent2I)
        for v in (b.getMinX(), b.getMaxY(), b.getEndX(), b.getWidth(), b.getArea()):
            assert type(v) is int

    def test_properties_match_getters(self):
        b = box(-1, 4, 3, 2)
        assert (b.minX, b.minY, b.maxX, b.maxY) == (-1, 4, 1, 5)
        assert (b.beginX, b.beginY, b.endX, b.endY) == (-1, 4, 2, 6)
        assert (b.width, b.height) == (3, 2)

    def test_min_max_constructor(self):
        b = Box2I(Point2I(2, 3), Point2I(5, 7))
        assert b == box(2, 3, 4, 5)
        assert b.getArea() == 20

    def test_min_max_constructor_single_pixel(self):
        b = Box2I(Point2I(4, 4), Point2I(4, 4))
        assert b.getDimensions() == Extent2I(1, 1)
        assert b.getArea() == 1
        assert not b.isEmpty()

    def test_min_max_constructor_inverts_swapped_corners(self):
        # lsst.geom.Box2I(min, max, invert=True) swaps out-of-order corners.
        assert Box2I(Point2I(5, 7), Point2I(2, 3)) == box(2, 3, 4, 5)
        assert Box2I(Point2I(5, 3), Point2I(2, 7)) == box(2, 3, 4, 5)

    def test_negative_coordinates(self):
        b = box(-10, -20, 5, 6)
        assert corners(b) == (-10, -20, -6, -15)
        assert b.getEnd() == Point2I(-5, -14)
        assert b.getArea() == 30

    def test_copy_constructor_is_independent(self):
        a = box(1, 1, 3, 3)
        b = Box2I(a)
        assert b == a and b is not a
        b.grow(1)
        assert a == box(1, 1, 3, 3)

    def test_from_slices(self):
        assert Box2I.from_slices(2, 3, 4, 5) == box(2, 3, 4, 5)

    def test_numpy_integer_inputs(self):
        b = Box2I(Point2I(np.int64(2), np.int32(3)), Extent2I(np.int64(4), np.uint16(5)))
        assert b == box(2, 3, 4, 5)
        assert all(type(v) is int for v in corners(b))
        assert hash(b) == hash(box(2, 3, 4, 5))
        b.grow(np.int64(1))
        assert b == box(1, 2, 6, 7)
        b.shift(Extent2I(np.int8(-1), np.int8(2)))
        assert b == box(0, 4, 6, 7)

    def test_center(self):
        assert box(0, 0, 4, 2).getCenter() == Point2D(1.5, 0.5)
        assert box(2, 3, 1, 1).getCenter() == Point2D(2.0, 3.0)

    def test_corners_order_as_lsst_geom(self):
        assert box(2, 3, 4, 5).getCorners() == [Point2I(2, 3), Point2I(5, 3), Point2I(5, 7), Point2I(2, 7)]
        assert all(isinstance(c, Point2I) for c in box(0, 0, 2, 2).getCorners())

    def test_slices_match_numpy(self):
        b = box(2, 3, 4, 5)
        assert b.slices() == (slice(3, 8), slice(2, 6))
        assert b.slices(Point2I(1, 1)) == (slice(2, 7), slice(1, 5))
        arr = np.arange(100).reshape(10, 10)
        assert arr[b.slices()].shape == (5, 4)
        assert arr[b.slices()][0, 0] == arr[3, 2]

    def test_repr_and_str(self):
        b = box(2, 3, 4, 5)
        assert repr(b) == "Box2I(minimum=Point2I(2, 3), dimensions=Extent2I(4, 5))"
        assert str(b) == "(minimum=(2, 3), maximum=(5, 7))"
        assert repr(Box2I()) == "Box2I()"

    @pytest.mark.parametrize(
        "args",
        [
            (Point2I(0, 0),),
            (None, Extent2I(2, 2)),
            (Point2I(0, 0), (3, 3)),
            (Point2I(0, 0), 4),
        ],
    )
    def test_bad_constructor_arguments(self, args):
        with pytest.raises(TypeError):
            Box2I(*args)


# -- Box2I: empty boxes --------------------------------------------------------------------------


class TestEmptyBox:
    @pytest.mark.parametrize(
        "empty",
        [
            Box2I(),
            box(2, 3, 0, 5),
            box(2, 3, 4, 0),
            box(2, 3, -1, -1),
            box(10, 10, 0, 0),
        ],
        ids=["default", "zero-width", "zero-height", "negative", "zero-elsewhere"],
    )
    def test_empty_box_behaviour(self, empty):
        assert empty.isEmpty()
        assert empty.getArea() == 0
        assert empty.getWidth() == 0 and empty.getHeight() == 0
        assert empty.getDimensions() == Extent2I(0, 0)
        assert empty == Box2I()
        assert hash(empty) == hash(Box2I())
        assert str(empty) == "(empty box)"

    def test_all_empty_boxes_equal(self):
        a, b = box(0, 0, 0, 3), box(100, -50, 7, 0)
        assert a == b
        assert not (a != b)
        assert len({a, b, Box2I()}) == 1
        assert a != box(0, 0, 1, 1)

    def test_empty_contains_nothing(self):
        e = Box2I()
        assert not e.contains(Point2I(0, 0))
        assert not e.contains(Point2I(-1, -1))
        assert not e.contains(box(0, 0, 1, 1))

    def test_every_box_contains_empty(self):
        assert box(0, 0, 3, 3).contains(Box2I())
        assert box(100, 100, 1, 1).contains(box(0, 0, 0, 0))
        assert Box2I().contains(Box2I())

    def test_empty_overlaps_nothing(self):
        assert not Box2I().overlaps(box(0, 0, 5, 5))
        assert not box(0, 0, 5, 5).overlaps(Box2I())
        assert not Box2I().overlaps(Box2I())

    def test_grow_of_empty_stays_empty(self):
        e = Box2I()
        e.grow(3)
        assert e.isEmpty() and e == Box2I()
        e.grow(Extent2I(2, 5))
        assert e.isEmpty()

    def test_shift_of_empty_stays_empty(self):
        e = Box2I()
        e.shift(Extent2I(4, 4))
        assert e.isEmpty()
        assert not e.contains(Point2I(4, 4))

    def test_grow_negative_to_empty(self):
        b = box(0, 0, 4, 4)
        b.grow(-2)
        assert b.isEmpty() and b.getArea() == 0 and b == Box2I()
        b = box(0, 0, 4, 10)
        b.grow(Extent2I(-2, 1))
        assert b.isEmpty()


# -- Box2I: predicates ---------------------------------------------------------------------------


class TestContainsOverlaps:
    @pytest.mark.parametrize(
        ("point", "inside"),
        [
            ((2, 3), True),  # min corner
            ((5, 7), True),  # max corner (inclusive)
            ((3, 5), True),
            ((6, 7), False),  # end x is exclusive
            ((5, 8), False),  # end y is exclusive
            ((1, 3), False),
            ((2, 2), False),
        ],
    )
    def test_contains_point(self, point, inside):
        assert box(2, 3, 4, 5).contains(Point2I(*point)) is inside

    @pytest.mark.parametrize(
        ("other", "inside"),
        [
            (box(2, 3, 4, 5), True),  # itself
            (box(3, 4, 2, 2), True),
            (box(5, 7, 1, 1), True),  # max pixel
            (box(2, 3, 5, 5), False),  # one column past the right edge
            (box(1, 3, 2, 2), False),  # straddles the left edge
            (box(10, 10, 2, 2), False),  # disjoint
            (box(0, 0, 20, 20), False),  # larger
        ],
    )
    def test_contains_box(self, other, inside):
        assert box(2, 3, 4, 5).contains(other) is inside

    @pytest.mark.parametrize(
        ("other", "overlap"),
        [
            (box(0, 0, 4, 4), True),  # itself
            (box(3, 3, 4, 4), True),  # shares the single pixel (3, 3)
            (box(4, 0, 2, 4), False),  # touches the right edge: no shared pixel
            (box(0, 4, 4, 2), False),  # touches the top edge
            (box(-2, 0, 2, 4), False),  # touches the left edge
            (box(0, -3, 4, 3), False),  # touches the bottom edge
            (box(4, 4, 2, 2), False),  # touches diagonally
            (box(1, 1, 2, 2), True),  # inside
            (box(-5, -5, 20, 20), True),  # encloses
            (box(3, -5, 1, 20), True),  # crosses through a column
        ],
    )
    def test_overlaps(self, other, overlap):
        b = box(0, 0, 4, 4)
        assert b.overlaps(other) is overlap
        assert other.overlaps(b) is overlap  # symmetric


# -- Box2I: in-place operations ------------------------------------------------------------------


class TestInPlaceOperations:
    def test_grow_by_int(self):
        b = box(2, 3, 4, 5)
        assert b.grow(2) is None
        assert b == Box2I(Point2I(0, 1), Point2I(7, 9))
        assert b.getDimensions() == Extent2I(8, 9)

    def test_grow_by_extent(self):
        b = box(2, 3, 4, 5)
        b.grow(Extent2I(1, 3))
        assert corners(b) == (1, 0, 6, 10)
        assert b.getDimensions() == Extent2I(6, 11)

    def test_grow_negative_shrinks(self):
        b = box(0, 0, 10, 8)
        b.grow(-1)
        assert b == box(1, 1, 8, 6)

    def test_shift(self):
        b = box(2, 3, 4, 5)
        assert b.shift(Extent2I(-2, 10)) is None
        assert b == box(0, 13, 4, 5)
        assert b.getDimensions() == Extent2I(4, 5)

    def test_clip_overlapping(self):
        b = box(0, 0, 10, 10)
        assert b.clip(box(5, -3, 10, 6)) is None
        assert b == Box2I(Point2I(5, 0), Point2I(9, 2))

    def test_clip_contained_and_containing(self):
        b = box(0, 0, 10, 10)
        b.clip(box(-5, -5, 30, 30))
        assert b == box(0, 0, 10, 10)
        b.clip(box(2, 3, 1, 1))
        assert b == box(2, 3, 1, 1)

    @pytest.mark.parametrize("other", [box(20, 20, 3, 3), box(10, 0, 3, 3), Box2I()])
    def test_clip_disjoint_gives_empty(self, other):
        b = box(0, 0, 10, 10)
        b.clip(other)
        assert b.isEmpty() and b.getArea() == 0 and b == Box2I()

    def test_clip_touching_edge_gives_empty(self):
        b = box(0, 0, 4, 4)
        b.clip(box(4, 0, 4, 4))
        assert b.isEmpty()

    def test_include_point(self):
        b = box(2, 3, 4, 5)
        assert b.include(Point2I(10, 0)) is None
        assert corners(b) == (2, 0, 10, 7)
        b.include(Point2I(4, 4))  # already inside: unchanged
        assert corners(b) == (2, 0, 10, 7)

    def test_include_box(self):
        b = box(0, 0, 2, 2)
        b.include(box(5, -1, 2, 2))
        assert corners(b) == (0, -1, 6, 1)
        b.include(Box2I())  # empty: unchanged
        assert corners(b) == (0, -1, 6, 1)

    def test_include_point_into_empty(self):
        b = Box2I()
        b.include(Point2I(3, 4))
        assert not b.isEmpty()
        assert b == box(3, 4, 1, 1)
        assert b.getArea() == 1

    def test_include_box_into_empty(self):
        b = Box2I()
        b.include(box(-3, 2, 5, 6))
        assert b == box(-3, 2, 5, 6)

    def test_pure_helpers_do_not_mutate(self):
        b = box(0, 0, 10, 10)
        assert b.clipped_to(box(5, 5, 10, 10)) == box(5, 5, 5, 5)
        assert b.grown(1) == box(-1, -1, 12, 12)
        assert b.grown(1, 2) == box(-1, -2, 12, 14)
        assert b == box(0, 0, 10, 10)


# -- Box2I: value semantics -----------------------------------------------------------------------


class TestBoxValueSemantics:
    def test_equality(self):
        assert box(2, 3, 4, 5) == box(2, 3, 4, 5)
        assert box(2, 3, 4, 5) != box(2, 3, 4, 6)
        assert box(2, 3, 4, 5) != box(3, 3, 4, 5)
        assert box(2, 3, 4, 5) != (2, 3, 4, 5)
        assert not (box(2, 3, 4, 5) == "box")

    def test_hash_in_set_and_dict(self):
        boxes = {box(0, 0, 2, 2), box(0, 0, 2, 2), Box2I(Point2I(0, 0), Point2I(1, 1)), box(1, 0, 2, 2)}
        assert len(boxes) == 2
        lookup = {box(2, 3, 4, 5): "cell"}
        assert lookup[Box2I(Point2I(2, 3), Point2I(5, 7))] == "cell"
        assert box(2, 3, 4, 6) not in lookup

    @pytest.mark.parametrize("b", [box(2, 3, 4, 5), box(-7, 0, 1, 9), Box2I()])
    @pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
    def test_pickle_round_trip(self, b, protocol):
        back = pickle.loads(pickle.dumps(b, protocol=protocol))
        assert type(back) is Box2I
        assert back == b and hash(back) == hash(b)
        assert corners(back) == corners(b)
        assert back.isEmpty() == b.isEmpty()

    def test_copy_and_deepcopy(self):
        b = box(2, 3, 4, 5)
        for c in (copy.copy(b), copy.deepcopy(b)):
            assert c == b and c is not b
            c.shift(Extent2I(1, 1))
            assert b == box(2, 3, 4, 5)

    def test_hash_follows_mutation(self):
        b = box(0, 0, 2, 2)
        b.shift(Extent2I(1, 0))
        assert b == box(1, 0, 2, 2) and b != box(0, 0, 2, 2)
        assert hash(b) == hash(box(1, 0, 2, 2))
