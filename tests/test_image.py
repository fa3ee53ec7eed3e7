"""Tests for `imagemapreduce.image`: Image, Mask, MaskedImage and Exposure with afw semantics."""

# ruff: noqa: D101, D102, D103

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imagemapreduce.geom import Box2I, Extent2I, Point2I
from imagemapreduce.image import (
    DEFAULT_MASK_PLANES,
    Exposure,
    ExposureD,
    ExposureF,
    Image,
    ImageD,
    ImageF,
    ImageI,
    ImageU,
    Mask,
    MaskedImage,
    MaskedImageD,
    MaskedImageF,
    MaskX,
)


def box(x0: int, y0: int, w: int, h: int) -> Box2I:
    """Shorthand: the box with minimum ``(x0, y0)`` and dimensions ``(w, h)``."""
    return Box2I(Point2I(x0, y0), Extent2I(w, h))


#: A parent whose xy0 is not the origin, so parent and array coordinates differ.
PARENT_BOX = box(10, 20, 8, 6)  # x 10..17, y 20..25


def ramp(bbox: Box2I, dtype=np.float32) -> np.ndarray:
    """Return an array whose pixel value encodes its parent position: ``1000 * y + x``."""
    y, x = np.mgrid[bbox.getBeginY() : bbox.getEndY(), bbox.getBeginX() : bbox.getEndX()]
    return (1000 * y + x).astype(dtype)


def ramp_image(cls=ImageF, bbox: Box2I = PARENT_BOX) -> Image:
    img = cls(bbox)
    img.array[...] = ramp(bbox, img.dtype)
    return img


class _FakePsf:
    """A stand-in PSF: Exposure only carries it."""

    def __init__(self, sigma: float):
        self.sigma = sigma


#: Boxes that no view of PARENT_BOX may be made from, with the error each must raise.
BAD_SUBBOXES = [
    pytest.param(ValueError, box(0, 0, 3, 3), id="disjoint-below-origin"),
    pytest.param(ValueError, box(100, 100, 2, 2), id="disjoint-far"),
    pytest.param(ValueError, box(9, 20, 3, 3), id="one-column-left"),
    pytest.param(ValueError, box(16, 20, 3, 3), id="one-column-right"),
    pytest.param(ValueError, box(10, 19, 2, 2), id="one-row-below"),
    pytest.param(ValueError, box(10, 24, 2, 3), id="one-row-above"),
    pytest.param(ValueError, box(9, 19, 10, 8), id="encloses-parent"),
    pytest.param(ValueError, box(0, 0, 8, 6), id="array-coordinates-not-parent"),
    pytest.param(ValueError, Box2I(), id="empty-default"),
    pytest.param(ValueError, box(12, 22, 0, 2), id="empty-zero-width"),
    pytest.param(TypeError, (10, 20, 2, 2), id="not-a-box"),
]


# -- Image -----------------------------------------------------------------------------------------


