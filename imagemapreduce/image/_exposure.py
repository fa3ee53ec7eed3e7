"""A MaskedImage with a PSF and WCS, as ``lsst.afw.image.Exposure`` has it."""

from __future__ import annotations

from typing import Any, Self

import numpy as np

from .._providers import provided
from ..geom import Box2I, Extent2I, Point2I
from ._image import FactoryAttribute, Image, bbox_from_args, check_subbox
from ._mask import Mask
from ._masked_image import MaskedImage

__all__ = ["Exposure", "ExposureF", "ExposureD"]


class Exposure:
    """An image with mask and variance planes, a PSF and a WCS.

    Parameters
    ----------
    *args
        ``(width, height)``, ``(Extent2I)`` or ``(Box2I)`` for new zero planes; ``(MaskedImage)``
        to wrap one (no copy); ``(Exposure, Box2I)`` for a view of the pixels in the box, in the
        parent's pixel coordinates, sharing pixels, PSF and WCS (``Exposure.Factory(exposure,
        bbox)`` and ``exposure[bbox]`` make the same view); or ``(array)``, a 2-d numpy or dask
        image (rows = y), with ``mask=`` and ``variance=`` as below.
    psf : PSF, optional
        The point-spread function (`GaussianPsf`, `CoaddPsf`, ...).
    wcs : object, optional
        A world coordinate system; carried along, not interpreted.
    dtype : numpy dtype, optional
        Pixel type of new image and variance planes (the class's: float32 for `ExposureF`).
    deep : `bool`
        Copy the pixels of a view, of the given MaskedImage or of the given arrays.
    mask : array or `Mask`, optional
        With an image array: integer bit planes of its shape (default zero), as int32; a `Mask` is
        used as it is.
    variance : array or number, optional
        With an image array: the variance, an array of its shape or a constant (default zero).
    metadata : `dict`, optional
        Header cards (see `getMetadata`).

    Notes
    -----
    From an array, `ExposureF` and `ExposureD` hold float32 and float64 pixels (converted if
    needed); `Exposure` keeps a float array's type and makes other arrays float32. An array that
    already has the pixel type is wrapped without a copy, as ``numpy.asarray`` does, unless ``deep``.

    Examples
    --------
    >>> from imagemapreduce import ExposureF, Box2I, Point2I, Extent2I
    >>> exp = ExposureF(100, 80)
    >>> sub = exp[Box2I(Point2I(10, 20), Extent2I(30, 40))]
    >>> sub.getXY0(), sub.image.array.shape
    (Point2I(10, 20), (40, 30))
    >>> import numpy as np
    >>> exp = ExposureF(np.ones((3, 4)), variance=0.5)
    >>> exp.dtype, exp.getDimensions(), float(exp.variance.array[0, 0])
    (dtype('float32'), Extent2I(4, 3), 0.5)
    """

    _default_dtype: np.dtype = np.dtype(np.float32)

    def __init__(
        self,
        *args: Any,
        psf: Any = None,
        wcs: Any = None,
        xy0: Point2I | None = None,
        dtype: Any = None,
        deep: bool = False,
        metadata: dict[str, Any] | None = None,
        mask: Any = None,
        variance: Any = None,
    ):
        if len(args) == 1 and _is_array(args[0]):
            self._psf, self._wcs = psf, wcs
            self._metadata = {} if metadata is None else metadata
            self.maskedImage = self._planes_from_arrays(args[0], mask, variance, xy0, dtype, deep)
            return
        if mask is not None or variance is not None:
            raise TypeError(
                f"{type(self).__name__}(): mask= and variance= go with an image array, as in "
                f"{type(self).__name__}(image_array, mask=..., variance=...)"
            )
        dtype = np.dtype(self._default_dtype if dtype is None else dtype)
        if len(args) == 2 and isinstance(args[0], Exposure) and isinstance(args[1], Box2I):
            parent, bbox = args
            check_subbox(parent.getBBox(), bbox, "exposure")
            mi = parent.maskedImage
            # Checked once here: the engine makes two views of every cell.
            self.maskedImage = MaskedImage(mi, bbox, deep=True) if deep else mi._checked_view(bbox)
            self._psf = parent._psf if psf is None else psf
            self._wcs = parent._wcs if wcs is None else wcs
            self._metadata = dict(parent._metadata) if metadata is None else metadata
            return
        self._psf, self._wcs = psf, wcs
        self._metadata = {} if metadata is None else metadata
        bbox, ok = bbox_from_args(args, xy0)
        if ok:
            self.maskedImage = MaskedImage(bbox, dtype=dtype)
            return
        if len(args) == 1 and isinstance(args[0], MaskedImage):
            self.maskedImage = args[0].clone() if deep else args[0]
            return
        raise TypeError(
            f"{type(self).__name__}() takes (width, height), (Extent2I), (Box2I), (MaskedImage) or "
            f"(Exposure, Box2I); got {tuple(type(a).__name__ for a in args)}"
        )

    @classmethod
    def _pixel_dtype(cls, array: Any, dtype: Any) -> np.dtype:
        if dtype is not None:
            return np.dtype(dtype)
        if cls is Exposure and np.dtype(array.dtype).kind == "f":
            return np.dtype(array.dtype)
        return cls._default_dtype

    def _planes_from_arrays(
        self, image: Any, mask: Any, variance: Any, xy0: Point2I | None, dtype: Any, deep: bool
    ) -> MaskedImage:
        """The planes of ``Exposure(array, mask=..., variance=...)``."""
        origin = Point2I(0, 0) if xy0 is None else Point2I(xy0)
        if image.ndim != 2:
            raise ValueError(f"the image array must be 2-d (rows = y, columns = x), got shape {tuple(image.shape)}")
        shape = tuple(image.shape)
        dtype = self._pixel_dtype(image, dtype)
        if np.dtype(image.dtype).kind not in "fiub":
            raise TypeError(f"the image array must hold real numbers, not {image.dtype}")
        pixels = _converted(image, dtype, deep)
        if mask is None:
            plane = Mask(np.zeros(shape, np.int32), xy0=origin)
        elif isinstance(mask, Mask):
            plane = mask.clone() if deep else mask
        elif _is_array(mask):
            if tuple(mask.shape) != shape or np.dtype(mask.dtype).kind not in "iub":
                raise ValueError(
                    f"mask= must be an integer array of the image's shape {shape}, got {mask.dtype} {tuple(mask.shape)}"
                )
            plane = Mask(_converted(mask, np.dtype(np.int32), deep), xy0=origin)
        else:
            raise TypeError(f"mask= must be an integer array or a Mask, not {type(mask).__name__}")
        if variance is None:
            var = np.zeros(shape, dtype)
        elif isinstance(variance, (int, float, np.number)) and not isinstance(variance, bool):
            var = np.full(shape, variance, dtype)
        elif _is_array(variance):
            if tuple(variance.shape) != shape:
                raise ValueError(f"variance= must have the image's shape {shape}, got {tuple(variance.shape)}")
            var = _converted(variance, dtype, deep)
        else:
            raise TypeError(
                f"variance= must be an array of the image's shape or a number, not {type(variance).__name__}"
            )
        return MaskedImage(Image(pixels, xy0=origin), plane, Image(var, xy0=origin))

    @classmethod
    def from_arrays(
        cls,
        image: Any,
        mask: Any = None,
        variance: Any = None,
        *,
        xy0: Point2I | None = None,
        psf: Any = None,
        wcs: Any = None,
        planeDict: dict[str, int] | None = None,
    ) -> Self:
        """Wrap numpy (or dask) arrays as an exposure without copying them.

        A missing mask is zero; a missing variance is zero, with the image's dtype.
        """
        origin = Point2I(0, 0) if xy0 is None else Point2I(xy0)
        img = Image(image, xy0=origin)
        msk = Mask(np.zeros(image.shape, np.int32) if mask is None else mask, xy0=origin, planeDict=planeDict)
        var = Image(np.zeros(image.shape, image.dtype) if variance is None else variance, xy0=origin)
        return cls(MaskedImage(img, msk, var), psf=psf, wcs=wcs)

    # -- pixels ----------------------------------------------------------------------------------
    def getMaskedImage(self) -> MaskedImage:  # noqa: D102
        return self.maskedImage

    def setMaskedImage(self, maskedImage: MaskedImage) -> None:  # noqa: D102
        self.maskedImage = maskedImage

    @property
    def image(self) -> Image:
        """The image plane."""
        return self.maskedImage.image

    @property
    def mask(self) -> Mask:
        """The mask plane."""
        return self.maskedImage.mask

    @property
    def variance(self) -> Image:
        """The variance plane."""
        return self.maskedImage.variance

    def getImage(self) -> Image:  # noqa: D102
        return self.image

    def getMask(self) -> Mask:  # noqa: D102
        return self.mask

    def getVariance(self) -> Image:  # noqa: D102
        return self.variance

    @property
    def dtype(self) -> np.dtype:
        """The pixel type of the image plane."""
        return self.maskedImage.dtype

    # -- geometry --------------------------------------------------------------------------------
    def getBBox(self) -> Box2I:  # noqa: D102
        return self.maskedImage.getBBox()

    def getXY0(self) -> Point2I:  # noqa: D102
        return self.maskedImage.getXY0()

    def setXY0(self, xy0: Point2I) -> None:  # noqa: D102
        self.maskedImage.setXY0(xy0)

    def getX0(self) -> int:  # noqa: D102
        return self.maskedImage.getX0()

    def getY0(self) -> int:  # noqa: D102
        return self.maskedImage.getY0()

    def getWidth(self) -> int:  # noqa: D102
        return self.maskedImage.getWidth()

    def getHeight(self) -> int:  # noqa: D102
        return self.maskedImage.getHeight()

    def getDimensions(self) -> Extent2I:  # noqa: D102
        return self.maskedImage.getDimensions()

    # -- PSF, WCS, metadata ------------------------------------------------------------------------
    def getPsf(self) -> Any:  # noqa: D102
        return self._psf

    def setPsf(self, psf: Any) -> None:  # noqa: D102
        self._psf = psf

    def hasPsf(self) -> bool:  # noqa: D102
        return self._psf is not None

    def getWcs(self) -> Any:  # noqa: D102
        return self._wcs

    def setWcs(self, wcs: Any) -> None:  # noqa: D102
        self._wcs = wcs

    def hasWcs(self) -> bool:  # noqa: D102
        return self._wcs is not None

    def getMetadata(self) -> dict[str, Any]:
        """Return the exposure's header metadata (a dict of FITS-style cards)."""
        return self._metadata

    psf = property(getPsf, setPsf)
    wcs = property(getWcs, setWcs)

    # -- files and xarray: functions of higher layers, looked up by name (see `_providers`) -------
    def writeFits(self, path: Any, *, overwrite: bool = False, **kwargs: Any) -> None:
        """Write in the LSST stack's FITS layout; see `imagemapreduce.io.fits.write_exposure`."""
        provided("write_exposure")(self, path, overwrite=overwrite, **kwargs)

    @classmethod
    def readFits(cls, path: Any, **kwargs: Any) -> Self:
        """Read an LSST-written or plain FITS file; see `imagemapreduce.io.fits.read_exposure`."""
        return provided("read_exposure")(path, cls=cls, **kwargs)

    def to_xarray(self) -> Any:
        """Return the planes as an `xarray.Dataset` in parent pixel coordinates (no copy).

        See `imagemapreduce.xarray_support.exposure_to_xarray`.
        """
        return provided("exposure_to_xarray")(self)

    @classmethod
    def from_xarray(cls, ds: Any) -> Self:
        """Build an exposure of this class from a Dataset made by `to_xarray` (no copy).

        See `imagemapreduce.xarray_support.exposure_from_xarray`.
        """
        return provided("exposure_from_xarray")(ds, cls)

    # -- copies and views ------------------------------------------------------------------------
    def clone(self) -> Self:
        """Return a deep copy of the pixels; PSF and WCS (immutable here) are shared."""
        return type(self)(self.maskedImage.clone(), psf=self._psf, wcs=self._wcs, metadata=dict(self._metadata))

    #: The class: ``exposure.Factory(exposure, bbox)`` makes a view sharing pixels.
    Factory = FactoryAttribute()

    def subset(self, bbox: Box2I) -> Self:
        """Return a view of the pixels inside ``bbox`` (parent coordinates)."""
        return type(self)(self, bbox)

    def __getitem__(self, bbox: Box2I) -> Self:
        if not isinstance(bbox, Box2I):
            raise TypeError(f"index an Exposure with a Box2I (parent coordinates), not {type(bbox).__name__}")
        return self.subset(bbox)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(bbox={self.getBBox()}, dtype={self.dtype}, psf={self._psf!r})"


def _is_array(value: Any) -> bool:
    return isinstance(value, np.ndarray) or (
        hasattr(value, "shape") and hasattr(value, "dtype") and hasattr(value, "ndim") and not isinstance(value, Image)
    )


def _converted(array: Any, dtype: np.dtype, deep: bool) -> Any:
    """``array`` as ``dtype``: the same array when it already is (unless ``deep``), else a converted copy."""
    if isinstance(array, np.ndarray) or not hasattr(array, "astype"):
        return np.array(array, dtype=dtype, copy=True) if deep else np.asarray(array, dtype=dtype)
    return array if array.dtype == dtype and not deep else array.astype(dtype)  # a dask array stays lazy


class ExposureF(Exposure):
    """An Exposure with float32 image and variance."""

    _default_dtype = np.dtype(np.float32)


class ExposureD(Exposure):
    """An Exposure with float64 image and variance."""

    _default_dtype = np.dtype(np.float64)
