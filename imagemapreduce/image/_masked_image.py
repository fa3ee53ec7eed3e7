"""Image, mask and variance together, as ``lsst.afw.image.MaskedImage`` has them."""

from __future__ import annotations

from numbers import Real
from typing import Any, Self

import numpy as np

from .._providers import provided
from ..geom import Box2I, Point2I
from ._image import FactoryAttribute, Image, bbox_from_args, check_same_dimensions, check_subbox
from ._mask import Mask

__all__ = ["MaskedImage", "MaskedImageF", "MaskedImageD"]


class MaskedImage:
    """Three aligned planes: image, mask (int32 bit planes) and variance.

    Parameters
    ----------
    *args
        ``(width, height)``, ``(Extent2I)`` or ``(Box2I)`` for new planes (image and variance
        zero, mask zero); ``(image, mask=None, variance=None)`` to wrap existing planes (missing
        ones made to match); or ``(MaskedImage, Box2I)`` for a view in parent coordinates.
    dtype : numpy dtype, optional
        Pixel type of new image and variance planes (default float32).
    deep : `bool`
        Copy the pixels of the given planes or view.
    """

    _default_dtype: np.dtype = np.dtype(np.float32)

    def __init__(
        self,
        *args: Any,
        mask: Mask | None = None,
        variance: Image | None = None,
        xy0: Point2I | None = None,
        dtype: Any = None,
        deep: bool = False,
    ):
        dtype = np.dtype(self._default_dtype if dtype is None else dtype)
        if len(args) == 2 and isinstance(args[0], MaskedImage) and isinstance(args[1], Box2I):
            parent, bbox = args
            check_subbox(parent.getBBox(), bbox, "masked image")
            if deep:
                planes = [plane.subset(bbox).clone() for plane in (parent.image, parent.mask, parent.variance)]
                self._set_planes(*planes)
            else:
                self._set_checked_view(parent, bbox)
            return
        bbox, ok = bbox_from_args(args, xy0)
        if ok:
            self._set_planes(Image(bbox, dtype=dtype), Mask(bbox), Image(bbox, dtype=dtype))
            return
        if 1 <= len(args) <= 3 and isinstance(args[0], Image):
            image = args[0]
            mask = args[1] if len(args) > 1 else mask
            variance = args[2] if len(args) > 2 else variance
            if deep:
                image = image.clone()
                mask = None if mask is None else mask.clone()
                variance = None if variance is None else variance.clone()
            self._set_planes(
                image,
                Mask(image.getBBox()) if mask is None else mask,
                Image(image.getBBox(), dtype=image.dtype) if variance is None else variance,
            )
            return
        raise TypeError(
            "MaskedImage() takes (width, height), (Extent2I), (Box2I), (image, mask, variance) or "
            f"(MaskedImage, Box2I); got {tuple(type(a).__name__ for a in args)}"
        )

    def _set_planes(self, image: Image, mask: Mask, variance: Image) -> None:
        if not isinstance(mask, Mask):
            raise TypeError(f"mask must be a Mask, not {type(mask).__name__}")
        # Compare shapes and origins directly: this runs for every view a cell makes.
        same = image.array.shape == mask.array.shape == variance.array.shape
        if not (same and image.getXY0() == mask.getXY0() == variance.getXY0()):
            boxes = {"image": image.getBBox(), "mask": mask.getBBox(), "variance": variance.getBBox()}
            raise ValueError(f"image, mask and variance must share one bbox; got {boxes}")
        self.image, self.mask, self.variance = image, mask, variance

    def _set_checked_view(self, parent: MaskedImage, bbox: Box2I) -> None:
        """Become a view of ``parent`` inside ``bbox``, already checked: its planes share one bbox."""
        self.image = parent.image._checked_view(bbox)
        self.mask = parent.mask._checked_view(bbox)
        self.variance = parent.variance._checked_view(bbox)

    def _checked_view(self, bbox: Box2I) -> Self:
        """A view of ``bbox``, which the caller has checked lies inside."""
        view = type(self).__new__(type(self))
        view._set_checked_view(self, bbox)
        return view

    # -- accessors -------------------------------------------------------------------------------
    def getImage(self) -> Image:  # noqa: D102
        return self.image

    def getMask(self) -> Mask:  # noqa: D102
        return self.mask

    def getVariance(self) -> Image:  # noqa: D102
        return self.variance

    def getBBox(self) -> Box2I:  # noqa: D102
        return self.image.getBBox()

    def getXY0(self) -> Point2I:  # noqa: D102
        return self.image.getXY0()

    def setXY0(self, xy0: Point2I) -> None:
        """Move all three planes to a new origin."""
        for plane in (self.image, self.mask, self.variance):
            plane.setXY0(xy0)

    def getX0(self) -> int:  # noqa: D102
        return self.image.getX0()

    def getY0(self) -> int:  # noqa: D102
        return self.image.getY0()

    def getWidth(self) -> int:  # noqa: D102
        return self.image.getWidth()

    def getHeight(self) -> int:  # noqa: D102
        return self.image.getHeight()

    def getDimensions(self):  # noqa: D102
        return self.image.getDimensions()

    @property
    def dtype(self) -> np.dtype:
        """The pixel type of the image plane."""
        return self.image.dtype

    def set(self, value: Any, mask: int | None = None, variance: float | None = None) -> None:
        """Set every pixel: ``set(v)`` or ``set((v, m, var))`` or ``set(v, m, var)``.

        As in afw, a plane not given is set to zero.
        """
        if mask is None and variance is None and isinstance(value, tuple):
            value, mask, variance = value
        self.image.set(value)
        self.mask.set(0 if mask is None else mask)
        self.variance.set(0.0 if variance is None else variance)

    def clone(self) -> Self:
        """Return a deep copy."""
        return type(self)(self.image.clone(), self.mask.clone(), self.variance.clone())

    #: The class: ``mi.Factory(mi, bbox)`` makes a view.
    Factory = FactoryAttribute()

    def subset(self, bbox: Box2I) -> Self:
        """Return a view of the pixels inside ``bbox`` (parent coordinates)."""
        return type(self)(self, bbox)

    def __getitem__(self, bbox: Box2I) -> Self:
        if not isinstance(bbox, Box2I):
            raise TypeError(f"index a MaskedImage with a Box2I, not {type(bbox).__name__}")
        return self.subset(bbox)

    # -- files: functions of a higher layer, looked up by name (see `_providers`) -----------------
    def writeFits(self, path: Any, *, overwrite: bool = False, **kwargs: Any) -> None:
        """Write as afw's MaskedImage.writeFits; see `imagemapreduce.io.fits.write_masked_image`."""
        provided("write_masked_image")(self, path, overwrite=overwrite, **kwargs)

    @classmethod
    def readFits(cls, path: Any, **kwargs: Any) -> Self:
        """Read the planes of a FITS file; see `imagemapreduce.io.fits.read_masked_image`."""
        return provided("read_masked_image")(path, cls=cls, **kwargs)

    # -- arithmetic, in place, with afw's rules for variance and mask ------------------------------
    def __iadd__(self, other: Any) -> Self:
        if isinstance(other, MaskedImage):
            check_same_dimensions(self, other, "+=")
            self.image.array += other.image.array
            self.variance.array += other.variance.array
            self.mask.array |= other.mask.array
        else:  # a scalar or an Image changes the image only
            self.image += other
        return self

    def __isub__(self, other: Any) -> Self:
        if isinstance(other, MaskedImage):
            check_same_dimensions(self, other, "-=")
            self.image.array -= other.image.array
            self.variance.array += other.variance.array
            self.mask.array |= other.mask.array
        else:
            self.image -= other
        return self

    def __imul__(self, other: Any) -> Self:
        if not isinstance(other, Real):
            raise TypeError("MaskedImage *= takes a scalar; multiply the planes yourself for arrays")
        self.image.array *= other
        self.variance.array *= other * other
        return self

    def __itruediv__(self, other: Any) -> Self:
        if not isinstance(other, Real):
            raise TypeError("MaskedImage /= takes a scalar; divide the planes yourself for arrays")
        self.image.array /= other
        self.variance.array /= other * other
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}(bbox={self.getBBox()}, dtype={self.dtype})"


class MaskedImageF(MaskedImage):
    """A MaskedImage with float32 image and variance."""

    _default_dtype = np.dtype(np.float32)


class MaskedImageD(MaskedImage):
    """A MaskedImage with float64 image and variance."""

    _default_dtype = np.dtype(np.float64)