class TestImage:
    @pytest.mark.parametrize(
        ("cls", "dtype"),
        [
            (ImageF, np.float32),
            (ImageD, np.float64),
            (ImageI, np.int32),
            (ImageU, np.uint16),
            (Mask, np.int32),
            (MaskX, np.int32),
            (Image, np.float32),
        ],
    )
    def test_dtype_per_class(self, cls, dtype):
        img = cls(3, 2)
        assert img.array.dtype == np.dtype(dtype)
        assert img.dtype == np.dtype(dtype)
        assert img.clone().dtype == np.dtype(dtype)
        assert img[box(0, 0, 1, 1)].dtype == np.dtype(dtype)

    def test_width_height_constructor(self):
        img = ImageF(4, 3)
        assert img.array.shape == (3, 4)  # rows = y
        assert (img.getWidth(), img.getHeight()) == (4, 3)
        assert img.getDimensions() == Extent2I(4, 3)
        assert img.getXY0() == Point2I(0, 0)
        assert img.getBBox() == box(0, 0, 4, 3)
        assert np.all(img.array == 0)

    def test_numpy_integer_size(self):
        img = ImageD(np.int64(5), np.int32(2))
        assert img.array.shape == (2, 5)

    def test_extent_constructor_with_xy0(self):
        img = ImageD(Extent2I(5, 2), xy0=Point2I(-3, 7))
        assert img.array.shape == (2, 5)
        assert img.getBBox() == box(-3, 7, 5, 2)
        assert (img.getX0(), img.getY0()) == (-3, 7)

    def test_bbox_constructor(self):
        img = ImageF(PARENT_BOX)
        assert img.getXY0() == Point2I(10, 20)
        assert img.getBBox() == PARENT_BOX
        assert img.array.shape == (6, 8)

    def test_wrap_array_without_copy(self):
        arr = np.arange(12, dtype=np.float32).reshape(3, 4)
        img = ImageF(arr, xy0=Point2I(1, 2))
        assert img.array is arr
        assert img.getBBox() == box(1, 2, 4, 3)
        img.array[0, 0] = 99
        assert arr[0, 0] == 99

    def test_wrap_array_deep(self):
        arr = np.ones((2, 2))
        img = ImageD(arr, deep=True)
        assert not np.shares_memory(img.array, arr)
        np.testing.assert_array_equal(img.array, arr)

    def test_wrap_non_2d_array_fails(self):
        with pytest.raises(ValueError, match="2-d"):
            ImageF(np.zeros(5, np.float32))

    def test_negative_size_fails(self):
        with pytest.raises(ValueError, match=">= 0"):
            ImageF(-1, 3)

    def test_bad_arguments(self):
        with pytest.raises(TypeError):
            ImageF("3", "4")

    def test_set_xy0(self):
        img = ImageF(3, 3)
        img.setXY0(Point2I(5, 6))
        assert img.getBBox() == box(5, 6, 3, 3)

    def test_view_shares_memory_and_pixels(self):
        parent = ramp_image()
        sub = box(12, 21, 3, 4)
        view = parent[sub]
        assert type(view) is ImageF
        assert view.getXY0() == Point2I(12, 21)
        assert view.getBBox() == sub
        assert view.array.shape == (4, 3)
        # Parent coordinates: array[y - y0, x - x0].
        np.testing.assert_array_equal(view.array, parent.array[1:5, 2:5])
        assert view.array[0, 0] == 1000 * 21 + 12
        assert view.array[-1, -1] == 1000 * 24 + 14
        assert np.shares_memory(view.array, parent.array)
        view.array[...] = -1
        assert np.all(parent.array[1:5, 2:5] == -1)
        assert parent.array[0, 0] == 1000 * 20 + 10  # outside the view: untouched

    def test_factory_and_subset_make_the_same_view(self):
        parent = ramp_image(ImageD)
        sub = box(11, 22, 2, 2)
        for view in (parent.Factory(parent, sub), ImageD.Factory(parent, sub), parent.subset(sub)):
            assert type(view) is ImageD
            assert view.getBBox() == sub
            np.testing.assert_array_equal(view.array, parent[sub].array)
            assert np.shares_memory(view.array, parent.array)

    def test_deep_view_is_a_copy(self):
        parent = ramp_image()
        sub = box(12, 21, 3, 4)
        copy = ImageF(parent, sub, deep=True)
        np.testing.assert_array_equal(copy.array, parent[sub].array)
        assert not np.shares_memory(copy.array, parent.array)
        assert copy.getXY0() == Point2I(12, 21)

    def test_whole_parent_view(self):
        parent = ramp_image()
        view = parent[PARENT_BOX]
        np.testing.assert_array_equal(view.array, parent.array)
        assert np.shares_memory(view.array, parent.array)

    def test_single_pixel_views_at_corners(self):
        parent = ramp_image()
        for corner in PARENT_BOX.getCorners():
            view = parent[Box2I(corner, Extent2I(1, 1))]
            assert view.array.shape == (1, 1)
            assert view.array[0, 0] == 1000 * corner.y + corner.x

    def test_nested_views(self):
        parent = ramp_image()
        outer = parent[box(11, 21, 6, 4)]
        inner = outer[box(13, 22, 2, 2)]  # still parent coordinates
        assert inner.getXY0() == Point2I(13, 22)
        np.testing.assert_array_equal(inner.array, parent.array[2:4, 3:5])
        np.testing.assert_array_equal(inner.array, parent[box(13, 22, 2, 2)].array)
        inner.array[...] = 7
        assert np.all(parent.array[2:4, 3:5] == 7)
        assert np.all(outer.array[1:3, 2:4] == 7)

    def test_nested_view_outside_the_view_fails(self):
        parent = ramp_image()
        outer = parent[box(11, 21, 3, 3)]
        with pytest.raises(ValueError, match="not contained"):
            outer[box(10, 20, 2, 2)]  # inside the parent but not inside the view

    def test_clone_is_deep(self):
        parent = ramp_image()
        clone = parent.clone()
        assert type(clone) is ImageF
        assert clone.getBBox() == parent.getBBox()
        np.testing.assert_array_equal(clone.array, parent.array)
        assert not np.shares_memory(clone.array, parent.array)
        clone.array[...] = 0
        assert parent.array[0, 0] == 1000 * 20 + 10

    def test_clone_of_view_keeps_xy0(self):
        parent = ramp_image()
        clone = parent[box(12, 21, 2, 2)].clone()
        assert clone.getXY0() == Point2I(12, 21)
        assert not np.shares_memory(clone.array, parent.array)
        np.testing.assert_array_equal(clone.array, parent.array[1:3, 2:4])

    @pytest.mark.parametrize(("exc", "bad"), BAD_SUBBOXES)
    def test_bad_view_boxes(self, exc, bad):
        parent = ramp_image()
        with pytest.raises(exc):
            parent[bad]
        if isinstance(bad, Box2I):
            with pytest.raises(exc):
                parent.Factory(parent, bad)

    def test_error_message_names_the_boxes(self):
        parent = ramp_image()
        with pytest.raises(ValueError, match="not contained") as info:
            parent[box(0, 0, 3, 3)]
        assert str(PARENT_BOX) in str(info.value)
        with pytest.raises(ValueError, match="empty"):
            parent[Box2I()]

    def test_setitem_writes_into_box(self):
        parent = ImageF(PARENT_BOX)
        parent[box(11, 21, 2, 3)] = 5.0
        assert parent.array.sum() == 5.0 * 6
        assert np.all(parent.array[1:4, 1:3] == 5)
        src = ImageF(box(0, 0, 2, 3))
        src.array[...] = 2.0
        parent[box(14, 22, 2, 3)] = src
        assert np.all(parent.array[2:5, 4:6] == 2)

    def test_set(self):
        img = ImageD(3, 3)
        img.set(4.5)
        assert np.all(img.array == 4.5)

    def test_inplace_arithmetic(self):
        a = ImageD(2, 2)
        a.set(3.0)
        b = ImageD(box(5, 5, 2, 2))  # only dimensions need match, as in afw
        b.set(2.0)
        a += b
        assert np.all(a.array == 5.0)
        a -= 1
        assert np.all(a.array == 4.0)
        a *= b
        assert np.all(a.array == 8.0)
        a /= 4
        assert np.all(a.array == 2.0)

    @pytest.mark.parametrize("op", ["__iadd__", "__isub__", "__imul__", "__itruediv__"])
    def test_inplace_arithmetic_dimension_mismatch(self, op):
        a, b = ImageD(4, 4), ImageD(4, 1)
        b.set(1.0)
        with pytest.raises(ValueError, match="dimensions"):
            getattr(a, op)(b)
        assert np.all(a.array == 0)  # nothing was broadcast into it


