"""Pixel containers with ``lsst.afw.image`` names and semantics, numpy underneath.

Layers: this package sits just above `imagemapreduce.geom` and imports nothing else of the
package (not even inside functions), so every other layer may build on it. The FITS and xarray
conveniences (``writeFits``, ``readFits``, ``to_xarray``, ``from_xarray``) call functions of
`imagemapreduce.io.fits` and `imagemapreduce.xarray_support`, which import these classes; they
look those functions up by name (`imagemapreduce._providers`) instead of importing them.
"""

from ._exposure import Exposure, ExposureD, ExposureF
from ._image import Image, ImageD, ImageF, ImageI, ImageU
from ._mask import DEFAULT_MASK_PLANES, Mask, MaskX
from ._masked_image import MaskedImage, MaskedImageD, MaskedImageF

__all__ = [
    "Image",
    "ImageF",
    "ImageD",
    "ImageI",
    "ImageU",
    "Mask",
    "MaskX",
    "DEFAULT_MASK_PLANES",
    "MaskedImage",
    "MaskedImageF",
    "MaskedImageD",
    "Exposure",
    "ExposureF",
    "ExposureD",
]