# -- Mask ------------------------------------------------------------------------------------------


class TestMask:
    def test_default_planes_order_and_bits(self):
        expected = [
            "BAD",
            "SAT",
            "INTRP",
            "CR",
            "EDGE",
            "DETECTED",
            "DETECTED_NEGATIVE",
            "SUSPECT",
            "NO_DATA",
        ]
        assert list(DEFAULT_MASK_PLANES) == expected
        mask = Mask(2, 2)
        planes = mask.getMaskPlaneDict()
        assert planes == {name: bit for bit, name in enumerate(expected)}
        assert list(planes) == expected  # insertion order = bit order
        assert mask.getNumPlanesUsed() == 9
        for bit, name in enumerate(expected):
            assert mask.getMaskPlane(name) == bit
            assert mask.getPlaneBitMask(name) == 1 << bit
        assert mask.getPlaneBitMask("BAD") == 1
        assert mask.getPlaneBitMask("DETECTED") == 32
        assert mask.getPlaneBitMask("NO_DATA") == 256

    def test_get_plane_bit_mask_of_list(self):
        mask = Mask(1, 1)
        assert mask.getPlaneBitMask(["BAD", "SAT", "CR"]) == 0b1011
        assert mask.getPlaneBitMask(("EDGE", "NO_DATA")) == (1 << 4) | (1 << 8)
        assert mask.getPlaneBitMask([]) == 0
        assert mask.getPlaneBitMask(["BAD", "BAD"]) == 1

    def test_add_mask_plane_returns_next_free_bit_and_is_idempotent(self):
        mask = Mask(2, 2)
        assert mask.addMaskPlane("STREAK") == 9
        assert mask.addMaskPlane("STREAK") == 9
        assert mask.addMaskPlane("CR") == 3  # existing plane: its bit
        assert mask.addMaskPlane("GHOST") == 10
        assert mask.getMaskPlane("STREAK") == 9
        assert mask.getPlaneBitMask("GHOST") == 1 << 10
        assert mask.getNumPlanesUsed() == 11

    def test_add_reuses_removed_bit(self):
        mask = Mask(1, 1)
        mask.removeMaskPlane("SAT")
        with pytest.raises(KeyError):
            mask.getMaskPlane("SAT")
        assert mask.addMaskPlane("NEW") == 1

    def test_too_many_planes(self):
        mask = Mask(1, 1)
        for i in range(32 - 9):
            assert mask.addMaskPlane(f"P{i}") == 9 + i
        with pytest.raises(RuntimeError, match="32"):
            mask.addMaskPlane("ONE_TOO_MANY")

    def test_unknown_plane_raises_keyerror_mentioning_add_mask_plane(self):
        mask = Mask(1, 1)
        with pytest.raises(KeyError, match="addMaskPlane"):
            mask.getMaskPlane("NOPE")
        with pytest.raises(KeyError, match="NOPE"):
            mask.getPlaneBitMask(["BAD", "NOPE"])
        with pytest.raises(KeyError):
            mask.removeMaskPlane("NOPE")

    def test_plane_dict_returned_is_a_copy(self):
        mask = Mask(1, 1)
        d = mask.getMaskPlaneDict()
        d["HACK"] = 20
        assert "HACK" not in mask.getMaskPlaneDict()

    def test_masks_do_not_share_planes_by_default(self):
        a, b = Mask(1, 1), Mask(1, 1)
        a.addMaskPlane("ONLY_A")
        assert "ONLY_A" not in b.getMaskPlaneDict()

    def test_view_shares_plane_dict_with_parent(self):
        parent = Mask(PARENT_BOX)
        view = parent[box(11, 21, 2, 2)]
        assert type(view) is Mask
        assert view.addMaskPlane("FROM_VIEW") == 9
        assert parent.getMaskPlane("FROM_VIEW") == 9
        assert parent.addMaskPlane("FROM_PARENT") == 10
        assert view.getMaskPlane("FROM_PARENT") == 10
        nested = view[box(11, 21, 1, 1)]
        assert nested.getMaskPlaneDict() == parent.getMaskPlaneDict()

    def test_view_shares_pixels(self):
        parent = Mask(PARENT_BOX)
        view = parent[box(12, 22, 2, 2)]
        view.array |= parent.getPlaneBitMask("CR")
        assert parent.array.sum() == 4 * 8
        assert np.all(parent.array[2:4, 2:4] == 8)

    def test_clone_copies_plane_dict(self):
        parent = Mask(PARENT_BOX)
        parent.array[0, 0] = 5
        clone = parent.clone()
        assert clone.getMaskPlaneDict() == parent.getMaskPlaneDict()
        assert clone.getBBox() == PARENT_BOX
        assert clone.array[0, 0] == 5 and clone.dtype == np.int32
        assert not np.shares_memory(clone.array, parent.array)
        assert clone.addMaskPlane("CLONE_ONLY") == 9
        assert "CLONE_ONLY" not in parent.getMaskPlaneDict()
        assert parent.addMaskPlane("PARENT_ONLY") == 9
        assert clone.getMaskPlaneDict()["CLONE_ONLY"] == 9
        assert "PARENT_ONLY" not in clone.getMaskPlaneDict()

    def test_explicit_plane_dict(self):
        mask = Mask(1, 1, planeDict={"A": 0, "B": 3})
        assert mask.getPlaneBitMask(["A", "B"]) == 0b1001
        assert mask.addMaskPlane("C") == 1

    @pytest.mark.parametrize("planes", [{"A": 0, "B": 0}, {"A": 32}, {"A": -1}])
    def test_bad_plane_dict(self, planes):
        with pytest.raises(ValueError):
            Mask(1, 1, planeDict=planes)

    def test_mask_rejects_float_pixels(self):
        with pytest.raises(TypeError, match="integer"):
            Mask(np.zeros((2, 2), np.float32))

    def test_or_and(self):
        mask = Mask(2, 1)
        mask |= 0b0101
        assert np.all(mask.array == 5)
        other = Mask(2, 1)
        other.array[0, 1] = 0b1000
        mask |= other
        assert mask.array.tolist() == [[5, 13]]
        mask &= 0b1100
        assert mask.array.tolist() == [[4, 12]]


# -- MaskedImage -----------------------------------------------------------------------------------


def filled(cls=MaskedImageF, bbox: Box2I | None = None, value=0.0, mask=0, variance=0.0) -> MaskedImage:
    mi = cls(box(0, 0, 3, 2) if bbox is None else bbox)
    mi.set(value, mask, variance)
    return mi


class TestMaskedImage:
    @pytest.mark.parametrize(("cls", "dtype"), [(MaskedImageF, np.float32), (MaskedImageD, np.float64)])
    def test_constructor_dtypes(self, cls, dtype):
        mi = cls(4, 3)
        assert mi.image.dtype == dtype and mi.variance.dtype == dtype
        assert mi.mask.dtype == np.int32
        assert mi.dtype == dtype
        assert mi.getDimensions() == Extent2I(4, 3)
        assert (mi.getWidth(), mi.getHeight()) == (4, 3)
        for plane in (mi.image, mi.mask, mi.variance):
            assert plane.array.shape == (3, 4)
            assert np.all(plane.array == 0)
        assert mi.getImage() is mi.image and mi.getMask() is mi.mask and mi.getVariance() is mi.variance

    def test_bbox_constructor(self):
        mi = MaskedImageF(PARENT_BOX)
        assert mi.getBBox() == PARENT_BOX
        assert mi.getXY0() == Point2I(10, 20)
        assert mi.mask.getBBox() == mi.variance.getBBox() == PARENT_BOX

    def test_from_planes(self):
        image = ramp_image()
        mi = MaskedImageF(image)
        assert mi.image is image
        assert mi.mask.getBBox() == mi.variance.getBBox() == PARENT_BOX
        assert mi.variance.dtype == image.dtype
        mask, var = Mask(PARENT_BOX), ImageF(PARENT_BOX)
        mi2 = MaskedImageF(image, mask, var)
        assert mi2.mask is mask and mi2.variance is var
        mi3 = MaskedImageF(image, mask=mask, variance=var)
        assert mi3.mask is mask and mi3.variance is var

    def test_from_planes_deep(self):
        image = ramp_image()
        mi = MaskedImageF(image, deep=True)
        assert not np.shares_memory(mi.image.array, image.array)
        np.testing.assert_array_equal(mi.image.array, image.array)

    @pytest.mark.parametrize(
        ("mask_box", "var_box"),
        [
            (box(10, 20, 8, 5), PARENT_BOX),  # mask one row short
            (PARENT_BOX, box(11, 20, 8, 6)),  # variance shifted
            (box(0, 0, 8, 6), box(0, 0, 8, 6)),  # right size, wrong xy0
        ],
    )
    def test_mismatched_plane_boxes(self, mask_box, var_box):
        with pytest.raises(ValueError, match="share one bbox"):
            MaskedImageF(ImageF(PARENT_BOX), Mask(mask_box), ImageF(var_box))

    def test_mask_plane_must_be_a_mask(self):
        with pytest.raises(TypeError, match="Mask"):
            MaskedImageF(ImageF(2, 2), ImageF(2, 2), ImageF(2, 2))

    def test_set_scalar_zeroes_mask_and_variance(self):
        mi = filled(value=1.0, mask=3, variance=2.0)
        mi.set(7.5)
        assert np.all(mi.image.array == 7.5)
        assert np.all(mi.mask.array == 0)
        assert np.all(mi.variance.array == 0)

    def test_set_tuple(self):
        mi = MaskedImageF(3, 2)
        mi.set((2.0, 0x5, 4.0))
        assert np.all(mi.image.array == 2.0)
        assert np.all(mi.mask.array == 5)
        assert np.all(mi.variance.array == 4.0)
        mi.set(1.0, 2, 3.0)
        assert (mi.image.array[0, 0], mi.mask.array[0, 0], mi.variance.array[0, 0]) == (1.0, 2, 3.0)

    def test_scalar_add_sub_touch_image_only(self):
        mi = filled(value=1.0, mask=4, variance=2.0)
        mi += 3
        assert np.all(mi.image.array == 4.0)
        assert np.all(mi.variance.array == 2.0) and np.all(mi.mask.array == 4)
        mi -= 1.5
        assert np.all(mi.image.array == 2.5)
        assert np.all(mi.variance.array == 2.0) and np.all(mi.mask.array == 4)

    def test_scalar_multiply_scales_variance_by_square(self):
        mi = filled(value=2.0, mask=1, variance=3.0)
        mi *= 3
        assert np.all(mi.image.array == 6.0)
        assert np.all(mi.variance.array == 27.0)
        assert np.all(mi.mask.array == 1)
        mi *= np.float32(-0.5)
        assert np.all(mi.image.array == -3.0)
        assert np.all(mi.variance.array == 6.75)

    def test_scalar_divide_scales_variance_by_square(self):
        mi = filled(value=8.0, variance=16.0)
        mi /= 2
        assert np.all(mi.image.array == 4.0)
        assert np.all(mi.variance.array == 4.0)

    def test_multiply_by_non_scalar_fails(self):
        mi = filled()
        with pytest.raises(TypeError, match="scalar"):
            mi *= np.ones((2, 3))
        with pytest.raises(TypeError, match="scalar"):
            mi /= filled()

    def test_add_masked_image(self):
        a = filled(value=1.0, mask=0b0001, variance=2.0)
        b = filled(value=10.0, mask=0b0110, variance=5.0)
        b.mask.array[0, 0] = 0b1000
        a += b
        assert np.all(a.image.array == 11.0)
        assert np.all(a.variance.array == 7.0)
        expected = np.full((2, 3), 0b0111)
        expected[0, 0] = 0b1001
        np.testing.assert_array_equal(a.mask.array, expected)
        # the operand is untouched
        assert np.all(b.image.array == 10.0) and np.all(b.variance.array == 5.0)

    def test_subtract_masked_image_adds_variance(self):
        a = filled(value=1.0, mask=0b0001, variance=2.0)
        b = filled(value=10.0, mask=0b0100, variance=5.0)
        a -= b
        assert np.all(a.image.array == -9.0)
        assert np.all(a.variance.array == 7.0)
        assert np.all(a.mask.array == 0b0101)

    def test_add_image_touches_image_only(self):
        mi = filled(value=1.0, mask=2, variance=3.0)
        img = ImageF(3, 2)
        img.set(4.0)
        mi += img
        assert np.all(mi.image.array == 5.0)
        assert np.all(mi.variance.array == 3.0) and np.all(mi.mask.array == 2)

    @pytest.mark.parametrize("op", ["__iadd__", "__isub__"])
    def test_arithmetic_dimension_mismatch(self, op):
        a = filled(bbox=box(0, 0, 3, 2))
        b = filled(bbox=box(0, 0, 3, 1), value=1.0, mask=1, variance=1.0)
        with pytest.raises(ValueError, match="dimensions"):
            getattr(a, op)(b)
        assert np.all(a.image.array == 0) and np.all(a.mask.array == 0)

    def test_view_shares_all_planes(self):
        mi = MaskedImageF(PARENT_BOX)
        mi.image.array[...] = ramp(PARENT_BOX)
        sub = box(12, 21, 3, 2)
        for view in (mi[sub], mi.Factory(mi, sub), MaskedImageF.Factory(mi, sub), mi.subset(sub)):
            assert type(view) is MaskedImageF
            assert view.getBBox() == sub and view.getXY0() == Point2I(12, 21)
            assert view.mask.getBBox() == view.variance.getBBox() == sub
            np.testing.assert_array_equal(view.image.array, mi.image.array[1:3, 2:5])
            for vp, pp in ((view.image, mi.image), (view.mask, mi.mask), (view.variance, mi.variance)):
                assert np.shares_memory(vp.array, pp.array)
        view = mi[sub]
        view.set((1.0, 8, 2.0))
        assert mi.image.array.sum() == pytest.approx(ramp(PARENT_BOX).sum() - ramp(sub).sum() + 6.0)
        assert mi.mask.array.sum() == 6 * 8 and mi.variance.array.sum() == 12.0
        view.mask.addMaskPlane("VIEWPLANE")
        assert "VIEWPLANE" in mi.mask.getMaskPlaneDict()

    def test_view_arithmetic_writes_through(self):
        mi = filled(bbox=PARENT_BOX, value=1.0, variance=1.0)
        view = mi[box(10, 20, 2, 2)]
        view *= 2
        assert mi.image.array[0, 0] == 2.0 and mi.variance.array[0, 0] == 4.0
        assert mi.image.array[2, 2] == 1.0 and mi.variance.array[2, 2] == 1.0

    def test_deep_view(self):
        mi = filled(bbox=PARENT_BOX, value=1.0)
        copy = MaskedImageF(mi, box(11, 21, 2, 2), deep=True)
        copy.set(5.0)
        assert np.all(mi.image.array == 1.0)
        assert copy.getXY0() == Point2I(11, 21)

    @pytest.mark.parametrize(("exc", "bad"), BAD_SUBBOXES)
    def test_bad_view_boxes(self, exc, bad):
        with pytest.raises(exc):
            MaskedImageF(PARENT_BOX)[bad]

    def test_clone_is_deep(self):
        mi = filled(bbox=PARENT_BOX, value=1.0, mask=2, variance=3.0)
        mi.mask.addMaskPlane("X")
        clone = mi.clone()
        assert type(clone) is MaskedImageF
        assert clone.getBBox() == PARENT_BOX
        for cp, pp in ((clone.image, mi.image), (clone.mask, mi.mask), (clone.variance, mi.variance)):
            np.testing.assert_array_equal(cp.array, pp.array)
            assert not np.shares_memory(cp.array, pp.array)
        clone.set((0.0, 0, 0.0))
        assert np.all(mi.image.array == 1.0) and np.all(mi.mask.array == 2) and np.all(mi.variance.array == 3)
        clone.mask.addMaskPlane("Y")
        assert "Y" not in mi.mask.getMaskPlaneDict()
        assert clone.mask.getMaskPlane("X") == 9

    def test_set_xy0_moves_all_planes(self):
        mi = MaskedImageF(3, 2)
        mi.setXY0(Point2I(4, 5))
        assert mi.getBBox() == box(4, 5, 3, 2)
        assert mi.image.getXY0() == mi.mask.getXY0() == mi.variance.getXY0() == Point2I(4, 5)
        assert (mi.getX0(), mi.getY0()) == (4, 5)


# -- Exposure --------------------------------------------------------------------------------------


class TestExposure:
    @pytest.mark.parametrize(("cls", "dtype"), [(ExposureF, np.float32), (ExposureD, np.float64)])
    def test_width_height_constructor(self, cls, dtype):
        exp = cls(5, 4)
        assert exp.getWidth() == 5 and exp.getHeight() == 4
        assert exp.getDimensions() == Extent2I(5, 4)
        assert exp.getBBox() == box(0, 0, 5, 4)
        assert exp.getXY0() == Point2I(0, 0)
        assert exp.image.array.shape == exp.mask.array.shape == exp.variance.array.shape == (4, 5)
        assert exp.image.dtype == dtype and exp.variance.dtype == dtype and exp.dtype == dtype
        assert exp.mask.dtype == np.int32
        assert not exp.hasPsf() and exp.getPsf() is None
        assert exp.getWcs() is None and not exp.hasWcs()

    def test_bbox_constructor(self):
        exp = ExposureF(PARENT_BOX)
        assert exp.getBBox() == PARENT_BOX
        assert exp.getXY0() == Point2I(10, 20)
        assert (exp.getX0(), exp.getY0()) == (10, 20)
        assert exp.image.getBBox() == exp.mask.getBBox() == exp.variance.getBBox() == PARENT_BOX

    def test_extent_constructor(self):
        exp = ExposureD(Extent2I(3, 7), xy0=Point2I(1, 1))
        assert exp.getBBox() == box(1, 1, 3, 7)

    def test_from_masked_image_wraps_without_copy(self):
        mi = filled(bbox=PARENT_BOX, value=2.0)
        psf = _FakePsf(1.5)
        exp = ExposureF(mi, psf=psf, wcs="wcs")
        assert exp.maskedImage is mi and exp.getMaskedImage() is mi
        assert exp.image is mi.image and exp.mask is mi.mask and exp.variance is mi.variance
        assert exp.getImage() is mi.image and exp.getMask() is mi.mask and exp.getVariance() is mi.variance
        assert exp.getPsf() is psf and exp.hasPsf() and exp.psf is psf
        assert exp.getWcs() == "wcs" and exp.wcs == "wcs"
        deep = ExposureF(mi, deep=True)
        assert not np.shares_memory(deep.image.array, mi.image.array)

    def test_bad_arguments(self):
        with pytest.raises(TypeError):
            ExposureF("nope")
        with pytest.raises(TypeError):
            ExposureF(ImageF(2, 2))

    def test_set_psf_and_wcs(self):
        exp = ExposureF(2, 2)
        psf = _FakePsf(2.0)
        exp.setPsf(psf)
        exp.setWcs({"CRPIX1": 1})
        assert exp.hasPsf() and exp.getPsf() is psf
        assert exp.getWcs() == {"CRPIX1": 1}
        exp.setPsf(None)
        assert not exp.hasPsf()

    def test_set_masked_image(self):
        exp = ExposureF(2, 2)
        mi = MaskedImageF(PARENT_BOX)
        exp.setMaskedImage(mi)
        assert exp.getBBox() == PARENT_BOX

    def _parent(self) -> Exposure:
        exp = ExposureF(PARENT_BOX, psf=_FakePsf(2.0), wcs=object())
        exp.image.array[...] = ramp(PARENT_BOX)
        exp.variance.array[...] = 1.0
        return exp

    def test_factory_view_shares_pixels_psf_and_wcs(self):
        parent = self._parent()
        sub = box(12, 21, 4, 3)
        views = [
            parent.Factory(parent, sub),
            ExposureF.Factory(parent, sub),
            parent[sub],
            parent.subset(sub),
            ExposureF(parent, sub),
        ]
        for view in views:
            assert type(view) is ExposureF
            assert view.getBBox() == sub
            assert view.getXY0() == Point2I(12, 21)
            assert view.getPsf() is parent.getPsf()
            assert view.getWcs() is parent.getWcs()
            np.testing.assert_array_equal(view.image.array, parent.image.array[1:4, 2:6])
            assert view.image.array[0, 0] == 1000 * 21 + 12
            for plane in ("image", "mask", "variance"):
                assert np.shares_memory(getattr(view, plane).array, getattr(parent, plane).array)

    def test_view_writes_through(self):
        parent = self._parent()
        view = parent[box(12, 21, 4, 3)]
        view.image.array[...] = -5
        view.mask.array |= view.mask.getPlaneBitMask("EDGE")
        view.variance.array *= 9
        assert np.all(parent.image.array[1:4, 2:6] == -5)
        assert np.all(parent.mask.array[1:4, 2:6] == 16)
        assert parent.mask.array.sum() == 16 * 12
        assert parent.variance.array.sum() == 9 * 12 + (48 - 12)

    def test_view_psf_override(self):
        parent = self._parent()
        other = _FakePsf(9.0)
        view = ExposureF(parent, box(11, 21, 2, 2), psf=other)
        assert view.getPsf() is other and parent.getPsf() is not other
        view.setPsf(None)  # a view's PSF is its own reference
        assert parent.hasPsf()

    def test_nested_exposure_views(self):
        parent = self._parent()
        outer = parent[box(11, 21, 6, 4)]
        inner = outer[box(13, 22, 2, 2)]
        assert inner.getXY0() == Point2I(13, 22)
        np.testing.assert_array_equal(inner.image.array, parent.image.array[2:4, 3:5])
        inner.image.array[...] = 0
        assert np.all(parent.image.array[2:4, 3:5] == 0)
        assert inner.getPsf() is parent.getPsf()

    def test_deep_view(self):
        parent = self._parent()
        copy = ExposureF(parent, box(11, 21, 2, 2), deep=True)
        assert not np.shares_memory(copy.image.array, parent.image.array)
        np.testing.assert_array_equal(copy.image.array, parent.image.array[1:3, 1:3])
        assert copy.getPsf() is parent.getPsf()

    @pytest.mark.parametrize(("exc", "bad"), BAD_SUBBOXES)
    def test_bad_view_boxes(self, exc, bad):
        parent = self._parent()
        with pytest.raises(exc):
            parent[bad]
        if isinstance(bad, Box2I):
            with pytest.raises(exc):
                parent.Factory(parent, bad)

    def test_bad_view_error_is_clear(self):
        parent = self._parent()
        with pytest.raises(ValueError, match=r"sub-exposure bbox .* not contained"):
            parent[box(0, 0, 4, 4)]
        with pytest.raises(ValueError, match="empty bbox"):
            parent[Box2I()]

    def test_set_xy0_moves_all_planes(self):
        exp = self._parent()
        exp.setXY0(Point2I(0, 0))
        assert exp.getBBox() == box(0, 0, 8, 6)
        for plane in (exp.image, exp.mask, exp.variance):
            assert plane.getXY0() == Point2I(0, 0)
        np.testing.assert_array_equal(exp[box(0, 0, 1, 1)].image.array, [[1000 * 20 + 10]])

    def test_clone_is_deep(self):
        exp = self._parent()
        exp.mask.array[0, 0] = 3
        exp.getMetadata()["KEY"] = 1
        clone = exp.clone()
        assert type(clone) is ExposureF
        assert clone.getBBox() == exp.getBBox()
        assert clone.getPsf() is exp.getPsf() and clone.getWcs() is exp.getWcs()
        assert clone.getMetadata() == {"KEY": 1}
        for plane in ("image", "mask", "variance"):
            np.testing.assert_array_equal(getattr(clone, plane).array, getattr(exp, plane).array)
            assert not np.shares_memory(getattr(clone, plane).array, getattr(exp, plane).array)
        clone.maskedImage.set((0.0, 0, 0.0))
        clone.mask.addMaskPlane("CLONE")
        clone.setXY0(Point2I(0, 0))
        clone.getMetadata()["KEY"] = 2
        assert exp.image.array[0, 0] == 1000 * 20 + 10 and exp.mask.array[0, 0] == 3
        assert "CLONE" not in exp.mask.getMaskPlaneDict()
        assert exp.getXY0() == Point2I(10, 20)
        assert exp.getMetadata() == {"KEY": 1}

    def test_clone_of_view(self):
        exp = self._parent()
        clone = exp[box(12, 22, 2, 2)].clone()
        assert clone.getXY0() == Point2I(12, 22)
        assert not np.shares_memory(clone.image.array, exp.image.array)

    def test_from_arrays_wraps_without_copy(self):
        image = np.arange(12, dtype=np.float64).reshape(3, 4)
        mask = np.zeros((3, 4), np.int32)
        variance = np.ones((3, 4))
        psf = _FakePsf(1.0)
        exp = ExposureD.from_arrays(image, mask, variance, xy0=Point2I(5, 6), psf=psf, wcs="w")
        assert type(exp) is ExposureD
        assert np.shares_memory(exp.image.array, image)
        assert np.shares_memory(exp.mask.array, mask)
        assert np.shares_memory(exp.variance.array, variance)
        assert exp.getBBox() == box(5, 6, 4, 3)
        assert exp.getPsf() is psf and exp.getWcs() == "w"
        exp[box(6, 7, 1, 1)].image.array[...] = -1
        assert image[1, 1] == -1

    def test_from_arrays_defaults(self):
        image = np.ones((2, 3), np.float32)
        exp = ExposureF.from_arrays(image)
        assert np.shares_memory(exp.image.array, image)
        assert exp.mask.dtype == np.int32 and np.all(exp.mask.array == 0)
        assert exp.variance.dtype == np.float32 and np.all(exp.variance.array == 0)
        assert exp.getXY0() == Point2I(0, 0)
        assert exp.mask.getMaskPlaneDict() == {n: i for i, n in enumerate(DEFAULT_MASK_PLANES)}
        exp2 = ExposureF.from_arrays(image, planeDict={"ONLY": 0})
        assert exp2.mask.getMaskPlaneDict() == {"ONLY": 0}

    def test_from_arrays_mismatched_shapes(self):
        with pytest.raises(ValueError, match="share one bbox"):
            ExposureF.from_arrays(np.ones((2, 3), np.float32), variance=np.ones((3, 2), np.float32))


# -- property test -------------------------------------------------------------------------------


@st.composite
def parent_and_subbox(draw):
    x0 = draw(st.integers(-50, 50))
    y0 = draw(st.integers(-50, 50))
    width = draw(st.integers(1, 12))
    height = draw(st.integers(1, 12))
    parent = box(x0, y0, width, height)
    sx0 = draw(st.integers(x0, x0 + width - 1))
    sy0 = draw(st.integers(y0, y0 + height - 1))
    sw = draw(st.integers(1, x0 + width - sx0))
    sh = draw(st.integers(1, y0 + height - sy0))
    return parent, box(sx0, sy0, sw, sh)


@settings(max_examples=200, deadline=None)
@given(parent_and_subbox(), st.sampled_from([ImageF, ImageD, ExposureF]))
def test_view_matches_numpy_slice_and_writes_through(boxes, kind):
    parent_box, sub = boxes
    assert parent_box.contains(sub)
    if kind is ExposureF:
        exposure = ExposureF(parent_box)
        parent, view_of = exposure.image, (lambda b: exposure[b].image)
    else:
        parent = kind(parent_box)
        view_of = parent.__getitem__
    parent.array[...] = ramp(parent_box, parent.dtype)
    view = view_of(sub)

    rows = slice(sub.getBeginY() - parent_box.getBeginY(), sub.getEndY() - parent_box.getBeginY())
    cols = slice(sub.getBeginX() - parent_box.getBeginX(), sub.getEndX() - parent_box.getBeginX())
    expected = parent.array[rows, cols]
    assert view.getXY0() == sub.getBegin()
    assert view.getBBox() == sub
    assert view.array.shape == (sub.getHeight(), sub.getWidth())
    np.testing.assert_array_equal(view.array, expected)
    np.testing.assert_array_equal(view.array, ramp(sub, parent.dtype))  # parent coordinates

    view.array[...] = -1
    assert np.all(parent.array[rows, cols] == -1)
    untouched = np.ones(parent.array.shape, bool)
    untouched[rows, cols] = False
    np.testing.assert_array_equal(parent.array[untouched], ramp(parent_box, parent.dtype)[untouched])
